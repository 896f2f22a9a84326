//! Seeded random-walk candles: the same seed gives the same candles on every
//! machine (integer PRNG, no platform maths beyond IEEE +,*,ln,sqrt,cos).

use crate::candles::Candle;

/// SplitMix64: small, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let (u, v) = (self.next_unit(), self.next_unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `count` candles of a geometric random walk starting at `price`, one every
/// `bar_ms` from `start_ms`, with per-bar volatility `sigma` (0.01 = 1%).
pub fn random_walk(
    seed: u64,
    count: usize,
    start_ms: i64,
    bar_ms: i64,
    price: f64,
    sigma: f64,
) -> Vec<Candle> {
    random_walk_iter(seed, count, start_ms, bar_ms, price, sigma).collect()
}

/// The same candles as [`random_walk`], made one at a time (nothing held).
pub fn random_walk_iter(
    seed: u64,
    count: usize,
    start_ms: i64,
    bar_ms: i64,
    price: f64,
    sigma: f64,
) -> impl Iterator<Item = Candle> {
    let mut rng = SplitMix64::new(seed);
    let mut close = price;
    (0..count).map(move |i| {
        let open = close;
        close = open * (sigma * rng.next_normal()).exp();
        let wick_up = open.max(close) * (1.0 + sigma * rng.next_unit() * 0.5);
        let wick_down = open.min(close) * (1.0 - sigma * rng.next_unit() * 0.5);
        Candle {
            time_ms: start_ms + i as i64 * bar_ms,
            open,
            high: wick_up,
            low: wick_down,
            close,
            volume: 100.0 + 900.0 * rng.next_unit(),
        }
    })
}

/// A venue's step for an amount: prices move in ticks and quantities in
/// lots, each written as a decimal (`0.01`, `0.00000001`, `5`). A value put
/// on the step is the nearest multiple of it, which prints as the decimal
/// it is (`100.05`, not `100.05000000000001`): a file of such bars has the
/// digits a venue's has, where a walk's own values carry seventeen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The step in units of `1 / scale`: a whole number below 2^53.
    units: f64,
    /// `10^places`, exact in a double for `places` up to 15.
    scale: f64,
}

impl Step {
    /// The most decimal places a step may have.
    pub const MAX_PLACES: usize = 12;
    /// The largest step.
    pub const MAX: f64 = 1e6;

    /// Reads a step written as a positive decimal.
    pub fn parse(text: &str) -> Result<Step, String> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(format!("{text:?} is not a decimal such as 0.01"));
        }
        if fraction.len() > Step::MAX_PLACES {
            return Err(format!(
                "{text}: at most {} decimal places",
                Step::MAX_PLACES
            ));
        }
        let value: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a decimal"))?;
        if !(value > 0.0 && value <= Step::MAX) {
            return Err(format!("{text} is outside (0, {}]", Step::MAX));
        }
        let units: u64 = format!("{whole}{fraction}")
            .parse()
            .map_err(|_| format!("{text:?} is not a decimal"))?;
        Ok(Step {
            units: units as f64,
            scale: 10f64.powi(fraction.len() as i32),
        })
    }

    /// `x` put on the step: the nearest multiple, a division by a power of
    /// ten last (correctly rounded, so it prints as the decimal it is).
    pub fn snap(self, x: f64) -> f64 {
        (x * self.scale / self.units).round() * self.units / self.scale
    }
}

/// Quotes a walk's candle as a venue would: its prices on `tick`, its
/// volume on `lot` (each left as it is where not given). Rounding to the
/// nearest keeps the order of the prices, so the candle stays one.
pub fn quote(candle: &mut Candle, tick: Option<Step>, lot: Option<Step>) {
    if let Some(tick) = tick {
        for price in [
            &mut candle.open,
            &mut candle.high,
            &mut candle.low,
            &mut candle.close,
        ] {
            *price = tick.snap(*price);
        }
    }
    if let Some(lot) = lot {
        candle.volume = lot.snap(candle.volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candles::check_candle;

    #[test]
    fn same_seed_same_candles_and_all_valid() {
        let a = random_walk(7, 1000, 0, 60_000, 100.0, 0.01);
        assert_eq!(a, random_walk(7, 1000, 0, 60_000, 100.0, 0.01));
        assert_ne!(a, random_walk(8, 1000, 0, 60_000, 100.0, 0.01));
        for c in &a {
            check_candle(c).expect("consistent candle");
        }
        // The first value of seed 7 is fixed forever: reproducibility across versions.
        assert_eq!(SplitMix64::new(7).next_u64(), 7_191_089_600_892_374_487);
    }

    #[test]
    fn a_step_is_a_positive_decimal_and_what_is_put_on_it_prints_as_one() {
        let tick = Step::parse("0.01").expect("tick");
        assert_eq!(tick.snap(100.048_55).to_string(), "100.05");
        assert_eq!(tick.snap(99.974_957_732_082_54).to_string(), "99.97");
        assert_eq!(Step::parse("5").expect("5").snap(12.6), 15.0);
        assert_eq!(Step::parse("0.5").expect(".5").snap(0.26), 0.5);
        let lot = Step::parse("0.00000001").expect("lot");
        assert_eq!(lot.snap(499.838_230_743_722_3).to_string(), "499.83823074");
        assert_eq!(Step::parse(".25").expect(".25").snap(1.1), 1.0);
        for bad in [
            "", ".", "0", "0.000", "-1", "1e-2", "abc", "1.2.3", " 1", "2000000",
        ] {
            assert!(Step::parse(bad).is_err(), "{bad:?} taken");
        }
        let long = Step::parse("0.0000000000001").expect_err("13 places");
        assert_eq!(long, "0.0000000000001: at most 12 decimal places");
        assert_eq!(
            Step::parse("0").expect_err("zero"),
            "0 is outside (0, 1000000]"
        );

        // A quoted walk: every bar still a candle, every value on its step
        // and written with no more places than the step has.
        let mut walk = random_walk(3, 2000, 0, 60_000, 100.0, 0.01);
        for c in &mut walk {
            quote(c, Some(tick), Some(lot));
            check_candle(c).expect("still a candle");
            for price in [c.open, c.high, c.low, c.close] {
                let text = price.to_string();
                let places = text.split_once('.').map_or(0, |(_, f)| f.len());
                assert!(places <= 2, "{text}");
            }
            let volume = c.volume.to_string();
            assert!(volume.split_once('.').is_none_or(|(_, f)| f.len() <= 8));
        }
        assert!(walk.windows(2).all(|w| w[0].close == w[1].open));
    }
}
