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
use crate::contract::{Bar, Portfolio, Position, RiskLimits, Signal, Symbol, Tick};

mod packed;
pub use packed::{KEY_LANES, PRICE_LANES, Packed, PackedBuffers, TICK_LANES, drive_packed};

/// Bars, column by column (entry `i` of every column is bar `i`): how they
/// cross the component boundary, as plain copies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarColumns {
    /// Index into the batch's symbol table.
    pub symbol: Vec<u32>,
    pub time_ms: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
}

impl BarColumns {
    #[inline]
    pub fn len(&self) -> usize {
        self.symbol.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.symbol.is_empty()
    }

    #[inline]
    pub fn push(&mut self, symbol: u32, c: &Candle) {
        self.symbol.push(symbol);
        self.time_ms.push(c.time_ms);
        self.open.push(c.open);
        self.high.push(c.high);
        self.low.push(c.low);
        self.close.push(c.close);
        self.volume.push(c.volume);
    }

    /// Appends `candles`, all of `symbol`, column by column.
    pub fn extend_candles(&mut self, symbol: u32, candles: &[Candle]) {
        self.symbol
            .extend(std::iter::repeat_n(symbol, candles.len()));
        self.time_ms.extend(candles.iter().map(|c| c.time_ms));
        self.open.extend(candles.iter().map(|c| c.open));
        self.high.extend(candles.iter().map(|c| c.high));
        self.low.extend(candles.iter().map(|c| c.low));
        self.close.extend(candles.iter().map(|c| c.close));
        self.volume.extend(candles.iter().map(|c| c.volume));
    }

    /// Appends `bars`, column by column.
    pub fn extend_from(&mut self, bars: Bars<'_>) {
        let n = bars.len();
        self.symbol.extend_from_slice(&bars.symbol[..n]);
        self.time_ms.extend_from_slice(&bars.time_ms[..n]);
        self.open.extend_from_slice(&bars.open[..n]);
        self.high.extend_from_slice(&bars.high[..n]);
        self.low.extend_from_slice(&bars.low[..n]);
        self.close.extend_from_slice(&bars.close[..n]);
        self.volume.extend_from_slice(&bars.volume[..n]);
    }

    /// Drops the first `n` bars.
    pub fn drop_front(&mut self, n: usize) {
        self.symbol.drain(..n);
        self.time_ms.drain(..n);
        for column in [
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
            &mut self.volume,
        ] {
            column.drain(..n);
        }
    }

    /// Bars `from..to`, borrowed.
    #[inline]
    pub fn slice(&self, from: usize, to: usize) -> Bars<'_> {
        Bars {
            symbol: &self.symbol,
            time_ms: &self.time_ms,
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            volume: &self.volume,
        }
        .slice(from, to)
    }
}

/// Borrowed bar columns, all of one length.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bars<'a> {
    pub symbol: &'a [u32],
    pub time_ms: &'a [i64],
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub volume: &'a [f64],
}

impl<'a> Bars<'a> {
    /// The shortest column's length (they are equal when well formed).
    #[inline]
    pub fn len(&self) -> usize {
        [
            self.symbol.len(),
            self.time_ms.len(),
            self.open.len(),
            self.high.len(),
            self.low.len(),
            self.close.len(),
            self.volume.len(),
        ]
        .into_iter()
        .min()
        .unwrap_or(0)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bar `i`'s symbol index and candle.
    #[inline]
    pub fn get(&self, i: usize) -> (u32, Candle) {
        (
            self.symbol[i],
            Candle {
                time_ms: self.time_ms[i],
                open: self.open[i],
                high: self.high[i],
                low: self.low[i],
                close: self.close[i],
                volume: self.volume[i],
            },
        )
    }

    /// Bars `from..to`.
    #[inline]
    pub fn slice(&self, from: usize, to: usize) -> Bars<'a> {
        Bars {
            symbol: &self.symbol[from..to],
            time_ms: &self.time_ms[from..to],
            open: &self.open[from..to],
            high: &self.high[from..to],
            low: &self.low[from..to],
            close: &self.close[from..to],
            volume: &self.volume[from..to],
        }
    }
}

/// Consecutive bar closes handed over in one call.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// What a bar's `symbol` index names.
    pub symbols: &'a [Symbol],
    /// Close time of each close, in time order; at least one.
    pub tick_times: &'a [i64],
    /// How many bars closed at each, in order.
    pub tick_bars: &'a [u32],
    /// The bars, close after close.
    pub bars: Bars<'a>,
    /// The portfolio after the first tick's close.
    pub portfolio: &'a Portfolio,
    pub limits: RiskLimits,
}

impl<'a> Batch<'a> {
    /// Whether `symbol` keeps every bar and the ticks account for all of
    /// them: then the bars can be copied as they are, lane by lane.
    pub fn keeps_all(&self, symbol: impl Fn(u32) -> Option<u32>) -> bool {
        let ticks = self.ticks();
        let counted: usize = self.tick_bars[..ticks].iter().map(|&n| n as usize).sum();
        let bars = self.bars.len();
        counted == bars
            && self.bars.symbol[..bars]
                .iter()
                .all(|&s| symbol(s).is_some())
    }

    /// Walks the bars `symbol` keeps (renaming their symbol index), tick by
    /// tick: `bar` for each kept bar, then `tick` with the tick's close time
    /// and how many of its bars were kept.
    pub fn for_each_kept(
        &self,
        symbol: impl Fn(u32) -> Option<u32>,
        mut bar: impl FnMut(u32, &Candle),
        mut tick: impl FnMut(i64, u32),
    ) {
        let mut start = 0;
        for i in 0..self.ticks() {
            let (time_ms, count) = self.tick(i);
            let end = (start + count as usize).min(self.bars.len());
            let mut kept = 0;
            for b in start..end {
                let (index, candle) = self.bars.get(b);
                if let Some(index) = symbol(index) {
                    bar(index, &candle);
                    kept += 1;
                }
            }
            tick(time_ms, kept);
            start = end;
        }
    }

    /// The first `ticks` closes of this batch.
    #[inline]
    pub fn first(&self, ticks: usize) -> Batch<'a> {
        let ticks = ticks.min(self.tick_times.len()).min(self.tick_bars.len());
        let bars: usize = self.tick_bars[..ticks].iter().map(|&n| n as usize).sum();
        Batch {
            tick_times: &self.tick_times[..ticks],
            tick_bars: &self.tick_bars[..ticks],
            bars: self.bars.slice(0, bars.min(self.bars.len())),
            ..*self
        }
    }
}

/// How far a strategy got through a batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// Ticks handled, from the first; at least one.
    pub consumed: usize,
    /// Signals of the last tick handled that passed the runner's checks of
    /// strategy output (a sandbox's; a native strategy's are all here).
    pub signals: Vec<Signal>,
    /// Signals of the last tick handled that those checks refused, with the
    /// reason. They never reach `signals`, and every report counts them.
    pub refused: Vec<(Signal, String)>,
    /// The last tick handled failed with this error.
    pub error: Option<String>,
}

/// Bar closes in some layout: what [`drive_closes`] walks through.
pub trait Closes {
    /// How many ticks (bar closes) there are.
    fn ticks(&self) -> usize;
    /// Tick `i`'s close time and how many bars closed at it.
    fn tick(&self, i: usize) -> (i64, u32);
    /// How many bars there are, over all ticks.
    fn bars(&self) -> usize;
    /// Bar `b`'s symbol index and candle.
    fn bar(&self, b: usize) -> (u32, Candle);
}

impl Closes for Batch<'_> {
    #[inline]
    fn ticks(&self) -> usize {
        self.tick_times.len().min(self.tick_bars.len())
    }
    #[inline]
    fn tick(&self, i: usize) -> (i64, u32) {
        (self.tick_times[i], self.tick_bars[i])
    }
    #[inline]
    fn bars(&self) -> usize {
        self.bars.len()
    }
    #[inline]
    fn bar(&self, b: usize) -> (u32, Candle) {
        self.bars.get(b)
    }
}

/// Hands `batch` to `on_bar` one tick at a time, until a tick gives signals
/// or an error, or the batch ends. `tick` is scratch space, reused across
/// calls to save allocations; its contents on entry do not matter.
pub fn drive_with(
    batch: &Batch<'_>,
    tick: &mut Tick,
    on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    tick.portfolio.clone_from(batch.portfolio);
    tick.limits = batch.limits;
    drive_closes(batch, batch.symbols, tick, on_bar)
}

/// [`drive_with`] over closes in any layout: `symbols` names the bars'
/// symbol indices (bars of an index it lacks are left out). `tick` comes
/// with the portfolio after the first close and the limits in place (the
/// caller writes them there, saving a copy); its time and bars do not
/// matter.
pub fn drive_closes<C: Closes + ?Sized>(
    closes: &C,
    symbols: &[Symbol],
    tick: &mut Tick,
    on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    drive_closes_from(closes, (0, 0), symbols, tick, on_bar)
}

/// [`drive_closes`] from tick `first`, whose bars start at bar `start`:
/// the ticks before it were handled, so `first` is marked like any later
/// tick (unless it is the batch's first).
fn drive_closes_from<C: Closes + ?Sized>(
    closes: &C,
    (first, mut start): (usize, usize),
    symbols: &[Symbol],
    tick: &mut Tick,
    mut on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    let (ticks, bars) = (closes.ticks(), closes.bars());
    // Which bound symbols each position is of, as bits, worked out once:
    // positions do not change within a batch, and marking by index spares
    // a comparison of names per bar.
    let of_symbols: Option<Vec<u64>> = (ticks > 1 && symbols.len() <= 64)
        .then(|| position_symbols(symbols, &tick.portfolio.positions));
    for i in first..ticks {
        let (time_ms, count) = closes.tick(i);
        let end = (start + count as usize).min(bars);
        tick.time_ms = time_ms;
        // Written over the last tick's bars: a bar of the same symbol in the
        // same place keeps its name (no count of it taken and given back).
        let mut n = 0;
        for b in start..end {
            let (symbol, candle) = closes.bar(b);
            if let Some(name) = symbols.get(symbol as usize) {
                match tick.bars.get_mut(n) {
                    Some(bar) if Symbol::ptr_eq(&bar.symbol, name) => bar.set_candle(&candle),
                    Some(bar) => *bar = Bar::from_candle(name, &candle),
                    None => tick.bars.push(Bar::from_candle(name, &candle)),
                }
                n += 1;
            }
        }
        tick.bars.truncate(n);
        if i > 0 && !tick.portfolio.positions.is_empty() {
            match &of_symbols {
                Some(of_symbols) => mark_by_index(closes, start..end, of_symbols, tick),
                None => tick.portfolio.mark(&tick.bars),
            }
        }
        start = end;
        if let Some(outcome) = answered(i, on_bar(tick)) {
            return outcome;
        }
    }
    BatchOutcome {
        consumed: ticks,
        ..BatchOutcome::default()
    }
}

/// What `on_bar`'s answer at tick `i` makes of a batch: `None` to go on
/// (no signals), else its outcome.
#[inline]
fn answered(i: usize, answer: Result<Vec<Signal>, String>) -> Option<BatchOutcome> {
    let (signals, error) = match answer {
        // No signals and no buffer: nothing to drop (in the sandbox, an
        // out-of-line drop of the empty list cost more than the rest of the
        // SDK's work at a bar).
        Ok(signals) if signals.capacity() == 0 => {
            std::mem::forget(signals);
            return None;
        }
        Ok(signals) if signals.is_empty() => return None,
        Ok(signals) => (signals, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Some(BatchOutcome {
        consumed: i + 1,
        signals,
        refused: Vec::new(),
        error,
    })
}

/// Which of `symbols` (at most 64) each of `positions` is of, as bits.
fn position_symbols(symbols: &[Symbol], positions: &[Position]) -> Vec<u64> {
    positions
        .iter()
        .map(|p| {
            let same = symbols
                .iter()
                .enumerate()
                .filter(|(_, s)| ***s == *p.symbol);
            same.fold(0u64, |bits, (i, _)| bits | 1 << i)
        })
        .collect()
}

/// What `Portfolio::mark` does with a tick's bars, the positions matched to
/// bars by symbol index (`of_symbols`: each position's bound symbols, as
/// bits) rather than by name.
fn mark_by_index<C: Closes + ?Sized>(
    closes: &C,
    bars: std::ops::Range<usize>,
    of_symbols: &[u64],
    tick: &mut Tick,
) {
    let portfolio = &mut tick.portfolio;
    for b in bars {
        let (symbol, candle) = closes.bar(b);
        let Some(bit) = 1u64.checked_shl(symbol) else {
            continue;
        };
        for (p, of) in portfolio.positions.iter_mut().zip(of_symbols) {
            if of & bit != 0 {
                p.mark_at(candle.low, candle.high, candle.close);
            }
        }
    }
    portfolio.equity = Portfolio::equity_of(portfolio.cash, &portfolio.positions);
}

/// [`drive_with`] with fresh scratch space.
pub fn drive(
    batch: &Batch<'_>,
    on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    let mut tick = Tick {
        time_ms: 0,
        bars: Vec::new(),
        portfolio: Portfolio::default(),
        limits: batch.limits,
    };
    drive_with(batch, &mut tick, on_bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Position, Side, Size};

    pub(super) fn candle(time_ms: i64, low: f64, high: f64, close: f64) -> Candle {
        Candle {
            time_ms,
            open: close,
            high,
            low,
            close,
            volume: 1.0,
        }
    }

    pub(super) fn columns(bars: &[(u32, Candle)]) -> BarColumns {
        let mut columns = BarColumns::default();
        for (symbol, candle) in bars {
            columns.push(*symbol, candle);
        }
        columns
    }

    #[test]
    fn every_position_is_marked_by_its_own_symbols_bars() {
        let symbols: Vec<Symbol> = vec!["A".into(), "B".into()];
        // B has no bar at the third close.
        let (tick_times, tick_bars) = ([1, 2, 3, 4], [2, 2, 1, 2]);
        let bars = columns(&[
            (0, candle(0, 9.0, 11.0, 10.0)),
            (1, candle(0, 4.0, 6.0, 5.0)),
            (0, candle(1, 8.0, 12.0, 9.0)),
            (1, candle(1, 3.0, 7.0, 6.5)),
            (0, candle(2, 7.5, 9.5, 8.0)),
            (0, candle(3, 8.5, 10.5, 10.0)),
            (1, candle(3, 2.0, 5.0, 4.0)),
        ]);
        let position = |symbol: &str, side: Side, price: f64| {
            let mut p = Position {
                symbol: symbol.into(),
                tag: String::new(),
                side,
                size: 2.0,
                price_entry: price,
                time_entry_ms: 0,
                price_mark: price,
                pnl_unrealized: 0.0,
                mae: 0.0,
            };
            p.pnl_unrealized = p.unrealized();
            p
        };
        let portfolio = Portfolio {
            cash: 100.0,
            equity: 0.0,
            positions: vec![
                position("B", Side::Short, 5.0),
                position("A", Side::Long, 10.0),
                position("C", Side::Long, 1.0),
            ],
        };
        let batch = Batch {
            symbols: &symbols,
            tick_times: &tick_times,
            tick_bars: &tick_bars,
            bars: bars.slice(0, bars.len()),
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        let mut seen = Vec::new();
        let outcome = drive(&batch, |tick| {
            seen.push(tick.portfolio.clone());
            Ok(vec![])
        });
        assert_eq!(outcome.consumed, 4);
        // Each later tick marked by name, the reference way.
        let mut expected = portfolio.clone();
        let mut want = vec![expected.clone()];
        let mut at = 2;
        for &n in &tick_bars[1..] {
            let tick: Vec<Bar> = (at..at + n as usize)
                .map(|b| {
                    let (symbol, c) = batch.bar(b);
                    Bar::from_candle(&symbols[symbol as usize], &c)
                })
                .collect();
            expected.mark(&tick);
            want.push(expected.clone());
            at += n as usize;
        }
        assert_eq!(seen, want);
        assert!(want[3].positions[0].mae < 0.0 && want[3].positions[2].mae == 0.0);
    }

    #[test]
    fn stops_after_the_first_tick_with_signals_and_marks_later_ticks() {
        let symbols: Vec<Symbol> = vec!["A".into(), "B".into()];
        let (tick_times, tick_bars) = ([1, 2, 3, 4], [2, 1, 2, 1]);
        let bars = columns(&[
            (0, candle(0, 9.0, 11.0, 10.0)),
            (1, candle(0, 1.0, 1.0, 1.0)),
            (1, candle(1, 1.0, 1.0, 1.0)),
            (0, candle(2, 7.0, 12.0, 8.0)),
            (1, candle(2, 1.0, 1.0, 1.0)),
            (0, candle(3, 8.0, 8.0, 8.0)),
        ]);
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
            tick_times: &tick_times,
            tick_bars: &tick_bars,
            bars: bars.slice(0, bars.len()),
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        let mut seen = Vec::new();
        let outcome = drive(&batch, |tick| {
            seen.push((
                tick.time_ms,
                tick.bars
                    .iter()
                    .map(|b| b.symbol.to_string())
                    .collect::<Vec<_>>(),
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
        let (tick_times, tick_bars) = ([1, 2], [1, 1]);
        let bars = columns(&[(0, candle(0, 1.0, 1.0, 1.0)), (0, candle(1, 1.0, 1.0, 1.0))]);
        let portfolio = Portfolio::default();
        let batch = Batch {
            symbols: &symbols,
            tick_times: &tick_times,
            tick_bars: &tick_bars,
            bars: bars.slice(0, bars.len()),
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
