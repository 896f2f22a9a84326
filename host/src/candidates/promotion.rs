//! Promotion, rejection and rollback: each move checked against the
//! lifecycle and the deployment stack before anything is written, and
//! audited.

use anyhow::{anyhow, bail};
use rusqlite::{Connection, params};

use keel_candidates::deploy::{self, DeployAction, Deployment};
use keel_candidates::judge;
use keel_candidates::{Actor, CandidateState, CandidatesConfig, Gate};
use keel_candidates::{Move, transition};

use crate::store::audit;

use super::Candidate;
use super::rows::{active, gates, get, named, set_state};
use crate::store::now_ms;

pub fn reject(conn: &Connection, id: i64, actor: Actor, reason: &str) -> anyhow::Result<()> {
    let c = get(conn, id)?;
    let state = transition(c.state, Move::Reject).map_err(|refused| match refused.from {
        CandidateState::Promoted => {
            anyhow!("candidate {id} is the active strategy; roll back instead")
        }
        _ => anyhow!("candidate {id}: {refused}"),
    })?;
    set_state(conn, id, state, actor, reason)?;
    Ok(())
}

/// Makes candidate `id` the active strategy. Refused unless every required
/// gate passed, or `force` (a reason, audited) is given.
pub fn promote(
    conn: &Connection,
    config: &CandidatesConfig,
    id: i64,
    actor: Actor,
    force: Option<&str>,
) -> anyhow::Result<Candidate> {
    let c = get(conn, id)?;
    let promoted = transition(c.state, Move::Promote)
        .map_err(|_| anyhow!("candidate {id} is {}; it cannot be promoted", c.state))?;
    let results = gates(conn, id)?;
    let latest = |gate: Gate| {
        results
            .iter()
            .rev()
            .find(|(g, _)| g.gate == gate)
            .map(|(g, _)| g.verdict)
    };
    let missing = judge::promotion_blockers(config.paper.required, latest);
    if !missing.is_empty() {
        match force {
            None => bail!(
                "candidate {id} cannot be promoted: {} (use --force --reason to override)",
                missing.join(", ")
            ),
            Some(reason) => audit(
                conn,
                actor.as_str(),
                &format!("candidate {id} forced"),
                &format!("promoted despite: {}; reason: {reason}", missing.join(", ")),
            )?,
        }
    }
    if let Some(previous) = active(conn)? {
        // The version it replaces is retired (no audit line of its own: the
        // promotion's says it all).
        let retired = transition(CandidateState::Promoted, Move::Retire)?;
        conn.execute(
            "UPDATE candidates SET state = ?2 WHERE hash = ?1 AND state = ?3",
            params![
                &previous,
                retired.as_str(),
                CandidateState::Promoted.as_str()
            ],
        )?;
    }
    conn.execute(
        "INSERT INTO deployments (hash, candidate_id, action, actor, reason, forced, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            c.hash,
            id,
            DeployAction::Promote.as_str(),
            actor.as_str(),
            force.unwrap_or("every gate passed"),
            i64::from(force.is_some()),
            now_ms()
        ],
    )?;
    set_state(
        conn,
        id,
        promoted,
        actor,
        force.unwrap_or("every gate passed"),
    )?;
    get(conn, id)
}

/// Every deployment row, oldest first.
fn deployments(conn: &Connection) -> rusqlite::Result<Vec<Deployment>> {
    let mut stmt =
        conn.prepare("SELECT hash, candidate_id, action FROM deployments ORDER BY id")?;
    stmt.query_map([], |r| {
        Ok(Deployment {
            hash: r.get(0)?,
            candidate: r.get(1)?,
            action: named(r, 2, DeployAction::parse)?,
        })
    })?
    .collect()
}

/// Restores the active version from before the current one was deployed
/// (`deploy::plan_rollback` decides which). The version rolled back is
/// retired; a restored candidate is the promoted one again. Every move is
/// checked before anything is written. Returns the restored hash.
pub fn rollback(conn: &Connection, actor: Actor, reason: &str) -> anyhow::Result<String> {
    let plan = deploy::plan_rollback(deployments(conn)?)?;
    let moves = [
        (plan.current.candidate, Move::Retire),
        (plan.restore.candidate, Move::Restore),
    ];
    let mut changes = Vec::new();
    for (candidate, by) in moves {
        if let Some(id) = candidate {
            let state = transition(get(conn, id)?.state, by)
                .map_err(|refused| anyhow!("cannot roll back: candidate {id}: {refused}"))?;
            changes.push((id, state, by));
        }
    }
    let (current, previous) = (&plan.current.hash, &plan.restore.hash);
    conn.execute(
        "INSERT INTO deployments (hash, candidate_id, action, actor, reason, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            previous,
            plan.restore.candidate,
            DeployAction::Rollback.as_str(),
            actor.as_str(),
            reason,
            now_ms()
        ],
    )?;
    for (id, state, by) in changes {
        let why = match by {
            Move::Restore => format!("restored by a rollback: {reason}"),
            _ => format!("rolled back: {reason}"),
        };
        set_state(conn, id, state, actor, &why)?;
    }
    audit(
        conn,
        actor.as_str(),
        "rollback",
        &format!(
            "{} replaced by {}: {reason}",
            &current[..12.min(current.len())],
            &previous[..12.min(previous.len())]
        ),
    )?;
    Ok(previous.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candidates::{GateResult, record_initial, record_paper_gate, store_blob};
    use crate::sandbox::StrategyArtifact;
    use keel_candidates::Verdict;

    /// A stored candidate for `bytes`, in state `gated`; its hash.
    fn candidate(conn: &Connection, bytes: &[u8]) -> (i64, String) {
        let artifact = StrategyArtifact::from_bytes(bytes.to_vec(), "test.wasm");
        store_blob(conn, &artifact).expect("blob");
        conn.execute(
            "INSERT INTO candidates (hash, name, version, submitted_by, note, source, state, created_ms)
             VALUES (?1, 'test', '1.0.0', 'person', '', 'test.wasm', 'gated', 0)",
            [artifact.hash.to_hex()],
        )
        .expect("candidate");
        (conn.last_insert_rowid(), artifact.hash.to_hex())
    }

    fn state(conn: &Connection, id: i64) -> CandidateState {
        get(conn, id).expect("candidate").state
    }

    #[test]
    fn a_paper_verdict_moves_only_a_candidate_still_waiting_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = crate::store::Store::open(&dir.path().join("keel.db")).expect("store");
        let conn = store.conn();
        let (waiting, _) = candidate(conn, b"waiting");
        let (rejected, _) = candidate(conn, b"rejected");
        reject(conn, rejected, Actor::Operator, "no").expect("reject");
        let verdict = |verdict| GateResult {
            gate: Gate::Paper,
            verdict,
            figures: serde_json::json!({}),
            detail: "test".into(),
        };
        record_paper_gate(conn, waiting, &verdict(Verdict::Pass)).expect("verdict");
        record_paper_gate(conn, rejected, &verdict(Verdict::Pass)).expect("verdict");
        assert_eq!(state(conn, waiting), CandidateState::Passed);
        assert_eq!(state(conn, rejected), CandidateState::Rejected);
        // Both verdicts are on record.
        assert_eq!(gates(conn, rejected).expect("gates").len(), 1);
    }

    #[test]
    fn rollbacks_walk_back_through_the_promotions_never_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = crate::store::Store::open(&dir.path().join("keel.db")).expect("store");
        let conn = store.conn();
        let first = StrategyArtifact::from_bytes(b"first".to_vec(), "first.wasm");
        record_initial(conn, &first).expect("initial");
        let (b, b_hash) = candidate(conn, b"second");
        let (c, c_hash) = candidate(conn, b"third");
        let config = CandidatesConfig::default();
        for id in [b, c] {
            promote(conn, &config, id, Actor::Operator, Some("test")).expect("promote");
        }
        assert_eq!(active(conn).expect("active"), Some(c_hash.clone()));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            (CandidateState::Retired, CandidateState::Promoted)
        );

        // The first rollback restores the second version, which is the
        // promoted candidate again.
        assert_eq!(
            rollback(conn, Actor::Operator, "one").expect("rollback"),
            b_hash
        );
        assert_eq!(active(conn).expect("active"), Some(b_hash));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            (CandidateState::Promoted, CandidateState::Retired)
        );
        // The second goes further back, not forward to the third.
        assert_eq!(
            rollback(conn, Actor::Operator, "two").expect("rollback"),
            first.hash.to_hex()
        );
        assert_eq!(active(conn).expect("active"), Some(first.hash.to_hex()));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            (CandidateState::Retired, CandidateState::Retired)
        );
        let err = rollback(conn, Actor::Operator, "three").expect_err("nothing earlier");
        assert_eq!(
            err.to_string(),
            "there is no earlier version to roll back to"
        );

        // A promotion after the rollbacks is rolled back to the first again.
        promote(conn, &config, c, Actor::Operator, Some("again")).expect("promote");
        assert_eq!(
            rollback(conn, Actor::Operator, "four").expect("rollback"),
            first.hash.to_hex()
        );
        let rollbacks: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'rollback'",
                [],
                |r| r.get(0),
            )
            .expect("audit");
        assert_eq!(rollbacks, 3);
    }
}
