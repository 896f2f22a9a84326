//! Tests of candle files: reading every layout, gzip, times and the rules.
use super::*;

mod marks;
mod rows;
mod writing;

#[test]
fn a_csv_is_read_in_blocks_with_its_lines_named_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Some 11 MB: lines cut across several blocks.
    let candles = crate::synth::random_walk(2, 200_000, 0, 60_000, 10.0, 0.01);
    let path = dir.path().join("a.csv");
    write_csv(&path, &candles).expect("write");
    assert!(std::fs::metadata(&path).expect("size").len() > 8 << 20);
    let read = read_csv(&path).expect("read");
    assert_eq!(read.len(), candles.len());
    let text = std::fs::read_to_string(&path).expect("text");
    assert_eq!(read, parse_csv(&text, "a.csv").expect("parse"));

    // A line no candle file has: refused, not buffered.
    let long = dir.path().join("long.csv");
    let mut bytes = format!("{HEADER}1,1,1,1,1,1\n").into_bytes();
    bytes.extend(std::iter::repeat_n(b'9', 3 << 20));
    std::fs::write(&long, &bytes).expect("write");
    let err = read_csv(&long).expect_err("long").to_string();
    assert!(
        err.ends_with("long.csv:3: a line longer than 1024 KiB: not candles"),
        "{err}"
    );

    // Bytes that are not text, named by their line.
    let binary = dir.path().join("b.csv");
    let mut bytes = format!("{HEADER}60000,1,1,1,1,1\n120000,1,1,1,1,1\n").into_bytes();
    bytes.extend([0x1f, 0x8b, 0xff, b'\n']);
    std::fs::write(&binary, &bytes).expect("write");
    let err = read_csv(&binary).expect_err("binary").to_string();
    assert!(
        err.ends_with("b.csv:4: not UTF-8 text (a compressed file? name it .csv.gz)"),
        "{err}"
    );

    // A file of another kind under a CSV's name: said what it is.
    for (start, says) in [
        (&b"PAR1\x15\x04"[..], "a Parquet file: name it .parquet"),
        (
            b"ARROW1\0\0\xff",
            "an Arrow IPC (Feather) file: name it .feather",
        ),
        (b"\x1f\x8b\x08\0", "gzip-compressed: name it .csv.gz"),
        (
            b"BZh91AY&SY\xff",
            "bzip2-compressed, which Keel does not read",
        ),
        (
            b"\xfd7zXZ\0\0\x04",
            "xz-compressed, which Keel does not read",
        ),
        (
            b"\x28\xb5\x2f\xfd\x04",
            "zstd-compressed, which Keel does not read",
        ),
        (
            b"PK\x03\x04\x14\0\xff",
            "a zip archive, which Keel does not read: unzip it first",
        ),
        (b"\xff\xfe\x00", "b.csv:1: UTF-16 text: save it as UTF-8"),
        (b"PK\x05\x06\0\0", "an empty zip archive"),
        (
            b"[[1704067200000,1,2,0.5,1.5,10]]",
            "JSON (freqtrade's candles?), not CSV: name it .json",
        ),
        (b"\xc3\x28\n", "b.csv:1: not UTF-8 text"),
    ] {
        std::fs::write(&binary, start).expect("write");
        let err = read_csv(&binary).expect_err("not text").to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn the_quick_time_reader_agrees_with_rfc_3339_everywhere() {
    // Every day boundary of the years Keel accepts, at odd hours, plus
    // the dates a calendar gets wrong.
    let mut ms = CANDLE_TIME_MS.0;
    while ms <= CANDLE_TIME_MS.1 {
        let text = format_time(ms);
        assert_eq!(utc_seconds_ms(&text), Some(ms), "{text}");
        ms += 86_400_000 * 7 + 3_600_000 * 5 + 60_000 * 7 + 13_000;
    }
    for text in [
        "2000-02-29T23:59:59Z",
        "1900-03-01T00:00:00Z",
        "2024-12-31T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ] {
        let chrono = chrono::DateTime::parse_from_rfc3339(text).expect(text);
        assert_eq!(
            utc_seconds_ms(text),
            Some(chrono.timestamp_millis()),
            "{text}"
        );
    }
    // Not dates: left to the general parsers, which refuse them.
    for text in [
        "1900-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-00T00:00:00Z",
        "2024-01-01T00:00:0xZ",
        "2024-01-01 00:00:00Z",
    ] {
        assert_eq!(utc_seconds_ms(text), None, "{text}");
    }
    assert!(parse_time("2023-02-29T00:00:00Z").is_err());
}

const HEADER: &str = "time,open,high,low,close,volume\n";

#[test]
fn a_gzip_file_is_read_through() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from(HEADER);
    for i in 0..40 {
        text.push_str(&format!("{},1,2,0.5,1.5,10\n", 1_600_000_000 + i * 60));
    }
    let gz = dir.path().join("x.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("compress");
    std::fs::write(&gz, encoder.finish().expect("compress")).expect("write");
    assert_eq!(read_file(&gz).expect("read").len(), 40);
    // Parquet and Feather gzipped whole under a CSV's name: said so, and
    // what to name them (by those names they are read: `parquet.rs`,
    // `feather.rs`).
    for (start, says) in [
        (
            &b"ARROW1\0\0\xff"[..],
            "x.csv.gz:1: a gzip-compressed Arrow IPC (Feather) file: name it .feather.gz",
        ),
        (
            b"PAR1\x15\x04",
            "x.csv.gz:1: a gzip-compressed Parquet file: name it .parquet.gz",
        ),
    ] {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(start).expect("compress");
        std::fs::write(&gz, encoder.finish().expect("compress")).expect("write");
        let err = read_file(&gz).expect_err("not CSV").to_string();
        assert!(err.ends_with(says), "{err}");
    }
    for (name, parquet, feather) in [
        ("x.parquet.gz", true, false),
        ("x.PARQUET.GZ", true, false),
        ("x.feather.gz", false, true),
        ("x.arrow.gz", false, true),
        ("x.ipc.gz", false, true),
        ("x.csv.gz", false, false),
        ("parquet.gz", false, false),
        ("x.gz", false, false),
    ] {
        let path = Path::new(name);
        assert_eq!(
            (is_parquet(path), is_feather(path)),
            (parquet, feather),
            "{name}"
        );
    }
    assert!(is_json(Path::new("a/ETH_BTC-5m.json.gz")) && is_json(Path::new("b.JSON")));
    assert!(!is_json(Path::new("x.csv.gz")) && !is_json(Path::new("json.gz")));
}

#[test]
fn reads_rfc3339_and_epoch_ms() {
    let text =
        format!("{HEADER}2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n1515560400000,1.5,2,1,1.8,3\n");
    let candles = parse_csv(&text, "t.csv").expect("valid");
    assert_eq!(candles.len(), 2);
    assert_eq!(candles[0].time_ms, 1_515_560_100_000);
    assert_eq!(candles[1].time_ms, 1_515_560_400_000);
    assert_eq!(format_time(candles[0].time_ms), "2018-01-10T04:55:00Z");
}

/// Fields in double quotes (pandas writes a text column with a comma in it
/// so) are one field each, commas and doubled quotes inside; a quote left
/// open at the end of a line is said to be one.
#[test]
fn quoted_fields_keep_their_commas() {
    let text = "\"time\",open,high,low,close,volume,note\n\
                2024-01-01T00:00:00Z,1,2,0.5,1.5,10,\"a, b\"\n\
                \"2024-01-01T00:01:00Z\",\"1\",2,0.5,1.5,10,\"say \"\"hi, there\"\"\"\n\
                2024-01-01T00:02:00Z,1,2,0.5,1.5,10,plain\n";
    let read = parse_csv(text, "q.csv").expect("quoted");
    let times: Vec<i64> = read.iter().map(|c| c.time_ms).collect();
    assert_eq!(
        times,
        [1_704_067_200_000, 1_704_067_260_000, 1_704_067_320_000]
    );
    assert!(read.iter().all(|c| c.open == 1.0 && c.volume == 10.0));

    let open = "time,open,high,low,close,volume,note\n\
                2024-01-01T00:00:00Z,1,2,0.5,1.5,10,\"two\nlines\"\n";
    let err = parse_csv(open, "q.csv")
        .expect_err("open quote")
        .to_string();
    assert_eq!(
        err,
        "q.csv:2: a quoted field does not end on its line (Keel reads a row a line: no line breaks inside quotes)"
    );
    // A quote inside a field, not at its start, is a character of it.
    let inch = "time,open,high,low,close,volume,note\n\
                2024-01-01T00:00:00Z,1,2,0.5,1.5,10,12\" pipe, steel\n";
    let err = parse_csv(inch, "q.csv")
        .expect_err("an unquoted comma")
        .to_string();
    assert_eq!(err, "q.csv:2: expected 7 fields, found 8");
    let inch = inch.replace(", steel", "");
    assert_eq!(
        parse_csv(&inch, "q.csv").expect("a quote mid-field").len(),
        1
    );
    // A number written with a thousands comma, quoted: a field that is not a number.
    let thousands = format!("{HEADER}2024-01-01T00:00:00Z,\"1,000\",2000,900,1000,10\n");
    let err = parse_csv(&thousands, "q.csv")
        .expect_err("1,000")
        .to_string();
    assert_eq!(err, "q.csv:2: open '1,000' is not a number");
}

/// yfinance (0.2.51 and later) writes a header of three rows: the prices
/// over the `Price` column (which holds the dates), the tickers, the
/// index's name. Read as its one header.
#[test]
fn yfinance_s_three_header_rows_are_one_header() {
    // As `yf.download("GOOG").to_csv(f)` writes it (the shape made with
    // pandas: columns a MultiIndex named Price and Ticker, index Date).
    let text = "Price,Close,High,Low,Open,Volume\n\
                Ticker,GOOG,GOOG,GOOG,GOOG,GOOG\n\
                Date,,,,,\n\
                2024-01-02,139.5,140.6,137.7,138.5,20071900\n\
                2024-01-03,136.1,138.9,136.0,138.9,20123100\n";
    let columns = Columns::default().with_dates(true);
    let read = parse_csv_columns(text, "yf.csv", &columns).expect("yfinance");
    assert_eq!(read.len(), 2);
    assert_eq!(format_time(read[0].time_ms), "2024-01-02T00:00:00Z");
    assert_eq!(
        (
            read[0].open,
            read[0].high,
            read[0].low,
            read[0].close,
            read[0].volume
        ),
        (138.5, 140.6, 137.7, 139.5, 20_071_900.0)
    );
    // Several tickers side by side (`yf.download(["AAPL", "GOOG"])`), or
    // a tickers' row naming two: refused, never one ticker's prices read
    // as another's.
    let two = "Price,Close,Close,High,High,Low,Low,Open,Open,Volume,Volume\n\
               Ticker,AAPL,GOOG,AAPL,GOOG,AAPL,GOOG,AAPL,GOOG,AAPL,GOOG\n\
               Date,,,,,,,,,,\n\
               2024-01-02,200.0,100.0,201.0,101.0,199.0,99.0,200.5,100.5,5000.0,1000.0\n";
    let err = parse_csv_columns(two, "yf.csv", &columns)
        .expect_err("two tickers")
        .to_string();
    assert!(
        err.contains("two columns are named") && err.contains("several tickers"),
        "{err}"
    );
    let mixed = text.replace("Ticker,GOOG,GOOG", "Ticker,GOOG,AAPL");
    let err = parse_csv_columns(&mixed, "yf.csv", &columns)
        .expect_err("mixed")
        .to_string();
    assert_eq!(
        err,
        "yf.csv:2: the tickers' row names several (GOOG, AAPL); save one ticker's"
    );
    // Without the rows after it, a `Price` header is still read; a row
    // that is not a label is data.
    let short = "Price,Close,High,Low,Open,Volume\n2024-01-02,139.5,140.6,137.7,138.5,1\n";
    let read = parse_csv_columns(short, "yf.csv", &columns).expect("one row");
    assert_eq!(read.len(), 1);
}

/// pandas' `to_csv` of a frame whose time index has no name writes the
/// header `,open,high,…`: the unnamed first column is the time.
#[test]
fn an_unnamed_index_column_is_the_time() {
    let text = ",open,high,low,close,volume\n2024-01-01 00:00:00+00:00,1,2,0.5,1.5,10\n";
    let read = parse_csv(text, "p.csv").expect("unnamed index");
    assert_eq!(read[0].time_ms, 1_704_067_200_000);
}

#[test]
fn a_byte_order_mark_is_passed_over_with_a_header_or_without() {
    let rows = "1704067200000,1,2,0.5,1.5,10\n1704067260000,1,2,0.5,1.5,10\n";
    for text in [format!("\u{feff}{rows}"), format!("\u{feff}{HEADER}{rows}")] {
        let read = parse_csv(&text, "b.csv").expect("valid");
        let times: Vec<i64> = read.iter().map(|c| c.time_ms).collect();
        assert_eq!(times, [1_704_067_200_000, 1_704_067_260_000], "{text:?}");
    }
}

#[test]
fn local_midnights_are_dates_when_the_bars_are_daily() {
    // yfinance's `history()` of a US stock, across the March change: local
    // midnights an hour apart in UTC. Tokyo's are the day before in UTC.
    let text = "Date,Open,High,Low,Close,Volume\n\
                2024-03-08 00:00:00-05:00,1,2,0.5,1.5,10\n\
                2024-03-11 00:00:00-04:00,1,2,0.5,1.5,10\n\
                2024-03-12T00:00:00+09:00,1,2,0.5,1.5,10\n\
                2024-03-13 00:00:00+00:00,1,2,0.5,1.5,10\n\
                2024-03-14 09:30:00-04:00,1,2,0.5,1.5,10\n";
    let day = |d: &str| parse_time(d).expect(d);
    let dated = Columns::default().with_dates(true);
    let read = parse_csv_columns(text, "d.csv", &dated).expect("valid");
    let times: Vec<i64> = read.iter().map(|c| c.time_ms).collect();
    let expected = [
        day("2024-03-08"),
        day("2024-03-11"),
        day("2024-03-12"),
        // UTC's midnight is its date already; a time of day stays one.
        day("2024-03-13"),
        day("2024-03-14T13:30:00Z"),
    ];
    assert_eq!(times, expected);
    // Otherwise every time is the instant it names.
    let read = parse_csv(text, "d.csv").expect("valid");
    assert_eq!(read[0].time_ms, day("2024-03-08T05:00:00Z"));
    assert_eq!(read[1].time_ms, day("2024-03-11T04:00:00Z"));
    assert_eq!(read[2].time_ms, day("2024-03-11T15:00:00Z"));
}
#[test]
fn bad_lines_are_named() {
    struct Case {
        body: &'static str,
        expect: &'static str,
    }
    let cases = [
        Case {
            body: "2018-01-10T04:55:00Z,1,2,3,1.5,10\n",
            expect: "t.csv:2: high 2 is below low 3",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n2018-01-10T04:55:00Z,1,2,0.5,1.5,10\n",
            expect: "t.csv:3: time 2018-01-10T04:55:00Z is not after the previous bar's 2018-01-10T04:55:00Z",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5,NaN,10\n",
            expect: "t.csv:2: close is NaN",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5\n",
            expect: "t.csv:2: expected 6 fields, found 4",
        },
        // Seconds, then milliseconds: one file, one unit.
        Case {
            body: "1704067200,1,2,0.5,1.5,10\n1704067260000,1,2,0.5,1.5,10\n",
            expect: "t.csv:3: time '1704067260000' has 13 digits where the first row's has 10: \
                     a file's epoch times are in one unit",
        },
        Case {
            body: "yesterday,1,2,0.5,1,1\n",
            expect: "t.csv:2: time 'yesterday' is neither RFC 3339, a date and time, nor epoch time",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5,x,1\n",
            expect: "t.csv:2: close 'x' is not a number",
        },
        Case {
            body: "2018-01-10T04:55:00Z,3,2,0.5,1,1\n",
            expect: "t.csv:2: open 3 is outside low 0.5 .. high 2",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5,1,-1\n",
            expect: "t.csv:2: volume -1 is outside 0 to 1e30",
        },
        // What the ledger cannot book is refused where it is read.
        Case {
            body: "2018-01-10T04:55:00Z,1,1e30,0.5,1,1\n",
            expect: "t.csv:2: high 1e30 is outside the prices Keel books, 1e-8 to 100000000000000",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1e-9,1e-9,1e-9,1e-9,1\n",
            expect: "t.csv:2: open 1e-9 is outside the prices Keel books, 1e-8 to 100000000000000",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,2,0.5,1,1e31\n",
            expect: "t.csv:2: volume 1e31 is outside 0 to 1e30",
        },
        Case {
            body: "99999999999999999,1,2,0.5,1,1\n",
            expect: "t.csv:2: time '99999999999999999' is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
        },
        Case {
            body: "2300-01-01T00:00:00Z,1,2,0.5,1,1\n",
            expect: "t.csv:2: time '2300-01-01T00:00:00Z' is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
        },
        // A leap second is no bar's time (read as the next second, it
        // clashed with that bar, and the error named the wrong line).
        Case {
            body: "2016-12-31T23:59:60Z,1,2,0.5,1,1\n",
            expect: "t.csv:2: time '2016-12-31T23:59:60Z' is a leap second, at which no bar starts",
        },
        Case {
            body: "2016-12-31 23:59:60,1,2,0.5,1,1\n",
            expect: "t.csv:2: time '2016-12-31 23:59:60' is a leap second, at which no bar starts",
        },
        Case {
            body: "2018-01-10T04:55:00Z,\u{1b}[31m\0\u{202e},2,0.5,1,1\n",
            expect: "t.csv:2: open '\\x1b[31m\\x00\\u{202e}' is not a number",
        },
        Case {
            body: "2018-01-10T04:55:00Z,1,1,1e308,1,1\n",
            expect: "t.csv:2: low 1e308 is outside the prices Keel books, 1e-8 to 100000000000000",
        },
    ];
    for case in cases {
        let err = parse_csv(&format!("{HEADER}{}", case.body), "t.csv").expect_err(case.body);
        assert_eq!(err.to_string(), case.expect);
    }
}

#[test]
fn a_huge_header_is_cut_in_the_error() {
    let header = "x".repeat(1 << 20);
    let err = parse_csv(&header, "t.csv").expect_err("no columns");
    let expect = format!(
        "t.csv:1: missing column 'time' (header is '{}…'); name the file's own with \
         --columns time=COLUMN",
        "x".repeat(crate::shown::MAX_CHARS)
    );
    assert_eq!(err.to_string(), expect);
}

#[test]
fn header_problems_are_named() {
    let err = parse_csv("time,open,high,low,close\n", "t.csv").expect_err("no volume");
    assert_eq!(
        err.to_string(),
        "t.csv:1: missing column 'volume' (header is 'time,open,high,low,close'); name the \
         file's own with --columns volume=COLUMN"
    );
    let err = parse_csv("", "t.csv").expect_err("empty");
    assert_eq!(err.to_string(), "t.csv: no candles");
}

/// A flat candle opening at `t`.
fn c(t: i64) -> Candle {
    Candle {
        time_ms: t,
        open: 1.0,
        high: 1.0,
        low: 1.0,
        close: 1.0,
        volume: 0.0,
    }
}

#[test]
fn spacing_ignores_gaps() {
    let series = [c(0), c(300), c(600), c(1500), c(1800)];
    assert_eq!(typical_spacing_ms(&series), Some(300));
    assert_eq!(typical_spacing_ms(&series[..1]), None);
    // Equally common: the shortest, wherever the runs are.
    let tied = [c(0), c(600), c(1200), c(1500), c(1800)];
    assert_eq!(typical_spacing_ms(&tied), Some(300));
    // Counted a piece at a time, runs split anywhere: the same answer.
    let mut spacings = Spacings::default();
    for s in [60, 60, 120, 60, 120, 120, 120, 60, 60] {
        spacings.add(s);
    }
    assert_eq!(spacings.typical(), Some(60));
    spacings.add(120);
    assert_eq!(spacings.typical(), Some(60), "a tie goes to the shortest");
    spacings.add(120);
    assert_eq!(spacings.typical(), Some(120));
}

#[test]
fn reads_freqtrade_json_and_names_bad_rows_by_line() {
    let text = "[\n [1515560100000, 1, 2, 0.5, 1.5, 10],\n [1515560400000, 1.5, 2, 1, 1.8, 3]\n]";
    let candles = parse_json(text, "t.json").expect("valid");
    assert_eq!(candles.len(), 2);
    assert_eq!(candles[1].close, 1.8);
    let cases = [
        (
            "[\n [1, 1, 2, 0.5, 1.5, 10],\n [2, 1, 2, 3, 1.5, 10]\n]",
            "t.json:3: candle 2: high 2 is below low 3",
        ),
        (
            "[[1, 1, 2, 0.5, 1.5]]",
            "t.json:1: candle 1: has 5 values, expected 6",
        ),
        (
            "[[1, 1, 2, 0.5, null, 1]]",
            "t.json:1: candle 1: close null is not a finite number",
        ),
        (
            "[\n [1, 1, 2, 0.5, 1.5, 10],\n [1e30, 1, 2, 0.5, 1.5, 10]\n]",
            "t.json:3: candle 2: time 1e30 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
        ),
        (
            "[[-9223372036854775808, 1, 2, 0.5, 1.5, 10]]",
            "t.json:1: candle 1: time -9223372036854775808 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
        ),
        (
            "[\n [5, 1, 2, 0.5, 1.5, 10],\n\n [5, 1, 2, 0.5, 1.5, 10]]",
            "t.json:4: candle 2: time 1970-01-01T00:00:00.005Z is not after the previous bar's 1970-01-01T00:00:00.005Z",
        ),
    ];
    for (text, expect) in cases {
        assert_eq!(
            parse_json(text, "t.json").expect_err(text).to_string(),
            expect
        );
    }
    let err = parse_json("[[1, 2,", "t.json").expect_err("truncated");
    assert!(
        err.to_string().starts_with("t.json:1: not a JSON list"),
        "{err}"
    );
}

#[test]
fn gaps_are_found_not_filled() {
    let series = [c(0), c(300), c(600), c(1500), c(1800), c(2400)];
    assert_eq!(
        gaps(&series, 300),
        vec![
            Gap {
                after_ms: 600,
                missing: 2
            },
            Gap {
                after_ms: 1800,
                missing: 1
            }
        ]
    );
    assert!(gaps(&series[..3], 300).is_empty());
    // Calendar months: 31-day steps are not gaps, a missing month is.
    let day = 86_400_000;
    let months = [c(0), c(31 * day), c(59 * day), c(120 * day)];
    let month_ms = Timeframe::Month1.duration_ms();
    assert_eq!(
        gaps(&months, month_ms),
        vec![Gap {
            after_ms: 59 * day,
            missing: 1
        }]
    );
    assert!(Timeframe::Month1.matches_spacing(31 * day));
    assert!(Timeframe::M5.matches_spacing(300_000));
    assert!(!Timeframe::M5.matches_spacing(60_000));
}

#[test]
fn timeframes_round_trip() {
    for t in Timeframe::ALL {
        assert_eq!(Timeframe::parse(t.as_str()), Some(t));
    }
    assert_eq!(Timeframe::parse("7m"), None);
}

#[test]
fn a_files_name_gives_its_symbol() {
    for (file, symbol) in [
        ("GOOG-1d.csv", Some("GOOG")),
        ("data/ETH_BTC-5m.csv", Some("ETH/BTC")),
        ("ETH_BTC-5m.json", Some("ETH/BTC")),
        ("BTC-USD.csv", Some("BTC/USD")),
        ("UNITTEST_BTC-1m.csv", Some("UNITTEST_BTC")),
        ("BTCUSD-1M.csv", Some("BTCUSD")),
        ("prices.csv.gz", Some("prices")),
        ("my.data.v2.csv", Some("my.data.v2")),
        ("1d.csv", Some("1d")),
    ] {
        assert_eq!(
            symbol_from_file(Path::new(file)).as_deref(),
            symbol,
            "{file}"
        );
    }
    for (file, timeframe) in [
        ("ONE_BTC-5m.csv", Some(Timeframe::M5)),
        ("data/GOOG-1d.csv.gz", Some(Timeframe::D1)),
        ("BTCUSD-1M.json", Some(Timeframe::Month1)),
        ("prices.csv", None),
        ("1d.csv", None),
    ] {
        assert_eq!(timeframe_from_file(Path::new(file)), timeframe, "{file}");
    }
}

/// The one-pass test of [`check_candle`] passes exactly the candles the
/// rule by rule test finds nothing wrong with, at and around every bound
/// and with NaN and infinities in each field.
#[test]
fn the_quick_candle_check_agrees_with_the_rule_by_rule_one() {
    let (first, last) = CANDLE_TIME_MS;
    let (min, max) = (MIN_CANDLE_PRICE, MAX_CANDLE_VALUE);
    let prices = [
        f64::NAN,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        min / 2.0,
        min,
        1.0,
        2.0,
        max,
        max * 2.0,
        f64::INFINITY,
    ];
    let volume_max = MAX_CANDLE_VOLUME;
    // Times out of bounds with a sane volume; volumes at and around their
    // bounds at times in bounds.
    let times_and_volumes = [
        (i64::MIN, 5.0),
        (first - 1, 5.0),
        (last + 1, 5.0),
        (i64::MAX, 5.0),
        (first, f64::NAN),
        (0, -1.0),
        (last, -0.0),
        (0, 0.0),
        (first, 5.0),
        (last, max * 2.0),
        (0, volume_max),
        (0, volume_max * 2.0),
        (last, f64::INFINITY),
    ];
    let (mut passed, mut refused) = (0, 0);
    for &open in &prices {
        for &high in &prices {
            for &low in &prices {
                for &close in &prices {
                    for &(time_ms, volume) in &times_and_volumes {
                        let c = Candle {
                            time_ms,
                            open,
                            high,
                            low,
                            close,
                            volume,
                        };
                        let quick = check_candle(&c);
                        assert_eq!(quick.is_ok(), candle_fault(&c).is_ok(), "{c:?}");
                        if quick.is_ok() {
                            passed += 1;
                        } else {
                            refused += 1;
                        }
                    }
                }
            }
        }
    }
    // Sane: open and close within low .. high among the four prices in
    // bounds (50 ways), at the five (time, volume) pairs in bounds (a
    // volume of -0 is 0).
    assert_eq!((passed, passed + refused), (250, 11usize.pow(4) * 13));
}
