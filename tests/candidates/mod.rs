//! From new strategy code to a promoted strategy: candidates submitted,
//! judged by their gates, run in shadow, promoted into a running engine and
//! rolled back — all through the `keel` binary and its database.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{data, example, fixture};

mod promotion;
mod shadows;

fn keel(db: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env("KEEL_CACHE_DIR", cache)
        .env_remove("KEEL_LOG");
    cmd
}

fn run(db: &Path, cache: &Path, args: &[&str]) -> Output {
    keel(db, cache, args).output().expect("keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn state(conn: &Connection, id: i64) -> String {
    conn.query_row("SELECT state FROM candidates WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .expect("candidate")
}

/// A short paper run of `strategy` on the built-in sample: it becomes the
/// active strategy of `db`.
fn deploy_first(db: &Path, cache: &Path, strategy: &str) {
    let out = run(
        db,
        cache,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:5",
            "--speed",
            "max",
            "--strategy",
            strategy,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `keel run --paper` replaying the GOOG daily candles at `speed`, with
/// `extra` arguments, in the background.
fn spawn_goog(db: &Path, cache: &Path, speed: &str, extra: &[&str]) -> std::process::Child {
    let feed = format!("replay:{}", data("GOOG-1d.csv").display());
    let mut args = vec![
        "run", "--paper", "--feed", &feed, "--symbol", "GOOG", "--speed", speed,
    ];
    args.extend_from_slice(extra);
    keel(db, cache, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("engine")
}

/// Opens `db` once `ready` holds for it, polling for up to a minute.
fn wait_for_db(db: &Path, what: &str, ready: impl Fn(&Connection) -> bool) -> Connection {
    let started = Instant::now();
    loop {
        if let Ok(conn) = Connection::open(db)
            && ready(&conn)
        {
            return conn;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One number from `sql`, or none while the database is not there yet.
fn count(conn: &Connection, sql: &str) -> Option<i64> {
    conn.query_row(sql, [], |r| r.get(0)).ok()
}

/// `candidates.toml` for `data` with offline gates any strategy passes,
/// and `paper` as the paper gate's lines; its path.
fn permissive_gates(dir: &Path, data: &Path, paper: &str) -> String {
    let config = dir.join("candidates.toml");
    std::fs::write(
        &config,
        format!(
            "[backtest]\ndata = [\"GOOG={}\"]\nmin_trades = 0\nmin_sharpe = -1000\nmax_drawdown_pct = 100\nmin_profit_factor = 0\n\n[paper]\n{paper}",
            data.display()
        ),
    )
    .expect("config");
    config.to_str().expect("utf-8").to_owned()
}

#[test]
fn candidates_are_judged_shadowed_promoted_without_a_missed_bar_and_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let goog = data("GOOG-1d.csv");
    let config = dir.path().join("candidates.toml");
    std::fs::write(
        &config,
        format!(
            "[backtest]\ndata = [\"GOOG={}\"]\n\n[paper]\nmin_trades = 4\n",
            goog.display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");

    // rsi-reversion trades first and becomes the active strategy.
    let rsi = example("rsi-reversion").to_str().expect("utf-8");
    deploy_first(&db, &cache, rsi);

    // Three candidates: good, losing, hostile.
    let submit = |file: &Path, note: &str| {
        let file = file.to_str().expect("utf-8");
        run(
            &db,
            &cache,
            &[
                "candidate",
                "submit",
                file,
                "--note",
                note,
                "--config",
                config,
            ],
        )
    };
    let good = submit(example("sma-cross"), "trend follower");
    let losing = submit(fixture("churn"), "churns");
    let hostile = submit(fixture("loop"), "never returns");
    let (good, losing, hostile) = (
        text(&good.stdout),
        text(&losing.stdout),
        text(&hostile.stdout),
    );
    assert!(good.starts_with("candidate 1: sma-cross 1.0.0"), "{good}");
    assert!(
        good.contains("validate  PASS") && good.contains("backtest  PASS"),
        "{good}"
    );
    assert!(
        losing.contains("validate  PASS") && losing.contains("backtest  FAIL"),
        "{losing}"
    );
    assert!(losing.contains("profit factor"), "{losing}");
    assert!(hostile.contains("validate  FAIL  smoke run"), "{hostile}");
    assert!(hostile.contains("used up its fuel"), "{hostile}");
    // The same bytes again are the same candidate.
    let again = submit(example("sma-cross"), "again");
    assert!(text(&again.stdout).starts_with("already submitted as candidate 1"));

    let conn = Connection::open(&db).expect("db");
    assert_eq!(
        (state(&conn, 1), state(&conn, 2), state(&conn, 3)),
        ("gated".into(), "failed".into(), "failed".into())
    );
    // The backtest gate shows the active strategy beside it.
    let figures: String = conn
        .query_row(
            "SELECT figures FROM gate_results WHERE candidate_id = 1 AND gate = 'backtest'",
            [],
            |r| r.get(0),
        )
        .expect("figures");
    let figures: serde_json::Value = serde_json::from_str(&figures).expect("json");
    assert!(figures["active"]["trades"].as_u64().is_some(), "{figures}");
    // Not before the paper gate.
    let early = run(
        &db,
        &cache,
        &["candidate", "promote", "1", "--config", config],
    );
    assert!(!early.status.success());
    assert!(
        text(&early.stderr).contains("cannot be promoted: paper has not run"),
        "{}",
        text(&early.stderr)
    );

    // A paper run: the active strategy trades, candidate 1 runs in shadow.
    // 2,148 daily bars at 20 ms a bar.
    let mut engine = spawn_goog(&db, &cache, "8640000x", &["--candidates", config]);
    let started = Instant::now();
    while state(&conn, 1) != "passed" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the paper gate never passed"
        );
        assert!(
            engine.try_wait().expect("alive").is_none(),
            "the run ended before the paper gate passed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let promote = run(
        &db,
        &cache,
        &["candidate", "promote", "1", "--config", config],
    );
    let said = text(&promote.stdout);
    assert!(promote.status.success(), "{said}{}", text(&promote.stderr));
    assert!(
        said.contains("hot-swapped into the running engine: book main"),
        "{said}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let rollback = run(
        &db,
        &cache,
        &[
            "candidate",
            "rollback",
            "--reason",
            "test",
            "--config",
            config,
        ],
    );
    assert!(rollback.status.success(), "{}", text(&rollback.stderr));
    assert!(
        text(&rollback.stdout).contains("hot-swapped into the running engine"),
        "{}",
        text(&rollback.stdout)
    );
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Its end names each book's strategy and figures, and the shadow's verdict.
    let said = text(&out.stdout);
    assert!(
        said.contains("candidate-1 (sma-cross 1.0.0): return ")
            && said.contains("candidate 1 in shadow, ")
            && said.contains(", paper gate pass"),
        "{said}"
    );
    assert!(
        said.contains("the whole record: `keel report run 2 --db"),
        "{said}"
    );
    let report = dir.path().join("run.html");
    let wrote = run(
        &db,
        &cache,
        &["report", "run", "--out", report.to_str().expect("utf-8")],
    );
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    let html = std::fs::read_to_string(&report).expect("report");
    let trades: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM trades t JOIN books b ON b.id = t.book_id WHERE b.slot = 'main'",
            [],
            |r| r.get(0),
        )
        .expect("trades");
    assert!(trades > 0);
    assert!(
        html.contains(&format!("<h3>Trades ({trades})</h3>")),
        "the main book's trades"
    );
    assert!(html.contains("candidate 1: pass"), "the shadow's verdict");
    assert!(
        html.contains("text-anchor=\"start\">2004-08-"),
        "the time axis is dated from the first close"
    );
    assert!(!html.contains("<script"), "no script");
    // The backtest report's pieces: months, the price with the trades on
    // it, the spread of trade returns.
    assert!(
        html.contains("<h3>Monthly returns</h3>")
            && html.contains("GOOG — close, entries")
            && html.contains("class=\"entry-long\"")
            && html.contains("<h3>Distribution of trade returns</h3>"),
        "the run report's charts"
    );
    // The main book (rsi-reversion) sets a stop and a target on each entry:
    // drawn from the orders that opened its trades.
    assert!(
        html.contains("stop-loss and take-profit dashed")
            && html.contains("class=\"stop\"")
            && html.contains("class=\"target\""),
        "the main book's stops and targets"
    );

    // No bar was missed: the main book booked every bar of the feed.
    let run_id: i64 = conn
        .query_row("SELECT run_id FROM books WHERE slot = 'main'", [], |r| {
            r.get(0)
        })
        .expect("main book");
    let main_bars: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM equity_snapshots e JOIN books b ON b.id = e.book_id WHERE b.slot = 'main' AND b.run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(main_bars, 2148);
    // Both swaps happened between bars, each audited with its reason.
    let swaps: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT detail FROM audit_log WHERE action = 'hot swap' ORDER BY id")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(swaps.len(), 2, "{swaps:?}");
    assert!(
        swaps[0].contains("(sma-cross)") && swaps[1].contains("(rsi-reversion)"),
        "{swaps:?}"
    );
    // The promoted version's signals were its own, after it took over.
    let sma_hash: String = conn
        .query_row("SELECT hash FROM candidates WHERE id = 1", [], |r| r.get(0))
        .expect("hash");
    let main_hash: String = conn
        .query_row(
            "SELECT artifact_hash FROM books WHERE slot = 'main' AND run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .expect("main");
    assert_ne!(main_hash, sma_hash, "rolled back");
    let deployments: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT action FROM deployments ORDER BY id")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(deployments, ["initial", "promote", "rollback"]);
    assert_eq!(state(&conn, 1), "retired");
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");

    // `show` tells the whole story with the figures.
    let show = text(&run(&db, &cache, &["candidate", "show", "1"]).stdout);
    for expected in [
        "validate  PASS",
        "backtest  PASS",
        "paper     PASS",
        "submit",
        "promoted",
        "rolled back: test",
    ] {
        assert!(show.contains(expected), "{expected} missing from:\n{show}");
    }
    // The backtest beside the active strategy's, row by row, and each check.
    let figures: serde_json::Value = serde_json::from_str(
        &conn
            .query_row(
                "SELECT figures FROM gate_results WHERE candidate_id = 1 AND gate = 'backtest'",
                [],
                |r| r.get::<_, String>(0),
            )
            .expect("figures"),
    )
    .expect("json");
    let side_by_side = format!(
        "{:<16} {:>12} {:>12}\n",
        "trades",
        figures["candidate"]["trades"].to_string(),
        figures["active"]["trades"].to_string()
    );
    for expected in [
        "candidate       active\n",
        side_by_side.as_str(),
        "ok   determinism: two runs under different random seeds gave identical signals",
    ] {
        assert!(show.contains(expected), "{expected} missing from:\n{show}");
    }
    // And all of it as JSON, for scripts.
    let json = run(&db, &cache, &["candidate", "show", "1", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("show --json");
    assert_eq!(json["state"], "retired");
    let gates: Vec<&str> = json["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .filter_map(|g| g["gate"].as_str())
        .collect();
    assert_eq!(gates, ["validate", "backtest", "paper"]);
    assert_eq!(json["gates"][1]["figures"], figures);
    assert!(
        json["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|h| h["detail"] == "rolled back: test"),
        "{json}"
    );
    // A forced promotion needs a reason, and is audited.
    let forced = run(
        &db,
        &cache,
        &["candidate", "promote", "2", "--force", "--config", config],
    );
    assert!(text(&forced.stderr).contains("--force needs --reason"));
    let forced = run(
        &db,
        &cache,
        &[
            "candidate",
            "promote",
            "2",
            "--force",
            "--reason",
            "experiment",
            "--config",
            config,
        ],
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let audited: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_log WHERE action = 'candidate 2 forced' AND detail LIKE '%reason: experiment%'", [], |r| r.get(0))
        .expect("audit");
    assert_eq!(audited, 1);
    let rejected = run(
        &db,
        &cache,
        &["candidate", "reject", "3", "--reason", "hostile"],
    );
    assert!(rejected.status.success());
    assert_eq!(state(&conn, 3), "rejected");
}

#[test]
fn lineage_names_parents_by_id_or_hash_and_an_unknown_parent_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    // The first run deploys rsi-reversion, which is no candidate.
    let rsi = example("rsi-reversion").to_str().expect("utf-8");
    deploy_first(&db, &cache, rsi);
    let conn = Connection::open(&db).expect("db");
    let rsi_hash: String = conn
        .query_row(
            "SELECT hash FROM artifacts WHERE name = 'rsi-reversion'",
            [],
            |r| r.get(0),
        )
        .expect("rsi-reversion ran");
    let list = text(&run(&db, &cache, &["candidate", "list"]).stdout);
    assert_eq!(
        list,
        format!(
            "no candidates\nactive: {} (rsi-reversion 1.0.0), deployed without being a candidate\n",
            &rsi_hash[..12]
        )
    );

    let submit = |file: &Path, extra: &[&str]| {
        let mut args = vec!["candidate", "submit", file.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        run(&db, &cache, &args)
    };
    // By a prefix of a stored strategy's hash, and by a candidate's id.
    let sma = submit(example("sma-cross"), &["--parent", &rsi_hash[..10]]);
    assert!(text(&sma.stdout).starts_with("candidate 1: sma-cross"));
    let churn = submit(fixture("churn"), &["--parent", "1", "--by", "evolution"]);
    assert!(text(&churn.stdout).starts_with("candidate 2: fixture-churn"));
    // Unknown parents are refused in one line, and nothing is stored.
    for (parent, why) in [
        (
            "zzz",
            "--parent zzz: no candidate has that id, and it is not a SHA-256",
        ),
        (
            "7",
            "--parent 7: no candidate has that id, and it is not a SHA-256",
        ),
        (
            "abcdef12",
            "--parent abcdef12: no stored strategy has that hash",
        ),
    ] {
        let out = submit(fixture("loop"), &["--parent", parent]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("error: {why}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A file that is no wasm at all is no candidate.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a strategy").expect("notes");
    let out = submit(&notes, &[]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: not a WebAssembly component (no \\0asm header); nothing stored\n",
            notes.display()
        )
    );
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM candidates", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored, 2);
    let parent: String = conn
        .query_row("SELECT parent FROM candidates WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("parent");
    assert_eq!(parent, rsi_hash);

    // The same for scripts.
    let list = run(&db, &cache, &["candidate", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list --json");
    assert_eq!(list["active"], rsi_hash.as_str());
    assert_eq!(list["candidates"][1]["submitted_by"], "evolution");
    assert_eq!(list["candidates"][0]["parent"], rsi_hash.as_str());
    assert_eq!(list["candidates"].as_array().map(Vec::len), Some(2));

    let show = text(&run(&db, &cache, &["candidate", "show", "2"]).stdout);
    let sma_hash: String = conn
        .query_row("SELECT hash FROM candidates WHERE id = 1", [], |r| r.get(0))
        .expect("hash");
    let expected = format!(
        "by         evolution\nparent     {} (candidate 1, sma-cross 1.0.0)\n           <- {} (rsi-reversion 1.0.0)\n",
        &sma_hash[..12],
        &rsi_hash[..12]
    );
    assert!(show.contains(&expected), "{show}");
}

#[test]
fn bad_gate_data_stores_nothing_and_a_candidate_whose_gates_never_finished_is_judged_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let sma = example("sma-cross").to_str().expect("utf-8");
    let config = dir.path().join("candidates.toml");
    std::fs::write(&config, "[backtest]\ndata = [\"XRP/BTC@5m\"]\n").expect("config");
    let config = config.to_str().expect("utf-8");
    let out = run(
        &db,
        &cache,
        &["candidate", "submit", sma, "--config", config],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: --data XRP/BTC@5m: no XRP/BTC 5m candles in")
            && err.lines().count() == 1,
        "{err}"
    );
    let conn = Connection::open(&db).expect("db");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM candidates"), Some(0));

    // Stored, then the process died before a verdict: submitting the same
    // bytes again runs its gates again.
    let out = run(&db, &cache, &["candidate", "submit", sma]);
    assert!(text(&out.stdout).starts_with("candidate 1: sma-cross"));
    let judged = state(&conn, 1);
    conn.execute("UPDATE candidates SET state = 'submitted' WHERE id = 1", [])
        .expect("as if interrupted");
    let again = run(&db, &cache, &["candidate", "submit", sma]);
    assert!(
        text(&again.stdout).starts_with("candidate 1: sma-cross"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(state(&conn, 1), judged);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM gate_results WHERE gate = 'validate'"
        ),
        Some(2)
    );
    // Once judged, the same bytes are the same candidate, left as judged.
    let once_more = run(&db, &cache, &["candidate", "submit", sma]);
    assert!(text(&once_more.stdout).starts_with("already submitted as candidate 1"));
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM gate_results WHERE gate = 'validate'"
        ),
        Some(2)
    );
}

#[test]
fn a_gate_failed_on_the_built_in_sample_says_what_to_do_and_a_named_file_must_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let sma = example("sma-cross").to_str().expect("utf-8");

    // A candidates file named but not there is refused, not the defaults.
    let missing = dir.path().join("candidats.toml");
    for args in [
        vec![
            "candidate",
            "submit",
            sma,
            "--config",
            missing.to_str().expect("utf-8"),
        ],
        vec![
            "run",
            "--paper",
            "--feed",
            "sample:5",
            "--candidates",
            missing.to_str().expect("utf-8"),
        ],
    ] {
        let out = run(&db, &cache, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.lines().count() == 1 && err.contains("candidats.toml: no such file"),
            "{err}"
        );
    }
    let conn = Connection::open(&db).expect("db");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM candidates").unwrap_or(0),
        0
    );

    // Without one, sma-cross fails on the random walk, and is told why
    // that proves little and what to do instead.
    let out = run(&db, &cache, &["candidate", "submit", sma]);
    let said = text(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("backtest  FAIL"), "{said}");
    assert!(
        said.contains("hint      that was the built-in sample")
            && said.contains("examples/candidates.toml"),
        "{said}"
    );

    // On real candles, a failure is the strategy's: no hint.
    let config = dir.path().join("candidates.toml");
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    std::fs::write(
        &config,
        format!("[backtest]\ndata = [{:?}]\n", eth.display().to_string()),
    )
    .expect("config");
    let atr = example("atr-breakout").to_str().expect("utf-8");
    let out = run(
        &db,
        &cache,
        &[
            "candidate",
            "submit",
            atr,
            "--config",
            config.to_str().expect("utf-8"),
        ],
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("backtest  FAIL") && !said.contains("hint"),
        "{said}"
    );
}
