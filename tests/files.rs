//! `keel data` with Parquet and Feather files, how a file's times are dated, and
//! what is no file at all.

use std::path::Path;
use std::process::Command;

use crate::data::{export_eth, import_file, keel, path, stderr, stdout};
use crate::support::data;

/// Parquet and Feather files as freqtrade, pandas and pyarrow write them
/// (`tests/data/formats/`, made by its `make.py`) import and backtest as
/// the CSV they were made of; a bad one is refused in one line naming the
/// row; a stored series exports to Parquet that pandas reads back as the
/// same bars, to the bit.
#[test]
fn parquet_and_feather_import_and_a_series_exports_to_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let formats = crate::support::repo().join("tests/data/formats");
    let eth = keel_model::candles::read_csv(&data("crypto-5m/ETH_BTC-5m.csv")).expect("eth");
    for (file, extra) in [
        ("freqtrade-ETH_BTC-5m.feather", &[][..]),
        ("pandas-ETH_BTC-5m.parquet", &[][..]),
        (
            "pandas-ETH_BTC-5m.parquet",
            &["--columns", "time=date,volume=volume"][..],
        ),
    ] {
        let db = dir.path().join(format!("{file}-{}.db", extra.len()));
        let source = formats.join(file);
        let mut args = vec!["data", "import", path(&source)];
        args.extend(["--symbol", "ETH/BTC", "--timeframe", "5m"]);
        args.extend(extra);
        let out = keel(&db, &args);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("300 bars (300 new"),
            "{file}: {}",
            stdout(&out)
        );
        let store = keel_host::store::Store::open(&db).expect("open");
        let stored = store
            .load_candles("ETH/BTC", keel_model::Timeframe::M5, None, None)
            .expect("load");
        assert_eq!(stored, eth[..300], "{file}");
    }
    let sma = crate::support::example("sma-cross");
    let feather = formats.join("freqtrade-ETH_BTC-5m.feather");
    let out = keel(
        &dir.path().join("backtest.db"),
        &["backtest", path(sma), "--data", path(&feather)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Gzipped whole (pyarrow's compressed stream): imported and replayed
    // as the file it expands to.
    for file in [
        "gzipped-ETH_BTC-5m.parquet.gz",
        "gzipped-ETH_BTC-5m.feather.gz",
    ] {
        let source = formats.join(file);
        let db = dir.path().join(format!("{file}.db"));
        let out = import_file(&db, path(&source), "ETH/BTC", "5m");
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        assert!(stdout(&out).contains("60 bars (60 new"), "{}", stdout(&out));
        let store = keel_host::store::Store::open(&db).expect("open");
        let stored = store
            .load_candles("ETH/BTC", keel_model::Timeframe::M5, None, None)
            .expect("load");
        assert_eq!(stored, eth[..60], "{file}");
        let out = keel(&db, &["backtest", path(sma), "--data", path(&source)]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        let report = stdout(&out);
        let bars = report
            .lines()
            .find(|l| l.contains("bars / signals / rejected"));
        assert!(bars.is_some_and(|l| l.contains(" 60 / ")), "{report}");
    }

    for (file, says) in [
        (
            "null-close-ETH_BTC-5m.parquet",
            ": row 7: close is null".to_owned(),
        ),
        (
            "zstd-ETH_BTC-5m.parquet",
            ": column 'date' is compressed with zstd, which Keel does not read".to_owned(),
        ),
        (
            "missing-volume-ETH_BTC-5m.parquet",
            ": missing column 'volume' (columns are 'date, open, high, low, close')".to_owned(),
        ),
    ] {
        let bad = formats.join(file);
        let out = import_file(&dir.path().join("bad.db"), path(&bad), "ETH/BTC", "5m");
        assert_eq!(out.status.code(), Some(1), "{file}");
        let said = stderr(&out);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.starts_with(&format!("error: {}{says}", bad.display())),
            "{said}"
        );
    }

    let db = dir.path().join("keel.db");
    let out = import_file(
        &db,
        path(&data("crypto-5m/ETH_BTC-5m.csv")),
        "ETH/BTC",
        "5m",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let parquet = dir.path().join("eth.parquet");
    let out = export_eth(&db, &parquet, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("wrote 5760 bars of ETH/BTC 5m"),
        "{}",
        stdout(&out)
    );
    assert_eq!(keel_model::candles::read_file(&parquet).expect("read"), eth);
    let read = pandas_reads(&parquet);
    let mut lines = read.lines();
    assert_eq!(
        lines.next(),
        Some(
            "date:datetime64[ms, UTC],open:float64,high:float64,low:float64,close:float64,volume:float64"
        )
    );
    let rows: Vec<keel_model::candles::Candle> = lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let number = |i: usize| f[i].parse::<f64>().expect(line);
            keel_model::candles::Candle {
                time_ms: f[0].parse().expect(line),
                open: number(1),
                high: number(2),
                low: number(3),
                close: number(4),
                volume: number(5),
            }
        })
        .collect();
    assert_eq!(rows, eth, "pandas reads the export as the bars stored");
    for name in ["eth.feather", "eth.parquet.gz"] {
        let run = export_eth(&db, &dir.path().join(name), &[]);
        assert!(!run.status.success(), "{name}");
        assert!(
            stderr(&run).contains("export writes CSV or Parquet"),
            "{}",
            stderr(&run)
        );
    }
}

#[test]
fn a_pipe_is_refused_for_import_in_one_line_not_read_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let fifo = dir.path().join("bars.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    // Nothing ever writes to it: reading it would wait forever.
    let out = keel(
        &db,
        &[
            "data",
            "import",
            path(&fifo),
            "--symbol",
            "ETH/BTC",
            "--timeframe",
            "5m",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: not a regular file (a pipe or a device is read once; save it to a file first)\n",
            fifo.display()
        )
    );
}

/// A Parquet or CSV file is imported as it is read, span by span: a bad
/// row far inside it, after spans were written, still leaves nothing
/// stored.
#[test]
fn a_bad_row_deep_in_a_parquet_file_leaves_nothing_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let good = keel_model::synth::random_walk(5, 150_000, 1_704_067_200_000, 60_000, 100.0, 0.001);
    let mut bad = good.clone();
    bad[140_000].high = bad[140_000].low / 2.0;
    let (good_file, bad_file) = (
        dir.path().join("good.parquet"),
        dir.path().join("bad.parquet"),
    );
    keel_model::candles::write_parquet(&good_file, &good).expect("write");
    keel_model::candles::write_parquet(&bad_file, &bad).expect("write");

    let out = import_file(&db, path(&bad_file), "SYN/USD", "1m");
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.starts_with(&format!("error: {}: row 140001: ", bad_file.display()))
            && said.lines().count() == 1,
        "{said}"
    );
    let store = keel_host::store::Store::open(&db).expect("open");
    assert_eq!(store.list_series().expect("list"), []);
    drop(store);
    // A CSV file is read block by block (4 MB) the same way.
    let bad_csv = dir.path().join("bad.csv");
    keel_model::candles::write_csv(&bad_csv, &bad).expect("write");
    assert!(std::fs::metadata(&bad_csv).expect("csv").len() > 3 * (4 << 20));
    let out = import_file(&db, path(&bad_csv), "SYN/USD", "1m");
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.starts_with(&format!("error: {}:140002: ", bad_csv.display()))
            && said.lines().count() == 1,
        "{said}"
    );
    let store = keel_host::store::Store::open(&db).expect("open");
    assert_eq!(store.list_series().expect("list"), []);
    drop(store);
    // And freqtrade JSON row by row, plain and gzip-compressed.
    let json = crate::support::freqtrade_json(&bad);
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, &json).expect("write");
    let bad_gz = dir.path().join("bad.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bad_gz).expect("create"),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut gz, json.as_bytes()).expect("gzip");
    gz.finish().expect("gzip");
    for file in [&bad_json, &bad_gz] {
        let out = import_file(&db, path(file), "SYN/USD", "1m");
        assert_eq!(out.status.code(), Some(1));
        let said = stderr(&out);
        assert!(
            said.starts_with(&format!(
                "error: {}:140002: candle 140001: high ",
                file.display()
            )) && said.lines().count() == 1,
            "{said}"
        );
    }
    let store = keel_host::store::Store::open(&db).expect("open");
    assert_eq!(store.list_series().expect("list"), []);
    drop(store);

    let out = import_file(&db, path(&good_file), "SYN/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("150000 bars (150000 new, 0 unchanged, 0 replaced), 2024-01-01T00:00:00Z .."),
        "{}",
        stdout(&out)
    );
    // A conflict past the first spans: refused whole, the store unchanged.
    let mut other = good.clone();
    other[149_000].volume += 1.0;
    keel_model::candles::write_parquet(&bad_file, &other).expect("write");
    let out = import_file(&db, path(&bad_file), "SYN/USD", "1m");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is already stored with other values"),
        "{}",
        stderr(&out)
    );
    // A conflict at the first bar of a long file: the import stops at
    // once, and so does the reading of the rest (no hang, nothing stored).
    let long = keel_model::synth::random_walk(5, 600_000, good[0].time_ms, 60_000, 100.0, 0.001);
    let mut long_conflicting = long.clone();
    long_conflicting[0].volume += 1.0;
    keel_model::candles::write_parquet(&bad_file, &long_conflicting).expect("write");
    let out = import_file(&db, path(&bad_file), "SYN/USD", "1m");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("2024-01-01T00:00:00Z is already stored with other values"),
        "{}",
        stderr(&out)
    );
    let store = keel_host::store::Store::open(&db).expect("open");
    let stored = store
        .load_candles("SYN/USD", keel_model::Timeframe::M1, None, None)
        .expect("load");
    assert!(stored == good, "the stored bars changed");
}

#[test]
fn synth_writes_parquet_when_the_name_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("walk.parquet");
    let out = keel(
        &db,
        &[
            "data",
            "synth",
            "--bars",
            "500",
            "--timeframe",
            "5m",
            "--out",
            path(&file),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&file).expect("written");
    assert_eq!(
        &bytes[..4],
        b"PAR1",
        "a Parquet file, not CSV under its name"
    );
    let candles = keel_model::candles::read_file(&file).expect("read back");
    assert_eq!(candles.len(), 500);
}

/// What pandas makes of a Parquet file: a line of its columns and their
/// types, then one per row, `ms,open,high,low,close,volume` (the numbers
/// as Python writes them back, exactly). Needs python3 with pandas and
/// pyarrow (`KEEL_PYTHON` names another python), which `.ci/run` installs.
pub(crate) fn pandas_reads(file: &Path) -> String {
    const SCRIPT: &str = "import sys, pandas as pd
df = pd.read_parquet(sys.argv[1])
print(','.join(f'{c}:{t}' for c, t in df.dtypes.items()))
for r in df.itertuples(index=False):
    print(r.date.value // 10**6, *(repr(float(v)) for v in r[1:]), sep=',')
";
    let python = std::env::var_os("KEEL_PYTHON").unwrap_or_else(|| "python3".into());
    let install = "pip install pyarrow pandas, as .ci/run does, or set KEEL_PYTHON";
    let out = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} ({install})", python.display()));
    assert!(
        out.status.success(),
        "pandas could not read {} ({install}): {}",
        file.display(),
        stderr(&out)
    );
    stdout(&out)
}

/// yfinance's `history()` of a US stock as pandas saves it: local
/// midnights in a zone known by name. An import of daily bars cannot date
/// them and says how to write them; a backtest runs on the instants.
#[test]
fn a_zoned_daily_parquet_is_refused_with_the_way_to_dates_and_backtested_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = crate::support::repo().join("tests/data/formats/yfinance-history-AAPL-1d.parquet");
    let out = import_file(&db, path(&file), "AAPL", "1d");
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.trim().lines().count() == 1
            && said.contains(": row 1: time 2024-03-04T05:00:00Z is in zone America/New_York")
            && said.contains("df.index = df.index.tz_localize(None)"),
        "{said}"
    );
    let sma = crate::support::example("sma-cross");
    let json = dir.path().join("r.json");
    let args = [
        "backtest",
        path(sma),
        "--data",
        path(&file),
        "--json",
        path(&json),
    ];
    let out = keel(&db, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    assert_eq!(report["data"][0]["first"], "2024-03-04T05:00:00Z");
    assert_eq!(report["data"][0]["bars"], 10);
}

#[test]
fn daily_bars_at_local_midnight_import_as_their_dates() {
    // As yfinance's `history()` writes a US stock: local midnights, an
    // hour apart in UTC after the March daylight-saving change.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("AAPL-1d.csv");
    let days = ["2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"];
    let mut text = String::from("Date,Open,High,Low,Close,Adj Close,Volume\n");
    for (i, day) in days.iter().enumerate() {
        let offset = if i < 2 { "-05:00" } else { "-04:00" };
        let p = 170.0 + i as f64;
        text.push_str(&format!(
            "{day} 00:00:00{offset},{p},{},{},{p},{p},1000\n",
            p + 1.0,
            p - 1.0
        ));
    }
    std::fs::write(&file, text).expect("write");
    let path = file.to_str().expect("path");
    let out = import_file(&db, path, "AAPL", "1d");
    assert!(out.status.success(), "{}", stderr(&out));
    let store = keel_host::store::Store::open(&db).expect("open");
    let stored = store
        .load_candles("AAPL", keel_model::Timeframe::D1, None, None)
        .expect("load");
    let times: Vec<String> = stored
        .iter()
        .map(|c| keel_model::candles::format_time(c.time_ms))
        .collect();
    let dates: Vec<String> = days.iter().map(|d| format!("{d}T00:00:00Z")).collect();
    assert_eq!(times, dates);
    // A backtest of the file dates it the same: the store's bars, digest
    // and all.
    let sma = crate::support::example("sma-cross").to_str().expect("path");
    let report = |data: &str, name: &str| {
        let json = dir.path().join(name);
        let args = ["backtest", sma, "--data", data, "--json"];
        let out = keel(&db, &[&args[..], &[json.to_str().expect("path")]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&json).expect("report");
        let report: serde_json::Value = serde_json::from_str(&text).expect("json");
        report["data"][0].clone()
    };
    let (file, stored) = (report(path, "file.json"), report("AAPL@1d", "store.json"));
    assert_eq!(file["first"], "2024-03-07T00:00:00Z", "{file}");
    for same in ["digest", "bars", "first", "last"] {
        assert_eq!(file[same], stored[same], "{same}");
    }
}

/// A candle file whose columns go by names Keel does not know is refused
/// with the way to name them, and `backtest --columns` (and `strategy run
/// --columns`) reads it as the same bars: streamed, or loaded whole for a
/// page.
#[test]
fn a_file_with_unknown_column_names_backtests_with_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let plain = data("crypto-5m/ETH_BTC-5m.csv");
    let text = std::fs::read_to_string(&plain).expect("read");
    let (_, rows) = text.split_once('\n').expect("header");
    let german = dir.path().join("ETH_BTC-5m.csv");
    std::fs::write(
        &german,
        format!("Zeit,Erster,Hoch,Tief,Letzter,Umsatz\n{rows}"),
    )
    .expect("write");
    let sma = crate::support::example("sma-cross").to_str().expect("path");
    let german = path(&german);
    let out = keel(&db, &["backtest", sma, "--data", german]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing column 'time' (header is 'Zeit,Erster,Hoch,Tief,Letzter,Umsatz'); name the file's own with --columns time=COLUMN"),
        "{}",
        stderr(&out)
    );
    let named = "time=Zeit,open=Erster,high=Hoch,low=Tief,close=Letzter,volume=Umsatz";
    let report = |data: &str, extra: &[&str], name: &str| {
        let json = dir.path().join(name);
        let mut args = vec!["backtest", sma, "--data", data, "--json", path(&json)];
        args.extend(extra);
        let out = keel(&db, &args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let text = std::fs::read_to_string(&json).expect("report");
        let report: serde_json::Value = serde_json::from_str(&text).expect("json");
        report
    };
    let page = dir.path().join("page.html");
    let expected = report(path(&plain), &[], "plain.json");
    assert!(
        expected["metrics"]["trades"].as_u64() > Some(0),
        "{expected}"
    );
    for (extra, name) in [
        (vec!["--columns", named], "streamed.json"),
        (
            vec!["--columns", named, "--report", path(&page)],
            "whole.json",
        ),
    ] {
        let got = report(german, &extra, name);
        assert_eq!(got["metrics"], expected["metrics"], "{name}");
        for same in ["digest", "bars", "first", "last"] {
            assert_eq!(
                got["data"][0][same], expected["data"][0][same],
                "{name}: {same}"
            );
        }
    }
    let out = keel(
        &db,
        &["strategy", "run", sma, "--data", german, "--columns", named],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A stored series has no columns to name: refused, not ignored.
    let out = import_file(&db, path(&plain), "ETH/BTC", "5m");
    assert!(out.status.success(), "{}", stderr(&out));
    for command in [&["backtest"][..], &["strategy", "run"][..]] {
        let args = [
            command,
            &[sma, "--data", "ETH/BTC@5m", "--columns", named][..],
        ]
        .concat();
        let out = keel(&db, &args);
        assert!(!out.status.success(), "{command:?}");
        assert!(
            stderr(&out).contains("every --data here is a stored series"),
            "{}",
            stderr(&out)
        );
    }
}

/// A file of one bar cannot tell its bar length by its bars: its name
/// does (`ONE_BTC-5m.csv`), streamed or loaded whole; it was taken as 1m.
#[test]
fn a_one_bar_file_has_the_bar_length_its_name_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let one = dir.path().join("ONE_BTC-5m.csv");
    std::fs::write(
        &one,
        "time,open,high,low,close,volume\n2013-03-04T00:00:00Z,1,1,1,1,1\n",
    )
    .expect("write");
    let sma = crate::support::example("sma-cross").to_str().expect("path");
    let page = dir.path().join("page.html");
    for extra in [&[][..], &["--report", path(&page)][..]] {
        let args = [&["backtest", sma, "--data", path(&one)][..], extra].concat();
        let out = keel(&db, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("ONE_BTC-5m.csv's are 5m"),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
}
