//! Candle files by their names: read (`read_file` and its kin, whole or
//! in pieces, with the bars a file marks partial) and written
//! (`write_file`, `write_file_each`) in the format a file's extension
//! says, and what a file's name tells (its symbol, its timeframe).

use std::path::Path;

use super::*;

/// Reads a candle file by its extension: `.parquet` as Parquet,
/// `.feather`, `.arrow` or `.ipc` as Feather (Arrow IPC), `.json` as
/// freqtrade JSON, anything else as CSV; each decompressed first when the
/// name ends in `.gz` (a gzipped Parquet or Feather file is expanded whole
/// in memory, within [`MAX_EXPANDED_BYTES`]).
pub fn read_file(path: &Path) -> Result<Vec<Candle>, CandleError> {
    read_file_columns(path, &Columns::default())
}

/// `read_file_columns`, the candles handed to `each` in pieces, oldest
/// first: a Parquet, CSV or JSON file as it is read (never held whole), a
/// Feather file in one piece. The first error of `each` ends the read and is returned.
pub fn read_file_each<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    mut each: impl FnMut(Vec<Candle>) -> Result<(), E>,
) -> Result<(), E> {
    read_file_each_marked(path, columns, |candles, _| each(candles))
}

/// [`read_file_each`], each piece with the times of its bars the file
/// marks partial (see [`read_file_marked`]).
pub fn read_file_each_marked<E: From<CandleError>>(
    path: &Path,
    columns: &Columns,
    mut each: impl FnMut(Vec<Candle>, Vec<i64>) -> Result<(), E>,
) -> Result<(), E> {
    #[cfg(feature = "formats")]
    if is_parquet(path) {
        return parquet::read_parquet_each_marked(path, columns, each);
    }
    if !is_parquet(path) && !is_feather(path) && !is_json(path) {
        return csv::read_csv_each_marked(path, columns, each);
    }
    if is_json(path) && !columns.any_named() {
        return read_json_each(path, |candles| each(candles, Vec::new()));
    }
    let (candles, marks) = read_file_marked(path, columns)?;
    each(candles, marks)
}

/// What a reader does after each piece it reads with the candles (and
/// the times of those marked partial) it has not had taken yet: takes
/// them or leaves them, and says whether to go on.
pub(crate) type Take<'a> = dyn FnMut(&mut Vec<Candle>, &mut Vec<i64>) -> bool + 'a;

/// The pieces of `read` (a reader that offers its candles to a [`Take`]
/// after each piece) given to `each`, every one taken with its marks;
/// `each`'s first error ends the read and is returned.
pub(crate) fn in_pieces<E: From<CandleError>>(
    mut each: impl FnMut(Vec<Candle>, Vec<i64>) -> Result<(), E>,
    read: impl FnOnce(&mut Take<'_>) -> Result<Marked, CandleError>,
) -> Result<(), E> {
    let mut failed = None;
    let read = read(&mut |candles, marks| {
        (each(std::mem::take(candles), std::mem::take(marks)))
            .map_err(|e| failed = Some(e))
            .is_ok()
    });
    match failed {
        Some(e) => Err(e),
        None => read.map(drop).map_err(E::from),
    }
}

/// Candles, and the open times of those among them a file marks partial,
/// oldest first.
pub type Marked = (Vec<Candle>, Vec<i64>);

/// The name of the column that marks partial bars (as `keel data export
/// --timeframe` writes it): `true` or `false` in CSV (`True`, `1`, `0`
/// too), boolean in Parquet and Feather. Any case.
pub const PARTIAL_COLUMN: &str = "partial";

/// `read_file`, with the columns for the roles `columns` names found by
/// those names (a JSON file has no names: `columns` must be empty).
pub fn read_file_columns(path: &Path, columns: &Columns) -> Result<Vec<Candle>, CandleError> {
    read_file_marked(path, columns).map(|(candles, _)| candles)
}

/// [`read_file_columns`], and the open times of the bars the file marks
/// partial: a column [`PARTIAL_COLUMN`] in a CSV, Parquet or Feather file
/// (none in freqtrade JSON, or a file without it).
pub fn read_file_marked(path: &Path, columns: &Columns) -> Result<Marked, CandleError> {
    #[cfg(feature = "formats")]
    {
        if is_parquet(path) {
            return parquet::read_parquet_marked(path, columns);
        }
        if is_feather(path) {
            return feather::read_feather_marked(path, columns);
        }
    }
    let name = path.display().to_string();
    #[cfg(not(feature = "formats"))]
    if is_parquet(path) || is_feather(path) {
        return Err(without_formats(path));
    }
    if is_json(path) {
        if columns.any_named() {
            return Err(CandleError::Invalid {
                path: name,
                line: 1,
                message: "freqtrade JSON has no column names: --columns is for CSV, \
                          Parquet and Feather"
                    .into(),
            });
        }
        return read_json(path).map(|candles| (candles, Vec::new()));
    }
    csv::read_csv_marked(path, columns)
}

/// Writes candles to a file in the format its name says: `.parquet` as
/// Parquet (`write_parquet`), anything else as CSV (`write_csv`; `.gz`
/// compressed). Either replaces `path` whole.
pub fn write_file(path: &Path, candles: &[Candle]) -> Result<(), CandleError> {
    refuse_gzipped_parquet(path)?;
    if is_parquet(path) {
        #[cfg(feature = "formats")]
        return write_parquet(path, candles);
        #[cfg(not(feature = "formats"))]
        return Err(without_formats(path));
    }
    write_csv(path, candles)
}

/// Writes a candle file as `write_file` does (its format by its name,
/// replaced whole), from candles `fill` hands to `put` in pieces, oldest
/// first, so that they need not be held whole. When `marked`, the file has
/// a last column `partial` (boolean in Parquet, `true`/`false` in CSV) and
/// each piece comes with whether each of its bars is partial; otherwise
/// with no marks (`&[]`). When `fill` fails nothing is written and its
/// error is returned.
pub fn write_file_each<E: From<CandleError>>(
    path: &Path,
    marked: bool,
    fill: impl FnOnce(&mut Put<'_>) -> Result<(), E>,
) -> Result<(), E> {
    /// Where the pieces go, by the file's name.
    enum Rows {
        Csv(CsvRows<std::fs::File>),
        Gzip(CsvRows<flate2::write::GzEncoder<std::fs::File>>),
        #[cfg(feature = "formats")]
        Parquet(Box<self::parquet::ParquetRows<std::fs::File>>),
    }
    refuse_gzipped_parquet(path)?;
    #[cfg(not(feature = "formats"))]
    if is_parquet(path) {
        return Err(without_formats(path).into());
    }
    let mut failed = None;
    let written = replace::replace_file(path, |file| {
        let mut rows = match () {
            #[cfg(feature = "formats")]
            () if is_parquet(path) => {
                Rows::Parquet(Box::new(self::parquet::ParquetRows::new(file, marked)?))
            }
            () if is_gzip(path) => Rows::Gzip(CsvRows::new(
                flate2::write::GzEncoder::new(file, GZIP_LEVEL),
                marked,
            )?),
            () => Rows::Csv(CsvRows::new(file, marked)?),
        };
        let filled = fill(&mut |candles, partial| match &mut rows {
            Rows::Csv(r) => r.write(candles, partial),
            Rows::Gzip(r) => r.write(candles, partial),
            #[cfg(feature = "formats")]
            Rows::Parquet(r) => r.write(candles, partial),
        });
        if let Err(e) = filled {
            failed = Some(e);
            return Err(std::io::Error::other("stopped"));
        }
        match rows {
            Rows::Csv(r) => r.finish(),
            Rows::Gzip(r) => r.finish()?.finish(),
            #[cfg(feature = "formats")]
            Rows::Parquet(r) => r.finish(),
        }
    });
    match failed {
        Some(e) => Err(e),
        None => written.map_err(E::from),
    }
}

/// Where a writer's caller puts the next bars, and whether each is
/// partial (see [`write_file_each`]).
pub type Put<'a> = dyn FnMut(&[Candle], &[bool]) -> std::io::Result<()> + 'a;

/// Whether `partial` fits `candles` for a file that marks partial bars
/// (`marked`: a mark for each) or does not (none); else an error saying
/// which, as a writer's caller got them wrong.
pub(crate) fn marks_fit(marked: bool, candles: &[Candle], partial: &[bool]) -> std::io::Result<()> {
    let wanted = if marked { candles.len() } else { 0 };
    if partial.len() == wanted {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} marks of partial bars for {} bars in a file {}",
            partial.len(),
            candles.len(),
            if marked {
                "that marks each"
            } else {
                "without marks"
            }
        ),
    ))
}

/// How hard a written `.gz` file is compressed: the fastest level (about
/// four times faster than the default, a fifth larger), as an export of
/// millions of bars is waited for.
pub(crate) const GZIP_LEVEL: flate2::Compression = flate2::Compression::new(1);

/// A Parquet file is written as it is, its columns compressed: not
/// gzipped whole (`.parquet.gz`), which is read only.
fn refuse_gzipped_parquet(path: &Path) -> Result<(), CandleError> {
    match is_parquet(path) && is_gzip(path) {
        true => Err(CandleError::Format {
            path: path.display().to_string(),
            message: "Parquet is written as it is (its columns compressed), not gzipped \
                      whole: name it .parquet"
                .into(),
        }),
        false => Ok(()),
    }
}

/// A Parquet or Feather file where keel-model is built without them.
#[cfg(not(feature = "formats"))]
fn without_formats(path: &Path) -> CandleError {
    CandleError::Format {
        path: path.display().to_string(),
        message: "this build reads no Parquet or Feather (keel-model's `formats` feature)".into(),
    }
}

/// Whether `path` names a Parquet file, by its extension: `.parquet`, or
/// `.parquet.gz` for one gzipped whole (read, not written).
pub fn is_parquet(path: &Path) -> bool {
    has_extension(path, &["parquet"])
}

/// Whether `path` names a Feather (Arrow IPC) file, by its extension:
/// `.feather`, `.arrow` or `.ipc`, each perhaps gzipped whole (`.gz`).
pub fn is_feather(path: &Path) -> bool {
    has_extension(path, &["feather", "arrow", "ipc"])
}

/// Whether `path`'s extension is one of `any`, or `.gz` after one.
fn has_extension(path: &Path, any: &[&str]) -> bool {
    let inner = match is_gzip(path) {
        true => path.file_stem().map(Path::new),
        false => Some(path),
    };
    inner
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .is_some_and(|ext| any.iter().any(|a| ext.eq_ignore_ascii_case(a)))
}

/// A file's name without the extensions of candle files (`ETH_BTC-5m.csv.gz`
/// → `ETH_BTC-5m`).
fn file_stem(path: &Path) -> Option<&str> {
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
    Some(name)
}

/// The bar length a candle file's name ends in (`ETH_BTC-5m.csv` → 5m), as
/// freqtrade names its files; for a file too short to tell by its bars.
pub fn timeframe_from_file(path: &Path) -> Option<Timeframe> {
    let (stem, tf) = file_stem(path)?.rsplit_once(['-', '_'])?;
    Timeframe::parse(tf).filter(|_| !stem.is_empty())
}

/// The symbol a candle file's name gives: the name without its extensions
/// and a trailing timeframe, a pair written `ETH_BTC` or `BTC-USD` as
/// `ETH/BTC`, `BTC/USD` (`GOOG-1d.csv` → `GOOG`, `ETH_BTC-5m.json` →
/// `ETH/BTC`, `UNITTEST_BTC-1m.csv` → `UNITTEST_BTC`).
pub fn symbol_from_file(path: &Path) -> Option<String> {
    let mut name = file_stem(path)?;
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
    has_extension(path, &["json"])
}
