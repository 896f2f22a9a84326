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
        if self.head >= MAX_BATCH_TICKS {
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

    /// How many ticks are not yet handled.
    fn len(&self) -> usize {
        self.tick_times.len() - self.head
    }

    /// Close time of (unhandled) tick `i`.
    fn time(&self, i: usize) -> i64 {
        self.tick_times[self.head + i]
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
        // The later closes it handled: only marking.
        for t in 1..outcome.consumed {
            let bars = ahead.bars_of(t, t + 1);
            market.close(bars);
            equity = book.mark(bars);
            curve.push(EquityPoint {
                time_ms: ahead.time(t),
                equity,
            });
            step_count += 1;
            bar_count += bars.len();
            exposed_steps += usize::from(!book.open.is_empty());
        }
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
        let decisions = book.decide(
            &market,
            time_ms,
            &outcome.signals,
            TradingState::Active,
            |seq| ClientOrderId(format!("{time_ms}-{seq}")),
        );
        for decision in decisions {
            if let Decision::Accepted(Some(order)) = decision {
                unfailing(venue.submit(&order));
            }
        }
        if config.record_signals {
            all_signals.extend(outcome.signals.into_iter().map(|s| (time_ms, s)));
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
            signal: order.signal,
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
mod tests {
    use super::*;
    use keel_model::candles::Candle;
    use keel_model::{Side, Size, Tick};

    /// Emits the scripted signals on the given (0-based) steps; records what it saw.
    #[derive(Default)]
    struct Script {
        plan: Vec<(usize, Signal)>,
        step: usize,
        fills: Vec<Fill>,
        seen_equity: Vec<f64>,
        latest_bar_open_ms: Vec<(i64, i64)>,
    }

    impl RunningStrategy for Script {
        fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
            self.seen_equity.push(tick.portfolio.equity);
            for b in &tick.bars {
                self.latest_bar_open_ms.push((tick.time_ms, b.time_ms));
            }
            let now = self.step;
            self.step += 1;
            Ok(self
                .plan
                .iter()
                .filter(|(s, _)| *s == now)
                .map(|(_, sig)| sig.clone())
                .collect())
        }
        fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
            self.fills.push(fill.clone());
            Ok(())
        }
    }

    fn candle(i: i64, open: f64, high: f64, low: f64, close: f64) -> Candle {
        Candle {
            time_ms: i * 60_000,
            open,
            high,
            low,
            close,
            volume: 1000.0,
        }
    }

    fn flat(prices: &[f64]) -> Vec<Candle> {
        prices
            .iter()
            .enumerate()
            .map(|(i, &p)| candle(i as i64, p, p, p, p))
            .collect()
    }

    fn series(symbol: &str, candles: Vec<Candle>) -> Series {
        Series {
            symbol: symbol.into(),
            candles,
            bar_ms: 60_000,
        }
    }

    fn loose() -> RiskLimits {
        RiskLimits {
            max_position_fraction: 1.0,
            max_open_positions: 10,
            max_trade_fraction: 1.0,
            min_order_quote: 0.0,
        }
    }

    fn config(fee_bps: f64, slippage_bps: f64) -> BacktestConfig {
        BacktestConfig {
            cash: 1000.0,
            fills: FillModel {
                fee_bps,
                slippage_bps,
                max_volume_share: None,
                lot_size: 1e-8,
            },
            limits: loose(),
            ..BacktestConfig::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn long_round_trip_with_fees_by_hand() {
        // Buy 100 quote on bar 0 -> fills at bar 1's open (10): 10 units, fee 0.10.
        // Close on bar 2 -> fills at bar 3's open (12): fee 0.12. P&L 20 - 0.22.
        let mut s = Script {
            plan: vec![
                (0, Signal::open_long("A", Size::Quote(100.0))),
                (2, Signal::close("A")),
            ],
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[9.0, 10.0, 11.0, 12.0, 13.0]))],
            &config(10.0, 0.0),
        );
        assert_eq!(r.trades.len(), 1);
        let t = &r.trades[0];
        assert_eq!(
            (t.price_entry, t.price_exit, t.quantity),
            (10.0, 12.0, 10.0)
        );
        assert!(close(t.fees, 0.22) && close(t.pnl, 19.78), "{t:?}");
        assert!(close(r.equity_final, 1019.78));
        assert_eq!(t.exit_reason, ExitReason::Signal);
        assert_eq!(s.fills.len(), 2, "the strategy hears of both fills");
        // Marked equity the strategy saw: before, after buying (fee), marked at 11, at 12 (sold at the open).
        assert!(
            close(s.seen_equity[1], 999.9)
                && close(s.seen_equity[2], 1009.9)
                && close(s.seen_equity[3], 1019.78)
        );
    }

    #[test]
    fn slippage_moves_both_fills_against_the_trader() {
        let mut s = Script {
            plan: vec![
                (0, Signal::open_long("A", Size::Base(10.0))),
                (1, Signal::close("A")),
            ],
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[10.0, 10.0, 10.0]))],
            &config(0.0, 100.0),
        );
        let t = &r.trades[0];
        assert!(close(t.price_entry, 10.1) && close(t.price_exit, 9.9));
        assert!(close(t.pnl, -2.0) && close(r.equity_final, 998.0));
    }

    #[test]
    fn short_profits_when_the_price_falls() {
        // Short 10 units at 20, cover at 15: +50 before fees; fees 0.2 + 0.15.
        let mut s = Script {
            plan: vec![
                (0, Signal::open_short("A", Size::Base(10.0))),
                (1, Signal::close("A")),
            ],
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[20.0, 20.0, 15.0, 15.0]))],
            &config(10.0, 0.0),
        );
        let t = &r.trades[0];
        assert_eq!(t.side, Side::Short);
        assert!(close(t.pnl, 50.0 - 0.35), "{t:?}");
        assert!(close(r.equity_final, 1000.0 + 50.0 - 0.35));
    }

    #[test]
    fn a_bar_touching_stop_and_target_exits_at_the_stop() {
        let candles = vec![
            candle(0, 100.0, 100.0, 100.0, 100.0),
            candle(1, 100.0, 100.0, 100.0, 100.0),
            candle(2, 100.0, 120.0, 80.0, 100.0), // touches both 90 and 110
            candle(3, 100.0, 100.0, 100.0, 100.0),
        ];
        let entry = Signal::open_long("A", Size::Base(1.0))
            .stop_loss(90.0)
            .take_profit(110.0);
        let mut s = Script {
            plan: vec![(0, entry)],
            ..Script::default()
        };
        let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
        assert_eq!(r.trades.len(), 1);
        assert_eq!(
            (r.trades[0].exit_reason, r.trades[0].price_exit),
            (ExitReason::StopLoss, 90.0)
        );
        assert_eq!(r.trades[0].time_exit_ms, 2 * 60_000);
        assert!(
            close(r.trades[0].mae, 0.0),
            "MAE is measured at closes after the stop check"
        );
        assert!(close(r.equity_final, 990.0));
    }

    #[test]
    fn take_profit_and_mae_mfe() {
        let candles = vec![
            candle(0, 100.0, 100.0, 100.0, 100.0),
            candle(1, 100.0, 104.0, 95.0, 101.0), // entry at 100; range -5 .. +4
            candle(2, 101.0, 111.0, 100.0, 109.0), // target 110 touched
        ];
        let entry = Signal::open_long("A", Size::Base(2.0))
            .stop_loss(90.0)
            .take_profit(110.0);
        let mut s = Script {
            plan: vec![(0, entry)],
            ..Script::default()
        };
        let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
        let t = &r.trades[0];
        assert_eq!(
            (t.exit_reason, t.price_exit),
            (ExitReason::TakeProfit, 110.0)
        );
        assert!(close(t.pnl, 20.0));
        assert!(close(t.mae, -10.0) && close(t.mfe, 8.0), "{t:?}");
    }

    #[test]
    fn orders_wait_for_their_symbols_next_bar_across_gaps() {
        // B has no bar at minute 1: its order waits for minute 2.
        let a = series("A", flat(&[10.0, 11.0, 12.0, 13.0]));
        let b = series(
            "B",
            vec![
                candle(0, 5.0, 5.0, 5.0, 5.0),
                candle(2, 6.0, 6.0, 6.0, 6.0),
                candle(3, 7.0, 7.0, 7.0, 7.0),
            ],
        );
        let mut s = Script {
            plan: vec![
                (0, Signal::open_long("A", Size::Base(1.0))),
                (0, Signal::open_long("B", Size::Base(1.0))),
            ],
            ..Script::default()
        };
        let r = run(&mut s, &[a, b], &config(0.0, 0.0));
        let fills: Vec<(&str, i64, f64)> = r
            .fills
            .iter()
            .map(|f| (f.symbol.as_str(), f.time_ms, f.price))
            .collect();
        assert_eq!(fills[..2], [("A", 60_000, 11.0), ("B", 120_000, 6.0)]);
        assert_eq!(r.bars, 7, "no bar invented for B's gap");
        // Every bar the strategy saw had closed: open time + bar length <= tick time.
        assert!(
            s.latest_bar_open_ms
                .iter()
                .all(|(tick, open)| open + 60_000 <= *tick)
        );
    }

    #[test]
    fn peeking_cannot_pay_off() {
        // Every bar rises from open to close, then the next opens back down:
        // buying a bar's open and selling its close would win every time, but
        // a strategy only sees closed bars and fills at the next open.
        let candles: Vec<Candle> = (0..40)
            .map(|i| candle(i, 100.0, 110.0, 100.0, 110.0))
            .collect();
        let plan = (0..38)
            .step_by(2)
            .flat_map(|i| {
                [
                    (i, Signal::open_long("A", Size::Base(1.0))),
                    (i + 1, Signal::close("A")),
                ]
            })
            .collect();
        let mut s = Script {
            plan,
            ..Script::default()
        };
        let r = run(&mut s, &[series("A", candles)], &config(0.0, 0.0));
        assert_eq!(r.trades.len(), 19);
        assert!(
            r.trades
                .iter()
                .all(|t| t.price_entry == 100.0 && t.price_exit == 100.0),
            "open to open: no edge"
        );
        assert!(close(r.equity_final, 1000.0));
    }

    #[test]
    fn risk_limits_reject_with_reasons_and_pending_orders_count() {
        let mut cfg = config(0.0, 0.0);
        cfg.limits = RiskLimits {
            max_position_fraction: 0.5,
            max_open_positions: 1,
            max_trade_fraction: 0.3,
            min_order_quote: 5.0,
        };
        let plan = vec![
            (0, Signal::open_long("A", Size::Quote(300.0))),
            (0, Signal::open_long("A", Size::Quote(300.0)).tag("second")),
            (0, Signal::open_long("A", Size::Quote(301.0)).tag("big")),
            (0, Signal::open_long("A", Size::Quote(1.0)).tag("tiny")),
        ];
        let mut s = Script {
            plan,
            ..Script::default()
        };
        let r = run(&mut s, &[series("A", flat(&[10.0, 10.0, 10.0]))], &cfg);
        let reasons: Vec<&str> = r.rejected.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "A would be 60.00% of equity, over the 50.00% position limit",
                "order of 30.10% of equity is over the 30.00% trade limit",
                "order of 1.00 is below the minimum order of 5.00",
            ]
        );
        assert_eq!(
            r.fills.len(),
            2,
            "the accepted entry and its end-of-data exit"
        );
    }

    #[test]
    fn reduce_and_tags_keep_positions_apart() {
        let plan = vec![
            (0, Signal::open_long("A", Size::Base(4.0)).tag("core")),
            (0, Signal::open_long("A", Size::Base(1.0)).tag("extra")),
            (1, Signal::reduce("A", Size::Base(1.0)).tag("core")),
            (2, Signal::close("A").tag("extra")),
        ];
        let mut s = Script {
            plan,
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[10.0, 10.0, 11.0, 12.0, 13.0]))],
            &config(0.0, 0.0),
        );
        let trades: Vec<(&str, f64, f64, ExitReason)> = r
            .trades
            .iter()
            .map(|t| (t.tag.as_str(), t.quantity, t.price_exit, t.exit_reason))
            .collect();
        assert_eq!(
            trades,
            [
                ("core", 1.0, 11.0, ExitReason::Signal),
                ("extra", 1.0, 12.0, ExitReason::Signal),
                ("core", 3.0, 13.0, ExitReason::EndOfData),
            ]
        );
        // The ledger identity: final equity = start + every trade's P&L.
        let pnl: f64 = r.trades.iter().map(|t| t.pnl).sum();
        assert!(close(r.equity_final, 1000.0 + pnl));
    }

    #[test]
    fn volume_cap_and_lot_rounding() {
        let mut cfg = config(0.0, 0.0);
        cfg.fills.max_volume_share = Some(0.01); // 1% of 1000 = 10 units
        cfg.fills.lot_size = 0.5;
        let mut s = Script {
            plan: vec![
                (0, Signal::open_long("A", Size::Base(25.0))),
                (1, Signal::open_long("A", Size::Base(0.3)).tag("b")),
            ],
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[10.0, 10.0, 10.0, 10.0]))],
            &cfg,
        );
        assert_eq!(r.fills[0].quantity, 10.0);
        assert_eq!(r.capped_fills, 1);
        assert_eq!(r.rejected[0].reason, "0.3 rounds to zero lots of 0.5");
    }

    #[test]
    fn an_order_the_data_cannot_fill_is_reported() {
        let mut s = Script {
            plan: vec![(2, Signal::open_long("A", Size::Base(1.0)))],
            ..Script::default()
        };
        let r = run(
            &mut s,
            &[series("A", flat(&[10.0, 11.0, 12.0]))],
            &config(0.0, 0.0),
        );
        assert!(r.fills.is_empty() && r.trades.is_empty());
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(
            r.rejected[0].reason,
            "the data ended before a later A bar could fill it"
        );
        assert_eq!(r.rejected[0].time_ms, 3 * 60_000);
    }

    #[test]
    fn counts_stay_exact_when_signals_and_fills_are_not_kept() {
        let plan: Vec<(usize, Signal)> = (0..40)
            .map(|i| {
                (
                    i,
                    if i % 2 == 0 {
                        Signal::open_long("A", Size::Base(1.0))
                    } else {
                        Signal::close("A")
                    },
                )
            })
            .collect();
        let prices: Vec<f64> = (0..50).map(|i| 10.0 + (i % 3) as f64).collect();
        let full = run(
            &mut Script {
                plan: plan.clone(),
                ..Script::default()
            },
            &[series("A", flat(&prices))],
            &config(10.0, 0.0),
        );
        let lean_config = BacktestConfig {
            record_signals: false,
            record_fills: false,
            ..config(10.0, 0.0)
        };
        let mut lean_script = Script {
            plan,
            ..Script::default()
        };
        let lean = run(
            &mut lean_script,
            &[series("A", flat(&prices))],
            &lean_config,
        );
        assert!(lean.signals.is_empty() && lean.fills.is_empty());
        assert_eq!(
            (lean.signal_count, lean.fill_count),
            (full.signals.len(), full.fills.len())
        );
        assert_eq!(
            lean_script.fills.len(),
            full.fills.len(),
            "the strategy still hears of every fill"
        );
        assert_eq!(lean.trades, full.trades);
        assert_eq!(lean.equity_final, full.equity_final);
    }

    #[test]
    fn same_inputs_same_result() {
        let candles = keel_model::synth::random_walk(5, 3000, 0, 60_000, 100.0, 0.01);
        let plan: Vec<(usize, Signal)> = (0..2990)
            .step_by(7)
            .map(|i| {
                (
                    i,
                    if i % 2 == 0 {
                        Signal::open_long("A", Size::FractionOfEquity(0.1))
                    } else {
                        Signal::close("A")
                    },
                )
            })
            .collect();
        let go = || {
            run(
                &mut Script {
                    plan: plan.clone(),
                    ..Script::default()
                },
                &[series("A", candles.clone())],
                &BacktestConfig::default(),
            )
        };
        assert_eq!(go(), go());
    }

    /// Trades both sides of two symbols with stops and targets, and records
    /// every tick it sees.
    struct Trader {
        n: usize,
        seen: Vec<Tick>,
    }

    impl RunningStrategy for Trader {
        fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
            self.seen.push(tick.clone());
            self.n += 1;
            let Some(bar) = tick.bars.first() else {
                return Ok(vec![]);
            };
            let (symbol, close) = (&*bar.symbol, bar.close);
            Ok(match self.n % 37 {
                0 => vec![
                    Signal::open_long(symbol, Size::FractionOfEquity(0.2))
                        .stop_loss(close * 0.995)
                        .take_profit(close * 1.01),
                ],
                11 => vec![
                    Signal::open_short(symbol, Size::Quote(500.0))
                        .tag("s")
                        .stop_loss(close * 1.004),
                ],
                29 => vec![Signal::close(symbol), Signal::close(symbol).tag("s")],
                _ if self.n.is_multiple_of(101) => return Err(format!("tick {}", self.n)),
                _ => vec![],
            })
        }
        fn on_fill(&mut self, _: &Fill) -> Result<(), String> {
            Ok(())
        }
    }

    /// The same strategy, shown one close per call.
    struct OneAtATime(Trader);

    impl RunningStrategy for OneAtATime {
        fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
            self.0.on_bar(tick)
        }
        fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
            Ok(keel_model::batch::drive(&batch.first(1), |t| {
                self.0.on_bar(t)
            }))
        }
        fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
            self.0.on_fill(fill)
        }
    }

    #[test]
    fn batches_show_and_do_exactly_what_one_close_per_call_does() {
        let a = keel_model::synth::random_walk(1, 4000, 0, 60_000, 100.0, 0.004);
        // B has gaps: every 5th bar is missing.
        let b: Vec<Candle> = keel_model::synth::random_walk(2, 4000, 0, 60_000, 50.0, 0.004)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 5 != 3)
            .map(|(_, c)| c)
            .collect();
        let data = [series("A", a), series("B", b)];
        let cfg = BacktestConfig::default();
        let mut batched = Trader {
            n: 0,
            seen: Vec::new(),
        };
        let mut single = OneAtATime(Trader {
            n: 0,
            seen: Vec::new(),
        });
        let r1 = run(&mut batched, &data, &cfg);
        let r2 = run(&mut single, &data, &cfg);
        assert!(r1.trades.len() > 50, "{} trades", r1.trades.len());
        assert!(
            r1.trades
                .iter()
                .any(|t| t.exit_reason == ExitReason::StopLoss)
                && r1
                    .trades
                    .iter()
                    .any(|t| t.exit_reason == ExitReason::TakeProfit)
        );
        assert!(!r1.errors.is_empty());
        assert_eq!(r1, r2);
        assert_eq!(batched.seen.len(), single.0.seen.len());
        for (x, y) in batched.seen.iter().zip(&single.0.seen) {
            assert_eq!(x, y, "at {}", x.time_ms);
        }
    }

    /// Claims to have handled a different number of closes than it was given.
    struct Miscounts;

    impl RunningStrategy for Miscounts {
        fn on_bar(&mut self, _: &Tick) -> Result<Vec<Signal>, String> {
            Ok(vec![])
        }
        fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
            Ok(BatchOutcome {
                consumed: if batch.tick_times[0] % 120_000 == 0 {
                    0
                } else {
                    batch.tick_times.len() + 1
                },
                ..BatchOutcome::default()
            })
        }
        fn on_fill(&mut self, _: &Fill) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn a_wrong_handled_count_is_an_error_at_that_close_and_the_run_goes_on() {
        let r = run(
            &mut Miscounts,
            &[series("A", flat(&[1.0, 2.0, 3.0, 4.0]))],
            &config(0.0, 0.0),
        );
        assert_eq!(r.steps, 4);
        let times: Vec<i64> = r.errors.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [60_000, 120_000, 180_000, 240_000]);
        assert_eq!(
            r.errors[1].1,
            "said it handled 0 of a batch of 3 bar closes"
        );
    }
}
