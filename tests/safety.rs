//! What a hostile local process or a careless operator does to a running
//! `keel run`: start a second one on the same database, take it over from
//! `keel dev --paper`, stop it with a signal, lose its live feed or hold
//! its write lock; `control` holds what is done to its control port and
//! the files beside its database.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::paper::{Setup, count, open, snapshots, text, wait_for_control};
use crate::support::example;

/// Waits until `db` has booked at least `n` equity snapshots.
fn wait_for_bars(db: &Path, n: i64) {
    let started = Instant::now();
    while snapshots(db) < n {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "fewer than {n} bars booked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let sent = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill(1)");
    assert!(sent.success());
}

#[test]
fn runs_started_at_once_on_one_database_trade_once() {
    let s = Setup::new();
    for round in 0..10 {
        let db = s.db(&format!("race-{round}.db"));
        // 240 bars at 7200x: about 2 s of trading, long after every
        // loser has given up.
        let children: Vec<Child> = (0..4)
            .map(|_| s.spawn_run(&db, "sample:240", "7200x", &[]))
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("keel run"))
            .collect();
        let winners: Vec<usize> = (0..4).filter(|&i| outputs[i].status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outputs:?}");
        let owner = pids[winners[0]];
        for (i, out) in outputs.iter().enumerate() {
            if i == winners[0] {
                continue;
            }
            let err = text(&out.stderr);
            assert_eq!(err.lines().count(), 1, "round {round}: {err}");
            assert!(
                err.contains(&format!(
                    "keel run (pid {owner}) is trading on this database"
                )),
                "round {round}: {err}"
            );
        }
        let conn = open(&db);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM runs"), 1);
        assert!(count(&conn, "SELECT COUNT(*) FROM paper_fills") > 0);
        // Every fill the exchange made is booked exactly once.
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM paper_fills p
                 WHERE (SELECT COUNT(*) FROM fills f WHERE f.client_order_id = p.client_order_id) != 1"
            ),
            0,
            "round {round}"
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM fills WHERE client_order_id IS NOT NULL"
            ),
            count(&conn, "SELECT COUNT(*) FROM paper_fills"),
            "round {round}"
        );
        keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
    }
}

/// A lock file removed while its run goes on (an `rm`, a cleaner of old
/// files): the run holds the database file itself, so `keel status` and
/// `keel kill` still find it and a second run is refused. (Found by a
/// hostile round: the run was reported ended, and a second one started
/// on its ledger.)
#[test]
fn a_run_whose_lock_file_was_removed_is_still_found_and_never_joined() {
    let s = Setup::new();
    let db = s.db("removed.db");
    let mut run = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    std::fs::remove_file(keel_host::store::lock_file(&db)).expect("rm the lock file");
    let status = s.keel(&db, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let said = text(&status.stdout);
    assert!(
        said.starts_with("run 1  sample:3000  state ACTIVE"),
        "{said}"
    );
    let second = s.keel(&db, &["run", "--paper", "--feed", "sample:50"]);
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("was removed or replaced while it ran) is trading on this database"),
        "{err}"
    );
    let kill = s.keel(&db, &["kill", "--reason", "removed"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    assert!(
        text(&kill.stdout).starts_with("killed in "),
        "{}",
        text(&kill.stdout)
    );
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
    let conn = open(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM runs"), 1);
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
}

#[test]
fn keel_dev_paper_cannot_take_over_a_running_runs_database() {
    let s = Setup::new();
    let db = s.db("dev.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    let control_before = std::fs::read(keel_host::control::control_file(&db)).expect("control");
    let wasm = example("sma-cross").display().to_string();
    let dev = s.keel(&db, &["dev", &wasm, "--paper", "--max-reloads", "1"]);
    assert!(!dev.status.success());
    let err = text(&dev.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "keel run (pid {}) is trading on this database",
            run.id()
        )),
        "{err}"
    );
    // The run's control file is untouched, its run not abandoned, and the
    // kill switch still reaches it.
    assert_eq!(
        std::fs::read(keel_host::control::control_file(&db)).expect("control"),
        control_before
    );
    let conn = open(&db);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM runs WHERE status = 'abandoned'"
        ),
        0
    );
    let kill = s.keel(&db, &["kill", "--reason", "test"]);
    assert!(text(&kill.stdout).starts_with("killed in "), "{kill:?}");
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
}

#[test]
fn sigterm_and_ctrl_c_end_a_run_cleanly_and_it_resumes() {
    let s = Setup::new();
    let db = s.db("term.db");
    let feed = "sample:600";
    for (round, name) in ["TERM", "INT"].into_iter().enumerate() {
        let run = s.spawn_run(&db, feed, "600x", &[]);
        wait_for_control(&db);
        wait_for_bars(&db, snapshots(&db) + 5);
        signal(&run, name);
        let stopped = Instant::now();
        let out = run.wait_with_output().expect("keel run");
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "SIG{name}: {out:?}");
        assert!(stopped.elapsed() < Duration::from_secs(10));
        assert!(stdout.contains("bars booked"), "{stdout}");
        assert!(
            stdout.contains("interrupted: `keel run` with the same settings resumes run 1"),
            "{stdout}"
        );
        if round == 1 {
            assert!(stdout.contains("run 1 (resumed)"), "{stdout}");
        }
        assert!(
            !keel_host::control::control_file(&db).exists(),
            "SIG{name} left the control file (and its token) behind"
        );
        let conn = open(&db);
        let status: String = conn
            .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
            .expect("run");
        assert_eq!(status, "interrupted");
        keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
    }
    // The next start resumes it and finishes.
    let out = s.run_to_end(&db, feed, &[]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("run 1 (resumed)"), "{stdout}");
    let conn = open(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM runs"), 1);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'finished'"),
        1
    );
}

#[test]
fn a_start_whose_port_is_taken_leaves_no_run_behind() {
    let s = Setup::new();
    let db = s.db("port.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = s.run_to_end(&db, "sample:50", &["--control-port", &port]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    // The database file, if the claim made it before the port was found
    // taken, is empty (an empty database) or holds no running run.
    if std::fs::metadata(&db).is_ok_and(|m| m.len() > 0) {
        let conn = open(&db);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'running'"),
            0
        );
    }
    assert!(!keel_host::control::control_file(&db).exists());
}

/// The risk events a feed left.
fn feed_events(db: &Path) -> Vec<String> {
    let conn = open(db);
    let mut stmt = conn
        .prepare("SELECT detail FROM risk_events WHERE kind = 'feed' ORDER BY id")
        .expect("sql");
    stmt.query_map([], |r| r.get(0))
        .expect("sql")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn a_live_feed_that_never_delivers_a_first_bar_ends_the_run_in_one_line() {
    let s = Setup::new();
    // Nobody listening, then a server that accepts and never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = closed.local_addr().expect("addr").port();
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    for (name, port) in [("refused", refused), ("silent", silent_port)] {
        let db = s.db(&format!("first-bar-{name}.db"));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let out = s.run_to_end(
            &db,
            "kraken:XBTUSD",
            &[
                "--kraken-url",
                &url,
                "--poll-ms",
                "50",
                "--first-bar-timeout",
                "2",
            ],
        );
        let stdout = text(&out.stdout);
        assert!(!out.status.success(), "{name}: {stdout}");
        assert!(started.elapsed() < Duration::from_secs(30), "{name}");
        let stopped: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("feed stopped: "))
            .collect();
        assert_eq!(stopped.len(), 1, "{name}: {stdout}");
        assert!(
            stopped[0].starts_with("feed stopped: kraken OHLC XBTUSD: no closed bar within 2 s of the start (last problem: kraken OHLC XBTUSD: request failed"),
            "{name}: {stdout}"
        );
        // Feed trouble is said on stderr by default, once, not per poll.
        let err = text(&out.stderr);
        assert!(
            err.contains("kraken OHLC XBTUSD: request failed"),
            "{name}: {err}"
        );
        // One row for the outage, one for the stop: not one per poll.
        assert_eq!(feed_events(&db).len(), 2, "{name}: {:?}", feed_events(&db));
    }
}

#[test]
fn an_outage_after_the_first_bar_shows_in_status_and_metrics_with_one_row() {
    let s = Setup::new();
    let t = 1_767_225_600;
    let huge = format!(
        r#"{{"error":[],"result":{{"XXBTZUSD":[{}],"last":1}}}}"#,
        vec!["[1,\"1\",\"1\",\"1\",\"1\",\"1\",\"1\",1]"; 200_000].join(",")
    );
    let (port, seen) = crate::paper::kraken_server(vec![
        crate::paper::ohlc(&[t, t + 60, t + 120], t + 60),
        huge,
        r#"{"error":["EService:Unavailable"]}"#.to_owned(),
    ]);
    let db = s.db("outage.db");
    let url = format!("http://127.0.0.1:{port}");
    let run = s.spawn_run(
        &db,
        "kraken:XBTUSD",
        "max",
        &["--kraken-url", &url, "--poll-ms", "20"],
    );
    wait_for_control(&db);
    let started = Instant::now();
    while seen.lock().expect("seen").len() < 30 {
        assert!(started.elapsed() < Duration::from_secs(60), "too few polls");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = text(&s.keel(&db, &["status"]).stdout);
    let feed_line = status
        .lines()
        .find(|l| l.starts_with("feed: "))
        .expect(&status);
    assert!(
        feed_line.starts_with("feed: last bar 2026-01-01T00:01:00Z, "),
        "{feed_line}"
    );
    assert!(
        feed_line
            .contains("failed poll(s) in a row — kraken OHLC XBTUSD: error: EService:Unavailable"),
        "{feed_line}"
    );
    let (_, metrics) = keel_host::control::request(&db, "GET", "/metrics", "").expect("metrics");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keel_feed_consecutive_failures "))
        .and_then(|v| v.parse().ok())
        .expect(&metrics);
    assert!(failures >= 20.0, "{metrics}");
    assert!(
        metrics.contains(&format!("keel_feed_last_bar_seconds {}\n", t + 60)),
        "{metrics}"
    );
    signal(&run, "TERM");
    let out = run.wait_with_output().expect("keel run");
    assert!(out.status.success(), "{out:?}");
    // The oversized reply was refused unread, and the outage is one row.
    let events = feed_events(&db);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with("kraken OHLC XBTUSD: a reply over 4 MiB"),
        "{events:?}"
    );
}

#[test]
fn a_write_lock_held_by_another_process_delays_the_engine_and_its_kill_but_ends_neither() {
    let s = Setup::new();
    let db = s.db("locked.db");
    let mut child = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 20);
    // A user's sqlite3 session (or a backup, or another keel command)
    // holds the write lock for longer than SQLite's usual few seconds.
    let holder = std::thread::spawn({
        let db = db.clone();
        move || {
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
            std::thread::sleep(Duration::from_secs(7));
            conn.execute_batch("COMMIT").expect("unlock");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let (status, body) = keel_host::control::request_within(
        &db,
        "POST",
        "/v1/kill",
        "while locked",
        Duration::from_secs(30),
    )
    .expect("kill");
    holder.join().expect("holder");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"killed\""), "{body}");
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "it waited for the lock"
    );
    assert!(
        child.try_wait().expect("alive").is_none(),
        "the run goes on"
    );
    let conn = open(&db);
    let state: String = conn
        .query_row("SELECT state FROM trading_state", [], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "HALTED");
    let before = snapshots(&db);
    wait_for_bars(&db, before + 5);
    let _ = child.kill();
    let _ = child.wait();
    keel_host::engine::audit_ledger(&conn).expect("the ledger adds up");
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'kill'"
        ),
        1
    );
}

mod control;
