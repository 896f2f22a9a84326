//! Candle CSV: `time,open,high,low,close,volume` and the other common
//! layouts (`layout`), read whole or as a stream, and written.
//!
//! A file is read in blocks of complete lines, never held whole: memory is
//! the candles (48 bytes each) and one block. A line longer than
//! [`MAX_LINE_BYTES`] is refused, not buffered.

use std::io::Read;
use std::path::Path;

use super::*;

/// The longest line a candle CSV may have: a row of even many columns is a
/// few hundred bytes, so anything longer is not candles.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How much of a file is read at once.
const BLOCK_BYTES: usize = 4 << 20;

/// Reads a candle CSV file in any layout `layout` recognises
/// (gzip-compressed when it ends in `.gz`).
pub fn read_csv(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_csv_columns(path, &Columns::default())
}

/// `read_csv`, the columns for the roles `columns` names found by those
/// names.
pub fn read_csv_columns(path: &Path, columns: &Columns) -> Result<Vec<Candle>, CandleError> {
    read_csv_marked(path, columns).map(|(candles, _)| candles)
}

/// `read_csv_columns`, and the times of the bars a column `partial`
/// marks (see [`read_file_marked`]).
pub(super) fn read_csv_marked(path: &Path, columns: &Columns) -> Result<Marked, CandleError> {
    read_within(path, columns, true, &mut |_, _| true)
}

/// `read_csv_columns`, the candles of each block (some 4 MB of the file)
/// handed to `each` as they are read, never held whole; the first error
/// of `each` ends the read and is returned.
pub fn read_csv_each<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    mut each: impl FnMut(Vec<Candle>) -> Result<(), E>,
) -> Result<(), E> {
    read_csv_each_marked(path, columns, |candles, _| each(candles))
}

/// [`read_csv_each`], each piece with the times of its marked bars.
pub(super) fn read_csv_each_marked<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    each: impl FnMut(Vec<Candle>, Vec<i64>) -> Result<(), E>,
) -> Result<(), E> {
    in_pieces(each, |take| read_within(path, columns, false, take))
}

/// The file's candles, read block by block; after each block `each` is
/// given the candles read and not yet taken, takes them or leaves them,
/// and says whether to go on. `whole_file`: the candles are left to the
/// end, so room for them all is made at once.
fn read_within(
    path: &Path,
    columns: &Columns,
    whole_file: bool,
    each: &mut Take<'_>,
) -> Result<Marked, CandleError> {
    let name = path.display().to_string();
    let io = |error| CandleError::Io {
        path: name.clone(),
        error,
    };
    let mut reader = open(path)?;
    let gzip = is_gzip(path);
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + MAX_LINE_BYTES);
    let mut rows = Lines::new(&name, columns);
    let mut candles: Vec<Candle> = Vec::new();
    let mut marks: Vec<i64> = Vec::new();
    let (mut read, mut any): (u64, bool) = (0, false);
    loop {
        let start = block.len();
        block.resize(start + BLOCK_BYTES, 0);
        let n = loop {
            match reader.read(&mut block[start..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(io)?,
            }
        };
        block.truncate(start + n);
        read += n as u64;
        if gzip && read > MAX_EXPANDED_BYTES {
            return Err(io(std::io::Error::other(format!(
                "expands to more than {} GiB",
                MAX_EXPANDED_BYTES >> 30
            ))));
        }
        // A file of another kind named as a CSV: said what it is.
        if read == n as u64
            && let Some(what) = what_file_is(&block, gzip)
        {
            return Err(rows.invalid(1, what.into()));
        }
        let end = n == 0;
        // Complete lines only; the rest waits for the next block.
        let whole = if end {
            block.len()
        } else {
            match block.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if block.len() > MAX_LINE_BYTES => {
                    return Err(rows.invalid(rows.line + 1, long_line(&block)));
                }
                None => continue,
            }
        };
        let text = std::str::from_utf8(&block[..whole]).map_err(|e| {
            let line = rows.line
                + 1
                + block[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
            rows.invalid(
                line,
                "not UTF-8 text (a compressed file? name it .csv.gz)".into(),
            )
        })?;
        if whole_file && candles.capacity() == 0 && !gzip && whole > 0 {
            // As many as the first block promises for the whole file, so
            // that the candles are not copied as they grow.
            let per_line = whole / text.lines().count().max(1);
            candles.reserve((size as usize / per_line.max(1)).saturating_add(16));
        }
        let before = candles.len();
        rows.block(text, &mut candles)?;
        marks.append(&mut rows.marks);
        any |= candles.len() > before;
        block.drain(..whole);
        if !each(&mut candles, &mut marks) {
            return Ok(Marked::default());
        }
        if end {
            break;
        }
    }
    if !any {
        return Err(CandleError::Empty { path: name });
    }
    Ok((candles, marks))
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
    let mut rows = Lines::new(source, columns);
    let mut candles: Vec<Candle> = Vec::with_capacity(text.len() / 48);
    for raw in text.lines() {
        if let Some(candle) = rows.row(raw)? {
            candles.push(candle);
        }
    }
    if candles.is_empty() {
        return Err(CandleError::Empty {
            path: source.to_owned(),
        });
    }
    Ok(candles)
}

/// A CSV read line by line: the header (or its absence) first, then a
/// candle per row, each checked, times included.
struct Lines<'c> {
    source: String,
    columns: &'c Columns,
    /// The line last read (1 for the first).
    line: usize,
    layout: Option<Layout>,
    /// Rows of a header of several still to pass over (yfinance's).
    header_rows: u8,
    /// The times of the rows read that the file marks partial, until taken.
    marks: Vec<i64>,
}

/// What the header said: how many fields a row has, where each role sits.
#[derive(Clone, Copy)]
struct Layout {
    width: usize,
    /// The file has no header: every field is a number or nothing.
    headerless: bool,
    index: [usize; 6],
    last_ms: Option<i64>,
    /// The digits of the first epoch time: its unit (seconds, ms, µs or
    /// ns) is every row's.
    epoch_digits: Option<usize>,
    /// Times at local midnight are their dates (`Columns::with_dates`).
    dates: bool,
    /// Where the column that marks partial bars sits, if the file has one.
    partial: Option<usize>,
}

impl<'c> Lines<'c> {
    fn new(source: &str, columns: &'c Columns) -> Lines<'c> {
        Lines {
            source: source.to_owned(),
            columns,
            line: 0,
            layout: None,
            header_rows: 0,
            marks: Vec::new(),
        }
    }

    /// These lines once their header is read: the columns were looked at
    /// only to read it (the layout holds where each role sits).
    fn past_header(self) -> Lines<'static> {
        Lines {
            source: self.source,
            columns: &USUAL,
            line: self.line,
            layout: self.layout,
            header_rows: self.header_rows,
            marks: self.marks,
        }
    }

    /// The lines of `text` (whole lines) into `out`: once the header is
    /// read, a large block in two halves on two threads, the second
    /// checked against the first where they meet.
    fn block(&mut self, text: &str, out: &mut Vec<Candle>) -> Result<(), CandleError> {
        let two = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
        let half = text.len() / 2;
        let cut = text.as_bytes()[half..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| half + i + 1);
        let (Some(layout), Some(cut), true) = (&self.layout, cut, two && text.len() >= 1 << 20)
        else {
            return self.lines(text, out);
        };
        let (first, second) = text.split_at(cut);
        // The second half counts its lines from 0: they follow the first
        // half's once both are read. A line it names in an error would be
        // wrong, so its errors are never said: that half is read again
        // after the first, whose count is then known.
        let mut rest = Lines {
            source: self.source.clone(),
            columns: self.columns,
            line: 0,
            layout: Some(Layout {
                last_ms: None,
                ..*layout
            }),
            // Only rows right after the header are header rows.
            header_rows: 0,
            marks: Vec::new(),
        };
        let mut later = Vec::with_capacity(second.len() / 48);
        let (done, rest_done) = std::thread::scope(|s| {
            let other = s.spawn(|| rest.lines(second, &mut later));
            let done = self.lines(first, out);
            (done, other.join())
        });
        done?;
        let joined =
            rest_done.map_err(|_| self.invalid(self.line + 1, "the reader failed".into()))?;
        let last_ms = self.layout.as_ref().and_then(|l| l.last_ms);
        match (joined, later.first()) {
            // In order where the halves meet: kept as read.
            (Ok(()), Some(next)) if last_ms.is_none_or(|last| next.time_ms > last) => {
                out.append(&mut later);
                self.marks.append(&mut rest.marks);
                self.line += rest.line;
                self.layout = rest.layout;
                Ok(())
            }
            (Ok(()), None) => {
                self.line += rest.line;
                Ok(())
            }
            // Read again after the first half, for the error its own line gives.
            _ => self.lines(second, out),
        }
    }

    /// The lines of `text`, one after another, into `out`.
    fn lines(&mut self, text: &str, out: &mut Vec<Candle>) -> Result<(), CandleError> {
        for raw in text.lines() {
            if raw.len() > MAX_LINE_BYTES {
                return Err(self.invalid(self.line + 1, long_line(raw.as_bytes())));
            }
            if let Some(candle) = self.row(raw)? {
                out.push(candle);
            }
        }
        Ok(())
    }

    fn invalid(&self, line: usize, message: String) -> CandleError {
        CandleError::Invalid {
            path: self.source.clone(),
            line,
            message,
        }
    }

    /// The next line: a candle, or nothing (a blank line, the header).
    fn row(&mut self, mut raw: &str) -> Result<Option<Candle>, CandleError> {
        self.line += 1;
        if raw.trim().is_empty() {
            return Ok(None);
        }
        let layout = match &mut self.layout {
            Some(layout) => layout,
            None => {
                // A byte-order mark before the first line, header or row.
                raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
                let header =
                    layout::header(raw, self.columns).map_err(|m| self.invalid(self.line, m))?;
                let (index, data) = match header {
                    layout::Header::Named(index) => (index, false),
                    layout::Header::Headerless => ([0, 1, 2, 3, 4, 5], true),
                    layout::Header::Yfinance(index) => {
                        self.header_rows = 2;
                        (index, false)
                    }
                };
                let names: Vec<String> = (layout::fields_of(raw).iter())
                    .map(|f| layout::name_of(f).trim().to_owned())
                    .collect();
                let partial = match data {
                    true => None,
                    false => {
                        layout::partial_column(&names, &index, self.columns).map_err(|why| {
                            let header = shown::text(raw.trim());
                            self.invalid(self.line, format!("{why} (header is '{header}')"))
                        })?
                    }
                };
                let layout = self.layout.insert(Layout {
                    width: names.len(),
                    headerless: data,
                    index,
                    last_ms: None,
                    epoch_digits: None,
                    dates: self.columns.dates(),
                    partial,
                });
                if !data {
                    return Ok(None);
                }
                layout
            }
        };
        if self.header_rows > 0 {
            self.header_rows -= 1;
            let fields = layout::fields_of(raw);
            let first = fields.first().map(|f| layout::field(f));
            if first.is_some_and(|f| f.eq_ignore_ascii_case("ticker")) {
                // One ticker's prices, or a guess which is whose.
                let mut tickers: Vec<&str> = Vec::new();
                for t in fields[1..].iter().map(|f| layout::field(f)) {
                    if !t.is_empty() && !tickers.contains(&t) {
                        tickers.push(t);
                    }
                }
                if tickers.len() > 1 {
                    let listed = tickers.join(", ");
                    return Err(self.invalid(
                        self.line,
                        format!(
                            "the tickers' row names several ({}); save one ticker's",
                            shown::text(&listed)
                        ),
                    ));
                }
                return Ok(None);
            }
            let label = ["date", "datetime"];
            if first.is_some_and(|f| label.iter().any(|l| f.eq_ignore_ascii_case(l))) {
                return Ok(None);
            }
            self.header_rows = 0;
        }
        match layout.parse(raw) {
            Ok((candle, partial)) => {
                layout.last_ms = Some(candle.time_ms);
                if partial {
                    self.marks.push(candle.time_ms);
                }
                Ok(Some(candle))
            }
            Err(message) => Err(self.invalid(self.line, message)),
        }
    }
}

impl Layout {
    /// A row's candle, and whether the file marks it partial.
    fn parse<'a>(&mut self, raw: &'a str) -> Result<(Candle, bool), String> {
        // The fields, without a vector per row: a row wider than this is
        // still read, field by field.
        let mut fields = [""; 16];
        let mut count = 0;
        let mut put = |f: &'a str| {
            if let Some(slot) = fields.get_mut(count) {
                *slot = layout::field(f);
            }
            count += 1;
        };
        if !layout::split_fields(raw, &mut put) {
            return Err(layout::OPEN_QUOTE.to_owned());
        }
        if count != self.width {
            // Rows joined by a carriage return alone read as one.
            if layout::joined_by_carriage_returns(raw) {
                return Err(layout::CARRIAGE_RETURNS.to_owned());
            }
            return Err(format!("expected {} fields, found {count}", self.width));
        }
        let field_at = |i: usize| -> &str {
            match fields.get(i) {
                Some(f) => f,
                None => layout::fields_of(raw)
                    .get(i)
                    .map_or("", |f| layout::field(f)),
            }
        };
        // Past the six of a row without a header (Binance's klines have
        // twelve): numbers, or nothing.
        // (A row wider than the array is split once, not once a field.)
        if self.headerless && count > 6 {
            let wide: Vec<&str>;
            let rest: &[&str] = match count <= fields.len() {
                true => &fields[6..count],
                false => {
                    wide = layout::fields_of(raw)
                        .into_iter()
                        .map(layout::field)
                        .collect();
                    &wide[6..]
                }
            };
            let odd = rest.iter().position(|f| !layout::is_extra(f));
            if let Some(at) = odd {
                return Err(format!(
                    "field {} '{}' is not a number: a file without a header holds numbers alone",
                    at + 7,
                    shown::text(rest[at])
                ));
            }
        }
        let field = |k: usize| field_at(self.index[k]);
        let time = field(0);
        if !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit()) {
            match *self.epoch_digits.get_or_insert(time.len()) {
                first if first != time.len() => {
                    return Err(format!(
                        "time '{}' has {} digits where the first row's has {first}: \
                         a file's epoch times are in one unit",
                        shown::text(time),
                        time.len()
                    ));
                }
                _ => {}
            }
        }
        let date_ms = self.dates.then(|| layout::local_midnight_date_ms(time));
        let time_ms = match date_ms.flatten() {
            Some(date_ms) => date_ms,
            None => parse_time(time)?,
        };
        // Said as the file writes it, not in ms.
        if !(CANDLE_TIME_MS.0..=CANDLE_TIME_MS.1).contains(&time_ms) {
            return Err(super::time_outside(&format!("'{}'", shown::text(time))));
        }
        let mut values = [0.0f64; 5];
        for (k, value) in values.iter_mut().enumerate() {
            let column = COLUMNS[k + 1];
            let text = field(k + 1);
            *value = text
                .parse::<f64>()
                .map_err(|_| format!("{column} '{}' is not a number", shown::text(text)))?;
            if !value.is_finite() {
                return Err(format!("{column} is {}", shown::text(text)));
            }
        }
        let partial = match self.partial {
            Some(i) => layout::partial_mark(field_at(i))?,
            None => false,
        };
        checked(self.last_ms, time_ms, values).map(|candle| (candle, partial))
    }
}

/// Candles read from CSV lines one at a time (a live or replayed feed does
/// not hold its file). Each is checked as it is read, times included; the
/// first bad line ends the stream with `source:line: what`.
pub struct CsvCandles<L> {
    lines: L,
    rows: Lines<'static>,
    failed: bool,
    /// A file without a header: its first row, read with the header's line.
    first: Option<Candle>,
}

impl<L> std::fmt::Debug for CsvCandles<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvCandles")
            .field("source", &self.rows.source)
            .field("line", &self.rows.line)
            .finish()
    }
}

/// The columns of a stream: found by their usual names.
static USUAL: std::sync::LazyLock<Columns> = std::sync::LazyLock::new(Columns::default);

impl<L: Iterator<Item = std::io::Result<String>>> CsvCandles<L> {
    /// Reads the header; `source` names the input in errors.
    pub fn new(lines: L, source: &str) -> Result<CsvCandles<L>, CandleError> {
        CsvCandles::with_columns(lines, source, &USUAL)
    }

    /// `new`, with the columns for the roles `columns` names found by those
    /// names (`--columns`).
    pub fn with_columns(
        mut lines: L,
        source: &str,
        columns: &Columns,
    ) -> Result<CsvCandles<L>, CandleError> {
        let mut rows = Lines::new(source, columns);
        let mut first = None;
        while rows.layout.is_none() {
            let line = match lines.next() {
                None => {
                    return Err(CandleError::Empty {
                        path: source.to_owned(),
                    });
                }
                Some(line) => line.map_err(|error| CandleError::Io {
                    path: source.to_owned(),
                    error,
                })?,
            };
            first = rows.row(&line)?;
        }
        Ok(CsvCandles {
            lines,
            rows: rows.past_header(),
            failed: false,
            first,
        })
    }
}

impl<L: Iterator<Item = std::io::Result<String>>> Iterator for CsvCandles<L> {
    type Item = Result<Candle, CandleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(candle) = self.first.take() {
            return Some(Ok(candle));
        }
        if self.failed {
            return None;
        }
        loop {
            let raw = match self.lines.next()? {
                Ok(raw) => raw,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(CandleError::Io {
                        path: self.rows.source.clone(),
                        error,
                    }));
                }
            };
            let row = self.rows.row(&raw);
            // A feed has no use for marks: none are kept.
            self.rows.marks.clear();
            match row {
                Ok(Some(candle)) => return Some(Ok(candle)),
                Ok(None) => continue,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Writes candles as `time,open,high,low,close,volume` CSV with RFC 3339
/// times (gzip-compressed when the name ends in `.gz`), replacing `path`
/// whole (`replace::replace_file`).
pub fn write_csv(path: &Path, candles: &[Candle]) -> Result<(), CandleError> {
    replace::replace_file(path, |file| {
        if super::is_gzip(path) {
            let gz = flate2::write::GzEncoder::new(file, super::GZIP_LEVEL);
            write_rows(gz, candles)?.finish()
        } else {
            write_rows(file, candles)
        }
    })
}

/// The header and a line per candle into `out`, handed back flushed.
pub fn write_rows<W: std::io::Write>(out: W, candles: &[Candle]) -> std::io::Result<W> {
    let mut rows = CsvRows::new(out, false)?;
    rows.write(candles, &[])?;
    rows.finish()
}

/// CSV in Keel's own layout being written, piece by piece: the header
/// first, then a line per candle; when `marked`, a last column `partial`
/// says `true` or `false` of each bar (an aggregated series: see
/// [`resample`](super::resample)).
#[derive(Debug)]
pub struct CsvRows<W: std::io::Write> {
    out: std::io::BufWriter<W>,
    marked: bool,
}

impl<W: std::io::Write> CsvRows<W> {
    pub fn new(out: W, marked: bool) -> std::io::Result<CsvRows<W>> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(out);
        let mark = if marked { ",partial" } else { "" };
        writeln!(out, "time,open,high,low,close,volume{mark}")?;
        Ok(CsvRows { out, marked })
    }

    /// The next candles, each number in its shortest exact form, and
    /// whether each is partial when the file marks them (see
    /// [`marks_fit`](super::marks_fit)).
    pub fn write(&mut self, candles: &[Candle], partial: &[bool]) -> std::io::Result<()> {
        use std::io::Write;
        super::marks_fit(self.marked, candles, partial)?;
        for (i, c) in candles.iter().enumerate() {
            write!(
                self.out,
                "{},{},{},{},{},{}",
                format_time(c.time_ms),
                shown::number(c.open),
                shown::number(c.high),
                shown::number(c.low),
                shown::number(c.close),
                shown::number(c.volume)
            )?;
            match partial.get(i) {
                Some(p) => writeln!(self.out, ",{p}")?,
                None => writeln!(self.out)?,
            }
        }
        Ok(())
    }

    /// Flushed and handed back.
    pub fn finish(self) -> std::io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// What a file that is not text is, by its first bytes (after gunzip
/// when `gzip`), and what to do with it; `None` when they say nothing
/// known.
fn what_file_is(start: &[u8], gzip: bool) -> Option<&'static str> {
    if gzip && start.starts_with(b"PAR1") {
        return Some("a gzip-compressed Parquet file: name it .parquet.gz");
    }
    if gzip && start.starts_with(b"ARROW1") {
        return Some("a gzip-compressed Arrow IPC (Feather) file: name it .feather.gz");
    }
    const KNOWN: [(&[u8], &str); 10] = [
        (b"PAR1", "a Parquet file: name it .parquet"),
        (b"ARROW1", "an Arrow IPC (Feather) file: name it .feather"),
        (b"\x1f\x8b", "gzip-compressed: name it .csv.gz"),
        (
            b"\xfd7zXZ\x00",
            "xz-compressed, which Keel does not read: decompress it first (unxz)",
        ),
        (
            b"\x28\xb5\x2f\xfd",
            "zstd-compressed, which Keel does not read: decompress it first (unzstd)",
        ),
        (
            b"PK\x03\x04",
            "a zip archive, which Keel does not read: unzip it first",
        ),
        (b"PK\x05\x06", "an empty zip archive"),
        (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
        (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
        (b"[[", "JSON (freqtrade's candles?), not CSV: name it .json"),
    ];
    // bzip2: "BZh" and its block size, a digit 1 to 9.
    if start.len() > 3 && start.starts_with(b"BZh") && (b'1'..=b'9').contains(&start[3]) {
        return Some("bzip2-compressed, which Keel does not read: decompress it first (bunzip2)");
    }
    KNOWN
        .iter()
        .find(|(magic, _)| start.starts_with(magic))
        .map(|&(_, what)| what)
}

/// Why a line longer than [`MAX_LINE_BYTES`] (`bytes`, some of it) is
/// refused: carriage returns in it mean lines that end with them alone.
fn long_line(bytes: &[u8]) -> String {
    match bytes.contains(&b'\r') {
        true => layout::CARRIAGE_RETURNS.to_owned(),
        false => format!(
            "a line longer than {} KiB: not candles",
            MAX_LINE_BYTES >> 10
        ),
    }
}

#[cfg(test)]
mod tests;
