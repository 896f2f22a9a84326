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
mod json;
mod layout;
#[cfg(feature = "formats")]
mod parquet;
mod replace;
pub mod resample;

pub use csv::{
    CsvCandles, MAX_LINE_BYTES, parse_csv, parse_csv_columns, read_csv, read_csv_columns,
    write_csv, write_rows,
};
#[cfg(feature = "formats")]
pub use feather::{read_feather, read_feather_columns};
pub use json::{parse_json, read_json};
pub use layout::Columns;
#[cfg(feature = "formats")]
pub use parquet::{read_parquet, read_parquet_columns, write_parquet};

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

/// The whole text of a candle file, decompressed if it is gzip.
pub(crate) fn read_text(path: &Path) -> Result<String, CandleError> {
    read_text_within(path, MAX_EXPANDED_BYTES)
}

/// `read_text`, a compressed file refused when it expands past `max` bytes.
fn read_text_within(path: &Path, max: u64) -> Result<String, CandleError> {
    use std::io::Read;
    let name = path.display().to_string();
    let io = |error| CandleError::Io {
        path: name.clone(),
        error,
    };
    let mut text = String::new();
    let reader = open(path)?;
    let limit = if is_gzip(path) { max } else { u64::MAX - 1 };
    reader
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > limit {
        return Err(io(std::io::Error::other(format!(
            "expands to more than {}",
            if max >= 1 << 30 {
                format!("{} GiB", max >> 30)
            } else {
                format!("{max} bytes")
            }
        ))));
    }
    Ok(text)
}

/// Reads `path` whole and parses it, naming the file in every error.
pub(crate) fn read_with(
    path: &Path,
    parse: fn(&str, &str) -> Result<Vec<Candle>, CandleError>,
) -> Result<Vec<Candle>, CandleError> {
    let name = path.display().to_string();
    let text = read_text(path)?;
    parse(&text, &name)
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

/// The largest price or volume a candle may carry: the ledger books prices
/// and quantities as decimals of at most 28 digits (about 7.9e28), and with
/// both at most 1e14 any price × quantity stays representable.
pub const MAX_CANDLE_VALUE: f64 = 1e14;

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

/// Reads a candle file by its extension: `.parquet` as Parquet,
/// `.feather`, `.arrow` or `.ipc` as Feather (Arrow IPC), `.json` as
/// freqtrade JSON, anything else as CSV; JSON and CSV decompressed first
/// when the name ends in `.gz`.
pub fn read_file(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_file_columns(path, &Columns::default())
}

/// `read_file`, with the columns for the roles `columns` names found by
/// those names (a JSON file has no names: `columns` must be empty).
pub fn read_file_columns(path: &Path, columns: &Columns) -> Result<Vec<Candle>, CandleError> {
    #[cfg(feature = "formats")]
    {
        if is_parquet(path) {
            return read_parquet_columns(path, columns);
        }
        if is_feather(path) {
            return read_feather_columns(path, columns);
        }
    }
    let name = path.display().to_string();
    #[cfg(not(feature = "formats"))]
    if is_parquet(path) || is_feather(path) {
        return Err(without_formats(path));
    }
    if is_json(path) {
        if *columns != Columns::default() {
            return Err(CandleError::Invalid {
                path: name,
                line: 1,
                message: "freqtrade JSON has no column names: --columns is for CSV, \
                          Parquet and Feather"
                    .into(),
            });
        }
        return read_json(path);
    }
    read_csv_columns(path, columns)
}

/// Writes candles to a file in the format its name says: `.parquet` as
/// Parquet (`write_parquet`), anything else as CSV (`write_csv`; `.gz`
/// compressed). Either replaces `path` whole.
pub fn write_file(path: &Path, candles: &[Candle]) -> Result<(), CandleError> {
    if is_parquet(path) {
        #[cfg(feature = "formats")]
        return write_parquet(path, candles);
        #[cfg(not(feature = "formats"))]
        return Err(without_formats(path));
    }
    write_csv(path, candles)
}

/// A Parquet or Feather file where keel-model is built without them.
#[cfg(not(feature = "formats"))]
fn without_formats(path: &Path) -> CandleError {
    CandleError::Format {
        path: path.display().to_string(),
        message: "this build reads no Parquet or Feather (keel-model's `formats` feature)".into(),
    }
}

/// Whether `path` names a Parquet file, by its extension (`.parquet`).
pub fn is_parquet(path: &Path) -> bool {
    has_extension(path, &["parquet"])
}

/// Whether `path` names a Feather (Arrow IPC) file, by its extension:
/// `.feather`, `.arrow` or `.ipc`.
pub fn is_feather(path: &Path) -> bool {
    has_extension(path, &["feather", "arrow", "ipc"])
}

fn has_extension(path: &Path, any: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| any.iter().any(|a| ext.eq_ignore_ascii_case(a)))
}

/// The symbol a candle file's name gives: the name without its extensions
/// and a trailing timeframe, a pair written `ETH_BTC` or `BTC-USD` as
/// `ETH/BTC`, `BTC/USD` (`GOOG-1d.csv` → `GOOG`, `ETH_BTC-5m.json` →
/// `ETH/BTC`, `UNITTEST_BTC-1m.csv` → `UNITTEST_BTC`).
pub fn symbol_from_file(path: &Path) -> Option<String> {
    let mut name = path.file_name()?.to_str()?;
    while let Some((stem, ext)) = name.rsplit_once('.') {
        let known = [
            "csv", "json", "gz", "feather", "parquet", "arrow", "ipc", "txt",
        ];
        if stem.is_empty() || !known.iter().any(|k| ext.eq_ignore_ascii_case(k)) {
            break;
        }
        name = stem;
    }
    if let Some((stem, tf)) = name.rsplit_once(['-', '_'])
        && !stem.is_empty()
        && Timeframe::parse(tf).is_some()
    {
        name = stem;
    }
    let code = |s: &str| {
        (2..=6).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    match name.split_once(['_', '-']) {
        Some((base, quote)) if code(base) && code(quote) => Some(format!("{base}/{quote}")),
        _ if !name.is_empty() => Some(name.to_owned()),
        _ => None,
    }
}

/// Whether `path` names a freqtrade JSON file (by its extension) rather than CSV.
/// (`.json.gz`: compressed freqtrade JSON.)
pub fn is_json(path: &Path) -> bool {
    let inner = if is_gzip(path) {
        path.file_stem().map(Path::new)
    } else {
        Some(path)
    };
    inner
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

/// Appends the candle of `[open, high, low, close, volume]` after checking it
/// and that time moves forward.
pub(crate) fn push_checked(
    candles: &mut Vec<Candle>,
    time_ms: i64,
    values: [f64; 5],
) -> Result<(), String> {
    let candle = checked(candles.last().map(|c| c.time_ms), time_ms, values)?;
    candles.push(candle);
    Ok(())
}

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
/// close inside low .. high, and a volume from 0 to [`MAX_CANDLE_VALUE`].
/// Whatever passes, the ledger can book.
pub fn check_candle(c: &Candle) -> Result<(), String> {
    let (first, last) = CANDLE_TIME_MS;
    if !(first..=last).contains(&c.time_ms) {
        return Err(time_outside(&c.time_ms.to_string()));
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
    if !(0.0..=MAX_CANDLE_VALUE).contains(&c.volume) {
        return Err(format!(
            "volume {} is outside 0 to {}",
            number(c.volume),
            number(MAX_CANDLE_VALUE)
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

fn time_outside(time_ms: &str) -> String {
    let (first, last) = CANDLE_TIME_MS;
    format!(
        "time {time_ms} ms is outside {} .. {}",
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
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| layout::calendar_ms(text))
        .ok_or_else(|| {
            format!(
                "time '{}' is neither RFC 3339, a date and time, nor epoch time",
                shown::text(text)
            )
        })
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
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
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
/// series with gaps. `None` for fewer than two candles.
pub fn typical_spacing_ms(candles: &[Candle]) -> Option<i64> {
    let mut gaps: Vec<i64> = candles
        .windows(2)
        .map(|w| w[1].time_ms - w[0].time_ms)
        .collect();
    gaps.sort_unstable();
    let mut best = (0usize, None);
    let mut i = 0;
    while i < gaps.len() {
        let j = gaps[i..].iter().take_while(|g| **g == gaps[i]).count();
        if j > best.0 {
            best = (j, Some(gaps[i]));
        }
        i += j;
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_is_read_in_blocks_with_its_lines_named_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Some 11 MB: lines cut across several blocks.
        let candles = crate::synth::random_walk(2, 200_000, 0, 60_000, 10.0, 0.01);
        let path = dir.path().join("a.csv");
        write_csv(&path, &candles).expect("write");
        assert!(std::fs::metadata(&path).expect("size").len() > 8 << 20);
        let read = read_csv(&path).expect("read");
        assert_eq!(read.len(), candles.len());
        let text = std::fs::read_to_string(&path).expect("text");
        assert_eq!(read, parse_csv(&text, "a.csv").expect("parse"));

        // A line no candle file has: refused, not buffered.
        let long = dir.path().join("long.csv");
        let mut bytes = format!("{HEADER}1,1,1,1,1,1\n").into_bytes();
        bytes.extend(std::iter::repeat_n(b'9', 3 << 20));
        std::fs::write(&long, &bytes).expect("write");
        let err = read_csv(&long).expect_err("long").to_string();
        assert!(
            err.ends_with("long.csv:3: a line longer than 1024 KiB: not candles"),
            "{err}"
        );

        // Bytes that are not text, named by their line.
        let binary = dir.path().join("b.csv");
        let mut bytes = format!("{HEADER}60000,1,1,1,1,1\n120000,1,1,1,1,1\n").into_bytes();
        bytes.extend([0x1f, 0x8b, 0xff, b'\n']);
        std::fs::write(&binary, &bytes).expect("write");
        let err = read_csv(&binary).expect_err("binary").to_string();
        assert!(
            err.ends_with("b.csv:4: not UTF-8 text (a compressed file? name it .csv.gz)"),
            "{err}"
        );
    }

    #[test]
    fn the_quick_time_reader_agrees_with_rfc_3339_everywhere() {
        // Every day boundary of the years Keel accepts, at odd hours, plus
        // the dates a calendar gets wrong.
        let mut ms = CANDLE_TIME_MS.0;
        while ms <= CANDLE_TIME_MS.1 {
            let text = format_time(ms);
            assert_eq!(utc_seconds_ms(&text), Some(ms), "{text}");
            ms += 86_400_000 * 7 + 3_600_000 * 5 + 60_000 * 7 + 13_000;
        }
        for text in [
            "2000-02-29T23:59:59Z",
            "1900-03-01T00:00:00Z",
            "2024-12-31T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let chrono = chrono::DateTime::parse_from_rfc3339(text).expect(text);
            assert_eq!(
                utc_seconds_ms(text),
                Some(chrono.timestamp_millis()),
                "{text}"
            );
        }
        // Not dates: left to the general parsers, which refuse them.
        for text in [
            "1900-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T00:00:0xZ",
            "2024-01-01 00:00:00Z",
        ] {
            assert_eq!(utc_seconds_ms(text), None, "{text}");
        }
        assert!(parse_time("2023-02-29T00:00:00Z").is_err());
    }

    const HEADER: &str = "time,open,high,low,close,volume\n";

    #[test]
    fn a_gzip_file_is_read_through_and_one_that_expands_too_far_is_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::from(HEADER);
        for i in 0..40 {
            text.push_str(&format!("{},1,2,0.5,1.5,10\n", 1_600_000_000 + i * 60));
        }
        let gz = dir.path().join("x.csv.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).expect("compress");
        std::fs::write(&gz, encoder.finish().expect("compress")).expect("write");
        assert_eq!(read_file(&gz).expect("read").len(), 40);
        assert_eq!(
            read_text_within(&gz, text.len() as u64).expect("fits"),
            text
        );
        let refused = read_text_within(&gz, 1000).expect_err("expands past 1000 bytes");
        assert_eq!(
            refused.to_string(),
            format!(
                "{}: cannot read: expands to more than 1000 bytes",
                gz.display()
            )
        );
        // The limit is for what a compressed file makes, not for a plain one.
        let plain = dir.path().join("x.csv");
        std::fs::write(&plain, &text).expect("write");
        assert_eq!(read_text_within(&plain, 1000).expect("plain"), text);
        assert!(is_json(Path::new("a/ETH_BTC-5m.json.gz")) && is_json(Path::new("b.JSON")));
        assert!(!is_json(Path::new("x.csv.gz")) && !is_json(Path::new("json.gz")));
    }

    #[test]
    fn reads_rfc3339_and_epoch_ms() {
        let text =
            format!("{HEADER}2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n1515560400000,1.5,2,1,1.8,3\n");
        let candles = parse_csv(&text, "t.csv").expect("valid");
        assert_eq!(candles.len(), 2);
        assert_eq!(candles[0].time_ms, 1_515_560_100_000);
        assert_eq!(candles[1].time_ms, 1_515_560_400_000);
        assert_eq!(format_time(candles[0].time_ms), "2018-01-10T04:55:00Z");
    }

    #[test]
    fn bad_lines_are_named() {
        struct Case {
            body: &'static str,
            expect: &'static str,
        }
        let cases = [
            Case {
                body: "2018-01-10T04:55:00Z,1,2,3,1.5,10\n",
                expect: "t.csv:2: high 2 is below low 3",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n",
                expect: "t.csv:3: time 2018-01-10T04:55:00Z is not after the previous bar's 2018-01-10T04:55:00Z",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5,NaN,10\n",
                expect: "t.csv:2: close is NaN",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5\n",
                expect: "t.csv:2: expected 6 fields, found 4",
            },
            Case {
                body: "yesterday,1,2,0.5,1,1\n",
                expect: "t.csv:2: time 'yesterday' is neither RFC 3339, a date and time, nor epoch time",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5,x,1\n",
                expect: "t.csv:2: close 'x' is not a number",
            },
            Case {
                body: "2018-01-10T04:55:00Z,3,2,0.5,1,1\n",
                expect: "t.csv:2: open 3 is outside low 0.5 .. high 2",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5,1,-1\n",
                expect: "t.csv:2: volume -1 is outside 0 to 100000000000000",
            },
            // What the ledger cannot book is refused where it is read.
            Case {
                body: "2018-01-10T04:55:00Z,1,1e30,0.5,1,1\n",
                expect: "t.csv:2: high 1e30 is outside the prices Keel books, 1e-8 to 100000000000000",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1e-9,1e-9,1e-9,1e-9,1\n",
                expect: "t.csv:2: open 1e-9 is outside the prices Keel books, 1e-8 to 100000000000000",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,2,0.5,1,1e15\n",
                expect: "t.csv:2: volume 1e15 is outside 0 to 100000000000000",
            },
            Case {
                body: "99999999999999999,1,2,0.5,1,1\n",
                expect: "t.csv:2: time 99999999999999999 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
            },
            Case {
                body: "2300-01-01T00:00:00Z,1,2,0.5,1,1\n",
                expect: "t.csv:2: time 10413792000000 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
            },
            Case {
                body: "2018-01-10T04:55:00Z,\u{1b}[31m\0\u{202e},2,0.5,1,1\n",
                expect: "t.csv:2: open '\\x1b[31m\\x00\\u{202e}' is not a number",
            },
            Case {
                body: "2018-01-10T04:55:00Z,1,1,1e308,1,1\n",
                expect: "t.csv:2: low 1e308 is outside the prices Keel books, 1e-8 to 100000000000000",
            },
        ];
        for case in cases {
            let err = parse_csv(&format!("{HEADER}{}", case.body), "t.csv").expect_err(case.body);
            assert_eq!(err.to_string(), case.expect);
        }
    }

    #[test]
    fn a_huge_header_is_cut_in_the_error() {
        let header = "x".repeat(1 << 20);
        let err = parse_csv(&header, "t.csv").expect_err("no columns");
        let expect = format!(
            "t.csv:1: missing column 'time' (header is '{}…')",
            "x".repeat(crate::shown::MAX_CHARS)
        );
        assert_eq!(err.to_string(), expect);
    }

    #[test]
    fn header_problems_are_named() {
        let err = parse_csv("time,open,high,low,close\n", "t.csv").expect_err("no volume");
        assert_eq!(
            err.to_string(),
            "t.csv:1: missing column 'volume' (header is 'time,open,high,low,close')"
        );
        let err = parse_csv("", "t.csv").expect_err("empty");
        assert_eq!(err.to_string(), "t.csv: no candles");
    }

    #[test]
    fn spacing_ignores_gaps() {
        let c = |t| Candle {
            time_ms: t,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 0.0,
        };
        let series = [c(0), c(300), c(600), c(1500), c(1800)];
        assert_eq!(typical_spacing_ms(&series), Some(300));
        assert_eq!(typical_spacing_ms(&series[..1]), None);
    }

    #[test]
    fn reads_freqtrade_json_and_names_bad_rows_by_line() {
        let text =
            "[\n [1515560100000, 1, 2, 0.5, 1.5, 10],\n [1515560400000, 1.5, 2, 1, 1.8, 3]\n]";
        let candles = parse_json(text, "t.json").expect("valid");
        assert_eq!(candles.len(), 2);
        assert_eq!(candles[1].close, 1.8);
        let cases = [
            (
                "[\n [1, 1, 2, 0.5, 1.5, 10],\n [2, 1, 2, 3, 1.5, 10]\n]",
                "t.json:3: high 2 is below low 3",
            ),
            (
                "[[1, 1, 2, 0.5, 1.5]]",
                "t.json:1: candle 1 has 5 values, expected 6",
            ),
            (
                "[[1, 1, 2, 0.5, null, 1]]",
                "t.json:1: close null is not a finite number",
            ),
            (
                "[\n [1, 1, 2, 0.5, 1.5, 10],\n [1e30, 1, 2, 0.5, 1.5, 10]\n]",
                "t.json:3: time 1e30 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
            ),
            (
                "[[-9223372036854775808, 1, 2, 0.5, 1.5, 10]]",
                "t.json:1: time -9223372036854775808 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
            ),
            (
                "[\n [5, 1, 2, 0.5, 1.5, 10],\n\n [5, 1, 2, 0.5, 1.5, 10]]",
                "t.json:4: time 1970-01-01T00:00:00Z is not after the previous bar's 1970-01-01T00:00:00Z",
            ),
        ];
        for (text, expect) in cases {
            assert_eq!(
                parse_json(text, "t.json").expect_err(text).to_string(),
                expect
            );
        }
        let err = parse_json("[[1, 2,", "t.json").expect_err("truncated");
        assert!(
            err.to_string().starts_with("t.json:1: not a JSON list"),
            "{err}"
        );
    }

    #[test]
    fn written_csv_reads_back_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("synth.csv");
        let candles = crate::synth::random_walk(9, 200, 1_700_000_000_000, 60_000, 50.0, 0.02);
        write_csv(&path, &candles).expect("write");
        assert_eq!(read_csv(&path).expect("read"), candles);
    }

    #[test]
    fn gaps_are_found_not_filled() {
        let c = |t| Candle {
            time_ms: t,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 0.0,
        };
        let series = [c(0), c(300), c(600), c(1500), c(1800), c(2400)];
        assert_eq!(
            gaps(&series, 300),
            vec![
                Gap {
                    after_ms: 600,
                    missing: 2
                },
                Gap {
                    after_ms: 1800,
                    missing: 1
                }
            ]
        );
        assert!(gaps(&series[..3], 300).is_empty());
        // Calendar months: 31-day steps are not gaps, a missing month is.
        let day = 86_400_000;
        let months = [c(0), c(31 * day), c(59 * day), c(120 * day)];
        let month_ms = Timeframe::Month1.duration_ms();
        assert_eq!(
            gaps(&months, month_ms),
            vec![Gap {
                after_ms: 59 * day,
                missing: 1
            }]
        );
        assert!(Timeframe::Month1.matches_spacing(31 * day));
        assert!(Timeframe::M5.matches_spacing(300_000));
        assert!(!Timeframe::M5.matches_spacing(60_000));
    }

    #[test]
    fn timeframes_round_trip() {
        for t in Timeframe::ALL {
            assert_eq!(Timeframe::parse(t.as_str()), Some(t));
        }
        assert_eq!(Timeframe::parse("7m"), None);
    }

    #[test]
    fn a_files_name_gives_its_symbol() {
        for (file, symbol) in [
            ("GOOG-1d.csv", Some("GOOG")),
            ("data/ETH_BTC-5m.csv", Some("ETH/BTC")),
            ("ETH_BTC-5m.json", Some("ETH/BTC")),
            ("BTC-USD.csv", Some("BTC/USD")),
            ("UNITTEST_BTC-1m.csv", Some("UNITTEST_BTC")),
            ("BTCUSD-1M.csv", Some("BTCUSD")),
            ("prices.csv.gz", Some("prices")),
            ("my.data.v2.csv", Some("my.data.v2")),
            ("1d.csv", Some("1d")),
        ] {
            assert_eq!(
                symbol_from_file(Path::new(file)).as_deref(),
                symbol,
                "{file}"
            );
        }
    }
}
