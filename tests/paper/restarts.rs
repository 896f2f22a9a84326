//! Paper runs killed and restarted, hot-swapped and halted: each must book
//! exactly what one uninterrupted run books.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    Setup, books_args, count, kill_until_finished, open, snapshots, text, three_books,
    wait_for_control,
};
use crate::support::{data, example};

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
    // 500 bars at 12000x: 5 ms a bar, ~2.5 s a run.
    // Three books: three snapshots a bar.
    let steps = [40i64, 25, 65, 33, 52, 18, 90, 27].map(|bars| 3 * bars);
    let kills = kill_until_finished(&crashy, &steps, 40, || {
        s.spawn_books(&crashy, feed, "12000x", &strategies, &symbol)
    });
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

    // A later run is halted too, and `resume` does not quietly lift a
    // kill: only `--after-kill` does.
    let mut next = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    let resume = s.keel(&db, &["resume"]);
    assert!(!resume.status.success());
    let said = text(&resume.stderr);
    assert!(
        said.contains("halted by the kill switch (kill switch: test)")
            && said.contains("`keel resume --after-kill`"),
        "{said}"
    );
    let (status, body) =
        keel_host::control::request(&db, "POST", "/v1/resume", "from a script").expect("v1");
    assert_eq!(status, 409, "{body}");
    let lifted = s.keel(&db, &["resume", "--after-kill", "--reason", "checked"]);
    assert_eq!(
        text(&lifted.stdout).trim(),
        "trading state ACTIVE",
        "{}",
        text(&lifted.stderr)
    );
    next.kill().expect("SIGKILL");
    next.wait().expect("reap");
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
    // Halted, what is held may still be closed (a halt must not keep a
    // losing position open for ever); nothing new opens (run 2, below).
    let refused = |action: &str| {
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM signals WHERE action {action} AND reject_reason = 'trading is halted'"
            ),
        )
    };
    assert_eq!(refused("= 'close'"), 0, "closes are taken while halted");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM positions"),
        0,
        "the position was closed"
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
