//! `keel backtest` as a user runs it, and the engine driving real components.

use std::path::Path;
use std::process::{Command, Output};

use keel_host::sandbox::Metering;
use keel_model::replay::Series;

use crate::support::{binding, data, example, fixture, sandbox, series};

mod output;
mod stored;

fn keel(db: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(db)
        .env("KEEL_CACHE_DIR", cache)
        .args(args)
        .output()
        .expect("run keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A compile cache these tests share across runs: they test reports, not
/// the cache, and a fresh compile of each component per test is slow on a
/// busy machine.
fn shared_cache() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("keel-cache")
}

const PAIRS: [&str; 10] = [
    "ADA", "DASH", "ETC", "ETH", "LTC", "NXT", "TRX", "XLM", "XMR", "ZEC",
];

#[test]
fn the_same_backtest_gives_a_byte_identical_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let mut reports = Vec::new();
    for name in ["a.json", "b.json"] {
        let out_file = dir.path().join(name);
        let out = keel(
            &db,
            &cache,
            &[
                "backtest",
                path(example("rsi-reversion")),
                "--data",
                &btc,
                "--fee-bps",
                "7.5",
                "--json",
                path(&out_file),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("rsi-reversion 1.0.0"),
            "{}",
            text(&out.stdout)
        );
        reports.push(std::fs::read(&out_file).expect("report"));
    }
    assert_eq!(reports[0], reports[1], "byte-identical");
    let report: serde_json::Value = serde_json::from_slice(&reports[0]).expect("json");
    assert_eq!(report["schema"], "keel.backtest/2");
    let wasm = std::fs::read(example("rsi-reversion")).expect("wasm");
    assert_eq!(
        report["strategy"]["sha256"],
        keel_host::sandbox::StrategyHash::of(&wasm).to_hex()
    );
    let candles = keel_model::candles::read_csv(&data("UNITTEST_BTC-1m.csv")).expect("candles");
    assert_eq!(
        report["data"][0]["digest"],
        keel_model::candles::columns::digest(&candles)
    );
    assert_eq!(report["settings"]["fee_bps"], 7.5);
    assert_eq!(report["settings"]["fuel_per_call"], 50_000_000);
    assert!(report["metrics"]["trades"].as_u64().expect("trades") > 10);
    let trades = report["trades"].as_array().expect("trades");
    let pnl: f64 = trades.iter().map(|t| t["pnl"].as_f64().expect("pnl")).sum();
    let (start, end) = (
        report["summary"]["cash_start"].as_f64(),
        report["summary"]["equity_final"].as_f64(),
    );
    assert!(
        (start.expect("start") + pnl - end.expect("end")).abs() < 1e-6,
        "equity = cash + every trade's P&L"
    );
}

#[test]
fn ten_pairs_with_real_gaps_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let mut args = vec![
        "backtest".to_owned(),
        path(example("atr-breakout")).to_owned(),
    ];
    for pair in PAIRS {
        let file = data(&format!("crypto-5m/{pair}_BTC-5m.csv"));
        let symbol = format!("{pair}/BTC");
        let out = keel(
            &db,
            &cache,
            &[
                "data",
                "import",
                path(&file),
                "--symbol",
                &symbol,
                "--timeframe",
                "5m",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        args.extend(["--data".to_owned(), format!("{symbol}@5m")]);
    }
    let json = dir.path().join("r.json");
    args.extend(["--json".to_owned(), path(&json).to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = keel(&db, &cache, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read")).expect("json");
    assert_eq!(report["data"].as_array().map(Vec::len), Some(10));
    assert_eq!(report["data"][0]["source"], "store:ADA/BTC@5m");
    // 10 pairs of 5,760 bars, less the 50 missing ones: no bar invented.
    let bars: u64 = report["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["bars"].as_u64().expect("bars"))
        .sum();
    assert_eq!(report["summary"]["bars"].as_u64(), Some(bars));
    assert_eq!(report["summary"]["errors"], 0);
    assert!(report["metrics"]["trades"].as_u64().expect("trades") > 100);
}

#[test]
fn fills_happen_only_on_bars_that_exist() {
    let sandbox = sandbox(Metering::Fuel);
    let loaded = sandbox.load_file(example("atr-breakout")).expect("loads");
    let pairs: Vec<Series> = PAIRS
        .iter()
        .map(|p| series(&format!("{p}/BTC"), &format!("crypto-5m/{p}_BTC-5m.csv")))
        .collect();
    let symbols: Vec<&str> = pairs.iter().map(|s| s.symbol.as_str()).collect();
    let mut instance = sandbox
        .instantiate(&loaded, binding(&loaded, &symbols, &[], 1))
        .expect("instance");
    let result = keel_backtester::run(
        &mut instance,
        &pairs,
        &keel_backtester::BacktestConfig::default(),
    );
    assert!(result.errors.is_empty(), "{:?}", result.errors.first());
    assert!(result.fills.len() > 100);
    let last_open = pairs
        .iter()
        .map(|s| s.candles.last().map_or(0, |c| c.time_ms))
        .max()
        .unwrap_or(0);
    for fill in &result.fills {
        let s = pairs
            .iter()
            .find(|s| s.symbol == fill.symbol)
            .expect("known symbol");
        let on_a_bar = s
            .candles
            .binary_search_by_key(&fill.time_ms, |c| c.time_ms)
            .is_ok();
        // End-of-data exits are stamped with the last close time.
        assert!(
            on_a_bar || fill.time_ms > last_open,
            "{} filled at {} where it has no bar",
            fill.symbol,
            fill.time_ms
        );
    }
    let pnl: f64 = result.trades.iter().map(|t| t.pnl).sum();
    assert!((result.cash_start + pnl - result.equity_final).abs() < 1e-6);
}

#[test]
fn a_parameter_grid_runs_every_combination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let json = dir.path().join("grid.json");
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            path(example("sma-cross")),
            "--data",
            &btc,
            "--param",
            "fast=5..15:5",
            "--param",
            "slow=30,60",
            "--json",
            path(&json),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("sma-cross "))
            .count(),
        6,
        "{stdout}"
    );
    // Off a terminal, progress is a line per tenth, the last at the end.
    let stderr = text(&out.stderr);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("backtests "))
        .collect();
    assert!((1..=11).contains(&progress.len()), "{stderr}");
    assert_eq!(progress.last(), Some(&"backtests 6/6 (100%)"), "{stderr}");
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read")).expect("json");
    let params: Vec<String> = reports
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["strategy"]["params"][0]["value"], r["strategy"]["params"][1]["value"]
            )
        })
        .collect();
    assert_eq!(
        params,
        [
            "\"5\"/\"30\"",
            "\"5\"/\"60\"",
            "\"10\"/\"30\"",
            "\"10\"/\"60\"",
            "\"15\"/\"30\"",
            "\"15\"/\"60\""
        ]
    );
}

#[test]
fn bad_backtest_settings_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    // A database without the series asked for.
    keel_host::store::Store::open(&db).expect("a database");
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let wasm = path(example("sma-cross"));
    let cases: [(&[&str], &str); 6] = [
        (
            &["--fee-bps", "-1"],
            "error: invalid value '-1' for '--fee-bps <FEE_BPS>': -1 is outside [0, 1000]",
        ),
        // Every number's range says what is wrong with a negative one.
        (
            &["--lot-size", "-1"],
            "error: invalid value '-1' for '--lot-size <LOT_SIZE>': -1 is outside (0, 1000000]",
        ),
        (
            &["--walk-forward", "-2"],
            "error: invalid value '-2' for '--walk-forward <K>': -2 is outside [",
        ),
        (
            &["--volume-share", "1.5"],
            "error: invalid value '1.5' for '--volume-share <SHARE>': 1.5 is outside (0, 1]",
        ),
        (
            &["--param", "fast=1..3:1"],
            "error: sma-cross: bad parameters: parameter 'fast' = 1 is outside [2, 200]",
        ),
        (
            &["--data", "NOPE@5m"],
            "error: --data NOPE@5m: no NOPE 5m candles in",
        ),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["backtest", wasm, "--data", &btc];
        args.extend(extra);
        let out = keel(&db, &cache, &args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expect), "{extra:?}: {stderr}");
    }
}

#[test]
fn walk_forward_picks_the_in_sample_best_and_tests_it_on_the_next_window() {
    use keel_host::backtest::{self, Job};
    let sandbox = sandbox(Metering::Fuel);
    let loaded = sandbox.load_file(example("sma-cross")).expect("loads");
    let data = backtest::load_data(
        &[format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")))],
        &Default::default(),
        Path::new("unused.db"),
    )
    .expect("data");
    let grid = backtest::expand_grid(
        &loaded.info.params,
        &["fast=5..15:5".into(), "slow=30,60".into()],
    )
    .expect("grid");
    let config = keel_backtester::BacktestConfig::default();
    let mut calls = 0;
    let report = backtest::walk_forward(&sandbox, &loaded, &grid, &data, &config, 3, |_, _| {
        calls += 1
    })
    .expect("walk");
    assert_eq!(calls, 3 * (6 + 1), "progress for every run");
    assert_eq!(report.schema, "keel.walk-forward/1");
    assert_eq!(report.folds.len(), 3);
    for pair in report.folds.windows(2) {
        assert_eq!(
            pair[0].out_of_sample.1, pair[1].out_of_sample.0,
            "out-of-sample windows follow each other"
        );
        assert_eq!(
            pair[1].in_sample, pair[0].out_of_sample,
            "in-sample is the window before"
        );
    }
    let mut compounded = 1.0;
    for fold in &report.folds {
        assert_eq!(fold.in_sample.1, fold.out_of_sample.0);
        compounded *= 1.0 + fold.out_of_sample_metrics.total_return;
        // The chosen parameters have the best in-sample Sharpe of the grid.
        let window = (
            keel_model::candles::parse_time(&fold.in_sample.0).expect("time"),
            keel_model::candles::parse_time(&fold.in_sample.1).expect("time"),
        );
        let best = grid
            .iter()
            .map(|p| {
                let job = Job {
                    strategy: &loaded,
                    params: p.clone(),
                    window: Some(window),
                };
                backtest::run_job(&sandbox, &job, &data, &config)
                    .expect("run")
                    .metrics
                    .sharpe
                    .unwrap_or(f64::NEG_INFINITY)
            })
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(
            fold.in_sample_metrics.sharpe,
            Some(best),
            "fold {}",
            fold.fold
        );
    }
    assert!((report.out_of_sample_return - (compounded - 1.0)).abs() < 1e-12);
}

#[test]
fn a_grid_skips_combinations_the_strategy_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let wasm = path(example("sma-cross"));
    // fast=30 slow=30 is refused by the strategy's init; the others run.
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            wasm,
            "--data",
            &btc,
            "--param",
            "fast=20,30",
            "--param",
            "slow=30,60",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("sma-cross "))
            .count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped sma-cross fast=30 slow=30 size=0.2: strategy sma-cross@")
            && stdout
                .contains("init refused its parameters: fast (30) must be shorter than slow (30)"),
        "{stdout}"
    );
    // Each refused combination is named once, and progress off a terminal
    // is a line per tenth at most.
    let stderr = text(&out.stderr);
    let everything = format!("{stdout}{stderr}");
    assert_eq!(
        everything.matches("fast=30 slow=30").count(),
        1,
        "{everything}"
    );
    let progress = stderr
        .lines()
        .filter(|l| l.starts_with("backtests "))
        .count();
    assert!((1..=11).contains(&progress), "{stderr}");
    // Walk-forward skips them too.
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            wasm,
            "--data",
            &btc,
            "--param",
            "fast=20,30",
            "--param",
            "slow=30",
            "--walk-forward",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("fast=20 slow=30"),
        "{}",
        text(&out.stdout)
    );
    let steps = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("walk-forward "))
        .count();
    assert!((1..=11).contains(&steps), "{}", text(&out.stderr));
    // A report that cannot be written, or one report of many runs, is
    // refused before any run.
    let html = dir.path().join("r.html");
    let unwritable = dir.path().join("no/such/dir/r.html");
    for (args, says) in [
        (
            vec!["--report", path(&unwritable)],
            "r.html: cannot write the report",
        ),
        (
            vec![path(example("rsi-reversion")), "--report", path(&html)],
            "--report draws one strategy's runs; 2 strategies were given",
        ),
    ] {
        let mut all = vec!["backtest", wasm, "--data", &btc];
        all.extend(args);
        let out = keel(&db, &cache, &all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "refused before running: {stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
    assert!(!html.exists());
    // Nothing runnable: a one-line error.
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            wasm,
            "--data",
            &btc,
            "--param",
            "fast=30,40",
            "--param",
            "slow=30",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with("error: none of the 2 runs could start\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_refused_signal_is_counted_and_listed_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), shared_cache());
    let test = format!("TEST/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let wasm = path(fixture("bad-signals"));
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            wasm,
            "--data",
            &test,
            "--json",
            path(&json),
            "--report",
            path(&html),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    // One malformed signal per bar, every one refused: by the sandbox's
    // checks, or (a 1e308 order) by risk.
    let steps = report["summary"]["steps"].as_u64().expect("steps");
    assert!(steps > 100, "{steps}");
    assert_eq!(report["summary"]["signals"], steps);
    assert_eq!(report["summary"]["rejected"], steps);
    let rejected = report["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len() as u64, steps);
    for expect in [
        "open-long TEST/USD []: size NaN is not a positive number",
        "open-long TEST/USD []: size -1 is not a positive number",
        "open-short TEST/USD []: quantity inf is over the largest one order may carry",
        "open-long TEST/USD []: stop-loss NaN is not a positive price",
        "open-long  []: unknown symbol \"\" (bound: TEST/USD)",
    ] {
        assert!(
            rejected
                .iter()
                .any(|r| r["message"].as_str().is_some_and(|m| m.contains(expect))),
            "no {expect:?} in {rejected:?}"
        );
    }
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{} / {steps} / {steps}", steps)),
        "{stdout}"
    );
    // The table names the first ones, the page lists them.
    assert!(
        stdout.contains("  rejected at ") && stdout.contains(": size -1 is not a positive number"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(
        page.contains(&format!("Rejected signals ({steps})"))
            && page.contains("stop-loss NaN is not a positive price"),
        "{}",
        &page[..page.len().min(4000)]
    );
    // `keel strategy run` counts the same.
    let out = keel(
        &db,
        &cache,
        &["strategy", "run", wasm, "--data", &test, "--quiet"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{steps} signals ({steps} rejected)")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_minimum_order_is_in_each_symbol_s_quote_currency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), shared_cache());
    let eth = format!("ETH/BTC={}", path(&data("crypto-5m/ETH_BTC-5m.csv")));
    let ltc = format!("LTC/BTC={}", path(&data("crypto-5m/LTC_BTC-5m.csv")));
    let wasm = path(example("atr-breakout"));
    let json = dir.path().join("r.json");
    let backtest = |extra: &[&str]| {
        let mut args = vec!["backtest", wasm, "--data", &eth, "--data", &ltc];
        args.extend(["--json", path(&json)]);
        args.extend(extra);
        let out = keel(&db, &cache, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
        let below: Vec<String> = report["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .filter_map(|r| r["message"].as_str())
            .filter(|m| m.contains("below the minimum order"))
            .map(str::to_owned)
            .collect();
        (report, below)
    };
    // 10 is meant in dollars: in BTC the minimum is 0.0001.
    let (report, below) = backtest(&[]);
    assert!(report["summary"]["signals"].as_u64() > Some(100));
    assert_eq!(below, Vec::<String>::new());
    assert_eq!(report["settings"]["min_order_quote"], 10.0);
    // The same limits file as `keel run`, with a minimum by quote currency.
    let limits = dir.path().join("risk_limits.toml");
    std::fs::write(&limits, "min_order_quote = 10\n[min_order]\nBTC = 1000\n").expect("write");
    let (report, below) = backtest(&["--risk-limits", path(&limits)]);
    assert!(!below.is_empty());
    assert!(
        below[0].ends_with("is below the minimum order of 1000.00"),
        "{below:?}"
    );
    assert_eq!(report["settings"]["min_order"]["BTC"], 1000.0);
    // A bad file is one line naming it.
    std::fs::write(&limits, "[min_order]\nBTC = -1\n").expect("write");
    let out = keel(
        &db,
        &cache,
        &[
            "backtest",
            wasm,
            "--data",
            &eth,
            "--risk-limits",
            path(&limits),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("risk_limits.toml: min_order.BTC = -1 must be 0 or more"),
        "{stderr}"
    );
}
