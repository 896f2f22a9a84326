//! The analyst's decisions on candidates: a `promote` is carried out only
//! when `evolve.toml` allows the evolution to promote (else it is a
//! recommendation to the operator, and nothing changes), and a `reject`
//! rejects, by the evolution.

use std::path::Path;

use rusqlite::Connection;

use super::keel_in;
use super::llm::{PREDICTION, assert_ok, evolve_toml, night_in, night_row, prepared};
use crate::fakes::llm::{FakeLlm, Reply};
use crate::paper::text;
use crate::support::example;

/// The analyst's answer: `decision` on candidate `id`.
fn decide(decision: &str, id: i64) -> String {
    format!(
        r#"{{"decision":"{decision}","reason":"its paper run held up","candidate":{id},"predictions":[{PREDICTION}]}}"#
    )
}

/// Candidate `id`'s state.
fn state(db: &Path, id: i64) -> String {
    Connection::open(db)
        .expect("db")
        .query_row("SELECT state FROM candidates WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .expect("candidate")
}

/// Submits example `name` as a candidate and stands in for its paper run:
/// the paper gate passed (the gate itself is tested in tests/candidates).
fn passed_candidate(dir: &Path, db: &Path, name: &str) -> i64 {
    let file = example(name).to_str().expect("utf-8");
    let out = keel_in(dir, db, &["candidate", "submit", file]);
    assert_ok(&out);
    let conn = Connection::open(db).expect("db");
    let id: i64 = conn
        .query_row("SELECT MAX(id) FROM candidates", [], |r| r.get(0))
        .expect("submitted");
    conn.execute(
        "INSERT INTO gate_results (candidate_id, gate, verdict, figures, detail, time_ms)
         VALUES (?1, 'paper', 'pass', '{}', 'stood in for by the test', 0)",
        [id],
    )
    .expect("paper gate");
    conn.execute("UPDATE candidates SET state = 'passed' WHERE id = ?1", [id])
        .expect("passed");
    id
}

#[test]
fn a_promote_is_a_recommendation_unless_allowed_and_a_reject_rejects() {
    let llm = FakeLlm::start(vec![
        Reply::openai(&decide("promote", 1), 600, 50),
        Reply::openai(&decide("promote", 1), 600, 50),
        Reply::openai(&decide("reject", 2), 600, 50),
    ]);
    let (dir, db) = prepared(
        &evolve_toml("openai", &llm.openai_url(), ""),
        super::LENIENT_CANDIDATES,
    );
    let id = passed_candidate(dir.path(), &db, "rsi-reversion");

    // Not allowed (the default): recommended, nothing promoted.
    assert_ok(&night_in(dir.path(), &db));
    let (status, decision, note, ..) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("nothing"))
    );
    assert!(
        note.contains("candidate 1 recommended to the operator (`keel candidate promote 1`)"),
        "{note}"
    );
    assert_eq!(state(&db, id), "passed");

    // Allowed: promoted, by the evolution.
    std::fs::write(
        dir.path().join("evolve.toml"),
        evolve_toml("openai", &llm.openai_url(), "allow_promote = true"),
    )
    .expect("write");
    assert_ok(&night_in(dir.path(), &db));
    let (_, decision, note, ..) = night_row(&db);
    assert_eq!(decision.as_deref(), Some("promote"), "{note}");
    assert_eq!(state(&db, id), "promoted");
    let shown = text(&keel_in(dir.path(), &db, &["candidate", "list"]).stdout);
    assert!(shown.contains("rsi-reversion"), "{shown}");
    let by: String = Connection::open(&db)
        .expect("db")
        .query_row(
            "SELECT actor FROM deployments WHERE candidate_id = ?1 ORDER BY id DESC",
            [id],
            |r| r.get(0),
        )
        .expect("the promotion's deployment");
    assert_eq!(by, "evolution");

    // A reject rejects.
    let other = passed_candidate(dir.path(), &db, "atr-breakout");
    assert_ok(&night_in(dir.path(), &db));
    let (_, decision, note, ..) = night_row(&db);
    assert_eq!(decision.as_deref(), Some("reject"), "{note}");
    assert_eq!(state(&db, other), "rejected");
    assert_eq!(state(&db, id), "promoted", "the other one is untouched");
}
