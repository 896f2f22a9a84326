//! The candidates' rows: artifacts by hash, candidates, gate results,
//! lineage and the audit lines about them.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use rusqlite::{Connection, OptionalExtension, params};

use keel_candidates::deploy::DeployAction;
use keel_candidates::{Actor, CandidateState, Gate, Verdict};
use keel_candidates::{Move, UnknownName, transition};

use crate::sandbox::StrategyArtifact;
use crate::store::audit;

use super::{Candidate, GateResult};
use crate::store::now_ms;

/// Stores `bytes` once under their hash.
pub fn store_blob(conn: &Connection, artifact: &StrategyArtifact) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO artifact_blobs (hash, bytes, size, stored_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            artifact.hash.to_hex(),
            artifact.bytes,
            artifact.bytes.len() as i64,
            now_ms()
        ],
    )?;
    Ok(())
}

/// A stored artifact by hash.
pub fn load_blob(conn: &Connection, hash: &str) -> anyhow::Result<StrategyArtifact> {
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM artifact_blobs WHERE hash = ?1",
            [hash],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| anyhow!("no stored artifact {hash}"))?;
    Ok(StrategyArtifact::from_bytes(
        bytes,
        PathBuf::from(format!("<stored {}>", &hash[..12.min(hash.len())])),
    ))
}

/// The active strategy's hash, if one was ever deployed.
pub fn active(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT hash FROM deployments ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Records the first active strategy (what `keel run` traded before any
/// promotion).
pub fn record_initial(conn: &Connection, artifact: &StrategyArtifact) -> rusqlite::Result<()> {
    store_blob(conn, artifact)?;
    conn.execute(
        "INSERT INTO deployments (hash, action, actor, reason, time_ms) VALUES (?1, ?2, ?3, 'first strategy run', ?4)",
        params![
            artifact.hash.to_hex(),
            DeployAction::Initial.as_str(),
            Actor::Keel.as_str(),
            now_ms()
        ],
    )?;
    audit(
        conn,
        Actor::Keel.as_str(),
        "deploy",
        &format!("{} is the active strategy", artifact.hash.short()),
    )
}

/// The strategy a `--parent` names: a candidate by id, or any stored
/// strategy (a candidate, a deployment) by its SHA-256 or a prefix of it of
/// at least 6 hex digits. Its full hash, else why not, in one line.
pub fn resolve_parent(conn: &Connection, text: &str) -> anyhow::Result<String> {
    if let Ok(id) = text.parse::<i64>()
        && let Some(hash) = conn
            .query_row("SELECT hash FROM candidates WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
    {
        return Ok(hash);
    }
    let Some(prefix) = keel_candidates::lineage::hash_prefix(text) else {
        bail!(
            "--parent {text}: no candidate has that id, and it is not a SHA-256 (or 6 or more of its first hex digits)"
        );
    };
    let matches: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT hash FROM artifact_blobs WHERE substr(hash, 1, length(?1)) = ?1 LIMIT 2",
        )?;
        stmt.query_map([&prefix], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    match matches.as_slice() {
        [hash] => Ok(hash.clone()),
        [] => bail!("--parent {text}: no stored strategy has that hash"),
        _ => bail!("--parent {text}: more than one stored strategy starts so; give more digits"),
    }
}

/// A stored strategy in words: `6580c0aaed81 (candidate 1, sma-cross 1.0.0)`.
pub fn describe_hash(conn: &Connection, hash: &str) -> rusqlite::Result<String> {
    let short = &hash[..12.min(hash.len())];
    let candidate: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT id, name, version FROM candidates WHERE hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((id, name, version)) = candidate {
        let version = keel_model::shown::text(&version);
        return Ok(format!("{short} (candidate {id}, {name} {version})"));
    }
    let known: Option<(String, String)> = conn
        .query_row(
            "SELECT name, version FROM artifacts WHERE hash = ?1",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match known {
        Some((name, version)) => {
            let version = keel_model::shown::text(&version);
            format!("{short} ({name} {version})")
        }
        None => short.to_owned(),
    })
}

/// The ancestors of candidate `id`, parent first, as far as they are known
/// (a parent that is no candidate ends the line).
pub fn lineage(conn: &Connection, id: i64) -> anyhow::Result<Vec<String>> {
    let parent_of = |hash: &str| {
        conn.query_row(
            "SELECT parent FROM candidates WHERE hash = ?1",
            [hash],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
    };
    Ok(keel_candidates::lineage::ancestors(
        get(conn, id)?.parent,
        parent_of,
    )?)
}

pub(super) fn record_gate(conn: &Connection, id: i64, gate: &GateResult) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO gate_results (candidate_id, gate, verdict, figures, detail, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            gate.gate.as_str(),
            gate.verdict.as_str(),
            gate.figures.to_string(),
            gate.detail,
            now_ms()
        ],
    )?;
    Ok(())
}

/// Records a paper gate verdict (from `keel run`).
/// A verdict moves a candidate on only from `gated`: one promoted or
/// rejected meanwhile keeps its state.
pub fn record_paper_gate(conn: &Connection, id: i64, gate: &GateResult) -> rusqlite::Result<()> {
    record_gate(conn, id, gate)?;
    let state = conn.query_row("SELECT state FROM candidates WHERE id = ?1", [id], |r| {
        named(r, 0, CandidateState::parse)
    })?;
    let Ok(state) = transition(state, Move::PaperGate(gate.verdict)) else {
        return Ok(());
    };
    set_state(
        conn,
        id,
        state,
        Actor::Keel,
        &format!("paper gate: {}", gate.detail),
    )
}

pub(super) fn set_state(
    conn: &Connection,
    id: i64,
    state: CandidateState,
    actor: Actor,
    reason: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE candidates SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    let data = serde_json::json!({
        "id": id, "state": state.as_str(), "actor": actor.as_str(), "reason": reason,
    });
    crate::store::events::emit(conn, crate::store::events::Kind::Candidate, data)?;
    audit(
        conn,
        actor.as_str(),
        &format!("candidate {id} {state}"),
        reason,
    )
}

/// Column `i` of `r`, a name of one of the lifecycle's enums.
pub(super) fn named<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    parse: fn(&str) -> Result<T, UnknownName>,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        id: r.get(0)?,
        hash: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        parent: r.get(4)?,
        submitted_by: named(r, 5, Actor::parse)?,
        note: r.get(6)?,
        source: r.get(7)?,
        state: named(r, 8, CandidateState::parse)?,
        created_ms: r.get(9)?,
    })
}

pub(super) const COLUMNS: &str =
    "id, hash, name, version, parent, submitted_by, note, source, state, created_ms";

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<Candidate>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM candidates ORDER BY id"))?;
    stmt.query_map([], row)?.collect()
}

pub fn get(conn: &Connection, id: i64) -> anyhow::Result<Candidate> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM candidates WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?
    .ok_or_else(|| anyhow!("no candidate {id}"))
}

/// Every gate result of a candidate, oldest first.
pub fn gates(conn: &Connection, id: i64) -> rusqlite::Result<Vec<(GateResult, i64)>> {
    let mut stmt = conn.prepare(
        "SELECT gate, verdict, figures, detail, time_ms FROM gate_results WHERE candidate_id = ?1 ORDER BY id",
    )?;
    stmt.query_map([id], |r| {
        let figures: String = r.get(2)?;
        Ok((
            GateResult {
                gate: named(r, 0, Gate::parse)?,
                verdict: named(r, 1, Verdict::parse)?,
                figures: serde_json::from_str(&figures).unwrap_or(serde_json::Value::Null),
                detail: r.get(3)?,
            },
            r.get(4)?,
        ))
    })?
    .collect()
}

/// The audit lines about a candidate: (time, actor, action, detail).
pub fn history(
    conn: &Connection,
    id: i64,
    hash: &str,
) -> rusqlite::Result<Vec<(i64, String, String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT time_ms, actor, action, detail FROM audit_log
         WHERE action LIKE ?1 OR detail LIKE ?2 OR detail LIKE ?3 ORDER BY id",
    )?;
    let short = &hash[..12.min(hash.len())];
    stmt.query_map(
        params![
            format!("candidate {id} %"),
            format!("candidate {id}:%"),
            format!("%{short}%")
        ],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?
    .collect()
}
