//! `keel data`: importing candle files into the SQLite store, as a user would.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::data;

pub(crate) fn keel(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run keel")
}

/// `keel data import FILE --symbol SYMBOL --timeframe TF`.
pub(crate) fn import_file(db: &Path, file: &str, symbol: &str, timeframe: &str) -> Output {
    keel(
        db,
        &[
            "data",
            "import",
            file,
            "--symbol",
            symbol,
            "--timeframe",
            timeframe,
        ],
    )
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_reports_real_gaps_and_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = data("crypto-5m/ADA_BTC-5m.csv");
    let out = import_file(&db, file.to_str().expect("path"), "ADA/BTC", "5m");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ADA/BTC 5m") && text.contains("new, 0 unchanged, 0 replaced"),
        "{text}"
    );
    assert!(
        text.contains(
            "5 gaps, 40 missing bars (not filled); largest: 33 bars after 2018-01-15T11:55:00Z"
        ),
        "{text}"
    );
    // Stored exactly as read: no bar invented for the gaps.
    let store = keel_host::store::Store::open(&db).expect("open");
    let stored = store
        .load_candles("ADA/BTC", keel_model::Timeframe::M5, None, None)
        .expect("load");
    assert_eq!(stored, keel_model::candles::read_csv(&file).expect("read"));

    // Importing the same file again is harmless.
    let out = import_file(&db, file.to_str().expect("path"), "ADA/BTC", "5m");
    assert!(stdout(&out).contains("(0 new, "), "{}", stdout(&out));
    let out = keel(&db, &["data", "list"]);
    assert!(
        stdout(&out).starts_with("ADA/BTC      5m"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn import_reads_freqtrade_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let json = dir.path().join("btc.json");
    std::fs::write(
        &json,
        "[[1700000000000, 10, 12, 9, 11, 5],\n [1700000060000, 11, 11.5, 10.5, 11.2, 3]]",
    )
    .expect("write");
    let out = import_file(&db, json.to_str().expect("path"), "BTC/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 bars (2 new, 0 unchanged, 0 replaced)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_files_are_refused_in_one_line_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let json = dir.path().join("bad.json");
    std::fs::write(
        &json,
        "[\n [1700000000000, 10, 12, 9, 11, 5],\n [1700000060000, 11, 9, 10.5, 11.2, 3]\n]",
    )
    .expect("write");
    let out = import_file(&db, json.to_str().expect("path"), "X", "1m");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: {}:3: candle 2: high 9 is below low 10.5",
            json.display()
        )
    );
    // Epoch seconds where freqtrade writes milliseconds: said so.
    std::fs::write(
        &json,
        "[[1700000000, 10, 12, 9, 11, 5], [1700000060, 11, 12, 10.5, 11.2, 3], \
          [1700000120, 11, 12, 10.5, 11.2, 3]]",
    )
    .expect("write");
    let out = import_file(&db, json.to_str().expect("path"), "X", "1m");
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: {}:1: candle 1: time 1700000000 looks like epoch seconds; \
             freqtrade JSON gives milliseconds",
            json.display()
        )
    );

    let goog = data("GOOG-1d.csv");
    let out = import_file(&db, goog.to_str().expect("path"), "GOOG", "1h");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("bars are mostly 1 d apart, which is not --timeframe 1h\n"),
        "{}",
        stderr(&out)
    );

    let out = import_file(&db, goog.to_str().expect("path"), "GOOG", "2d");
    assert_eq!(
        stderr(&out).trim(),
        "error: timeframe '2d' is not one of 1m 5m 15m 1h 4h 1d 1w 1M"
    );

    let out = keel(&db, &["data", "list"]);
    assert_eq!(
        stdout(&out).trim(),
        format!("no candles stored in {}", db.display())
    );

    // What only reads the store leaves no empty database behind a
    // mistyped --db: it says there is none.
    let typo = dir.path().join("kell.db");
    let sma = crate::support::example("sma-cross").to_str().expect("path");
    let csv = dir.path().join("out.csv");
    let reads: [&[&str]; 4] = [
        &["data", "list"],
        &[
            "data",
            "export",
            "GOOG@1d",
            "--out",
            csv.to_str().expect("path"),
        ],
        &["data", "delete", "GOOG@1d"],
        &["backtest", sma, "--data", "GOOG@1d"],
    ];
    for args in reads {
        let out = keel(&typo, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out).trim(),
            format!(
                "error: {}: no such database (an import or a download makes one)",
                typo.display()
            ),
            "{args:?}"
        );
        assert!(!typo.exists(), "{args:?} made {}", typo.display());
    }

    // A file that is not a database, said once.
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        "not a database at all, but long enough to be read as one",
    )
    .expect("write");
    let out = keel(&junk, &["data", "list"]);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: {}: cannot open the database: file is not a database",
            junk.display()
        )
    );
}

#[test]
fn conflicting_reimports_are_refused_unless_replace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "time,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T00:01:00Z,1.5,2,1,1.8,3\n")
        .expect("write");
    let import = |replace: bool| {
        let mut args = vec![
            "data",
            "import",
            csv.to_str().expect("path"),
            "--symbol",
            "A",
            "--timeframe",
            "1m",
        ];
        if replace {
            args.push("--replace");
        }
        keel(&db, &args)
    };
    assert!(import(false).status.success());
    std::fs::write(&csv, "time,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.6,10\n2024-01-01T00:01:00Z,1.5,2,1,1.8,3\n2024-01-01T00:02:00Z,1.5,2,1,1.8,3\n")
        .expect("rewrite");
    let out = import(false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("A 1m 2024-01-01T00:00:00Z is already stored with other values (close 1.5 there, 1.6 here); nothing imported"),
        "{}",
        stderr(&out)
    );
    let out = keel(&db, &["data", "list"]);
    assert!(
        stdout(&out).contains("        2 bars"),
        "the refused import wrote nothing: {}",
        stdout(&out)
    );
    let out = import(true);
    assert!(
        stdout(&out).contains("(1 new, 1 unchanged, 1 replaced)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn synth_is_seeded_and_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    for file in [&a, &b] {
        let out = keel(
            &db,
            &[
                "data",
                "synth",
                "--bars",
                "500",
                "--seed",
                "42",
                "--out",
                file.to_str().expect("path"),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (a, b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert_eq!(a, b, "same seed, same bytes");
    assert_eq!(String::from_utf8_lossy(&a).lines().count(), 501);

    let out = keel(
        &db,
        &[
            "data",
            "synth",
            "--bars",
            "2000",
            "--seed",
            "7",
            "--symbol",
            "SYN/USD",
            "--timeframe",
            "5m",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel(&db, &["data", "list"]);
    assert!(
        stdout(&out).contains("SYN/USD      5m        2000 bars  2024-01-01T00:00:00Z"),
        "{}",
        stdout(&out)
    );
    // Monthly bars open on the same day of each calendar month.
    let months = dir.path().join("months.csv");
    let args = ["data", "synth", "--bars", "14", "--timeframe", "1M"];
    let out = keel(
        &db,
        &[
            &args[..],
            &["--start", "2024-01-31", "--out", path(&months)],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bars = keel_model::candles::read_csv(&months).expect("months");
    let times: Vec<String> = (bars.iter())
        .map(|c| keel_model::candles::format_time(c.time_ms)[..10].to_owned())
        .collect();
    assert_eq!(
        times[..4],
        ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    );
    assert_eq!(times[13], "2025-02-28");
    let out = import_file(&db, path(&months), "MON/USD", "1M");
    assert!(out.status.success(), "{}", stderr(&out));
}

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
        "error: --columns: \"when\": not a column role (time, open, high, low, close, volume)"
    );
}

/// One line of a pandas-made expected file: the bar and how many candles
/// fell in it.
fn expected_bars(path: &Path) -> Vec<(keel_model::candles::Candle, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let number = |i: usize| {
                f[i].parse::<f64>()
                    .unwrap_or_else(|e| panic!("{line}: {e}"))
            };
            let candle = keel_model::candles::Candle {
                time_ms: keel_model::candles::parse_time(f[0]).expect("time"),
                open: number(1),
                high: number(2),
                low: number(3),
                close: number(4),
                volume: number(5),
            };
            (candle, f[6].parse().expect("bars"))
        })
        .collect()
}

/// What pandas' `resample` makes of the shared candles
/// (`tests/data/resample/make.py` wrote it) is what Keel's aggregation
/// makes: the same bars at the same times, the same prices to the bit, the
/// same volumes to rounding, and the same bars counted partial.
#[test]
fn aggregation_makes_what_pandas_resample_makes_of_the_shared_data() {
    use keel_model::candles::{Timeframe, read_file, resample::resample};
    let dir = crate::support::repo().join("tests/data/resample");
    let cases = [
        ("UNITTEST_BTC-1m.csv", 60_000, ["15m", "1h", "1d"]),
        ("crypto-5m/ETH_BTC-5m.csv", 300_000, ["1h", "4h", "1d"]),
    ];
    for (file, from_ms, targets) in cases {
        let source = read_file(&data(file)).expect(file);
        let stem = Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("stem");
        for tf in targets {
            let to = Timeframe::parse(tf).expect("timeframe");
            let expected = expected_bars(&dir.join(format!("{stem}-to-{tf}.csv")));
            let made = resample(&source, from_ms, to).expect("resampled");
            assert_eq!(made.candles.len(), expected.len(), "{file} to {tf}");
            for (m, (e, _)) in made.candles.iter().zip(&expected) {
                assert_eq!(
                    (m.time_ms, m.open, m.high, m.low, m.close),
                    (e.time_ms, e.open, e.high, e.low, e.close),
                    "{file} to {tf}"
                );
                let scale = e.volume.abs().max(1.0);
                assert!(
                    (m.volume - e.volume).abs() <= 1e-9 * scale,
                    "{file} to {tf}: {m:?} {e:?}"
                );
            }
            let whole = (to.duration_ms() / from_ms) as usize;
            let partial = expected.iter().filter(|(_, n)| *n < whole).count();
            assert_eq!(made.partial, partial, "{file} to {tf}");
            assert!(partial > 0, "the shared data has gaps: some bar is partial");
        }
    }
}

/// `--timeframe` hands a strategy the bars it declares: sma-cross (1h) on
/// one-minute candles is warned and told how, and with `--timeframe 1h`
/// runs on hourly bars with a note of the partial ones; a finer or unknown
/// timeframe is refused in one line.
#[test]
fn a_backtest_aggregates_to_the_timeframe_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let sma = crate::support::example("sma-cross")
        .to_str()
        .expect("utf-8");
    let btc = data("UNITTEST_BTC-1m.csv");
    let btc = btc.to_str().expect("utf-8");
    let json = dir.path().join("r.json");
    let out = keel(&db, &["backtest", sma, "--data", btc]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("declares 1h bars") && said.contains("--timeframe 1h aggregates them"),
        "{said}"
    );
    let out = keel(
        &db,
        &[
            "backtest",
            sma,
            "--data",
            btc,
            "--timeframe",
            "1h",
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("declares 1h bars"), "{said}");
    assert!(
        said.contains("note: ")
            && said.contains("as 1h: ")
            && said.contains("of 240 bars are partial"),
        "{said}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["data"][0]["bars"], 240);
    assert!(
        report["data"][0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(" as 1h"))
    );

    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    for (tf, says) in [
        ("1m", "5m bars do not make whole 1m bars"),
        ("7m", "unknown timeframe"),
        ("1w", "5m, 15m, 1h, 4h, 1d only, not 1w"),
    ] {
        let out = keel(
            &db,
            &[
                "backtest",
                sma,
                "--data",
                eth.to_str().expect("utf-8"),
                "--timeframe",
                tf,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tf}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{tf}: {err}");
    }
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `keel data export ETH/BTC@5m --out OUT`, with `extra` options.
pub(crate) fn export_eth(db: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["data", "export", "ETH/BTC@5m", "--out", path(out)];
    args.extend_from_slice(extra);
    keel(db, &args)
}

/// `keel data export` writes a stored series back out as Keel's CSV (gzip
/// when the name says so), aggregated if asked: read back, it is the same
/// bars; what it cannot do is one line, and no file is left behind.
#[test]
fn a_stored_series_exports_to_csv_and_gzip_and_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    let out = import_file(&db, eth.to_str().expect("path"), "ETH/BTC", "5m");
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = keel_model::candles::read_csv(&eth).expect("eth");
    for name in ["eth.csv", "eth.csv.gz"] {
        let file = dir.path().join(name);
        let out = export_eth(&db, &file, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("wrote 5760 bars of ETH/BTC 5m"),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            keel_model::candles::read_file(&file).expect(name),
            stored,
            "{name}"
        );
    }
    let hourly = dir.path().join("eth-1h.csv");
    let out = export_eth(&db, &hourly, &["--timeframe", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let made = keel_model::candles::resample::resample(&stored, 300_000, keel_model::Timeframe::H1)
        .expect("1h");
    assert_eq!(
        keel_model::candles::read_file(&hourly).expect("1h"),
        made.candles
    );

    let nowhere = dir.path().join("no/such/dir/x.csv");
    for (args, says) in [
        (
            vec!["data", "export", "XRP/BTC@5m", "--out", "x.csv"],
            "XRP/BTC@5m: no such series",
        ),
        (
            vec!["data", "export", "ETH/BTC", "--out", "x.csv"],
            "expected SYMBOL@TIMEFRAME",
        ),
        (
            vec!["data", "export", "ETH/BTC@5m", "--out", path(&nowhere)],
            "x.csv: cannot write: No such file or directory",
        ),
    ] {
        let out = keel(&db, &args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert!(!Path::new("x.csv").exists());

    // Only a regular file is replaced: not a pipe (or a device), not the
    // database, not a JSON name; a link is written through, and a file
    // replaced keeps its permissions.
    let fifo = dir.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let json = dir.path().join("eth.json");
    for (out, says) in [
        (fifo.clone(), "pipe: cannot write: not a regular file"),
        (db.clone(), "that is the database's own file"),
        // Its log, which SQLite removes as the database closes.
        (
            dir.path().join(format!(
                "{}-wal",
                db.file_name().expect("name").to_string_lossy()
            )),
            "that is the database's own file",
        ),
        // A link to the log, which does not exist yet.
        (
            {
                let link = dir.path().join("to-the-log.csv");
                let log = format!("{}-wal", db.file_name().expect("name").to_string_lossy());
                std::os::unix::fs::symlink(log, &link).expect("link");
                link
            },
            "that is the database's own file",
        ),
        (
            json,
            "export writes CSV or Parquet; name it .csv, .csv.gz or .parquet",
        ),
    ] {
        let run = export_eth(&db, &out, &[]);
        assert!(!run.status.success(), "{}", out.display());
        assert!(stderr(&run).contains(says), "{}", stderr(&run));
    }
    assert!(
        std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(
        keel_host::store::Store::open(&db).is_ok(),
        "the database is whole"
    );
    // A name that only begins with the database's is a file of its own.
    let beside = dir.path().join(format!(
        "{}.csv",
        db.file_name().expect("name").to_string_lossy()
    ));
    let run = export_eth(&db, &beside, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        keel_model::candles::read_file(&beside).expect("beside"),
        stored
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let private = dir.path().join("private.csv");
    std::fs::write(&private, "old").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&private, &link).expect("link");
    let run = export_eth(&db, &link, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        keel_model::candles::read_file(&private).expect("through the link"),
        stored
    );
    let mode = std::fs::metadata(&private)
        .expect("private")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // `-` is the standard output.
    let run = keel(&db, &["data", "export", "ETH/BTC@5m", "--out", "-"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).lines().count(), 5761);
    assert!(!Path::new("-").exists());
    // A reader that stops early (`| head -2`) ends it quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(&db)
        .args(["data", "export", "ETH/BTC@5m", "--out", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keel");
    let mut head = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut head).expect("head");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");

    // A symbol with '@' could never be named as SYMBOL@TF; an empty,
    // padded or control-character one could not be told apart in a
    // listing: all refused, and nothing stored.
    for (symbol, why) in [
        ("A@B", "holds no '@'"),
        ("", "is not empty"),
        (" ", "is not empty"),
        (" ETH/BTC", "has no space around it"),
        ("N\nL", "holds no control character"),
        ("T\tAB", "holds no control character"),
    ] {
        let out = import_file(&db, eth.to_str().expect("path"), symbol, "5m");
        assert!(!out.status.success());
        assert!(
            stderr(&out).trim().lines().count() == 1 && stderr(&out).contains(why),
            "{symbol:?}: {}",
            stderr(&out)
        );
    }
    let listed = stdout(&keel(&db, &["data", "list"]));
    assert_eq!(
        listed.lines().filter(|l| l.contains(" 5m ")).count(),
        1,
        "{listed}"
    );

    // Deleted whole, then nothing to delete.
    let out = keel(&db, &["data", "delete", "ETH/BTC@5m"]);
    assert_eq!(
        stdout(&out).trim(),
        "deleted ETH/BTC 5m: 5760 bars",
        "{}",
        stderr(&out)
    );
    let out = keel(&db, &["data", "delete", "ETH/BTC@5m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ETH/BTC@5m: no such series in"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&keel(&db, &["data", "list"])).contains(" 5m "));
}

/// The lines after an import tell of the file's bars; when the stored
/// series holds more (bars stored before, or a damaged span dropped by
/// `--replace`), a line tells of the series as it now is.
#[test]
fn an_import_into_a_longer_or_mended_series_says_what_the_series_now_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let (all, first) = (dir.path().join("all.csv"), dir.path().join("first.csv"));
    for (file, bars) in [(&all, "150000"), (&first, "1000")] {
        let args = ["data", "synth", "--bars", bars, "--out", path(file)];
        assert!(keel(&db, &args).status.success());
    }
    let out = import_file(&db, path(&all), "SYN/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("the stored series now"),
        "{}",
        stdout(&out)
    );
    let out = import_file(&db, path(&first), "SYN/USD", "1m");
    assert!(
        stdout(&out).contains("(0 new, 1000 unchanged, 0 replaced)")
            && stdout(&out).contains("\nno gaps\nthe stored series now: 150000 bars, 2024-01-01T00:00:00Z .. 2024-04-14T03:59:00Z, no gaps\n"),
        "{}",
        stdout(&out)
    );
    // One bit flipped in the second span, which the first 1000 bars are
    // not in: --replace drops it, and the series has a gap where it was.
    let conn = rusqlite::Connection::open(&db).expect("open");
    crate::support::flip_span_bit(&conn, 1, 100, 1).expect("a second span");
    drop(conn);
    let mut args = vec!["data", "import", path(&first), "--symbol", "SYN/USD"];
    args.extend(["--timeframe", "1m", "--replace"]);
    let out = keel(&db, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let now = (text.lines())
        .find_map(|l| l.strip_prefix("the stored series now: "))
        .unwrap_or_else(|| panic!("no line for the series: {text}"));
    assert!(text.contains("dropped damaged"), "{text}");
    let (bars, rest) = now.split_once(" bars, ").expect("bars");
    let missing = rest
        .strip_suffix(" missing)")
        .and_then(|r| r.split_once(", 1 gap ("))
        .map(|(_, m)| m.trim_end_matches(" bars"));
    let missing: usize = missing
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{now}"));
    assert!(missing > 0);
    assert_eq!(
        bars.parse::<usize>().expect("count") + missing,
        150000,
        "{now}"
    );
}
