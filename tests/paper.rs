//! Paper trading as an operator runs it: the `keel run --paper` process, a
//! second `keel` process acting on it, SIGKILL in the middle, and the SQLite
//! ledger read back afterwards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{data, example};

struct Setup {
    dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache");
        Setup { dir, cache }
    }

    fn db(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, db: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("--db")
            .arg(db)
            .args(args)
            .env("KEEL_CACHE_DIR", &self.cache)
            .env_remove("KEEL_LOG");
        cmd
    }

    fn keel(&self, db: &Path, args: &[&str]) -> Output {
        self.command(db, args).output().expect("run keel")
    }

    /// `keel run --paper` with sma-cross (fast 5, slow 20), in the background.
    fn spawn_run(&self, db: &Path, feed: &str, speed: &str, extra: &[&str]) -> Child {
        let strategy = format!("{},fast=5,slow=20", example("sma-cross").display());
        let mut args = vec![
            "run",
            "--paper",
            "--feed",
            feed,
            "--speed",
            speed,
            "--strategy",
            &strategy,
        ];
        args.extend_from_slice(extra);
        self.command(db, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keel run")
    }

    fn run_to_end(&self, db: &Path, feed: &str, extra: &[&str]) -> Output {
        self.spawn_run(db, feed, "max", extra)
            .wait_with_output()
            .expect("keel run")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until the run's control API is up.
fn wait_for_control(db: &Path) {
    let file = keel_host::control::control_file(db);
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no control file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open(db: &Path) -> Connection {
    Connection::open(db).expect("open db")
}

/// Equity snapshots booked in `db` so far (one per book and bar); 0 while
/// it does not exist yet.
fn snapshots(db: &Path) -> i64 {
    let Ok(conn) = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM equity_snapshots", [], |r| r.get(0))
        .unwrap_or(0)
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Everything that must come out the same however often the run died.
#[derive(Debug, PartialEq)]
struct Booked {
    orders: BTreeSet<(String, String, String, String)>,
    fills: BTreeSet<(String, String, String, String, i64)>,
    trades: BTreeSet<(String, String, String, String, i64)>,
    positions: BTreeSet<(String, String, String)>,
    books: BTreeSet<(String, String, String)>,
    signals: BTreeSet<(i64, i64, String, String)>,
}

fn booked(db: &Path) -> Booked {
    let conn = open(db);
    let rows4 = |sql: &str| -> BTreeSet<(String, String, String, String)> {
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    };
    let rows5 = |sql: &str| -> BTreeSet<(String, String, String, String, i64)> {
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect(sql)
        .collect::<Result<_, _>>()
        .expect(sql)
    };
    let rows3 = |sql: &str| -> BTreeSet<(String, String, String)> {
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    };
    let signals = {
        let sql = "SELECT time_ms, seq, action, decision FROM signals";
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    };
    Booked {
        orders: rows4("SELECT client_order_id, action, size, state FROM orders"),
        fills: rows5("SELECT fill_id, action, price, quantity, time_ms FROM fills"),
        trades: rows5("SELECT fill_id, side, quantity, pnl_gross, closed_ms FROM trades"),
        positions: rows3("SELECT symbol, quantity, cost FROM positions"),
        books: rows3("SELECT cash, realized, fees FROM books"),
        signals,
    }
}

#[test]
fn a_paper_run_books_every_step_and_answers_a_second_terminal() {
    let s = Setup::new();
    let db = s.db("paper.db");
    // 600 one-minute bars at 6000x: about 6 s of replay.
    let child = s.spawn_run(&db, "sample:600", "6000x", &[]);
    wait_for_control(&db);
    let status = s.keel(&db, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    assert!(out.starts_with("run 1  sample:600  state ACTIVE"), "{out}");
    assert!(out.contains("sma-cross#1"), "{out}");
    let json = s.keel(&db, &["status", "--json"]);
    let snap: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(snap["books"][0]["start_cash"], 10_000.0);
    let second = s.keel(&db, &["run", "--paper", "--feed", "sample:600"]);
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("another keel run (pid"),
        "{}",
        text(&second.stderr)
    );
    let positions = s.keel(&db, &["positions"]);
    assert!(positions.status.success(), "{}", text(&positions.stderr));
    let metrics = keel_host::control::request(&db, "GET", "/metrics", "").expect("metrics");
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("keel_equity{book=\"sma-cross#1\"}"),
        "{}",
        metrics.1
    );
    assert!(metrics.1.contains("keel_trading_state{state=\"ACTIVE\"} 1"));

    let out = child.wait_with_output().expect("run");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("run 1 (new): 600 bars booked"), "{stdout}");
    assert!(
        !keel_host::control::control_file(&db).exists(),
        "control file removed"
    );

    let conn = open(&db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM equity_snapshots"), 600);
    assert!(count(&conn, "SELECT COUNT(*) FROM fills") > 10);
    assert!(count(&conn, "SELECT COUNT(*) FROM trades") > 5);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM orders WHERE state NOT IN ('filled', 'rejected', 'cancelled')"
        ),
        count(
            &conn,
            "SELECT COUNT(*) FROM paper_orders WHERE state = 'open'"
        ),
        "every order the engine still holds open is open at the exchange"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals WHERE decision = 'accepted'"
        ),
        count(&conn, "SELECT COUNT(*) FROM orders")
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'finished'"),
        1
    );
    // The stored books are exactly what their fills replay to.
    keel_host::paper::audit_ledger(&conn).expect("ledger adds up");
    assert!(count(&conn, "SELECT COUNT(*) FROM audit_log") >= 1);
    // The audit log cannot be rewritten.
    let err = conn
        .execute("DELETE FROM audit_log", [])
        .expect_err("append-only");
    assert!(
        err.to_string().contains("the audit log is append-only"),
        "{err}"
    );
}

#[test]
fn sigkill_at_any_point_loses_no_fill_and_places_no_order_twice() {
    let s = Setup::new();
    let feed = "sample:500";
    let clean = s.db("clean.db");
    let out = s.run_to_end(&clean, feed, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = booked(&clean);
    assert!(expected.fills.len() > 10, "{expected:?}");

    let crashy = s.db("crashy.db");
    // 500 bars at 12000x: 5 ms a bar, ~2.5 s a run. Kill each run once it
    // has booked a varied number of bars more, a varied few milliseconds
    // into the next one. Progress is read from the database, not the clock,
    // so a busy machine (a starved test thread) cannot let a run finish
    // before the kills land.
    let steps = [40i64, 25, 65, 33, 52, 18, 90, 27];
    let mut kills = 0;
    let mut finished = false;
    for (i, step) in steps.iter().cycle().take(40).enumerate() {
        let target = snapshots(&crashy) + step;
        let mut child = s.spawn_run(&crashy, feed, "12000x", &[]);
        let started = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if snapshots(&crashy) >= target {
                std::thread::sleep(Duration::from_millis(i as u64 % 5));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the run stopped booking bars"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "a run failed on its own");
            finished = true;
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
    }
    assert!(finished, "the run never finished");
    assert!(kills >= 3, "only {kills} kills landed mid-run");
    check_same(&crashy, &expected);

    // And between every two steps that must not be torn apart: the process
    // SIGKILLs itself there (KEEL_FAILPOINT), then restarts and finishes.
    let points = [
        ("after-exchange-fill", [60, 230]),
        ("after-bar", [90, 310]),
        ("before-intent", [2, 9]),
        ("after-intent", [3, 11]),
        ("after-send", [4, 13]),
    ];
    for (point, nth) in points {
        for n in nth {
            let db = s.db(&format!("{point}-{n}.db"));
            let strategy = format!("{},fast=5,slow=20", example("sma-cross").display());
            let args = [
                "run",
                "--paper",
                "--feed",
                feed,
                "--speed",
                "max",
                "--strategy",
                &strategy,
            ];
            let died = s
                .command(&db, &args)
                .env("KEEL_FAILPOINT", format!("{point}:{n}"))
                .output()
                .expect("run");
            assert!(!died.status.success(), "{point}:{n} did not fire");
            let out = s.run_to_end(&db, feed, &[]);
            assert!(out.status.success(), "{point}:{n}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains("(resumed)"), "{point}:{n}");
            check_same(&db, &expected);
        }
    }
}

fn check_same(db: &Path, expected: &Booked) {
    let got = booked(db);
    let name = db.display();
    assert_eq!(got.fills, expected.fills, "fills of {name}");
    assert_eq!(got.orders, expected.orders, "orders of {name}");
    assert_eq!(got.trades, expected.trades, "trades of {name}");
    assert_eq!(got.positions, expected.positions, "positions of {name}");
    assert_eq!(got.books, expected.books, "books of {name}");
    assert_eq!(got.signals, expected.signals, "signals of {name}");
    let conn = open(db);
    keel_host::paper::audit_ledger(&conn).expect("ledger adds up");
    // The exchange placed each order once.
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM paper_orders"),
        count(
            &conn,
            "SELECT COUNT(*) FROM orders WHERE state <> 'cancelled'"
        )
    );
}

#[test]
fn the_kill_switch_flattens_and_halts_and_the_halt_survives_a_restart() {
    let s = Setup::new();
    let db = s.db("kill.db");
    let feed = "sample:1440";
    // 100 ms a bar: slow enough to act on.
    let mut child = s.spawn_run(&db, feed, "600x", &[]);
    wait_for_control(&db);
    // Wait until it holds a position.
    let started = Instant::now();
    loop {
        let snap = keel_host::control::request(&db, "GET", "/positions", "").expect("positions");
        if snap.1.contains("\"quantity\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never held a position"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pause = s.keel(&db, &["pause", "--reason", "checking"]);
    assert_eq!(text(&pause.stdout).trim(), "trading state REDUCE_ONLY");
    let resume = s.keel(&db, &["resume"]);
    assert_eq!(text(&resume.stdout).trim(), "trading state ACTIVE");

    let kill = s.keel(&db, &["kill", "--reason", "test"]);
    let said = text(&kill.stdout);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    assert!(said.starts_with("killed in "), "{said}");
    assert!(said.contains("1 position(s) closed"), "{said}");
    let conn = open(&db);
    let (latency, detail): (i64, String) = conn
        .query_row(
            "SELECT latency_us, detail FROM risk_events WHERE kind = 'kill'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("kill event");
    assert_eq!(detail, "kill switch: test");
    assert!(latency > 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM positions"), 0);
    let state: String = conn
        .query_row("SELECT state FROM trading_state", [], |r| r.get(0))
        .expect("state");
    assert_eq!(state, "HALTED");
    let status = text(&s.keel(&db, &["status"]).stdout);
    assert!(status.contains("state HALTED (killed)"), "{status}");
    let orders_at_kill = count(&conn, "SELECT COUNT(*) FROM orders");
    // Resuming a killed run is refused.
    let resume = s.keel(&db, &["resume"]);
    assert!(!resume.status.success());
    assert!(
        text(&resume.stderr).contains("this run was killed"),
        "{}",
        text(&resume.stderr)
    );

    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Restarted, it resumes the run, still halted: every signal refused.
    let out = s.run_to_end(&db, feed, &[]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("run 1 (resumed)"), "{stdout}");
    assert!(stdout.contains("trading state HALTED"), "{stdout}");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM orders"), orders_at_kill);
    assert!(
        count(
            &conn,
            "SELECT COUNT(*) FROM signals WHERE reject_reason = 'trading is halted'"
        ) > 0,
        "the strategy kept signalling and was refused"
    );
    keel_host::paper::audit_ledger(&conn).expect("ledger adds up");
}

#[test]
fn a_risk_halt_is_kept_across_a_restart() {
    let s = Setup::new();
    let db = s.db("halt.db");
    let limits = s.dir.path().join("risk_limits.toml");
    std::fs::write(
        &limits,
        "daily_loss_halt_pct = 0.5\nmax_trade_pct = 50\nmax_position_pct = 50\n",
    )
    .expect("write");
    let limits = limits.to_str().expect("utf-8").to_owned();
    let out = s.run_to_end(&db, "sample:300", &["--risk-limits", &limits]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conn = open(&db);
    let detail: String = conn
        .query_row(
            "SELECT detail FROM risk_events WHERE kind = 'halt'",
            [],
            |r| r.get(0),
        )
        .expect("a halt");
    assert!(
        detail.contains("daily loss") && detail.contains("reached the 0.5% limit"),
        "{detail}"
    );
    // A new run on the same database starts halted.
    let out = s.run_to_end(&db, "sample:50", &[]);
    assert!(
        text(&out.stdout).contains("trading state HALTED"),
        "{}",
        text(&out.stdout)
    );
    let accepted = count(
        &conn,
        "SELECT COUNT(*) FROM signals s JOIN books b ON b.id = s.book_id WHERE b.run_id = 2 AND s.decision = 'accepted'",
    );
    assert_eq!(accepted, 0);
}

#[test]
fn malformed_feed_data_stops_the_run_cleanly_with_the_line_at_fault() {
    let s = Setup::new();
    let source = std::fs::read_to_string(data("UNITTEST_BTC-1m.csv")).expect("data");
    let mut lines: Vec<String> = source.lines().take(301).map(str::to_owned).collect();
    // Line 202 of the file: the high below the low.
    let fields: Vec<&str> = lines[201].split(',').collect();
    let broken = format!(
        "{},{},1,2,{},{}",
        fields[0], fields[1], fields[4], fields[5]
    );
    lines[201] = broken;
    let csv = s.dir.path().join("broken.csv");
    std::fs::write(&csv, lines.join("\n")).expect("write");
    let db = s.db("feed.db");
    let feed = format!("replay:{}", csv.display());
    let out = s.run_to_end(&db, &feed, &[]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "a broken feed is a failed run");
    let expected = format!("feed stopped: {}:202: high 1 is below low 2", csv.display());
    assert!(stdout.lines().any(|l| l == expected), "{stdout}");
    let conn = open(&db);
    // 200 bars (lines 2..=201) were booked, and the run is marked stopped.
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM equity_snapshots"), 200);
    let status: String = conn
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .expect("run");
    assert_eq!(status, "stopped");
    keel_host::paper::audit_ledger(&conn).expect("ledger intact");
}

#[test]
fn bad_settings_are_refused_in_one_line() {
    let s = Setup::new();
    let db = s.db("bad.db");
    let limits = s.dir.path().join("risk_limits.toml");
    std::fs::write(&limits, "max_trade_pct = 5\nmax_trade_pc = 3\n").expect("write");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--risk-limits".into(), limits.display().to_string()],
            format!("{}:2: unknown field `max_trade_pc`", limits.display()),
        ),
        (
            vec!["--speed".into(), "fast".into()],
            "--speed fast: expected e.g. 600x or max".into(),
        ),
        (
            vec!["--feed".into(), "kraken:XBT;USD".into()],
            "--feed kraken:XBT;USD: expected a Kraken pair such as kraken:XBTUSD".into(),
        ),
        (
            vec![
                "--feed".into(),
                "kraken:XBTUSD".into(),
                "--interval".into(),
                "7".into(),
            ],
            "--interval 7: Kraken's intervals are 1, 5, 15".into(),
        ),
    ];
    for (extra, expected) in cases {
        let strategy = example("sma-cross").display().to_string();
        let mut args = vec!["run", "--paper", "--strategy", &strategy];
        args.extend(extra.iter().map(String::as_str));
        let out = s.keel(&db, &args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
    let out = s.keel(&db, &["run"]);
    assert!(text(&out.stderr).contains("live trading is not available yet: pass --paper"));
    let out = s.keel(&db, &["status"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no keel run is running on"),
        "{}",
        text(&out.stderr)
    );
}

/// A loopback server answering Kraken's OHLC endpoint from a script, one
/// reply per request (the last one repeated); it records the requests.
pub(crate) fn kraken_server(
    replies: Vec<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
            }
            log.lock().expect("log").push(line.trim().to_owned());
            let body = &replies[i.min(replies.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

pub(crate) fn ohlc(rows: &[i64], last: i64) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|t| {
            let p = 100.0 + (*t % 7) as f64;
            format!(
                r#"[{t},"{p}","{}","{}","{p}","{p}","2.5",9]"#,
                p + 1.0,
                p - 1.0
            )
        })
        .collect();
    format!(
        r#"{{"error":[],"result":{{"XXBTZUSD":[{}],"last":{last}}}}}"#,
        rows.join(",")
    )
}

#[test]
fn live_bars_come_from_krakens_ohlc_endpoint_and_bad_replies_are_survived() {
    let s = Setup::new();
    let t = 1_767_225_600; // seconds, like Kraken
    let m = 60;
    let (port, seen) = kraken_server(vec![
        ohlc(&[t, t + m, t + 2 * m], t + m),
        r#"{"error":[],"result":"#.to_owned(),
        r#"{"error":["EService:Unavailable"]}"#.to_owned(),
        ohlc(&[t + m, t + 2 * m, t + 3 * m, t + 4 * m], t + 3 * m),
        ohlc(&[t + 4 * m, t + 5 * m, t + 6 * m], t + 5 * m),
    ]);
    let db = s.db("kraken.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:XBTUSD",
        &["--kraken-url", &url, "--poll-ms", "20", "--bars", "5"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("5 bars booked"), "{stdout}");
    let conn = open(&db);
    // The bars booked are the closed ones, each once, in order.
    let times: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT time_ms FROM equity_snapshots ORDER BY time_ms")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let expected: Vec<i64> = (1..=5).map(|k| (t + k * m) * 1000).collect();
    assert_eq!(times, expected);
    let warnings: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT detail FROM risk_events WHERE kind = 'feed' ORDER BY id")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(
        warnings,
        [
            "kraken OHLC XBTUSD: malformed reply: EOF while parsing a value at line 1 column 21",
            "kraken OHLC XBTUSD: error: EService:Unavailable",
        ]
    );
    let requests = seen.lock().expect("requests").clone();
    assert!(
        requests[0].starts_with("GET /0/public/OHLC?pair=XBTUSD&interval=1 "),
        "{requests:?}"
    );
    assert!(
        requests[1].contains(&format!("since={}", t + m)),
        "the next poll asks from Kraken's `last`: {requests:?}"
    );
}

#[test]
fn an_unknown_kraken_pair_stops_the_run_with_krakens_reason() {
    let s = Setup::new();
    let (port, _) = kraken_server(vec![
        r#"{"error":["EQuery:Unknown asset pair"]}"#.to_owned(),
    ]);
    let db = s.db("kraken-bad.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:NOPE",
        &["--kraken-url", &url, "--poll-ms", "20"],
    );
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("feed stopped: kraken OHLC NOPE: refused: EQuery:Unknown asset pair"),
        "{stdout}"
    );
}
