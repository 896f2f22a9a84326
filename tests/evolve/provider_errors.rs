//! What a provider's errors do to a night, in both API shapes: an overload
//! is waited out as long as the server asks; a spend limit or billing
//! error is never retried and stops the night, its reason on the record
//! and no key anywhere.

use std::path::Path;

use rusqlite::Connection;

use super::llm::{assert_key_kept, assert_ok, evolve_toml, night, night_row, nothing};
use crate::fakes::llm::{FakeLlm, Reply};
use crate::paper::text;

/// The `decide` steps: ok, and how long each took.
fn decides(db: &Path) -> Vec<(bool, i64)> {
    Connection::open(db)
        .expect("db")
        .prepare("SELECT ok, duration_ms FROM evolve_steps WHERE kind = 'decide' ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("steps")
}

#[test]
fn an_overload_with_a_retry_after_is_waited_out_that_long() {
    let llm = FakeLlm::start(vec![
        Reply::anthropic_error(529, "overloaded_error", "Overloaded").header("retry-after", "2"),
        Reply::anthropic(&nothing(), 700, 60),
    ]);
    let (_dir, db, out) = night(&evolve_toml("anthropic", &llm.anthropic_url(), ""));
    assert_ok(&out);
    let (status, decision, ..) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("nothing"))
    );
    let steps = decides(&db);
    assert_eq!(steps.len(), 1, "one call, retried inside");
    assert!(steps[0].0);
    assert!(
        steps[0].1 >= 2000,
        "waited {} ms of the 2 s asked",
        steps[0].1
    );
    assert_eq!(llm.requests().len(), 2);
    assert_key_kept(&db, &out, &llm.requests());
}

#[test]
fn a_spend_limit_or_billing_error_stops_the_night_unretried_in_both_shapes() {
    let anthropic = FakeLlm::start(vec![Reply::anthropic_error(
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    )]);
    let openai = FakeLlm::start(vec![Reply::openai_error(
        429,
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    )]);
    for (kind, llm, url) in [
        ("anthropic", &anthropic, anthropic.anthropic_url()),
        ("openai", &openai, openai.openai_url()),
    ] {
        let (_dir, db, out) = night(&evolve_toml(kind, &url, ""));
        assert_ok(&out);
        let (status, decision, note, usd, tokens) = night_row(&db);
        assert_eq!(status, "stopped", "{kind}: {note}");
        assert!(
            note.starts_with("stopped: ") && note.contains("spend limit or billing problem"),
            "{kind}: {note}"
        );
        assert_eq!((decision, usd, tokens), (None, 0.0, 0), "{kind}");
        assert_eq!(llm.requests().len(), 1, "{kind}: never retried");
        let steps = decides(&db);
        assert_eq!(steps.len(), 1, "{kind}: one call, recorded");
        assert!(!steps[0].0, "{kind}");
        assert!(text(&out.stdout).contains("stopped"), "{kind}");
        assert_key_kept(&db, &out, &llm.requests());
    }
}
