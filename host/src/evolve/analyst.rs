//! The analyst played by a model: shown the truth benchmarks, the
//! candidates on record with their gate results (but never a figure
//! computed on the locked holdout window: a gate run on data reaching it,
//! an operator's say, is withheld), recent nights and the strategy
//! document (every strategy-provided string quoted), it answers
//! one JSON decision with at least one prediction. An answer outside the
//! schema is refused and asked again once, with the reason; a second
//! refusal decides `nothing`.

use keel_candidates::{Actor, CandidateState};

use crate::candidates;

use super::config::Role;
use super::night::{Decided, Night};
use super::prompts::{self, AnalystFacts, Decision, DecisionKind};
use super::provider::Turn;
use super::record;

/// Recent nights the analyst is shown.
const RECENT_NIGHTS: usize = 5;

/// What the analyst is told of a gate run on data reaching the holdout.
const WITHHELD: &str =
    "figures withheld: computed on data reaching the evolution's locked holdout window";

/// Whether a gate's `figures` were computed on data reaching `holdout_from_ms`:
/// a gate run on data (it names `data`) whose spans are unknown (recorded
/// before they were) or end at or after it.
fn reaches(figures: &serde_json::Value, holdout_from_ms: i64) -> bool {
    if figures.get("data").is_none() {
        return false;
    }
    match figures["spans"].as_array() {
        Some(spans) => spans.iter().any(|s| {
            s["last_ms"]
                .as_i64()
                .is_none_or(|last| last >= holdout_from_ms)
        }),
        None => true,
    }
}

impl Night<'_> {
    /// What the analyst is shown tonight: no gate figure computed on a bar
    /// of the locked holdout window (from `holdout_from_ms` on).
    fn facts(&self, benchmarks: &str, holdout_from_ms: i64) -> anyhow::Result<AnalystFacts> {
        let list = candidates::list(self.conn)?;
        let mut shown = Vec::with_capacity(list.len());
        for c in &list {
            let gates: Vec<serde_json::Value> = candidates::gates(self.conn, c.id)?
                .into_iter()
                .map(|(g, _)| match reaches(&g.figures, holdout_from_ms) {
                    false => serde_json::json!({
                        "gate": g.gate.as_str(), "passed": g.passed(),
                        "detail": g.detail, "figures": g.figures,
                    }),
                    true => serde_json::json!({
                        "gate": g.gate.as_str(), "passed": g.passed(),
                        "detail": WITHHELD, "figures": null,
                    }),
                })
                .collect();
            shown.push(serde_json::json!({
                "id": c.id, "name": c.name, "state": c.state.as_str(),
                "submitted_by": c.submitted_by.as_str(), "note": c.note, "gates": gates,
            }));
        }
        let nights = record::nights(self.conn, RECENT_NIGHTS + 1)?
            .into_iter()
            .filter(|n| n.id != self.id)
            .take(RECENT_NIGHTS)
            .map(|n| {
                serde_json::json!({
                    "night": n.id, "status": n.status, "decision": n.decision, "note": n.note,
                })
            })
            .collect();
        Ok(AnalystFacts {
            benchmarks: serde_json::from_str(benchmarks).unwrap_or_default(),
            candidates: shown,
            nights,
            document: record::document(self.conn)?.1,
            allow_promote: self.settings.config.allow_promote,
            max_candidates: self.settings.config.max_candidates,
        })
    }

    /// The model's decision, asked at most twice, then acted on: a promote
    /// only when the config allows it (else recommended), a reject of a
    /// candidate through the candidates' own rules.
    pub(super) fn decide_by_model(
        &mut self,
        benchmarks: &str,
        holdout_from_ms: i64,
    ) -> anyhow::Result<Decided> {
        let list = candidates::list(self.conn)?;
        let known: Vec<i64> = list.iter().map(|c| c.id).collect();
        let passed: Vec<i64> = list
            .iter()
            .filter(|c| c.state == CandidateState::Passed)
            .map(|c| c.id)
            .collect();
        let facts = self.facts(benchmarks, holdout_from_ms)?;
        let mut turns = vec![Turn::user(prompts::analyst(&facts))];
        let judge = |text: &str| prompts::parse_decision(text, &passed, &known);
        let (text, first) = self.ask(
            Role::Analyst,
            "decide",
            None,
            prompts::ANALYST_SYSTEM,
            &turns,
            judge,
        )?;
        let decision = match first {
            Ok(d) => d,
            Err(why) => {
                turns.push(Turn::assistant(text));
                turns.push(Turn::user(prompts::refused(&why)));
                let (_, second) = self.ask(
                    Role::Analyst,
                    "decide",
                    None,
                    prompts::ANALYST_SYSTEM,
                    &turns,
                    judge,
                )?;
                match second {
                    Ok(d) => d,
                    Err(why) => {
                        return Ok(Decided {
                            kind: "nothing".into(),
                            reason: format!(
                                "the analyst's answer was refused twice (last: {why}); nothing tonight"
                            ),
                            brief: String::new(),
                            predictions: Vec::new(),
                        });
                    }
                }
            }
        };
        self.act(decision)
    }

    /// Carries out what the analyst decided, as far as this night may.
    fn act(&mut self, d: Decision) -> anyhow::Result<Decided> {
        let config = &self.settings.config;
        let (kind, reason) = match (d.kind, d.candidate) {
            (DecisionKind::Promote, Some(id)) if config.allow_promote => {
                match candidates::promote(
                    self.conn,
                    &self.settings.candidates,
                    id,
                    Actor::Evolution,
                    None,
                ) {
                    Ok(_) => ("promote", format!("candidate {id} promoted: {}", d.reason)),
                    Err(e) => ("nothing", format!("promote refused: {e:#}")),
                }
            }
            (DecisionKind::Promote, Some(id)) => (
                "nothing",
                format!(
                    "candidate {id} recommended to the operator (`keel candidate promote {id}`); this evolution may not promote: {}",
                    d.reason
                ),
            ),
            (DecisionKind::Reject, Some(id)) => {
                let why = format!("rejected by the evolution's analyst: {}", d.reason);
                match candidates::reject(self.conn, id, Actor::Evolution, &why) {
                    Ok(()) => ("reject", format!("candidate {id} {why}")),
                    Err(e) => ("nothing", format!("reject refused: {e:#}")),
                }
            }
            (DecisionKind::Create, _) if config.max_candidates == 0 => (
                "nothing",
                format!(
                    "max_candidates is 0 (the analyst asked to create: {})",
                    d.reason
                ),
            ),
            (kind, _) => (kind.as_str(), d.reason.clone()),
        };
        Ok(Decided {
            kind: kind.into(),
            reason,
            brief: d.brief.unwrap_or_default(),
            predictions: d.predictions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_figures_from_data_reaching_the_holdout_are_withheld() {
        let spans = |last: i64| {
            serde_json::json!({
                "data": ["sample:4000"],
                "spans": [{"bars": 10, "first_ms": 0, "last_ms": last}],
            })
        };
        assert!(!reaches(&spans(99), 100), "in sample");
        assert!(reaches(&spans(100), 100), "its first holdout bar");
        assert!(
            reaches(&serde_json::json!({ "data": ["sample:4000"] }), 100),
            "spans unknown"
        );
        assert!(
            !reaches(&serde_json::json!({ "checks": [] }), 100),
            "no data: the validate gate"
        );
    }
}
