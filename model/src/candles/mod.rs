//! Candles and candle files. A file is read whole and checked line by line
//! (row by row: Parquet, Feather); the first bad line is reported as
//! `path:line: what` (`path: row N: what`).

use std::fmt;
use std::path::Path;

use crate::shown::{self, number};

#[cfg(feature = "formats")]
mod arrow;
#[cfg(feature = "columns")]
pub mod columns;
mod csv;
#[cfg(feature = "formats")]
mod feather;
mod files;
mod json;
mod layout;
#[cfg(feature = "columns")]
pub mod packed;
#[cfg(feature = "formats")]
mod parquet;
mod replace;
pub mod resample;

pub use csv::{
    CsvCandles, CsvRows, MAX_LINE_BYTES, parse_csv, parse_csv_columns, read_csv, read_csv_columns,
    read_csv_each, write_csv, write_rows,
};
#[cfg(feature = "formats")]
pub use feather::{read_feather, read_feather_columns};
pub use files::*;
pub use json::{parse_json, read_json, read_json_each};
pub use layout::Columns;
#[cfg(feature = "formats")]
pub use parquet::{
    ParquetRows, read_parquet, read_parquet_columns, read_parquet_each, write_parquet,
};

/// The columns of a candle row, in order.
pub(crate) const COLUMNS: [&str; 6] = ["time", "open", "high", "low", "close", "volume"];

/// The most a compressed candle file may expand to (1 GiB, some 17 million
/// one-minute candles): a file that would make more is refused, not read.
/// What is read is held whole while it is parsed, about three times its
/// size at the peak. A Parquet or Feather file is refused when it is larger,
/// or when its rows' values (48 bytes a row) and what its compressed columns
/// expand to would pass it.
pub const MAX_EXPANDED_BYTES: u64 = 1 << 30;

/// Whether `path` is gzip-compressed, by its extension (`.csv.gz`,
/// `.json.gz`).
pub fn is_gzip(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("gz"))
}

/// A candle file's bytes as they are read, decompressed when it is gzip
/// (`.gz`), at most [`MAX_EXPANDED_BYTES`] of them plus one (so that more
/// can be told).
pub fn open(path: &Path) -> Result<Box<dyn std::io::Read + Send>, CandleError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|error| CandleError::Io {
        path: path.display().to_string(),
        error,
    })?;
    Ok(if is_gzip(path) {
        Box::new(flate2::read::MultiGzDecoder::new(file).take(MAX_EXPANDED_BYTES + 1))
    } else {
        Box::new(file)
    })
}

/// One OHLCV candle; `time_ms` is its open time (ms since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    pub time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

/// Why a candle file was refused. Displays as one line naming file and line.
#[derive(Debug, thiserror::Error)]
pub enum CandleError {
    /// (`error` is part of the line, not a source below it: the one-line
    /// report would repeat it.)
    #[error("{path}: cannot read: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: cannot write: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    /// A bad row of a Parquet or Feather file (1 for the first).
    #[error("{path}: row {row}: {message}")]
    Row {
        path: String,
        row: usize,
        message: String,
    },
    /// A Parquet or Feather file refused whole: not one, a codec or a
    /// column type Keel does not read, a column missing, too large.
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path}: no candles")]
    Empty { path: String },
}

/// The largest price a candle may carry: the ledger books prices and
/// quantities as decimals of at most 28 digits (about 7.9e28), and with
/// both at most 1e14 any price × quantity stays representable.
pub const MAX_CANDLE_VALUE: f64 = 1e14;

/// The largest volume a candle may carry. Volume is never booked (an
/// order's quantity has a cap of its own, [`MAX_ORDER_QUANTITY`]); the
/// bound keeps sums finite. Tokens with vast supplies trade 1e15 and more
/// a day; a month of one-minute bars aggregated is 44,640 of them, so what
/// an export aggregates imports again wherever a minute's volume is below
/// 2e25.
pub const MAX_CANDLE_VOLUME: f64 = 1e30;

/// The largest quantity one order may carry: at most `MAX_CANDLE_VALUE`
/// apart, quantity × price stays far inside the ledger's decimals (about
/// 7.9e28), however far the price moves while the position is held.
pub const MAX_ORDER_QUANTITY: f64 = 1e12;

/// The smallest price a candle may carry: the ledger keeps 8 decimal
/// places, so anything lower would be booked as a price of zero.
pub const MIN_CANDLE_PRICE: f64 = 1e-8;

/// Bar times Keel accepts: 1900-01-01 to 2200-01-01 (UTC), in epoch ms.
/// Anything outside is a unit mix-up or garbage, and would overflow the
/// arithmetic on bar spacing.
pub const CANDLE_TIME_MS: (i64, i64) = (-2_208_988_800_000, 7_258_118_400_000);

/// The candle of `[open, high, low, close, volume]`, checked, and checked to
/// come after a bar opening at `prev_ms`.
pub(crate) fn checked(
    prev_ms: Option<i64>,
    time_ms: i64,
    values: [f64; 5],
) -> Result<Candle, String> {
    let [open, high, low, close, volume] = values;
    let candle = Candle {
        time_ms,
        open,
        high,
        low,
        close,
        volume,
    };
    check_candle(&candle)?;
    if let Some(prev) = prev_ms
        && time_ms <= prev
    {
        return Err(format!(
            "time {} is not after the previous bar's {}",
            format_time(time_ms),
            format_time(prev)
        ));
    }
    Ok(candle)
}

/// A run of missing bars: `missing` bars absent after the bar at `after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub after_ms: i64,
    pub missing: u64,
}

/// Where bars are missing, given the nominal bar length. A step of one and a
/// half bars or more is a gap of (rounded step / bar − 1) bars, so calendar
/// months (28 to 31 days against a nominal 30) are not gaps. Never invents bars.
pub fn gaps(candles: &[Candle], bar_ms: i64) -> Vec<Gap> {
    if bar_ms <= 0 {
        return Vec::new();
    }
    candles
        .windows(2)
        .filter_map(|w| {
            missing_between(w[0].time_ms, w[1].time_ms, bar_ms).map(|missing| Gap {
                after_ms: w[0].time_ms,
                missing,
            })
        })
        .collect()
}

/// How many bars of `bar_ms` are missing between bars opening at `prev_ms`
/// and `next_ms`, by the rule of [`gaps`]; `None` for none.
pub fn missing_between(prev_ms: i64, next_ms: i64, bar_ms: i64) -> Option<u64> {
    let step = next_ms.saturating_sub(prev_ms);
    (bar_ms > 0 && 2 * (step as i128) >= 3 * bar_ms as i128)
        .then(|| ((step as i128 + bar_ms as i128 / 2) / bar_ms as i128 - 1) as u64)
}

/// The rules every candle obeys, wherever it comes from (a file imported,
/// backtested or replayed, a live feed): a time in [`CANDLE_TIME_MS`],
/// prices from [`MIN_CANDLE_PRICE`] to [`MAX_CANDLE_VALUE`] with open and
/// close inside low .. high, and a volume from 0 to [`MAX_CANDLE_VOLUME`].
/// Whatever passes, the ledger can book.
#[inline]
pub fn check_candle(c: &Candle) -> Result<(), String> {
    // Every rule at once, without a branch per rule: a candle that passes
    // (all of them, nearly always) costs a few comparisons. Any NaN fails a
    // comparison, so it is judged below, where the message is made.
    let (first, last) = CANDLE_TIME_MS;
    let (min, max) = (MIN_CANDLE_PRICE, MAX_CANDLE_VALUE);
    let sane = (first <= c.time_ms)
        & (c.time_ms <= last)
        & (c.low >= min)
        & (c.high <= max)
        & (c.low <= c.open)
        & (c.open <= c.high)
        & (c.low <= c.close)
        & (c.close <= c.high)
        & (c.volume >= 0.0)
        & (c.volume <= MAX_CANDLE_VOLUME);
    if sane {
        return Ok(());
    }
    candle_fault(c)
}

/// What is wrong with a candle [`check_candle`] refused.
#[cold]
fn candle_fault(c: &Candle) -> Result<(), String> {
    let (first, last) = CANDLE_TIME_MS;
    if !(first..=last).contains(&c.time_ms) {
        return Err(time_outside(&format!("{} ms", c.time_ms)));
    }
    for (name, v) in [
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
    ] {
        if !(MIN_CANDLE_PRICE..=MAX_CANDLE_VALUE).contains(&v) {
            return Err(format!(
                "{name} {} is outside the prices Keel books, {} to {}",
                number(v),
                number(MIN_CANDLE_PRICE),
                number(MAX_CANDLE_VALUE)
            ));
        }
    }
    if !(0.0..=MAX_CANDLE_VOLUME).contains(&c.volume) {
        return Err(format!(
            "volume {} is outside 0 to {}",
            number(c.volume),
            number(MAX_CANDLE_VOLUME)
        ));
    }
    if c.high < c.low {
        let (high, low) = (number(c.high), number(c.low));
        return Err(format!("high {high} is below low {low}"));
    }
    for (name, v) in [("open", c.open), ("close", c.close)] {
        if v > c.high || v < c.low {
            let (v, low, high) = (number(v), number(c.low), number(c.high));
            return Err(format!("{name} {v} is outside low {low} .. high {high}"));
        }
    }
    Ok(())
}

/// What is said of a time outside [`CANDLE_TIME_MS`], given as `time`
/// (`'9999-12-31T23:59:00Z'`, or `253402300740000 ms`).
pub(crate) fn time_outside(time: &str) -> String {
    let (first, last) = CANDLE_TIME_MS;
    format!(
        "time {time} is outside {} .. {}",
        format_time(first),
        format_time(last)
    )
}

/// RFC 3339 (`2018-01-10T04:55:00Z`), a date or a date and time (UTC
/// unless it has an offset), or an integer epoch time: 10 digits are
/// seconds, 16 µs, 19 ns, any other count ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Some(ms) = utc_seconds_ms(text) {
        return Ok(ms);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return layout::epoch_ms(text);
    }
    // chrono reads `23:59:60` as the second's leap: no bar starts there,
    // and read as the next second it would clash with that one's bar.
    let leap = || {
        format!(
            "time '{}' is a leap second, at which no bar starts",
            shown::text(text)
        )
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        if chrono::Timelike::nanosecond(&t) >= 1_000_000_000 {
            return Err(leap());
        }
        return Ok(t.timestamp_millis());
    }
    match layout::calendar(text) {
        Some(layout::Calendar::Ms(ms)) => Ok(ms),
        Some(layout::Calendar::Leap) => Err(leap()),
        None => Err(format!(
            "time '{}' is neither RFC 3339, a date and time, nor epoch time",
            shown::text(text)
        )),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form nearly every candle file writes, read
/// without a general parser (the same answer as RFC 3339's, several times
/// faster); `None` for anything else, which the general parsers read.
fn utc_seconds_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// RFC 3339 UTC text for epoch milliseconds.
pub fn format_time(time_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(time_ms).map_or_else(
        || format!("{time_ms}ms"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}

/// The time `months` calendar months after `time_ms` (the same day of the
/// month and time of day, the month's last day when it has fewer);
/// `None` past what a time can be.
pub fn months_after(time_ms: i64, months: u32) -> Option<i64> {
    let t = chrono::DateTime::from_timestamp_millis(time_ms)?;
    let later = t.checked_add_months(chrono::Months::new(months))?;
    Some(later.timestamp_millis())
}

/// A bar length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timeframe {
    M1,
    M5,
    M15,
    H1,
    H4,
    D1,
    W1,
    /// One calendar month (its length varies; `duration_ms` gives 30 days).
    Month1,
}

impl Timeframe {
    pub const ALL: [Timeframe; 8] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::H4,
        Timeframe::D1,
        Timeframe::W1,
        Timeframe::Month1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
            Timeframe::D1 => "1d",
            Timeframe::W1 => "1w",
            Timeframe::Month1 => "1M",
        }
    }

    /// Nominal length in milliseconds.
    pub fn duration_ms(self) -> i64 {
        const MIN: i64 = 60_000;
        match self {
            Timeframe::M1 => MIN,
            Timeframe::M5 => 5 * MIN,
            Timeframe::M15 => 15 * MIN,
            Timeframe::H1 => 60 * MIN,
            Timeframe::H4 => 240 * MIN,
            Timeframe::D1 => 1440 * MIN,
            Timeframe::W1 => 7 * 1440 * MIN,
            Timeframe::Month1 => 30 * 1440 * MIN,
        }
    }

    /// Whether bars `spacing_ms` apart are of this timeframe (within 10%;
    /// 28 to 31 days for a month).
    pub fn matches_spacing(self, spacing_ms: i64) -> bool {
        const DAY: i64 = 86_400_000;
        match self {
            Timeframe::Month1 => (28 * DAY..=31 * DAY).contains(&spacing_ms),
            _ => (spacing_ms - self.duration_ms()).abs() * 10 <= self.duration_ms(),
        }
    }

    pub fn parse(text: &str) -> Option<Timeframe> {
        Timeframe::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most common spacing between consecutive candles: the bar length of a
/// series with gaps (the shortest of equally common ones). `None` for fewer
/// than two candles.
pub fn typical_spacing_ms(candles: &[Candle]) -> Option<i64> {
    let mut spacings = Spacings::default();
    for w in candles.windows(2) {
        spacings.add(w[1].time_ms - w[0].time_ms);
    }
    spacings.typical()
}

/// The spacings between consecutive candles, counted as they come (a file
/// read a piece at a time), for [`typical_spacing_ms`]. A run of equal
/// spacings — nearly all of them in a real series — is counted without a
/// look-up.
#[derive(Debug, Clone, Default)]
pub struct Spacings {
    counts: std::collections::HashMap<i64, u64>,
    run: Option<(i64, u64)>,
}

impl Spacings {
    pub fn add(&mut self, spacing: i64) {
        match &mut self.run {
            Some((s, n)) if *s == spacing => *n += 1,
            run => {
                if let Some((s, n)) = run.replace((spacing, 1)) {
                    *self.counts.entry(s).or_default() += n;
                }
            }
        }
    }

    /// Each spacing seen and how often.
    fn each(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        let run = self.run.filter(|r| !self.counts.contains_key(&r.0));
        let with_run = |s: i64, n: u64| n + self.run.filter(|r| r.0 == s).map_or(0, |r| r.1);
        (self.counts.iter())
            .map(move |(&s, &n)| (s, with_run(s, n)))
            .chain(run)
    }

    /// Whether more than half the spacings are ones `such` says yes to.
    pub fn mostly(&self, such: impl Fn(i64) -> bool) -> bool {
        let (mut of_it, mut all) = (0u64, 0u64);
        for (s, n) in self.each() {
            all = all.saturating_add(n);
            if such(s) {
                of_it = of_it.saturating_add(n);
            }
        }
        of_it > all / 2
    }

    /// The most common spacing (the shortest of equally common ones).
    pub fn typical(&self) -> Option<i64> {
        self.each()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests;
