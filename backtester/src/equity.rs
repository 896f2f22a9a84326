//! The equity curve of a run: its points, thinned evenly as it grows, and
//! the figures accumulated step by step, so memory does not grow with the
//! data.

/// Equity after the bars closing at `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EquityPoint {
    pub time_ms: i64,
    pub equity: f64,
}

/// Largest number of points kept of an equity curve.
pub const CURVE_POINTS: usize = 10_000;

/// Figures of the equity curve accumulated step by step: sums of the step
/// returns and of their squares (no division carried from step to step),
/// the downside's squares, and the drawdown (each peak's lowest point is
/// weighed once, when the next peak or the end comes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EquityStats {
    pub start: f64,
    pub points: u64,
    pub first_ms: Option<i64>,
    pub last_ms: i64,
    pub(crate) sum: f64,
    pub(crate) sum_sq: f64,
    pub(crate) downside_sq: f64,
    pub(crate) previous: f64,
    pub(crate) peak: f64,
    pub(crate) peak_ms: i64,
    /// Since the peak: the lowest equity and the last time below the peak.
    low: f64,
    under_ms: Option<i64>,
    pub max_drawdown: f64,
    pub max_drawdown_ms: i64,
}

impl EquityStats {
    fn absorb(&mut self, p: EquityPoint) {
        let first = *self.first_ms.get_or_insert(p.time_ms);
        if self.points == 0 {
            self.peak_ms = first;
        }
        self.last_ms = p.time_ms;
        // An unchanged finite equity (every step while flat) is a return
        // of 0 exactly, as the division would give: it is skipped (a
        // division is the slowest step here).
        let unchanged = p.equity == self.previous && p.equity.is_finite();
        let r = if self.previous > 0.0 && !unchanged {
            p.equity / self.previous - 1.0
        } else {
            0.0
        };
        self.previous = p.equity;
        self.points += 1;
        self.sum += r;
        self.sum_sq += r * r;
        if r < 0.0 {
            self.downside_sq += r * r;
        }
        if p.equity >= self.peak {
            self.weigh_drawdown();
            self.peak = p.equity;
            self.peak_ms = p.time_ms;
        } else {
            if self.under_ms.is_none() || p.equity < self.low {
                self.low = p.equity;
            }
            self.under_ms = Some(p.time_ms);
        }
    }

    /// [`EquityStats::absorb`] of `n` points at the equity of the last one
    /// absorbed (each a return of 0), the first at `first_ms` and the last
    /// at `last_ms`. After the first, such a point moves only the times:
    /// the count, the last time, and the peak's time (at or over the peak)
    /// or the time last under it.
    fn absorb_unchanged(&mut self, n: u64, first_ms: i64, last_ms: i64) {
        if n == 0 {
            return;
        }
        let equity = self.previous;
        self.absorb(EquityPoint {
            time_ms: first_ms,
            equity,
        });
        if n > 1 {
            self.points += n - 1;
            self.last_ms = last_ms;
            if equity >= self.peak {
                self.peak_ms = last_ms;
            } else {
                self.under_ms = Some(last_ms);
            }
        }
    }

    /// The drawdown from the peak to its lowest point, once the peak is
    /// passed or the curve ends: the same as weighing every point below
    /// it (the deepest point is the largest fraction, the last the longest).
    fn weigh_drawdown(&mut self) {
        if let Some(under_ms) = self.under_ms.take() {
            self.max_drawdown = self.max_drawdown.max(1.0 - self.low / self.peak);
            self.max_drawdown_ms = self.max_drawdown_ms.max(under_ms - self.peak_ms);
        }
    }

    /// Mean and sample variance of the step returns.
    pub(crate) fn returns(&self) -> (f64, f64) {
        let n = self.points.max(1) as f64;
        let mean = self.sum / n;
        let variance = (self.sum_sq - self.sum * mean).max(0.0) / (n - 1.0).max(1.0);
        (mean, variance)
    }
}

/// Takes the equity after every step; keeps its statistics and an evenly
/// thinned curve of at most [`CURVE_POINTS`] points (plus the last).
#[derive(Debug, Clone)]
pub struct EquityTracker {
    stats: EquityStats,
    pending: Option<EquityPoint>,
    curve: Vec<EquityPoint>,
    /// Every `stride`-th point is kept; always a power of two.
    stride: u64,
    seen: u64,
}

impl EquityTracker {
    pub fn new(start: f64) -> EquityTracker {
        EquityTracker {
            stats: EquityStats {
                start,
                previous: start,
                peak: start,
                ..EquityStats::default()
            },
            pending: None,
            curve: Vec::new(),
            stride: 1,
            seen: 0,
        }
    }

    /// The equity after a step. (The last one is held back until `finish`,
    /// which may correct it for end-of-data exits.)
    pub fn push(&mut self, point: EquityPoint) {
        if let Some(previous) = self.pending.replace(point) {
            self.absorb(previous);
        }
    }

    /// [`EquityTracker::push`] of a point at `equity` for each time in
    /// `times`: what a run shows at closes where it is flat (the equity is
    /// the cash at each). The same figures and curve as one push each,
    /// without a step of arithmetic per point once the equity is unchanged.
    pub fn push_flat(&mut self, times: &[i64], equity: f64) {
        // The first two as any: the first may move the figures, the second
        // makes the held-back point one at `equity`.
        let (first, rest) = times.split_at(times.len().min(2));
        for &time_ms in first {
            self.push(EquityPoint { time_ms, equity });
        }
        let (Some((&last_ms, middle)), Some(held)) = (rest.split_last(), self.pending) else {
            return;
        };
        if held.equity != equity || self.stats.previous != equity || !equity.is_finite() {
            for &time_ms in rest {
                self.push(EquityPoint { time_ms, equity });
            }
            return;
        }
        // The held-back point and the middle ones are absorbed unchanged;
        // the last is held back.
        let n = 1 + middle.len() as u64;
        let time_of = |k: u64| match k {
            0 => held.time_ms,
            k => middle[k as usize - 1],
        };
        self.stats.absorb_unchanged(n, held.time_ms, time_of(n - 1));
        // The curve keeps every `stride`-th point, as `absorb` would.
        let (from, end) = (self.seen, self.seen + n);
        let mut i = from.next_multiple_of(self.stride);
        while i < end {
            self.keep(EquityPoint {
                time_ms: time_of(i - from),
                equity,
            });
            i = (i + 1).next_multiple_of(self.stride);
        }
        self.seen = end;
        self.pending = Some(EquityPoint {
            time_ms: last_ms,
            equity,
        });
    }

    /// Keeps `p` on the curve, thinning it to every other point (and the
    /// stride to twice) once it is over [`CURVE_POINTS`].
    fn keep(&mut self, p: EquityPoint) {
        self.curve.push(p);
        if self.curve.len() > CURVE_POINTS {
            self.curve = self.curve.iter().step_by(2).copied().collect();
            self.stride *= 2;
        }
    }

    fn absorb(&mut self, p: EquityPoint) {
        self.stats.absorb(p);
        // The stride is a power of two: a mask, not a division, per step.
        if self.seen & (self.stride - 1) == 0 {
            self.keep(p);
        }
        self.seen += 1;
    }

    /// Ends the run with the final equity (after end-of-data exits).
    pub fn finish(mut self, equity_final: f64) -> (EquityStats, Vec<EquityPoint>) {
        if let Some(mut last) = self.pending.take() {
            last.equity = equity_final;
            self.absorb(last);
            if self.curve.last() != Some(&last) {
                self.curve.push(last);
            }
        }
        self.stats.weigh_drawdown();
        (self.stats, self.curve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded stream of numbers in [0, 1).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn flat_stretches_pushed_at_once_give_the_figures_and_curve_of_one_push_each() {
        for seed in 1..=40u64 {
            let mut next = uniform(seed);
            let start = if seed % 7 == 0 { 0.0 } else { 1000.0 };
            let (mut each, mut at_once) = (EquityTracker::new(start), EquityTracker::new(start));
            let (mut time_ms, mut equity) = (0i64, start);
            for _ in 0..60 {
                // A stretch of moves, then a flat one at a level of its own
                // (or the last: a position closed at the mark), of any
                // length: some long enough to thin the curve.
                for _ in 0..(next() * 30.0) as usize {
                    time_ms += 60_000;
                    equity *= 1.0 + (next() - 0.5) * 0.02;
                    let point = EquityPoint { time_ms, equity };
                    each.push(point);
                    at_once.push(point);
                }
                if next() < 0.5 {
                    equity *= 1.0 + (next() - 0.5) * 0.02;
                }
                if seed % 5 == 0 && next() < 0.1 {
                    equity = -equity.abs();
                }
                let long = next() < 0.05;
                let len = if long {
                    20_000
                } else {
                    (next() * 6.0) as usize
                };
                let times: Vec<i64> = (1..=len as i64).map(|k| time_ms + k * 60_000).collect();
                time_ms += len as i64 * 60_000;
                for &t in &times {
                    each.push(EquityPoint { time_ms: t, equity });
                }
                at_once.push_flat(&times, equity);
            }
            let final_equity = equity * 1.01;
            assert_eq!(
                at_once.finish(final_equity),
                each.finish(final_equity),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn an_infinite_equity_is_not_a_return_of_zero() {
        // inf / inf is NaN: the figures say so, pushed one by one or at once.
        let (mut each, mut at_once) = (EquityTracker::new(1000.0), EquityTracker::new(1000.0));
        let times = [60_000, 120_000, 180_000, 240_000];
        for &time_ms in &times {
            each.push(EquityPoint {
                time_ms,
                equity: f64::INFINITY,
            });
        }
        at_once.push_flat(&times, f64::INFINITY);
        let (each, at_once) = (each.finish(f64::INFINITY), at_once.finish(f64::INFINITY));
        assert!(each.0.returns().0.is_nan());
        assert_eq!(format!("{at_once:?}"), format!("{each:?}"));
    }
}
