//! From new strategy code to a promoted strategy: candidates submitted,
//! judged by their gates, run in shadow, promoted into a running engine and
//! rolled back — all through the `keel` binary and its database.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{data, example, fixture};

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
fn a_new_version_losing_too_much_on_its_first_day_is_rolled_back_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let config = dir.path().join("candidates.toml");
    std::fs::write(&config, "[rollback]\ndaily_loss_pct = 0.3\n").expect("config");
    let config = config.to_str().expect("utf-8");
    let sma = example("sma-cross").to_str().expect("utf-8").to_owned();
    let churn = fixture("churn").to_str().expect("utf-8").to_owned();
    // sma-cross is active; churn is submitted (its gates fail) and forced in.
    deploy_first(&db, &cache, &sma);
    let out = run(
        &db,
        &cache,
        &["candidate", "submit", &churn, "--config", config],
    );
    assert!(
        text(&out.stdout).contains("backtest  FAIL"),
        "{}",
        text(&out.stdout)
    );
    // 720 one-minute bars at 10 ms a bar.
    let engine = keel(
        &db,
        &cache,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:720",
            "--speed",
            "6000x",
            "--candidates",
            config,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("engine");
    let control = keel_host::control::control_file(&db);
    while !control.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let forced = run(
        &db,
        &cache,
        &[
            "candidate",
            "promote",
            "1",
            "--force",
            "--reason",
            "see what happens",
            "--config",
            config,
        ],
    );
    assert!(
        text(&forced.stdout).contains("hot-swapped"),
        "{}{}",
        text(&forced.stdout),
        text(&forced.stderr)
    );
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conn = Connection::open(&db).expect("db");
    let deployments: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare("SELECT action, actor FROM deployments ORDER BY id")
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(
        deployments,
        [
            ("initial".to_owned(), "keel".to_owned()),
            ("promote".to_owned(), "operator".to_owned()),
            ("rollback".to_owned(), "risk-manager".to_owned())
        ]
    );
    let detail: String = conn
        .query_row(
            "SELECT detail FROM risk_events WHERE kind = 'rollback'",
            [],
            |r| r.get(0),
        )
        .expect("rollback event");
    assert!(
        detail.contains("in its first day, over the 0.3% limit"),
        "{detail}"
    );
    assert_eq!(state(&conn, 1), "retired");
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
}

/// The detail and figures of candidate `id`'s paper verdict.
fn paper_verdict(conn: &Connection, id: i64) -> (String, serde_json::Value) {
    let (detail, figures): (String, String) = conn
        .query_row(
            "SELECT detail, figures FROM gate_results WHERE candidate_id = ?1 AND gate = 'paper'",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a paper verdict");
    (detail, serde_json::from_str(&figures).expect("json"))
}

/// `(id, action, detail)` of the audit lines whose action starts with `prefix`.
fn audited(conn: &Connection, prefix: &str) -> Vec<(i64, String, String)> {
    let mut stmt = conn
        .prepare("SELECT id, action, detail FROM audit_log WHERE action LIKE ?1 ORDER BY id")
        .expect("sql");
    stmt.query_map([format!("{prefix}%")], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .expect("sql")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[test]
fn candidates_submitted_into_a_running_engine_take_free_shadow_slots_and_never_halt_trading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let goog = data("GOOG-1d.csv");
    // One shadow slot; a paper gate that fails at 2% drawdown and needs
    // more trades than the feed has.
    let config = permissive_gates(
        dir.path(),
        &goog,
        "slots = 1\nmin_trades = 100000\nmax_drawdown_pct = 2\n",
    );
    // The account halts at 1% below its peak.
    let limits = dir.path().join("risk_limits.toml");
    std::fs::write(
        &limits,
        "max_drawdown_halt_pct = 1\ndaily_loss_halt_pct = 1\n",
    )
    .expect("limits");
    let (config, limits) = (config.as_str(), limits.to_str().expect("utf-8"));
    // The active strategy: rsi-reversion, set never to trade.
    let main = format!(
        "{},oversold=1,size=0.001",
        example("rsi-reversion").display()
    );
    let engine = spawn_goog(
        &db,
        &cache,
        "8640000x",
        &[
            "--strategy",
            &main,
            "--risk-limits",
            limits,
            "--candidates",
            config,
        ],
    );
    let conn = wait_for_db(&db, "no bars booked", |conn| {
        count(conn, "SELECT COUNT(*) FROM equity_snapshots").is_some_and(|n| n >= 20)
    });

    // Submitted while the engine trades: a losing churner, then sma-cross.
    for file in [fixture("churn"), example("sma-cross")] {
        let out = run(
            &db,
            &cache,
            &[
                "candidate",
                "submit",
                file.to_str().expect("utf-8"),
                "--config",
                config,
            ],
        );
        assert!(
            text(&out.stdout).contains("— gated")
                && text(&out.stdout)
                    .contains("the running keel run shadows it once a slot is free"),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The churner started in shadow at a bar of the running engine...
    let shadows = audited(&conn, "shadow");
    let (first_start, _, detail) = &shadows[0];
    assert!(
        detail.starts_with("book candidate-1: candidate 1 (") && !detail.ends_with("after -"),
        "{shadows:?}"
    );
    // ...lost more than the account may, and failed its paper gate at once
    // on its drawdown, while the account traded on, never halted.
    let (gate, _) = paper_verdict(&conn, 1);
    assert!(gate.contains("max drawdown"), "{gate}");
    assert_eq!(state(&conn, 1), "failed");
    let churn_book: i64 = conn
        .query_row("SELECT id FROM books WHERE slot = 'candidate-1'", [], |r| {
            r.get(0)
        })
        .expect("churn's book");
    let equity: Vec<f64> = {
        let mut stmt = conn
            .prepare("SELECT equity FROM equity_snapshots WHERE book_id = ?1 ORDER BY time_ms")
            .expect("sql");
        stmt.query_map([churn_book], |r| r.get::<_, String>(0))
            .expect("sql")
            .map(|e| e.expect("row").parse().expect("decimal"))
            .collect()
    };
    let mut peak = 10_000.0_f64;
    let deepest = equity.iter().fold(0.0_f64, |deepest, e| {
        peak = peak.max(*e);
        deepest.max((peak - e) / peak * 100.0)
    });
    assert!(deepest >= 1.0, "the churner fell only {deepest}%");
    let (trading, halts): (String, i64) = conn
        .query_row(
            "SELECT state, (SELECT COUNT(*) FROM risk_events WHERE kind = 'halt') FROM trading_state",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("state");
    assert_eq!((trading.as_str(), halts), ("ACTIVE", 0));
    // Its shadow ended flat, and only then did the one slot take sma-cross.
    assert_eq!(shadows[1].1, "shadow ended", "{shadows:?}");
    assert!(shadows[1].2.starts_with("book candidate-1:"), "{shadows:?}");
    let open: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM positions WHERE book_id = ?1",
            [churn_book],
            |r| r.get(0),
        )
        .expect("positions");
    assert_eq!(open, 0);
    assert_eq!(shadows[2].1, "shadow started", "{shadows:?}");
    assert!(
        shadows[2].2.starts_with("book candidate-2:") && shadows[2].0 > *first_start,
        "{shadows:?}"
    );
    // Every bar of the feed was booked for the active strategy.
    let main_bars: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM equity_snapshots e JOIN books b ON b.id = e.book_id WHERE b.slot LIKE 'rsi-reversion%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(main_bars, 2148);
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
}

#[test]
fn a_promoted_version_takes_over_the_books_tagged_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    // The active version opens a position tagged "core" and holds it.
    let holder = fixture("holder").to_str().expect("utf-8");
    let engine = spawn_goog(
        &db,
        &cache,
        "2880000x",
        &["--bars", "800", "--strategy", holder],
    );
    let conn = wait_for_db(&db, "nothing held", |conn| {
        count(conn, "SELECT COUNT(*) FROM positions WHERE tag = 'core'") == Some(1)
    });
    // The next version, fill-echo, closes every position it is shown, by
    // its tag.
    let echo = fixture("fill-echo").to_str().expect("utf-8");
    let submitted = run(&db, &cache, &["candidate", "submit", echo]);
    assert!(
        text(&submitted.stdout).starts_with("candidate 1: fixture-fill-echo"),
        "{}",
        text(&submitted.stderr)
    );
    let promote = run(
        &db,
        &cache,
        &[
            "candidate",
            "promote",
            "1",
            "--force",
            "--reason",
            "test",
            "--by",
            "evolution",
        ],
    );
    assert!(
        text(&promote.stdout).contains("hot-swapped into the running engine"),
        "{}{}",
        text(&promote.stdout),
        text(&promote.stderr)
    );
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let echo_hash: String = conn
        .query_row("SELECT hash FROM candidates WHERE id = 1", [], |r| r.get(0))
        .expect("hash");
    // The holder's "core" position, opened before the swap, was closed
    // whole after it by a signal of the new version naming its tag: the
    // book kept it, tag, size and entry, through the swap.
    let (opened, open_qty, open_price): (i64, String, String) = conn
        .query_row(
            "SELECT time_ms, quantity, price FROM fills WHERE tag = 'core' AND action = 'open-long'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("core opened");
    let (closed, close_qty, signalled_by): (i64, String, String) = conn
        .query_row(
            "SELECT f.time_ms, f.quantity, s.artifact_hash FROM fills f
             JOIN orders o ON o.client_order_id = f.client_order_id
             JOIN signals s ON s.book_id = o.book_id AND s.time_ms = o.signal_time_ms AND s.seq = o.signal_seq
             WHERE f.tag = 'core' AND f.action = 'close'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("core closed by the new version");
    assert_eq!(signalled_by, echo_hash);
    assert_eq!(close_qty, open_qty);
    assert!(closed > opened);
    let entry: String = conn
        .query_row(
            "SELECT price_entry FROM trades WHERE tag = 'core'",
            [],
            |r| r.get(0),
        )
        .expect("core's trade");
    assert_eq!(entry, open_price);
    // The swap fell between the two fills, and no bar was missed.
    let swap: String = conn
        .query_row(
            "SELECT detail FROM audit_log WHERE action = 'hot swap'",
            [],
            |r| r.get(0),
        )
        .expect("swap");
    assert!(swap.contains("(fixture-fill-echo)"), "{swap}");
    // The nightly job decided, and is named as the one who did.
    let actors: (String, String) = conn
        .query_row(
            "SELECT (SELECT actor FROM deployments WHERE action = 'promote'),
                    (SELECT actor FROM audit_log WHERE action = 'hot swap')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("actors");
    assert_eq!(actors, ("evolution".into(), "evolution".into()));
    let bars: i64 = conn
        .query_row("SELECT COUNT(*) FROM equity_snapshots", [], |r| r.get(0))
        .expect("count");
    assert_eq!(bars, 800);
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
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
fn rejecting_a_candidate_withdraws_its_running_shadow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let goog = data("GOOG-1d.csv");
    // A paper gate that never decides within the run.
    let config = permissive_gates(
        dir.path(),
        &goog,
        "min_trades = 100000\nmax_drawdown_pct = 100\n",
    );
    let config = config.as_str();
    let submitted = run(
        &db,
        &cache,
        &[
            "candidate",
            "submit",
            example("sma-cross").to_str().expect("utf-8"),
            "--config",
            config,
        ],
    );
    assert!(submitted.status.success(), "{}", text(&submitted.stdout));
    let holder = fixture("holder").to_str().expect("utf-8");
    let engine = spawn_goog(
        &db,
        &cache,
        "2880000x",
        &[
            "--bars",
            "300",
            "--strategy",
            holder,
            "--candidates",
            config,
        ],
    );
    // Once the shadow has booked a few bars, the operator rejects it.
    let conn = wait_for_db(&db, "no shadow", |conn| {
        count(
            conn,
            "SELECT COUNT(*) FROM equity_snapshots e JOIN books b ON b.id = e.book_id WHERE b.slot = 'candidate-1'",
        )
        .is_some_and(|n| n >= 20)
    });
    let rejected = run(
        &db,
        &cache,
        &["candidate", "reject", "1", "--reason", "not this one"],
    );
    assert!(rejected.status.success(), "{}", text(&rejected.stderr));
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let shadows = audited(&conn, "shadow");
    assert_eq!(shadows.len(), 2, "{shadows:?}");
    assert!(
        shadows[1]
            .2
            .starts_with("book candidate-1: candidate 1 is rejected; shadow withdrawn"),
        "{shadows:?}"
    );
    assert_eq!(state(&conn, 1), "rejected");
    let (bars, open): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM equity_snapshots WHERE book_id = b.id),
                    (SELECT COUNT(*) FROM positions WHERE book_id = b.id)
             FROM books b WHERE b.slot = 'candidate-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("shadow book");
    assert!(
        bars < 300,
        "the shadow ran on after its rejection: {bars} bars"
    );
    assert_eq!(open, 0);
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
}

#[test]
fn a_shadow_resumed_after_a_crash_is_judged_on_its_whole_trial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let goog = data("GOOG-1d.csv");
    let config = permissive_gates(
        dir.path(),
        &goog,
        "min_trades = 5\nmax_drawdown_pct = 100\n",
    );
    let feed = format!("replay:{}", goog.display());
    let holder = fixture("holder").to_str().expect("utf-8");
    let args = [
        "run",
        "--paper",
        "--feed",
        &feed,
        "--symbol",
        "GOOG",
        "--speed",
        "max",
        "--strategy",
        holder,
        "--candidates",
        &config,
    ];
    // The paper verdict on sma-cross, in one run and in a run killed at its
    // 300th bar and started again.
    let verdict = |name: &str, crash: bool| -> serde_json::Value {
        let db = dir.path().join(name);
        let sma = example("sma-cross").to_str().expect("utf-8");
        let out = run(
            &db,
            &cache,
            &["candidate", "submit", sma, "--config", &config],
        );
        assert!(out.status.success(), "{}", text(&out.stdout));
        if crash {
            let died = keel(&db, &cache, &args)
                .env("KEEL_FAILPOINT", "after-bar:300")
                .output()
                .expect("run");
            assert!(!died.status.success(), "the failpoint did not fire");
        }
        let out = run(&db, &cache, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).contains("(resumed)"), crash);
        let conn = Connection::open(&db).expect("db");
        paper_verdict(&conn, 1).1
    };
    let clean = verdict("clean.db", false);
    let resumed = verdict("crashed.db", true);
    assert!(clean["bars"].as_u64().is_some_and(|n| n > 300), "{clean}");
    for key in ["bars", "trades"] {
        assert_eq!(resumed[key], clean[key], "{key}: {resumed} against {clean}");
    }
    for key in [
        "pnl",
        "max_drawdown_pct",
        "sharpe_per_bar",
        "active_sharpe_per_bar",
    ] {
        let (a, b) = (
            resumed[key].as_f64().expect(key),
            clean[key].as_f64().expect(key),
        );
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{key}: {resumed} against {clean}"
        );
    }
}

#[test]
fn a_shadow_whose_strategy_is_quarantined_fails_at_once_and_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let goog = data("GOOG-1d.csv");
    let config = permissive_gates(
        dir.path(),
        &goog,
        "slots = 1\nmin_trades = 100000\nmax_drawdown_pct = 100\n",
    );
    // panic-above passes validation on synthetic prices, and breaks once
    // GOOG closes above 400.
    for file in [fixture("panic-above"), example("sma-cross")] {
        let file = file.to_str().expect("utf-8");
        let out = run(
            &db,
            &cache,
            &["candidate", "submit", file, "--config", &config],
        );
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
    let holder = fixture("holder").to_str().expect("utf-8");
    let out = run(
        &db,
        &cache,
        &[
            "run",
            "--paper",
            "--feed",
            &format!("replay:{}", goog.display()),
            "--symbol",
            "GOOG",
            "--speed",
            "max",
            "--strategy",
            holder,
            "--candidates",
            &config,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let conn = Connection::open(&db).expect("db");
    let (gate, _) = paper_verdict(&conn, 1);
    assert!(
        gate.contains("quarantined after repeated failures"),
        "{gate}"
    );
    assert_eq!(state(&conn, 1), "failed");
    let shadows = audited(&conn, "shadow");
    let books: Vec<&str> = shadows
        .iter()
        .map(|(_, action, detail)| {
            let book = detail.split(':').next().unwrap_or_default();
            if action == "shadow ended" {
                "ended"
            } else {
                book
            }
        })
        .collect();
    assert_eq!(
        books,
        ["book candidate-1", "ended", "book candidate-2"],
        "{shadows:?}"
    );
    let bars: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM equity_snapshots e JOIN books b ON b.id = e.book_id WHERE b.slot = 'candidate-1'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert!(bars < 2148, "the quarantined shadow ran to the end");
}

#[test]
fn a_promotion_a_killed_engine_refuses_is_recorded_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, cache) = (dir.path().join("keel.db"), dir.path().join("cache"));
    let sma = example("sma-cross").to_str().expect("utf-8");
    let holder = fixture("holder").to_str().expect("utf-8");
    run(&db, &cache, &["candidate", "submit", sma]);
    let engine = spawn_goog(
        &db,
        &cache,
        "2880000x",
        &["--bars", "300", "--strategy", holder],
    );
    let conn = wait_for_db(&db, "no bars booked", |conn| {
        count(conn, "SELECT COUNT(*) FROM equity_snapshots").is_some_and(|n| n >= 10)
    });
    let killed = run(&db, &cache, &["kill", "--reason", "test"]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    let promote = run(
        &db,
        &cache,
        &[
            "candidate",
            "promote",
            "1",
            "--force",
            "--reason",
            "after the kill",
        ],
    );
    assert!(!promote.status.success());
    let hash: String = conn
        .query_row("SELECT hash FROM candidates WHERE id = 1", [], |r| r.get(0))
        .expect("hash");
    assert_eq!(
        text(&promote.stderr),
        format!(
            "error: recorded, but the running keel run did not swap to {} (the next run starts with it): 409 /swap: this run was killed; start a new one\n",
            &hash[..12]
        )
    );
    let active: String = conn
        .query_row(
            "SELECT hash FROM deployments ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("active");
    assert_eq!(active, hash);
    let out = engine.wait_with_output().expect("engine");
    assert!(out.status.success(), "{}", text(&out.stderr));
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
