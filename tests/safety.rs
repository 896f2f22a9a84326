//! What a hostile local process or a careless operator does to a running
//! `keel run`: start a second one on the same database, take it over from
//! `keel dev --paper`, hold the control API's connections open, stop it
//! with a signal, or kill it when the API cannot be reached.

use std::io::Write;
use std::net::TcpStream;
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

/// Where the run on `db` serves its control API.
fn control_addr(db: &Path) -> String {
    let endpoint: serde_json::Value = serde_json::from_slice(
        &std::fs::read(keel_host::control::control_file(db)).expect("control"),
    )
    .expect("json");
    format!("127.0.0.1:{}", endpoint["port"])
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
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
    if db.exists() {
        let conn = open(&db);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'running'"),
            0
        );
    }
    assert!(!keel_host::control::control_file(&db).exists());
}

/// A local process without the token: idle sockets, a slowloris and a
/// header that never ends.
#[test]
fn the_kill_switch_answers_through_idle_slow_and_huge_connections() {
    let s = Setup::new();
    let db = s.db("siege.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 3);
    let addr = control_addr(&db);
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).expect("idle connection"))
        .collect();
    let slow_addr = addr.clone();
    let slowloris = std::thread::spawn(move || {
        let mut slow = TcpStream::connect(&slow_addr).expect("slowloris");
        let _ = slow.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n");
        for i in 0..20 {
            if slow.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let before = rss_kb(run.id());
    // A 1 GB header, sent until the server hangs up.
    let mut huge = TcpStream::connect(&addr).expect("huge");
    huge.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = huge.write_all(b"GET /status HTTP/1.1\r\nX-Huge: ");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    while sent < 1 << 30 {
        match huge.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 1 << 30, "the server read a whole 1 GB header");
    let grown_kb = rss_kb(run.id()).saturating_sub(before);
    assert!(grown_kb < 10 << 10, "the engine grew by {grown_kb} kB");

    let asked = Instant::now();
    let kill = s.keel(&db, &["kill", "--reason", "under siege"]);
    let took = asked.elapsed();
    assert!(kill.status.success(), "{kill:?}");
    assert!(text(&kill.stdout).starts_with("killed in "), "{kill:?}");
    // Before: 15 s and a failure. The target is under 1 s (BENCHMARKS.md);
    // the bound here only leaves a loaded machine room.
    assert!(took < Duration::from_secs(5), "kill took {took:?}");
    let conn = open(&db);
    let state: String = conn
        .query_row("SELECT state FROM trading_state", [], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "HALTED");
    drop(idle);
    slowloris.join().expect("slowloris");
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
}

#[test]
fn a_kill_that_cannot_reach_the_api_goes_through_the_kill_file() {
    let s = Setup::new();
    let db = s.db("killfile.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 30);
    // The API unreachable: the control file points at a closed port.
    let file = keel_host::control::control_file(&db);
    let mut endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("control")).expect("json");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    endpoint["port"] = closed.local_addr().expect("addr").port().into();
    drop(closed);
    std::fs::write(&file, endpoint.to_string()).expect("rewrite");
    let kill = s.keel(&db, &["kill", "--reason", "api down"]);
    let (out, err) = (text(&kill.stdout), text(&kill.stderr));
    assert!(kill.status.success(), "{out}{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(out.starts_with("killed through "), "{out}");
    assert!(
        out.contains(&format!("keel run (pid {}) took it", run.id())),
        "{out}"
    );
    let conn = open(&db);
    let (state, reason): (String, String) = conn
        .query_row("SELECT state, reason FROM trading_state", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("state");
    assert_eq!(state, "HALTED");
    assert_eq!(reason, "kill switch: api down (kill file)");
    assert!(!keel_host::control::kill_file(&db).exists());
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");

    // With no engine running, the kill waits for the next start, which
    // halts before its first bar.
    let db = s.db("killfile-later.db");
    let kill = s.keel(&db, &["kill", "--reason", "weekend"]);
    assert!(kill.status.success(), "{kill:?}");
    assert!(
        text(&kill.stdout).contains("the next keel run on it starts by killing"),
        "{kill:?}"
    );
    let out = s.run_to_end(&db, "sample:100", &[]);
    assert!(
        text(&out.stdout).contains("trading state HALTED"),
        "{out:?}"
    );
    let conn = open(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM orders"), 0);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'kill'"
        ),
        1
    );
}

/// A process that is not the engine answering on the control port (a
/// port a crashed run left in its control file, taken since) does not
/// make a kill: only the engine's own account of one does, anything else
/// goes by the kill file. A control file that is a pipe or a link to
/// `/dev/zero` is refused at once, never waited on or read whole.
#[test]
fn a_kill_answered_by_another_process_goes_through_the_kill_file() {
    use std::io::{BufRead, BufReader};
    let s = Setup::new();
    let db = s.db("impostor.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 30);
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = impostor.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in impostor.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = r#"{"reply":"state","state":"ACTIVE"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let file = keel_host::control::control_file(&db);
    let mut endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("control")).expect("json");
    endpoint["port"] = port.into();
    std::fs::write(&file, endpoint.to_string()).expect("rewrite");
    let kill = s.keel(&db, &["kill", "--reason", "impostor"]);
    let (out, err) = (text(&kill.stdout), text(&kill.stderr));
    assert!(kill.status.success(), "{out}{err}");
    assert!(err.contains("200 /kill: not a kill's reply"), "{err}");
    assert!(
        out.contains(&format!("keel run (pid {}) took it", run.id())),
        "{out}"
    );
    let state: String = open(&db)
        .query_row("SELECT state FROM trading_state", [], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "HALTED");
    let status = s.keel(&db, &["status"]);
    assert!(!status.status.success());
    assert!(
        text(&status.stderr).contains("200 /status: not the engine's reply"),
        "{}",
        text(&status.stderr)
    );
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");

    // A control file that is a pipe, or a link to an endless device.
    for (name, make) in [("fifo.db", "mkfifo"), ("zero.db", "ln")] {
        let db = s.db(name);
        let control = keel_host::control::control_file(&db);
        let made = match make {
            "mkfifo" => std::process::Command::new("mkfifo").arg(&control).status(),
            _ => std::process::Command::new("ln")
                .args(["-s", "/dev/zero"])
                .arg(&control)
                .status(),
        };
        assert!(made.expect("made").success());
        let started = Instant::now();
        let status = s.keel(&db, &["status"]);
        assert!(!status.status.success());
        assert!(
            text(&status.stderr).contains("not a control file: not a regular file")
                || text(&status.stderr).contains("Too many levels of symbolic links"),
            "{name}: {}",
            text(&status.stderr)
        );
        let kill = s.keel(&db, &["kill", "--reason", "odd file"]);
        assert!(kill.status.success(), "{name}: {kill:?}");
        assert!(keel_host::control::kill_file(&db).exists(), "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: {:?}",
            started.elapsed()
        );
    }
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

/// Waits until `done` holds, for at most a minute.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process listening where a control file points, answering every
/// request as the engine answers a kill; what it was sent.
fn fake_killer() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                log.lock().expect("log").push(line.trim().to_owned());
                line.clear();
            }
            let body =
                r#"{"reply":"killed","latency_us":1,"positions_closed":0,"orders_cancelled":0}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, heard)
}

#[test]
fn a_crashed_runs_port_cannot_fake_a_kill_nor_learn_the_token() {
    let s = Setup::new();
    let db = s.db("crashed.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 3);
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
    // Another process now listens where the crashed run's control file
    // points, and answers as the engine answers a kill.
    let (port, heard) = fake_killer();
    let file = keel_host::control::control_file(&db);
    let mut endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("control")).expect("json");
    endpoint["port"] = port.into();
    std::fs::write(&file, endpoint.to_string()).expect("rewrite");

    let kill = s.keel(&db, &["kill", "--reason", "after the crash"]);
    let (out, err) = (text(&kill.stdout), text(&kill.stderr));
    assert!(kill.status.success(), "{out}{err}");
    assert!(err.contains("it has ended"), "{err}");
    assert!(out.contains("no engine is running"), "{out}");
    assert!(keel_host::control::kill_file(&db).exists());
    let pause = s.keel(&db, &["pause", "--reason", "x"]);
    assert!(!pause.status.success());
    assert!(
        heard.lock().expect("log").is_empty(),
        "the other process was asked, token and all: {:?}",
        heard.lock().expect("log")
    );
    // The next run starts by killing.
    let restarted = s.keel(
        &db,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:1440",
            "--speed",
            "max",
            "--bars",
            "20",
            "--strategy",
            &format!("{},fast=5,slow=20", example("sma-cross").display()),
        ],
    );
    assert!(
        text(&restarted.stdout).contains("trading state HALTED"),
        "{restarted:?}"
    );
}

#[test]
fn links_and_pipes_beside_the_database_are_replaced_never_written_through() {
    let s = Setup::new();
    let victim = s.db("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    let untouched = || std::fs::read_to_string(&victim).expect("victim") == "precious";

    // The kill file's partial name, planted as a link.
    let db = s.db("partial.db");
    let mut partial = keel_host::control::kill_file(&db).into_os_string();
    partial.push(".partial");
    std::os::unix::fs::symlink(&victim, &partial).expect("link");
    let kill = s.keel(&db, &["kill", "--reason", "market crash"]);
    assert!(kill.status.success(), "{kill:?}");
    assert!(untouched(), "keel kill wrote through a planted link");
    let killed = std::fs::symlink_metadata(keel_host::control::kill_file(&db)).expect("kill file");
    assert!(killed.is_file());

    // The control file, planted as a link to a file others can read: the
    // token must not land there.
    let db = s.db("control.db");
    let control = keel_host::control::control_file(&db);
    std::os::unix::fs::symlink(&victim, &control).expect("link");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_until("the control file replaced", || {
        std::fs::symlink_metadata(&control).is_ok_and(|m| m.is_file())
    });
    assert!(untouched(), "the control token was written through a link");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&control).expect("control").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    wait_for_bars(&db, 3);
    let status = s.keel(&db, &["status"]);
    assert!(status.status.success(), "{status:?}");
    // A damaged control file does not hide the run from the kill: it is
    // found by its lock, and takes the kill file.
    std::fs::write(&control, "not json").expect("damage");
    let kill = s.keel(&db, &["kill", "--reason", "blind"]);
    assert!(kill.status.success(), "{kill:?}");
    assert!(
        text(&kill.stdout).contains(&format!("keel run (pid {}) took it", run.id())),
        "{}",
        text(&kill.stdout)
    );
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");

    // The lock file as a link: refused in one line, the file left alone.
    let db = s.db("lock.db");
    std::os::unix::fs::symlink(&victim, keel_host::store::lock_file(&db)).expect("link");
    let strategy = example("sma-cross").display().to_string();
    let refused = s.keel(
        &db,
        &[
            "run",
            "--paper",
            "--feed",
            "sample:100",
            "--speed",
            "max",
            "--strategy",
            &strategy,
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot take the database's lock"),
        "{}",
        text(&refused.stderr)
    );
    assert!(untouched(), "the lock truncated a planted link's target");

    // The control file as a pipe: the run starts and trades, not waiting
    // for a reader.
    let db = s.db("fifo.db");
    let made = std::process::Command::new("mkfifo")
        .arg(keel_host::control::control_file(&db))
        .status();
    assert!(made.expect("mkfifo").success());
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_bars(&db, 3);
    let status = s.keel(&db, &["status"]);
    assert!(status.status.success(), "{status:?}");
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
}

#[test]
fn connections_that_never_show_the_token_cannot_lock_the_operator_out() {
    let s = Setup::new();
    let db = s.db("crowded.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 3);
    let addr = control_addr(&db);
    // Every one of the server's 512 slots, held by a page read kept alive.
    let crowd: Vec<TcpStream> = (0..600)
        .filter_map(|_| {
            let mut c = TcpStream::connect(&addr).ok()?;
            c.write_all(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            Some(c)
        })
        .collect();
    assert!(crowd.len() >= 512, "{} connections", crowd.len());
    let status = s.keel(&db, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let pause = s.keel(&db, &["pause", "--reason", "crowded"]);
    assert!(pause.status.success(), "{pause:?}");
    assert!(text(&pause.stdout).contains("REDUCE_ONLY"), "{pause:?}");
    drop(crowd);
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
}
