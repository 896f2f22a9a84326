//! The `keel` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{cache_files, data, example, fixture};

fn keel(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("KEEL_CACHE_DIR", cache)
        .env_remove("KEEL_LOG")
        .output()
        .expect("run keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_compile_cache_keeps_to_its_budget_dropping_the_least_recently_used() {
    let cache = tempfile::tempdir().expect("tempdir");
    let cached = || cache_files(cache.path());
    let hash = |name| {
        let bytes = std::fs::read(example(name)).expect("read");
        format!(
            "{}.cwasm",
            keel_host::sandbox::StrategyHash::of(&bytes).to_hex()
        )
    };
    for name in ["sma-cross", "rsi-reversion"] {
        let out = keel(&["strategy", "inspect", path(example(name))], cache.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let mut both = vec![hash("sma-cross"), hash("rsi-reversion")];
    both.sort();
    assert_eq!(cached(), both, "the default budget holds both");
    // A budget of 0 MB keeps only the code just written.
    let out = keel(
        &[
            "--cache-max-mb",
            "0",
            "strategy",
            "inspect",
            path(example("atr-breakout")),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(cached(), [hash("atr-breakout")]);
    let out = keel(
        &[
            "--cache-max-mb",
            "lots",
            "strategy",
            "inspect",
            path(example("atr-breakout")),
        ],
        cache.path(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--cache-max-mb"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_paper_run_builds_the_optimised_code_of_what_it_runs_for_the_next_start() {
    // `keel run` starts on baseline code and compiles optimised code in
    // the background, at idle priority once quiet; a restart then loads it
    // from the cache. The session runs until the file appears (at most two
    // minutes: other tests may keep the cores busy).
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let mut session = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["--db", path(&db), "--cache-dir", path(&cache)])
        .args([
            "run",
            "--paper",
            "--feed",
            "sample:100000",
            "--speed",
            "600x",
        ])
        .args(["--strategy", path(example("sma-cross"))])
        .env_remove("KEEL_LOG")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run keel");
    let bytes = std::fs::read(example("sma-cross")).expect("read");
    let hash = keel_host::sandbox::StrategyHash::of(&bytes).to_hex();
    // Only complete files: the worker's output may be mid-write.
    let cached = || -> Vec<String> {
        let mut names = cache_files(&cache);
        names.retain(|name| name.ends_with(".cwasm"));
        names
    };
    let started = std::time::Instant::now();
    while cached().is_empty() && started.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let still_running = session.try_wait().expect("status").is_none();
    let _ = session.kill();
    let _ = session.wait();
    assert!(still_running, "the session ended early");
    assert_eq!(cached(), [format!("{hash}.cwasm")]);
}

#[test]
fn inspect_shows_hash_describe_and_imports() {
    let cache = tempfile::tempdir().expect("tempdir");
    let file = example("atr-breakout");
    let out = keel(&["strategy", "inspect", path(file)], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let bytes = std::fs::read(file).expect("read");
    let hash = keel_host::sandbox::StrategyHash::of(&bytes).to_hex();
    assert!(stdout.contains(&format!("sha256     {hash}")), "{stdout}");
    assert!(stdout.contains("strategy   atr-breakout 1.0.0"), "{stdout}");
    assert!(
        stdout.contains("contract   keel:strategy@0.4.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("symbols    ETH/BTC, LTC/BTC, XMR/BTC"),
        "{stdout}"
    );
    assert!(
        stdout.contains("imports    keel:strategy/types@0.4.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("size       {} bytes", bytes.len())),
        "{stdout}"
    );

    let out = keel(&["strategy", "inspect", "--json", path(file)], cache.path());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["sha256"], hash);
    assert_eq!(json["params"][0]["name"], "channel");
    assert_eq!(json["warmup_bars"], 21);
}

#[test]
fn validate_passes_the_examples_and_fails_every_hostile_fixture() {
    let cache = tempfile::tempdir().expect("tempdir");
    let examples: Vec<&str> = ["sma-cross", "rsi-reversion", "atr-breakout"]
        .iter()
        .map(|n| path(example(n)))
        .collect();
    let mut args = vec!["strategy", "validate"];
    args.extend(&examples);
    let out = keel(&args, cache.path());
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout).matches("PASS").count(), 3);

    let cases = [
        ("loop", "used up its fuel"),
        ("memory-bomb", "tried to grow memory past its 64 MiB limit"),
        ("recursion", "exhausted its 512 KiB stack"),
        (
            "panic",
            "panicked: fixture panic: index 7 is out of range for 3 entries",
        ),
        ("signal-flood", "tried to grow memory past its 64 MiB limit"),
        ("log-flood", "log flood:"),
        ("clock-random", "depends on randomness"),
        (
            "bad-signals",
            "signal rejected: size -1 is not a positive number (OpenLong TEST/USD)",
        ),
        (
            "foreign-import",
            "imports hostile:fixture/exfiltrate, which Keel does not provide",
        ),
    ];
    for (name, reason) in cases {
        let out = keel(&["strategy", "validate", path(fixture(name))], cache.path());
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(stdout.starts_with("FAIL"), "{name}: {stdout}");
        assert!(
            stdout.contains(reason),
            "{name}: expected {reason:?} in {stdout}"
        );
        // The report says it all: no error lines from the sandbox beside it.
        assert_eq!(text(&out.stderr), "", "{name}");
    }
}

#[test]
fn the_optimising_worker_compiles_what_it_is_given_and_refuses_garbage_in_one_line() {
    use std::io::Write;
    use std::process::Stdio;
    let worker = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args([
                "__optimize",
                "--metering",
                "fuel",
                "--max-stack-bytes",
                "524288",
            ])
            .env_remove("KEEL_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keel");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write");
        drop(stdin);
        child.wait_with_output().expect("output")
    };
    let component = std::fs::read(example("sma-cross")).expect("read");
    let out = worker(&component);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.starts_with(b"keel-optimized-v1\n"));
    assert!(
        out.stdout.len() > component.len() / 2,
        "{}",
        out.stdout.len()
    );

    let out = worker(b"definitely not wasm");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: failed to parse WebAssembly"),
        "{stderr}"
    );
    // Not in the help a user reads.
    let help = keel(&["--help"], Path::new("."));
    assert!(!text(&help.stdout).contains("__optimize"));
}

#[test]
fn garbage_and_missing_files_get_one_line_errors() {
    let cache = tempfile::tempdir().expect("tempdir");
    let junk = cache.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").expect("write");
    for args in [
        vec!["strategy", "inspect", path(&junk)],
        vec!["strategy", "validate", path(&junk)],
    ] {
        let out = keel(&args, cache.path());
        assert_eq!(out.status.code(), Some(1));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            all.contains("junk.wasm: not a valid WebAssembly component: missing the \\0asm header"),
            "{all}"
        );
        assert!(!all.contains("panicked"), "{all}");
    }
    let out = keel(
        &["strategy", "inspect", "/nonexistent/x.wasm"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: /nonexistent/x.wasm: cannot read:"),
        "{stderr}"
    );
    // The reason once, not again as a cause below itself.
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

#[test]
fn run_prints_signals_over_a_candle_file() {
    let cache = tempfile::tempdir().expect("tempdir");
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    let out = keel(
        &[
            "strategy",
            "run",
            path(example("sma-cross")),
            "--data",
            &btc,
            "--param",
            "fast=5",
            "--param",
            "slow=20",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().expect("a signal line");
    assert!(
        first.contains("open-long") && first.contains("BTC/USD") && first.contains("crossed above"),
        "{first}"
    );
    let summary = stdout.lines().last().expect("summary");
    assert!(summary.starts_with("sma-cross@"), "{summary}");
    assert!(summary.contains("13681 bars on 1 symbol(s)"), "{summary}");
    assert!(
        summary.contains("(0 rejected)") && summary.contains("0 errors, 0 traps"),
        "{summary}"
    );
}

#[test]
fn run_refuses_bad_candles_and_bad_parameters_in_one_line() {
    let cache = tempfile::tempdir().expect("tempdir");
    // A copy of real data with line 101 broken: high below low.
    let original = std::fs::read_to_string(data("GOOG-1d.csv")).expect("read");
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let fields: Vec<&str> = lines[100].split(',').collect();
    lines[100] = format!(
        "{},{},{},{},{},{}",
        fields[0], fields[1], "1.0", "2.0", fields[4], fields[5]
    );
    let broken = cache.path().join("broken.csv");
    std::fs::write(&broken, lines.join("\n")).expect("write");

    let out = keel(
        &[
            "strategy",
            "run",
            path(example("sma-cross")),
            "--data",
            path(&broken),
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("error: {}:101: high 1 is below low 2", broken.display())
    );

    let goog = path(&data("GOOG-1d.csv")).to_owned();
    let out = keel(
        &[
            "strategy",
            "run",
            path(example("sma-cross")),
            "--data",
            &goog,
            "--param",
            "fast=1",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: sma-cross: bad parameters: parameter 'fast' = 1 is outside [2, 200]"
    );

    let out = keel(
        &[
            "strategy",
            "run",
            path(example("sma-cross")),
            "--data",
            &goog,
            "--param",
            "fast=40",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("init refused its parameters: fast (40) must be shorter than slow (30)"),
        "{stderr}"
    );
}

#[test]
fn build_makes_a_component_from_a_crate() {
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = crate::support::repo();
    let target = repo.join("target/keel-wasm");
    let crate_dir = repo.join("strategies/rsi-reversion");
    let other = repo.join("strategies/sma-cross");
    let out = keel(
        &[
            "strategy",
            "build",
            path(&crate_dir),
            path(&other),
            "--target-dir",
            path(&target),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("rsi_reversion.wasm") && stdout.contains("rsi-reversion 1.0.0"),
        "{stdout}"
    );
    assert!(stdout.contains("sma-cross 1.0.0"), "{stdout}");

    let out = keel(&["strategy", "build", "/nonexistent-crate"], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: /nonexistent-crate: no Cargo.toml there"
    );
}

#[test]
fn quickstart_builds_validates_and_runs_the_examples() {
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = crate::support::repo();
    let data_dir = data("");
    let target = repo.join("target/keel-wasm");
    let out = keel(
        &[
            "quickstart",
            "--repo",
            path(&repo),
            "--data",
            path(&data_dir),
            "--target-dir",
            path(&target),
        ],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout.matches("PASS").count(), 3, "{stdout}");
    for summary in ["13681 bars on 1 symbol(s)", "5760 bars on 3 symbol(s)"] {
        assert!(stdout.contains(summary), "{summary} missing from {stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn run_keeps_going_past_a_failing_strategy_and_says_so_briefly() {
    let cache = tempfile::tempdir().expect("tempdir");
    let goog = format!("TEST/USD={}", path(&data("GOOG-1d.csv")));
    let out = keel(
        &["strategy", "run", path(fixture("panic")), "--data", &goog],
        cache.path(),
    );
    assert!(
        out.status.success(),
        "a strategy's faults are its own: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let errors = stdout.lines().filter(|l| l.contains("  ERROR ")).count();
    assert_eq!(errors, 10, "{stdout}");
    assert!(
        stdout.contains("panicked: fixture panic: index 7 is out of range for 3 entries"),
        "{stdout}"
    );
    // It panics on its 5th bar and is rebuilt each time. Calls hand it 1, 2,
    // then 4 bars (bars 4 to 7): the fault is charged to the first bar of
    // that call and the rebuilt instance starts over at the next one, so one
    // fault every 4 bars: 2,148 bars, 536 faults.
    assert!(stdout.contains("… and 526 more errors"), "{stdout}");
    assert!(
        stdout.lines().last().is_some_and(
            |l| l.contains("2148 bars on 1 symbol(s)") && l.contains("536 errors, 536 traps")
        ),
        "{stdout}"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let cache = tempfile::tempdir().expect("tempdir");
    let btc = format!("BTC/USD={}", path(&data("UNITTEST_BTC-1m.csv")));
    // As `keel strategy run … | head -1`: the reader is gone before keel
    // prints its first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "strategy",
            "run",
            path(example("sma-cross")),
            "--data",
            &btc,
        ])
        .env("KEEL_CACHE_DIR", cache.path())
        .env_remove("KEEL_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keel");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    // (sma-cross is a 1h strategy, the file 1m: that much it says.)
    let stderr = text(&out.stderr);
    let others: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning: sma-cross declares 1h bars"))
        .collect();
    assert!(others.is_empty(), "{stderr}");
    assert!(out.status.success(), "{:?}", out.status);
}

#[test]
fn output_that_cannot_be_written_is_an_error_in_one_line_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let csv = data("UNITTEST_BTC-1m.csv");
    let import = |file: &Path, stdout: std::process::Stdio, stderr: std::process::Stdio| {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(["data", "import", path(file), "--symbol", "UT/BTC"])
            .args(["--timeframe", "1m", "--replace"])
            .env_remove("KEEL_LOG")
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .expect("run keel")
    };
    // A full disk under stdout: the import is stored, the report is not.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = import(&csv, full.into(), std::process::Stdio::piped());
    assert_eq!(
        text(&out.stderr),
        "error: cannot write to stdout: No space left on device (os error 28)\n"
    );
    assert_eq!(out.status.code(), Some(1));
    // stderr's reader gone: nowhere to say why, and no panic (exit 101).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "time,open,high,low,close,volume\nx\n").expect("write");
    let out = import(&bad, std::process::Stdio::piped(), writer.into());
    assert_eq!(out.status.code(), Some(1));
    // What was imported is there whole.
    let listed = import(
        &csv,
        std::process::Stdio::piped(),
        std::process::Stdio::piped(),
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("0 new, "),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_run_report_of_no_run_is_one_line_naming_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let keel = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("keel")
    };
    let missing = keel(&["report", "run"]);
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(said.contains("keel.db: no such database"), "{said}");
    keel_host::store::Store::open(&db).expect("an empty database");
    for (args, says) in [
        (
            &["report", "run"][..],
            "no run has been booked in this database yet",
        ),
        (&["report", "run", "7"][..], "run 7: no run has been booked"),
    ] {
        let out = keel(args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(said.contains(says), "{args:?}: {said}");
        assert_eq!(said.trim().lines().count(), 1, "{said}");
    }
    assert!(!dir.path().join("run-7.html").exists());
}

#[test]
fn every_by_takes_the_same_two_actors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    for verb in [
        &["candidate", "submit", "x.wasm"][..],
        &["candidate", "promote", "1"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(verb)
            .args(["--by", "person"])
            .output()
            .expect("keel");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb:?}");
        assert!(
            said.contains(
                "invalid value 'person' for '--by <ACTOR>': expected operator, evolution"
            ),
            "{verb:?}: {said}"
        );
        assert_eq!(said.trim().lines().count(), 1, "{said}");
    }
}

#[test]
fn a_symbol_no_strategy_could_trade_is_refused_before_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let long = "A".repeat(33);
    let goog = data("GOOG-1d.csv");
    let named = format!("{long}={}", goog.display());
    for (args, says) in [
        (
            vec!["backtest", path(example("sma-cross")), "--data", &named],
            format!("--data {named}: symbol \"{long}\" is not one a strategy can trade"),
        ),
        (
            vec!["run", "--paper", "--feed", "sample:100", "--symbol", &long],
            format!("--feed sample:100: symbol \"{long}\" is not one a strategy can trade"),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(&args)
            .output()
            .expect("keel");
        let said = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(said.trim().lines().count(), 1, "{said}");
        assert!(said.contains(&says), "{said}");
    }
}
