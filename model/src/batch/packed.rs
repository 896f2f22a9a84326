//! Bar closes packed into flat lists with fixed lanes, as
//! `keel:strategy@0.3.0` and later carry them: each list one copy across the
//! component boundary.

use super::{
    Batch, BatchOutcome, Closes, answered, drive_closes, drive_closes_from, position_symbols,
};
use crate::candles::Candle;
use crate::contract::{Bar, Portfolio, Signal, Symbol, Tick};
/// Lanes per tick in [`Packed::ticks`]: close time, bar count.
pub const TICK_LANES: usize = 2;
/// Lanes per bar in [`Packed::keys`]: bar time, symbol index.
pub const KEY_LANES: usize = 2;
/// Lanes per bar in [`Packed::prices`]: open, high, low, close, volume.
pub const PRICE_LANES: usize = 5;

/// Bar closes as `keel:strategy@0.3.0` and later carry them: flat lists with
/// fixed lanes, each one copy across the component boundary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Packed<'a> {
    pub ticks: &'a [i64],
    pub keys: &'a [i64],
    pub prices: &'a [f64],
}

impl<'a> Packed<'a> {
    /// The closes in `lanes` (tick lanes, then key lanes, as
    /// `keel:strategy@0.4.0` carries them) and `prices`: the tick lanes are
    /// what the bars' key lanes leave. `None` when that is not at least one
    /// whole tick.
    pub fn from_lanes(lanes: &'a [i64], prices: &'a [f64]) -> Option<Packed<'a>> {
        let key_lanes = prices.len() / PRICE_LANES * KEY_LANES;
        let tick_lanes = lanes
            .len()
            .checked_sub(key_lanes)
            .filter(|&n| n >= TICK_LANES && n % TICK_LANES == 0)?;
        let (ticks, keys) = lanes.split_at(tick_lanes);
        Some(Packed {
            ticks,
            keys,
            prices,
        })
    }
}

impl Closes for Packed<'_> {
    #[inline]
    fn ticks(&self) -> usize {
        self.ticks.len() / TICK_LANES
    }
    #[inline]
    fn tick(&self, i: usize) -> (i64, u32) {
        let t = &self.ticks[i * TICK_LANES..][..TICK_LANES];
        (t[0], u32::try_from(t[1]).unwrap_or(0))
    }
    #[inline]
    fn bars(&self) -> usize {
        (self.keys.len() / KEY_LANES).min(self.prices.len() / PRICE_LANES)
    }
    #[inline]
    fn bar(&self, b: usize) -> (u32, Candle) {
        let k = &self.keys[b * KEY_LANES..][..KEY_LANES];
        let p = &self.prices[b * PRICE_LANES..][..PRICE_LANES];
        (
            u32::try_from(k[1]).unwrap_or(u32::MAX),
            Candle {
                time_ms: k[0],
                open: p[0],
                high: p[1],
                low: p[2],
                close: p[3],
                volume: p[4],
            },
        )
    }
}

/// The buffers of a [`Packed`] batch, reused from call to call. The tick
/// lanes and the key lanes share one list, ticks first, as
/// `keel:strategy@0.4.0` carries them; [`PackedBuffers::view`] splits it.
/// They are kept a tick's or a bar's lanes to an element, so that packing
/// writes whole elements from columns that zip exactly (`extend` then
/// reserves once and checks nothing per lane: pushing lane by lane was
/// about 6% of a backtest's instructions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedBuffers {
    /// How many ticks (bar closes) the batch holds.
    pub closes: usize,
    /// [`TICK_LANES`] per tick, then [`KEY_LANES`] per bar.
    lanes: Vec<[i64; KEY_LANES]>,
    prices: Vec<[f64; PRICE_LANES]>,
}

// A tick's lanes and a bar's key lanes share one list of pairs.
const _: () = assert!(TICK_LANES == KEY_LANES);

impl PackedBuffers {
    /// [`TICK_LANES`] per tick, then [`KEY_LANES`] per bar.
    pub fn lanes(&self) -> &[i64] {
        self.lanes.as_flattened()
    }

    /// [`PRICE_LANES`] per bar.
    pub fn prices(&self) -> &[f64] {
        self.prices.as_flattened()
    }

    /// Packs `batch`, renaming each bar's symbol index through `symbol`;
    /// bars it maps to `None` are left out (and their ticks count fewer).
    pub fn pack(&mut self, batch: &Batch<'_>, symbol: impl Fn(u32) -> Option<u32>) {
        let ticks = batch.ticks();
        self.closes = ticks;
        self.lanes.clear();
        self.prices.clear();
        let columns = batch.bars.slice(0, batch.bars.len());
        let counted: usize = batch.tick_bars[..ticks].iter().map(|&n| n as usize).sum();
        if counted == columns.time_ms.len() {
            // Column by column while every bar is kept (checked as the key
            // lanes are written, not in a pass of its own).
            let times = batch.tick_times[..ticks].iter();
            self.lanes.extend(
                times
                    .zip(&batch.tick_bars[..ticks])
                    .map(|(&t, &n)| [t, i64::from(n)]),
            );
            let mut kept = true;
            match one_symbol(columns.symbol) {
                // All of one symbol (one feed): renamed once.
                Some(s) => match symbol(s) {
                    Some(index) => {
                        let index = i64::from(index);
                        self.lanes
                            .extend(columns.time_ms.iter().map(|&t| [t, index]));
                    }
                    None => kept = false,
                },
                None => self
                    .lanes
                    .extend(columns.time_ms.iter().zip(columns.symbol).map(|(&t, &s)| {
                        let index = symbol(s);
                        kept &= index.is_some();
                        [t, index.map_or(-1, i64::from)]
                    })),
            }
            if kept {
                let prices = columns.open.iter().zip(columns.high).zip(columns.low);
                self.prices.extend(
                    prices
                        .zip(columns.close)
                        .zip(columns.volume)
                        .map(|((((&o, &h), &l), &c), &v)| [o, h, l, c, v]),
                );
                return;
            }
            self.lanes.clear();
        }
        // The tick lanes come first but are known only after their bars:
        // room for them now, filled in as each tick ends.
        self.lanes.resize(ticks, [0; TICK_LANES]);
        let lanes = std::cell::RefCell::new(std::mem::take(&mut self.lanes));
        let prices = &mut self.prices;
        let mut next_tick = 0;
        batch.for_each_kept(
            symbol,
            |index, c| {
                lanes.borrow_mut().push([c.time_ms, i64::from(index)]);
                prices.push([c.open, c.high, c.low, c.close, c.volume]);
            },
            |time_ms, kept| {
                lanes.borrow_mut()[next_tick] = [time_ms, i64::from(kept)];
                next_tick += 1;
            },
        );
        self.lanes = lanes.into_inner();
    }

    pub fn view(&self) -> Packed<'_> {
        let (ticks, keys) = self.lanes().split_at(self.closes * TICK_LANES);
        Packed {
            ticks,
            keys,
            prices: self.prices(),
        }
    }
}

/// The one symbol index of every bar, if they all have the same (folded
/// without a branch per bar).
fn one_symbol(symbols: &[u32]) -> Option<u32> {
    let first = *symbols.first()?;
    let others = symbols.iter().fold(0, |others, &s| others | (s ^ first));
    (others == 0).then_some(first)
}

/// [`drive_closes`] over packed closes, with a loop of its own for the
/// shape of a one-symbol run: one bar at each close, all of one symbol.
/// That loop writes each bar over the last in place and reads the lanes in
/// order, with no lookup and no bounds check per bar; in a sandboxed
/// strategy it was most of what the SDK cost per bar. From the first close
/// of another shape on, [`drive_closes`]'s loop goes on; either way
/// `on_bar` is handed the same ticks and the outcome is the same.
pub fn drive_packed(
    packed: &Packed<'_>,
    symbols: &[Symbol],
    tick: &mut Tick,
    mut on_bar: impl FnMut(&Tick) -> Result<Vec<Signal>, String>,
) -> BatchOutcome {
    let keys = packed.keys.chunks_exact(KEY_LANES);
    let symbol_lane = match keys.clone().next() {
        Some(key) if symbols.len() <= 64 => key[1],
        _ => return drive_closes(packed, symbols, tick, on_bar),
    };
    let symbol = u32::try_from(symbol_lane).unwrap_or(u32::MAX);
    // The one bar of every tick (its values written in the loop), or none
    // for a symbol not bound.
    tick.bars.truncate(1);
    match (symbols.get(symbol as usize), tick.bars.first_mut()) {
        (Some(name), Some(bar)) if Symbol::ptr_eq(&bar.symbol, name) => {}
        (Some(name), Some(bar)) => bar.symbol = name.clone(),
        (Some(name), None) => {
            let unset = Candle {
                time_ms: 0,
                open: 0.0,
                high: 0.0,
                low: 0.0,
                close: 0.0,
                volume: 0.0,
            };
            tick.bars.push(Bar::from_candle(name, &unset));
        }
        (None, _) => tick.bars.clear(),
    }
    // Which positions the symbol's bars mark (positions do not change
    // within a batch).
    let positions = &tick.portfolio.positions;
    let marked: Vec<bool> = match 1u64.checked_shl(symbol) {
        Some(bit) if !positions.is_empty() && packed.ticks() > 1 => {
            let of_symbols = position_symbols(symbols, positions);
            of_symbols.into_iter().map(|of| of & bit != 0).collect()
        }
        _ => vec![false; positions.len()],
    };
    let closes = packed.ticks.chunks_exact(TICK_LANES);
    let bars = keys.zip(packed.prices.chunks_exact(PRICE_LANES));
    let handled = closes.len().min(bars.len());
    for (i, (t, (k, p))) in closes.zip(bars).enumerate() {
        if t[1] != 1 || k[1] != symbol_lane {
            return drive_closes_from(packed, (i, i), symbols, tick, on_bar);
        }
        tick.time_ms = t[0];
        if let Some(bar) = tick.bars.first_mut() {
            bar.time_ms = k[0];
            bar.open = p[0];
            bar.high = p[1];
            bar.low = p[2];
            bar.close = p[3];
            bar.volume = p[4];
        }
        let portfolio = &mut tick.portfolio;
        if i > 0 && !portfolio.positions.is_empty() {
            for (position, &marked) in portfolio.positions.iter_mut().zip(&marked) {
                if marked {
                    position.mark_at(p[2], p[1], p[3]);
                }
            }
            portfolio.equity = Portfolio::equity_of(portfolio.cash, &portfolio.positions);
        }
        if let Some(outcome) = answered(i, on_bar(tick)) {
            return outcome;
        }
    }
    if handled < packed.ticks() {
        // Ticks beyond the bars: drive_closes's loop says what they are.
        return drive_closes_from(packed, (handled, handled), symbols, tick, on_bar);
    }
    BatchOutcome {
        consumed: packed.ticks(),
        ..BatchOutcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::drive_closes;
    use crate::batch::tests::{candle, columns};
    use crate::contract::{Portfolio, Position, RiskLimits, Side, Symbol, Tick};

    #[test]
    fn a_packed_batch_drives_exactly_as_its_columns_do() {
        let symbols: Vec<Symbol> = vec!["A".into(), "B".into(), "C".into()];
        let (tick_times, tick_bars) = ([60, 120, 180], [2, 1, 2]);
        let bars = columns(&[
            (0, candle(0, 9.0, 11.0, 10.0)),
            (2, candle(0, 1.0, 3.0, 2.0)),
            (1, candle(60, 4.0, 6.0, 5.0)),
            (0, candle(120, 7.0, 12.0, 8.0)),
            (2, candle(120, 2.0, 2.5, 2.25)),
        ]);
        let portfolio = Portfolio::default();
        let batch = Batch {
            symbols: &symbols,
            tick_times: &tick_times,
            tick_bars: &tick_bars,
            bars: bars.slice(0, bars.len()),
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        let seen = |closes: &dyn Closes, symbols: &[Symbol]| {
            let mut seen = Vec::new();
            let mut tick = Tick {
                time_ms: 0,
                bars: Vec::new(),
                portfolio: Portfolio::default(),
                limits: RiskLimits::default(),
            };
            drive_closes(closes, symbols, &mut tick, |t| {
                seen.push((t.time_ms, t.bars.clone()));
                Ok(vec![])
            });
            seen
        };
        let mut packed = PackedBuffers::default();
        packed.pack(&batch, Some);
        assert_eq!(packed.closes, 3);
        assert_eq!(packed.view().ticks.len(), 3 * TICK_LANES);
        assert_eq!(packed.view().keys.len(), 5 * KEY_LANES);
        assert_eq!(packed.prices().len(), 5 * PRICE_LANES);
        let expected = seen(&batch, &symbols);
        assert_eq!(expected.len(), 3);
        assert_eq!(seen(&packed.view(), &symbols), expected);
        // What a 0.4.0 component is handed splits back into the same closes.
        let split = Packed::from_lanes(packed.lanes(), packed.prices()).expect("whole ticks");
        assert_eq!(
            (split.ticks, split.keys),
            (packed.view().ticks, packed.view().keys)
        );
        assert!(Packed::from_lanes(&packed.lanes()[..1], packed.prices()).is_none());
        assert!(Packed::from_lanes(&packed.lanes()[1..], packed.prices()).is_none());

        // Renamed and filtered as an instance bound to B and C sees them.
        packed.pack(&batch, |i| i.checked_sub(1));
        let bound: Vec<Symbol> = vec!["B".into(), "C".into()];
        let filtered = seen(&packed.view(), &bound);
        let names: Vec<Vec<String>> = filtered
            .iter()
            .map(|(_, bars)| bars.iter().map(|b| b.symbol.to_string()).collect())
            .collect();
        assert_eq!(names, [vec!["C"], vec!["B"], vec!["C"]]);
        assert_eq!(filtered[2].1[0].close, 2.25);

        // Bars all of one symbol are renamed once; left out whole when it is
        // not bound.
        let c_only = columns(&[
            (2, candle(0, 1.0, 3.0, 2.0)),
            (2, candle(60, 2.0, 4.0, 3.0)),
        ]);
        let one = Batch {
            tick_times: &tick_times[..2],
            tick_bars: &[1, 1],
            bars: c_only.slice(0, c_only.len()),
            ..batch
        };
        packed.pack(&one, |i| i.checked_sub(1));
        assert_eq!(packed.lanes(), [60, 1, 120, 1, 0, 1, 60, 1]);
        assert_eq!(seen(&packed.view(), &bound)[1].1[0].close, 3.0);
        packed.pack(&one, |i| (i != 2).then_some(i));
        assert_eq!(packed.lanes(), [60, 0, 120, 0]);
        assert!(packed.prices().is_empty());
    }

    /// A small seeded generator, for batches of many shapes.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// What a drive hands `on_bar` at each tick, its outcome and the tick
    /// it leaves.
    type Drove = (Vec<Tick>, BatchOutcome, Tick);

    #[test]
    fn the_one_symbol_loop_drives_as_the_general_one() {
        let symbols: Vec<Symbol> = vec!["A".into(), "B".into(), "C".into()];
        let mut rng = Lcg(21);
        let mut shortcut_taken = 0;
        for case in 0..4000 {
            // Mostly one bar of one symbol at each close; now and then no
            // bar, two, one of another symbol, of a symbol not bound, or of
            // an index past 64.
            let main = match rng.below(12) {
                0 => 5,
                1 => 70,
                n => (n % 3) as u32,
            };
            let odd = rng.below(3) == 0;
            let ticks = 1 + rng.below(10) as usize;
            let (mut tick_times, mut tick_bars, mut bars) = (vec![], vec![], vec![]);
            for t in 0..ticks {
                let count = match rng.below(if odd { 8 } else { 1000 }) {
                    0 => 0,
                    1 => 2,
                    _ => 1,
                };
                tick_times.push(60 * (t as i64 + 1));
                tick_bars.push(count);
                for b in 0..count {
                    let other = b > 0 || (odd && rng.below(8) == 0);
                    let symbol = if other { rng.below(3) as u32 } else { main };
                    let close = 100.0 + rng.below(100) as f64 / 10.0;
                    let (low, high) = (
                        close - rng.below(30) as f64 / 10.0,
                        close + rng.below(30) as f64 / 10.0,
                    );
                    bars.push((symbol, candle(60 * t as i64, low, high, close)));
                }
            }
            let positions = (0..rng.below(4))
                .map(|_| {
                    let side = [Side::Long, Side::Short][rng.below(2) as usize];
                    let symbol = ["A", "B", "C", "Z"][rng.below(4) as usize];
                    let price = 95.0 + rng.below(100) as f64 / 10.0;
                    let mut p = Position {
                        symbol: symbol.into(),
                        tag: String::new(),
                        side,
                        size: 1.0 + rng.below(3) as f64,
                        price_entry: price,
                        time_entry_ms: 0,
                        price_mark: price,
                        pnl_unrealized: 0.0,
                        mae: 0.0,
                    };
                    p.pnl_unrealized = p.unrealized();
                    p
                })
                .collect();
            let portfolio = Portfolio {
                cash: 100.0,
                equity: 1.5,
                positions,
            };
            // What the last call left in the tick: nothing, a bar of the
            // same name under another pointer, the bound symbol's own, two.
            let a = candle(0, 1.0, 1.0, 1.0);
            let leftover = match rng.below(4) {
                0 => vec![],
                1 => vec![Bar::from_candle(&Symbol::from("A"), &a)],
                2 => vec![Bar::from_candle(&symbols[0], &a)],
                _ => vec![
                    Bar::from_candle(&symbols[1], &a),
                    Bar::from_candle(&symbols[2], &a),
                ],
            };
            let start = Tick {
                time_ms: 0,
                bars: leftover,
                portfolio: portfolio.clone(),
                limits: RiskLimits::default(),
            };
            let columns = columns(&bars);
            let batch = Batch {
                symbols: &symbols,
                tick_times: &tick_times,
                tick_bars: &tick_bars,
                bars: columns.slice(0, columns.len()),
                portfolio: &portfolio,
                limits: RiskLimits::default(),
            };
            let mut packed = PackedBuffers::default();
            packed.pack(&batch, Some);
            // Signals, an error or an empty list with room, at a close or
            // none.
            let (signal_at, error_at, roomy_at) = (
                rng.below(ticks as u64 + 3) as i64 * 60 + 60,
                rng.below(ticks as u64 * 3 + 1) as i64 * 60 + 60,
                rng.below(ticks as u64 + 1) as i64 * 60 + 60,
            );
            let respond = |t: &Tick| match t.time_ms {
                at if at == error_at => Err(format!("broken at {at}")),
                at if at == signal_at => Ok(vec![Signal::close("A")]),
                at if at == roomy_at => Ok(Vec::with_capacity(4)),
                _ => Ok(vec![]),
            };
            let drive = |shortcut: bool| -> Drove {
                let (mut seen, mut tick) = (Vec::new(), start.clone());
                let on_bar = |t: &Tick| {
                    seen.push(t.clone());
                    respond(t)
                };
                let outcome = if shortcut {
                    drive_packed(&packed.view(), &symbols, &mut tick, on_bar)
                } else {
                    drive_closes(&batch, &symbols, &mut tick, on_bar)
                };
                (seen, outcome, tick)
            };
            let (general, shortcut) = (drive(false), drive(true));
            assert_eq!(shortcut.0, general.0, "case {case}: the ticks handed over");
            assert_eq!(shortcut.1, general.1, "case {case}: the outcome");
            assert_eq!(shortcut.2, general.2, "case {case}: the tick left");
            shortcut_taken += usize::from(!odd && main < 3);
        }
        assert!(shortcut_taken > 1500, "{shortcut_taken}");
    }
}
