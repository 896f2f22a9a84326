//! Parquet candle files: pandas' `to_parquet`, pyarrow's `write_table`,
//! freqtrade's parquet data, and Keel's own export (`write_parquet`).
//! What a file claims — its rows, the decoded size of the columns read and
//! of each of their pages (`pages.rs`), their codecs — is checked before a
//! byte of it is decoded.

use std::path::Path;
use std::sync::Arc;

use ::parquet::arrow::ProjectionMask;
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::basic::Compression;
use ::parquet::file::metadata::ColumnChunkMetaData;
use ::parquet::file::reader::ChunkReader;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::arrow::{self, ROW_BYTES, Roles, Rows, refused};
use super::*;

mod pages;

/// Rows decoded at a time (about 3 MB of the six columns).
const BATCH_ROWS: usize = 64 * 1024;

/// How to rewrite a file in a codec Keel reads.
const REWRITE: &str = "python3 -c 'import pyarrow.parquet as pq; \
     pq.write_table(pq.read_table(\"in.parquet\"), \"out.parquet\", compression=\"snappy\")'";

/// Reads a Parquet candle file, its columns found by the names CSV headers
/// go by (`date`, `timestamp`, `Open`, …, or pandas' index).
pub fn read_parquet(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_parquet_columns(path, &Columns::default())
}

/// `read_parquet`, with the columns for the roles `columns` names found by
/// those names.
pub fn read_parquet_columns(path: &Path, columns: &Columns) -> Result<Vec<Candle>, CandleError> {
    read_parquet_marked(path, columns).map(|(candles, _)| candles)
}

/// `read_parquet_columns`, and the times of the bars a boolean column
/// `partial` marks (see [`read_file_marked`]).
pub(super) fn read_parquet_marked(path: &Path, columns: &Columns) -> Result<Marked, CandleError> {
    read_within(path, columns, MAX_EXPANDED_BYTES, &mut |_, _| true)
}

/// `read_parquet_columns`, the candles handed to `each` as they are
/// decoded (some 65,000 at a time, every one checked, in order across the
/// pieces) and never held whole; the first error of `each` ends the read
/// and is returned.
pub fn read_parquet_each<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    mut each: impl FnMut(Vec<Candle>) -> Result<(), E>,
) -> Result<(), E> {
    read_parquet_each_marked(path, columns, |candles, _| each(candles))
}

/// [`read_parquet_each`], each piece with the times of its marked bars.
pub(super) fn read_parquet_each_marked<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    each: impl FnMut(Vec<Candle>, Vec<i64>) -> Result<(), E>,
) -> Result<(), E> {
    in_pieces(each, |take| {
        read_within(path, columns, MAX_EXPANDED_BYTES, take)
    })
}

/// `read_parquet_columns`, a file refused when it is larger than `max`
/// bytes or claims to decode to more; the candles `each` leaves.
fn read_within(
    path: &Path,
    columns: &Columns,
    max: u64,
    each: &mut Take<'_>,
) -> Result<Marked, CandleError> {
    let source = path.display().to_string();
    if is_gzip(path) {
        // A file gzipped whole (pyarrow's `CompressedOutputStream`) has no
        // place to seek to until it is expanded: held whole, within `max`.
        let bytes = bytes::Bytes::from(arrow::read_bytes(path, max)?);
        return arrow::guarded(&source, "Parquet", || {
            parse(bytes.clone(), &bytes, &source, columns, max, each)
        });
    }
    // Read where the decoder asks, never whole: memory holds a row group's
    // columns, not the file.
    let (file, _) = arrow::open_within(path, max)?;
    let io = |error| CandleError::Io {
        path: source.clone(),
        error,
    };
    let decoded = file.try_clone().map_err(io)?;
    arrow::guarded(&source, "Parquet", || {
        parse(decoded, &file, &source, columns, max, each)
    })
}

/// The candles of the Parquet file `decoded` reads (`file` the same file,
/// for the checks made before it is decoded).
fn parse<R: ChunkReader + 'static>(
    decoded: R,
    file: &R,
    source: &str,
    columns: &Columns,
    max: u64,
    each: &mut Take<'_>,
) -> Result<Marked, CandleError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        refused(
            source,
            format!(
                "not a readable Parquet file: {}",
                shown::message(&e.to_string())
            ),
        )
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(decoded).map_err(|e| unreadable(&e))?;
    let roles = Roles::find(builder.schema(), columns, source)?;
    check_claims(&builder, file, &roles, source, max)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roles.projection.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| unreadable(&e))?;
    let mut rows = Rows::new(source, roles);
    for batch in reader {
        rows.push(&batch.map_err(|e| unreadable(&e))?)?;
        if !each(&mut rows.candles, &mut rows.marks) {
            return Ok(Marked::default());
        }
    }
    rows.finish()
}

/// Refuses a file that says it decodes to more than `max` bytes: its rows
/// (the file's count, or its row groups' if larger) times [`ROW_BYTES`],
/// and what each column to be read decodes to (`check_chunk`).
fn check_claims<R: ChunkReader>(
    builder: &ParquetRecordBatchReaderBuilder<R>,
    file: &R,
    roles: &Roles,
    source: &str,
    max: u64,
) -> Result<(), CandleError> {
    let metadata = builder.metadata();
    let schema = builder.parquet_schema();
    let in_groups: u64 = metadata
        .row_groups()
        .iter()
        .map(|g| claimed(g.num_rows()))
        .fold(0, u64::saturating_add);
    let rows = claimed(metadata.file_metadata().num_rows()).max(in_groups);
    let mut decoded = rows.saturating_mul(ROW_BYTES);
    for group in metadata.row_groups() {
        for (leaf, chunk) in group.columns().iter().enumerate() {
            if leaf < schema.num_columns()
                && roles.projection.contains(&schema.get_column_root_idx(leaf))
            {
                decoded = decoded.saturating_add(check_chunk(chunk, file, source)?);
            }
        }
    }
    if decoded > max {
        return Err(arrow::too_large(source, rows, decoded, max));
    }
    Ok(())
}

/// What a column chunk to be read decodes to: what its metadata says, or
/// what its pages' headers add up to if more. Refused when it lies outside
/// the file, a header cannot be read, or its codec is one Keel does not
/// read.
fn check_chunk(
    chunk: &ColumnChunkMetaData,
    file: &impl ChunkReader,
    source: &str,
) -> Result<u64, CandleError> {
    let column = shown::text(&chunk.column_path().string()).to_string();
    let refuse = |what: String| refused(source, format!("column '{column}' {what}"));
    let codec = match chunk.compression() {
        Compression::UNCOMPRESSED
        | Compression::SNAPPY
        | Compression::GZIP(_)
        | Compression::LZ4
        | Compression::LZ4_RAW => None,
        Compression::ZSTD(_) => Some("zstd"),
        Compression::BROTLI(_) => Some("brotli"),
        Compression::LZO => Some("lzo"),
    };
    if let Some(codec) = codec {
        return Err(refuse(format!(
            "is compressed with {codec}, which Keel does not read \
             (snappy, lz4, gzip or none); rewrite it: {REWRITE}"
        )));
    }
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset());
    let outside = || refuse("lies outside the file".into());
    // Checked against the file's length before a byte is read: a chunk
    // that claims to be huge is never allocated for.
    let (start, len) = u64::try_from(start)
        .ok()
        .zip(u64::try_from(chunk.compressed_size()).ok())
        .filter(|&(start, len)| start.checked_add(len).is_some_and(|end| end <= file.len()))
        .ok_or_else(outside)?;
    let stored = file
        .get_bytes(start, usize::try_from(len).map_err(|_| outside())?)
        .map_err(|_| outside())?;
    let paged = pages::decoded_size(&stored)
        .ok_or_else(|| refuse("has a page header that cannot be read".into()))?;
    Ok(claimed(chunk.uncompressed_size()).max(paged))
}

/// A count or size a file claims; a negative one (nonsense the decoder
/// refuses) as none.
fn claimed(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Writes candles as Parquet, replacing `path` whole as `write_csv` does:
/// `date` as timestamp[ms, UTC], then `open`, `high`, `low`, `close` and
/// `volume` as float64, snappy-compressed — freqtrade's frame, as pandas
/// and pyarrow read it.
pub fn write_parquet(path: &Path, candles: &[Candle]) -> Result<(), CandleError> {
    replace::replace_file(path, |file| write_table(file, candles))
}

/// The candles as a Parquet file into `out`, handed back complete.
fn write_table<W: std::io::Write + Send>(out: W, candles: &[Candle]) -> std::io::Result<W> {
    let mut table = ParquetRows::new(out, false)?;
    table.write(candles, &[])?;
    table.finish()
}

/// A Parquet file being written piece by piece (`date` as timestamp[ms,
/// UTC], then open, high, low, close, volume as float64, and when marked
/// `partial` as boolean; snappy), a row group every [`BATCH_ROWS`] candles.
pub struct ParquetRows<W: std::io::Write + Send> {
    writer: ::parquet::arrow::ArrowWriter<W>,
    schema: Arc<Schema>,
    /// Candles not yet in a batch.
    held: Vec<Candle>,
    /// Whether each held candle is partial, when the file marks them.
    marks: Option<Vec<bool>>,
}

impl<W: std::io::Write + Send> std::fmt::Debug for ParquetRows<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("held", &self.held.len())
            .finish()
    }
}

impl<W: std::io::Write + Send> ParquetRows<W> {
    pub fn new(out: W, marked: bool) -> std::io::Result<ParquetRows<W>> {
        use ::parquet::file::properties::WriterProperties;
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields = vec![Field::new("date", time, false)];
        fields.extend(
            COLUMNS[1..]
                .iter()
                .map(|c| Field::new(*c, DataType::Float64, false)),
        );
        if marked {
            fields.push(Field::new("partial", DataType::Boolean, false));
        }
        let schema = Arc::new(Schema::new(fields));
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("keel {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ::parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(properties))
            .map_err(std::io::Error::other)?;
        Ok(ParquetRows {
            writer,
            schema,
            held: Vec::with_capacity(BATCH_ROWS),
            marks: marked.then(|| Vec::with_capacity(BATCH_ROWS)),
        })
    }

    /// The next candles, and whether each is partial when the file marks
    /// them (see [`marks_fit`](super::marks_fit)).
    pub fn write(&mut self, mut candles: &[Candle], mut partial: &[bool]) -> std::io::Result<()> {
        super::marks_fit(self.marks.is_some(), candles, partial)?;
        while !candles.is_empty() {
            let room = BATCH_ROWS - self.held.len();
            let (now, later) = candles.split_at(room.min(candles.len()));
            self.held.extend_from_slice(now);
            candles = later;
            if let Some(marks) = &mut self.marks {
                let (now, later) = partial.split_at(now.len());
                marks.extend_from_slice(now);
                partial = later;
            }
            if self.held.len() == BATCH_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// The held candles as one batch.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = &self.held;
        let prices = |value: fn(&Candle) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(held.iter().map(value)))
        };
        let times = TimestampMillisecondArray::from_iter_values(held.iter().map(|c| c.time_ms))
            .with_timezone("UTC");
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(times),
            prices(|c| c.open),
            prices(|c| c.high),
            prices(|c| c.low),
            prices(|c| c.close),
            prices(|c| c.volume),
        ];
        if let Some(marks) = &mut self.marks {
            columns.push(Arc::new(arrow_array::BooleanArray::from(std::mem::take(
                marks,
            ))));
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(std::io::Error::other)?;
        self.writer.write(&batch).map_err(std::io::Error::other)?;
        self.held.clear();
        Ok(())
    }

    /// The file complete (its footer written), handed back.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush()?;
        self.writer.into_inner().map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests;
