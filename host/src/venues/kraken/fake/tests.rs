use super::super::client::{Client, Credentials};
use super::super::limits::Tier;
use super::super::reply::Failure;
use super::*;

const KEY: &str = "test-api-key";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

fn db(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("keel.db");
    let conn = rusqlite::Connection::open(&path).expect("db");
    conn.execute_batch(include_str!(
        "../../../../../migrations/0008_venue_nonces.sql"
    ))
    .expect("schema");
    path
}

fn client(fake: &FakeKraken, db: &std::path::Path, secret: &str, clock_ms: i64) -> Client {
    Client::new(
        &fake.base_url(),
        Credentials::new(KEY, secret).expect("credentials"),
        Tier::Pro,
        db,
        Box::new(move || clock_ms),
    )
    .expect("client")
    .with_timeout(Duration::from_millis(500))
    .expect("timeout")
}

fn order(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("pair", "XBTUSD".into()),
        ("type", "buy".into()),
        ("ordertype", "limit".into()),
        ("price", "37500".into()),
        ("volume", "0.01".into()),
        ("cl_ord_id", id.into()),
    ]
}

#[test]
fn signed_calls_pass_krakens_checks_and_a_bad_key_or_stale_nonce_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db(dir.path());
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    let mut c = client(&fake, &db, SECRET, 1_000_000);
    let balance = c.private("Balance", &[]).expect("balance");
    assert_eq!(balance["ZUSD"], "10000.0000");
    let pairs = c
        .public("AssetPairs", &[("pair", "XBTUSD")])
        .expect("pairs");
    assert!(
        super::super::pairs::parse(&pairs)
            .expect("parse")
            .contains_key("XXBTZUSD")
    );

    // Another private key: refused by signature.
    let other = "c2VjcmV0LXRoYXQtaXMtbm90LWtyYWtlbnM=";
    let mut wrong = client(&fake, &db, other, 2_000_000);
    let e = wrong.private("Balance", &[]).expect_err("bad signature");
    assert_eq!(e, Failure::Auth("EAPI:Invalid signature".into()));
    assert!(!format!("{e}{e:?}").contains(KEY));

    // A second keel on its own database, its clock behind: Kraken
    // refuses its nonces (tried twice), and nothing happens.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut behind = client(&fake, &self::db(elsewhere.path()), SECRET, 10);
    assert!(matches!(
        behind.private("Balance", &[]),
        Err(Failure::Nonce(_))
    ));
    // The same database after a restart, its clock behind too: the
    // lease keeps it above every nonce it used.
    let mut restarted = client(&fake, &db, SECRET, 10);
    restarted.private("Balance", &[]).expect("above the lease");
    assert_eq!(fake.calls(), ["Balance", "Balance"]);
}

#[test]
fn an_order_answered_by_a_502_or_never_is_unknown_and_found_by_its_client_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db(dir.path());
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    let mut c = client(&fake, &db, SECRET, 5_000_000);
    fake.script([
        Fault::DoneThen502,
        Fault::DoneThenSilent(Duration::from_secs(2)),
        Fault::Error("EOrder:Insufficient funds".into()),
    ]);
    assert_eq!(
        c.private("AddOrder", &order("k1-1")),
        Err(Failure::Unknown("HTTP 502".into()))
    );
    let e = c.private("AddOrder", &order("k1-2")).expect_err("silent");
    assert_eq!(e, Failure::Unknown("no reply in time".into()));
    let e = c.private("AddOrder", &order("k1-3")).expect_err("refused");
    assert_eq!(e, Failure::Refused("EOrder:Insufficient funds".into()));
    // Both unknown ones were placed; the refused one was not.
    let open = c.private("OpenOrders", &[]).expect("open orders");
    let ids: Vec<&str> = open["open"]
        .as_object()
        .expect("open")
        .values()
        .filter_map(|o| o["cl_ord_id"].as_str())
        .collect();
    assert_eq!(ids, ["k1-1", "k1-2"]);
    // Sent again blindly, Kraken would refuse the copy.
    let e = c
        .private("AddOrder", &order("k1-1"))
        .expect_err("duplicate");
    assert_eq!(e, Failure::Refused("EOrder:Duplicate order".into()));
    let cancelled = c.private("CancelAll", &[]).expect("cancel all");
    assert_eq!(cancelled["count"], 2);
    assert!(fake.orders().iter().all(|o| o.status == "canceled"));
}

#[test]
fn the_dead_mans_switch_cancels_every_order_unless_it_is_refreshed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db(dir.path());
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    let mut c = client(&fake, &db, SECRET, 9_000_000);
    c.private("AddOrder", &order("k9-1")).expect("placed");
    // Seconds apart, so a busy machine cannot blur them.
    c.dead_man(2).expect("armed");
    std::thread::sleep(Duration::from_millis(1000));
    c.dead_man(2).expect("refreshed in time");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(fake.orders()[0].status, "open", "refreshed: still open");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fake.orders()[0].status,
        "canceled",
        "keel went quiet: cancelled"
    );
    // Disarmed, nothing happens however long keel is quiet.
    c.private("AddOrder", &order("k9-2")).expect("placed");
    c.dead_man(1).expect("armed");
    c.dead_man(0).expect("disarmed");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fake.orders()[1].status, "open");
    let open = c.open_by_client_id().expect("open orders");
    assert_eq!(open.keys().collect::<Vec<_>>(), ["k9-2"]);
    assert_eq!(open["k9-2"].volume, "0.01");
}

#[test]
fn fills_come_back_in_order_after_a_cursor_partial_ones_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db(dir.path());
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    let mut c = client(&fake, &db, SECRET, 11_000_000);
    c.private("AddOrder", &order("k11-1")).expect("placed");
    c.private("AddOrder", &order("k11-2")).expect("placed");
    let first = fake.fill("k11-1", 0.004, 37_500.0, 100.0).expect("partial");
    fake.fill("k11-1", 0.006, 37_510.0, 101.0)
        .expect("the rest");
    fake.fill("k11-2", 0.01, 37_490.0, 102.0).expect("whole");
    let fills = c.fills_after(None).expect("fills");
    let ids: Vec<(&str, &str)> = fills
        .iter()
        .map(|f| (f.client_order_id.as_str(), f.volume.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("k11-1", "0.00400000"),
            ("k11-1", "0.00600000"),
            ("k11-2", "0.01000000")
        ]
    );
    assert_eq!(fills[0].trade_id, first);
    assert_eq!(fills[1].price, "37510.0");
    let after = c.fills_after(Some(&first)).expect("after the cursor");
    assert_eq!(after.len(), 2);
    assert!(
        c.open_by_client_id().expect("open").is_empty(),
        "both executed"
    );
}

#[test]
fn a_rate_limit_refusal_fills_the_model_so_the_next_call_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = db(dir.path());
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    let mut c = client(&fake, &db, SECRET, 7_000_000);
    fake.script([Fault::Error("EAPI:Rate limit exceeded".into())]);
    assert!(matches!(
        c.private("Balance", &[]),
        Err(Failure::RestRateLimit(_))
    ));
    assert!(!c.limits().rest_wait("Balance", 7_000_000).is_zero());
}
