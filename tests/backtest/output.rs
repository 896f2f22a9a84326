//! What a backtest shows: the HTML report, hostile text and huge numbers
//! made tame, and data named honestly.

use std::path::Path;
use std::process::Command;

use super::{keel, path, shared_cache, text};
use crate::support::{data, example, fixture};

#[test]
fn the_html_report_is_self_contained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let (html, json) = (dir.path().join("r.html"), dir.path().join("r.json"));
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            path(example("rsi-reversion")),
            "--data",
            &btc,
            "--report",
            path(&html),
            "--json",
            path(&json),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).expect("html");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    let trades = report["trades"].as_array().expect("trades").len();
    assert!(page.starts_with("<!doctype html>") && page.trim_end().ends_with("</html>"));
    // Equity with buy and hold, the symbol's price, the returns' spread.
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(
        page.contains("<polyline class=\"equity\" points=\"") && page.contains("drawdown (deepest")
    );
    assert!(page.contains("<polyline class=\"benchmark\"") && page.contains("buy and hold"));
    assert!(
        page.contains("text-anchor=\"start\">2017-11-"),
        "dated axes"
    );
    assert!(trades > 0);
    assert_eq!(
        page.matches("<tr><th>BTC/USD</th><th>").count(),
        trades,
        "one row per trade"
    );
    let entries = page.matches("class=\"entry-long\"").count()
        + page.matches("class=\"entry-short\"").count();
    assert_eq!(entries, trades, "each trade's entry on the price");
    assert_eq!(page.matches("<circle class=\"exit\"").count(), trades);
    // rsi-reversion sets a stop and a target on every entry: each drawn
    // over the time its trade was open, and kept in the JSON.
    assert_eq!(page.matches("class=\"stop\"").count(), trades);
    assert_eq!(page.matches("class=\"target\"").count(), trades);
    assert!(
        report["trades"][0]["stop_loss"]
            .as_f64()
            .is_some_and(|s| s > 0.0)
    );
    for section in [
        "Settings and limits",
        "Monthly returns",
        "By symbol",
        "Distribution of trade returns",
        "fees</th><td style=\"text-align:left\">10 bps",
        "<th>held</th>",
        "<th>return</th>",
    ] {
        assert!(page.contains(section), "{section}");
    }
    // Opens with no network: nothing to fetch, nothing to run.
    let without_svg_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !without_svg_namespace.contains("http")
            && !page.contains("<script")
            && !page.contains("src=")
    );

    // A grid's report is its parameter surface, the best starred; a
    // walk-forward's, its folds, each with its in-sample surface.
    let grid = ["--param", "fast=5..15:5", "--param", "slow=30,60"];
    let mut args = vec!["backtest", path(example("sma-cross")), "--data", &btc];
    args.extend(grid);
    args.extend(["--report", path(&html)]);
    let out = keel(&db, &cache, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("sma-cross 1.0.0 — parameter grid"), "{page}");
    assert!(
        page.contains("6 combinations, 6 ran; the best by Sharpe"),
        "{page}"
    );
    assert!(
        page.contains("Sharpe by fast (across) and slow (down)"),
        "{page}"
    );
    assert_eq!(
        page.matches("class=\"chosen\"").count(),
        3,
        "starred on each surface"
    );
    assert!(!page.contains("<script") && !page.contains("src="));

    let wf_html = dir.path().join("wf.html");
    let mut args = vec!["backtest", path(example("sma-cross")), "--data", &btc];
    args.extend(grid);
    args.extend(["--walk-forward", "3", "--report", path(&wf_html)]);
    let out = keel(&db, &cache, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&wf_html).expect("html");
    assert!(
        page.contains("sma-cross 1.0.0 — walk-forward, 3 folds"),
        "{page}"
    );
    assert!(page.contains("Out-of-sample return, compounded over the folds"));
    for fold in 1..=3 {
        assert!(
            page.contains(&format!("Fold {fold}: in-sample Sharpe")),
            "{page}"
        );
    }
    assert_eq!(
        page.matches("<th>★ fast=").count(),
        3,
        "each fold's choice named"
    );
    assert_eq!(page.matches("class=\"chosen\"").count(), 3);

    // Two strategies make no one page: refused before any run.
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            path(example("sma-cross")),
            path(example("rsi-reversion")),
            "--data",
            &btc,
            "--report",
            path(&dir.path().join("two.html")),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: --report draws one strategy's runs; 2 strategies were given (use --json for all of them)",
        "refused before any run"
    );
}

/// No terminal escape, NUL or bidi control in `out`, and no line longer than
/// `max` characters.
fn assert_tame(what: &str, out: &str, max: usize) {
    for bad in ['\u{1b}', '\0', '\u{202e}'] {
        assert!(!out.contains(bad), "{what}: {bad:?} in {out}");
    }
    let longest = out.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(longest <= max, "{what}: a line of {longest} characters");
}

#[test]
fn hostile_text_and_huge_numbers_are_shown_escaped_short_and_compact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), shared_cache());
    let sma = path(example("sma-cross"));
    let backtest_on = |file: &Path| {
        let spec = format!("BTC/USD={}", path(file));
        keel(&db, &cache, &["backtest", sma, "--data", &spec])
    };
    // A 10 MB file of one line: a short one-line error.
    let huge = dir.path().join("huge.csv");
    std::fs::write(&huge, "x".repeat(10 << 20)).expect("write");
    let out = backtest_on(&huge);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{}", &stderr[..200]);
    assert_tame("huge header", &stderr, 400);
    // Escapes and NULs in a field are shown escaped.
    let escapes = dir.path().join("escapes.csv");
    std::fs::write(
        &escapes,
        "time,open,high,low,close,volume\n2018-01-10T04:55:00Z,\u{1b}[31m1\0\u{202e},2,0.5,1.5,10\n",
    )
    .expect("write");
    let stderr = text(&backtest_on(&escapes).stderr);
    assert!(stderr.contains("\\x1b[31m1\\x00\\u{202e}"), "{stderr}");
    assert_tame("escapes", &stderr, 400);
    // A number of 309 digits is shown as 1e308.
    let big = dir.path().join("big.csv");
    std::fs::write(
        &big,
        "time,open,high,low,close,volume\n2018-01-10T04:55:00Z,1,1,1e308,1,10\n",
    )
    .expect("write");
    let stderr = text(&backtest_on(&big).stderr);
    assert!(
        stderr.contains("low 1e308 is outside the prices Keel books"),
        "{stderr}"
    );
    // A strategy's symbols, reasons, log lines and 1e308 sizes.
    let test = format!("TEST/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(&db)
        .env("KEEL_CACHE_DIR", &cache)
        .env("KEEL_LOG", "info")
        .args([
            "strategy",
            "run",
            path(fixture("bad-signals")),
            "--data",
            &test,
        ])
        .output()
        .expect("run keel");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\\x1b[31mTEST/USD\\u{202e}"), "{stdout}");
    assert!(stdout.contains("\\x1b[2J\\x00wiped"), "{stdout}");
    assert!(
        stdout.contains("quantity inf is over the largest"),
        "{stdout}"
    );
    assert!(!stdout.contains("0000000000000000"), "309 digits: {stdout}");
    assert_tame("strategy run", &stdout, 400);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\\x1b[31mlogged\\u{202e}\\x00"), "{stderr}");
    assert_tame("strategy log", &stderr, 1000);
    // A hostile symbol in the backtest table.
    let spec = format!(
        "\u{1b}[31mBTC\u{202e}={}",
        path(&data("UNITTEST_BTC-1m.csv"))
    );
    let out = keel(&db, &cache, &["backtest", sma, "--data", &spec]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_tame("backtest table", &text(&out.stdout), 400);
}

#[test]
fn data_is_named_by_its_file_and_a_mismatch_with_the_strategy_is_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let json = dir.path().join("r.json");
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            path(example("sma-cross")),
            "--data",
            path(&data("GOOG-1d.csv")),
            "--json",
            path(&json),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.lines().next().is_some_and(|l| l.ends_with(" on GOOG")),
        "{said}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["data"][0]["symbol"], "GOOG");
    let warned = text(&out.stderr);
    assert!(
        warned.contains("warning: sma-cross declares BTC/USD and is given GOOG"),
        "{warned}"
    );
    assert!(
        warned.contains("warning: sma-cross declares 1h bars;") && warned.contains("'s are 1d"),
        "{warned}"
    );
    // A pair's file gives the pair; SYMBOL= still names it outright.
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    let named = keel(
        &db,
        &cache,
        &[
            "backtest",
            path(example("atr-breakout")),
            "--data",
            path(&eth),
        ],
    );
    assert!(named.status.success(), "{}", text(&named.stderr));
    assert!(
        text(&named.stdout)
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(" on ETH/BTC"))
    );
    assert!(
        !text(&named.stderr).contains("bars;"),
        "atr-breakout is a 5m strategy"
    );
}
