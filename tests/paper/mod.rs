//! Paper trading as an operator runs it: the `keel run --paper` process, a
//! second `keel` process acting on it, SIGKILL in the middle, and the SQLite
//! ledger read back afterwards. Restarts, crashes and halts are in
//! `restarts`, live bars from Kraken in `kraken`.

mod kraken;
mod restarts;

pub(crate) use kraken::{kraken_server, ohlc};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{data, example};

pub(crate) struct Setup {
    dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path().join("cache");
        Setup { dir, cache }
    }

    pub(crate) fn db(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn command(&self, db: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("--db")
            .arg(db)
            .args(args)
            .env("KEEL_CACHE_DIR", &self.cache)
            .env_remove("KEEL_LOG");
        cmd
    }

    pub(crate) fn keel(&self, db: &Path, args: &[&str]) -> Output {
        self.command(db, args).output().expect("run keel")
    }

    /// `keel run --paper` with sma-cross (fast 5, slow 20), in the background.
    pub(crate) fn spawn_run(&self, db: &Path, feed: &str, speed: &str, extra: &[&str]) -> Child {
        let strategy = format!("{},fast=5,slow=20", example("sma-cross").display());
        self.spawn_books(db, feed, speed, &[strategy], extra)
    }

    /// `keel run --paper` with one book per `--strategy` value, in the
    /// background.
    fn spawn_books(
        &self,
        db: &Path,
        feed: &str,
        speed: &str,
        strategies: &[String],
        extra: &[&str],
    ) -> Child {
        self.command(db, &books_args(feed, speed, strategies, extra))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keel run")
    }

    pub(crate) fn run_to_end(&self, db: &Path, feed: &str, extra: &[&str]) -> Output {
        self.spawn_run(db, feed, "max", extra)
            .wait_with_output()
            .expect("keel run")
    }
}

/// The arguments of a `keel run --paper` with one book per strategy.
fn books_args<'a>(
    feed: &'a str,
    speed: &'a str,
    strategies: &'a [String],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["run", "--paper", "--feed", feed, "--speed", speed];
    for strategy in strategies {
        args.extend(["--strategy", strategy.as_str()]);
    }
    args.extend_from_slice(extra);
    args
}

/// The three example strategies, one book each, set to trade often on the
/// sample feed: sma-cross (fast 5, slow 20); rsi-reversion on Wilder's RSI
/// (recursive: its value depends on every bar since the start) with lines
/// close together and shorts; atr-breakout (ATR, also recursive) with its
/// defaults. atr-breakout declares three symbols, but a paper run binds one
/// (`--symbol`, here its first, ETH/BTC) and it trades what has bars.
fn three_books() -> Vec<String> {
    vec![
        format!("{},fast=5,slow=20", example("sma-cross").display()),
        format!(
            "{},oversold=45,overbought=55,allow_short=true",
            example("rsi-reversion").display()
        ),
        example("atr-breakout").display().to_string(),
    ]
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until the run's control API is up.
pub(crate) fn wait_for_control(db: &Path) {
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

pub(crate) fn open(db: &Path) -> Connection {
    Connection::open(db).expect("open db")
}

/// Equity snapshots booked in `db` so far (one per book and bar); 0 while
/// it does not exist yet.
pub(crate) fn snapshots(db: &Path) -> i64 {
    let Ok(conn) = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM equity_snapshots", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Waits until `done`, for at most `within`; `what` names what never came.
pub(crate) fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts a run on `db` again and again (`spawn`), SIGKILLing each once the
/// database has booked a varied number more equity snapshots (`steps`,
/// cycled), a varied few milliseconds into the next bar, until a run
/// finishes on its own — which must succeed — or `tries` were started.
/// Progress is read from the database, not the clock, so a busy machine
/// cannot let a run finish before the kills land. Returns the kills; the
/// run must have finished.
pub(crate) fn kill_until_finished(
    db: &Path,
    steps: &[i64],
    tries: usize,
    mut spawn: impl FnMut() -> Child,
) -> usize {
    // Every run before the one that finishes was killed: `i` kills.
    for (i, step) in steps.iter().cycle().take(tries).enumerate() {
        let target = snapshots(db) + step;
        let mut child = spawn();
        let started = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if snapshots(db) >= target {
                std::thread::sleep(Duration::from_millis(i as u64 % 5));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the run stopped booking bars"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("output");
            assert!(
                out.status.success(),
                "a run failed on its own: {}",
                text(&out.stderr)
            );
            return i;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Killed after the run had ended (its end booked, the process on
        // its way out): it finished, and another start would begin a new
        // run over the same bars.
        if run_ended(db) {
            return i + 1;
        }
    }
    panic!("the run never finished");
}

/// Whether the database's last run has ended: not one a start resumes
/// (running when killed, or interrupted).
fn run_ended(db: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    conn.query_row(
        "SELECT status NOT IN ('running', 'interrupted') FROM runs ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .unwrap_or(false)
}

pub(crate) fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn a_paper_run_books_every_step_and_answers_a_second_terminal() {
    let s = Setup::new();
    let db = s.db("paper.db");
    // 600 one-minute bars at 3000x: about 12 s of replay, for the seven
    // commands asked of it while it runs (each a second or more on a
    // loaded machine).
    let child = s.spawn_run(&db, "sample:600", "3000x", &[]);
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
        text(&second.stderr).contains(&format!(
            "keel run (pid {}) is trading on this database",
            child.id()
        )),
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
    let listed = text(&s.keel(&db, &["candidates"]).stdout);
    assert!(
        listed.starts_with(&format!("run 1 is live on {}", db.display())),
        "{listed}"
    );

    let out = child.wait_with_output().expect("run");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("run 1 (new): 600 bars booked"), "{stdout}");
    assert!(
        !keel_host::control::control_file(&db).exists(),
        "control file removed"
    );

    // The record stays readable once the run is over, and says it is one.
    let said = text(&s.keel(&db, &["status"]).stdout);
    assert!(
        said.starts_with(&format!(
            "no run is live on {}: the record of paper run 1, finished at ",
            db.display()
        )),
        "{said}"
    );
    assert!(
        said.contains("run 1  sample:600  state ACTIVE  bars 600"),
        "{said}"
    );
    assert!(said.contains("sma-cross#1"), "{said}");
    let json: serde_json::Value =
        serde_json::from_slice(&s.keel(&db, &["status", "--json"]).stdout).expect("json");
    assert_eq!(
        (json["live"].clone(), json["record"]["status"].clone()),
        (false.into(), "finished".into())
    );
    assert_eq!(json["books"][0]["start_cash"], 10_000.0);
    let trades = s.keel(&db, &["trades", "--json"]);
    let trades: Vec<serde_json::Value> = serde_json::from_slice(&trades.stdout).expect("json");
    let conn = open(&db);
    assert_eq!(
        trades.len() as i64,
        count(&conn, "SELECT COUNT(*) FROM trades").min(50)
    );
    let held = text(&s.keel(&db, &["positions"]).stdout);
    assert!(held.contains("the record of paper run 1"), "{held}");
    let listed = s.keel(&db, &["candidates"]);
    let said = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        said.starts_with(&format!(
            "no run is live on {}: the record of paper run 1, finished",
            db.display()
        )),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&s.keel(&db, &["candidates", "--json"]).stdout).expect("json");
    assert_eq!(
        (json["live"].clone(), json["run_id"].clone()),
        (false.into(), 1.into())
    );
    assert_eq!(
        json["candidates"].as_array().map(Vec::len),
        Some(count(&conn, "SELECT COUNT(*) FROM candidates") as usize),
        "{json}"
    );
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
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
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
    keel_host::engine::audit_ledger(&conn).expect("ledger intact");
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
            "--feed kraken:XBT;USD: expected Kraken pairs such as kraken:XBTUSD,ETHUSD".into(),
        ),
        (
            vec![
                "--feed".into(),
                "kraken:XBTUSD,ETHUSD".into(),
                "--feed".into(),
                "kraken:XBTUSD".into(),
            ],
            "--feed kraken:XBTUSD: symbol \"XBTUSD\" is fed twice".into(),
        ),
        (
            vec![
                "--feed".into(),
                format!(
                    "kraken:{}",
                    (0..300)
                        .map(|i| format!("P{i}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ],
            "--feed: a run takes at most 256 symbols, 300 given".into(),
        ),
        (
            vec![
                "--feed".into(),
                "kraken:XBTUSD".into(),
                "--feed".into(),
                "sample".into(),
            ],
            "--feed sample: with several feeds, each names its symbol (replay:SYMBOL=FILE)".into(),
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
        (
            vec![
                "--strategy".into(),
                format!("{},@ETH/USD", example("sma-cross").display()),
            ],
            "@ETH/USD is not a symbol of this run (fed: SAMPLE/USD)".into(),
        ),
        (
            vec![
                "--strategy".into(),
                format!(
                    "{},@SAMPLE/USD,fast=4,@SAMPLE/USD",
                    example("sma-cross").display()
                ),
            ],
            "@SAMPLE/USD is named twice".into(),
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
    assert!(
        text(&out.stderr).contains("pass --paper, or --live --venue kraken to trade real money")
    );
    let out = s.keel(&db, &["status"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no such database") || err.contains("no run yet"),
        "{err}"
    );
}

#[test]
fn the_report_of_a_run_killed_midway_says_so() {
    let s = Setup::new();
    let db = s.db("crashed.db");
    let mut child = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    until("bars booked", Duration::from_secs(60), || {
        snapshots(&db) > 10
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let out_file = s.dir.path().join("crashed.html");
    let out = s.keel(
        &db,
        &["report", "run", "--out", out_file.to_str().expect("utf-8")],
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        said.contains("paper run 1 (ended without a word: killed or crashed;"),
        "{said}"
    );
    let html = std::fs::read_to_string(&out_file).expect("report");
    assert!(
        html.contains("ended without a word"),
        "the page says it too"
    );
}
