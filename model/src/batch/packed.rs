//! Bar closes packed into flat lists with fixed lanes, as
//! `keel:strategy@0.3.0` and later carry them: each list one copy across the
//! component boundary.

use super::{Batch, Closes};
use crate::candles::Candle;
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
            self.lanes
                .extend(columns.time_ms.iter().zip(columns.symbol).map(|(&t, &s)| {
                    let index = symbol(s);
                    kept &= index.is_some();
                    [t, index.map_or(-1, i64::from)]
                }));
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

/// Hands `batch` to `on_bar` one tick at a time, until a tick gives signals
#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::drive_closes;
    use crate::batch::tests::{candle, columns};
    use crate::contract::{Portfolio, RiskLimits, Symbol, Tick};

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
    }
}
