//! Candle CSV: `time,open,high,low,close,volume` and the other common
//! layouts (`layout`), read whole or as a stream, and written.

use std::path::Path;

use super::*;

/// Reads a candle CSV file in any layout `layout` recognises.
pub fn read_csv(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_with(path, parse_csv)
}

/// Parses CSV text; `source` names it in errors.
pub fn parse_csv(text: &str, source: &str) -> Result<Vec<Candle>, CandleError> {
    parse_csv_columns(text, source, &Columns::default())
}

/// Parses CSV text whose columns the user named (for the roles named).
pub fn parse_csv_columns(
    text: &str,
    source: &str,
    columns: &Columns,
) -> Result<Vec<Candle>, CandleError> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let mut reader = CsvCandles::with_columns(lines, source, columns)?;
    let mut candles: Vec<Candle> = Vec::with_capacity(text.len() / 48);
    for candle in reader.by_ref() {
        candles.push(candle?);
    }
    if candles.is_empty() {
        return Err(CandleError::Empty {
            path: source.to_owned(),
        });
    }
    Ok(candles)
}

/// Candles read from CSV lines one at a time (a live or replayed feed does
/// not hold its file). Each is checked as it is read, times included; the
/// first bad line ends the stream with `source:line: what`.
pub struct CsvCandles<L> {
    lines: L,
    source: String,
    line: usize,
    columns: usize,
    index: [usize; 6],
    last_ms: Option<i64>,
    failed: bool,
    /// A file without a header: its first row, read with the header's line.
    pending: Option<String>,
}

impl<L> std::fmt::Debug for CsvCandles<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvCandles")
            .field("source", &self.source)
            .field("line", &self.line)
            .finish()
    }
}

impl<L: Iterator<Item = std::io::Result<String>>> CsvCandles<L> {
    /// Reads the header; `source` names the input in errors.
    pub fn new(lines: L, source: &str) -> Result<CsvCandles<L>, CandleError> {
        CsvCandles::with_columns(lines, source, &Columns::default())
    }

    /// Reads the header, finding the columns `columns` names by their names.
    pub fn with_columns(
        mut lines: L,
        source: &str,
        columns: &Columns,
    ) -> Result<CsvCandles<L>, CandleError> {
        let mut line = 0;
        let header = loop {
            line += 1;
            match lines.next() {
                None => {
                    return Err(CandleError::Empty {
                        path: source.to_owned(),
                    });
                }
                Some(Err(e)) => {
                    return Err(CandleError::Io {
                        path: source.to_owned(),
                        error: e,
                    });
                }
                Some(Ok(l)) if l.trim().is_empty() => continue,
                Some(Ok(l)) => break l,
            }
        };
        let invalid = |message| CandleError::Invalid {
            path: source.to_owned(),
            line,
            message,
        };
        let width = header.split(',').count();
        let (index, pending) = match layout::header(&header, columns).map_err(invalid)? {
            layout::Header::Named(index) => (index, None),
            layout::Header::Headerless => ([0, 1, 2, 3, 4, 5], Some(header)),
        };
        Ok(CsvCandles {
            lines,
            source: source.to_owned(),
            line: line - usize::from(pending.is_some()),
            columns: width,
            index,
            last_ms: None,
            failed: false,
            pending,
        })
    }

    fn parse(&self, raw: &str) -> Result<Candle, String> {
        let fields: Vec<&str> = raw.split(',').map(layout::field).collect();
        if fields.len() != self.columns {
            return Err(format!(
                "expected {} fields, found {}",
                self.columns,
                fields.len()
            ));
        }
        let time_ms = parse_time(fields[self.index[0]])?;
        let mut values = [0.0f64; 5];
        for (k, value) in values.iter_mut().enumerate() {
            let column = COLUMNS[k + 1];
            let text = fields[self.index[k + 1]];
            *value = text
                .parse::<f64>()
                .map_err(|_| format!("{column} '{}' is not a number", shown::text(text)))?;
            if !value.is_finite() {
                return Err(format!("{column} is {}", shown::text(text)));
            }
        }
        checked(self.last_ms, time_ms, values)
    }
}

impl<L: Iterator<Item = std::io::Result<String>>> Iterator for CsvCandles<L> {
    type Item = Result<Candle, CandleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.line += 1;
            let next = match self.pending.take() {
                Some(first) => Some(Ok(first)),
                None => self.lines.next(),
            };
            let raw = match next? {
                Ok(raw) => raw,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(CandleError::Io {
                        path: self.source.clone(),
                        error: e,
                    }));
                }
            };
            if raw.trim().is_empty() {
                continue;
            }
            return Some(match self.parse(&raw) {
                Ok(candle) => {
                    self.last_ms = Some(candle.time_ms);
                    Ok(candle)
                }
                Err(message) => {
                    self.failed = true;
                    Err(CandleError::Invalid {
                        path: self.source.clone(),
                        line: self.line,
                        message,
                    })
                }
            });
        }
    }
}

/// Writes candles as `time,open,high,low,close,volume` CSV with RFC 3339 times.
pub fn write_csv(path: &Path, candles: &[Candle]) -> Result<(), CandleError> {
    let name = path.display().to_string();
    let refused = |why: &str| CandleError::Write {
        path: name.clone(),
        error: std::io::Error::other(why.to_owned()),
    };
    // Only a regular file is replaced: never a device, a directory or a
    // pipe (the name may be /dev/null).
    let existing = std::fs::metadata(path).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        return Err(refused("not a regular file"));
    }
    // A link is written through: its target is the file replaced.
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if is_link {
        std::fs::canonicalize(path).map_err(|error| CandleError::Write {
            path: name.clone(),
            error,
        })?
    } else {
        path.to_path_buf()
    };
    // Written beside it and renamed over it once whole: a crash or a full
    // disk never leaves half a file under the name.
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    let partial = target.with_file_name(format!(".{}.partial", file_name.unwrap_or_default()));
    let written = (|| {
        let file = std::fs::File::create(&partial)?;
        // A file replaced keeps who may read it.
        if let Some(m) = &existing {
            file.set_permissions(m.permissions())?;
        }
        let file = if super::is_gzip(path) {
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            write_rows(gz, candles)?.finish()?
        } else {
            write_rows(file, candles)?
        };
        file.sync_all()?;
        std::fs::rename(&partial, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.map_err(|error| CandleError::Write { path: name, error })
}

/// The header and a line per candle into `out`, handed back flushed.
pub fn write_rows<W: std::io::Write>(out: W, candles: &[Candle]) -> std::io::Result<W> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "time,open,high,low,close,volume")?;
    for c in candles {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            format_time(c.time_ms),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume
        )?;
    }
    out.into_inner().map_err(|e| e.into_error())
}
