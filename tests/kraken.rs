//! The Kraken venue as an operator rehearses it: `keel __fake-kraken`
//! serves a Kraken on loopback that checks signatures and nonces as Kraken
//! does, and Keel's client talks to it with a key pair.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use keel_host::venues::kraken::client::{Client, Credentials};
use keel_host::venues::kraken::limits::Tier;
use keel_host::venues::kraken::reply::Failure;

const KEY: &str = "rehearsal-key";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

#[test]
fn the_fake_kraken_runs_by_hand_and_answers_only_a_correctly_signed_key() {
    let mut fake = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["__fake-kraken", "--port", "0"])
        .env("KEEL_KRAKEN_KEY", KEY)
        .env("KEEL_KRAKEN_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel __fake-kraken");
    let mut line = String::new();
    BufReader::new(fake.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its address");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    keel_host::store::Store::open(&db).expect("a keel database");
    let client = |secret: &str| {
        Client::new(
            &url,
            Credentials::new(KEY, secret).expect("credentials"),
            Tier::Starter,
            &db,
            Box::new(keel_host::store::now_ms),
        )
        .expect("client")
    };
    let balance = client(SECRET).private("Balance", &[]).expect("balance");
    assert_eq!(balance["ZUSD"], "10000.0000");
    let wrong = client("d3Jvbmcgc2VjcmV0").private("Balance", &[]);
    assert_eq!(wrong, Err(Failure::Auth("EAPI:Invalid signature".into())));
    fake.kill().expect("stop");
    fake.wait().expect("reap");

    // Without a key pair it says which variable is missing, in one line.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["__fake-kraken"])
        .env_remove("KEEL_KRAKEN_KEY")
        .env_remove("KEEL_KRAKEN_SECRET")
        .output()
        .expect("keel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KEEL_KRAKEN_KEY is not set"), "{stderr}");
}
