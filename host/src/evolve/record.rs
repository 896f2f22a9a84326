//! The night's record in SQLite: nights, their steps, the strategies they
//! wrote (attempts), the trial registry, holdout uses, predictions and the
//! strategy document. Every row is written as it happens, so a night killed
//! midway leaves what it did; the next start closes it as abandoned.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::events::{Kind, emit};
use crate::store::now_ms;

/// How a night ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NightStatus {
    Finished,
    /// The budget or the operator stopped it.
    Stopped,
    Failed,
}

impl NightStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NightStatus::Finished => "finished",
            NightStatus::Stopped => "stopped",
            NightStatus::Failed => "failed",
        }
    }
}

/// Starts a night; a night still `running` (its process was killed) is
/// closed as abandoned first, and its id returned beside the new one. The
/// caller holds the night lock (`lock::NightLock`), so no `running` night's
/// process is alive.
pub fn open_night(
    conn: &Connection,
    providers: &str,
    settings: &serde_json::Value,
) -> rusqlite::Result<(i64, Vec<i64>)> {
    let abandoned: Vec<i64> = conn
        .prepare("SELECT id FROM evolve_nights WHERE status = 'running'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &abandoned {
        // What it paid for is on the record of each step it finished (a
        // call in flight when it was killed was never answered here).
        conn.execute(
            "UPDATE evolve_nights SET status = 'abandoned', ended_ms = ?2,
                 note = 'its process ended before the night did',
                 usd = (SELECT COALESCE(SUM(usd), 0) FROM evolve_steps WHERE night_id = ?1),
                 tokens = (SELECT COALESCE(SUM(input_tokens + output_tokens), 0)
                           FROM evolve_steps WHERE night_id = ?1)
             WHERE id = ?1",
            params![id, now_ms()],
        )?;
    }
    conn.execute(
        "INSERT INTO evolve_nights (started_ms, status, providers, settings) VALUES (?1, 'running', ?2, ?3)",
        params![now_ms(), providers, settings.to_string()],
    )?;
    let night = conn.last_insert_rowid();
    let data = serde_json::json!({ "night": night, "status": "running", "providers": providers });
    emit(conn, Kind::Evolution, data)?;
    Ok((night, abandoned))
}

/// Ends night `id`.
pub fn close_night(
    conn: &Connection,
    id: i64,
    status: NightStatus,
    decision: Option<&str>,
    note: &str,
    spent: (f64, u64),
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE evolve_nights SET status = ?2, decision = COALESCE(?3, decision), note = ?4,
         usd = ?5, tokens = ?6, ended_ms = ?7 WHERE id = ?1",
        params![
            id,
            status.as_str(),
            decision,
            note,
            spent.0,
            spent.1 as i64,
            now_ms()
        ],
    )?;
    let data = serde_json::json!({
        "night": id, "status": status.as_str(), "decision": decision, "note": note,
        "usd": spent.0, "tokens": spent.1,
    });
    emit(conn, Kind::Evolution, data)
}

pub fn set_decision(
    conn: &Connection,
    id: i64,
    decision: &str,
    note: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE evolve_nights SET decision = ?2, note = ?3 WHERE id = ?1",
        params![id, decision, note],
    )?;
    Ok(())
}

/// One step as it is recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub ok: bool,
    pub input: String,
    pub output: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usd: f64,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub attempt: Option<i64>,
}

/// Appends `step` to night `night` (its `seq` is given here).
pub fn add_step(conn: &Connection, night: i64, step: &Step) -> rusqlite::Result<i64> {
    let seq: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM evolve_steps WHERE night_id = ?1",
        [night],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO evolve_steps (night_id, seq, kind, actor, ok, input, output, input_tokens,
         output_tokens, usd, started_ms, duration_ms, attempt_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            night,
            seq,
            step.kind,
            step.actor,
            step.ok,
            step.input,
            step.output,
            step.input_tokens as i64,
            step.output_tokens as i64,
            step.usd,
            step.started_ms,
            step.duration_ms,
            step.attempt
        ],
    )?;
    let data = serde_json::json!({
        "night": night, "step": seq, "kind": step.kind, "actor": step.actor, "ok": step.ok,
        "tokens": step.input_tokens + step.output_tokens, "usd": step.usd,
        "duration_ms": step.duration_ms,
    });
    emit(conn, Kind::Evolution, data)?;
    Ok(seq)
}

pub fn steps(conn: &Connection, night: i64) -> rusqlite::Result<Vec<Step>> {
    conn.prepare(
        "SELECT seq, kind, actor, ok, input, output, input_tokens, output_tokens, usd, started_ms,
                duration_ms, attempt_id
         FROM evolve_steps WHERE night_id = ?1 ORDER BY seq",
    )?
    .query_map([night], |r| {
        Ok(Step {
            seq: r.get(0)?,
            kind: r.get(1)?,
            actor: r.get(2)?,
            ok: r.get(3)?,
            input: r.get(4)?,
            output: r.get(5)?,
            input_tokens: r.get::<_, i64>(6)? as u64,
            output_tokens: r.get::<_, i64>(7)? as u64,
            usd: r.get(8)?,
            started_ms: r.get(9)?,
            duration_ms: r.get(10)?,
            attempt: r.get(11)?,
        })
    })?
    .collect()
}

/// A strategy a night wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attempt {
    pub id: i64,
    pub night: i64,
    pub slug: String,
    pub dir: String,
    pub parent: Option<String>,
    pub brief: String,
    pub hash: Option<String>,
    /// The gate it stopped at, or `submitted`.
    pub reached: String,
    pub passed: bool,
    pub figures: serde_json::Value,
    pub candidate: Option<i64>,
}

#[allow(clippy::too_many_arguments)]
pub fn add_attempt(
    conn: &Connection,
    night: i64,
    slug: &str,
    dir: &str,
    parent: Option<&str>,
    brief: &str,
    source: &str,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO evolve_attempts (night_id, slug, dir, parent, brief, source, reached, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'generate', ?7)",
        params![night, slug, dir, parent, brief, source, now_ms()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The source of attempt `id`, as its author last wrote it.
pub fn set_attempt_source(conn: &Connection, id: i64, source: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE evolve_attempts SET source = ?2 WHERE id = ?1",
        params![id, source],
    )?;
    Ok(())
}

/// Where attempt `id` got to, with its figures so far.
pub fn update_attempt(
    conn: &Connection,
    id: i64,
    reached: &str,
    passed: bool,
    hash: Option<&str>,
    figures: &serde_json::Value,
    candidate: Option<i64>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE evolve_attempts SET reached = ?2, passed = ?3, hash = COALESCE(?4, hash),
         figures = ?5, candidate_id = COALESCE(?6, candidate_id) WHERE id = ?1",
        params![id, reached, passed, hash, figures.to_string(), candidate],
    )?;
    Ok(())
}

pub fn attempts(conn: &Connection, night: i64) -> rusqlite::Result<Vec<Attempt>> {
    conn.prepare(
        "SELECT id, night_id, slug, dir, parent, brief, hash, reached, passed, figures, candidate_id
         FROM evolve_attempts WHERE night_id = ?1 ORDER BY id",
    )?
    .query_map([night], |r| {
        Ok(Attempt {
            id: r.get(0)?,
            night: r.get(1)?,
            slug: r.get(2)?,
            dir: r.get(3)?,
            parent: r.get(4)?,
            brief: r.get(5)?,
            hash: r.get(6)?,
            reached: r.get(7)?,
            passed: r.get(8)?,
            figures: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
            candidate: r.get(10)?,
        })
    })?
    .collect()
}

/// The source of the attempt whose component has `hash`, if a night wrote it.
pub fn source_of(conn: &Connection, hash: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT source FROM evolve_attempts WHERE hash = ?1 ORDER BY id DESC LIMIT 1",
        [hash],
        |r| r.get(0),
    )
    .optional()
}

/// The trade lists attempts made (on their night's reference data): a
/// trade list made before is not new. Each is (attempt, night, slug,
/// trade-list hash).
pub fn trade_lists(conn: &Connection) -> rusqlite::Result<Vec<(i64, i64, String, String)>> {
    conn.prepare(
        "SELECT id, night_id, slug, json_extract(figures, '$.trades_hash') FROM evolve_attempts
         WHERE json_extract(figures, '$.trades_hash') IS NOT NULL
           AND json_extract(figures, '$.trades_hash') != '' ORDER BY id",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
    .collect()
}

/// One backtest trial, for the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub dataset: String,
    pub strategy: String,
    pub params: String,
    pub sharpe: f64,
    pub n_obs: u64,
    pub skew: f64,
    pub kurtosis: f64,
    pub trades: u64,
}

pub fn add_trials(conn: &mut Connection, night: i64, trials: &[Trial]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO evolve_trials (night_id, dataset, strategy, params, sharpe, n_obs, skew,
             kurtosis, trades, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let now = now_ms();
        for t in trials {
            stmt.execute(params![
                night,
                t.dataset,
                t.strategy,
                t.params,
                t.sharpe,
                t.n_obs as i64,
                t.skew,
                t.kurtosis,
                t.trades as i64,
                now
            ])?;
        }
    }
    tx.commit()
}

/// Every trial ever run on `dataset`: how many, and the variance of their
/// Sharpe ratios.
pub fn trial_stats(conn: &Connection, dataset: &str) -> rusqlite::Result<(u64, f64)> {
    let sharpes: Vec<f64> = conn
        .prepare("SELECT sharpe FROM evolve_trials WHERE dataset = ?1")?
        .query_map([dataset], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let n = sharpes.len() as u64;
    if n < 2 {
        return Ok((n, 0.0));
    }
    let mean = sharpes.iter().sum::<f64>() / n as f64;
    let var = sharpes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Ok((n, var))
}

/// Counts a look at the locked holdout of `dataset`; returns the looks so far.
pub fn use_holdout(
    conn: &Connection,
    night: i64,
    attempt: i64,
    dataset: &str,
) -> rusqlite::Result<u64> {
    conn.execute(
        "INSERT INTO evolve_holdout_uses (night_id, attempt_id, dataset, time_ms) VALUES (?1, ?2, ?3, ?4)",
        params![night, attempt, dataset, now_ms()],
    )?;
    conn.query_row(
        "SELECT COUNT(*) FROM evolve_holdout_uses WHERE dataset = ?1",
        [dataset],
        |r| r.get::<_, i64>(0).map(|n| n as u64),
    )
}

/// A falsifiable prediction a decision makes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub claim: String,
    /// `active_return_pct` (the main book's return over the horizon) or
    /// `active_max_drawdown_pct`.
    pub metric: String,
    /// `>=` or `<=`.
    pub comparator: String,
    pub threshold: f64,
    /// Days until it is graded.
    pub horizon_days: f64,
    /// How likely the claim is held to be, in [0, 1].
    pub probability: f64,
}

pub const METRICS: [&str; 2] = ["active_return_pct", "active_max_drawdown_pct"];

pub fn add_prediction(
    conn: &Connection,
    night: i64,
    p: &Prediction,
    made_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO evolve_predictions (night_id, claim, metric, comparator, threshold, probability,
         made_ms, due_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            night,
            p.claim,
            p.metric,
            p.comparator,
            p.threshold,
            p.probability,
            made_ms,
            made_ms + (p.horizon_days * 86_400_000.0) as i64
        ],
    )?;
    Ok(())
}

/// A prediction due for grading: (id, metric, comparator, threshold,
/// probability, made, due).
pub type Due = (i64, String, String, f64, f64, i64, i64);

pub fn due_predictions(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Due>> {
    conn.prepare(
        "SELECT id, metric, comparator, threshold, probability, made_ms, due_ms
         FROM evolve_predictions WHERE graded_ms IS NULL AND due_ms <= ?1 ORDER BY id",
    )?
    .query_map([now], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?
    .collect()
}

/// Grades prediction `id`: `outcome` is the metric's value (none: it could
/// not be measured, and the prediction is void).
pub fn grade(
    conn: &Connection,
    id: i64,
    outcome: Option<f64>,
    hit: Option<bool>,
    brier: Option<f64>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE evolve_predictions SET graded_ms = ?2, outcome = ?3, hit = ?4, brier = ?5 WHERE id = ?1",
        params![id, now_ms(), outcome, hit, brier],
    )?;
    Ok(())
}

/// The latest strategy document and its version (0: none yet).
pub fn document(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    Ok(conn
        .query_row(
            "SELECT version, text FROM evolve_documents ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, String::new())))
}

pub fn revise_document(conn: &Connection, night: i64, text: &str) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO evolve_documents (night_id, text, time_ms) VALUES (?1, ?2, ?3)",
        params![night, text, now_ms()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A night as `keel evolve history` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Night {
    pub id: i64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub status: String,
    pub providers: String,
    pub decision: Option<String>,
    pub note: String,
    pub usd: f64,
    pub tokens: u64,
    pub attempts: Vec<Attempt>,
    /// Predictions made that night: (claim, graded outcome hit, Brier).
    pub predictions: Vec<PredictionRow>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PredictionRow {
    pub claim: String,
    pub metric: String,
    pub comparator: String,
    pub threshold: f64,
    pub probability: f64,
    pub due_ms: i64,
    pub outcome: Option<f64>,
    pub hit: Option<bool>,
    pub brier: Option<f64>,
}

pub fn nights(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Night>> {
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM evolve_nights ORDER BY id DESC LIMIT ?1")?
        .query_map([limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.into_iter().map(|id| night(conn, id)).collect()
}

pub fn night(conn: &Connection, id: i64) -> rusqlite::Result<Night> {
    let mut n = conn.query_row(
        "SELECT id, started_ms, ended_ms, status, providers, decision, note, usd, tokens
         FROM evolve_nights WHERE id = ?1",
        [id],
        |r| {
            Ok(Night {
                id: r.get(0)?,
                started_ms: r.get(1)?,
                ended_ms: r.get(2)?,
                status: r.get(3)?,
                providers: r.get(4)?,
                decision: r.get(5)?,
                note: r.get(6)?,
                usd: r.get(7)?,
                tokens: r.get::<_, i64>(8)? as u64,
                attempts: Vec::new(),
                predictions: Vec::new(),
            })
        },
    )?;
    n.attempts = attempts(conn, id)?;
    n.predictions = conn
        .prepare(
            "SELECT claim, metric, comparator, threshold, probability, due_ms, outcome, hit, brier
             FROM evolve_predictions WHERE night_id = ?1 ORDER BY id",
        )?
        .query_map([id], |r| {
            Ok(PredictionRow {
                claim: r.get(0)?,
                metric: r.get(1)?,
                comparator: r.get(2)?,
                threshold: r.get(3)?,
                probability: r.get(4)?,
                due_ms: r.get(5)?,
                outcome: r.get(6)?,
                hit: r.get(7)?,
                brier: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(n)
}
