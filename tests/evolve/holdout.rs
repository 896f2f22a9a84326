//! The locked holdout stays locked: the candidate gate of a strategy the
//! evolution submits runs on the bars before the holdout window, and the
//! analyst of a later night is shown no figure computed on a bar of that
//! window — not the evolution's, not an operator's candidate's.

use rusqlite::Connection;

use super::keel_in;
use super::llm::{
    ACCEPT, GOOD, assert_ok, create, evolve_toml, fenced, night_in, nothing, prepared,
};
use crate::fakes::llm::{FakeLlm, Reply};
use crate::paper::{count, text};
use crate::support::example;

/// The candidate gate's default data: 4,000 one-minute bars from this time.
const SAMPLE_FIRST_MS: i64 = 1_767_225_600_000;
const SAMPLE_BARS: i64 = 4000;

/// The backtest gate's figures of candidate `id`.
fn backtest_figures(conn: &Connection, id: i64) -> serde_json::Value {
    let figures: String = conn
        .query_row(
            "SELECT figures FROM gate_results WHERE candidate_id = ?1 AND gate = 'backtest'",
            [id],
            |r| r.get(0),
        )
        .expect("a backtest gate");
    serde_json::from_str(&figures).expect("json")
}

#[test]
fn no_figure_computed_on_the_holdout_window_reaches_a_later_nights_analyst() {
    // The default holdout: the last 20% of the data's span.
    let last = SAMPLE_FIRST_MS + (SAMPLE_BARS - 1) * 60_000;
    let holdout_from = SAMPLE_FIRST_MS + ((last - SAMPLE_FIRST_MS) as f64 * 0.8) as i64;
    let in_sample_bars = (0..SAMPLE_BARS)
        .filter(|i| SAMPLE_FIRST_MS + i * 60_000 < holdout_from)
        .count() as u64;

    let (dir, db) = prepared("", super::LENIENT_CANDIDATES);
    // An operator's candidate, gated on the whole of the data.
    let rsi = example("rsi-reversion");
    let submitted = keel_in(
        dir.path(),
        &db,
        &["candidate", "submit", rsi.to_str().expect("utf-8")],
    );
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let llm = FakeLlm::start(vec![
        Reply::anthropic(&create(), 1000, 200),
        Reply::anthropic(&fenced(GOOD), 2000, 900),
        Reply::anthropic(ACCEPT, 1500, 40),
        Reply::anthropic(&nothing(), 1000, 100),
    ]);
    std::fs::write(
        dir.path().join("evolve.toml"),
        evolve_toml("anthropic", &llm.anthropic_url(), ""),
    )
    .expect("write");
    assert_ok(&night_in(dir.path(), &db));
    let conn = Connection::open(&db).expect("db");
    let ours: i64 = conn
        .query_row(
            "SELECT id FROM candidates WHERE submitted_by = 'evolution'",
            [],
            |r| r.get(0),
        )
        .expect("the evolution's candidate");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM evolve_holdout_uses"), 1);

    // Its candidate gate ran on the bars before the holdout, and says so.
    let gated = backtest_figures(&conn, ours);
    let span = &gated["spans"][0];
    assert_eq!(span["bars"].as_u64(), Some(in_sample_bars), "{gated}");
    assert_eq!(span["first_ms"].as_i64(), Some(SAMPLE_FIRST_MS), "{gated}");
    assert!(
        span["last_ms"].as_i64().expect("last") < holdout_from,
        "{gated}"
    );
    let operators = backtest_figures(&conn, 1);
    assert_eq!(
        operators["spans"][0]["bars"].as_u64(),
        Some(SAMPLE_BARS as u64)
    );

    // The next night's analyst sees the evolution's figures, not the
    // operator's, which were computed on the holdout's bars too.
    assert_ok(&night_in(dir.path(), &db));
    let requests = llm.requests();
    assert_eq!(requests.len(), 4);
    for prompt in [requests[0].text(), requests[3].text()] {
        let shown = |v: &serde_json::Value| prompt.contains(&format!("\": {v}"));
        assert!(
            prompt.contains("figures withheld: computed on data reaching"),
            "{prompt}"
        );
        let theirs = &operators["candidate"]["total_return_pct"];
        assert!(theirs.is_f64() && !shown(theirs), "{theirs} in {prompt}");
        assert!(
            !prompt.contains(&format!("\"bars\": {SAMPLE_BARS}")),
            "{prompt}"
        );
    }
    let tonight = requests[3].text();
    let mine = &gated["candidate"]["total_return_pct"];
    assert!(
        tonight.contains(&format!("\"total_return_pct\": {mine}")),
        "{mine} not in {tonight}"
    );
    assert!(tonight.contains(&format!("\"bars\": {in_sample_bars}")));
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM evolve_holdout_uses"),
        1,
        "a night that only decides does not look"
    );
}
