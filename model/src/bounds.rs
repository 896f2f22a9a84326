//! Range checks for every number a user hands Keel — command-line options
//! and configuration keys alike: one rule, and one line saying what was
//! refused, its value and the allowed range
//! (`--fee-bps 1000000 is outside [0, 1000]`).

use std::fmt;
use std::str::FromStr;

/// Fees and slippage in basis points of notional: at most 10% a fill (at
/// 100% a fill's fee alone could take more than the book holds). Shared by
/// the host's options and `candidates.toml`.
pub const BPS: Bounds<f64> = Bounds::new(0.0, 1000.0);
/// Percentages of equity (risk limits, gate thresholds).
pub const PERCENT: Bounds<f64> = Bounds::above(0.0, 100.0);

/// The values a number may take: `min` to `max`, both included, unless
/// `min_open` leaves `min` out. NaN is never inside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds<T> {
    pub min: T,
    pub max: T,
    pub min_open: bool,
}

/// A number outside its [`Bounds`]. `name` (the option or config key) may be
/// empty when the caller names it itself (clap does).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{value} is outside {range}", if name.is_empty() { String::new() } else { format!("{name} ") })]
pub struct OutOfRange {
    pub name: String,
    pub value: String,
    pub range: String,
}

impl<T: PartialOrd + Copy + fmt::Display> Bounds<T> {
    /// `[min, max]`.
    pub const fn new(min: T, max: T) -> Bounds<T> {
        Bounds {
            min,
            max,
            min_open: false,
        }
    }

    /// `(min, max]`: above `min`.
    pub const fn above(min: T, max: T) -> Bounds<T> {
        Bounds {
            min,
            max,
            min_open: true,
        }
    }

    pub fn contains(&self, value: T) -> bool {
        let low = if self.min_open {
            value > self.min
        } else {
            value >= self.min
        };
        low && value <= self.max
    }

    /// `value`, if inside; else an error naming `name`, the value and the range.
    pub fn check(&self, name: &str, value: T) -> Result<T, OutOfRange> {
        if self.contains(value) {
            return Ok(value);
        }
        Err(OutOfRange {
            name: name.to_owned(),
            value: compact(&value),
            range: self.to_string(),
        })
    }

    /// Parses `text` and checks it: a clap value parser for an option whose
    /// name clap adds to the message.
    pub fn parse(&self, text: &str) -> Result<T, String>
    where
        T: FromStr,
    {
        let value = text.trim().parse::<T>().map_err(|_| {
            // A whole number the type cannot hold (-5 for a count) is a
            // number out of range, not text.
            match text.trim().parse::<i128>() {
                Ok(n) => format!("{n} is outside {self}"),
                Err(_) => format!("'{}' is not a number in {self}", shorten(text)),
            }
        })?;
        self.check("", value).map_err(|e| e.to_string())
    }

    /// A clap value parser for these bounds.
    pub fn parser(self) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
    where
        T: FromStr + Send + Sync + 'static,
    {
        move |text| self.parse(text)
    }

    /// Deserialises a `T` and checks it: for serde's `deserialize_with`,
    /// where the format's error then names the line.
    pub fn deserialize<'de, D>(&self, name: &str, deserializer: D) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: serde::Deserialize<'de>,
    {
        let value = T::deserialize(deserializer)?;
        self.check(name, value).map_err(serde::de::Error::custom)
    }
}

impl<T: fmt::Display> fmt::Display for Bounds<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.min_open { '(' } else { '[' };
        write!(f, "{open}{}, {}]", compact(&self.min), compact(&self.max))
    }
}

/// A number as short text (`1e-308`, not 309 digits): `shown`'s rule.
pub fn compact<T: fmt::Display>(value: &T) -> String {
    crate::shown::message(&value.to_string())
}

/// What a user typed, cut and escaped as `shown` does for every error.
fn shorten(text: &str) -> String {
    crate::shown::text(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_are_named_with_the_range() {
        let bps = Bounds::new(0.0, 1000.0);
        assert_eq!(bps.check("--fee-bps", 10.0), Ok(10.0));
        let cases: [(f64, &str); 5] = [
            (1e6, "--fee-bps 1000000 is outside [0, 1000]"),
            (-1.0, "--fee-bps -1 is outside [0, 1000]"),
            (f64::NAN, "--fee-bps NaN is outside [0, 1000]"),
            (f64::INFINITY, "--fee-bps inf is outside [0, 1000]"),
            (1e30, "--fee-bps 1e30 is outside [0, 1000]"),
        ];
        for (value, expect) in cases {
            let err = bps.check("--fee-bps", value).expect_err(expect);
            assert_eq!(err.to_string(), expect);
        }
        let speed = Bounds::new(0.01, 1e6);
        assert_eq!(
            speed
                .check("--speed", 1e-308)
                .expect_err("tiny")
                .to_string(),
            "--speed 1e-308 is outside [0.01, 1000000]"
        );
        let share = Bounds::above(0.0, 1.0);
        assert_eq!(
            share
                .check("--volume-share", 0.0)
                .expect_err("zero")
                .to_string(),
            "--volume-share 0 is outside (0, 1]"
        );
        assert_eq!(share.check("--volume-share", 1e-9), Ok(1e-9));
    }

    #[test]
    fn parsing_checks_the_text_and_the_range() {
        let folds = Bounds::new(1usize, 100);
        assert_eq!(folds.parse("4"), Ok(4));
        assert_eq!(
            folds.parse("18446744073709551615"),
            Err("18446744073709551615 is outside [1, 100]".to_owned())
        );
        assert_eq!(
            folds.parse("1e3"),
            Err("'1e3' is not a number in [1, 100]".to_owned())
        );
        assert_eq!(
            folds.parse("99999999999999999999999"),
            Err("99999999999999999999999 is outside [1, 100]".to_owned())
        );
        assert_eq!(folds.parse("-5"), Err("-5 is outside [1, 100]".to_owned()));
        assert_eq!(
            folds.parse("999999999999999999999999999999999999999999"),
            Err(
                "'999999999999999999999999999999999999999999' is not a number in [1, 100]"
                    .to_owned()
            )
        );
    }
}
