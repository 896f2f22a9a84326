//! Tests of the column `partial` that marks partial bars: read from CSV
//! and Parquet, and refused when bad or ambiguous.
use super::super::*;
use std::path::Path;

/// A column `partial` marks bars as pandas and Keel write it (`True`,
/// `false`, `1`, `0`, any case, anywhere in the row); a mark that is
/// neither is refused with its line, and a file without the column marks
/// nothing.
#[test]
fn a_partial_column_marks_bars_and_a_bad_mark_is_refused_by_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("marked.csv");
    std::fs::write(
        &path,
        "date,Partial,open,high,low,close,volume\n\
         2024-01-01 00:00:00,True,1,2,1,2,5\n\
         2024-01-01 01:00:00,false,2,3,2,3,5\n\
         2024-01-01 02:00:00,1,3,4,3,4,5\n\
         2024-01-01 03:00:00,0,4,5,4,5,5\n",
    )
    .expect("write");
    let (candles, marks) = read_file_marked(&path, &Columns::default()).expect("read");
    assert_eq!(candles.len(), 4);
    assert_eq!(marks, [candles[0].time_ms, candles[2].time_ms]);
    assert_eq!(read_file(&path).expect("unmarked"), candles);

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "time,open,high,low,close,volume,partial\n160000,1,1,1,1,1,false\n220000,1,1,1,1,1,maybe\n",
    )
    .expect("write");
    let err = read_file_marked(&bad, &Columns::default())
        .expect_err("a bad mark")
        .to_string();
    assert!(
        err.ends_with("bad.csv:3: the mark of a partial bar 'maybe' is neither true nor false"),
        "{err}"
    );

    let plain = dir.path().join("plain.csv");
    std::fs::write(&plain, format!("{}60000,1,1,1,1,1\n", super::HEADER)).expect("write");
    let (_, marks) = read_file_marked(&plain, &Columns::default()).expect("read");
    assert!(marks.is_empty());
}

/// Two columns that could mark partial bars (`partial` and `Partial`) are
/// a guess which one the file means, as two `close` columns are: refused,
/// naming both, whether or not they agree.
#[test]
fn two_partial_columns_are_refused_as_ambiguous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("twice.csv");
    std::fs::write(
        &path,
        "time,open,high,low,close,volume,partial,Partial\n60000,1,1,1,1,1,true,false\n",
    )
    .expect("write");
    let err = read_file_marked(&path, &Columns::default())
        .expect_err("two partial columns")
        .to_string();
    assert!(
        err.contains("twice.csv:1: two columns could mark partial bars: 'partial' and 'Partial'"),
        "{err}"
    );
    assert!(
        err.contains("name one with --columns partial=NAME"),
        "{err}"
    );
    // Read without its marks, the file is refused alike: what it says is
    // unclear either way.
    assert!(read_file(&path).is_err());
    // Named, the one named marks the bars.
    let named = Columns::parse("partial=Partial").expect("parse");
    let (_, marks) = read_file_marked(&path, &named).expect("one named");
    assert!(marks.is_empty(), "{marks:?}");
    let named = Columns::parse("partial=partial").expect("parse");
    let (_, marks) = read_file_marked(&path, &named).expect("one named");
    assert_eq!(marks, [60_000]);
    // A name the file does not have is refused, naming it.
    let named = Columns::parse("partial=Teil").expect("parse");
    let err = read_file_marked(&path, &named)
        .expect_err("no such column")
        .to_string();
    assert!(
        err.contains("no column 'Teil' to mark partial bars"),
        "{err}"
    );
    // Nor can a role's column mark them.
    let named = Columns::parse("partial=close").expect("parse");
    let err = read_file_marked(&path, &named)
        .expect_err("the close's")
        .to_string();
    assert!(err.contains("'close' is the close's column"), "{err}");
    // Spelled as neither, a name that both match in another case is the
    // guess refused above.
    let named = Columns::parse("partial=PARTIAL").expect("parse");
    let err = read_file_marked(&path, &named)
        .expect_err("both match")
        .to_string();
    assert!(
        err.contains("'PARTIAL' could be either of two columns: 'partial' and 'Partial'"),
        "{err}"
    );
    assert_eq!(
        Columns::parse("partial=a,partial=b").expect_err("twice"),
        "partial is named twice"
    );
    // freqtrade JSON has no column names to pick from.
    let json = dir.path().join("bars.json");
    std::fs::write(&json, "[[1700000000000,1,2,1,2,5]]").expect("write");
    let named = Columns::parse("partial=Partial").expect("parse");
    let err = read_file_marked(&json, &named)
        .expect_err("JSON")
        .to_string();
    assert!(err.contains("has no column names"), "{err}");
}

/// A file without a header whose rows carry a mark after the volume (or
/// any field that is not a number) is not taken for a header that lacks
/// a time column: the error says the line is a row and what to do.
#[test]
fn a_headerless_row_with_a_word_after_the_volume_is_said_to_be_a_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.csv");
    std::fs::write(&path, "60000,1,2,1,2,5,true\n120000,2,3,2,3,5,false\n").expect("write");
    let err = read_file(&path).expect_err("a row with a word").to_string();
    assert!(
        err.contains(
            "bare.csv:1: the first line is a row of data, not a header, but its field 7 'true' \
             is not a number"
        ),
        "{err}"
    );
    assert!(!err.contains("missing column"), "{err}");
    // A header that names its columns is still read, with its marks.
    std::fs::write(
        &path,
        "time,open,high,low,close,volume,partial\n60000,1,2,1,2,5,true\n",
    )
    .expect("write");
    let (_, marks) = read_file_marked(&path, &Columns::default()).expect("read");
    assert_eq!(marks, [60_000]);
}

/// A Parquet file at `path` of two bars (at 1 and 2 minutes, every price
/// and volume 1), with `extra` columns after the volume.
#[cfg(feature = "formats")]
fn two_bars_in_parquet(path: &Path, extra: Vec<(&str, arrow_array::ArrayRef)>) {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let ones = || Arc::new(Float64Array::from(vec![1.0, 1.0])) as ArrayRef;
    let times = Arc::new(Int64Array::from(vec![60_000, 120_000])) as ArrayRef;
    let mut columns = vec![("time", times)];
    columns.extend(["open", "high", "low", "close", "volume"].map(|name| (name, ones())));
    columns.extend(extra);
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        ::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// The same in Parquet: two boolean `partial` columns are refused before a
/// row is read, unless one is named.
#[cfg(feature = "formats")]
#[test]
fn two_parquet_partial_columns_are_refused_as_ambiguous() {
    use arrow_array::{ArrayRef, BooleanArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("twice.parquet");
    let marks = |a: bool, b: bool| Arc::new(BooleanArray::from(vec![a, b])) as ArrayRef;
    two_bars_in_parquet(
        &path,
        vec![
            ("partial", marks(true, false)),
            ("PARTIAL", marks(false, false)),
        ],
    );
    let err = read_file_marked(&path, &Columns::default())
        .expect_err("two partial columns")
        .to_string();
    assert!(
        err.contains("two columns could mark partial bars: 'partial' and 'PARTIAL'"),
        "{err}"
    );
    for (name, marked) in [("partial", vec![60_000]), ("PARTIAL", vec![])] {
        let named = Columns::parse(&format!("partial={name}")).expect("parse");
        let (_, marks) = read_file_marked(&path, &named).expect("one named");
        assert_eq!(marks, marked, "{name}");
    }
}

/// A Parquet file's `partial` column is boolean: one of another type is
/// refused, naming it, before a row is read.
#[cfg(feature = "formats")]
#[test]
fn a_parquet_partial_column_that_is_not_boolean_is_refused() {
    use arrow_array::Int64Array;
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ints.parquet");
    let ints = Arc::new(Int64Array::from(vec![0, 1])) as arrow_array::ArrayRef;
    two_bars_in_parquet(&path, vec![("partial", ints)]);
    let err = read_file_marked(&path, &Columns::default())
        .expect_err("not booleans")
        .to_string();
    assert!(
        err.ends_with("column 'partial' holds Int64, not booleans (true for a partial bar)"),
        "{err}"
    );
}
