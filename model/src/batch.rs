//! Batches of bar closes: how the host hands a strategy many closes in one
//! call, and how a strategy works through them one tick at a time.
//!
//! The host batches only closes between which nothing but prices can change
//! the portfolio (no order waiting, no stop or target within reach). The
//! strategy handles ticks in order and stops after the first one that gives
//! signals; [`drive`] does exactly that over any per-tick `on_bar`, marking
//! the portfolio at each later tick's closes with the same arithmetic the
//! host uses, so a strategy sees what it would see one call per bar.

use crate::candles::Candle;
use crate::contract::{Bar, Portfolio, RiskLimits, Signal, Symbol, Tick};

/// One bar close in a batch: its close time and how many bars closed then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickSpan {
    pub time_ms: i64,
    pub bars: u32,
}

/// One bar of a batch: its symbol, as an index into the batch's symbol
/// table, and the candle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchBar {
    pub symbol: u32,
    pub candle: Candle,
}

/// Consecutive bar closes handed over in one call.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// What a bar's `symbol` index names.
    pub symbols: &'a [Symbol],
    /// The closes, in time order; at least one.
    pub ticks: &'a [TickSpan],
    /// Their bars, tick after tick.
    pub bars: &'a [BatchBar],
    /// The portfolio after the first tick's close.
    pub portfolio: &'a Portfolio,
    pub limits: RiskLimits,
}

/// How far a strategy got through a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// Ticks handled, from the first; at least one.
    pub consumed: usize,
    /// Signals of the last tick handled.
    pub signals: Vec<Signal>,
    /// The last tick handled failed with this error.
    pub error: Option<String>,
}

/// Hands `batch` to `on_bar` one tick at a time, until a tick gives signals
/// or an error, or the batch ends.
pub fn drive(
    batch: &Batch<'_>,
    mut on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    let widest = batch.ticks.iter().map(|t| t.bars as usize).max();
    let mut tick = Tick {
        time_ms: 0,
        bars: Vec::with_capacity(widest.unwrap_or(0)),
        portfolio: batch.portfolio.clone(),
        limits: batch.limits,
    };
    let mut start = 0;
    for (i, span) in batch.ticks.iter().enumerate() {
        let end = (start + span.bars as usize).min(batch.bars.len());
        tick.time_ms = span.time_ms;
        tick.bars.clear();
        tick.bars
            .extend(batch.bars[start..end].iter().filter_map(|b| {
                Some(Bar::from_candle(batch.symbols.get(b.symbol as usize)?, &b.candle))
            }));
        start = end;
        if i > 0 {
            tick.portfolio.mark(&tick.bars);
        }
        let (signals, error) = match on_bar(&tick) {
            Ok(signals) if signals.is_empty() => continue,
            Ok(signals) => (signals, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        return BatchOutcome {
            consumed: i + 1,
            signals,
            error,
        };
    }
    BatchOutcome {
        consumed: batch.ticks.len(),
        signals: Vec::new(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Position, Side, Size};

    fn candle(time_ms: i64, low: f64, high: f64, close: f64) -> Candle {
        Candle {
            time_ms,
            open: close,
            high,
            low,
            close,
            volume: 1.0,
        }
    }

    #[test]
    fn stops_after_the_first_tick_with_signals_and_marks_later_ticks() {
        let symbols: Vec<Symbol> = vec!["A".into(), "B".into()];
        let ticks = [
            TickSpan { time_ms: 1, bars: 2 },
            TickSpan { time_ms: 2, bars: 1 },
            TickSpan { time_ms: 3, bars: 2 },
            TickSpan { time_ms: 4, bars: 1 },
        ];
        let bars = [
            BatchBar { symbol: 0, candle: candle(0, 9.0, 11.0, 10.0) },
            BatchBar { symbol: 1, candle: candle(0, 1.0, 1.0, 1.0) },
            BatchBar { symbol: 1, candle: candle(1, 1.0, 1.0, 1.0) },
            BatchBar { symbol: 0, candle: candle(2, 7.0, 12.0, 8.0) },
            BatchBar { symbol: 1, candle: candle(2, 1.0, 1.0, 1.0) },
            BatchBar { symbol: 0, candle: candle(3, 8.0, 8.0, 8.0) },
        ];
        let mut position = Position {
            symbol: "A".into(),
            tag: String::new(),
            side: Side::Long,
            size: 2.0,
            price_entry: 10.0,
            time_entry_ms: 0,
            price_mark: 10.0,
            pnl_unrealized: 0.0,
            mae: -2.0,
        };
        position.pnl_unrealized = position.unrealized();
        let portfolio = Portfolio {
            cash: 100.0,
            equity: 120.0,
            positions: vec![position],
        };
        let batch = Batch {
            symbols: &symbols,
            ticks: &ticks,
            bars: &bars,
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        let mut seen = Vec::new();
        let outcome = drive(&batch, |tick| {
            seen.push((
                tick.time_ms,
                tick.bars.iter().map(|b| b.symbol.to_string()).collect::<Vec<_>>(),
                tick.portfolio.equity,
                tick.portfolio.positions[0].mae,
            ));
            Ok(if tick.time_ms == 3 {
                vec![Signal::close("A")]
            } else {
                vec![]
            })
        });
        assert_eq!(outcome.consumed, 3);
        assert_eq!(outcome.signals, vec![Signal::close("A")]);
        assert_eq!(
            seen,
            vec![
                (1, vec!["A".to_owned(), "B".to_owned()], 120.0, -2.0),
                // No bar of A: nothing moves.
                (2, vec!["B".to_owned()], 120.0, -2.0),
                // A closes at 8 after a low of 7: equity 100 + 2 × 8, MAE 2 × (7 - 10).
                (3, vec!["A".to_owned(), "B".to_owned()], 116.0, -6.0),
            ]
        );
    }

    #[test]
    fn an_error_ends_the_batch_at_its_tick() {
        let symbols: Vec<Symbol> = vec!["A".into()];
        let ticks = [
            TickSpan { time_ms: 1, bars: 1 },
            TickSpan { time_ms: 2, bars: 1 },
        ];
        let bars = [
            BatchBar { symbol: 0, candle: candle(0, 1.0, 1.0, 1.0) },
            BatchBar { symbol: 0, candle: candle(1, 1.0, 1.0, 1.0) },
        ];
        let portfolio = Portfolio::default();
        let batch = Batch {
            symbols: &symbols,
            ticks: &ticks,
            bars: &bars,
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        let outcome = drive(&batch, |_| Err("broken".to_owned()));
        assert_eq!(outcome.consumed, 1);
        assert_eq!(outcome.error.as_deref(), Some("broken"));
        let outcome = drive(&batch, |_| {
            Ok(vec![Signal::open_long("A", Size::Quote(10.0))])
        });
        assert_eq!(outcome.consumed, 1);
        let outcome = drive(&batch, |_| Ok(vec![]));
        assert_eq!((outcome.consumed, outcome.signals.len()), (2, 0));
    }
}
