//! freqtrade's JSON candles: `[[ms, open, high, low, close, volume], …]`,
//! read row by row as the bytes come, so memory holds a piece of candles
//! and never the text: a 300 MB file, or a small gzip of gigabytes of
//! blanks, costs what a CSV file does.

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};

use super::*;

/// Candles offered to the taker at a time.
const PIECE: usize = 1 << 16;

/// Reads freqtrade-style JSON: `[[ms, open, high, low, close, volume], …]`.
pub fn read_json(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_json_within(path, &mut |_, _| true)
}

/// `read_json`, the candles handed to `each` in pieces as they are read.
pub fn read_json_each<E: From<CandleError>>(
    path: &Path,
    mut each: impl FnMut(Vec<Candle>) -> Result<(), E>,
) -> Result<(), E> {
    in_pieces(
        |candles, _| each(candles),
        |take| read_json_within(path, take).map(|candles| (candles, Vec::new())),
    )
}

fn read_json_within(path: &Path, take: &mut Take<'_>) -> Result<Vec<Candle>, CandleError> {
    let name = path.display().to_string();
    let limit = is_gzip(path).then_some(MAX_EXPANDED_BYTES);
    let reader = std::io::BufReader::with_capacity(1 << 16, open(path)?);
    parse_rows(reader, limit, &name, take)
}

/// Parses freqtrade JSON; errors name the candle and the line it ends on.
pub fn parse_json(text: &str, source: &str) -> Result<Vec<Candle>, CandleError> {
    parse_rows(text.as_bytes(), None, source, &mut |_, _| true)
}

/// The rows of `reader` (at most `limit` bytes of it), checked as they come;
/// after every [`PIECE`] candles, and after the last, `take` may take them
/// and says whether to go on. What it leaves is returned.
fn parse_rows(
    reader: impl Read,
    limit: Option<u64>,
    source: &str,
    take: &mut Take<'_>,
) -> Result<Vec<Candle>, CandleError> {
    let at = Rc::new(At::default());
    let counted = Counted {
        inner: reader,
        at: Rc::clone(&at),
        limit,
        bom: true,
    };
    let mut rows = Rows {
        source,
        at: &at,
        take,
        candles: Vec::new(),
        count: 0,
        last: None,
        refused: None,
    };
    let mut de = serde_json::Deserializer::from_reader(counted);
    let parsed = (&mut rows).deserialize(&mut de).and_then(|()| de.end());
    if let Some(refused) = rows.refused.take() {
        return Err(refused);
    }
    if let Err(e) = parsed {
        if e.is_io() {
            return Err(CandleError::Io {
                path: source.to_owned(),
                error: std::io::Error::from(e),
            });
        }
        return Err(CandleError::Invalid {
            path: source.to_owned(),
            line: e.line().max(1),
            message: format!(
                "not a JSON list of [ms, open, high, low, close, volume] rows: {}",
                shown::message(&e.to_string())
            ),
        });
    }
    if rows.count == 0 {
        return Err(CandleError::Empty {
            path: source.to_owned(),
        });
    }
    if !rows.candles.is_empty() {
        (rows.take)(&mut rows.candles, &mut Vec::new());
    }
    Ok(rows.candles)
}

/// Where the parser is: the line, the bytes read, and where the row being
/// read started.
#[derive(Debug)]
struct At {
    line: Cell<usize>,
    read: Cell<u64>,
    row_start: Cell<u64>,
}

impl Default for At {
    fn default() -> At {
        At {
            line: Cell::new(1),
            read: Cell::new(0),
            row_start: Cell::new(0),
        }
    }
}

/// The bytes read, counting lines as they pass (the parser reads one byte
/// at a time, so the count is where it is); refused past `limit`, or when
/// one row runs past [`MAX_LINE_BYTES`] (a candle is a few dozen bytes: a
/// megabyte is not one, and would be held whole). A byte-order mark at the
/// start is passed over.
struct Counted<R> {
    inner: R,
    at: Rc<At>,
    limit: Option<u64>,
    /// Still at the start, where a byte-order mark may be.
    bom: bool,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = self.inner.read(buf)?;
        if std::mem::take(&mut self.bom) && n > 0 && buf[0] == 0xEF {
            let mut mark = [0u8; 2];
            self.inner.read_exact(&mut mark)?;
            if mark != [0xBB, 0xBF] {
                return Err(std::io::Error::other("starts with a stray byte 0xEF"));
            }
            n = self.inner.read(buf)?;
        }
        let at = &self.at;
        let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
        at.line.set(at.line.get() + newlines);
        at.read.set(at.read.get() + n as u64);
        if let Some(limit) = self.limit.filter(|&l| at.read.get() > l) {
            return Err(std::io::Error::other(match limit >> 30 {
                0 => format!("expands to more than {limit} bytes"),
                gib => format!("expands to more than {gib} GiB"),
            }));
        }
        if at.read.get() - at.row_start.get() > MAX_LINE_BYTES as u64 {
            return Err(std::io::Error::other(format!(
                "more than {} KiB without a whole candle at line {}",
                MAX_LINE_BYTES >> 10,
                at.line.get()
            )));
        }
        Ok(n)
    }
}

/// The outer list, row by row.
struct Rows<'a, 'b> {
    source: &'a str,
    at: &'a At,
    take: &'a mut Take<'b>,
    candles: Vec<Candle>,
    /// Rows read so far.
    count: usize,
    /// The time of the last candle read (taken or not).
    last: Option<i64>,
    /// Why a row was refused (the parser is stopped with a bare error).
    refused: Option<CandleError>,
}

impl<'de> DeserializeSeed<'de> for &mut Rows<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for &mut Rows<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of [ms, open, high, low, close, volume] rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.at.row_start.set(self.at.read.get());
            let Some(row) = seq.next_element::<Vec<serde_json::Value>>()? else {
                break;
            };
            self.count += 1;
            let checked =
                candle_of(&row).and_then(|(time_ms, values)| checked(self.last, time_ms, values));
            let candle = match checked {
                Ok(candle) => candle,
                Err(message) => {
                    self.refused = Some(CandleError::Invalid {
                        path: self.source.to_owned(),
                        line: self.at.line.get(),
                        message: format!("candle {}: {message}", self.count),
                    });
                    return Err(A::Error::custom("refused"));
                }
            };
            self.last = Some(candle.time_ms);
            self.candles.push(candle);
            if self.candles.len() >= PIECE && !(self.take)(&mut self.candles, &mut Vec::new()) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A row's time and its five values, or why they are not a candle's.
fn candle_of(row: &[serde_json::Value]) -> Result<(i64, [f64; 5]), String> {
    if row.len() != 6 {
        return Err(format!("has {} values, expected 6", row.len()));
    }
    let time_ms = match (row[0].as_i64(), row[0].as_f64()) {
        (Some(t), _) => t,
        (None, Some(t)) if t.fract() == 0.0 => {
            // Checked before the cast, which would clamp it.
            let (first, last) = CANDLE_TIME_MS;
            if !(first as f64..=last as f64).contains(&t) {
                return Err(time_outside(&format!("{} ms", number(t))));
            }
            t as i64
        }
        _ => {
            return Err(format!(
                "time {} is not whole epoch milliseconds",
                shown::text(&row[0].to_string())
            ));
        }
    };
    // Ten digits are epoch seconds (2001 to 2286); as milliseconds they
    // would be a few weeks of January 1970, when nothing traded.
    if (1_000_000_000..10_000_000_000).contains(&time_ms) {
        return Err(format!(
            "time {time_ms} looks like epoch seconds; freqtrade JSON gives milliseconds"
        ));
    }
    let mut values = [0.0f64; 5];
    for (k, value) in values.iter_mut().enumerate() {
        let column = COLUMNS[k + 1];
        *value = row[k + 1]
            .as_f64()
            .or_else(|| row[k + 1].as_str().and_then(|s| s.parse().ok()))
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                format!(
                    "{column} {} is not a finite number",
                    shown::text(&row[k + 1].to_string())
                )
            })?;
    }
    Ok((time_ms, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_in_pieces_and_blanks_past_the_limit_are_refused() {
        const START: i64 = 1_704_067_200_000;
        let time = |i: usize| START + i as i64 * 60_000;
        let mut text = String::from("[\n");
        for i in 0..(2 * PIECE + 10) {
            text.push_str(&format!("[{}, 1, 2, 0.5, 1.5, 10],\n", time(i)));
        }
        text.push_str(&format!("[{}, 1, 2, 0.5, 1.5, 10]\n]", time(3 * PIECE)));
        let mut pieces = Vec::new();
        let rest = parse_rows(text.as_bytes(), None, "t.json", &mut |c, _| {
            pieces.push(std::mem::take(c));
            true
        })
        .expect("valid");
        assert_eq!(
            pieces.len(),
            3,
            "offered every {PIECE} candles and the last"
        );
        assert!(pieces[..2].iter().all(|p| p.len() == PIECE));
        assert_eq!(pieces[2].len(), 11);
        assert_eq!(pieces[2][10].time_ms, time(3 * PIECE));
        assert!(rest.is_empty());

        // A bad row far down names its candle and line.
        let bad = text.replacen(
            &format!("[{}, 1, 2, 0.5", time(1)),
            &format!("[{}, 1, 0.1, 0.5", time(1)),
            1,
        );
        let err = parse_rows(bad.as_bytes(), None, "t.json", &mut |_, _| true).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "t.json:3: candle 2: high 0.1 is below low 0.5"
        );
        let late = text.replacen(
            &format!("[{}, 1, 2, 0.5", time(2 * PIECE)),
            "[5, 1, 2, 0.5",
            1,
        );
        let err = parse_rows(late.as_bytes(), None, "t.json", &mut |_, _| true).expect_err("late");
        assert!(
            err.to_string().starts_with(&format!(
                "t.json:{}: candle {}: time",
                2 * PIECE + 2,
                2 * PIECE + 1
            )),
            "{err}"
        );

        // Epoch seconds, even in a file of one row.
        let err = parse_rows(
            &b"[[1704067200, 1, 2, 0.5, 1.5, 10]]"[..],
            None,
            "s.json",
            &mut |_, _| true,
        )
        .expect_err("seconds");
        assert_eq!(
            err.to_string(),
            "s.json:1: candle 1: time 1704067200 looks like epoch seconds; freqtrade JSON gives milliseconds"
        );

        // A byte-order mark first is passed over; a megabyte-long row is
        // not a candle, and is not held.
        let marked = format!("\u{feff}{text}");
        let read = parse_rows(marked.as_bytes(), None, "t.json", &mut |_, _| true).expect("marked");
        assert_eq!(read.len(), 2 * PIECE + 11);
        let long = format!(
            "[[{}, 1, 2, 0.5, 1.5, \"{}\"]]",
            time(0),
            "9".repeat(2 << 20)
        );
        let err = parse_rows(long.as_bytes(), None, "l.json", &mut |_, _| true).expect_err("long");
        assert_eq!(
            err.to_string(),
            "l.json: cannot read: more than 1024 KiB without a whole candle at line 1"
        );

        // So are more than a megabyte of blanks between two rows: said
        // without calling them a candle.
        let spaced = format!(
            "[[{}, 1, 2, 0.5, 1.5, 10],{}[{}, 1, 2, 0.5, 1.5, 10]]",
            time(0),
            " ".repeat(2 << 20),
            time(1)
        );
        let err =
            parse_rows(spaced.as_bytes(), None, "b.json", &mut |_, _| true).expect_err("blanks");
        assert_eq!(
            err.to_string(),
            "b.json: cannot read: more than 1024 KiB without a whole candle at line 1"
        );

        // Every number is the double its decimal names, as CSV's are: the
        // nearest, not one a step away.
        let exact = "[[1704067200000,100.43150985228927,100.43150985228927,\
                     100.43150985228927,100.43150985228927,2.2250738585072011e-308]]";
        let read = parse_rows(exact.as_bytes(), None, "x.json", &mut |_, _| true).expect("exact");
        let price: f64 = "100.43150985228927".parse().expect("a number");
        assert_eq!(read[0].open.to_bits(), price.to_bits());
        let tiny: f64 = "2.2250738585072011e-308".parse().expect("a number");
        assert_eq!(read[0].volume.to_bits(), tiny.to_bits());

        // Blanks past the limit stop the read there, whatever follows.
        let blanks = format!("[{}]", " ".repeat(100_000));
        let err = parse_rows(blanks.as_bytes(), Some(1000), "t.json.gz", &mut |_, _| true)
            .expect_err("too long");
        assert_eq!(
            err.to_string(),
            "t.json.gz: cannot read: expands to more than 1000 bytes"
        );
    }
}
