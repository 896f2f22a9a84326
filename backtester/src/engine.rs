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

use std::collections::BTreeMap;

use keel_model::replay::{Feed, Merge, Series};
use keel_model::{
    Action, Bar, Fill, Portfolio, Position, RiskLimits, RunningStrategy, Side, Signal,
};

use crate::fills::FillModel;
use crate::metrics::{EquityStats, EquityTracker};
use crate::risk::{self, Exposure};

/// Everything a backtest is run with besides the strategy and the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BacktestConfig {
    /// Starting cash, quote currency.
    pub cash: f64,
    pub fills: FillModel,
    pub limits: RiskLimits,
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
            record_signals: true,
            record_fills: true,
        }
    }
}

/// Why a trade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    Signal,
    StopLoss,
    TakeProfit,
    EndOfData,
}

/// A closed (part of a) position, net of every fee.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Trade {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
    pub quantity: f64,
    pub price_entry: f64,
    pub price_exit: f64,
    pub time_entry_ms: i64,
    pub time_exit_ms: i64,
    /// Profit or loss after entry and exit fees, quote currency.
    pub pnl: f64,
    pub fees: f64,
    /// Worst and best unrealized P&L while open, quote currency.
    pub mae: f64,
    pub mfe: f64,
    pub exit_reason: ExitReason,
}

/// Equity after the bars closing at `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EquityPoint {
    pub time_ms: i64,
    pub equity: f64,
}

/// A signal the risk checks or the fill model refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub time_ms: i64,
    pub signal: Signal,
    pub reason: String,
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

#[derive(Debug, Clone)]
struct Open {
    symbol: String,
    tag: String,
    side: Side,
    quantity: f64,
    price_entry: f64,
    time_entry_ms: i64,
    stop_loss: Option<f64>,
    take_profit: Option<f64>,
    /// Entry fees not yet charged to a trade.
    fees: f64,
    mae: f64,
    mfe: f64,
    mark: f64,
}

impl Open {
    fn value(&self) -> f64 {
        match self.side {
            Side::Long => self.quantity * self.mark,
            Side::Short => -self.quantity * self.mark,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    signal: Signal,
    /// Equity when the signal was made: what a fraction of equity means.
    equity: f64,
}

struct Book<'a> {
    config: &'a BacktestConfig,
    cash: f64,
    open: Vec<Open>,
    trades: Vec<Trade>,
    fills: Vec<Fill>,
    rejected: Vec<Rejection>,
    fees: f64,
    capped: usize,
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
pub fn run_feeds(
    strategy: &mut dyn RunningStrategy,
    feeds: Vec<Feed<'_>>,
    config: &BacktestConfig,
) -> BacktestResult {
    let mut merge = Merge::new(feeds);
    let symbols: Vec<String> = merge.feeds().iter().map(|f| f.symbol.clone()).collect();
    let bar_ms = merge
        .feeds()
        .iter()
        .map(|f| f.bar_ms)
        .min()
        .unwrap_or(60_000);
    let index: BTreeMap<&str, usize> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut last_close = vec![f64::NAN; symbols.len()];
    let mut book = Book {
        config,
        cash: config.cash,
        open: Vec::new(),
        trades: Vec::new(),
        fills: Vec::new(),
        rejected: Vec::new(),
        fees: 0.0,
        capped: 0,
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut curve = EquityTracker::new(config.cash);
    let mut errors = Vec::new();
    let (mut exposed_steps, mut bar_count, mut step_count) = (0usize, 0usize, 0usize);
    let (mut all_signals, mut signal_count) = (Vec::new(), 0usize);
    let (mut all_fills, mut fill_count) = (Vec::new(), 0usize);
    let mut step_candles = Vec::with_capacity(symbols.len());
    let mut end_ms = 0;

    while let Some(time_ms) = merge.next_step(&mut step_candles) {
        step_count += 1;
        end_ms = time_ms;
        let bars: Vec<Bar> = step_candles
            .iter()
            .map(|(s, c)| Bar::from_candle(&symbols[*s], c))
            .collect();
        bar_count += bars.len();

        // 1. Fill waiting orders at this bar's open.
        let mut waiting = Vec::new();
        for order in pending.drain(..) {
            match bars.iter().find(|b| b.symbol == order.signal.symbol) {
                Some(bar) => book.execute(order, bar),
                None => waiting.push(order),
            }
        }
        pending = waiting;

        // 2. Stops and targets inside the bar.
        for bar in &bars {
            let mut i = 0;
            while i < book.open.len() {
                let p = &book.open[i];
                let exit = (p.symbol == bar.symbol)
                    .then(|| {
                        config
                            .fills
                            .exit_in_bar(p.side, p.stop_loss, p.take_profit, bar)
                    })
                    .flatten();
                match exit {
                    Some((price, reason)) => {
                        let quantity = book.open[i].quantity;
                        book.exit(i, quantity, price, reason, bar.time_ms);
                    }
                    None => i += 1,
                }
            }
        }

        // 3. Mark at the close.
        for (bar, &(s, _)) in bars.iter().zip(&step_candles) {
            last_close[s] = bar.close;
            for p in book.open.iter_mut().filter(|p| p.symbol == bar.symbol) {
                let (worst, best) = match p.side {
                    Side::Long => (bar.low - p.price_entry, bar.high - p.price_entry),
                    Side::Short => (p.price_entry - bar.high, p.price_entry - bar.low),
                };
                p.mae = p.mae.min(worst * p.quantity);
                p.mfe = p.mfe.max(best * p.quantity);
                p.mark = bar.close;
            }
        }
        let equity = book.equity();
        curve.push(EquityPoint { time_ms, equity });
        if !book.open.is_empty() {
            exposed_steps += 1;
        }

        // Tell the strategy what filled, then show it the closed bars.
        for fill in book.fills.drain(..) {
            if let Err(e) = strategy.on_fill(&fill) {
                errors.push((time_ms, format!("on-fill: {e}")));
            }
            fill_count += 1;
            if config.record_fills {
                all_fills.push(fill);
            }
        }
        let tick = keel_model::Tick {
            time_ms,
            bars,
            portfolio: book.view(equity),
            limits: config.limits,
        };
        let signals = match strategy.on_bar(&tick) {
            Ok(signals) => signals,
            Err(e) => {
                errors.push((time_ms, e));
                continue;
            }
        };
        if signals.is_empty() {
            continue;
        }
        let mut exposure = book.exposure(equity, &pending, &last_close, &index);
        for signal in signals {
            signal_count += 1;
            if config.record_signals {
                all_signals.push((time_ms, signal.clone()));
            }
            let price = index
                .get(signal.symbol.as_str())
                .map_or(f64::NAN, |&s| last_close[s]);
            match risk::check(&signal, price, &exposure, &config.limits) {
                Ok(approved) => {
                    if let Some(a) = approved {
                        exposure.add(&signal, a);
                    }
                    pending.push(Pending { signal, equity });
                }
                Err(reason) => book.rejected.push(Rejection {
                    time_ms,
                    signal,
                    reason,
                }),
            }
        }
    }

    // Orders that never met a later bar of their symbol did not fill.
    for order in pending {
        let reason = format!(
            "the data ended before a later {} bar could fill it",
            order.signal.symbol
        );
        book.reject(order, end_ms, reason);
    }
    // Whatever is still open is closed at its symbol's last close.
    while let Some(p) = book.open.last() {
        let s = index.get(p.symbol.as_str()).copied().unwrap_or(0);
        let buy = p.side == Side::Short;
        let price = config.fills.market_price(last_close[s], buy);
        let (i, quantity) = (book.open.len() - 1, p.quantity);
        book.exit(i, quantity, price, ExitReason::EndOfData, end_ms);
    }
    let equity_final = book.cash;
    fill_count += book.fills.len();
    if config.record_fills {
        all_fills.append(&mut book.fills);
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

impl Book<'_> {
    fn equity(&self) -> f64 {
        self.cash + self.open.iter().map(Open::value).sum::<f64>()
    }

    fn view(&self, equity: f64) -> Portfolio {
        Portfolio {
            cash: self.cash,
            equity,
            positions: self
                .open
                .iter()
                .map(|p| Position {
                    symbol: p.symbol.clone(),
                    tag: p.tag.clone(),
                    side: p.side,
                    size: p.quantity,
                    price_entry: p.price_entry,
                    time_entry_ms: p.time_entry_ms,
                    pnl_unrealized: match p.side {
                        Side::Long => (p.mark - p.price_entry) * p.quantity,
                        Side::Short => (p.price_entry - p.mark) * p.quantity,
                    },
                    mae: p.mae,
                })
                .collect(),
        }
    }

    /// Held and pending exposure, for the risk checks.
    fn exposure(
        &self,
        equity: f64,
        pending: &[Pending],
        last_close: &[f64],
        index: &BTreeMap<&str, usize>,
    ) -> Exposure {
        let mut e = Exposure {
            equity,
            ..Exposure::default()
        };
        for p in &self.open {
            *e.notional.entry(p.symbol.clone()).or_default() += p.quantity * p.mark;
            let key = (p.symbol.clone(), p.tag.clone());
            if !e.open.contains(&key) {
                e.open.push(key.clone());
            }
            e.sides.insert(key, p.side);
        }
        // Orders accepted on earlier bars and not filled yet take their share.
        for order in pending
            .iter()
            .filter(|o| matches!(o.signal.action, Action::OpenLong | Action::OpenShort))
        {
            let price = index
                .get(order.signal.symbol.as_str())
                .map_or(f64::NAN, |&s| last_close[s]);
            let quantity = risk::quantity(order.signal.size, price, order.equity);
            let notional = quantity * price;
            if notional.is_finite() && notional > 0.0 {
                e.add(&order.signal, risk::Approved { quantity, notional });
            }
        }
        e
    }

    fn reject(&mut self, order: Pending, time_ms: i64, reason: String) {
        self.rejected.push(Rejection {
            time_ms,
            signal: order.signal,
            reason,
        });
    }

    /// Fills one order at `bar`'s open.
    fn execute(&mut self, order: Pending, bar: &Bar) {
        let fills = self.config.fills;
        let signal = &order.signal;
        let index = self
            .open
            .iter()
            .position(|p| p.symbol == signal.symbol && p.tag == signal.tag);
        match signal.action {
            Action::OpenLong | Action::OpenShort => {
                let side = if signal.action == Action::OpenLong {
                    Side::Long
                } else {
                    Side::Short
                };
                let price = fills.market_price(bar.open, side == Side::Long);
                let wanted = risk::quantity(signal.size, price, order.equity);
                let (quantity, capped) = fills.fillable(wanted, bar.volume);
                if quantity <= 0.0 {
                    let reason = format!("{wanted} rounds to zero lots of {}", fills.lot_size);
                    return self.reject(order, bar.time_ms, reason);
                }
                if let Some(i) = index
                    && self.open[i].side != side
                {
                    let reason = format!("tag '{}' holds the other side", signal.tag);
                    return self.reject(order, bar.time_ms, reason);
                }
                self.capped += usize::from(capped);
                let fee = fills.fee(quantity, price);
                self.fees += fee;
                self.cash += match side {
                    Side::Long => -(quantity * price) - fee,
                    Side::Short => quantity * price - fee,
                };
                match index {
                    Some(i) => {
                        let p = &mut self.open[i];
                        p.price_entry = (p.price_entry * p.quantity + price * quantity)
                            / (p.quantity + quantity);
                        p.quantity += quantity;
                        p.fees += fee;
                        p.stop_loss = signal.stop_loss.or(p.stop_loss);
                        p.take_profit = signal.take_profit.or(p.take_profit);
                    }
                    None => self.open.push(Open {
                        symbol: signal.symbol.clone(),
                        tag: signal.tag.clone(),
                        side,
                        quantity,
                        price_entry: price,
                        time_entry_ms: bar.time_ms,
                        stop_loss: signal.stop_loss,
                        take_profit: signal.take_profit,
                        fees: fee,
                        mae: 0.0,
                        mfe: 0.0,
                        mark: price,
                    }),
                }
                self.fills.push(Fill {
                    symbol: signal.symbol.clone(),
                    tag: signal.tag.clone(),
                    action: signal.action,
                    price,
                    quantity,
                    fee,
                    time_ms: bar.time_ms,
                });
            }
            Action::Close | Action::Reduce => {
                // Nothing open under the tag: nothing to do.
                let Some(i) = index else { return };
                let held = self.open[i].quantity;
                let price = fills.market_price(bar.open, self.open[i].side == Side::Short);
                let quantity = match signal.action {
                    Action::Close => held,
                    _ => {
                        fills.round_lot(risk::quantity(signal.size, price, order.equity).min(held))
                    }
                };
                if quantity > 0.0 {
                    self.exit_as(
                        i,
                        quantity,
                        price,
                        ExitReason::Signal,
                        bar.time_ms,
                        signal.action,
                    );
                }
            }
        }
    }

    fn exit(&mut self, i: usize, quantity: f64, price: f64, reason: ExitReason, time_ms: i64) {
        self.exit_as(i, quantity, price, reason, time_ms, Action::Close);
    }

    /// Closes `quantity` of position `i` at `price`, recording the trade and the fill.
    fn exit_as(
        &mut self,
        i: usize,
        quantity: f64,
        price: f64,
        reason: ExitReason,
        time_ms: i64,
        action: Action,
    ) {
        let fee = self.config.fills.fee(quantity, price);
        let p = &mut self.open[i];
        let share = (quantity / p.quantity).min(1.0);
        let entry_fees = p.fees * share;
        let gross = match p.side {
            Side::Long => (price - p.price_entry) * quantity,
            Side::Short => (p.price_entry - price) * quantity,
        };
        self.cash += match p.side {
            Side::Long => quantity * price - fee,
            Side::Short => -(quantity * price) - fee,
        };
        self.fees += fee;
        self.trades.push(Trade {
            symbol: p.symbol.clone(),
            tag: p.tag.clone(),
            side: p.side,
            quantity,
            price_entry: p.price_entry,
            price_exit: price,
            time_entry_ms: p.time_entry_ms,
            time_exit_ms: time_ms,
            pnl: gross - entry_fees - fee,
            fees: entry_fees + fee,
            mae: p.mae * share,
            mfe: p.mfe * share,
            exit_reason: reason,
        });
        self.fills.push(Fill {
            symbol: p.symbol.clone(),
            tag: p.tag.clone(),
            action,
            price,
            quantity,
            fee,
            time_ms,
        });
        if share >= 1.0 - 1e-12 {
            self.open.remove(i);
        } else {
            p.quantity -= quantity;
            p.fees -= entry_fees;
            p.mae *= 1.0 - share;
            p.mfe *= 1.0 - share;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::candles::Candle;
    use keel_model::{Size, Tick};

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
}
