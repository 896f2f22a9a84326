//! Files in other layouts: `--columns` and the layouts pandas and the
//! exchanges write, imported and replayed.

use super::*;

/// `keel run --feed replay:` takes `--columns` as an import does: a file
/// whose names Keel does not know replays as the same bars in Keel's own
/// layout would; without it, one line names the flag; with no file to
/// replay, the flag is refused rather than ignored.
#[test]
fn a_replayed_file_takes_columns_as_an_import_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layouts = crate::support::repo().join("tests/data/layouts");
    let strategy = format!(
        "{},fast=2,slow=3",
        path(crate::support::example("sma-cross"))
    );
    let run = |db: &str, feed: &str, extra: &[&str]| {
        let mut args = vec!["run", "--paper", "--speed", "max", "--strategy", &strategy];
        if !feed.is_empty() {
            args.extend(["--feed", feed]);
        }
        args.extend(extra);
        keel(&dir.path().join(db), &args)
    };
    let book = |out: &Output| {
        let text = stdout(out);
        let line = text
            .lines()
            .find(|l| l.starts_with("sma-cross#1"))
            .map(str::to_owned);
        line.unwrap_or_else(|| panic!("no book line: {text}"))
            .split(" strategy calls on ")
            .next()
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let custom = format!("replay:{}", path(&layouts.join("custom-ETHBTC-5m.csv")));
    let plain = format!("replay:{}", path(&layouts.join("pandas-ETHBTC-5m.csv")));
    let columns = "time=Zeit,open=Erster,high=Hoch,low=Tief,close=Letzter,volume=Umsatz";

    let named = run("named.db", &custom, &["--columns", columns]);
    assert!(named.status.success(), "{}", stderr(&named));
    assert!(
        stdout(&named).contains("48 bars booked"),
        "{}",
        stdout(&named)
    );
    let usual = run("usual.db", &plain, &[]);
    assert!(usual.status.success(), "{}", stderr(&usual));
    assert!(book(&usual).contains("8 trade(s)"), "{}", book(&usual));
    assert_eq!(book(&named), book(&usual));

    let unnamed = run("unnamed.db", &custom, &[]);
    assert!(!unnamed.status.success());
    assert!(
        stderr(&unnamed).contains("missing column 'time'")
            && stderr(&unnamed).contains("--columns time=COLUMN"),
        "{}",
        stderr(&unnamed)
    );
    let no_file = run("sample.db", "", &["--columns", "time=Zeit"]);
    assert!(!no_file.status.success());
    assert!(
        stderr(&no_file).contains("no --feed here replays a file"),
        "{}",
        stderr(&no_file)
    );
}

/// The layouts in `tests/data/layouts/`: each imports the same bars as
/// Keel's own CSV of them.
#[test]
fn common_layouts_import_the_same_bars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layouts = crate::support::repo().join("tests/data/layouts");
    let eth = keel_model::candles::read_csv(&data("crypto-5m/ETH_BTC-5m.csv")).expect("eth");
    let columns = "time=Zeit,open=Erster,high=Hoch,low=Tief,close=Letzter,volume=Umsatz";
    for (file, extra) in [
        ("binance-ETHBTC-5m.csv", None),
        ("binance-ETHBTC-5m-2025.csv", None),
        ("yfinance-ETHBTC-5m.csv", None),
        ("pandas-ETHBTC-5m.csv", None),
        ("capitalised-ETHBTC-5m.csv", None),
        ("freqtrade-ETH_BTC-5m.json", None),
        ("pandas-ETHBTC-5m.csv.gz", None),
        ("freqtrade-ETH_BTC-5m.json.gz", None),
        ("custom-ETHBTC-5m.csv", Some(columns)),
    ] {
        let db = dir.path().join(format!("{file}.db"));
        let path = layouts.join(file);
        let mut args = vec![
            "data",
            "import",
            path.to_str().expect("path"),
            "--symbol",
            "ETH/BTC",
            "--timeframe",
            "5m",
        ];
        if let Some(columns) = extra {
            args.extend(["--columns", columns]);
        }
        let out = keel(&db, &args);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("48 bars (48 new"),
            "{file}: {}",
            stdout(&out)
        );
        let store = keel_host::store::Store::open(&db).expect("open");
        let stored = store
            .load_candles("ETH/BTC", keel_model::Timeframe::M5, None, None)
            .expect("load");
        assert_eq!(stored, eth[..48], "{file}");
    }
    // A compressed file replays as it decompresses, bar by bar.
    let gz = layouts.join("pandas-ETHBTC-5m.csv.gz");
    let feed = format!("replay:{}", gz.to_str().expect("path"));
    let out = keel(
        &dir.path().join("replay.db"),
        &[
            "run",
            "--paper",
            "--feed",
            &feed,
            "--speed",
            "max",
            "--strategy",
            crate::support::example("sma-cross").to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("48 bars booked"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("calls on pandas-ETHBTC"),
        "named by the file: {}",
        stdout(&out)
    );

    // yfinance's daily file: dates, and the close (not the adjusted one).
    let db = dir.path().join("goog.db");
    let goog = layouts.join("yfinance-GOOG-1d.csv");
    let out = import_file(&db, goog.to_str().expect("path"), "GOOG", "1d");
    assert!(out.status.success(), "{}", stderr(&out));
    let store = keel_host::store::Store::open(&db).expect("open");
    let stored = store
        .load_candles("GOOG", keel_model::Timeframe::D1, None, None)
        .expect("load");
    let real = keel_model::candles::read_csv(&data("GOOG-1d.csv")).expect("goog");
    assert_eq!(stored, real[..30]);
    // Names no alias knows, without --columns: one line naming the header.
    let custom = layouts.join("custom-ETHBTC-5m.csv");
    let out = import_file(
        &dir.path().join("x.db"),
        custom.to_str().expect("path"),
        "X",
        "5m",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("missing column 'time' (header is 'Zeit,Erster,Hoch,Tief,Letzter,Umsatz')"),
        "{}",
        stderr(&out)
    );
    let bad = keel(
        &dir.path().join("y.db"),
        &[
            "data",
            "import",
            custom.to_str().expect("path"),
            "--symbol",
            "X",
            "--timeframe",
            "5m",
            "--columns",
            "when=Zeit",
        ],
    );
    assert_eq!(
        stderr(&bad).trim(),
        "error: --columns: \"when\": not a column role (time, open, high, low, close, volume, partial)"
    );
}

/// A column whose name holds a comma is named to `--columns` in double
/// quotes, as the file's header writes it.
#[test]
fn a_column_named_with_a_comma_is_named_in_quotes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let custom = crate::support::repo().join("tests/data/layouts/custom-ETHBTC-5m.csv");
    let text = std::fs::read_to_string(&custom).expect("read");
    let (header, rows) = text.split_once('\n').expect("a header");
    let file = dir.path().join("comma.csv");
    let header = header.replace("Letzter", "\"Letzter, Kurs\"");
    std::fs::write(&file, format!("{header}\n{rows}")).expect("write");
    let columns = r#"time=Zeit,open=Erster,high=Hoch,low=Tief,close="Letzter, Kurs",volume=Umsatz"#;
    let mut args = vec!["data", "import", path(&file), "--symbol", "ETH/BTC"];
    args.extend(["--timeframe", "5m", "--columns", columns]);
    let out = keel(&db, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let named = "time=Zeit,open=Erster,high=Hoch,low=Tief,close=Letzter,volume=Umsatz";
    let expected = keel_model::candles::read_csv_columns(
        &custom,
        &keel_model::candles::Columns::parse(named).expect("columns"),
    )
    .expect("the file as it was");
    let store = keel_host::store::Store::open(&db).expect("open");
    let stored = store
        .load_candles("ETH/BTC", keel_model::Timeframe::M5, None, None)
        .expect("load");
    assert_eq!(stored, expected);
    // A quote left open is said, not guessed at.
    args.pop();
    args.push(r#"close="Letzter, Kurs"#);
    let out = keel(&db, &args);
    assert!(
        stderr(&out).contains("a quoted name does not end"),
        "{}",
        stderr(&out)
    );
}
