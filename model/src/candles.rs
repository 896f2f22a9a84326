//! Candles and candle files. A file is read whole and checked line by line;
//! the first bad line is reported as `path:line: what`.

use std::fmt;
use std::path::Path;

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
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: no candles")]
    Empty { path: String },
}

const COLUMNS: [&str; 6] = ["time", "open", "high", "low", "close", "volume"];

/// Reads a `time,open,high,low,close,volume` CSV file (time in RFC 3339 or epoch ms).
pub fn read_csv(path: &Path) -> Result<Vec<Candle>, CandleError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CandleError::Io {
        path: name.clone(),
        source,
    })?;
    parse_csv(&text, &name)
}

/// Parses CSV text; `source` names it in errors.
pub fn parse_csv(text: &str, source: &str) -> Result<Vec<Candle>, CandleError> {
    let invalid = |line: usize, message: String| CandleError::Invalid {
        path: source.to_owned(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (header_line, header) = lines
        .by_ref()
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or_else(|| CandleError::Empty {
            path: source.to_owned(),
        })?;
    let names: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let mut index = [0usize; 6];
    for (slot, column) in index.iter_mut().zip(COLUMNS) {
        *slot = names.iter().position(|n| n == column).ok_or_else(|| {
            invalid(
                header_line,
                format!("missing column '{column}' (header is '{}')", header.trim()),
            )
        })?;
    }
    let mut candles: Vec<Candle> = Vec::with_capacity(text.len() / 48);
    for (line, raw) in lines {
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(invalid(
                line,
                format!("expected {} fields, found {}", names.len(), fields.len()),
            ));
        }
        let time_ms = parse_time(fields[index[0]]).map_err(|m| invalid(line, m))?;
        let mut values = [0.0f64; 5];
        for (k, value) in values.iter_mut().enumerate() {
            let column = COLUMNS[k + 1];
            let text = fields[index[k + 1]];
            *value = text
                .parse::<f64>()
                .map_err(|_| invalid(line, format!("{column} '{text}' is not a number")))?;
            if !value.is_finite() {
                return Err(invalid(line, format!("{column} is {text}")));
            }
        }
        let candle = Candle {
            time_ms,
            open: values[0],
            high: values[1],
            low: values[2],
            close: values[3],
            volume: values[4],
        };
        check_candle(&candle).map_err(|m| invalid(line, m))?;
        if let Some(prev) = candles.last()
            && candle.time_ms <= prev.time_ms
        {
            return Err(invalid(
                line,
                format!(
                    "time {} is not after the previous bar's {}",
                    format_time(candle.time_ms),
                    format_time(prev.time_ms)
                ),
            ));
        }
        candles.push(candle);
    }
    if candles.is_empty() {
        return Err(CandleError::Empty {
            path: source.to_owned(),
        });
    }
    Ok(candles)
}

/// The consistency rules every candle obeys.
pub fn check_candle(c: &Candle) -> Result<(), String> {
    if c.low <= 0.0 {
        return Err(format!("low {} is not positive", c.low));
    }
    if c.high < c.low {
        return Err(format!("high {} is below low {}", c.high, c.low));
    }
    for (name, v) in [("open", c.open), ("close", c.close)] {
        if v > c.high || v < c.low {
            return Err(format!(
                "{name} {v} is outside low {} .. high {}",
                c.low, c.high
            ));
        }
    }
    if c.volume < 0.0 {
        return Err(format!("volume {} is negative", c.volume));
    }
    Ok(())
}

/// RFC 3339 (`2018-01-10T04:55:00Z`) or integer epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map_err(|_| format!("time '{text}' is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("time '{text}' is neither RFC 3339 nor epoch ms"))
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

    const HEADER: &str = "time,open,high,low,close,volume\n";

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
                expect: "t.csv:2: time 'yesterday' is neither RFC 3339 nor epoch ms",
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
                expect: "t.csv:2: volume -1 is negative",
            },
        ];
        for case in cases {
            let err = parse_csv(&format!("{HEADER}{}", case.body), "t.csv").expect_err(case.body);
            assert_eq!(err.to_string(), case.expect);
        }
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
    fn timeframes_round_trip() {
        for t in Timeframe::ALL {
            assert_eq!(Timeframe::parse(t.as_str()), Some(t));
        }
        assert_eq!(Timeframe::parse("7m"), None);
    }
}
