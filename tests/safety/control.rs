//! A hostile local process on the control port and beside the database:
//! connections held open or slow, a port a crashed run left taken by
//! another process, links and pipes planted where Keel writes its files.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::wait_for_bars;
use crate::paper::{Setup, count, open, text, wait_for_control};
use crate::support::example;
use crate::support::siege::{control_addr, huge_header, rss_kb};

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
    let sent = huge_header(&addr);
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
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let told = asked.clone();
    std::thread::spawn(move || {
        for stream in impostor.incoming() {
            let Ok(mut stream) = stream else { return };
            told.store(true, std::sync::atomic::Ordering::SeqCst);
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
    // The port is not the run's: the impostor is not asked at all.
    assert!(
        err.contains("is not the control port of a keel run"),
        "{err}"
    );
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
        text(&status.stderr).contains("is not the control port of a keel run"),
        "{}",
        text(&status.stderr)
    );
    assert!(
        !asked.load(std::sync::atomic::Ordering::SeqCst),
        "the impostor was asked"
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

/// `kill` went by the kill file: the port's answer was not believed (why,
/// in its error), no engine said to be running, the file written.
fn killed_by_the_file(kill: &std::process::Output, db: &Path, why: &str) {
    let (out, err) = (text(&kill.stdout), text(&kill.stderr));
    assert!(kill.status.success(), "{out}{err}");
    assert!(err.contains(why), "{err}");
    assert!(out.contains("no engine is running"), "{out}");
    assert!(keel_host::control::kill_file(db).exists());
}

/// Whatever listens on the port heard nothing: not asked, nor shown the token.
fn never_asked(heard: &std::sync::Mutex<Vec<String>>) {
    let heard = heard.lock().expect("log");
    assert!(
        heard.is_empty(),
        "the other process was asked, token and all: {heard:?}"
    );
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
    killed_by_the_file(&kill, &db, "it has ended");
    let pause = s.keel(&db, &["pause", "--reason", "x"]);
    assert!(!pause.status.success());
    never_asked(&heard);
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

/// After a reboot the pid a crashed run left in its control file may be
/// another live process's: whatever then listens on the port is not the
/// run, and is neither asked nor shown the token.
#[test]
fn a_left_over_control_files_pid_alive_in_another_process_is_not_the_engine() {
    let s = Setup::new();
    let db = s.db("rebooted.db");
    let mut run = s.spawn_run(&db, "sample:1440", "600x", &[]);
    wait_for_control(&db);
    wait_for_bars(&db, 3);
    run.kill().expect("SIGKILL");
    run.wait().expect("reap");
    let mut stranger = Command::new("sleep").arg("60").spawn().expect("sleep");
    let (port, heard) = fake_killer();
    let file = keel_host::control::control_file(&db);
    let mut endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("control")).expect("json");
    endpoint["port"] = port.into();
    endpoint["pid"] = stranger.id().into();
    std::fs::write(&file, endpoint.to_string()).expect("rewrite");

    let kill = s.keel(&db, &["kill", "--reason", "after the reboot"]);
    let status = s.keel(&db, &["status"]);
    let _ = stranger.kill();
    let _ = stranger.wait();
    killed_by_the_file(&kill, &db, "is not the control port");
    // The record of the crashed run, said to be one.
    let shown = text(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(shown.contains("no run is live"), "{shown}");
    never_asked(&heard);

    // The pid gone to the very process that listens on the port (this
    // one): it holds the port, but not the database's lock, so it is no
    // run, and its forged kill is not believed.
    std::fs::remove_file(keel_host::control::kill_file(&db)).expect("unkill");
    endpoint["pid"] = std::process::id().into();
    std::fs::write(&file, endpoint.to_string()).expect("rewrite");
    let kill = s.keel(&db, &["kill", "--reason", "the pid taken"]);
    killed_by_the_file(&kill, &db, "no run holds the database's lock");
    never_asked(&heard);
}

/// A run holds its database's lock before it serves its control API (it
/// may be building its strategy first): meanwhile `keel status` says so,
/// rather than showing the last run's record as if none were live.
#[test]
fn a_run_not_yet_serving_is_not_said_to_be_gone() {
    let s = Setup::new();
    let db = s.db("starting.db");
    // flock(1) holds the lock as a starting run does, and keeps it open.
    let lock = keel_host::store::lock_file(&db);
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock(1)");
    wait_until("the lock taken", || {
        std::fs::read_to_string("/proc/locks")
            .is_ok_and(|t| t.contains(&format!(" {} ", holder.id())))
    });
    let holder_pid = holder.id();
    let starting = |status: &std::process::Output| {
        let err = text(&status.stderr);
        assert!(!status.status.success(), "{status:?}");
        assert!(
            err.contains(&format!("keel (pid {holder_pid}) holds"))
                && err.contains("serves no control API yet"),
            "{err}"
        );
    };
    // No control file yet.
    let fresh = s.keel(&db, &["status"]);
    // The last run's control file left over, its pid ended: the starting
    // run has not replaced it yet.
    let mut ended = Command::new("true").spawn().expect("true");
    ended.wait().expect("reap");
    let file = keel_host::control::control_file(&db);
    let endpoint = |pid: u32| serde_json::json!({"port": 9, "token": "t", "pid": pid}).to_string();
    std::fs::write(&file, endpoint(ended.id())).expect("control file");
    let left_over = s.keel(&db, &["status"]);
    // Its pid handed to another live process.
    let mut stranger = Command::new("sleep").arg("60").spawn().expect("sleep");
    std::fs::write(&file, endpoint(stranger.id())).expect("control file");
    let reused = s.keel(&db, &["status"]);
    let _ = stranger.kill();
    let _ = stranger.wait();
    let _ = holder.kill();
    let _ = holder.wait();
    starting(&fresh);
    starting(&left_over);
    starting(&reused);
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
    // One line, its cause said once.
    assert_eq!(
        text(&refused.stderr).trim_end(),
        format!(
            "error: {}: cannot take the database's lock: Too many levels of symbolic links (os error 40)",
            keel_host::store::lock_file(&db).display()
        )
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
