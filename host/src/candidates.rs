//! Candidates: how a new strategy artifact earns the right to trade.
//!
//! `submit` stores the artifact once by SHA-256 (with its lineage and note)
//! and runs the offline gates — *validate* (every load-time check, init, a
//! fuel-metered smoke run, determinism) and *backtest* (thresholds from
//! `candidates.toml`, beside the active strategy on the same data). The
//! *paper* gate runs in shadow inside `keel run`. `promote` makes a
//! candidate the active strategy (hot-swapped into a running engine), and
//! `rollback` restores the previous one. Every state change is audited.
//!
//! What the figures mean, which moves the lifecycle allows and which
//! version a rollback restores is decided in `keel-candidates`; this module
//! runs the gates (wasm, backtests) and reads and writes the rows.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rusqlite::{Connection, OptionalExtension, params};

use keel_candidates::deploy::{self, DeployAction, Deployment};
use keel_candidates::judge::{self, FoldReturn, Judgement};
pub use keel_candidates::{
    Actor, BacktestGate, CandidateState, CandidatesConfig, Gate, PaperGate, RollbackRule, Verdict,
};
use keel_candidates::{Move, UnknownName, transition};

use keel_backtester::engine::BacktestConfig;
use keel_backtester::fills::FillModel;
use keel_model::Params;
use keel_model::replay::Series;

use crate::backtest::{self, Dataset, Job};
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::store::audit;
use crate::validate;

/// Reads `candidates.toml` at `path`, or the defaults when it does not
/// exist. Data paths are made relative to the file.
pub fn load_config(path: &Path) -> anyhow::Result<CandidatesConfig> {
    if !path.exists() {
        return Ok(CandidatesConfig::default());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut config = CandidatesConfig::parse(&text, &path.display().to_string())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for spec in &mut config.backtest.data {
        // `SYMBOL@TIMEFRAME` names candles in the store, not a file.
        if !spec.contains('=') && spec.contains('@') && !dir.join(&*spec).exists() {
            continue;
        }
        let (symbol, file) = match spec.split_once('=') {
            Some((s, f)) => (Some(s.to_owned()), f.to_owned()),
            None => (None, spec.clone()),
        };
        let full = dir.join(&file);
        *spec = match symbol {
            Some(s) => format!("{s}={}", full.display()),
            None => full.display().to_string(),
        };
    }
    Ok(config)
}

/// Who submitted a candidate, and what it descends from.
#[derive(Debug, Clone)]
pub struct Submission {
    pub note: String,
    /// A person or the evolution ([`Actor::submits`]).
    pub submitted_by: Actor,
    /// The full SHA-256 of the strategy it was derived from (see
    /// [`resolve_parent`]).
    pub parent: Option<String>,
    /// Where it came from (file or crate directory).
    pub source: String,
}

/// One gate's verdict, with the figures it judged.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    pub gate: Gate,
    pub verdict: Verdict,
    pub figures: serde_json::Value,
    pub detail: String,
}

impl GateResult {
    /// `judgement`, stored with `figures`.
    pub fn judged(judgement: &Judgement, figures: serde_json::Value) -> GateResult {
        GateResult {
            gate: judgement.gate,
            verdict: judgement.verdict,
            figures,
            detail: judgement.detail(),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }
}

/// A stored candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub hash: String,
    pub name: String,
    pub version: String,
    pub parent: Option<String>,
    pub submitted_by: Actor,
    pub note: String,
    pub source: String,
    pub state: CandidateState,
    pub created_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

/// Stores a candidate and runs its offline gates. A hash already submitted
/// is not stored twice: its existing id comes back.
pub fn submit(
    conn: &mut Connection,
    sandbox: &Sandbox,
    config: &CandidatesConfig,
    artifact: &StrategyArtifact,
    submission: &Submission,
) -> anyhow::Result<(i64, bool, Vec<GateResult>)> {
    // Wasm that fails its checks is a candidate the gates judge; a file
    // that is no wasm at all is not stored.
    if !artifact.bytes.starts_with(b"\0asm") {
        bail!(
            "{}: not a WebAssembly component (no \\0asm header); nothing stored",
            artifact.origin.display()
        );
    }
    // The gate's data first: a bad `candidates.toml` stores nothing.
    let db = PathBuf::from(conn.path().unwrap_or("keel.db"));
    let data = gate_data(config, &db)?;
    if config.backtest.walk_forward > 0 {
        backtest::walk_forward_windows(&data, config.backtest.walk_forward)
            .context("candidates.toml: backtest.walk_forward")?;
    }
    let hash = artifact.hash.to_hex();
    let existing: Option<(i64, CandidateState)> = conn
        .query_row(
            "SELECT id, state FROM candidates WHERE hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, named(r, 1, CandidateState::parse)?)),
        )
        .optional()?;
    let report = match existing {
        Some((id, state)) if state != CandidateState::Submitted => {
            return Ok((id, true, Vec::new()));
        }
        // Stored, but its gates never came to a verdict (the process died,
        // say): they run again.
        Some((id, _)) => {
            let report = validate::validate_artifact(sandbox, artifact);
            return judge_offline(conn, sandbox, config, &data, artifact, id, &report)
                .map(|gates| (id, false, gates));
        }
        None => validate::validate_artifact(sandbox, artifact),
    };
    let (name, version) = report
        .info
        .as_ref()
        .map_or(("?".to_owned(), "?".to_owned()), |i| {
            (i.name.clone(), i.version.clone())
        });
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    store_blob(&tx, artifact)?;
    tx.execute(
        "INSERT INTO candidates (hash, name, version, parent, submitted_by, note, source, state, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            hash,
            name,
            version,
            submission.parent,
            submission.submitted_by.as_str(),
            submission.note,
            submission.source,
            CandidateState::Submitted.as_str(),
            now_ms()
        ],
    )?;
    let id = tx.last_insert_rowid();
    audit(
        &tx,
        submission.submitted_by.as_str(),
        "submit",
        &format!(
            "candidate {id}: {name} {version} ({})",
            artifact.hash.short()
        ),
    )?;
    tx.commit()?;
    let gates = judge_offline(conn, sandbox, config, &data, artifact, id, &report)?;
    Ok((id, false, gates))
}

/// Records the validate gate from `report` and, when it passed, runs and
/// records the backtest gate on `data`; the candidate is then `gated` or
/// `failed`.
fn judge_offline(
    conn: &Connection,
    sandbox: &Sandbox,
    config: &CandidatesConfig,
    data: &[Dataset],
    artifact: &StrategyArtifact,
    id: i64,
    report: &validate::ValidationReport,
) -> anyhow::Result<Vec<GateResult>> {
    let mut gates = Vec::new();
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|c| match &c.outcome {
            Ok(d) => serde_json::json!({"check": c.name, "ok": true, "detail": d}),
            Err(e) => serde_json::json!({"check": c.name, "ok": false, "detail": e}),
        })
        .collect();
    let validate = GateResult::judged(
        &judge::validate(report.failures()),
        serde_json::json!({ "checks": checks }),
    );
    record_gate(conn, id, &validate)?;
    gates.push(validate.clone());
    if validate.passed() {
        let loaded = sandbox.load(artifact)?;
        let gate = backtest_gate(conn, sandbox, config, data, &loaded)?;
        record_gate(conn, id, &gate)?;
        gates.push(gate);
    }
    let verdict = Verdict::from_passed(gates.iter().all(GateResult::passed));
    let state = transition(CandidateState::Submitted, Move::OfflineGates(verdict))?;
    set_state(
        conn,
        id,
        state,
        Actor::Keel,
        &format!("offline gates: {state}"),
    )?;
    Ok(gates)
}

fn record_gate(conn: &Connection, id: i64, gate: &GateResult) -> rusqlite::Result<()> {
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

fn set_state(
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
    audit(
        conn,
        actor.as_str(),
        &format!("candidate {id} {state}"),
        reason,
    )
}

/// Column `i` of `r`, a name of one of the lifecycle's enums.
fn named<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    parse: fn(&str) -> Result<T, UnknownName>,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn gate_data(config: &CandidatesConfig, db: &Path) -> anyhow::Result<Vec<Dataset>> {
    if config.backtest.data.is_empty() {
        let candles =
            keel_model::synth::random_walk(11, 4000, 1_767_225_600_000, 60_000, 100.0, 0.004);
        let series = Series {
            symbol: "SAMPLE/USD".into(),
            candles,
            bar_ms: 60_000,
        };
        let reference = keel_backtester::report::DataRef {
            symbol: series.symbol.clone(),
            source: "sample:4000".into(),
            bars: series.candles.len(),
            first: keel_model::candles::format_time(series.candles[0].time_ms),
            last: keel_model::candles::format_time(
                series.candles[series.candles.len() - 1].time_ms,
            ),
            sha256: keel_backtester::report::candles_sha256(&series.candles),
        };
        return Ok(vec![Dataset { series, reference }]);
    }
    backtest::load_data(&config.backtest.data, db, &[])
}

fn metrics_json(m: &keel_backtester::Metrics) -> serde_json::Value {
    serde_json::json!({
        "trades": m.trades,
        "total_return_pct": m.total_return * 100.0,
        "sharpe": m.sharpe,
        "max_drawdown_pct": m.max_drawdown * 100.0,
        "profit_factor": m.profit_factor,
        "win_rate": m.win_rate,
    })
}

/// Backtests `loaded` (default parameters) on the gate's data, beside the
/// active strategy, and judges it against the thresholds.
fn backtest_gate(
    conn: &Connection,
    sandbox: &Sandbox,
    config: &CandidatesConfig,
    data: &[Dataset],
    loaded: &LoadedStrategy,
) -> anyhow::Result<GateResult> {
    let gate = &config.backtest;
    let bt = BacktestConfig {
        fills: FillModel {
            fee_bps: gate.fee_bps,
            slippage_bps: gate.slippage_bps,
            ..FillModel::default()
        },
        record_signals: false,
        record_fills: false,
        ..BacktestConfig::default()
    };
    let run = |strategy: &LoadedStrategy| -> anyhow::Result<keel_backtester::Metrics> {
        let params = Params::resolve(&strategy.info.params, &[])?;
        let job = Job {
            strategy,
            params,
            window: None,
        };
        Ok(backtest::run_job(sandbox, &job, data, &bt)?.metrics)
    };
    let m = run(loaded)?;
    let mut folds = Vec::new();
    if gate.walk_forward > 0 {
        let grid = vec![Params::resolve(&loaded.info.params, &[])?];
        let wf = backtest::walk_forward(
            sandbox,
            loaded,
            &grid,
            data,
            &bt,
            gate.walk_forward,
            |_, _| {},
        )?;
        folds = wf
            .folds
            .iter()
            .map(|fold| FoldReturn {
                fold: fold.fold,
                return_pct: fold.out_of_sample_metrics.total_return * 100.0,
            })
            .collect();
    }
    let judgement = judge::backtest(gate, &m, &folds);
    let active_figures = match active(conn)? {
        Some(hash) if hash != loaded.hash.to_hex() => {
            let artifact = load_blob(conn, &hash)?;
            let active = sandbox.load(&artifact)?;
            Some(metrics_json(&run(&active)?))
        }
        _ => None,
    };
    let oos: Vec<f64> = folds.iter().map(|f| f.return_pct).collect();
    Ok(GateResult::judged(
        &judgement,
        serde_json::json!({
            "data": data.iter().map(|d| d.reference.source.clone()).collect::<Vec<_>>(),
            "candidate": metrics_json(&m),
            "active": active_figures,
            "out_of_sample_return_pct": oos,
        }),
    ))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Candidate> {
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

const COLUMNS: &str =
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
