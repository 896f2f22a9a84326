//! The last bar closes an instance handled, kept to warm a rebuilt one up.

use keel_model::batch::{BarColumns, Batch};

/// The last ticks an instance handled, kept to warm a rebuilt instance up:
/// each tick's close time and bar count, and the bars column by column.
/// Both are appended in bulk (a call's bars are copied column by column, not
/// bar by bar) and the live ones start at `ticks_from` and `bars_from`; the
/// dropped front is removed in bulk too, now and then.
#[derive(Debug, Default)]
pub(super) struct Recent {
    pub(super) ticks: Vec<(i64, u32)>,
    pub(super) ticks_from: usize,
    pub(super) bars: BarColumns,
    pub(super) bars_from: usize,
}

impl Recent {
    /// Appends the first `handled` ticks of `batch`, keeping the last `keep`.
    pub(super) fn remember(&mut self, batch: &Batch<'_>, handled: usize, keep: usize) {
        // Ticks before the last `keep` handled would only be dropped again.
        let skip = handled.saturating_sub(keep);
        let available = batch.bars.len();
        let skipped: usize = batch.tick_bars[..skip].iter().map(|&n| n as usize).sum();
        let start = skipped.min(available);
        let mut end = start;
        // Slices zipped: one reservation, no check of room per tick.
        let to = handled
            .min(batch.tick_times.len())
            .min(batch.tick_bars.len());
        let from = skip.min(to);
        let ticks = batch.tick_times[from..to]
            .iter()
            .zip(&batch.tick_bars[from..to]);
        self.ticks.extend(ticks.map(|(&time_ms, &count)| {
            let next = (end + count as usize).min(available);
            let kept = (next - end) as u32;
            end = next;
            (time_ms, kept)
        }));
        self.bars.extend_from(batch.bars.slice(start, end));
        let live = self.ticks.len() - self.ticks_from;
        if live > keep {
            let dropped = &self.ticks[self.ticks_from..][..live - keep];
            self.bars_from += dropped.iter().map(|&(_, n)| n as usize).sum::<usize>();
            self.ticks_from += live - keep;
        }
        if self.ticks_from > 4096 && self.ticks_from * 2 > self.ticks.len() {
            self.ticks.drain(..self.ticks_from);
            self.bars.drop_front(self.bars_from);
            (self.ticks_from, self.bars_from) = (0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::candles::Candle;
    use keel_model::{Portfolio, RiskLimits, Symbol};

    /// Offers `recent` a batch of `offered` one-bar ticks whose closes count
    /// from `first`, of which the instance handled `handled`.
    fn remember(recent: &mut Recent, first: usize, offered: usize, handled: usize) {
        let mut bars = BarColumns::default();
        for i in first..first + offered {
            let p = i as f64;
            let candle = Candle {
                time_ms: i as i64,
                open: p,
                high: p,
                low: p,
                close: p,
                volume: 1.0,
            };
            bars.push(0, &candle);
        }
        let times: Vec<i64> = (first..first + offered).map(|i| i as i64 + 1).collect();
        let batch = Batch {
            symbols: &[Symbol::from("A")],
            tick_times: &times,
            tick_bars: &vec![1; offered],
            bars: bars.slice(0, bars.len()),
            portfolio: &Portfolio::default(),
            limits: RiskLimits::default(),
        };
        recent.remember(&batch, handled, 30);
    }

    fn live_closes(recent: &Recent) -> &[f64] {
        &recent.bars.close[recent.bars_from..]
    }

    #[test]
    fn recent_keeps_exactly_the_last_warm_up_ticks_across_calls() {
        let mut recent = Recent::default();
        let mut next = 0;
        // Calls that handle 7 of 9 offered ticks, then all of them, many times
        // over (so the front is dropped in bulk at least once).
        for call in 0..3000 {
            let handled = if call % 2 == 0 { 7 } else { 9 };
            remember(&mut recent, next, 9, handled);
            next += handled;
        }
        let live = &recent.ticks[recent.ticks_from..];
        let times: Vec<i64> = live.iter().map(|&(t, _)| t).collect();
        let expected: Vec<i64> = (next - 30..next).map(|i| i as i64 + 1).collect();
        assert_eq!(times, expected);
        let expected: Vec<f64> = (next - 30..next).map(|i| i as f64).collect();
        assert_eq!(live_closes(&recent), expected);
        assert!(recent.ticks.len() < 2 * 4096 + 30, "the front is dropped");

        // One call handling more than the warm-up keeps only its last ticks.
        remember(&mut recent, next, 50, 45);
        let expected: Vec<f64> = (next + 15..next + 45).map(|i| i as f64).collect();
        assert_eq!(live_closes(&recent), expected);
    }
}
