//! freqtrade's JSON candles: `[[ms, open, high, low, close, volume], …]`.

use std::path::Path;

use super::*;

/// Reads freqtrade-style JSON: `[[ms, open, high, low, close, volume], …]`.
pub fn read_json(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_with(path, parse_json)
}

/// Parses freqtrade JSON; errors name the line where the bad candle starts.
pub fn parse_json(text: &str, source: &str) -> Result<Vec<Candle>, CandleError> {
    let invalid = |line: usize, message: String| CandleError::Invalid {
        path: source.to_owned(),
        line,
        message,
    };
    let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(text).map_err(|e| {
        invalid(
            e.line().max(1),
            format!(
                "not a JSON list of [ms, open, high, low, close, volume] rows: {}",
                shown::message(&e.to_string())
            ),
        )
    })?;
    let lines = row_lines(text);
    let mut candles: Vec<Candle> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(1);
        if row.len() != 6 {
            return Err(invalid(
                line,
                format!("candle {} has {} values, expected 6", i + 1, row.len()),
            ));
        }
        let time_ms = match (row[0].as_i64(), row[0].as_f64()) {
            (Some(t), _) => t,
            (None, Some(t)) if t.fract() == 0.0 => {
                // Checked before the cast, which would clamp it.
                let (first, last) = CANDLE_TIME_MS;
                if !(first as f64..=last as f64).contains(&t) {
                    return Err(invalid(line, time_outside(&number(t).to_string())));
                }
                t as i64
            }
            _ => {
                return Err(invalid(
                    line,
                    format!(
                        "time {} is not whole epoch milliseconds",
                        shown::text(&row[0].to_string())
                    ),
                ));
            }
        };
        let mut values = [0.0f64; 5];
        for (k, value) in values.iter_mut().enumerate() {
            let column = COLUMNS[k + 1];
            *value = row[k + 1]
                .as_f64()
                .or_else(|| row[k + 1].as_str().and_then(|s| s.parse().ok()))
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    invalid(
                        line,
                        format!(
                            "{column} {} is not a finite number",
                            shown::text(&row[k + 1].to_string())
                        ),
                    )
                })?;
        }
        push_checked(&mut candles, time_ms, values).map_err(|m| invalid(line, m))?;
    }
    if candles.is_empty() {
        return Err(CandleError::Empty {
            path: source.to_owned(),
        });
    }
    Ok(candles)
}

/// The line on which each row (a `[` at depth 2) of a JSON array of arrays starts.
fn row_lines(text: &str) -> Vec<usize> {
    let (mut depth, mut line, mut in_string, mut escaped) = (0usize, 1usize, false, false);
    let mut lines = Vec::new();
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            if b == b'\n' {
                line += 1;
            }
            continue;
        }
        match b {
            b'\n' => line += 1,
            b'"' => in_string = true,
            b'[' => {
                depth += 1;
                if depth == 2 {
                    lines.push(line);
                }
            }
            b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    lines
}
