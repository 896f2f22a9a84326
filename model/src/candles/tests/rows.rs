//! Tests of files without a header (six numbers a row) and of lines that
//! are not what they seem.
use super::super::*;

/// A file without a header whose rows end with a comma (an empty field
/// after the volume, as some exporters write) is read as its six numbers:
/// the empty field is nothing, not a word where a number should be.
#[test]
fn a_headerless_file_whose_rows_end_with_a_comma_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.csv");
    let rows = "1700000000000,1,2,1,2,5,\n1700000060000,2,3,2,3,6,\n";
    std::fs::write(&path, rows).expect("write");
    let candles = read_file(&path).expect("rows ending with a comma");
    assert_eq!(candles.len(), 2);
    assert_eq!(
        (candles[1].time_ms, candles[1].close, candles[1].volume),
        (1_700_000_060_000, 3.0, 6.0)
    );
    // A word after an empty field is still a word.
    std::fs::write(&path, "1700000000000,1,2,1,2,5,,x\n").expect("write");
    let err = read_file(&path).expect_err("a word").to_string();
    assert!(err.contains("its field 8 'x' is not a number"), "{err}");
    // An empty price is a price missing, said as such.
    std::fs::write(&path, "1700000000000,1,,1,2,5\n").expect("write");
    let err = read_file(&path).expect_err("a price missing").to_string();
    assert!(
        err.contains("bare.csv:1: the first line is a row of data, not a header, but its field 3 '' is not a number"),
        "{err}"
    );
}

/// In a file without a header, every row holds numbers alone: a word
/// after the six on a later row is refused with its line, as on the first.
#[test]
fn a_word_after_the_six_numbers_of_a_later_row_is_refused_by_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.csv");
    for first in ["", "0"] {
        let rows = format!("1700000000000,1,2,1,2,5,{first}\n1700000060000,2,3,2,3,6,true\n");
        std::fs::write(&path, rows).expect("write");
        let err = read_file(&path).expect_err("a word").to_string();
        assert!(
            err.contains("bare.csv:2: field 7 'true' is not a number"),
            "{first:?}: {err}"
        );
    }
    // Past the first sixteen fields alike.
    let wide = |last: &str| format!("{},{last}\n", ["1"; 19].join(","));
    let rows = format!(
        "1700000000000,1,2,1,2,5,{}1700000060000,2,3,2,3,6,{}",
        wide("2"),
        wide("x")
    );
    std::fs::write(&path, rows).expect("write");
    let err = read_file(&path).expect_err("a word").to_string();
    assert!(
        err.contains("bare.csv:2: field 26 'x' is not a number"),
        "{err}"
    );
    // Numbers and nothing after the six are still read.
    let rows = "1700000000000,1,2,1,2,5,7,\n1700000060000,2,3,2,3,6,,8\n";
    std::fs::write(&path, rows).expect("write");
    assert_eq!(read_file(&path).expect("numbers").len(), 2);
}

/// Lines ended by a carriage return alone (classic Mac OS) make one line
/// of the whole file: refused, saying so, whether the file is small (one
/// line of many numbers, once read as a single bar) or larger than the
/// longest line.
#[test]
fn lines_ended_by_a_carriage_return_alone_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mac.csv");
    let row = |i: i64| format!("{},1,2,1,2,5,", 1_700_000_000_000 + i * 60_000);
    for (rows, header) in [
        (3, ""),
        (3, "time,open,high,low,close,volume\r"),
        (40_000, ""),
    ] {
        let body: Vec<String> = (0..rows).map(row).collect();
        std::fs::write(&path, format!("{header}{}\r", body.join("\r"))).expect("write");
        let err = read_file(&path).expect_err("CR alone").to_string();
        assert!(
            err.contains("mac.csv:1:") && err.contains("carriage return alone"),
            "{rows} rows: {err}"
        );
    }
    // Some rows alone joined by one, below a header ended by a newline.
    std::fs::write(
        &path,
        "time,open,high,low,close,volume\n1700000000000,1,2,1,2,5\r1700000060000,1,2,1,2,5\n",
    )
    .expect("write");
    let err = read_file(&path).expect_err("CR alone").to_string();
    assert!(
        err.contains("mac.csv:2: its lines end with a carriage return alone"),
        "{err}"
    );
    // Lines ended by CR LF are read.
    let body: Vec<String> = (0..3).map(row).collect();
    std::fs::write(&path, format!("{}\r\n", body.join("\r\n"))).expect("write");
    assert_eq!(read_file(&path).expect("CR LF").len(), 3);
}

/// A file without a header has no names for `--columns` to pick: naming
/// a column, the partial one too, is refused rather than passed over.
#[test]
fn columns_named_for_a_file_without_a_header_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.csv");
    std::fs::write(&path, "1700000000000,1,2,1,2,5\n").expect("write");
    for named in ["close=x", "partial=x"] {
        let columns = Columns::parse(named).expect("parse");
        let err = read_file_marked(&path, &columns)
            .expect_err(named)
            .to_string();
        assert!(
            err.contains("bare.csv:1: the file has no header"),
            "{named}: {err}"
        );
    }
}
