//! The nightly evolution and the template it writes from: `keel strategy
//! new` makes a crate that builds anywhere, passes its own native test and
//! validates as a component.

use std::path::Path;
use std::process::{Command, Output};

use crate::paper::{count, text};
use crate::support::repo;

mod decisions;
mod diversity;
mod holdout;
mod llm;
mod provider_errors;
mod schedule;
mod stopped;

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env_remove("KEEL_LOG")
        .output()
        .expect("run keel")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_new_strategy_builds_inside_another_workspace_tests_natively_and_validates() {
    let outer = tempfile::tempdir().expect("tempdir");
    // Someone else's workspace: the new crate must not be taken for one
    // of its members.
    std::fs::write(
        outer.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .expect("write");
    let dir = outer.path().join("strategies/my-rsi");
    let out = keel(&[
        "strategy",
        "new",
        "my-rsi",
        "--from",
        "rsi-reversion",
        "--dir",
        path(&dir),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("strategy my-rsi from rsi-reversion"));

    let target = repo().join("target/keel-wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(&cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo test");
    assert!(test.status.success(), "{}", text(&test.stderr));
    assert!(
        text(&test.stdout).contains("1 passed"),
        "{}",
        text(&test.stdout)
    );

    let built = keel(&[
        "strategy",
        "build",
        path(&dir),
        "--target-dir",
        path(&target),
    ]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let stdout = text(&built.stdout);
    let wasm = stdout
        .split_whitespace()
        .find(|w| w.ends_with("my_rsi.wasm"))
        .unwrap_or_else(|| panic!("no component in {stdout}"));
    let valid = keel(&["strategy", "validate", wasm]);
    assert!(
        valid.status.success(),
        "{}{}",
        text(&valid.stdout),
        text(&valid.stderr)
    );
    let inspect = keel(&["strategy", "inspect", "--json", wasm]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(info["name"], "my-rsi", "{info}");
}

#[test]
fn a_new_strategy_with_a_bad_name_template_or_place_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = dir.path().join("taken");
    std::fs::create_dir_all(&taken).expect("mkdir");
    std::fs::write(taken.join("keep.txt"), "mine").expect("write");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["Bad_Name"],
            "strategy name \"Bad_Name\": use 1 to 48 of a-z, 0-9 and '-', starting with a letter",
        ),
        (
            vec!["ok", "--from", "macd"],
            "--from \"macd\": no such example (one of sma-cross, rsi-reversion, atr-breakout, blocks)",
        ),
        (
            vec!["ok", "--dir", path(&taken)],
            "already exists and is not empty",
        ),
        (vec!["ok", "--sdk", path(dir.path())], "no Cargo.toml there"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["strategy", "new"];
        args.extend(extra);
        let out = keel(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(taken.join("keep.txt")).expect("read"),
        "mine"
    );
}

/// A fresh directory with `evolve` as its `evolve.toml`, and the database
/// path in it.
fn configured(evolve: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("evolve.toml"), evolve).expect("write");
    let db = dir.path().join("keel.db");
    (dir, db)
}

/// `HH:MM` (UTC) two minutes ago: a night scheduled then is due now.
fn two_minutes_ago() -> String {
    let now_minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60
        % 1440) as u32;
    let at = (now_minute + 1440 - 2) % 1440;
    format!("{:02}:{:02}", at / 60, at % 60)
}

/// `keel run --paper --evolve` in `dir` on `db`: sma-cross on a long
/// sample at 600x, nights built in the repo's wasm target directory.
fn evolving_run(dir: &Path, db: &Path) -> Command {
    let target = repo().join("target/keel-wasm");
    let sma = crate::support::example("sma-cross");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .current_dir(dir)
        .arg("--db")
        .arg(db)
        .args([
            "run",
            "--paper",
            "--evolve",
            "--feed",
            "sample:100000",
            "--speed",
            "600x",
            "--strategy",
            path(sma),
            "--target-dir",
            path(&target),
        ])
        .env_remove("KEEL_LOG");
    command
}

/// `keel` on database `db`, in directory `dir` (where a night writes its
/// crates).
fn keel_in(dir: &Path, db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("KEEL_LOG")
        .output()
        .expect("run keel")
}

/// One night now (`keel evolve --once`) in `dir` on `db`, building in the
/// tests' shared wasm target directory.
fn night_once(dir: &Path, db: &Path) -> Output {
    let target = repo().join("target/keel-wasm");
    keel_in(
        dir,
        db,
        &["evolve", "--once", "--target-dir", path(&target)],
    )
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn an_offline_night_on_the_sample_data_writes_builds_gates_and_records_a_candidate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    // A night whose process was killed is closed as abandoned by the next.
    let out = keel_in(dir.path(), &db, &["evolve", "history"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no night on record"));
    // It had paid for two model calls before it was killed.
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute_batch(
            "INSERT INTO evolve_nights (started_ms, status, providers, settings) VALUES (1, 'running', 'anthropic', '{}');
             INSERT INTO evolve_steps (night_id, seq, kind, actor, ok, input, output, input_tokens, output_tokens, usd, started_ms, duration_ms)
                 VALUES (1, 1, 'decide', 'analyst', 1, 'p', 'a', 1000, 200, 0.006, 1, 1),
                        (1, 2, 'generate', 'author', 1, 'p', 'a', 2000, 900, 0.0195, 2, 1);",
        )
        .expect("a killed night");

    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("night 1 had not finished: closed as abandoned"),
        "{stdout}"
    );
    assert!(stdout.contains("night 2 ("), "{stdout}");

    let history = json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]));
    let nights = history.as_array().expect("nights");
    assert_eq!(nights.len(), 2);
    let (night, killed) = (&nights[0], &nights[1]);
    assert_eq!(killed["status"], "abandoned");
    // What it spent is on its record, not lost with its process.
    assert!(
        (killed["usd"].as_f64().expect("usd") - 0.0255).abs() < 1e-12,
        "{killed}"
    );
    assert_eq!(killed["tokens"], 4100, "{killed}");
    assert_eq!(night["status"], "finished", "{night}");
    assert_eq!(night["decision"], "create", "{night}");
    assert_eq!(night["usd"], 0.0);
    assert!(night["predictions"][0]["claim"].is_string(), "{night}");
    let attempt = &night["attempts"][0];
    // Built and validated, then judged by the gates, on the record with
    // its figures, whatever they said of a random walk.
    let reached = attempt["reached"].as_str().expect("reached");
    assert!(
        !["generate", "review", "build", "validate"].contains(&reached),
        "{attempt}"
    );
    assert!(
        attempt["hash"].as_str().is_some_and(|h| h.len() == 64),
        "{attempt}"
    );
    assert!(
        attempt["figures"]["in_sample"]["trades"].is_u64(),
        "{attempt}"
    );
    let crate_dir = Path::new(attempt["dir"].as_str().expect("dir"));
    assert!(crate_dir.join("src/lib.rs").is_file(), "{attempt}");
    assert!(
        dir.path().join("candidates").is_dir(),
        "crates under ./candidates"
    );

    let show = json(&keel_in(
        dir.path(),
        &db,
        &["evolve", "show", "2", "--json"],
    ));
    let kinds: Vec<&str> = show["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds[..8],
        [
            "benchmarks",
            "decide",
            "generate",
            "review",
            "build",
            "validate",
            "diversity",
            "lookahead"
        ],
        "{kinds:?}"
    );
    let generate = &show["steps"][2];
    assert!(
        generate["output"]
            .as_str()
            .expect("output")
            .contains("\"tried\": 50"),
        "{generate}"
    );
    let text_show = keel_in(dir.path(), &db, &["evolve", "show", "2"]);
    assert!(text(&text_show.stdout).contains("] build by code — ok"));
    let missing = keel_in(dir.path(), &db, &["evolve", "show", "99"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("night 99: not on record"));
}

/// Gates lenient enough that a mutation of sma-cross on a random walk goes
/// all the way.
const LENIENT_EVOLVE: &str = "mutations = 12
[gates]
min_dsr = 0
max_pbo = 1
min_holdout_sharpe = -1000000
min_return_pct = -100
min_fold_return_pct = -100
min_stress_return_pct = -100
";
const LENIENT_CANDIDATES: &str = "[backtest]
min_trades = 0
min_sharpe = -1000000
max_drawdown_pct = 100
min_profit_factor = 0
";

#[test]
fn a_candidate_through_every_gate_is_submitted_by_the_evolution_with_its_parent() {
    let (dir, db) = configured(LENIENT_EVOLVE);
    std::fs::write(dir.path().join("candidates.toml"), LENIENT_CANDIDATES).expect("write");
    // The active strategy: sma-cross, as a first paper run records it.
    let sma = crate::support::example("sma-cross");
    let out = keel_in(
        dir.path(),
        &db,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:60",
            "--speed",
            "max",
            "--strategy",
            path(sma),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let active = keel_host::sandbox::StrategyHash::of(&std::fs::read(sma).expect("read")).to_hex();

    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let night = &json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]))[0];
    let attempt = &night["attempts"][0];
    assert_eq!(attempt["reached"], "submitted", "{night}");
    assert_eq!(attempt["parent"], active.as_str());
    for gate in [
        "lookahead",
        "diversity",
        "backtest",
        "walk-forward",
        "stress",
        "deflated-sharpe",
        "pbo",
        "holdout",
    ] {
        assert!(attempt["figures"][gate].is_object(), "{gate}: {attempt}");
    }
    assert_eq!(attempt["figures"]["holdout"]["uses"], 1, "{attempt}");
    let id = attempt["candidate"].as_i64().expect("candidate id");
    let shown = json(&keel_in(
        dir.path(),
        &db,
        &["candidate", "show", &id.to_string(), "--json"],
    ));
    assert_eq!(shown["submitted_by"], "evolution", "{shown}");
    assert_eq!(shown["lineage"][0], active.as_str(), "{shown}");
    assert_eq!(shown["state"], "gated", "{shown}");

    // The next night: our candidate waits for its paper gate, so nothing;
    // the trial registry still holds the first night's trials.
    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let night = &json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]))[0];
    assert_eq!(night["decision"], "nothing", "{night}");
    assert!(
        night["note"]
            .as_str()
            .expect("note")
            .contains(&format!("candidate {id} is still in its paper gate")),
        "{night}"
    );
    let trials = count(
        &rusqlite::Connection::open(&db).expect("db"),
        "SELECT COUNT(*) FROM evolve_trials",
    );
    assert!(trials >= 10, "{trials} trials registered");
}

#[test]
fn a_bad_evolve_toml_is_refused_in_one_line_and_no_night_starts() {
    let (dir, db) = configured("[budget]\nusd = 1e9\n");
    let out = night_once(dir.path(), &db);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("evolve.toml:2: usd 1000000000 is outside [0, 10000]"),
        "{stderr}"
    );
    let out = keel_in(dir.path(), &db, &["evolve"]);
    assert!(text(&out.stderr).contains("pass --once to run a night now"));
    // Refused before trading starts, not when the night comes.
    let sma = crate::support::example("sma-cross");
    let out = keel_in(
        dir.path(),
        &db,
        &[
            "run",
            "--paper",
            "--evolve",
            "--feed",
            "sample:50",
            "--strategy",
            path(sma),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("evolve.toml:2: usd 1000000000 is outside"),
        "{stderr}"
    );
    let runs = count(
        &rusqlite::Connection::open(&db).expect("db"),
        "SELECT COUNT(*) FROM runs",
    );
    assert_eq!(runs, 0, "no run started");
}

#[test]
fn the_sample_evolve_toml_parses_to_the_defaults_it_documents() {
    let text = std::fs::read_to_string(repo().join("examples/evolve.toml")).expect("sample");
    let config = keel_host::evolve::config::EvolveConfig::parse(&text, "examples/evolve.toml")
        .expect("the sample parses");
    assert_eq!(config, keel_host::evolve::config::EvolveConfig::default());
    // The commented-out model setup parses too, once uncommented.
    let setting = |rest: &str| {
        rest.starts_with('[')
            || rest
                .split_once(" = ")
                .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    };
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|rest| setting(rest))
                .unwrap_or(l)
        })
        .filter(|l| !l.starts_with("data = "))
        .collect::<Vec<_>>()
        .join("\n");
    let uncommented = uncommented.replacen("[provider]\nkind = \"offline\"", "", 1);
    let config = keel_host::evolve::config::EvolveConfig::parse(&uncommented, "uncommented")
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(
        config.role(keel_host::evolve::config::Role::Author).label(),
        "openai:qwen2.5-coder:14b"
    );
}

#[test]
fn keel_run_with_evolve_runs_the_due_night_beside_trading_without_stopping_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    // Scheduled two minutes ago: due at once (a night missed is run at start).
    let at = two_minutes_ago();
    std::fs::write(
        dir.path().join("evolve.toml"),
        format!("mutations = 8\n[schedule]\nat = \"{at}\"\n"),
    )
    .expect("write");
    let mut run = evolving_run(dir.path(), &db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keel run");
    let started = std::time::Instant::now();
    let conn = || {
        let c = rusqlite::Connection::open(&db).expect("db");
        c.busy_timeout(std::time::Duration::from_secs(5))
            .expect("timeout");
        c
    };
    let bars = || -> i64 {
        conn()
            .query_row("SELECT COUNT(*) FROM run_bars", [], |r| r.get(0))
            .unwrap_or(0)
    };
    let status = || -> Option<String> {
        conn()
            .query_row(
                "SELECT status FROM evolve_nights ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .ok()
    };
    let mut during = None;
    loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(240),
            "no finished night; night status {:?}",
            status()
        );
        if let Some(done) = run.try_wait().expect("try_wait") {
            panic!("keel run ended: {done}");
        }
        match status().as_deref() {
            Some("running") if during.is_none() => during = Some(bars()),
            Some("running") | None => {}
            Some(_) => break,
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = bars();
    run.kill().expect("stop keel run");
    let out = run.wait_with_output().expect("reap");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("nightly evolution at {at} UTC")),
        "{stdout}"
    );
    assert_eq!(status().as_deref(), Some("finished"));
    let during = during.expect("the night was seen running");
    assert!(
        after > during,
        "trading went on while the night ran: {during} then {after} bars"
    );
    let nights: i64 = conn()
        .query_row("SELECT COUNT(*) FROM evolve_nights", [], |r| r.get(0))
        .expect("nights");
    assert_eq!(nights, 1, "one night per scheduled instant");
}

/// A series as the evolution's gates take it.
fn dataset(symbol: &str, seed: u64, bars: usize) -> keel_host::backtest::Dataset {
    let series = crate::support::synthetic(symbol, seed, bars);
    let reference = keel_backtester::report::DataRef {
        symbol: symbol.into(),
        source: format!("synthetic:{seed}"),
        digest: keel_model::candles::columns::digest(&series.candles),
        bars: series.candles.len(),
        first: String::new(),
        last: String::new(),
        partial: 0,
    };
    keel_host::backtest::Dataset { series, reference }
}

#[test]
fn the_lookahead_probe_catches_a_strategy_reading_later_closes_of_its_call() {
    use keel_host::evolve::gates;
    use keel_host::sandbox::Metering;
    let sandbox = crate::support::sandbox(Metering::Fuel);
    let data = [dataset("TEST/USD", 3, 3000)];
    let fills = keel_backtester::fills::FillModel::default();
    let probe = |file: &Path| {
        let loaded = sandbox
            .load(&keel_host::sandbox::StrategyArtifact::read(file, usize::MAX).expect("read"))
            .expect("load");
        let params = keel_model::Params::resolve(&loaded.info.params, &[]).expect("params");
        gates::lookahead(&sandbox, &loaded, &params, &data, fills, 3).expect("probe")
    };
    let peek = probe(crate::support::fixture("peek"));
    assert!(!peek.passed, "{peek:?}");
    assert!(
        peek.detail
            .contains("differ when the later bars are removed"),
        "{peek:?}"
    );
    let honest = probe(crate::support::example("sma-cross"));
    assert!(honest.passed, "{honest:?}");
    assert_eq!(honest.figures["probes"], 3, "{honest:?}");
}

/// A graded prediction: claim, outcome, hit, Brier score.
type Graded = (String, Option<f64>, Option<bool>, Option<f64>);

#[test]
fn a_prediction_past_its_horizon_is_graded_from_the_ledger_and_the_document_revised() {
    let (dir, db) = configured("reflect_every = 1\nmax_candidates = 0\n");
    // A paper run books the active book's equity.
    let sma = crate::support::example("sma-cross");
    let out = keel_in(
        dir.path(),
        &db,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:300",
            "--speed",
            "max",
            "--strategy",
            path(sma),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conn = rusqlite::Connection::open(&db).expect("db");
    let (first, last): (f64, f64) = conn
        .query_row(
            "SELECT (SELECT CAST(equity AS REAL) FROM equity_snapshots ORDER BY time_ms LIMIT 1),
                    (SELECT CAST(equity AS REAL) FROM equity_snapshots ORDER BY time_ms DESC LIMIT 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("equity");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // Two predictions of night 1 whose horizon has passed: one the ledger
    // bears out, one it does not; and one not yet due.
    let returned = (last / first - 1.0) * 100.0;
    for (claim, comparator, threshold, due) in [
        ("held", ">=", returned - 1.0, now - 1),
        ("failed", "<=", returned - 1.0, now - 1),
        ("not yet", ">=", 0.0, now + 86_400_000),
    ] {
        conn.execute(
            "INSERT INTO evolve_predictions (night_id, claim, metric, comparator, threshold, probability, made_ms, due_ms)
             VALUES (1, ?1, 'active_return_pct', ?2, ?3, 0.8, 0, ?4)",
            rusqlite::params![claim, comparator, threshold, due],
        )
        .expect("prediction");
    }
    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let graded: Vec<Graded> = conn
        .prepare(
            "SELECT claim, outcome, hit, brier FROM evolve_predictions
             WHERE night_id = 1 AND claim IN ('held', 'failed', 'not yet') ORDER BY id",
        )
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("graded");
    let outcome = graded[0].1.expect("measured");
    assert!((outcome - returned).abs() < 1e-6, "{outcome} vs {returned}");
    assert_eq!(graded[0].2, Some(true));
    assert!(
        (graded[0].3.expect("brier") - 0.04).abs() < 1e-12,
        "(0.8 - 1)^2"
    );
    assert_eq!(graded[1].2, Some(false));
    assert!(
        (graded[1].3.expect("brier") - 0.64).abs() < 1e-12,
        "(0.8 - 0)^2"
    );
    assert_eq!(graded[2], ("not yet".to_owned(), None, None, None));
    let (version, document): (i64, String) = conn
        .query_row(
            "SELECT version, text FROM evolve_documents ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("document");
    assert_eq!(version, 2, "revised by each night");
    assert!(document.contains("## Night 2"), "{document}");
    assert!(
        document.contains("2 prediction(s) graded, mean Brier score 0.3400"),
        "{document}"
    );
    let history = json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]));
    let night1 = &history.as_array().expect("nights")[1];
    assert_eq!(
        night1["predictions"].as_array().map(Vec::len),
        Some(4),
        "{night1}"
    );
}

#[test]
fn an_offline_night_also_recombines_the_examples_building_blocks() {
    let (dir, db) = configured("max_candidates = 2\nmutations = 12\n");
    let out = night_once(dir.path(), &db);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let night = &json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]))[0];
    let attempts = night["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{night}");
    let blocks = &attempts[1];
    assert_eq!(blocks["slug"], "blocks-e1b", "{night}");
    let brief = blocks["brief"].as_str().expect("brief");
    assert!(
        brief.contains("entry=") && brief.contains("exit="),
        "{brief}"
    );
    // Written, built and validated like any other, then judged.
    let reached = blocks["reached"].as_str().expect("reached");
    assert!(
        !["generate", "review", "build", "validate"].contains(&reached),
        "{blocks}"
    );
    let source =
        std::fs::read_to_string(Path::new(blocks["dir"].as_str().expect("dir")).join("src/lib.rs"))
            .expect("source");
    assert!(source.contains("name: \"blocks-e1b\".into()"));
}

#[test]
fn a_night_whose_data_cannot_be_read_decides_nothing_and_says_why() {
    let (dir, db) = configured("data = [\"BTC/USD=gone.csv\"]\n");
    let out = night_once(dir.path(), &db);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("night 1: the evolution's data:") && stderr.contains("gone.csv"),
        "{stderr}"
    );
    let night = &json(&keel_in(dir.path(), &db, &["evolve", "history", "--json"]))[0];
    assert_eq!(night["status"], "failed", "{night}");
    assert!(night["decision"].is_null(), "{night}");
    assert_eq!(
        night["predictions"].as_array().map(Vec::len),
        Some(0),
        "{night}"
    );
    assert!(
        night["note"].as_str().expect("note").contains("gone.csv"),
        "{night}"
    );
}
