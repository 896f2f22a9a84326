//! Numbers with a fixed count of decimals, for signal reasons and logs,
//! written as `format!("{x:.6}")` writes them but several times faster
//! inside the sandbox: the standard formatter's exact mode is general
//! (any precision, any magnitude) and costs a few hundred nanoseconds a
//! number in wasm, which shows in a strategy that explains every signal.

use std::fmt;

/// Most decimals [`fixed`] writes itself; more go to the standard formatter.
const MOST_DECIMALS: u32 = 9;

/// `x` with `decimals` decimals, rounded half to even on its exact binary
/// value: `fixed(x, 6).to_string() == format!("{x:.6}")` for every `x`.
/// Width and alignment (`{:>12}`) apply to the whole number.
pub fn fixed(x: f64, decimals: u32) -> Fixed {
    Fixed { x, decimals }
}

/// See [`fixed`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fixed {
    x: f64,
    decimals: u32,
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(scaled) = scaled(self.x, self.decimals) else {
            return f.pad(&format!("{:.*}", self.decimals as usize, self.x));
        };
        let mut out = Backwards::default();
        let decimals = self.decimals as usize;
        // Nine digits at a time in 32 bits: wasm has no cheap 64-bit
        // division, and a 32-bit one by ten compiles to a multiplication.
        let mut rest = scaled;
        loop {
            if rest >= BILLION {
                let mut limb = (rest % BILLION) as u32;
                rest /= BILLION;
                for _ in 0..9 {
                    out.digit(limb % 10, decimals);
                    limb /= 10;
                }
                continue;
            }
            let mut limb = rest as u32;
            while limb > 0 || out.digits <= decimals {
                out.digit(limb % 10, decimals);
                limb /= 10;
            }
            break;
        }
        if self.x.is_sign_negative() {
            out.put(b'-');
        }
        let text = out.text()?;
        f.pad(text)
    }
}

const BILLION: u64 = 1_000_000_000;

/// A number's text written from its last byte to its first: a sign, up to
/// 20 digits, the point.
struct Backwards {
    buf: [u8; 24],
    at: usize,
    /// Digits written so far.
    digits: usize,
}

impl Default for Backwards {
    fn default() -> Backwards {
        Backwards {
            buf: [0; 24],
            at: 24,
            digits: 0,
        }
    }
}

impl Backwards {
    fn put(&mut self, byte: u8) {
        self.at -= 1;
        self.buf[self.at] = byte;
    }

    /// The next digit to the left, after the point once `decimals` are
    /// written.
    fn digit(&mut self, digit: u32, decimals: usize) {
        if self.digits == decimals && decimals > 0 {
            self.put(b'.');
        }
        self.put(b'0' + digit as u8);
        self.digits += 1;
    }

    fn text(&self) -> Result<&str, fmt::Error> {
        // Only ASCII digits, a point and a minus were written.
        std::str::from_utf8(&self.buf[self.at..]).map_err(|_| fmt::Error)
    }
}

/// `|x| × 10^decimals`, rounded half to even, when it is finite and fits
/// a `u64` and `decimals` is at most [`MOST_DECIMALS`].
fn scaled(x: f64, decimals: u32) -> Option<u64> {
    if decimals > MOST_DECIMALS || !x.is_finite() {
        return None;
    }
    // Mostly in one multiplication. Below 2^52 every half is a double, and
    // a product is rounded to the nearest double: so it is above (below) a
    // half exactly when the exact product is, and only a product landing on
    // a half leaves the side unknown. (Powers of ten up to 10^9 are exact;
    // below 2^52 the fraction is exact too.)
    let y = x.abs() * POWERS_OF_TEN[decimals as usize];
    if y < (1u64 << 52) as f64 {
        let whole = y.floor();
        let fraction = y - whole;
        if fraction != 0.5 {
            return Some(whole as u64 + u64::from(fraction > 0.5));
        }
    }
    exactly_scaled(x, decimals)
}

const POWERS_OF_TEN: [f64; MOST_DECIMALS as usize + 1] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// [`scaled`] in integers, exactly: for ties and the numbers near them.
fn exactly_scaled(x: f64, decimals: u32) -> Option<u64> {
    // |x| = mantissa × 2^exponent, exactly.
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = match biased {
        0 => (fraction, -1074),
        _ => (fraction | (1 << 52), biased - 1075),
    };
    // At most 53 + 30 bits.
    let product = u128::from(mantissa) * u128::from(10u64.pow(decimals));
    let rounded = if exponent >= 0 {
        // |x| ≥ 2^52 here: shifted by more than 40 it cannot fit.
        if exponent > 40 {
            return None;
        }
        product << exponent
    } else {
        let shift = exponent.unsigned_abs();
        if shift >= 127 {
            // Below 2^83 / 2^127: under a half, so zero.
            0
        } else {
            let (quotient, rest) = (product >> shift, product & ((1u128 << shift) - 1));
            let half = 1u128 << (shift - 1);
            match rest.cmp(&half) {
                std::cmp::Ordering::Greater => quotient + 1,
                std::cmp::Ordering::Equal => quotient + (quotient & 1),
                std::cmp::Ordering::Less => quotient,
            }
        }
    };
    u64::try_from(rounded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(x: f64, decimals: u32) {
        assert_eq!(
            fixed(x, decimals).to_string(),
            format!("{x:.*}", decimals as usize),
            "{x:e} with {decimals} decimals"
        );
    }

    #[test]
    fn writes_what_the_standard_formatter_writes() {
        let edges = [
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            -2.5,
            0.125,
            0.375,
            1e-7,
            -1e-7,
            5e-7,
            4.9999995e-7,
            0.0000005,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            0.1 + 0.2,
            99.9999995,
            999_999.999_999_5,
            1e15,
            4.5e15,
            9.2e18,
            1.8e19,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for x in edges {
            for decimals in 0..=12 {
                same(x, decimals);
                same(-x, decimals);
            }
        }
        // Random bit patterns, and random prices in every decade.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let bits = next();
            let decimals = (bits % 11) as u32;
            same(f64::from_bits(next()), decimals);
            let price = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let decade = 10f64.powi((bits >> 8) as i32 % 24 - 12);
            same(price * decade, decimals);
            // Values that sit on a tie of the last decimal.
            let tie = ((next() % 1_000_000) as f64 + 0.5) / 10f64.powi(decimals as i32);
            same(tie, decimals);
            // And those a few steps of the last bit either side, where the
            // quick product and the exact one may round differently.
            for step in 1..=3 {
                same(f64::from_bits(tie.to_bits() + step), decimals);
                same(f64::from_bits(tie.to_bits() - step), decimals);
            }
        }
    }

    #[test]
    fn width_and_alignment_apply_to_the_whole_number() {
        assert_eq!(format!("[{:>10}]", fixed(12.3456, 2)), "[     12.35]");
        assert_eq!(format!("[{:<8}]", fixed(-1.0, 1)), "[-1.0    ]");
        assert_eq!(format!("[{:>6}]", fixed(f64::NAN, 3)), "[   NaN]");
        // A precision cuts the text, as for any string.
        assert_eq!(format!("[{:.3}]", fixed(12.3456, 2)), "[12.]");
        assert_eq!(format!("[{:>5.2}]", fixed(-7.25, 2)), "[   -7]");
    }
}
