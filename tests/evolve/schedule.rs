//! Nights started by a schedule or by hand: a night that fails before it
//! gets going is on the record, once, with its reason, and `keel run`'s
//! log says why; two nights never run at once on one database.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::LENIENT_CANDIDATES;
use super::llm::{evolve_toml, night_command, night_in, nothing, prepared};
use crate::fakes::llm::{FakeLlm, Reply};
use crate::paper::text;

/// The key variable of these nights: never set.
const UNSET_KEY_VAR: &str = "KEEL_TEST_EVOLVE_KEY_NEVER_SET";

/// Every night: status and note.
fn nights(db: &std::path::Path) -> Vec<(String, String)> {
    let Ok(conn) = Connection::open(db) else {
        return Vec::new();
    };
    conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
    conn.prepare("SELECT status, note FROM evolve_nights ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default()
}

#[test]
fn a_scheduled_night_whose_key_is_missing_fails_once_on_the_record_and_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    std::fs::write(
        dir.path().join("evolve.toml"),
        format!(
            "[schedule]\nat = \"{}\"\n\n[provider]\nkind = \"anthropic\"\nmodel = \"m\"\nkey_env = \"{UNSET_KEY_VAR}\"\n\n[prices.m]\ninput_usd_per_mtok = 3\noutput_usd_per_mtok = 15\n",
            super::two_minutes_ago()
        ),
    )
    .expect("write");
    let mut run = super::evolving_run(dir.path(), &db)
        .env_remove(UNSET_KEY_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel run");
    let started = Instant::now();
    while nights(&db).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no night on record"
        );
        if let Some(done) = run.try_wait().expect("try_wait") {
            panic!("keel run ended: {done}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The schedule polls every second: a night started again and again
    // would show within these seconds.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        run.try_wait().expect("try_wait").is_none(),
        "trading goes on"
    );
    run.kill().expect("stop keel run");
    let out = run.wait_with_output().expect("reap");
    let all = nights(&db);
    assert_eq!(all.len(), 1, "one night per scheduled instant: {all:?}");
    let (status, note) = &all[0];
    assert_eq!(status, "failed", "{note}");
    assert_eq!(
        note,
        &format!("the analyst: API key: environment variable {UNSET_KEY_VAR} is not set")
    );
    let log = text(&out.stderr);
    assert!(
        log.contains("the night failed") && log.contains(note.as_str()),
        "keel run's log says why: {log}"
    );
}

#[test]
fn a_second_night_while_one_runs_is_refused_naming_it_and_the_first_goes_on() {
    // The first night's analyst takes its time to answer.
    let llm = FakeLlm::start(vec![
        Reply::openai(&nothing(), 500, 50).after(Duration::from_secs(5)),
    ]);
    let (dir, db) = prepared(
        &evolve_toml("openai", &llm.openai_url(), ""),
        LENIENT_CANDIDATES,
    );
    let first = night_command(dir.path(), &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the first night");
    let started = Instant::now();
    while llm.requests().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first night never asked its model"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = night_in(dir.path(), &db);
    let stderr = text(&second.stderr);
    assert!(!second.status.success(), "{}", text(&second.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "night 1 is running on {} (pid {}); one night runs at a time on a database",
            db.display(),
            first.id()
        )),
        "{stderr}"
    );
    assert_eq!(
        nights(&db).iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        ["running"],
        "not closed as abandoned, no second night"
    );
    let out = first.wait_with_output().expect("the first night ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = nights(&db);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, "finished", "{all:?}");
    assert_eq!(llm.requests().len(), 1, "the second night asked nothing");
}
