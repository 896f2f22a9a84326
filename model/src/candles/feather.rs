//! Feather (version 2: the Arrow IPC file format) candle files, as
//! freqtrade writes them (`to_feather(…, compression="lz4")`), and any other
//! `.feather`, `.arrow` or `.ipc` file. The file is read whole; its footer
//! and every record batch's header are checked against its length, and what
//! its compressed buffers say they expand to against the limit, before any
//! batch is decoded.

use std::path::Path;
use std::sync::Arc;

use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, CompressionType, MetadataVersion};
use arrow_schema::Schema;

use super::arrow::{self, ROW_BYTES, Roles, Rows, refused};
use super::*;

/// How to rewrite a file in a form Keel reads.
const REWRITE: &str = "python3 -c 'import pyarrow.feather as f; \
     f.write_feather(f.read_table(\"in.feather\"), \"out.feather\", compression=\"lz4\")'";

/// How to rewrite an IPC stream as a file.
const REWRITE_STREAM: &str = "python3 -c 'import pyarrow as pa, pyarrow.feather as f; \
     f.write_feather(pa.ipc.open_stream(\"in.arrows\").read_all(), \"out.feather\", \
     compression=\"lz4\")'";

/// The file format's magic, at its start and its end.
const MAGIC: &[u8] = b"ARROW1";

/// Reads a Feather (Arrow IPC file) candle file, its columns found by the
/// names CSV headers go by (freqtrade's `date,open,high,low,close,volume`).
pub fn read_feather(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_feather_columns(path, &Columns::default())
}

/// `read_feather`, with the columns for the roles `columns` names found by
/// those names.
pub fn read_feather_columns(path: &Path, columns: &Columns) -> Result<Vec<Candle>, CandleError> {
    read_feather_marked(path, columns).map(|(candles, _)| candles)
}

/// `read_feather_columns`, and the times of the bars a boolean column
/// `partial` marks (see [`read_file_marked`]).
pub(super) fn read_feather_marked(path: &Path, columns: &Columns) -> Result<Marked, CandleError> {
    read_within(path, columns, MAX_EXPANDED_BYTES)
}

/// `read_feather_columns`, a file refused when it is larger than `max`
/// bytes or claims to decode to more.
fn read_within(path: &Path, columns: &Columns, max: u64) -> Result<Marked, CandleError> {
    let source = path.display().to_string();
    let bytes = arrow::read_bytes(path, max)?;
    arrow::guarded(&source, "Feather", || parse(bytes, &source, columns, max))
}

fn parse(bytes: Vec<u8>, source: &str, columns: &Columns, max: u64) -> Result<Marked, CandleError> {
    let not_feather = |why: String| refused(source, format!("not a Feather file: {why}"));
    if bytes.starts_with(b"FEA1") {
        return Err(refused(
            source,
            format!("Feather version 1, which Keel does not read; rewrite it: {REWRITE}"),
        ));
    }
    if bytes.starts_with(&[0xff; 4]) {
        return Err(refused(
            source,
            format!("an Arrow IPC stream, not a file (Feather); rewrite it: {REWRITE_STREAM}"),
        ));
    }
    let Footer {
        schema,
        dictionaries,
        blocks,
        version,
    } = footer(&bytes).map_err(not_feather)?;
    let roles = Roles::find(&schema, columns, source)?;
    let mut claims = Claims::default();
    // The dictionaries (a dictionary column's values) first, then the
    // record batches, all within what the file may decode to.
    let every = dictionaries.iter().chain(&blocks);
    for (i, block) in every.enumerate() {
        match claims.add(&bytes, block) {
            Ok(()) => {}
            Err(Unread::Codec(codec)) => {
                return Err(refused(
                    source,
                    format!(
                        "compressed with {codec}, which Keel does not read (lz4 or none); \
                         rewrite it: {REWRITE}"
                    ),
                ));
            }
            Err(Unread::Malformed(why)) => {
                return Err(not_feather(format!("record batch {}: {why}", i + 1)));
            }
        }
    }
    if claims.decoded() > max {
        return Err(arrow::too_large(source, claims.rows, claims.decoded(), max));
    }
    let mut decoder =
        FileDecoder::new(Arc::new(schema), version).with_projection(roles.projection.clone());
    let buffer = arrow_buffer::Buffer::from_vec(bytes);
    for (i, block) in dictionaries.iter().enumerate() {
        let at = |why: &str| not_feather(format!("dictionary {}: {why}", i + 1));
        let (start, meta, body) =
            block_parts(block, buffer.len()).ok_or_else(|| at("it lies outside the file"))?;
        decoder
            .read_dictionary(block, &buffer.slice_with_length(start, meta + body))
            .map_err(|e| at(&shown::message(&e.to_string())))?;
    }
    let mut rows = Rows::new(source, roles);
    for (i, block) in blocks.iter().enumerate() {
        let at = |why: &str| not_feather(format!("record batch {}: {why}", i + 1));
        let (start, meta, body) =
            block_parts(block, buffer.len()).ok_or_else(|| at("it lies outside the file"))?;
        let batch = decoder
            .read_record_batch(block, &buffer.slice_with_length(start, meta + body))
            .map_err(|e| at(&shown::message(&e.to_string())))?;
        if let Some(batch) = batch {
            rows.push(&batch)?;
        }
    }
    rows.finish()
}

/// What a file's footer holds.
struct Footer {
    schema: Schema,
    /// Where each dictionary batch is (the values of dictionary columns).
    dictionaries: Vec<Block>,
    /// Where each record batch is.
    blocks: Vec<Block>,
    version: MetadataVersion,
}

/// What a file's footer holds, or why it is no Feather file.
fn footer(bytes: &[u8]) -> Result<Footer, String> {
    let len = bytes.len();
    if len < 2 * MAGIC.len() + 6 || !bytes.starts_with(MAGIC) || !bytes.ends_with(MAGIC) {
        return Err("no ARROW1 magic at its start and end".into());
    }
    let trailer = len - MAGIC.len() - 4;
    let footer_len = i32::from_le_bytes([
        bytes[trailer],
        bytes[trailer + 1],
        bytes[trailer + 2],
        bytes[trailer + 3],
    ]);
    let footer_start = usize::try_from(footer_len)
        .ok()
        .and_then(|n| trailer.checked_sub(n))
        .filter(|start| *start >= MAGIC.len())
        .ok_or_else(|| format!("its footer's length {footer_len} does not fit"))?;
    let footer = arrow_ipc::root_as_footer(&bytes[footer_start..trailer])
        .map_err(|e| shown::message(&e.to_string()))?;
    let schema = footer.schema().ok_or("its footer has no schema")?;
    let schema =
        arrow_ipc::convert::try_fb_to_schema(schema).map_err(|e| shown::message(&e.to_string()))?;
    Ok(Footer {
        schema,
        dictionaries: footer
            .dictionaries()
            .into_iter()
            .flatten()
            .copied()
            .collect(),
        blocks: footer
            .recordBatches()
            .into_iter()
            .flatten()
            .copied()
            .collect(),
        version: footer.version(),
    })
}

/// A block's start, header length and body length, when it lies inside
/// a file of `len` bytes.
fn block_parts(block: &Block, len: usize) -> Option<(usize, usize, usize)> {
    let start = usize::try_from(block.offset()).ok()?;
    let meta = usize::try_from(block.metaDataLength()).ok()?;
    let body = usize::try_from(block.bodyLength()).ok()?;
    let end = start.checked_add(meta)?.checked_add(body)?;
    (meta >= 8 && end <= len).then_some((start, meta, body))
}

/// What a file's record batches claim: rows, and the bytes they decode to.
#[derive(Debug, Default)]
struct Claims {
    rows: u64,
    /// What the compressed buffers say they expand to.
    expanded: u64,
}

/// Why a record batch is not read.
#[derive(Debug)]
enum Unread {
    /// Compressed with a codec Keel does not read.
    Codec(&'static str),
    /// Not a record batch, or one that lies outside the file.
    Malformed(String),
}

impl From<&str> for Unread {
    fn from(why: &str) -> Unread {
        Unread::Malformed(why.to_owned())
    }
}

impl From<String> for Unread {
    fn from(why: String) -> Unread {
        Unread::Malformed(why)
    }
}

impl Claims {
    /// Checks that `block` lies inside `file` and holds a record batch
    /// whose buffers lie inside its body, and adds what it claims.
    fn add(&mut self, file: &[u8], block: &Block) -> Result<(), Unread> {
        let (start, meta, body) =
            block_parts(block, file.len()).ok_or("it lies outside the file")?;
        let header = &file[start..start + meta];
        let flatbuffer = if header[..4] == [0xff; 4] {
            &header[8..]
        } else {
            &header[4..]
        };
        let message =
            arrow_ipc::root_as_message(flatbuffer).map_err(|e| shown::message(&e.to_string()))?;
        let batch = (message.header_as_record_batch())
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()))
            .ok_or("its header is not a record batch's")?;
        self.rows = self
            .rows
            .saturating_add(u64::try_from(batch.length()).map_err(|_| "a negative length")?);
        let compressed = match batch.compression().map(|c| c.codec()) {
            None => false,
            Some(CompressionType::LZ4_FRAME) => true,
            Some(CompressionType::ZSTD) => return Err(Unread::Codec("zstd")),
            Some(_) => return Err("an unknown codec".into()),
        };
        let body = &file[start + meta..start + meta + body];
        for buffer in batch.buffers().into_iter().flatten() {
            let (offset, len) = (
                usize::try_from(buffer.offset()).ok(),
                usize::try_from(buffer.length()).ok(),
            );
            let bytes = offset
                .zip(len)
                .and_then(|(o, l)| body.get(o..o.checked_add(l)?))
                .ok_or("a buffer lies outside its body")?;
            // A compressed buffer starts with the length it expands to
            // (-1: stored as it is).
            if compressed && bytes.len() >= 8 {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&bytes[..8]);
                let expands = i64::from_le_bytes(prefix);
                if expands > 0 {
                    self.expanded = self.expanded.saturating_add(expands as u64);
                }
            }
        }
        Ok(())
    }

    /// The bytes the batches decode to: their rows' values, and what their
    /// compressed buffers expand to.
    fn decoded(&self) -> u64 {
        self.rows
            .saturating_mul(ROW_BYTES)
            .saturating_add(self.expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::super::arrow::fixtures::{batch_with_note, eth, file, formats, garbled};
    use super::*;

    #[test]
    fn feather_files_freqtrade_and_pyarrow_write_read_as_the_csv_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let arrow = formats("timestamp-s-ETH_BTC-5m.arrow");
        let ipc = file(&dir, "x.ipc", &std::fs::read(&arrow).expect("read"));
        for (path, expected) in [
            (formats("freqtrade-ETH_BTC-5m.feather"), eth(300)),
            (formats("freqtrade-ms-ETH_BTC-5m.feather"), eth(60)),
            (arrow, eth(60)),
            (ipc, eth(60)),
            // Gzipped whole by pyarrow's compressed stream: expanded first.
            (formats("gzipped-ETH_BTC-5m.feather.gz"), eth(60)),
        ] {
            assert_eq!(
                read_file(&path).expect("read"),
                expected,
                "{}",
                path.display()
            );
        }
        let named = Columns::parse("time=date").expect("columns");
        let freqtrade = formats("freqtrade-ms-ETH_BTC-5m.feather");
        assert_eq!(
            read_file_columns(&freqtrade, &named).expect("read"),
            eth(60)
        );
    }

    #[test]
    fn bad_feather_files_are_refused_in_one_line() {
        let cases = [
            (
                "nan-volume-ETH_BTC-5m.feather",
                "row 12: volume is NaN".to_owned(),
            ),
            (
                "high-below-low-ETH_BTC-5m.feather",
                "row 3: high 0.049500005 is below low 0.09900001".to_owned(),
            ),
            (
                "zstd-ETH_BTC-5m.feather",
                format!(
                    "compressed with zstd, which Keel does not read (lz4 or none); \
                     rewrite it: {REWRITE}"
                ),
            ),
        ];
        for (name, says) in cases {
            let path = formats(name);
            let err = read_file(&path).expect_err(name).to_string();
            assert_eq!(err, format!("{}: {says}", path.display()));
        }
    }

    /// `bytes` with every aligned i64 of `from` in `range` made `to`.
    fn patched(bytes: &[u8], range: std::ops::Range<usize>, from: i64, to: i64) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let mut at = range.start.next_multiple_of(8);
        while at + 8 <= range.end {
            if out[at..at + 8] == from.to_le_bytes() {
                out[at..at + 8].copy_from_slice(&to.to_le_bytes());
            }
            at += 8;
        }
        out
    }

    /// The first record batch's block of a Feather file.
    fn first_block(bytes: &[u8]) -> Block {
        let trailer = bytes.len() - 10;
        let footer_len = i32::from_le_bytes(bytes[trailer..trailer + 4].try_into().expect("4"));
        let footer = arrow_ipc::root_as_footer(&bytes[trailer - footer_len as usize..trailer])
            .expect("footer");
        *footer.recordBatches().expect("batches").get(0)
    }

    #[test]
    fn a_file_claiming_more_than_the_limit_is_refused_before_it_is_decoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = formats("freqtrade-ms-ETH_BTC-5m.feather");
        let bytes = std::fs::read(&source).expect("read");
        let block = first_block(&bytes);
        let (start, meta) = (block.offset() as usize, block.metaDataLength() as usize);

        // The batch and its columns say 2^40 rows.
        let rows = patched(&bytes, start..start + meta, 60, 1 << 40);
        assert_ne!(rows, bytes);
        let rows = file(&dir, "rows.feather", &rows);
        let refused = read_feather(&rows).expect_err("2^40 rows").to_string();
        assert!(
            refused.starts_with(&format!("{}: 1099511627776 rows, ", rows.display()))
                && refused.ends_with(" bytes decoded: more than the 1 GiB Keel reads at once"),
            "{refused}"
        );

        // A compressed buffer says it expands to 2^40 bytes.
        let message = arrow_ipc::root_as_message(&bytes[start + 8..start + meta]).expect("message");
        let batch = message.header_as_record_batch().expect("a record batch");
        let buffer = batch
            .buffers()
            .expect("buffers")
            .iter()
            .find(|b| b.length() >= 8)
            .expect("a compressed buffer");
        let at = start + meta + buffer.offset() as usize;
        let mut expands = bytes.clone();
        expands[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        let expands = file(&dir, "expands.feather", &expands);
        let refused = read_feather(&expands).expect_err("2^40 bytes").to_string();
        assert!(
            refused.starts_with(&format!("{}: 60 rows, 1099511", expands.display())),
            "{refused}"
        );

        let small = read_within(&source, &Columns::default(), 4_000).expect_err("small");
        assert_eq!(
            small.to_string(),
            format!("{}: cannot read: larger than 4000 bytes", source.display())
        );
    }

    #[test]
    fn a_huge_text_column_is_refused_by_what_it_expands_to() {
        use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let batch = batch_with_note(&eth(60), 100_000);
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .expect("lz4");
        let mut bytes = Vec::new();
        let mut writer =
            FileWriter::try_new_with_options(&mut bytes, &batch.schema(), options).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
        drop(writer);
        assert!(bytes.len() < 100_000, "{} bytes", bytes.len());
        let path = file(&dir, "notes.feather", &bytes);
        let refused = read_within(&path, &Columns::default(), 1 << 20).expect_err("6 MB of text");
        assert!(
            refused
                .to_string()
                .starts_with(&format!("{}: 60 rows, 600", path.display()))
                && refused
                    .to_string()
                    .ends_with("more than the 1048576 bytes Keel reads at once"),
            "{refused}"
        );
        assert_eq!(read_feather(&path).expect("within 1 GiB"), eth(60));
    }

    #[test]
    fn what_is_not_a_feather_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (bytes, says) in [
            (
                &b"FEA1 an old feather"[..],
                "Feather version 1, which Keel does not read",
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 8, 0, 0, 0][..],
                "an Arrow IPC stream, not a file",
            ),
            (
                &b"time,open,high,low,close,volume\n"[..],
                "not a Feather file: no ARROW1 magic",
            ),
            (
                &b"ARROW1\0\0\xff\xff\xff\x7fARROW1"[..],
                "not a Feather file: its footer's length",
            ),
            (&b""[..], "not a Feather file: no ARROW1 magic"),
        ] {
            let path = file(&dir, "x.feather", bytes);
            let err = read_feather(&path).expect_err(says).to_string();
            assert!(
                err.starts_with(&format!("{}: {says}", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn a_garbled_feather_file_is_refused_in_one_line_never_a_panic() {
        garbled(&formats("freqtrade-ms-ETH_BTC-5m.feather"), read_feather);
        garbled(&formats("gzipped-ETH_BTC-5m.feather.gz"), read_feather);
        garbled(&formats("timestamp-s-ETH_BTC-5m.arrow"), read_feather);
    }
}
