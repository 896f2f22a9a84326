//! Paper trading as an operator runs it: the `keel run --paper` process, a
//! second `keel` process acting on it, SIGKILL in the middle, and the SQLite
//! ledger read back afterwards.

use std::collections::BTreeSet;
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

pub(crate) fn count(conn: &Connection, sql: &str) -> i64 {
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
    /// Book, time, seq, action, decision.
    signals: BTreeSet<(i64, i64, i64, String, String)>,
    /// Each book's cash and equity at each bar's close.
    equity: BTreeSet<(i64, i64, String, String)>,
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
    let equity = {
        let sql = "SELECT book_id, time_ms, cash, equity FROM equity_snapshots";
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    };
    let signals = {
        let sql = "SELECT book_id, time_ms, seq, action, decision FROM signals";
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
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
        equity,
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

/// Every example strategy in a book of its own, killed again and again:
/// each book must come out with the same orders, fills, trades and P&L as
/// in one uninterrupted run. A restarted strategy is replayed through every
/// bar of the run with the portfolio it held at each, so recursive
/// indicators (RSI, ATR) reach the state they had.
#[test]
fn sigkill_at_any_point_loses_no_fill_and_places_no_order_twice() {
    let s = Setup::new();
    let feed = "sample:500";
    let strategies = three_books();
    let symbol = ["--symbol", "ETH/BTC"];
    let clean = s.db("clean.db");
    let out = s
        .spawn_books(&clean, feed, "max", &strategies, &symbol)
        .wait_with_output()
        .expect("keel run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = booked(&clean);
    let conn = open(&clean);
    for book in 1..=3 {
        let fills = count(
            &conn,
            &format!("SELECT COUNT(*) FROM fills WHERE book_id = {book}"),
        );
        assert!(fills >= 10, "book {book} filled only {fills} times");
    }

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
        // Three books: three snapshots a bar.
        let target = snapshots(&crashy) + 3 * step;
        let mut child = s.spawn_books(&crashy, feed, "12000x", &strategies, &symbol);
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
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("output");
            assert!(
                out.status.success(),
                "a run failed on its own: {}",
                text(&out.stderr)
            );
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
    let args = books_args(feed, "max", &strategies, &symbol);
    for (point, nth) in points {
        for n in nth {
            let db = s.db(&format!("{point}-{n}.db"));
            let died = s
                .command(&db, &args)
                .env("KEEL_FAILPOINT", format!("{point}:{n}"))
                .output()
                .expect("run");
            assert!(!died.status.success(), "{point}:{n} did not fire");
            let out = s.keel(&db, &args);
            assert!(out.status.success(), "{point}:{n}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains("(resumed)"), "{point}:{n}");
            check_same(&db, &expected);
        }
    }
}

/// Shadow books too: rsi-reversion and atr-breakout run in shadow beside
/// sma-cross (their paper gate asks for more trades than they can make, so
/// they run to the end), and a run killed at a bar and started again books
/// exactly what one uninterrupted run books, in every book.
#[test]
fn shadows_resumed_after_a_crash_trade_as_in_one_run() {
    let s = Setup::new();
    let feed = "sample:400";
    let config = s.dir.path().join("candidates.toml");
    std::fs::write(
        &config,
        format!(
            "[backtest]\ndata = [\"GOOG={}\"]\nmin_trades = 0\nmin_sharpe = -1000\nmax_drawdown_pct = 100\nmin_profit_factor = 0\n\n[paper]\nslots = 2\nmin_trades = 100000\nmax_drawdown_pct = 100\n",
            data("GOOG-1d.csv").display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let strategies = vec![format!("{},fast=5,slow=20", example("sma-cross").display())];
    let extra = ["--symbol", "ETH/BTC", "--candidates", config];
    let args = books_args(feed, "max", &strategies, &extra);
    let booked_with = |name: &str, failpoint: Option<&str>| {
        let db = s.db(name);
        for candidate in ["rsi-reversion", "atr-breakout"] {
            let file = example(candidate).to_str().expect("utf-8");
            let out = s.keel(&db, &["candidate", "submit", file, "--config", config]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        if let Some(point) = failpoint {
            let died = s
                .command(&db, &args)
                .env("KEEL_FAILPOINT", point)
                .output()
                .expect("run");
            assert!(!died.status.success(), "{point} did not fire");
        }
        let out = s.keel(&db, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).contains("(resumed)"), failpoint.is_some());
        db
    };
    let clean = booked_with("clean.db", None);
    let expected = booked(&clean);
    let conn = open(&clean);
    let shadows = count(
        &conn,
        "SELECT COUNT(*) FROM books WHERE slot LIKE 'candidate-%'",
    );
    assert_eq!(shadows, 2);
    let shadow_fills = count(
        &conn,
        "SELECT COUNT(*) FROM fills f JOIN books b ON b.id = f.book_id WHERE b.slot = 'candidate-2'",
    );
    assert!(
        shadow_fills >= 10,
        "atr-breakout's shadow filled {shadow_fills} times"
    );
    for point in ["after-bar:150", "before-intent:7"] {
        let db = booked_with(&format!("{point}.db"), Some(point));
        check_same(&db, &expected);
    }
}

/// Asserts two sets are equal, naming the first few rows each lacks.
fn same<T: Ord + std::fmt::Debug>(what: &str, got: &BTreeSet<T>, expected: &BTreeSet<T>) {
    let missing: Vec<&T> = expected.difference(got).take(4).collect();
    let unexpected: Vec<&T> = got.difference(expected).take(4).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{what}: {} rows against {}; missing {missing:?}; unexpected {unexpected:?}",
        got.len(),
        expected.len()
    );
}

/// A hot swap to the very version that is running changes nothing, wherever
/// it lands: the version swapped in is replayed through every bar of the run
/// with the portfolio the book held at each, so it takes over in the state
/// the running one had. atr-breakout sizes by ATR, which depends on every
/// bar since the start: a version warmed on the last bars only sizes its
/// next orders differently.
#[test]
fn a_hot_swap_to_the_running_version_trades_as_if_nothing_happened() {
    let s = Setup::new();
    let feed = "sample:500";
    let strategies = vec![example("atr-breakout").display().to_string()];
    let symbol = ["--symbol", "ETH/BTC"];
    let clean = s.db("clean.db");
    let out = s
        .spawn_books(&clean, feed, "max", &strategies, &symbol)
        .wait_with_output()
        .expect("keel run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = booked(&clean);

    let db = s.db("swapped.db");
    // 10 ms a bar: the swap lands well before the end.
    let child = s.spawn_books(&db, feed, "6000x", &strategies, &symbol);
    wait_for_control(&db);
    let started = Instant::now();
    while snapshots(&db) < 150 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run stopped booking bars"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let hash: String = open(&db)
        .query_row("SELECT artifact_hash FROM books WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("book");
    let (status, body) = keel_host::control::request(
        &db,
        "POST",
        "/swap",
        &format!("{hash} tester the same version again"),
    )
    .expect("swap");
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    let out = child.wait_with_output().expect("keel run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = reply["after_ms"].as_i64().expect("after_ms");
    let conn = open(&db);
    let (before, last): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE time_ms <= ?1), MAX(time_ms) FROM equity_snapshots",
            [after],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("snapshots");
    assert!(after < last, "the swap landed after the last bar: {reply}");
    assert_eq!(
        reply["warmed_bars"].as_i64(),
        Some(before),
        "warmed on every bar booked before it took over: {reply}"
    );
    check_same(&db, &expected);
}

fn check_same(db: &Path, expected: &Booked) {
    let got = booked(db);
    let name = db.display();
    same(&format!("fills of {name}"), &got.fills, &expected.fills);
    same(&format!("orders of {name}"), &got.orders, &expected.orders);
    same(&format!("trades of {name}"), &got.trades, &expected.trades);
    same(
        &format!("positions of {name}"),
        &got.positions,
        &expected.positions,
    );
    same(&format!("books of {name}"), &got.books, &expected.books);
    same(
        &format!("signals of {name}"),
        &got.signals,
        &expected.signals,
    );
    same(&format!("equity of {name}"), &got.equity, &expected.equity);
    let conn = open(db);
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
    // Every restart rebuilt each book from the stored bars and fills.
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'history'"
        ),
        0,
        "a replayed history did not rebuild its book"
    );
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
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
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
            "@ETH/USD is not a symbol of this run (fed: BTC/USD)".into(),
        ),
        (
            vec![
                "--strategy".into(),
                format!(
                    "{},@BTC/USD,fast=4,@BTC/USD",
                    example("sma-cross").display()
                ),
            ],
            "@BTC/USD is named twice".into(),
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

/// A loopback HTTP server: each request's line goes to `reply`, whose
/// answer is sent as a JSON body; one request per connection.
fn json_server(mut reply: impl FnMut(&str) -> String + Send + 'static) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
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
            let body = reply(line.trim());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A loopback server answering Kraken's OHLC endpoint from a script, one
/// reply per request (the last one repeated); it records the requests.
pub(crate) fn kraken_server(
    replies: Vec<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let port = json_server(move |line| {
        let mut log = log.lock().expect("log");
        let i = log.len();
        log.push(line.to_owned());
        replies[i.min(replies.len() - 1)].clone()
    });
    (port, seen)
}

/// A loopback server answering Kraken's OHLC endpoint for several pairs,
/// each from its own script (one reply per request of that pair, the last
/// one repeated).
fn kraken_pairs_server(replies: Vec<(&'static str, Vec<String>)>) -> u16 {
    let mut asked = vec![0usize; replies.len()];
    json_server(move |line| {
        match replies
            .iter()
            .position(|(pair, _)| line.contains(&format!("pair={pair}&")))
        {
            Some(p) => {
                let script = &replies[p].1;
                let body = script[asked[p].min(script.len() - 1)].clone();
                asked[p] += 1;
                body
            }
            None => r#"{"error":["EQuery:Unknown asset pair"]}"#.to_owned(),
        }
    })
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
    // An outage is recorded when it begins and when it ends, not per poll.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "kraken OHLC XBTUSD: malformed reply: EOF while parsing a value at line 1 column 21 (polling again every 20 ms)"
    );
    assert!(
        warnings[1].starts_with("kraken OHLC XBTUSD: answering again after 2 failed polls in "),
        "{warnings:?}"
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

#[test]
fn several_kraken_pairs_are_aligned_on_close_time_and_a_late_pair_is_waited_for() {
    let s = Setup::new();
    let t = 1_767_225_600; // seconds, like Kraken
    let m = 60;
    let port = kraken_pairs_server(vec![
        (
            "XBTUSD",
            vec![ohlc(
                &[t, t + m, t + 2 * m, t + 3 * m, t + 4 * m],
                t + 3 * m,
            )],
        ),
        (
            "ETHUSD",
            vec![
                // Nothing closed yet at the first poll: the first close waits
                // for this pair (within the grace period) rather than going
                // without it.
                ohlc(&[t], t),
                // No bar at t + 2m: that close is booked without this pair.
                ohlc(&[t, t + m, t + 3 * m, t + 4 * m], t + 3 * m),
            ],
        ),
    ]);
    let db = s.db("pairs.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:XBTUSD,ETHUSD",
        &["--kraken-url", &url, "--poll-ms", "20", "--bars", "4"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("4 bars booked"), "{stdout}");
    let conn = open(&db);
    let rows: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare("SELECT close_ms, symbol FROM run_bars ORDER BY close_ms, symbol")
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let close = |k: i64| (t + k * m) * 1000;
    let expected: Vec<(i64, String)> = [
        (1, "ETHUSD"),
        (1, "XBTUSD"),
        (2, "ETHUSD"),
        (2, "XBTUSD"),
        (3, "XBTUSD"),
        (4, "ETHUSD"),
        (4, "XBTUSD"),
    ]
    .into_iter()
    .map(|(k, symbol)| (close(k), symbol.to_owned()))
    .collect();
    assert_eq!(rows, expected);
    let feed: String = conn
        .query_row("SELECT feed FROM runs", [], |r| r.get(0))
        .expect("run");
    assert_eq!(feed, "kraken:XBTUSD@1m + kraken:ETHUSD@1m");
}
