//! The event loop. At each close time of the merged time axis:
//!
//! 1. orders from earlier bars fill at this bar's open (per symbol; a symbol
//!    with no bar now keeps its orders waiting — gaps are never filled);
//! 2. stop-losses and take-profits are checked inside this bar;
//! 3. positions are marked at the close (MAE/MFE from the bar's range);
//! 4. the strategy sees the closed bars and its portfolio, and its signals
//!    pass the risk checks to become orders for the next bar.
//!
//! Nothing here reads a clock or does IO: the same inputs give the same result.

use keel_model::batch::{BarColumns, Bars, Batch, BatchOutcome};
use keel_model::candles::Candle;
use keel_model::replay::{Feed, Merge, Series};
use keel_model::shown::text;
use keel_model::{Fill, Portfolio, RiskLimits, RunningStrategy, Signal, Symbol};

use crate::equity::{EquityStats, EquityTracker};
use crate::fills::FillModel;
use crate::kernel::{
    Book, ClientOrderId, Decision, FillSource, Market, SimulatedVenue, TradingState, Venue,
};

pub use crate::equity::EquityPoint;
use crate::risk::MinOrders;

pub use crate::kernel::{ExitReason, RejectedBy, Rejection, Trade};

/// Everything a backtest is run with besides the strategy and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    /// Starting cash, quote currency.
    pub cash: f64,
    pub fills: FillModel,
    pub limits: RiskLimits,
    /// The minimum order by symbol or quote currency (`limits.min_order_quote`
    /// is the one for fiat quotes).
    pub min_orders: MinOrders,
    /// Keep every signal and every fill in the result (counts are always
    /// kept). Off for long runs whose report needs only the trades.
    pub record_signals: bool,
    pub record_fills: bool,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            cash: 10_000.0,
            fills: FillModel::default(),
            limits: RiskLimits::default(),
            min_orders: MinOrders::default(),
            record_signals: true,
            record_fills: true,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestResult {
    pub cash_start: f64,
    pub equity_final: f64,
    pub trades: Vec<Trade>,
    /// The equity curve, thinned evenly to at most ~10,000 points.
    pub equity: Vec<EquityPoint>,
    /// Figures accumulated over every step (returns, drawdown).
    pub equity_stats: EquityStats,
    /// Every fill, when `record_fills`.
    pub fills: Vec<Fill>,
    pub fill_count: usize,
    pub rejected: Vec<Rejection>,
    /// Strategy errors, by the close time of the bar.
    pub errors: Vec<(i64, String)>,
    /// Time steps (distinct close times) and bars (symbol-bars) processed.
    pub steps: usize,
    pub bars: usize,
    /// Shortest bar length among the series, for annualising.
    pub bar_ms: i64,
    /// Share of steps with at least one open position.
    pub exposure: f64,
    pub fees: f64,
    /// Fills cut by the volume cap.
    pub capped_fills: usize,
    /// Every signal the strategy gave (accepted or not), by close time,
    /// when `record_signals`.
    pub signals: Vec<(i64, Signal)>,
    pub signal_count: usize,
}

/// Most bar closes handed to a strategy in one call.
pub const MAX_BATCH_TICKS: usize = 256;

/// Handled ticks kept at the front of [`Ahead`] before they are dropped
/// together: the unhandled rest is moved down once per this many, not once
/// per batch.
const DROP_AFTER_TICKS: usize = 16 * MAX_BATCH_TICKS;

/// Bar closes read from the feeds but not yet handled, in batch form: a
/// queue whose handled front is dropped in bulk (not on every call).
#[derive(Default)]
struct Ahead {
    /// First tick not yet handled.
    head: usize,
    tick_times: Vec<i64>,
    tick_bars: Vec<u32>,
    /// Where each tick's bars start in `bars`.
    starts: Vec<usize>,
    bars: BarColumns,
}

impl Ahead {
    fn fill(&mut self, merge: &mut Merge<'_>, step: &mut Vec<(usize, Candle)>) {
        if self.head >= DROP_AFTER_TICKS {
            let bars = self.start(0);
            self.tick_times.drain(..self.head);
            self.tick_bars.drain(..self.head);
            self.starts.drain(..self.head);
            self.bars.drop_front(bars);
            for start in &mut self.starts {
                *start -= bars;
            }
            self.head = 0;
        }
        // One feed: its candles are the ticks, taken a run at a time.
        if let [feed] = merge.feeds() {
            let bar_ms = feed.bar_ms;
            while self.len() < MAX_BATCH_TICKS {
                match merge.next_run(MAX_BATCH_TICKS - self.len()) {
                    Some(run) if !run.is_empty() => self.push_run(bar_ms, run),
                    _ => return,
                }
            }
            return;
        }
        while self.len() < MAX_BATCH_TICKS {
            let Some(time_ms) = merge.next_step(step) else {
                return;
            };
            self.tick_times.push(time_ms);
            self.tick_bars.push(step.len() as u32);
            self.starts.push(self.bars.len());
            for (s, candle) in step.iter() {
                self.bars.push(*s as u32, candle);
            }
        }
    }

    /// Consecutive candles of the one symbol (index 0), a tick each.
    fn push_run(&mut self, bar_ms: i64, run: &[Candle]) {
        let first = self.bars.len();
        self.tick_times
            .extend(run.iter().map(|c| c.time_ms + bar_ms));
        self.tick_bars.extend(std::iter::repeat_n(1, run.len()));
        self.starts.extend(first..first + run.len());
        self.bars.extend_candles(0, run);
    }

    /// How many ticks are not yet handled.
    fn len(&self) -> usize {
        self.tick_times.len() - self.head
    }

    /// Close time of (unhandled) tick `i`.
    fn time(&self, i: usize) -> i64 {
        self.tick_times[self.head + i]
    }

    /// Close times of (unhandled) ticks `from..to`.
    fn times(&self, from: usize, to: usize) -> &[i64] {
        &self.tick_times[self.head + from..self.head + to]
    }

    /// Where (unhandled) tick `i`'s bars start; the end for `i == len`.
    fn start(&self, i: usize) -> usize {
        self.starts
            .get(self.head + i)
            .copied()
            .unwrap_or(self.bars.len())
    }

    /// The bars of (unhandled) ticks `from..to`.
    fn bars_of(&self, from: usize, to: usize) -> Bars<'_> {
        self.bars.slice(self.start(from), self.start(to))
    }

    /// The first `ticks` unhandled ticks as a batch.
    fn batch<'a>(
        &'a self,
        ticks: usize,
        symbols: &'a [Symbol],
        portfolio: &'a Portfolio,
        limits: RiskLimits,
    ) -> Batch<'a> {
        let range = self.head..self.head + ticks;
        Batch {
            symbols,
            tick_times: &self.tick_times[range.clone()],
            tick_bars: &self.tick_bars[range],
            bars: self.bars_of(0, ticks),
            portfolio,
            limits,
        }
    }

    fn drop_front(&mut self, ticks: usize) {
        self.head += ticks;
    }
}

/// Runs `strategy` over `series` (aligned on close time) under `config`.
pub fn run(
    strategy: &mut dyn RunningStrategy,
    series: &[Series],
    config: &BacktestConfig,
) -> BacktestResult {
    run_feeds(strategy, series.iter().map(Series::feed).collect(), config)
}

/// Runs `strategy` over streaming feeds; memory does not grow with the data.
///
/// Bar closes reach the strategy in batches ([`keel_model::batch`]): after
/// the host's work at a close (fills, stops, marking), the strategy gets that
/// close and the ones after it up to the first where an order waits or a stop
/// or target is within the bar's range, and stops at the first that gives
/// signals. What it sees and does is the same as one call per close.
pub fn run_feeds(
    strategy: &mut dyn RunningStrategy,
    feeds: Vec<Feed<'_>>,
    config: &BacktestConfig,
) -> BacktestResult {
    let mut merge = Merge::new(feeds);
    let symbols: Vec<Symbol> = merge
        .feeds()
        .iter()
        .map(|f| Symbol::from(f.symbol.as_str()))
        .collect();
    let bar_ms = merge
        .feeds()
        .iter()
        .map(|f| f.bar_ms)
        .min()
        .unwrap_or(60_000);
    let mut market = Market::new(
        symbols.clone(),
        config.limits,
        &config.min_orders,
        config.fills,
        None,
    );
    let fills = config.fills;
    let mut book = Book::new(config.cash);
    let mut venue = SimulatedVenue::new(config.fills);
    let (mut reports, mut cursor) = (Vec::new(), 0);
    let mut curve = EquityTracker::new(config.cash);
    let mut errors = Vec::new();
    let (mut exposed_steps, mut bar_count, mut step_count) = (0usize, 0usize, 0usize);
    let (mut all_signals, mut signal_count) = (Vec::new(), 0usize);
    let (mut all_fills, mut fill_count) = (Vec::new(), 0usize);
    let mut step = Vec::with_capacity(symbols.len());
    let mut ahead = Ahead::default();
    let mut end_ms = 0;

    loop {
        ahead.fill(&mut merge, &mut step);
        if ahead.len() == 0 {
            break;
        }
        let first_ms = ahead.time(0);
        let bars = ahead.bars_of(0, 1);

        // 1. Waiting orders fill at this bar's open.
        if venue.has_open() {
            venue.on_step(bars);
            cursor = unfailing(venue.fills_since(cursor, &mut reports));
            for report in reports.drain(..) {
                book.settle(report);
            }
        }
        // 2. Stops and targets inside the bar.
        if !book.open.is_empty() {
            for b in 0..bars.len() {
                book.exits(&fills, bars.get(b));
            }
        }
        // 3. Mark at the close.
        market.close(bars);
        let mut equity = book.mark(bars);
        curve.push(EquityPoint {
            time_ms: first_ms,
            equity,
        });
        step_count += 1;
        bar_count += bars.len();
        exposed_steps += usize::from(!book.open.is_empty());

        // Tell the strategy what filled, then show it the closed bars: this
        // close and the later ones at which only prices can move.
        for booked in book.fills.drain(..) {
            if let Err(e) = strategy.on_fill(&booked.fill) {
                errors.push((first_ms, format!("on-fill: {e}")));
            }
            fill_count += 1;
            if config.record_fills {
                all_fills.push(booked.fill);
            }
        }
        let mut quiet = 1;
        if book.pending.is_empty() {
            // Marking is all that happens at a close before the first whose
            // bar reaches a stop or target.
            if !book.has_exits() {
                quiet = ahead.len();
            }
            while quiet < ahead.len() && !book.exit_within(&fills, ahead.bars_of(quiet, quiet + 1))
            {
                quiet += 1;
            }
        }
        let view = book.view(equity);
        let batch = ahead.batch(quiet, &symbols, &view, market.shown_limits);
        let outcome = match strategy.on_bars(&batch) {
            Ok(o) if (1..=quiet).contains(&o.consumed) => o,
            Ok(o) => BatchOutcome {
                consumed: 1,
                error: Some(format!(
                    "said it handled {} of a batch of {quiet} bar closes",
                    o.consumed
                )),
                ..BatchOutcome::default()
            },
            Err(e) => BatchOutcome {
                consumed: 1,
                error: Some(e),
                ..BatchOutcome::default()
            },
        };
        // The later closes it handled: only marking (no position opens or
        // closes at them).
        let later = outcome.consumed - 1;
        let marked = ahead.bars_of(1, outcome.consumed);
        if marked.len() == later {
            // One bar at each of these closes (always so with one feed):
            // marked in one pass.
            market.close(marked);
            if book.open.is_empty() {
                // Flat: the equity is the cash at each.
                curve.push_flat(ahead.times(1, outcome.consumed), book.equity());
            } else {
                book.mark_each(marked, |b, equity| {
                    curve.push(EquityPoint {
                        time_ms: ahead.time(1 + b),
                        equity,
                    });
                });
            }
        } else {
            for t in 1..outcome.consumed {
                let bars = ahead.bars_of(t, t + 1);
                market.close(bars);
                equity = book.mark(bars);
                curve.push(EquityPoint {
                    time_ms: ahead.time(t),
                    equity,
                });
            }
        }
        step_count += later;
        bar_count += marked.len();
        exposed_steps += later * usize::from(!book.open.is_empty());
        let time_ms = ahead.time(outcome.consumed - 1);
        end_ms = time_ms;
        ahead.drop_front(outcome.consumed);
        if let Some(e) = outcome.error {
            errors.push((time_ms, e));
            continue;
        }
        for (signal, reason) in outcome.refused {
            signal_count += 1;
            if config.record_signals {
                all_signals.push((time_ms, signal.clone()));
            }
            book.rejected.push(Rejection {
                time_ms,
                signal,
                reason,
                by: RejectedBy::Sandbox,
            });
        }
        if outcome.signals.is_empty() {
            continue;
        }
        signal_count += outcome.signals.len();
        if config.record_signals {
            all_signals.extend(outcome.signals.iter().map(|s| (time_ms, s.clone())));
        }
        // Moved into their orders and refusals.
        let decisions = book.decide(
            &market,
            time_ms,
            outcome.signals,
            TradingState::Active,
            |seq| ClientOrderId::at(time_ms, seq),
        );
        for decision in decisions {
            if let Decision::Accepted(Some(order)) = decision {
                unfailing(venue.submit(order));
            }
        }
    }

    // Orders that never met a later bar of their symbol did not fill.
    for order in std::mem::take(&mut book.pending) {
        let reason = format!(
            "the data ended before a later {} bar could fill it",
            text(&order.signal.symbol)
        );
        book.rejected.push(Rejection {
            time_ms: end_ms,
            signal: std::sync::Arc::unwrap_or_clone(order.signal),
            reason,
            by: RejectedBy::Fill,
        });
    }
    // Whatever is still open is closed at its symbol's last close.
    book.close_all(&market, end_ms, FillSource::EndOfData);
    let equity_final = book.cash;
    fill_count += book.fills.len();
    if config.record_fills {
        all_fills.extend(book.fills.drain(..).map(|b| b.fill));
    }
    let (equity_stats, equity_points) = curve.finish(equity_final);
    BacktestResult {
        cash_start: config.cash,
        equity_final,
        trades: book.trades,
        equity: equity_points,
        equity_stats,
        fills: all_fills,
        fill_count,
        rejected: book.rejected,
        errors,
        steps: step_count,
        bars: bar_count,
        bar_ms,
        exposure: if step_count == 0 {
            0.0
        } else {
            exposed_steps as f64 / step_count as f64
        },
        fees: book.fees,
        capped_fills: book.capped,
        signals: all_signals,
        signal_count,
    }
}

/// The value of a result that cannot fail.
fn unfailing<T>(result: Result<T, std::convert::Infallible>) -> T {
    match result {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests;
