//! Turning candle series into ticks, and a plain replay of a strategy over them.
//!
//! `align` is the time axis every runner uses: one step per distinct close
//! time, holding only the symbols that have a bar then (gaps stay gaps).
//! `replay` is the native harness's and `keel strategy run`'s loop: orders fill
//! at the next bar's open of their symbol, without fees or stops. It shows what
//! a strategy *says*; money figures come from the backtester.

use crate::candles::Candle;
use crate::contract::{
    Action, Bar, Fill, Portfolio, Position, RiskLimits, RunningStrategy, Side, Signal, Size, Tick,
};

/// One symbol's candles and its bar length.
#[derive(Debug, Clone)]
pub struct Series {
    pub symbol: String,
    pub candles: Vec<Candle>,
    pub bar_ms: i64,
}

/// One point of the merged time axis: the close time, and for each series
/// that has a bar closing then, (series index, candle index).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub time_ms: i64,
    pub bars: Vec<(usize, usize)>,
}

/// Merges the series on close time (`open time + bar length`).
pub fn align(series: &[Series]) -> Vec<Step> {
    let mut cursor = vec![0usize; series.len()];
    let mut steps = Vec::with_capacity(series.iter().map(|s| s.candles.len()).max().unwrap_or(0));
    loop {
        let next = series
            .iter()
            .zip(&cursor)
            .filter_map(|(s, &c)| s.candles.get(c).map(|k| k.time_ms + s.bar_ms))
            .min();
        let Some(time_ms) = next else { break };
        let mut bars = Vec::with_capacity(series.len());
        for (i, s) in series.iter().enumerate() {
            if let Some(k) = s.candles.get(cursor[i])
                && k.time_ms + s.bar_ms == time_ms
            {
                bars.push((i, cursor[i]));
                cursor[i] += 1;
            }
        }
        steps.push(Step { time_ms, bars });
    }
    steps
}

/// What a replay saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayOutcome {
    /// Every signal, with the close time of the bar that produced it.
    pub signals: Vec<(i64, Signal)>,
    pub fills: Vec<Fill>,
    /// Strategy errors and refused signals, with their time.
    pub errors: Vec<(i64, String)>,
    pub steps: usize,
    pub equity_final: f64,
}

/// Drives `strategy` over `series` with a cash-only book starting at `cash`.
pub fn replay(
    strategy: &mut dyn RunningStrategy,
    series: &[Series],
    cash: f64,
    limits: RiskLimits,
) -> ReplayOutcome {
    let steps = align(series);
    let mut book = Book {
        cash,
        positions: Vec::new(),
        last_price: vec![f64::NAN; series.len()],
    };
    let mut pending: Vec<Signal> = Vec::new();
    let mut out = ReplayOutcome {
        steps: steps.len(),
        ..ReplayOutcome::default()
    };
    for step in &steps {
        let bars: Vec<Bar> = step
            .bars
            .iter()
            .map(|&(s, k)| Bar::from_candle(&series[s].symbol, &series[s].candles[k]))
            .collect();
        // Orders from earlier bars fill at this bar's open, if their symbol traded.
        let mut waiting = Vec::new();
        for signal in pending.drain(..) {
            match bars.iter().find(|b| b.symbol == signal.symbol) {
                Some(bar) => match book.execute(&signal, bar.open, bar.time_ms) {
                    Ok(Some(fill)) => {
                        if let Err(e) = strategy.on_fill(&fill) {
                            out.errors.push((step.time_ms, format!("on-fill: {e}")));
                        }
                        out.fills.push(fill);
                    }
                    Ok(None) => {}
                    Err(e) => out.errors.push((step.time_ms, e)),
                },
                None => waiting.push(signal),
            }
        }
        pending = waiting;
        for (bar, &(s, _)) in bars.iter().zip(&step.bars) {
            book.mark(bar);
            book.last_price[s] = bar.close;
        }
        let tick = Tick {
            time_ms: step.time_ms,
            portfolio: book.view(),
            limits,
            bars,
        };
        match strategy.on_bar(&tick) {
            Ok(signals) => {
                for signal in signals {
                    out.signals.push((step.time_ms, signal.clone()));
                    pending.push(signal);
                }
            }
            Err(e) => out.errors.push((step.time_ms, e)),
        }
    }
    out.equity_final = book.view().equity;
    out
}

struct Book {
    cash: f64,
    positions: Vec<Position>,
    last_price: Vec<f64>,
}

impl Book {
    fn equity(&self) -> f64 {
        self.cash
            + self
                .positions
                .iter()
                .map(|p| {
                    let mark = p.price_entry * p.size + p.pnl_unrealized;
                    match p.side {
                        Side::Long => mark,
                        Side::Short => -(p.price_entry * p.size) + p.pnl_unrealized,
                    }
                })
                .sum::<f64>()
    }

    fn view(&self) -> Portfolio {
        Portfolio {
            cash: self.cash,
            equity: self.equity(),
            positions: self.positions.clone(),
        }
    }

    fn mark(&mut self, bar: &Bar) {
        for p in self.positions.iter_mut().filter(|p| p.symbol == bar.symbol) {
            let (now, worst) = match p.side {
                Side::Long => (bar.close - p.price_entry, bar.low - p.price_entry),
                Side::Short => (p.price_entry - bar.close, p.price_entry - bar.high),
            };
            p.pnl_unrealized = now * p.size;
            p.mae = p.mae.min(worst * p.size).min(0.0);
        }
    }

    fn quantity(&self, size: Size, price: f64) -> f64 {
        match size {
            Size::FractionOfEquity(f) => f * self.equity() / price,
            Size::Quote(q) => q / price,
            Size::Base(b) => b,
        }
    }

    /// Executes one signal at `price`; `Ok(None)` when there was nothing to do.
    fn execute(&mut self, s: &Signal, price: f64, time_ms: i64) -> Result<Option<Fill>, String> {
        let index = self
            .positions
            .iter()
            .position(|p| p.symbol == s.symbol && p.tag == s.tag);
        let quantity = match s.action {
            Action::OpenLong | Action::OpenShort => {
                let side = if s.action == Action::OpenLong {
                    Side::Long
                } else {
                    Side::Short
                };
                let qty = self.quantity(s.size, price);
                if !(qty.is_finite() && qty > 0.0) {
                    return Err(format!(
                        "{} {}: size gives no quantity",
                        s.action.as_str(),
                        s.symbol
                    ));
                }
                match index.map(|i| &mut self.positions[i]) {
                    Some(p) if p.side != side => {
                        return Err(format!(
                            "{} {} tag '{}': the tag holds the other side",
                            s.action.as_str(),
                            s.symbol,
                            s.tag
                        ));
                    }
                    Some(p) => {
                        p.price_entry = (p.price_entry * p.size + price * qty) / (p.size + qty);
                        p.size += qty;
                    }
                    None => self.positions.push(Position {
                        symbol: s.symbol.clone(),
                        tag: s.tag.clone(),
                        side,
                        size: qty,
                        price_entry: price,
                        time_entry_ms: time_ms,
                        pnl_unrealized: 0.0,
                        mae: 0.0,
                    }),
                }
                self.cash += if side == Side::Long {
                    -qty * price
                } else {
                    qty * price
                };
                qty
            }
            Action::Close | Action::Reduce => {
                let Some(i) = index else { return Ok(None) };
                let held = self.positions[i].size;
                let qty = if s.action == Action::Close {
                    held
                } else {
                    self.quantity(s.size, price).min(held)
                };
                if !(qty.is_finite() && qty > 0.0) {
                    return Ok(None);
                }
                let p = &mut self.positions[i];
                self.cash += if p.side == Side::Long {
                    qty * price
                } else {
                    -qty * price
                };
                p.size -= qty;
                if p.size <= held * 1e-12 {
                    self.positions.remove(i);
                } else {
                    p.pnl_unrealized *= p.size / held;
                }
                qty
            }
        };
        Ok(Some(Fill {
            symbol: s.symbol.clone(),
            tag: s.tag.clone(),
            action: s.action,
            price,
            quantity,
            fee: 0.0,
            time_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(t: i64, price: f64) -> Candle {
        Candle {
            time_ms: t,
            open: price,
            high: price + 1.0,
            low: price - 1.0,
            close: price,
            volume: 1.0,
        }
    }

    #[test]
    fn align_keeps_gaps_as_gaps() {
        let a = Series {
            symbol: "A".into(),
            candles: vec![candle(0, 10.0), candle(60, 11.0), candle(120, 12.0)],
            bar_ms: 60,
        };
        let b = Series {
            symbol: "B".into(),
            candles: vec![candle(0, 5.0), candle(120, 6.0)],
            bar_ms: 60,
        };
        let steps = align(&[a, b]);
        let times: Vec<i64> = steps.iter().map(|s| s.time_ms).collect();
        assert_eq!(times, vec![60, 120, 180]);
        assert_eq!(steps[1].bars, vec![(0, 1)], "B has no bar closing at 120");
        assert_eq!(steps[2].bars, vec![(0, 2), (1, 1)]);
    }

    /// Buys on the first bar, closes on the third; records what it saw.
    struct BuyThenClose {
        bars_seen: usize,
        fills: Vec<Fill>,
        equity_seen: Vec<f64>,
    }

    impl RunningStrategy for BuyThenClose {
        fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
            self.bars_seen += 1;
            self.equity_seen.push(tick.portfolio.equity);
            Ok(match self.bars_seen {
                1 => vec![Signal::open_long("A", Size::Quote(100.0))],
                3 => vec![Signal::close("A")],
                _ => vec![],
            })
        }
        fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
            self.fills.push(fill.clone());
            Ok(())
        }
    }

    #[test]
    fn orders_fill_at_the_next_open() {
        let a = Series {
            symbol: "A".into(),
            candles: vec![
                candle(0, 10.0),
                candle(60, 20.0),
                candle(120, 25.0),
                candle(180, 30.0),
            ],
            bar_ms: 60,
        };
        let mut s = BuyThenClose {
            bars_seen: 0,
            fills: vec![],
            equity_seen: vec![],
        };
        let out = replay(&mut s, &[a], 1000.0, RiskLimits::default());
        assert_eq!(out.fills.len(), 2);
        // Bought 100 quote at bar 2's open (20): 5 units; sold at bar 4's open (30).
        assert_eq!(out.fills[0].price, 20.0);
        assert_eq!(out.fills[0].quantity, 5.0);
        assert_eq!(out.fills[1].price, 30.0);
        assert_eq!(s.fills, out.fills);
        assert_eq!(out.equity_final, 1000.0 + 5.0 * 10.0);
        // Bar 3 closes at 25: marked equity 900 cash + 5 * 25.
        assert_eq!(s.equity_seen, vec![1000.0, 1000.0, 1025.0, 1050.0]);
    }
}
