//! Incremental technical indicators: feed one bar, get the new value. Each
//! update is O(1) (Stochastic's rolling high/low is amortized O(1)), and each
//! follows TA-Lib's definition and warm-up, so values match TA-Lib to 1e-9
//! (see `tests/talib.rs`). `None` means "still warming up".
//!
//! `update` and `value` are `#[inline]`: they run at every bar inside the
//! strategy's own code, and without the hint a wasm build called even the
//! SMA's (~3% of sma-cross's wasm backtest; the native build inlined it
//! anyway).

use std::collections::VecDeque;

/// A fixed-length window with a running sum (and, when `SQUARES`, a
/// running sum of squares: only the Bollinger bands need it, and the SMA of
/// every bar should not pay for it).
#[derive(Debug, Clone)]
struct Window<const SQUARES: bool> {
    values: Vec<f64>,
    next: usize,
    full: bool,
    sum: f64,
    sum_sq: f64,
}

impl<const SQUARES: bool> Window<SQUARES> {
    fn new(period: usize) -> Window<SQUARES> {
        Window {
            values: vec![0.0; period.max(1)],
            next: 0,
            full: false,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    #[inline]
    fn push(&mut self, x: f64) {
        let old = std::mem::replace(&mut self.values[self.next], x);
        if self.full {
            self.sum -= old;
            if SQUARES {
                self.sum_sq -= old * old;
            }
        }
        self.sum += x;
        if SQUARES {
            self.sum_sq += x * x;
        }
        self.next += 1;
        if self.next == self.values.len() {
            self.next = 0;
            self.full = true;
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.values.len()
    }
}

/// Simple moving average of the last `period` values.
#[derive(Debug, Clone)]
pub struct Sma {
    window: Window<false>,
    value: Option<f64>,
}

impl Sma {
    pub fn new(period: usize) -> Sma {
        Sma {
            window: Window::new(period),
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.window.push(x);
        if self.window.full {
            self.value = Some(self.window.sum / self.window.len() as f64);
        }
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

/// Exponential moving average, `k = 2 / (period + 1)`, seeded with the SMA of
/// the first `period` values (TA-Lib's default).
#[derive(Debug, Clone)]
pub struct Ema {
    period: usize,
    k: f64,
    seen: usize,
    seed_sum: f64,
    value: Option<f64>,
}

impl Ema {
    pub fn new(period: usize) -> Ema {
        let period = period.max(1);
        Ema {
            period,
            k: 2.0 / (period as f64 + 1.0),
            seen: 0,
            seed_sum: 0.0,
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.value = match self.value {
            Some(prev) => Some((x - prev) * self.k + prev),
            None => {
                self.seen += 1;
                self.seed_sum += x;
                (self.seen == self.period).then(|| self.seed_sum / self.period as f64)
            }
        };
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

/// Wilder's smoothing: the first value is the mean of `period` inputs, then
/// `avg = (avg * (period - 1) + x) / period`.
#[derive(Debug, Clone)]
struct Wilder {
    period: usize,
    seen: usize,
    sum: f64,
    value: Option<f64>,
}

impl Wilder {
    fn new(period: usize) -> Wilder {
        Wilder {
            period: period.max(1),
            seen: 0,
            sum: 0.0,
            value: None,
        }
    }

    #[inline]
    fn update(&mut self, x: f64) -> Option<f64> {
        let n = self.period as f64;
        self.value = match self.value {
            Some(prev) => Some((prev * (n - 1.0) + x) / n),
            None => {
                self.seen += 1;
                self.sum += x;
                (self.seen == self.period).then(|| self.sum / n)
            }
        };
        self.value
    }
}

/// Relative Strength Index with Wilder's smoothing, 0..=100.
#[derive(Debug, Clone)]
pub struct Rsi {
    prev: Option<f64>,
    gain: Wilder,
    loss: Wilder,
    value: Option<f64>,
}

impl Rsi {
    pub fn new(period: usize) -> Rsi {
        Rsi {
            prev: None,
            gain: Wilder::new(period),
            loss: Wilder::new(period),
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        let prev = self.prev.replace(close)?;
        let diff = close - prev;
        let gain = self.gain.update(diff.max(0.0));
        let loss = self.loss.update((-diff).max(0.0));
        if let (Some(g), Some(l)) = (gain, loss) {
            let total = g + l;
            self.value = Some(if total == 0.0 {
                0.0
            } else {
                100.0 * (g / total)
            });
        }
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

/// Average True Range with Wilder's smoothing. The first bar has no true
/// range (no previous close), so the first value comes at bar `period + 1`.
#[derive(Debug, Clone)]
pub struct Atr {
    prev_close: Option<f64>,
    smooth: Wilder,
}

impl Atr {
    pub fn new(period: usize) -> Atr {
        Atr {
            prev_close: None,
            smooth: Wilder::new(period),
        }
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let prev = self.prev_close.replace(close)?;
        let range = (high - low)
            .max((high - prev).abs())
            .max((low - prev).abs());
        self.smooth.update(range)
    }

    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.smooth.value
    }
}

/// Bollinger Bands: SMA middle, ± `k` population standard deviations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

#[derive(Debug, Clone)]
pub struct Bollinger {
    window: Window<true>,
    k: f64,
    value: Option<Bands>,
}

impl Bollinger {
    pub fn new(period: usize, k: f64) -> Bollinger {
        Bollinger {
            window: Window::new(period),
            k,
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<Bands> {
        self.window.push(x);
        if self.window.full {
            let n = self.window.len() as f64;
            let mean = self.window.sum / n;
            let variance = self.window.sum_sq / n - mean * mean;
            let sd = if variance > 0.0 { variance.sqrt() } else { 0.0 };
            self.value = Some(Bands {
                upper: mean + self.k * sd,
                middle: mean,
                lower: mean - self.k * sd,
            });
        }
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<Bands> {
        self.value
    }
}

/// MACD line, its signal line and their difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    pub macd: f64,
    pub signal: f64,
    pub histogram: f64,
}

/// MACD (fast EMA − slow EMA, then an EMA of that). As in TA-Lib, the fast EMA
/// is seeded on the same bar as the slow one, so both start together.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
    fast_delay: usize,
    seen: usize,
    value: Option<MacdValue>,
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Macd {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        Macd {
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            signal: Ema::new(signal),
            fast_delay: slow - fast,
            seen: 0,
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, close: f64) -> Option<MacdValue> {
        self.seen += 1;
        let slow = self.slow.update(close);
        let fast = if self.seen > self.fast_delay {
            self.fast.update(close)
        } else {
            None
        };
        if let (Some(f), Some(s)) = (fast, slow) {
            let macd = f - s;
            if let Some(signal) = self.signal.update(macd) {
                self.value = Some(MacdValue {
                    macd,
                    signal,
                    histogram: macd - signal,
                });
            }
        }
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<MacdValue> {
        self.value
    }
}

/// Rolling maximum (or minimum) over a window, amortized O(1) per update.
#[derive(Debug, Clone)]
struct RollingExtreme {
    period: usize,
    seen: usize,
    max: bool,
    queue: VecDeque<(usize, f64)>,
}

impl RollingExtreme {
    fn new(period: usize, max: bool) -> RollingExtreme {
        RollingExtreme {
            period: period.max(1),
            seen: 0,
            max,
            queue: VecDeque::with_capacity(period.max(1)),
        }
    }

    #[inline]
    fn update(&mut self, x: f64) -> f64 {
        let i = self.seen;
        self.seen += 1;
        while let Some(&(_, back)) = self.queue.back() {
            let dominated = if self.max { back <= x } else { back >= x };
            if !dominated {
                break;
            }
            self.queue.pop_back();
        }
        self.queue.push_back((i, x));
        while let Some(&(j, _)) = self.queue.front() {
            if j + self.period > i {
                break;
            }
            self.queue.pop_front();
        }
        self.queue.front().map_or(x, |&(_, v)| v)
    }

    fn full(&self) -> bool {
        self.seen >= self.period
    }
}

/// Highest value of the last `period` inputs (a Donchian channel's top).
#[derive(Debug, Clone)]
pub struct Highest(RollingExtreme);

impl Highest {
    pub fn new(period: usize) -> Highest {
        Highest(RollingExtreme::new(period, true))
    }

    /// The highest of the last `period` values, once `period` have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let v = self.0.update(x);
        self.0.full().then_some(v)
    }
}

/// Lowest value of the last `period` inputs (a Donchian channel's bottom).
#[derive(Debug, Clone)]
pub struct Lowest(RollingExtreme);

impl Lowest {
    pub fn new(period: usize) -> Lowest {
        Lowest(RollingExtreme::new(period, false))
    }

    /// The lowest of the last `period` values, once `period` have been seen.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let v = self.0.update(x);
        self.0.full().then_some(v)
    }
}

/// Slow stochastic oscillator: %K smoothed by an SMA, %D an SMA of that, 0..=100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochValue {
    pub k: f64,
    pub d: f64,
}

#[derive(Debug, Clone)]
pub struct Stochastic {
    highest: RollingExtreme,
    lowest: RollingExtreme,
    slow_k: Sma,
    slow_d: Sma,
    value: Option<StochValue>,
}

impl Stochastic {
    /// `fast_k` bars of high/low range, `slow_k` and `slow_d` SMA lengths.
    pub fn new(fast_k: usize, slow_k: usize, slow_d: usize) -> Stochastic {
        Stochastic {
            highest: RollingExtreme::new(fast_k, true),
            lowest: RollingExtreme::new(fast_k, false),
            slow_k: Sma::new(slow_k),
            slow_d: Sma::new(slow_d),
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<StochValue> {
        let hh = self.highest.update(high);
        let ll = self.lowest.update(low);
        if !self.highest.full() {
            return None;
        }
        let range = (hh - ll) / 100.0;
        let fast_k = if range != 0.0 {
            (close - ll) / range
        } else {
            0.0
        };
        if let Some(k) = self.slow_k.update(fast_k)
            && let Some(d) = self.slow_d.update(k)
        {
            self.value = Some(StochValue { k, d });
        }
        self.value
    }

    #[inline]
    pub fn value(&self) -> Option<StochValue> {
        self.value
    }
}

/// On-Balance Volume: starts at the first bar's volume, then adds (subtracts)
/// each bar's volume when the close rises (falls).
#[derive(Debug, Clone, Default)]
pub struct Obv {
    prev_close: Option<f64>,
    value: f64,
}

impl Obv {
    pub fn new() -> Obv {
        Obv::default()
    }

    #[inline]
    pub fn update(&mut self, close: f64, volume: f64) -> f64 {
        match self.prev_close {
            None => self.value = volume,
            Some(prev) if close > prev => self.value += volume,
            Some(prev) if close < prev => self.value -= volume,
            Some(_) => {}
        }
        self.prev_close = Some(close);
        self.value
    }

    #[inline]
    pub fn value(&self) -> f64 {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sma_and_ema_by_hand() {
        let mut sma = Sma::new(3);
        let out: Vec<Option<f64>> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .map(|&x| sma.update(x))
            .collect();
        assert_eq!(out, vec![None, None, Some(2.0), Some(3.0)]);
        let mut ema = Ema::new(3);
        let out: Vec<Option<f64>> = [1.0, 2.0, 3.0, 5.0]
            .iter()
            .map(|&x| ema.update(x))
            .collect();
        // Seed 2.0, then (5 - 2) * 0.5 + 2.
        assert_eq!(out, vec![None, None, Some(2.0), Some(3.5)]);
    }

    #[test]
    fn rolling_extremes_track_the_window() {
        let mut hi = RollingExtreme::new(3, true);
        let got: Vec<f64> = [5.0, 1.0, 2.0, 1.0, 0.5, 7.0]
            .iter()
            .map(|&x| hi.update(x))
            .collect();
        assert_eq!(got, vec![5.0, 5.0, 5.0, 2.0, 2.0, 7.0]);
    }

    #[test]
    fn flat_prices_do_not_divide_by_zero() {
        let mut rsi = Rsi::new(3);
        let mut st = Stochastic::new(3, 1, 1);
        let mut bb = Bollinger::new(3, 2.0);
        for _ in 0..10 {
            rsi.update(10.0);
            st.update(10.0, 10.0, 10.0);
            bb.update(10.0);
        }
        assert_eq!(rsi.value(), Some(0.0));
        assert_eq!(st.value(), Some(StochValue { k: 0.0, d: 0.0 }));
        assert_eq!(bb.value().map(|b| b.upper), Some(10.0));
    }
}
