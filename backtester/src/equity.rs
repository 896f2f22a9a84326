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
        // An unchanged equity (every step while flat) is a return of 0
        // exactly, as the division would give: it is skipped (a division
        // is the slowest step here).
        let r = if self.previous > 0.0 && p.equity != self.previous {
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

    fn absorb(&mut self, p: EquityPoint) {
        self.stats.absorb(p);
        // The stride is a power of two: a mask, not a division, per step.
        if self.seen & (self.stride - 1) == 0 {
            self.curve.push(p);
            if self.curve.len() > CURVE_POINTS {
                self.curve = self.curve.iter().step_by(2).copied().collect();
                self.stride *= 2;
            }
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
