//! Live trading as an operator runs it, against a fake Kraken on loopback
//! that checks signatures and nonces as Kraken does and fills market
//! orders at a set price, in parts: `keel run --live --venue kraken`, a
//! kill, a ledger the venue disagrees with, and SIGKILL at every step.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use keel_host::venues::kraken::fake::{FakeKraken, Fault};

use crate::paper::{
    Setup, count, kill_until_finished, open, snapshots, text, until, wait_for_control,
};
use crate::support::example;

const KEY: &str = "live-test-key-7f3a";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

/// A fake Kraken whose XBT/USD market orders trade at 100 (the sample's
/// price level) in two parts.
fn fake() -> FakeKraken {
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake Kraken");
    fake.set_price("XBTUSD", 100.0, 2);
    fake
}

/// `keel run --live` against `fake` (REST and its executions channel) on
/// the sample feed, sma-cross trading XBT/USD.
fn live_args(fake: &FakeKraken, feed: &str, speed: &str) -> Vec<String> {
    let strategy = format!("{},fast=5,slow=20", example("sma-cross").display());
    live_args_with(fake, feed, speed, &strategy)
}

/// `keel run --live` against `fake` with one `--strategy` value.
fn live_args_with(fake: &FakeKraken, feed: &str, speed: &str, strategy: &str) -> Vec<String> {
    let (url, ws) = (fake.base_url(), fake.ws_url());
    [
        "run",
        "--live",
        "--venue",
        "kraken",
        "--i-understand-this-trades-real-money",
        "--kraken-url",
        &url,
        "--kraken-ws-url",
        &ws,
        "--kraken-tier",
        "unlimited",
        "--feed",
        feed,
        "--symbol",
        "XBT/USD",
        "--speed",
        speed,
        "--strategy",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([strategy.to_owned()])
    .collect()
}

fn live(s: &Setup, db: &Path, args: &[String]) -> Command {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = s.command(db, &args);
    cmd.env("KEEL_KRAKEN_KEY", KEY)
        .env("KEEL_KRAKEN_SECRET", SECRET);
    cmd
}

fn run_live(s: &Setup, db: &Path, args: &[String]) -> Output {
    live(s, db, args).output().expect("keel run --live")
}

fn spawn_live(s: &Setup, db: &Path, args: &[String]) -> Child {
    live(s, db, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel run --live")
}

fn strings(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).expect(sql);
    stmt.query_map([], |r| r.get(0))
        .expect(sql)
        .collect::<Result<_, _>>()
        .expect(sql)
}

/// Every trade at the venue is booked once, under its own id, and no
/// order was placed twice.
fn assert_venue_and_ledger_agree(fake: &FakeKraken, db: &Path) {
    let conn = open(db);
    let booked: BTreeSet<String> =
        strings(&conn, "SELECT fill_id FROM fills WHERE fill_id LIKE 'vf-%'")
            .into_iter()
            .collect();
    let traded: BTreeSet<String> = fake
        .trades()
        .into_iter()
        .map(|t| format!("vf-{}", t.0))
        .collect();
    assert_eq!(booked, traded, "every trade at Kraken booked, once");
    let ids: Vec<String> = fake
        .orders()
        .into_iter()
        .filter_map(|o| o.cl_ord_id)
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "an order placed twice");
    let sent = count(
        &conn,
        "SELECT COUNT(*) FROM venue_orders WHERE state NOT IN ('refused')",
    );
    assert_eq!(ids.len() as i64, sent, "every order sent is at Kraken");
    // What Kraken holds of XBT is what the ledger holds.
    let held: f64 = conn
        .query_row(
            "SELECT COALESCE(SUM(CAST(quantity AS REAL)), 0) FROM positions",
            [],
            |r| r.get(0),
        )
        .expect("positions");
    let xbt: f64 = fake.balances()["XXBT"].parse().expect("XXBT");
    assert!((xbt - held).abs() < 1e-9, "Kraken {xbt} XBT, ledger {held}");
}

#[test]
fn a_live_run_trades_at_kraken_and_books_every_trade_once() {
    let s = Setup::new();
    let fake = fake();
    let db = s.db("live.db");
    let out = run_live(&s, &db, &live_args(&fake, "sample:400", "max"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("LIVE run 1"), "{stdout}");
    let conn = open(&db);
    assert_eq!(strings(&conn, "SELECT mode FROM runs"), ["live"]);
    assert!(fake.trades().len() >= 10, "{} trades", fake.trades().len());
    // Two trades an order: booked part by part, the order then filled.
    let parts = count(
        &conn,
        "SELECT COUNT(*) FROM fills GROUP BY client_order_id HAVING COUNT(*) = 2 LIMIT 1",
    );
    assert_eq!(parts, 2);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM orders WHERE state IN ('new', 'open')"
        ),
        0
    );
    assert_venue_and_ledger_agree(&fake, &db);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'reconcile'"
        ),
        0
    );
    // The dead man's switch was armed while trading, disarmed at the end.
    let calls = fake.calls();
    assert!(calls.iter().any(|c| c == "CancelAllOrdersAfter"));
    // The key never reaches the database or the output.
    let bytes = std::fs::read(&db).expect("db");
    assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    assert!(!stdout.contains(KEY) && !text(&out.stderr).contains(KEY));
}

#[test]
fn a_live_run_needs_its_confirmation_and_keys_and_names_what_is_missing() {
    let s = Setup::new();
    let db = s.db("refused.db");
    let fake = fake();
    let args = live_args(&fake, "sample:50", "max");
    let without =
        |flag: &str| -> Vec<String> { args.iter().filter(|a| *a != flag).cloned().collect() };
    let out = run_live(&s, &db, &without("--i-understand-this-trades-real-money"));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("add --i-understand-this-trades-real-money"),
        "{err}"
    );
    let out = s
        .command(&db, &args.iter().map(String::as_str).collect::<Vec<_>>())
        .env_remove("KEEL_KRAKEN_KEY")
        .env_remove("KEEL_KRAKEN_SECRET")
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert!(err.contains("KEEL_KRAKEN_KEY is not set"), "{err}");
    // A keys file others may read is refused; a good one is used.
    let keys = s.db("kraken.keys");
    std::fs::write(&keys, format!("{KEY}\n{SECRET}\n")).expect("keys");
    let with_file: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--kraken-keys".into(), keys.display().to_string()])
        .collect();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = s
        .command(
            &db,
            &with_file.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert!(
        err.contains("others may read it (mode 644); `chmod 600` it"),
        "{err}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = s
        .command(
            &db,
            &with_file.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A key Kraken does not know: refused in one line, the key not shown.
    let out = s
        .command(
            &s.db("badkey.db"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .env("KEEL_KRAKEN_KEY", "not-the-key-9c1e")
        .env("KEEL_KRAKEN_SECRET", SECRET)
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert!(
        !out.status.success() || err.contains("EAPI:Invalid key"),
        "{err}"
    );
    assert!(!err.contains("not-the-key-9c1e"), "{err}");
    for (flag, value, says) in [
        (
            "--kraken-tier",
            "diamond",
            "--kraken-tier \"diamond\": expected starter",
        ),
        (
            "--venue",
            "binance",
            "--venue \"binance\": the live venue is kraken",
        ),
    ] {
        let mut bad = args.clone();
        let at = bad.iter().position(|a| a == flag).expect(flag);
        bad[at + 1] = value.into();
        let out = run_live(&s, &db, &bad);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// Every fault Kraken can answer an order with, in one live run: a 502
/// after placing it and no answer at all (both maybe placed: looked up by
/// client order id, never placed twice, their trades booked); a refusal
/// for funds and for arguments (rejected in the ledger with Kraken's
/// reason, a risk event naming the order); a stale nonce and the order
/// rate limit (nothing happened: tried again, placed once).
#[test]
fn every_fault_kraken_answers_an_order_with_leaves_the_venue_and_the_ledger_agreeing() {
    let s = Setup::new();
    let fake = fake();
    fake.script_method(
        "AddOrder",
        [
            Fault::DoneThen502,
            Fault::DoneThenSilent(Duration::from_millis(1500)),
            Fault::Error("EOrder:Insufficient funds".into()),
            Fault::Error("EAPI:Invalid nonce".into()),
            Fault::Error("EOrder:Rate limit exceeded".into()),
            Fault::Error("EGeneral:Invalid arguments".into()),
        ],
    );
    let db = s.db("faults.db");
    let args: Vec<String> = live_args(&fake, "sample:400", "max")
        .into_iter()
        .chain(["--kraken-timeout-ms".into(), "500".into()])
        .collect();
    let out = run_live(&s, &db, &args);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("outcome unknown"),
        "the operator is told: {err}"
    );
    assert_venue_and_ledger_agree(&fake, &db);
    let conn = open(&db);
    let rejected = strings(
        &conn,
        "SELECT client_order_id || ' ' || reason FROM orders WHERE state = 'rejected' ORDER BY created_ms",
    );
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected[0].ends_with("Kraken: refused: EOrder:Insufficient funds"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].ends_with("Kraken: refused: EGeneral:Invalid arguments"),
        "{rejected:?}"
    );
    let events = strings(
        &conn,
        "SELECT detail FROM risk_events WHERE kind = 'order-rejected'",
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].contains("EOrder:Insufficient funds"),
        "{events:?}"
    );
    // The first two orders were answered badly and still filled, once.
    let first_two = strings(
        &conn,
        "SELECT state FROM orders ORDER BY created_ms, client_order_id LIMIT 2",
    );
    assert_eq!(first_two, ["filled", "filled"]);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM venue_orders WHERE state NOT IN ('ended', 'refused')"
        ),
        0
    );
}

/// A position opened with a stop-loss has that stop resting at Kraken for
/// its whole size, so it protects the position while keel is down (the
/// dead man's switch is off meanwhile: it would cancel the stop); when it
/// triggers, its trade is booked like any other at the next start.
#[test]
fn a_stop_loss_rests_at_kraken_through_a_crash_and_its_trade_is_booked() {
    stop_through_a_crash(None);
}

/// Killed right after the stop is placed, before the close's signals are
/// on the record: the restart signals that close again, and the stop,
/// an order of the engine's own made at that close, must stay in flight
/// (it was dropped with the close's intents, and its trade went unbooked).
#[test]
fn a_stop_placed_just_before_a_crash_is_followed_after_the_restart() {
    stop_through_a_crash(Some("after-stop:1"));
}

/// A position with a stop resting at Kraken; keel is SIGKILLed (by the
/// test once the stop rests, or at `failpoint`); the price falls through
/// the stop while keel is down; the restart books the stop's trade.
fn stop_through_a_crash(failpoint: Option<&str>) {
    let s = Setup::new();
    let fake = fake();
    let db = s.db("stops.db");
    let strategy = format!(
        "{},oversold=45,overbought=55,stop_loss=0.02,take_profit=0.5",
        example("rsi-reversion").display()
    );
    let args = live_args_with(&fake, "sample:5000", "300x", &strategy);
    let resting = |fake: &FakeKraken| {
        fake.orders()
            .into_iter()
            .find(|o| o.ordertype == "stop-loss" && o.status == "open")
    };
    if let Some(point) = failpoint {
        let mut cmd = live(&s, &db, &args);
        let out = cmd
            .env("KEEL_FAILPOINT", point)
            .output()
            .expect("keel run --live");
        assert!(!out.status.success(), "it ran to the end past {point}");
    } else {
        let mut child = spawn_live(&s, &db, &args);
        until("no stop at Kraken", Duration::from_secs(120), || {
            resting(&fake).is_some()
        });
        // Off before the stop was placed; the status says so once published.
        until(
            "status never said the switch is off",
            Duration::from_secs(10),
            || {
                text(&s.keel(&db, &["status"]).stdout)
                    .contains("dead man's switch off while stop-losses rest at Kraken")
            },
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let stop = resting(&fake).expect("the stop outlives keel");
    let conn = open(&db);
    let held: String = conn
        .query_row("SELECT quantity FROM positions", [], |r| r.get(0))
        .expect("a position");
    assert_eq!(stop.volume.parse::<f64>().ok(), held.parse::<f64>().ok());
    let trigger: f64 = stop
        .price
        .as_deref()
        .and_then(|p| p.parse().ok())
        .expect("trigger");
    assert!(trigger > 90.0 && trigger < 100.0, "{trigger}");
    // The market falls through it while keel is down.
    fake.set_price("XBTUSD", 90.0, 1);
    assert_eq!(resting(&fake), None, "it triggered");
    let mut child = spawn_live(&s, &db, &args);
    let stop_id = strings(
        &conn,
        "SELECT client_order_id FROM orders WHERE trigger_price IS NOT NULL",
    );
    until(
        "the stop's trade was never booked",
        Duration::from_secs(60),
        || {
            let state: String = conn
                .query_row(
                    "SELECT state FROM orders WHERE client_order_id = ?1",
                    [&stop_id[0]],
                    |r| r.get(0),
                )
                .expect("stop order");
            state == "filled"
        },
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let sold: Vec<String> = strings(
        &conn,
        &format!(
            "SELECT price || ' ' || quantity FROM fills WHERE client_order_id = '{}'",
            stop_id[0]
        ),
    );
    assert_eq!(sold, [format!("90 {held}")]);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'reconcile'"
        ),
        0,
        "a trade of our own stop is no mismatch"
    );
}

/// Kraken holds more than the ledger can explain after a restart: the
/// account becomes reduce-only with a risk event naming the asset, and
/// the ledger is left as it was.
#[test]
fn a_balance_the_ledger_cannot_explain_makes_the_account_reduce_only() {
    let s = Setup::new();
    let fake = fake();
    let db = s.db("mismatch.db");
    let args = live_args(&fake, "sample:3000", "2000x");
    let mut child = spawn_live(&s, &db, &args);
    until("no bars booked", Duration::from_secs(120), || {
        snapshots(&db) >= 200
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let fills_before = count(&open(&db), "SELECT COUNT(*) FROM fills");
    // Someone bought XBT by hand.
    let xbt: f64 = fake.balances()["XXBT"].parse().expect("XXBT");
    fake.set_balance("XXBT", &format!("{:.10}", xbt + 0.5));
    let mut child = spawn_live(&s, &db, &live_args(&fake, "sample:3000", "2000x"));
    wait_for_control(&db);
    let conn = open(&db);
    until("no reconcile event", Duration::from_secs(60), || {
        count(
            &conn,
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'reconcile'",
        ) > 0
    });
    let event = strings(
        &conn,
        "SELECT detail FROM risk_events WHERE kind = 'reconcile'",
    );
    assert!(event[0].starts_with("XXBT: Kraken holds"), "{event:?}");
    let state = strings(&conn, "SELECT state FROM trading_state");
    assert_eq!(state, ["REDUCE_ONLY"]);
    let said = text(&s.keel(&db, &["status"]).stdout);
    assert!(
        said.contains("venue kraken: NOT reconciled (XXBT: Kraken holds"),
        "{said}"
    );
    let status = s.keel(&db, &["status", "--json"]);
    let snap: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(snap["venue"]["reconciled"], false, "{snap}");
    assert!(
        snap["venue"]["problem"]
            .as_str()
            .unwrap_or("")
            .starts_with("XXBT"),
        "{snap}"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(count(&conn, "SELECT COUNT(*) FROM fills") >= fills_before);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM fills WHERE fill_id NOT LIKE 'vf-%'"
        ),
        0,
        "nothing booked to make the ledger agree"
    );
}

/// `keel kill` on a live run: Kraken cancels everything, every position is
/// sold at the venue and booked from its trades, and the reply says what
/// the venue confirmed.
#[test]
fn the_kill_switch_cancels_everything_at_kraken_and_sells_what_is_held() {
    let s = Setup::new();
    let fake = fake();
    let db = s.db("kill.db");
    let mut child = spawn_live(&s, &db, &live_args(&fake, "sample:5000", "1000x"));
    wait_for_control(&db);
    until("never held anything", Duration::from_secs(120), || {
        count(
            &open(&db),
            "SELECT COUNT(*) FROM positions WHERE CAST(quantity AS REAL) > 0",
        ) > 0
    });
    let out = s.keel(&db, &["kill", "--reason", "test"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("venue: Kraken cancelled"), "{said}");
    assert!(
        said.contains("1 of 1 positions closed by market orders"),
        "{said}"
    );
    assert!(fake.calls().iter().any(|c| c == "CancelAll"));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let conn = open(&db);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM positions WHERE CAST(quantity AS REAL) > 0"
        ),
        0
    );
    let latency: Vec<String> = strings(
        &conn,
        "SELECT CAST(latency_us AS TEXT) FROM risk_events WHERE kind = 'kill-venue'",
    );
    assert_eq!(latency.len(), 1, "{latency:?}");
    assert_venue_and_ledger_agree(&fake, &db);
}

/// What must come out the same however often a live run died: orders and
/// their states, fills (price, quantity), closed trades, the books, and
/// each close's equity. Times of fills are Kraken's clock, so left out.
#[derive(Debug, PartialEq)]
struct Books {
    orders: BTreeSet<(String, String, String)>,
    fills: Vec<(String, String, String, String)>,
    trades: Vec<(String, String, String)>,
    books: BTreeSet<(String, String, String)>,
    equity: BTreeSet<(String, String, String)>,
}

fn books(db: &Path) -> Books {
    let conn = open(db);
    let rows = |sql: &str, n: usize| -> Vec<Vec<String>> {
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect()
        })
        .expect(sql)
        .collect::<Result<_, _>>()
        .expect(sql)
    };
    Books {
        orders: rows("SELECT client_order_id, action, state FROM orders", 3)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect(),
        fills: rows(
            "SELECT client_order_id, action, price, quantity FROM fills ORDER BY client_order_id, fill_id",
            4,
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()))
        .collect(),
        trades: rows("SELECT side, quantity, pnl_gross FROM trades ORDER BY fill_id", 3)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect(),
        books: rows("SELECT cash, realized, fees FROM books", 3)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect(),
        equity: rows("SELECT book_id, time_ms, equity FROM equity_snapshots", 3)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
            .collect(),
    }
}

/// A run's name with its risk events, to say what happened to it.
fn events(label: &str, db: &Path) -> String {
    let events = strings(
        &open(db),
        "SELECT kind || ': ' || detail FROM risk_events ORDER BY id",
    );
    format!("{label} (risk events: {events:?})")
}

/// Asserts two runs booked the same, naming the first rows that differ.
fn same_books(got: &Books, expected: &Books, label: &str) {
    fn diff<T: std::fmt::Debug + PartialEq>(what: &str, got: &[T], want: &[T], label: &str) {
        if got == want {
            return;
        }
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{label}: {what} differ at row {at} of {} (expected {}): got {:?}, expected {:?}",
            got.len(),
            want.len(),
            got.get(at..(at + 3).min(got.len())),
            want.get(at..(at + 3).min(want.len()))
        );
    }
    let v = |s: &BTreeSet<(String, String, String)>| s.iter().cloned().collect::<Vec<_>>();
    diff("orders", &v(&got.orders), &v(&expected.orders), label);
    diff("fills", &got.fills, &expected.fills, label);
    diff("trades", &got.trades, &expected.trades, label);
    diff("books", &v(&got.books), &v(&expected.books), label);
    diff("equity", &v(&got.equity), &v(&expected.equity), label);
}

/// SIGKILL at random moments (50 times) and at every failpoint — between
/// the intent and the request, between the request and Kraken's answer,
/// between the answer and the ledger — and restarted each time: no order
/// is placed twice at Kraken, no trade is missing from the ledger, and the
/// books equal those of one uninterrupted run.
#[test]
fn sigkill_at_any_point_of_a_live_run_places_nothing_twice_and_loses_no_trade() {
    let s = Setup::new();
    let feed = "sample:500";
    let clean_fake = fake();
    let clean = s.db("clean.db");
    let out = run_live(&s, &clean, &live_args(&clean_fake, feed, "max"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = books(&clean);
    assert!(expected.fills.len() >= 10, "{} fills", expected.fills.len());

    let crashy_fake = fake();
    let crashy = s.db("crashy.db");
    let args = live_args(&crashy_fake, feed, "12000x");
    let steps = [9i64, 4, 14, 6, 11, 3, 17, 5];
    let kills = kill_until_finished(&crashy, &steps, 120, || spawn_live(&s, &crashy, &args));
    assert!(kills >= 50, "only {kills} kills landed mid-run");
    same_books(&books(&crashy), &expected, &events("SIGKILLed", &crashy));
    assert_venue_and_ledger_agree(&crashy_fake, &crashy);

    // And at each failpoint: the process SIGKILLs itself there, restarts
    // and finishes.
    let points = [
        ("venue-before-send", 3),
        ("venue-after-send", 5),
        ("after-send", 4),
        ("before-intent", 6),
        ("after-intent", 2),
        ("after-exchange-fill", 120),
        ("after-bar", 210),
    ];
    for (point, n) in points {
        let venue = fake();
        let args = live_args(&venue, feed, "max");
        let db = s.db(&format!("{point}.db"));
        let died = live(&s, &db, &args)
            .env("KEEL_FAILPOINT", format!("{point}:{n}"))
            .output()
            .expect("run");
        assert!(!died.status.success(), "{point}:{n} did not fire");
        let out = run_live(&s, &db, &args);
        assert!(out.status.success(), "{point}:{n}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("(resumed)"), "{point}:{n}");
        same_books(
            &books(&db),
            &expected,
            &events(&format!("{point}:{n}"), &db),
        );
        assert_venue_and_ledger_agree(&venue, &db);
    }
}
