//! Diversity by behaviour: a strategy that trades exactly as one already
//! known — an earlier candidate of the night, an operator's candidate — is
//! dropped right after it builds and validates, the record naming which it
//! copies, and nothing more is asked or submitted for it.

use rusqlite::Connection;

use super::keel_in;
use super::llm::{
    ACCEPT, GOOD, assert_key_kept, assert_ok, create, evolve_toml, fenced, night_in, prepared,
    steps,
};
use crate::fakes::llm::{FakeLlm, Reply};
use crate::paper::{count, text};
use crate::support::{example, repo};

/// The trade-list hash of no trades at all: two strategies that never
/// trade share it, so a test of copying must trade.
const NO_TRADES: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Each attempt: slug, gate reached, passed, figures, candidate.
fn attempts(db: &std::path::Path) -> Vec<(String, String, bool, serde_json::Value, Option<i64>)> {
    Connection::open(db)
        .expect("db")
        .prepare(
            "SELECT slug, reached, passed, figures, candidate_id FROM evolve_attempts ORDER BY id",
        )
        .expect("prepare")
        .query_map([], |r| {
            let figures: String = r.get(3)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                serde_json::from_str(&figures).unwrap_or_default(),
                r.get(4)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("attempts")
}

#[test]
fn a_second_strategy_trading_as_an_earlier_candidate_of_the_night_is_dropped() {
    let llm = FakeLlm::start(vec![
        Reply::anthropic(&create(), 1000, 200),
        Reply::anthropic(&fenced(GOOD), 2000, 900),
        Reply::anthropic(ACCEPT, 1500, 40),
        // The second attempt: the same strategy under another name.
        Reply::anthropic(&fenced(GOOD), 2000, 900),
    ]);
    // The evolution's gates pass the first; the candidate gate then fails
    // it (so it is no parent of the second: only the record can tell).
    let (dir, db) = prepared(
        &evolve_toml("anthropic", &llm.anthropic_url(), "max_candidates = 2"),
        "[backtest]\nmin_trades = 0\nmin_sharpe = 1000000\n",
    );
    let out = night_in(dir.path(), &db);
    assert_ok(&out);
    let all = attempts(&db);
    assert_eq!(all.len(), 2, "{all:?}");
    let (first, second) = (&all[0], &all[1]);
    assert_eq!(
        (first.1.as_str(), first.4),
        ("submitted", Some(1)),
        "{all:?}"
    );
    assert!(first.3["in_sample"]["trades"].as_u64() > Some(0), "{all:?}");
    assert_eq!(
        (second.1.as_str(), second.2, second.4),
        ("diversity", false, None),
        "{all:?}"
    );
    let copies = second.3["diversity"]["copies"].as_str().expect("copies");
    assert_eq!(copies, format!("candidate 1 ({})", first.0), "{all:?}");
    assert_eq!(second.3["trades_hash"], first.3["trades_hash"]);
    assert_ne!(second.3["trades_hash"], NO_TRADES);
    // The reason is on the record as the step's output.
    let diversity: Vec<_> = steps(&db)
        .into_iter()
        .filter(|s| s.0 == "diversity")
        .collect();
    assert_eq!(
        diversity.iter().map(|s| s.2).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(
        diversity[1]
            .4
            .contains(&format!("trades exactly as candidate 1 ({})", first.0)),
        "{}",
        diversity[1].4
    );
    let conn = Connection::open(&db).expect("db");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM candidates"), 1);
    assert_eq!(llm.requests().len(), 4, "no review for the copy");
    assert_key_kept(&db, &out, &llm.requests());
}

#[test]
fn a_model_strategy_trading_as_an_operators_candidate_is_dropped_before_the_gates() {
    let (dir, db) = prepared("", super::LENIENT_CANDIDATES);
    let rsi = example("rsi-reversion");
    let submitted = keel_in(
        dir.path(),
        &db,
        &[
            "candidate",
            "submit",
            rsi.to_str().expect("utf-8"),
            "--note",
            "mine",
        ],
    );
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    // The model writes the operator's strategy again, word for word.
    let source = std::fs::read_to_string(repo().join("strategies/rsi-reversion/src/lib.rs"))
        .expect("source");
    let llm = FakeLlm::start(vec![
        Reply::openai(&create(), 1000, 200),
        Reply::openai(&fenced(&source), 2000, 900),
    ]);
    std::fs::write(
        dir.path().join("evolve.toml"),
        evolve_toml("openai", &llm.openai_url(), ""),
    )
    .expect("write");
    let out = night_in(dir.path(), &db);
    assert_ok(&out);
    let all = attempts(&db);
    assert_eq!(all.len(), 1, "{all:?}");
    let (slug, reached, passed, figures, candidate) = &all[0];
    assert_eq!(
        (reached.as_str(), *passed, *candidate),
        ("diversity", false, None)
    );
    assert_eq!(
        figures["diversity"]["copies"], "candidate 1 (rsi-reversion)",
        "{slug}: {figures}"
    );
    assert_ne!(figures["trades_hash"], NO_TRADES);
    let kinds: Vec<String> = steps(&db).into_iter().map(|s| s.0).collect();
    let after: Vec<&str> = kinds
        .iter()
        .skip_while(|k| *k != "validate")
        .map(String::as_str)
        .collect();
    assert_eq!(
        after,
        ["validate", "diversity"],
        "no gate after it: {kinds:?}"
    );
    let conn = Connection::open(&db).expect("db");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM candidates"),
        1,
        "only the operator's"
    );
    assert_eq!(llm.requests().len(), 2, "no review for the copy");
}
