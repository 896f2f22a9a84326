//! What Parquet and Feather (Arrow IPC) candle files have in common: Arrow
//! record batches whose columns are found by the names CSV headers go by
//! (`layout`), read row by row into candles that pass the checks CSV
//! candles pass; a bad row is reported as `path: row N: what`. The readers
//! of the two formats (`parquet.rs`, `feather.rs`) check what a file claims
//! before they decode it, so that memory stays bounded.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};

use super::*;

/// What one row decodes to at the least: six 8-byte numbers. A file's rows
/// times this, with whatever else it says it decodes to, is held against
/// [`MAX_EXPANDED_BYTES`].
pub(super) const ROW_BYTES: u64 = 48;

/// A file opened to be read in place, and its length; refused when it is
/// larger than `max` bytes.
pub(super) fn open_within(path: &Path, max: u64) -> Result<(std::fs::File, u64), CandleError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if len > max {
        return Err(larger_than(path, max));
    }
    Ok((file, len))
}

/// The bytes of a (Feather) file, read whole, expanded when its name ends
/// in `.gz`: it is refused when it is larger than `max` (by its length, or
/// by what a pipe or the expansion gives).
pub(super) fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>, CandleError> {
    use std::io::{Read, Seek};
    let (file, len) = open_within(path, max)?;
    let io = |e| io_error(path, e);
    if !is_gzip(path) {
        let bytes = read_sized((&file).take(max + 1), len).map_err(io)?;
        return match bytes.len() as u64 > max {
            true => Err(larger_than(path, max)),
            false => Ok(bytes),
        };
    }
    // A gzip is expanded twice: first counted, keeping nothing, so that
    // one expanding past `max` is refused before memory holds any of it;
    // then into exactly what it expands to.
    let gunzip = || flate2::read::MultiGzDecoder::new(&file).take(max + 1);
    let counted = std::io::copy(&mut gunzip(), &mut std::io::sink()).map_err(io)?;
    if counted > max {
        let more = format!("expands to more than {}", size(max));
        return Err(io(std::io::Error::other(more)));
    }
    (&file).rewind().map_err(io)?;
    let bytes = read_sized(gunzip(), counted).map_err(io)?;
    match bytes.len() as u64 == counted {
        true => Ok(bytes),
        false => Err(io(std::io::Error::other("changed while it was read"))),
    }
}

/// What `read` gives, into a buffer sized once to the `size` expected:
/// grown by doubling, a buffer holds the old and the new at once (a 476 MB
/// file held 256 and 512 MB; a gzip that expanded past 1 GiB, 2.6 GB).
fn read_sized(mut read: impl std::io::Read, size: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    read.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn io_error(path: &Path, error: std::io::Error) -> CandleError {
    CandleError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn larger_than(path: &Path, max: u64) -> CandleError {
    io_error(
        path,
        std::io::Error::other(format!("larger than {}", size(max))),
    )
}

/// `max` bytes in words: `1 GiB`, `4096 bytes`.
pub(super) fn size(max: u64) -> String {
    if max >= 1 << 30 && max.is_multiple_of(1 << 30) {
        format!("{} GiB", max >> 30)
    } else {
        format!("{max} bytes")
    }
}

/// A file refused as a whole: `path: message`.
pub(super) fn refused(source: &str, message: String) -> CandleError {
    CandleError::Format {
        path: source.to_owned(),
        message,
    }
}

/// The refusal of a file that says it holds `rows` rows decoding to
/// `decoded` bytes, more than `max`.
pub(super) fn too_large(source: &str, rows: u64, decoded: u64, max: u64) -> CandleError {
    refused(
        source,
        format!(
            "{rows} rows, {decoded} bytes decoded: more than the {} Keel reads at once",
            size(max)
        ),
    )
}

/// `read`, a panic in the decoder below (which may panic on malformed
/// input it did not foresee: a bitmap shorter than its rows) turned into a
/// refusal of the file. What is checked before decoding leaves it less to
/// catch. Such a panic is not printed: the one line is the refusal.
pub(super) fn guarded<T>(
    source: &str,
    format: &str,
    read: impl FnOnce() -> Result<T, CandleError>,
) -> Result<T, CandleError> {
    quiet_while_decoding();
    DECODING.set(true);
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    DECODING.set(false);
    read.unwrap_or_else(|_| {
        Err(refused(
            source,
            format!("not a readable {format} file (its decoder failed on it)"),
        ))
    })
}

thread_local! {
    /// Whether this thread is inside `guarded`.
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps the panic hook (whichever was set when the first file was read)
/// from printing a panic of a thread inside `guarded`; every other panic
/// it prints as before.
fn quiet_while_decoding() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.get() {
                report(info);
            }
        }));
    });
}

/// Where a file's candles are: the column of each role, found by its name.
#[derive(Debug)]
pub(super) struct Roles {
    /// The column of each role in the file's schema.
    index: [usize; 6],
    /// The boolean column that marks partial bars, if the file has one.
    partial: Option<usize>,
    /// The columns to decode: the roles' columns (and `partial`), in the
    /// file's order.
    pub(super) projection: Vec<usize>,
    /// Times at local midnight are their dates (`Columns::with_dates`).
    dates: bool,
}

impl Roles {
    /// Finds each role's column among the schema's fields (by the user's
    /// name for it, else by the names CSV headers go by); a time not found
    /// so may be the frame's index that pandas saved (`__index_level_0__`,
    /// or the index's own name). Every column must hold what its role
    /// needs.
    pub(super) fn find(
        schema: &Schema,
        columns: &Columns,
        source: &str,
    ) -> Result<Roles, CandleError> {
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        let found = layout::find(&names, columns).or_else(|role| match pandas_index(schema) {
            Some(index) if role == 0 && !columns.is_named(0) => {
                layout::find(&names, &columns.with_time(&index))
            }
            _ => Err(role),
        });
        let all = || {
            let all: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            shown::text(&all.join(", ")).to_string()
        };
        let index = found.map_err(|role| {
            let listed = format!("columns are '{}'", all());
            refused(source, layout::missing(columns, role, &listed))
        })?;
        if let Some(why) = layout::ambiguity(&names, &index, columns) {
            return Err(refused(source, format!("{why} (columns are '{}')", all())));
        }
        for (role, &i) in index.iter().enumerate() {
            let field = &schema.fields()[i];
            let empty = arrow_array::new_empty_array(field.data_type());
            let (fits, holds) = if role == 0 {
                (times(empty.as_ref(), false).is_some(), "times")
            } else {
                (numbers(empty.as_ref()).is_some(), "numbers")
            };
            if !fits {
                return Err(holds_not(source, field, holds));
            }
        }
        let partial = layout::partial_column(&names, &index, columns)
            .map_err(|why| refused(source, format!("{why} (columns are '{}')", all())))?;
        if let Some(field) = partial.map(|i| &schema.fields()[i])
            && field.data_type() != &DataType::Boolean
        {
            return Err(holds_not(
                source,
                field,
                "booleans (true for a partial bar)",
            ));
        }
        let mut projection = index.to_vec();
        projection.extend(partial);
        projection.sort_unstable();
        projection.dedup();
        Ok(Roles {
            index,
            partial,
            projection,
            dates: columns.dates(),
        })
    }
}

/// The refusal of a column that does not hold what it must (`wanted`).
fn holds_not(source: &str, field: &arrow_schema::Field, wanted: &str) -> CandleError {
    refused(
        source,
        format!(
            "column '{}' holds {}, not {wanted}",
            shown::text(field.name()),
            shown::text(&field.data_type().to_string())
        ),
    )
}

/// The first index column pandas' metadata names, when it is a column.
fn pandas_index(schema: &Schema) -> Option<String> {
    let metadata: serde_json::Value =
        serde_json::from_str(schema.metadata().get("pandas")?).ok()?;
    let name = metadata.get("index_columns")?.get(0)?.as_str()?;
    Some(name.to_owned())
}

/// Candles read from record batches, row by row.
#[derive(Debug)]
pub(super) struct Rows<'a> {
    source: &'a str,
    roles: Roles,
    /// Rows read so far, over every batch.
    row: usize,
    /// The last row's time, for the order of the next (its candle may have
    /// been taken from `candles` already).
    last_ms: Option<i64>,
    pub(super) candles: Vec<Candle>,
    /// The times of the rows read and not taken that the file marks partial.
    pub(super) marks: Vec<i64>,
}

impl<'a> Rows<'a> {
    pub(super) fn new(source: &'a str, roles: Roles) -> Rows<'a> {
        Rows {
            source,
            roles,
            row: 0,
            last_ms: None,
            candles: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// The column `index` of the file's schema in a batch decoded with
    /// the roles' projection.
    fn column<'b>(&self, batch: &'b RecordBatch, index: usize) -> Option<&'b dyn Array> {
        let at = self.roles.projection.iter().position(|&i| i == index)?;
        (batch.num_columns() == self.roles.projection.len()).then(|| batch.column(at).as_ref())
    }

    /// The roles' columns of a batch decoded with the roles' projection.
    fn arrays<'b>(&self, batch: &'b RecordBatch) -> Option<[&'b dyn Array; 6]> {
        let column = |role: usize| self.column(batch, self.roles.index[role]);
        Some([
            column(0)?,
            column(1)?,
            column(2)?,
            column(3)?,
            column(4)?,
            column(5)?,
        ])
    }

    /// Reads a batch's rows into checked candles; the first bad row ends
    /// the read with `path: row N: what`.
    pub(super) fn push(&mut self, batch: &RecordBatch) -> Result<(), CandleError> {
        let unexpected = || {
            refused(
                self.source,
                "a batch's columns are not the file's".to_owned(),
            )
        };
        let arrays = self.arrays(batch).ok_or_else(unexpected)?;
        let time = times(arrays[0], self.roles.dates).ok_or_else(unexpected)?;
        let mut values = Vec::with_capacity(5);
        for array in &arrays[1..] {
            values.push(numbers(*array).ok_or_else(unexpected)?);
        }
        let partial = match self.roles.partial {
            Some(index) => {
                let column = self.column(batch, index).ok_or_else(unexpected)?;
                Some(column.as_boolean_opt().ok_or_else(unexpected)?)
            }
            None => None,
        };
        self.candles.reserve(batch.num_rows());
        for i in 0..batch.num_rows() {
            self.row += 1;
            let at = |message| CandleError::Row {
                path: self.source.to_owned(),
                row: self.row,
                message,
            };
            if let Some(role) = arrays.iter().position(|a| a.is_null(i)) {
                return Err(at(format!("{} is null", COLUMNS[role])));
            }
            let time_ms = time(i).map_err(at)?;
            let mut row = [0.0f64; 5];
            for (k, value) in row.iter_mut().enumerate() {
                *value = values[k](i);
                if !value.is_finite() {
                    return Err(at(format!("{} is {value}", COLUMNS[k + 1])));
                }
            }
            let candle = checked(self.last_ms, time_ms, row).map_err(at)?;
            if let Some(partial) = partial {
                if partial.is_null(i) {
                    return Err(at("the mark of a partial bar is null".to_owned()));
                }
                if partial.value(i) {
                    self.marks.push(time_ms);
                }
            }
            self.candles.push(candle);
            self.last_ms = Some(time_ms);
        }
        Ok(())
    }

    /// The candles read and not taken, with their marks; no row at all
    /// is an error.
    pub(super) fn finish(self) -> Result<Marked, CandleError> {
        if self.row == 0 {
            return Err(CandleError::Empty {
                path: self.source.to_owned(),
            });
        }
        Ok((self.candles, self.marks))
    }
}

/// The zone a timestamp column names, for reading its local midnights as
/// dates: UTC, a fixed offset (`+09:00`), or a zone by name, whose offsets
/// (daylight saving) Keel does not keep.
enum Zone {
    Fixed(i64),
    Named(String),
}

const DAY_MS: i64 = 86_400_000;

impl Zone {
    fn of(tz: &str) -> Zone {
        if ["UTC", "Etc/UTC", "Z", "GMT", "Etc/GMT"]
            .iter()
            .any(|u| u.eq_ignore_ascii_case(tz))
        {
            return Zone::Fixed(0);
        }
        match tz.parse::<chrono::FixedOffset>() {
            Ok(offset) => Zone::Fixed(i64::from(offset.local_minus_utc()) * 1000),
            Err(_) => Zone::Named(tz.to_owned()),
        }
    }

    /// The date `utc_ms` names when it is a local midnight (00:00 UTC of
    /// that date), else `utc_ms`; in a zone known by name alone, a time
    /// not at midnight UTC cannot be dated, and says so.
    fn date_of(&self, utc_ms: i64) -> Result<i64, String> {
        match self {
            Zone::Fixed(offset) => {
                let local = utc_ms.saturating_add(*offset);
                Ok(match local.rem_euclid(DAY_MS) {
                    0 => local,
                    _ => utc_ms,
                })
            }
            Zone::Named(_) if utc_ms.rem_euclid(DAY_MS) == 0 => Ok(utc_ms),
            Zone::Named(name) => Err(format!(
                "time {} is in zone {}, whose local midnights Keel cannot date without its \
                 rules; write daily bars as dates (pandas: df.index = \
                 df.index.tz_localize(None))",
                super::format_time(utc_ms),
                crate::shown::text(name)
            )),
        }
    }
}

/// A row's time in epoch ms, or why it has none.
type Times<'a> = Box<dyn Fn(usize) -> Result<i64, String> + 'a>;
/// A row's number.
type Numbers<'a> = Box<dyn Fn(usize) -> f64 + 'a>;

/// The times of a column, in epoch ms: a timestamp of any unit (with a
/// zone or without: either way the count is from the epoch in UTC), a
/// date, an integer epoch time in s, ms, µs or ns told apart by its digits
/// as CSV's are, or text as CSV's. With `dates`, a timestamp at local
/// midnight in its zone is the date it names (see [`Zone`]). `None` for
/// any other type.
fn times(array: &dyn Array, dates: bool) -> Option<Times<'_>> {
    if let (true, DataType::Timestamp(_, Some(tz))) = (dates, array.data_type()) {
        let zone = Zone::of(tz);
        let instant = times(array, false)?;
        return Some(Box::new(move |i| zone.date_of(instant(i)?)));
    }
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            let a = array.as_primitive_opt::<TimestampSecondType>()?;
            Box::new(move |i| Ok(a.value(i).saturating_mul(1000)))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = array.as_primitive_opt::<TimestampMillisecondType>()?;
            Box::new(move |i| Ok(a.value(i)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive_opt::<TimestampMicrosecondType>()?;
            Box::new(move |i| Ok(a.value(i).div_euclid(1000)))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let a = array.as_primitive_opt::<TimestampNanosecondType>()?;
            Box::new(move |i| Ok(a.value(i).div_euclid(1_000_000)))
        }
        DataType::Date32 => {
            let a = array.as_primitive_opt::<Date32Type>()?;
            Box::new(move |i| Ok(i64::from(a.value(i)) * 86_400_000))
        }
        DataType::Date64 => {
            let a = array.as_primitive_opt::<Date64Type>()?;
            Box::new(move |i| Ok(a.value(i)))
        }
        DataType::Int64 => {
            let a = array.as_primitive_opt::<Int64Type>()?;
            Box::new(move |i| Ok(layout::epoch_int_ms(a.value(i))))
        }
        DataType::Int32 => {
            let a = array.as_primitive_opt::<Int32Type>()?;
            Box::new(move |i| Ok(layout::epoch_int_ms(a.value(i).into())))
        }
        DataType::UInt32 => {
            let a = array.as_primitive_opt::<UInt32Type>()?;
            Box::new(move |i| Ok(layout::epoch_int_ms(a.value(i).into())))
        }
        DataType::UInt64 => {
            let a = array.as_primitive_opt::<UInt64Type>()?;
            Box::new(move |i| {
                Ok(layout::epoch_int_ms(
                    i64::try_from(a.value(i)).unwrap_or(i64::MAX),
                ))
            })
        }
        DataType::Utf8 => {
            let a = array.as_string_opt::<i32>()?;
            Box::new(move |i| parse_time(a.value(i)))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string_opt::<i64>()?;
            Box::new(move |i| parse_time(a.value(i)))
        }
        DataType::Utf8View => {
            let a = array.as_string_view_opt()?;
            Box::new(move |i| parse_time(a.value(i)))
        }
        DataType::Dictionary(..) => {
            let (keys, values) = dictionary(array)?;
            let values = times(values, dates)?;
            Box::new(move |i| match keys.get(i) {
                Some(&k) => values(k),
                None => Err("time is missing".to_owned()),
            })
        }
        _ => return None,
    })
}

/// The numbers of a column as `f64`: floats, integers and decimals. A
/// float32 is read as the shortest decimal that is that float32 (what was
/// written as 0.0984 is 0.0984, not 0.09839999675750732). `None` for any
/// other type.
fn numbers(array: &dyn Array) -> Option<Numbers<'_>> {
    macro_rules! widened {
        ($type:ty) => {{
            let a = array.as_primitive_opt::<$type>()?;
            Box::new(move |i| a.value(i) as f64)
        }};
    }
    Some(match array.data_type() {
        DataType::Float64 => {
            let a = array.as_primitive_opt::<Float64Type>()?;
            Box::new(move |i| a.value(i))
        }
        DataType::Float32 => {
            let a = array.as_primitive_opt::<Float32Type>()?;
            Box::new(move |i| shortest(a.value(i)))
        }
        DataType::Int8 => widened!(Int8Type),
        DataType::Int16 => widened!(Int16Type),
        DataType::Int32 => widened!(Int32Type),
        DataType::Int64 => widened!(Int64Type),
        DataType::UInt8 => widened!(UInt8Type),
        DataType::UInt16 => widened!(UInt16Type),
        DataType::UInt32 => widened!(UInt32Type),
        DataType::UInt64 => widened!(UInt64Type),
        DataType::Decimal128(..) => {
            let a = array.as_primitive_opt::<Decimal128Type>()?;
            Box::new(move |i| a.value_as_string(i).parse().unwrap_or(f64::NAN))
        }
        // Each row a key into a list of numbers (pyarrow writes a pandas
        // categorical so).
        DataType::Dictionary(..) => {
            let (keys, values) = dictionary(array)?;
            let values = numbers(values)?;
            Box::new(move |i| keys.get(i).map_or(f64::NAN, |&k| values(k)))
        }
        _ => return None,
    })
}

/// A dictionary column's keys (as indices into its values, each in range)
/// and its values; no keys when it has no values (every row is null).
fn dictionary(array: &dyn Array) -> Option<(Vec<usize>, &dyn Array)> {
    let dict = array.as_any_dictionary_opt()?;
    let values = dict.values().as_ref();
    let keys = match values.is_empty() {
        true => Vec::new(),
        false => dict.normalized_keys(),
    };
    Some((keys, values))
}

/// The `f64` of the shortest decimal that reads back as `v`.
fn shortest(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The files of `tests/data/formats/` and the shared data they were made of.
#[cfg(test)]
pub(super) mod fixtures {
    use std::path::PathBuf;

    use super::super::{Candle, read_csv};

    fn repo() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// A file of `tests/data/formats/`.
    pub fn formats(name: &str) -> PathBuf {
        repo().join("tests/data/formats").join(name)
    }

    /// The first `n` candles of the shared `crypto-5m/ETH_BTC-5m.csv`.
    pub fn eth(n: usize) -> Vec<Candle> {
        let path = repo().join("../shared/data/crypto-5m/ETH_BTC-5m.csv");
        read_csv(&path).expect("the shared ETH/BTC candles")[..n].to_vec()
    }

    /// The first `n` candles of the shared `GOOG-1d.csv`.
    pub fn goog(n: usize) -> Vec<Candle> {
        let path = repo().join("../shared/data/GOOG-1d.csv");
        read_csv(&path).expect("the shared GOOG candles")[..n].to_vec()
    }

    /// A copy of `bytes` as a file named `name` in `dir`.
    pub fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    /// `candles` as an Arrow batch of freqtrade's columns and a `note` of
    /// `note_bytes` bytes a row.
    pub fn batch_with_note(candles: &[Candle], note_bytes: usize) -> arrow_array::RecordBatch {
        use arrow_array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
        use std::sync::Arc;
        let prices = |value: fn(&Candle) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(candles.iter().map(value)))
        };
        let times = TimestampMillisecondArray::from_iter_values(candles.iter().map(|c| c.time_ms))
            .with_timezone("UTC");
        let note = "x".repeat(note_bytes);
        arrow_array::RecordBatch::try_from_iter([
            ("date", Arc::new(times) as ArrayRef),
            ("open", prices(|c| c.open)),
            ("high", prices(|c| c.high)),
            ("low", prices(|c| c.low)),
            ("close", prices(|c| c.close)),
            ("volume", prices(|c| c.volume)),
            (
                "note",
                Arc::new(StringArray::from_iter_values(candles.iter().map(|_| &note))),
            ),
        ])
        .expect("a batch")
    }

    /// Reads `path` with `read` cut short at many lengths and with bytes
    /// changed at many places: every result is candles or a one-line
    /// error naming the file, never a panic or an abort.
    pub fn garbled(
        path: &std::path::Path,
        read: fn(&std::path::Path) -> Result<Vec<Candle>, super::CandleError>,
    ) {
        let bytes = std::fs::read(path).expect("fixture");
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("bin");
        let target = dir.path().join(format!("garbled.{ext}"));
        let step = (bytes.len() / 150).max(1);
        let mut cases: Vec<Vec<u8>> = (0..bytes.len())
            .step_by(step)
            .map(|n| bytes[..n].to_vec())
            .collect();
        for at in (0..bytes.len()).step_by(step) {
            for flip in [0xff, 0x80, 0x01] {
                let mut changed = bytes.clone();
                changed[at] ^= flip;
                cases.push(changed);
            }
        }
        for case in cases {
            std::fs::write(&target, &case).expect("write");
            if let Err(e) = read(&target) {
                let said = e.to_string();
                assert!(
                    said.starts_with(&target.display().to_string()) && !said.contains('\n'),
                    "{said}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float32_is_the_decimal_it_was_written_as() {
        assert_eq!(shortest(0.0984), 0.0984);
        assert_eq!(shortest(1820.5444), 1820.5444);
        assert!(shortest(f32::NAN).is_nan());
        assert_eq!(shortest(f32::INFINITY), f64::INFINITY);
    }
}
