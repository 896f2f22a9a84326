//! `keel backtest --data SYMBOL@TF`: stored series are read span by span
//! while the run goes on. The run must be the one a loaded file gives, and
//! bars damaged in the database must still refuse it, wherever they are.

use std::path::Path;

use super::{keel, path, shared_cache, text};
use crate::support::example;

/// Seeded hourly bars in a CSV file (5,000 hours: five spans of the store).
fn synth(db: &Path, out: &Path, seed: &str) {
    let made = keel(
        db,
        &shared_cache(),
        &[
            "data",
            "synth",
            "--bars",
            "5000",
            "--seed",
            seed,
            "--timeframe",
            "1h",
            "--out",
            path(out),
        ],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
}

fn import(db: &Path, file: &Path, symbol: &str) {
    let out = keel(
        db,
        &shared_cache(),
        &[
            "data",
            "import",
            path(file),
            "--symbol",
            symbol,
            "--timeframe",
            "1h",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `keel backtest sma-cross --data …` with a JSON report: (succeeded,
/// stdout, stderr, the report when written).
fn backtest(
    db: &Path,
    json: &Path,
    data: &[&str],
) -> (bool, String, String, Option<serde_json::Value>) {
    backtest_with(db, json, data, &[])
}

/// `backtest` with more arguments.
fn backtest_with(
    db: &Path,
    json: &Path,
    data: &[&str],
    extra: &[&str],
) -> (bool, String, String, Option<serde_json::Value>) {
    let _ = std::fs::remove_file(json);
    let mut args = vec![
        "backtest",
        path(example("sma-cross")),
        "--param",
        "fast=5",
        "--param",
        "slow=20",
        "--json",
        path(json),
    ];
    for d in data {
        args.extend(["--data", d]);
    }
    args.extend(extra);
    let out = keel(db, &shared_cache(), &args);
    let report = std::fs::read_to_string(json)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("the report is JSON"));
    (
        out.status.success(),
        text(&out.stdout),
        text(&out.stderr),
        report,
    )
}

#[test]
fn a_stored_series_gives_the_run_its_file_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    synth(&db, &a, "3");
    synth(&db, &b, "4");
    import(&db, &a, "AAA/USD");
    import(&db, &b, "BBB/USD");
    let json = dir.path().join("r.json");

    let (ok, _, said, stored) = backtest(&db, &json, &["AAA/USD@1h"]);
    assert!(ok, "{said}");
    let stored = stored.expect("a report");
    let file = format!("AAA/USD={}", path(&a));
    let (ok, _, said, loaded) = backtest(&db, &json, &[&file]);
    assert!(ok, "{said}");
    let loaded = loaded.expect("a report");
    assert_eq!(stored["data"][0]["bars"], 5000);
    assert_eq!(stored["data"][0]["source"], "store:AAA/USD@1h");
    for same in ["digest", "bars", "first", "last", "partial"] {
        assert_eq!(stored["data"][0][same], loaded["data"][0][same], "{same}");
    }
    assert!(
        stored["data"][0]["partial"].is_null(),
        "none when not aggregated"
    );
    assert!(
        stored["trades"].as_array().is_some_and(|t| t.len() > 20),
        "{stored}"
    );
    for same in ["trades", "metrics", "equity"] {
        assert_eq!(stored[same], loaded[same], "{same}");
    }

    // Two stored series, each read on its own: the same as both files.
    let (ok, _, said, stored) = backtest(&db, &json, &["AAA/USD@1h", "BBB/USD@1h"]);
    assert!(ok, "{said}");
    let stored = stored.expect("a report");
    let files = [file, format!("BBB/USD={}", path(&b))];
    let (ok, _, said, loaded) = backtest(&db, &json, &[&files[0], &files[1]]);
    assert!(ok, "{said}");
    let loaded = loaded.expect("a report");
    assert_eq!(stored["data"][1]["digest"], loaded["data"][1]["digest"]);
    for same in ["trades", "metrics", "equity"] {
        assert_eq!(stored[same], loaded[same], "{same}");
    }

    // Aggregated as it is read (4h from 1h): what the file aggregated
    // whole gives, its reference made of the 4h bars, and the same note.
    let four = ["--timeframe", "4h"];
    let (ok, _, said_stored, stored) = backtest_with(&db, &json, &["AAA/USD@1h"], &four);
    assert!(ok, "{said_stored}");
    let stored = stored.expect("a report");
    let (ok, _, said_loaded, loaded) = backtest_with(&db, &json, &[&files[0]], &four);
    assert!(ok, "{said_loaded}");
    let loaded = loaded.expect("a report");
    assert_eq!(stored["data"][0]["source"], "store:AAA/USD@1h as 4h");
    assert_eq!(stored["data"][0]["bars"], 1250);
    for same in ["digest", "bars", "first", "last", "partial"] {
        assert_eq!(stored["data"][0][same], loaded["data"][0][same], "{same}");
    }
    for same in ["trades", "metrics", "equity"] {
        assert_eq!(stored[same], loaded[same], "{same}");
    }
    // The notes of partial bars, past the series' name.
    let note = |said: &str| {
        let note = said.lines().find_map(|l| l.strip_prefix("note: "));
        note.and_then(|n| n.split_once(": "))
            .map(|(_, what)| what.to_owned())
    };
    assert_eq!(note(&said_stored), note(&said_loaded), "{said_stored}");

    // One-minute bars fill a span (65,536 minutes) and are handed over in
    // pieces within it: still the file's run.
    let minutes = dir.path().join("m.csv");
    let args = ["data", "synth", "--bars", "70000", "--seed", "5"];
    let made = keel(
        &db,
        &shared_cache(),
        &[&args[..], &["--out", path(&minutes)]].concat(),
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let args = ["data", "import", path(&minutes), "--symbol", "MMM/USD"];
    let made = keel(
        &db,
        &shared_cache(),
        &[&args[..], &["--timeframe", "1m"]].concat(),
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let (ok, _, said, stored) = backtest(&db, &json, &["MMM/USD@1m"]);
    assert!(ok, "{said}");
    let file = format!("MMM/USD={}", path(&minutes));
    let (ok, _, said, loaded) = backtest(&db, &json, &[&file]);
    assert!(ok, "{said}");
    let (stored, loaded) = (stored.expect("a report"), loaded.expect("a report"));
    assert_eq!(stored["data"][0]["bars"], 70000);
    for same in ["trades", "metrics", "equity"] {
        assert_eq!(stored[same], loaded[same], "{same}");
    }

    // What the store does not hold is refused before any run.
    let (ok, _, said, report) = backtest(&db, &json, &["CCC/USD@1h"]);
    assert!(!ok && report.is_none());
    assert!(said.contains("no CCC/USD 1h candles in"), "{said}");
    // The reading starts beside the strategy's loading, yet what is wrong
    // with the strategy is still said first, and alone.
    let none = dir.path().join("none.wasm");
    let out = keel(
        &db,
        &shared_cache(),
        &["backtest", path(&none), "--data", "CCC/USD@1h"],
    );
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("none.wasm: cannot read") && !said.contains("CCC/USD"),
        "{said}"
    );
    // A grid over a stored series, started as one run's reading would be,
    // loads the series whole and runs every combination.
    let out = keel(
        &db,
        &shared_cache(),
        &[
            "backtest",
            path(example("sma-cross")),
            "--param",
            "fast=5..10:5",
            "--param",
            "slow=20",
            "--data",
            "AAA/USD@1h",
        ],
    );
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for combination in ["fast=5 slow=20", "fast=10 slow=20"] {
        assert!(table.contains(combination), "{table}");
    }

    // No symbol, or nothing at all.
    for (data, says) in [
        (
            "@1h",
            "--data @1h: no symbol before the '@' (SYMBOL@TIMEFRAME)",
        ),
        (
            "",
            "--data '': give a candle file, SYMBOL=FILE or SYMBOL@TIMEFRAME",
        ),
    ] {
        let (ok, _, said, _) = backtest(&db, &json, &[data]);
        assert!(
            !ok && said.trim() == format!("error: {says}"),
            "{data:?}: {said}"
        );
    }

    // One symbol twice, from the store or from files: refused, no report.
    for twice in [
        ["AAA/USD@1h", "AAA/USD@1h"],
        ["AAA/USD@1h", files[0].as_str()],
        [files[1].as_str(), files[1].as_str()],
    ] {
        let (ok, _, said, report) = backtest(&db, &json, &twice);
        assert!(!ok && report.is_none(), "{twice:?}");
        assert!(
            said.trim().lines().count() == 1 && said.contains("is given twice"),
            "{twice:?}: {said}"
        );
    }
}

#[test]
fn damaged_stored_bars_refuse_the_run_wherever_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("a.csv");
    synth(&db, &file, "5");
    let json = dir.path().join("r.json");
    // One bit flipped in the fourth of five spans: found mid-run.
    let flip = |conn: &rusqlite::Connection| crate::support::flip_span_bit(conn, 3, 1000, 4);
    let sql =
        |statement: &'static str| move |conn: &rusqlite::Connection| conn.execute(statement, []);
    type Damage<'a> = (
        &'a str,
        &'a dyn Fn(&rusqlite::Connection) -> rusqlite::Result<usize>,
        &'a str,
    );
    let cases: [Damage; 4] = [
        ("a bit flipped", &flip, "do not match their digest"),
        (
            "the last span deleted",
            &sql("DELETE FROM candle_spans WHERE span = (SELECT MAX(span) FROM candle_spans)"),
            "the catalogue and the bars disagree",
        ),
        (
            "the catalogue's count changed",
            &sql("UPDATE candle_series SET bars = bars + 1"),
            "the catalogue and the bars disagree",
        ),
        (
            "the catalogue's row deleted",
            &sql("DELETE FROM candle_series"),
            "the catalogue has no row for them",
        ),
    ];
    for (damage, apply, says) in cases {
        let _ = std::fs::remove_file(&db);
        import(&db, &file, "AAA/USD");
        let (ok, _, said, _) = backtest(&db, &json, &["AAA/USD@1h"]);
        assert!(ok, "{said}");
        let conn = rusqlite::Connection::open(&db).expect("open");
        let changed = apply(&conn).expect("damage");
        assert!(changed > 0, "{damage}: nothing changed");
        drop(conn);
        let (ok, out, said, report) = backtest(&db, &json, &["AAA/USD@1h"]);
        assert!(!ok, "{damage}: ran on damaged bars: {out}");
        assert!(
            report.is_none() && !out.contains("total return"),
            "{damage}: {out}"
        );
        assert!(
            said.contains("the stored AAA/USD 1h bars of ") && said.contains(says),
            "{damage}: {said}"
        );
        assert_eq!(said.trim().lines().count(), 1, "{damage}: {said}");
        // An export, read span by span, is refused too and leaves the
        // file it would have replaced as it was.
        for name in ["out.csv", "out.parquet"] {
            let out_file = dir.path().join(name);
            std::fs::write(&out_file, "before").expect("write");
            let args = ["data", "export", "AAA/USD@1h", "--out", path(&out_file)];
            let out = keel(&db, &shared_cache(), &args);
            assert_eq!(out.status.code(), Some(1), "{damage}: {name}");
            let said = text(&out.stderr);
            assert_eq!(said.trim().lines().count(), 1, "{damage}");
            // A read that fails, not a write.
            assert!(!said.contains("cannot write"), "{damage}: {said}");
            assert_eq!(std::fs::read_to_string(&out_file).expect("read"), "before");
        }
    }
}

/// A seeded one-minute CSV of `bars` bars.
fn minutes(db: &Path, out: &Path, bars: usize, seed: &str) {
    let args = ["data", "synth", "--bars", &bars.to_string(), "--seed", seed];
    let made = keel(
        db,
        &shared_cache(),
        &[&args[..], &["--out", path(out)]].concat(),
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
}

#[test]
fn a_file_read_as_the_run_goes_gives_the_run_it_gives_loaded_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("SYN_USD-1m.csv");
    minutes(&db, &file, 50_000, "8");
    let json = dir.path().join("r.json");
    // A page that draws the closes loads the data whole: the same report.
    let page = dir.path().join("r.html");
    for extra in [&[][..], &["--timeframe", "15m"][..]] {
        let data = [path(&file)];
        let (ok, _, said, streamed) = backtest_with(&db, &json, &data, extra);
        assert!(ok, "{said}");
        let whole_args = [extra, &["--report", path(&page)][..]].concat();
        let (ok, _, said_whole, whole) = backtest_with(&db, &json, &data, &whole_args);
        assert!(ok, "{said_whole}");
        assert_eq!(streamed, whole, "{extra:?}");
        assert_eq!(said, said_whole, "{extra:?}");
    }

    // A file whose first bars are an hour apart and the rest a minute: the
    // run is made again loaded whole, and is the stored series' run.
    let all = std::fs::read_to_string(&file).expect("read");
    let mut odd = String::from("time,open,high,low,close,volume\n");
    let (mut time_ms, mut close) = (1_704_067_200_000_i64, 100.0_f64);
    for i in 0..17_000 + 40_000 {
        let open = close;
        close = 100.0 + 20.0 * ((i as f64) / 97.0).sin() + ((i * 7919) % 13) as f64 * 0.1;
        let (high, low) = (open.max(close) + 0.05, open.min(close) - 0.05);
        let time = keel_model::candles::format_time(time_ms);
        odd.push_str(&format!("{time},{open},{high},{low},{close},10\n"));
        time_ms += if i < 17_000 { 3_600_000 } else { 60_000 };
    }
    let odd_file = dir.path().join("ODD_USD-1m.csv");
    std::fs::write(&odd_file, odd).expect("write");
    import_minutes(&db, &odd_file, "ODD/USD");
    let (ok, _, said, from_file) = backtest(&db, &json, &[path(&odd_file)]);
    assert!(ok, "{said}");
    let (ok, _, said, stored) = backtest(&db, &json, &["ODD/USD@1m"]);
    assert!(ok, "{said}");
    let (from_file, stored) = (from_file.expect("a report"), stored.expect("a report"));
    for same in ["trades", "metrics", "equity"] {
        assert_eq!(from_file[same], stored[same], "{same}");
    }
    assert_eq!(from_file["data"][0]["digest"], stored["data"][0]["digest"]);

    // A bad line far into the file: the run is refused with the file's
    // own words, and no report is written.
    let bad_file = dir.path().join("BAD_USD-1m.csv");
    let mut bad = all.clone();
    let at = bad
        .match_indices('\n')
        .nth(40_000)
        .map(|(i, _)| i)
        .expect("a line");
    bad.insert_str(at + 1, "2099-01-01T00:00:00Z,1,2,0.5,x,1\n");
    std::fs::write(&bad_file, bad).expect("write");
    let (ok, _, said, report) = backtest(&db, &json, &[path(&bad_file)]);
    assert!(!ok && report.is_none(), "{said}");
    assert!(
        said.contains("BAD_USD-1m.csv:40002: close 'x' is not a number"),
        "{said}"
    );
}

fn import_minutes(db: &Path, file: &Path, symbol: &str) {
    let args = ["data", "import", path(file), "--symbol", symbol];
    let out = keel(
        db,
        &shared_cache(),
        &[&args[..], &["--timeframe", "1m"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}
