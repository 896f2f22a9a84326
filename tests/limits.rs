//! Bad numbers, bad bars and damaged cache files, as a careless operator or
//! a hostile file hands them to `keel`: each is refused (or survived) with
//! one line, never a panic, a hang or a wrong result.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{data, example};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `keel` with its own database and cache under `dir`.
fn keel_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.arg("--db")
        .arg(dir.join("keel.db"))
        .args(args)
        .env("KEEL_CACHE_DIR", dir.join("cache"))
        .env_remove("KEEL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end, or kills it after `limit` (a hang is a failure,
/// reported as a status of `None`).
fn finish(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.spawn().expect("spawn keel");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "keel hung for {limit:?}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(dir: &Path, args: &[&str]) -> Output {
    finish(keel_in(dir, args), Duration::from_secs(120))
}

/// The first `lines` lines of the sample minute data, with `edit` applied to
/// the fields of line `at` (1-based, the header is line 1).
fn sample_csv(dir: &Path, name: &str, lines: usize, at: usize, edit: fn(&mut [String])) -> PathBuf {
    let source = std::fs::read_to_string(data("UNITTEST_BTC-1m.csv")).expect("data");
    let mut rows: Vec<String> = source.lines().take(lines).map(str::to_owned).collect();
    let mut fields: Vec<String> = rows[at - 1].split(',').map(str::to_owned).collect();
    edit(&mut fields);
    rows[at - 1] = fields.join(",");
    let file = dir.join(name);
    std::fs::write(&file, rows.join("\n")).expect("write");
    file
}

/// A refusal: exit 1, not a panic's 101 or a signal; the error on one line,
/// naming what was wrong.
fn assert_refused(out: &Output, expected: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.contains(expected), "{what}: {stderr}");
}

#[test]
fn out_of_range_options_are_refused_in_one_line_naming_option_value_and_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let wasm = path(example("sma-cross"));
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let backtest = |extra: &[&str]| {
        let mut args = vec!["backtest", wasm, "--data", &btc];
        args.extend_from_slice(extra);
        run(d, &args)
    };
    let cases: Vec<(Output, &str)> = vec![
        (
            backtest(&["--walk-forward", "18446744073709551615"]),
            "--walk-forward <K>': 18446744073709551615 is outside [1, 100]",
        ),
        (
            backtest(&["--fee-bps", "1e6"]),
            "--fee-bps <FEE_BPS>': 1000000 is outside [0, 1000]",
        ),
        (
            backtest(&["--fee-bps", "1e30"]),
            "--fee-bps <FEE_BPS>': 1e30 is outside [0, 1000]",
        ),
        (
            backtest(&["--cash", "-5"]),
            "--cash <CASH>': -5 is outside (0, 1000000000000]",
        ),
        (
            run(
                d,
                &["run", "--paper", "--strategy", wasm, "--speed", "1e-308x"],
            ),
            "--speed 1e-308 is outside [0.01, 1000000000]",
        ),
        (
            run(
                d,
                &["run", "--paper", "--strategy", wasm, "--fee-bps", "1e6"],
            ),
            "--fee-bps <FEE_BPS>': 1000000 is outside [0, 1000]",
        ),
        (
            run(
                d,
                &[
                    "run",
                    "--paper",
                    "--strategy",
                    wasm,
                    "--call-deadline-ms",
                    "0",
                ],
            ),
            "--call-deadline-ms <MS>': 0 is outside [1, 60000]",
        ),
        (
            run(
                d,
                &["run", "--paper", "--strategy", wasm, "--feed", "sample:1"],
            ),
            "--feed sample:1: 1 is outside [2, 100000000]",
        ),
        (
            run(d, &["dev", wasm, "--paper", "--speed", "1e-308x"]),
            "--speed 1e-308 is outside [0.01, 1000000000]",
        ),
    ];
    for (i, (out, expected)) in cases.iter().enumerate() {
        assert_refused(out, expected, &format!("case {i}"));
    }
}

#[test]
fn out_of_range_candidates_toml_values_are_refused_with_their_line_before_anything_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let config = d.join("candidates.toml");
    let cases = [
        (
            "[backtest]\nwalk_forward = 18446744073709551615\n",
            "candidates.toml:2: walk_forward 18446744073709551615 is outside [0, 100]",
        ),
        (
            "[backtest]\nmin_trades = 0\nfee_bps = -1000\n",
            "candidates.toml:3: fee_bps -1000 is outside [0, 1000]",
        ),
        (
            "[backtest]\nmin_sharpe = nan\n",
            "candidates.toml:2: min_sharpe NaN is outside [-1000000, 1000000]",
        ),
        (
            "[backtest]\nmax_drawdown_pct = -5\n",
            "candidates.toml:2: max_drawdown_pct -5 is outside (0, 100]",
        ),
        // In range, but more folds than the gate's 4,000 sample bars allow.
        (
            "[backtest]\nwalk_forward = 100\n",
            "candidates.toml: backtest.walk_forward: walk-forward over 100 folds: 101 windows over 4000 bars leave 39 bars in the smallest, under the 100 a window needs",
        ),
        (
            "[paper]\nslots = 0\n",
            "candidates.toml:2: slots 0 is outside [1, 64]",
        ),
        (
            "[rollback]\ndaily_loss_pct = -1\n",
            "candidates.toml:2: daily_loss_pct -1 is outside (0, 100]",
        ),
    ];
    for (toml, expected) in cases {
        std::fs::write(&config, toml).expect("write");
        let out = run(
            d,
            &[
                "candidate",
                "submit",
                path(example("sma-cross")),
                "--config",
                path(&config),
            ],
        );
        assert_refused(&out, expected, toml);
    }
    if d.join("keel.db").exists() {
        let conn = Connection::open(d.join("keel.db")).expect("db");
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM candidates", [], |r| r.get(0))
            .unwrap_or(0);
        assert_eq!(stored, 0, "no candidate is left behind");
    }
}

#[test]
fn walk_forward_needs_enough_bars_in_every_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let csv = sample_csv(d, "short.csv", 301, 2, |_| {});
    let out = run(
        d,
        &[
            "backtest",
            path(example("sma-cross")),
            "--data",
            &format!("BTC/USD={}", path(&csv)),
            "--walk-forward",
            "50",
        ],
    );
    assert_refused(
        &out,
        "walk-forward over 50 folds: 51 windows over 300 bars leave 2 bars in the smallest, under the 100 a window needs",
        "too many folds",
    );
}

/// Line 202 of a replay file carries a high of 1e30: finite, but beyond
/// what the ledger's decimals hold.
fn huge_high(fields: &mut [String]) {
    fields[2] = "1e30".into();
}

#[test]
fn a_price_the_ledger_cannot_hold_is_refused_by_import_backtest_and_replay_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let csv = sample_csv(d, "huge.csv", 301, 202, huge_high);
    let at = format!(
        "{}:202: high 1e30 is outside the prices Keel books, 1e-8 to 100000000000000",
        csv.display()
    );
    let out = run(
        d,
        &[
            "data",
            "import",
            path(&csv),
            "--symbol",
            "BTC/USD",
            "--timeframe",
            "1m",
        ],
    );
    assert_refused(&out, &at, "import");
    let out = run(
        d,
        &[
            "backtest",
            path(example("sma-cross")),
            "--data",
            &format!("BTC/USD={}", path(&csv)),
        ],
    );
    assert_refused(&out, &at, "backtest");
    // The paper run trades the 200 bars before it, stops there, and a
    // restart stops there again: neither leaves a run marked running.
    let strategy = format!("{},fast=5,slow=20", path(example("sma-cross")));
    let feed = format!("replay:{}", path(&csv));
    for attempt in 0..2 {
        let out = run(
            d,
            &[
                "run",
                "--paper",
                "--feed",
                &feed,
                "--speed",
                "max",
                "--strategy",
                &strategy,
            ],
        );
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        assert!(
            stdout.lines().any(|l| l == format!("feed stopped: {at}")),
            "attempt {attempt}: {stdout}{}",
            text(&out.stderr)
        );
        let conn = Connection::open(d.join("keel.db")).expect("db");
        let running: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE status = 'running'",
                [],
                |r| r.get(0),
            )
            .expect("runs");
        assert_eq!(running, 0, "attempt {attempt}");
        keel_host::engine::audit_ledger(&conn).expect("ledger intact");
    }
}

#[test]
fn a_live_feeds_bad_bar_is_skipped_with_a_risk_event_and_the_run_goes_on() {
    use crate::paper::{kraken_server, ohlc};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let t = 1_767_225_600; // seconds, like Kraken
    let m = 60;
    let good = ohlc(&[t, t + m, t + 2 * m, t + 3 * m], t + 2 * m);
    // The bar at t + m carries a high the ledger cannot hold.
    let bad = good.replacen(
        &format!(
            r#"[{},"{}","{}""#,
            t + m,
            100 + (t + m) % 7,
            101 + (t + m) % 7
        ),
        &format!(r#"[{},"{}","1e30""#, t + m, 100 + (t + m) % 7),
        1,
    );
    assert_ne!(bad, good, "the reply was edited");
    let (port, _) = kraken_server(vec![
        bad,
        ohlc(&[t + 3 * m, t + 4 * m, t + 5 * m], t + 4 * m),
    ]);
    let url = format!("http://127.0.0.1:{port}");
    let strategy = format!("{},fast=5,slow=20", path(example("sma-cross")));
    let out = finish(
        keel_in(
            d,
            &[
                "run",
                "--paper",
                "--feed",
                "kraken:XBTUSD",
                "--kraken-url",
                &url,
                "--poll-ms",
                "20",
                "--bars",
                "4",
                "--strategy",
                &strategy,
            ],
        ),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let conn = Connection::open(d.join("keel.db")).expect("db");
    let times: Vec<i64> = conn
        .prepare("SELECT time_ms FROM equity_snapshots ORDER BY time_ms")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("sql")
        .collect::<Result<_, _>>()
        .expect("rows");
    let close = |k: i64| (t + k * m) * 1000;
    assert_eq!(
        times,
        [close(1), close(3), close(4), close(5)],
        "all but the bad bar"
    );
    let events: Vec<String> = conn
        .prepare("SELECT detail FROM risk_events WHERE kind = 'feed'")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("sql")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        events,
        [
            "kraken OHLC XBTUSD: bar 2026-01-01T00:01:00Z skipped: high 1e30 is outside the prices Keel books, 1e-8 to 100000000000000"
        ]
    );
}

#[test]
fn json_times_out_of_range_are_refused_and_replay_reads_freqtrade_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let json = d.join("far.json");
    std::fs::write(
        &json,
        "[\n [1515560100000, 1, 2, 0.5, 1.5, 10],\n [1e30, 1.5, 2, 1, 1.8, 3]\n]",
    )
    .expect("write");
    let out = run(
        d,
        &[
            "data",
            "import",
            path(&json),
            "--symbol",
            "BTC/USD",
            "--timeframe",
            "5m",
        ],
    );
    assert_refused(
        &out,
        &format!(
            "{}:3: candle 2: time 1e30 ms is outside 1900-01-01T00:00:00Z .. 2200-01-01T00:00:00Z",
            json.display()
        ),
        "far time",
    );
    // The sample minutes as freqtrade JSON, replayed.
    let candles = keel_model::candles::read_csv(&data("UNITTEST_BTC-1m.csv")).expect("csv");
    let json = d.join("btc.json");
    std::fs::write(&json, crate::support::freqtrade_json(&candles[..300])).expect("write");
    let strategy = format!("{},fast=5,slow=20", path(example("sma-cross")));
    let feed = format!("replay:{}", path(&json));
    let out = run(
        d,
        &[
            "run",
            "--paper",
            "--feed",
            &feed,
            "--speed",
            "max",
            "--strategy",
            &strategy,
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("300 bars booked"), "{stdout}");
}

/// The one compile-cache file of `cache`.
fn cache_entry(cache: &Path, hash_of: &Path) -> PathBuf {
    let bytes = std::fs::read(hash_of).expect("wasm");
    let name = format!(
        "{}.cwasm",
        keel_host::sandbox::StrategyHash::of(&bytes).to_hex()
    );
    std::fs::read_dir(cache)
        .expect("cache dir")
        .map(|key| key.expect("entry").path().join(&name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {name} under {}", cache.display()))
}

#[test]
fn damaged_compile_cache_entries_are_recompiled_never_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let csv = sample_csv(d, "btc.csv", 2001, 2, |_| {});
    let data = format!("BTC/USD={}", path(&csv));
    let sma = path(example("sma-cross"));
    let report = d.join("report.json");
    let backtest = || {
        let out = run(
            d,
            &[
                "backtest",
                sma,
                "--data",
                &data,
                "--param",
                "fast=5",
                "--json",
                path(&report),
            ],
        );
        assert!(
            out.status.success(),
            "{:?} {}",
            out.status,
            text(&out.stderr)
        );
        std::fs::read_to_string(&report).expect("report")
    };
    let expected = backtest();
    let cache = d.join("cache");
    let entry = cache_entry(&cache, example("sma-cross"));
    let pristine = std::fs::read(&entry).expect("entry");
    // Another strategy's entry, to copy over this one's.
    let out = run(d, &["strategy", "inspect", path(example("rsi-reversion"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other = std::fs::read(cache_entry(&cache, example("rsi-reversion"))).expect("entry");
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = keel_model::synth::SplitMix64::new(15);
    // (Each damaged entry costs a compile: a debug build's Cranelift takes
    // seconds, so four trials, not the issue's ten.)
    for trial in 0..4 {
        let mut bytes = pristine.clone();
        for _ in 0..20 {
            let at = (rng.next_u64() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (rng.next_u64() % 8);
        }
        damaged.push((format!("20 bits flipped, trial {trial}"), bytes));
    }
    damaged.push((
        "truncated to half".into(),
        pristine[..pristine.len() / 2].to_vec(),
    ));
    damaged.push(("truncated to nothing".into(), Vec::new()));
    damaged.push(("rsi-reversion's entry".into(), other));
    for (what, bytes) in damaged {
        std::fs::write(&entry, &bytes).expect("damage");
        assert_eq!(backtest(), expected, "{what}: the same result");
        let now = std::fs::read(&entry).expect("entry rewritten");
        assert_ne!(now, bytes, "{what}: the damaged entry was replaced");
    }
}
