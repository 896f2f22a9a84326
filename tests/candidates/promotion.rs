//! Promotions into a running engine: the new version takes over the book and
//! its tagged positions, rolls back by itself when it loses too much on its
//! first day, and a killed engine refuses it on the record.

use std::process::Stdio;
use std::time::Duration;

use rusqlite::Connection;

use super::{count, deploy_first, keel, run, spawn_goog, state, text, wait_for_db};
use crate::support::{example, fixture};

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
