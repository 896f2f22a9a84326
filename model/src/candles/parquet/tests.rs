use super::super::arrow::fixtures::{batch_with_note, eth, file, formats, garbled, goog};
use super::*;

/// The float32 a value was written as, read as the decimal it is.
fn as_float32(candles: Vec<Candle>) -> Vec<Candle> {
    let f = |v: f64| (v as f32).to_string().parse::<f64>().expect("a number");
    let c = |c: Candle| Candle {
        open: f(c.open),
        high: f(c.high),
        low: f(c.low),
        close: f(c.close),
        volume: f(c.volume),
        ..c
    };
    candles.into_iter().map(c).collect()
}

#[test]
fn every_parquet_file_pandas_and_pyarrow_write_reads_as_the_csv_rows() {
    let goog_volume_whole = goog(30)
        .into_iter()
        .map(|c| Candle {
            volume: c.volume.trunc(),
            ..c
        })
        .collect();
    let cases: [(&str, Vec<Candle>); 17] = [
        ("pandas-ETH_BTC-5m.parquet", eth(300)),
        ("pandas-index-ETH_BTC-5m.parquet", eth(60)),
        ("pandas-named-index-ETH_BTC-5m.parquet", eth(60)),
        ("epoch-s-ETH_BTC-5m.parquet", eth(60)),
        ("epoch-ms-ETH_BTC-5m.parquet", eth(60)),
        ("epoch-us-ETH_BTC-5m.parquet", eth(60)),
        ("epoch-ns-ETH_BTC-5m.parquet", eth(60)),
        ("timestamp-us-newyork-ETH_BTC-5m.parquet", eth(60)),
        ("int96-ETH_BTC-5m.parquet", eth(60)),
        ("float32-ETH_BTC-5m.parquet", as_float32(eth(60))),
        ("row-groups-ETH_BTC-5m.parquet", eth(60)),
        ("gzip-ETH_BTC-5m.parquet", eth(60)),
        ("lz4-ETH_BTC-5m.parquet", eth(60)),
        ("none-ETH_BTC-5m.parquet", eth(60)),
        ("text-time-ETH_BTC-5m.parquet", eth(60)),
        ("yfinance-GOOG-1d.parquet", goog_volume_whole),
        // The same file through the dispatch by extension.
        ("pandas-ETH_BTC-5m.parquet", eth(300)),
    ];
    for (i, (name, expected)) in cases.into_iter().enumerate() {
        let path = formats(name);
        let read = if i + 1 == 17 {
            read_file(&path)
        } else {
            read_parquet(&path)
        };
        assert_eq!(read.expect(name), expected, "{name}");
    }
}

#[test]
fn a_parquet_file_gzipped_whole_reads_as_it_did_before_and_within_the_limit() {
    // pyarrow's `CompressedOutputStream(path, "gzip")`: expanded in
    // memory, then read as any other, whole or in pieces.
    let gzipped = formats("gzipped-ETH_BTC-5m.parquet.gz");
    assert_eq!(read_parquet(&gzipped).expect("read"), eth(60));
    assert_eq!(read_file(&gzipped).expect("dispatched"), eth(60));
    let mut pieces = Vec::new();
    read_file_each(&gzipped, &Columns::default(), |candles| {
        pieces.extend(candles);
        Ok::<_, CandleError>(())
    })
    .expect("in pieces");
    assert_eq!(pieces, eth(60));
    // What it expands to counts against the limit, not its length.
    let expanded = std::fs::read(formats("none-ETH_BTC-5m.parquet")).expect("fixture");
    let len = std::fs::metadata(&gzipped).expect("len").len();
    let max = len + 100;
    assert!(
        expanded.len() as u64 > max,
        "the fixture expands past its own length"
    );
    let said = read_within(&gzipped, &Columns::default(), max, &mut |_, _| true)
        .expect_err("too large")
        .to_string();
    assert_eq!(
        said,
        format!(
            "{}: cannot read: expands to more than {max} bytes",
            gzipped.display()
        )
    );
    // Cut short, or not gzip at all: one line.
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(&gzipped).expect("fixture");
    let short = file(&dir, "short.parquet.gz", &bytes[..bytes.len() / 2]);
    let said = read_file(&short).expect_err("short").to_string();
    assert!(
        said.starts_with(&format!("{}: ", short.display())),
        "{said}"
    );
    assert!(!said.contains('\n'), "{said}");
    let plain = file(&dir, "plain.parquet.gz", &expanded);
    let said = read_file(&plain).expect_err("not gzip").to_string();
    assert!(said.contains("cannot read: invalid gzip header"), "{said}");
    garbled(&gzipped, read_parquet);
}

#[test]
fn parquet_is_never_written_gzipped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.parquet.gz");
    let said = write_file(&path, &eth(3)).expect_err("gzipped").to_string();
    assert!(
        said.ends_with("not gzipped whole: name it .parquet"),
        "{said}"
    );
    let each = write_file_each(&path, false, |put| {
        put(&eth(3), &[]).map_err(|e| CandleError::Write {
            path: "x".into(),
            error: e,
        })
    });
    assert!(each.is_err() && !path.exists());
}

#[test]
fn columns_are_found_by_the_names_the_user_gives() {
    let yfinance = formats("yfinance-GOOG-1d.parquet");
    let swapped = Columns::parse("open=Close,close=Open").expect("columns");
    let read = read_parquet_columns(&yfinance, &swapped).expect("swapped");
    let goog = goog(30);
    assert_eq!(read.len(), goog.len());
    for (r, g) in read.iter().zip(&goog) {
        assert_eq!((r.open, r.close), (g.close, g.open));
    }
    let epoch = formats("epoch-ms-ETH_BTC-5m.parquet");
    let named = Columns::parse("time=timestamp,volume=volume").expect("columns");
    assert_eq!(read_file_columns(&epoch, &named).expect("named"), eth(60));
    let wrong = Columns::parse("time=Zeit").expect("columns");
    assert_eq!(
        read_parquet_columns(&epoch, &wrong)
            .expect_err("no Zeit")
            .to_string(),
        format!(
            "{}: missing column 'Zeit' (columns are 'timestamp, open, high, low, close, volume')",
            epoch.display()
        )
    );
}

#[test]
fn bad_parquet_files_are_refused_in_one_line() {
    let cases = [
        (
            "null-close-ETH_BTC-5m.parquet",
            "row 7: close is null".to_owned(),
        ),
        (
            "duplicate-ETH_BTC-5m.parquet",
            "row 5: time 2018-01-10T05:10:00Z is not after the previous bar's 2018-01-10T05:10:00Z"
                .to_owned(),
        ),
        (
            "zstd-ETH_BTC-5m.parquet",
            format!(
                "column 'date' is compressed with zstd, which Keel does not read \
                 (snappy, lz4, gzip or none); rewrite it: {REWRITE}"
            ),
        ),
        (
            "missing-volume-ETH_BTC-5m.parquet",
            "missing column 'volume' (columns are 'date, open, high, low, close'); name the \
             file's own with --columns volume=COLUMN"
                .to_owned(),
        ),
        (
            "text-close-ETH_BTC-5m.parquet",
            "column 'close' holds LargeUtf8, not numbers".to_owned(),
        ),
    ];
    for (name, says) in cases {
        let path = formats(name);
        let err = read_file(&path).expect_err(name).to_string();
        assert_eq!(err, format!("{}: {says}", path.display()));
    }
}

#[test]
fn a_file_claiming_more_than_the_limit_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pandas = formats("pandas-ETH_BTC-5m.parquet");
    let refused =
        read_within(&pandas, &Columns::default(), 16_000, &mut |_, _| true).expect_err("too large");
    assert!(
        refused.to_string().ends_with(
            ": 300 rows, 30520 bytes decoded: more than the 16000 bytes Keel reads at once"
        ) || refused
            .to_string()
            .contains("cannot read: larger than 16000 bytes"),
        "{refused}"
    );
    let small = formats("epoch-ms-ETH_BTC-5m.parquet");
    let refused =
        read_within(&small, &Columns::default(), 5_000, &mut |_, _| true).expect_err("too large");
    assert!(
        refused
            .to_string()
            .starts_with(&format!("{}: 60 rows, ", small.display())),
        "{refused}"
    );
    // The footer says 2^40 rows (FileMetaData.num_rows, after the schema
    // list: field 3, an i64 of 60 as a zigzag varint, 0x78, then field 4).
    let bytes = std::fs::read(&small).expect("read");
    let footer_len = u32::from_le_bytes(
        bytes[bytes.len() - 8..bytes.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    let footer_start = bytes.len() - 8 - footer_len;
    let footer = &bytes[footer_start..bytes.len() - 8];
    let at: Vec<usize> = footer
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0x16, 0x78, 0x19])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the num_rows field is found once");
    let mut patched = bytes[..footer_start + at[0] + 1].to_vec();
    patched.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    patched.extend(&footer[at[0] + 2..]);
    patched.extend(((footer_len + 5) as u32).to_le_bytes());
    patched.extend(b"PAR1");
    let claims = file(&dir, "claims.parquet", &patched);
    let refused = read_parquet(&claims).expect_err("2^40 rows").to_string();
    assert!(
        refused.starts_with(&format!("{}: 1099511627776 rows, ", claims.display()))
            && refused.ends_with(" bytes decoded: more than the 1 GiB Keel reads at once"),
        "{refused}"
    );
    let garbage = file(&dir, "garbage.parquet", b"PAR1 nothing of the kind PAR1");
    let err = read_parquet(&garbage).expect_err("garbage").to_string();
    assert!(
        err.starts_with(&format!(
            "{}: not a readable Parquet file: ",
            garbage.display()
        )),
        "{err}"
    );
    let empty = file(&dir, "empty.parquet", b"");
    assert!(read_parquet(&empty).is_err());
}

#[test]
fn a_huge_text_column_beside_the_candles_is_never_decoded() {
    use ::parquet::arrow::ArrowWriter;
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = batch_with_note(&eth(60), 100_000);
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let path = file(&dir, "notes.parquet", &bytes);
    let read = read_within(&path, &Columns::default(), 1 << 20, &mut |_, _| true)
        .expect("the note is not read");
    assert_eq!(read.0, eth(60));
    let refused = read_parquet_columns(&path, &Columns::parse("close=note").expect("columns"))
        .expect_err("text");
    assert!(
        refused
            .to_string()
            .ends_with("column 'note' holds Utf8, not numbers"),
        "{refused}"
    );
}

/// Columns whose type is a dictionary (each row a key into a list of
/// values: pyarrow writes a pandas categorical so), times and prices,
/// in Parquet and in Feather: read as their values.
#[test]
fn dictionary_columns_are_read_as_their_values() {
    use ::parquet::arrow::ArrowWriter;
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int32Array, StringArray};
    let dir = tempfile::tempdir().expect("tempdir");
    let candles = eth(40);
    // Each column its distinct values and every row a key into them.
    let encoded = |values: Vec<f64>| -> ArrayRef {
        let mut distinct: Vec<f64> = Vec::new();
        let keys: Vec<i32> = (values.iter())
            .map(|v| match distinct.iter().position(|d| d == v) {
                Some(k) => k as i32,
                None => {
                    distinct.push(*v);
                    distinct.len() as i32 - 1
                }
            })
            .collect();
        let dict = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys),
            std::sync::Arc::new(Float64Array::from(distinct)),
        )
        .expect("dictionary");
        std::sync::Arc::new(dict)
    };
    let times: Vec<String> = candles.iter().map(|c| format_time(c.time_ms)).collect();
    let time: ArrayRef = std::sync::Arc::new(
        DictionaryArray::<Int32Type>::try_new(
            Int32Array::from((0..times.len() as i32).collect::<Vec<_>>()),
            std::sync::Arc::new(StringArray::from(times)),
        )
        .expect("times"),
    );
    let column = |f: fn(&Candle) -> f64| encoded(candles.iter().map(f).collect());
    let batch = arrow_array::RecordBatch::try_from_iter([
        ("date", time),
        ("open", column(|c| c.open)),
        ("high", column(|c| c.high)),
        ("low", column(|c| c.low)),
        ("close", column(|c| c.close)),
        ("volume", column(|c| c.volume)),
    ])
    .expect("batch");
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let parquet = file(&dir, "categorical.parquet", &bytes);
    assert_eq!(read_parquet(&parquet).expect("parquet"), candles);

    let mut bytes = Vec::new();
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(&mut bytes, &batch.schema()).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    drop(writer);
    let feather = file(&dir, "categorical.feather", &bytes);
    assert_eq!(
        super::super::read_feather(&feather).expect("feather"),
        candles
    );
}

#[test]
fn columns_differing_in_case_alone_are_told_apart_only_by_the_user() {
    use ::parquet::arrow::ArrowWriter;
    use arrow_array::{ArrayRef, Float64Array};
    let dir = tempfile::tempdir().expect("tempdir");
    let candles = eth(60);
    let doubled = Float64Array::from_iter_values(candles.iter().map(|c| 2.0 * c.volume));
    let plain = batch_with_note(&candles, 1);
    let batch = plain
        .project(&[0, 1, 2, 3, 4, 5])
        .expect("the candles' columns");
    let mut columns: Vec<(&str, ArrayRef)> = ["date", "open", "high", "low", "close", "volume"]
        .into_iter()
        .zip(batch.columns().iter().cloned())
        .collect();
    columns.push(("Volume", std::sync::Arc::new(doubled)));
    let batch = arrow_array::RecordBatch::try_from_iter(columns).expect("a batch");
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let path = file(&dir, "cased.parquet", &bytes);
    let refused = read_parquet(&path).expect_err("which volume").to_string();
    assert!(
        refused.contains("columns 'volume', 'Volume' differ in case alone"),
        "{refused}"
    );
    let named = Columns::parse("volume=Volume").expect("columns");
    let read = read_parquet_columns(&path, &named).expect("the user said");
    let volumes: Vec<f64> = read.iter().map(|c| c.volume).collect();
    let expected: Vec<f64> = candles.iter().map(|c| 2.0 * c.volume).collect();
    assert_eq!(volumes, expected);
    let named = Columns::parse("volume=volume").expect("columns");
    assert_eq!(
        read_parquet_columns(&path, &named).expect("the user said"),
        candles
    );
}

#[test]
fn local_midnights_in_a_zone_are_dates_or_refused_when_the_bars_are_daily() {
    use ::parquet::arrow::ArrowWriter;
    use arrow_array::{ArrayRef, Float64Array, TimestampMillisecondArray};
    let dir = tempfile::tempdir().expect("tempdir");
    let day = |d: &str| crate::candles::parse_time(d).expect(d);
    let write = |name: &str, zone: &str, times: &[i64]| {
        let prices =
            || -> ArrayRef { Arc::new(Float64Array::from_iter_values(times.iter().map(|_| 1.0))) };
        let stamps =
            TimestampMillisecondArray::from_iter_values(times.iter().copied()).with_timezone(zone);
        let batch = arrow_array::RecordBatch::try_from_iter([
            ("date", Arc::new(stamps) as ArrayRef),
            ("open", prices()),
            ("high", prices()),
            ("low", prices()),
            ("close", prices()),
            ("volume", prices()),
        ])
        .expect("a batch");
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        file(&dir, name, &bytes)
    };
    let dated = Columns::default().with_dates(true);
    let read_times = |path: &std::path::Path, columns: &Columns| {
        read_parquet_columns(path, columns)
            .map(|c| c.iter().map(|c| c.time_ms).collect::<Vec<i64>>())
    };
    // Tokyo's midnights, a fixed offset: the dates they name.
    let tokyo = [day("2024-03-10T15:00:00Z"), day("2024-03-11T15:00:00Z")];
    let path = write("tokyo.parquet", "+09:00", &tokyo);
    let dates = vec![day("2024-03-11"), day("2024-03-12")];
    assert_eq!(read_times(&path, &dated).expect("dated"), dates);
    assert_eq!(
        read_times(&path, &Columns::default()).expect("instants"),
        tokyo
    );
    // New York's by name, across the March change: refused with how
    // to write them, unless read as instants.
    let new_york = [day("2024-03-08T05:00:00Z"), day("2024-03-11T04:00:00Z")];
    let path = write("ny.parquet", "America/New_York", &new_york);
    let refused = read_times(&path, &dated).expect_err("by name");
    assert!(
        refused.to_string().ends_with(
            "row 1: time 2024-03-08T05:00:00Z is in zone America/New_York, whose local \
             midnights Keel cannot date without its rules; write daily bars as dates \
             (pandas: df.index = df.index.tz_localize(None))"
        ),
        "{refused}"
    );
    assert_eq!(
        read_times(&path, &Columns::default()).expect("instants"),
        new_york
    );
    // Midnights UTC in a named zone are dates already.
    let utc = [day("2024-03-08"), day("2024-03-11")];
    let path = write("named-utc.parquet", "Europe/London", &utc);
    assert_eq!(read_times(&path, &dated).expect("dated"), utc);
}

#[test]
fn a_garbled_parquet_file_is_refused_in_one_line_never_a_panic() {
    garbled(&formats("row-groups-ETH_BTC-5m.parquet"), read_parquet);
    garbled(&formats("pandas-index-ETH_BTC-5m.parquet"), read_parquet);
}

#[test]
fn written_parquet_reads_back_exactly_and_replaces_only_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("synth.parquet");
    let candles = crate::synth::random_walk(9, 200_000, 1_700_000_000_000, 60_000, 50.0, 0.02);
    std::fs::write(&path, "old").expect("write");
    write_file(&path, &candles).expect("write");
    assert_eq!(read_file(&path).expect("read"), candles);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no partial file left"
    );
    let refused = write_parquet(dir.path(), &candles).expect_err("a directory");
    assert!(
        refused
            .to_string()
            .ends_with("cannot write: not a regular file"),
        "{refused}"
    );
}
