//! Candidates in shadow beside a running engine: free slots taken as they
//! come, withdrawn when rejected, judged on their whole trial across a
//! crash, failed at once when their strategy is quarantined.

use rusqlite::Connection;

use super::{count, keel, permissive_gates, run, spawn_goog, state, text, wait_for_db};
use crate::support::{data, example, fixture};

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
