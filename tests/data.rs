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

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `keel data export ETH/BTC@5m --out OUT`, with `extra` options.
pub(crate) fn export_eth(db: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["data", "export", "ETH/BTC@5m", "--out", path(out)];
    args.extend_from_slice(extra);
    keel(db, &args)
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
        stderr(&out).ends_with("bars are mostly 1d apart: --timeframe 1d, not --timeframe 1h\n"),
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

/// A timeframe is judged by how the bars are spaced: a sparse series (an
/// illiquid pair's minutes, every other one missing) is of its timeframe
/// with gaps; bars mostly closer than the timeframe, or all on a longer
/// timeframe's grid, are not; one bar off the grid is named as such.
#[test]
fn sparse_bars_are_their_timeframe_with_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let write = |name: &str, times: &[i64]| {
        let file = dir.path().join(name);
        let mut text = String::from("time,open,high,low,close,volume\n");
        for t in times {
            text.push_str(&format!("{t},1,1.1,0.9,1,5\n"));
        }
        std::fs::write(&file, text).expect("write");
        file
    };
    const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z, a Monday
    // Every other minute, and now and then two in a row.
    let sparse: Vec<i64> = (0..600)
        .filter(|m| m % 2 == 0 || m % 37 == 0)
        .map(|m| T0 + m * 60)
        .collect();
    let out = import_file(&db, path(&write("sparse.csv", &sparse)), "ILLIQ/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{} bars", sparse.len())),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("gaps"), "{}", stdout(&out));

    // All on the five-minute grid: a 5m file, said so.
    let fives: Vec<i64> = (0..300).map(|i| T0 + i * 300 + (i / 7) * 300).collect();
    let out = import_file(&db, path(&write("fives.csv", &fives)), "FIVE/USD", "1m");
    assert!(!out.status.success());
    assert!(
        stderr(&out).ends_with("bars are mostly 5m apart: --timeframe 5m, not --timeframe 1m\n"),
        "{}",
        stderr(&out)
    );

    // Months, given as any shorter timeframe; weekdays' daily bars at a
    // New York midnight (their UTC hour moves at each daylight-saving
    // change), given as hours.
    let months: Vec<i64> = (0..40)
        .map(|m| {
            let (y, mo) = (2020 + m / 12, m % 12 + 1);
            keel_model::candles::parse_time(&format!("{y}-{mo:02}-01T00:00:00Z")).expect("month")
                / 1000
        })
        .collect();
    let months = write("months.csv", &months);
    for tf in ["1m", "1h", "1d", "1w"] {
        let out = import_file(&db, path(&months), "MONTH/USD", tf);
        assert!(!out.status.success(), "{tf}");
        assert!(
            stderr(&out).ends_with(&format!(
                "bars are mostly 1M apart: --timeframe 1M, not --timeframe {tf}\n"
            )),
            "{tf}: {}",
            stderr(&out)
        );
    }
    let new_york = dir.path().join("ny.csv");
    let mut text = String::from("Date,Open,High,Low,Close,Volume\n");
    let mut day = T0;
    for _ in 0..260 {
        let date = keel_model::candles::format_time(day * 1000);
        let weekday = (day / 86_400 + 4) % 7; // 0 Sunday
        // Eastern time: daylight saving from 2024-03-10 to 2024-11-03.
        let summer = (1_710_054_000..1_730_613_600).contains(&day);
        if (1..=5).contains(&weekday) {
            let offset = if summer { "-04:00" } else { "-05:00" };
            text.push_str(&format!("{} 00:00:00{offset},1,1.1,0.9,1,5\n", &date[..10]));
        }
        day += 86_400;
    }
    std::fs::write(&new_york, text).expect("write");
    let out = import_file(&db, path(&new_york), "NY/USD", "1h");
    assert!(
        stderr(&out).ends_with("bars are mostly 1d apart: --timeframe 1d, not --timeframe 1h\n"),
        "{}",
        stderr(&out)
    );
    let out = import_file(&db, path(&new_york), "NY/USD", "1d");
    assert!(out.status.success(), "{}", stderr(&out));

    // Weeks with one bar a day off their grid: that bar is named, not a
    // spacing made of three different ones.
    let day = 86_400;
    let weeks = [T0, T0 + 7 * day, T0 + 21 * day, T0 + 22 * day];
    let out = import_file(&db, path(&write("weeks.csv", &weeks)), "WEEK/USD", "1w");
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("mostly") && stderr(&out).contains("2024-01-23T00:00:00Z"),
        "{}",
        stderr(&out)
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
    // A negative number is the option's value, out of its range — not an
    // unknown option.
    for (args, says) in [
        (
            ["--seed", "-1"],
            "error: invalid value '-1' for '--seed <SEED>'",
        ),
        (
            ["--bars", "-5"],
            "error: invalid value '-5' for '--bars <BARS>': -5 is outside [1, 100000000]",
        ),
    ] {
        let out = keel(
            &db,
            &[&["data", "synth", "--out", "x.csv"][..], &args].concat(),
        );
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).starts_with(says), "{args:?}: {}", stderr(&out));
    }
    // Past the last time Keel takes: the start is why, not the walk.
    let late = [
        "data",
        "synth",
        "--start",
        "2199-12-31T23:59:00Z",
        "--bars",
        "10",
        "--out",
        "x.csv",
    ];
    let out = keel(&db, &late);
    assert!(
        stderr(&out)
            .trim_end()
            .ends_with("(try an earlier --start or fewer --bars)"),
        "{}",
        stderr(&out)
    );

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

/// `--tick` and `--lot` write a walk with a venue's digits: every price a
/// multiple of the tick, printed with its places and no more.
#[test]
fn synth_quotes_prices_on_a_tick_and_volumes_on_a_lot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("ticks.csv");
    let args = ["data", "synth", "--bars", "3000", "--tick", "0.05"];
    let out = keel(
        &db,
        &[&args[..], &["--lot", "0.001", "--out", path(&file)]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).expect("file");
    let places = |field: &str| field.split_once('.').map_or(0, |(_, f)| f.len());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        for price in &fields[1..5] {
            let cents = (price.parse::<f64>().expect("price") * 100.0).round() as i64;
            assert!(places(price) <= 2 && cents % 5 == 0, "{line}");
        }
        assert!(places(fields[5]) <= 3, "{line}");
    }
    // The walk is the same walk: only its digits changed.
    let plain = dir.path().join("plain.csv");
    let out = keel(
        &db,
        &["data", "synth", "--bars", "3000", "--out", path(&plain)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (quoted, walk) = (
        keel_model::candles::read_csv(&file).expect("quoted"),
        keel_model::candles::read_csv(&plain).expect("walk"),
    );
    assert!(
        quoted
            .iter()
            .zip(&walk)
            .all(|(q, w)| (q.close - w.close).abs() <= 0.025)
    );

    for (flag, value, says) in [
        (
            "--tick",
            "0",
            "'0' for '--tick <TICK>': 0 is outside (0, 1000000]",
        ),
        (
            "--tick",
            "-0.01",
            "'-0.01' for '--tick <TICK>': \"-0.01\" is not a decimal such as 0.01",
        ),
        (
            "--lot",
            "1e-8",
            "'1e-8' for '--lot <LOT>': \"1e-8\" is not a decimal such as 0.01",
        ),
        ("--lot", "0.0000000000001", "at most 12 decimal places"),
    ] {
        let out = keel(&db, &["data", "synth", "--out", "x.csv", flag, value]);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(
            stderr(&out).contains(says),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
    // A tick as coarse as the prices puts a low at zero: said, with why.
    let x = dir.path().join("x.csv");
    let coarse = ["data", "synth", "--price", "1", "--tick", "5"];
    let out = keel(&db, &[&coarse[..], &["--out", path(&x)]].concat());
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .trim_end()
            .ends_with("(try a smaller --sigma, a finer --tick or fewer --bars)"),
        "{}",
        stderr(&out)
    );
    assert!(!x.exists());
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

mod check;
mod columns;
mod export;
mod killed;
mod timeframes;
