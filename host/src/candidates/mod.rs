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
//! runs the gates (wasm, backtests) and reads and writes the rows: `rows`
//! holds the SQL of candidates, artifacts and gate results, `gates` runs
//! the offline gates, `promotion` promotes, rejects and rolls back.

mod gates;
mod promotion;
mod rows;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};

use keel_candidates::judge::Judgement;
pub use keel_candidates::{
    Actor, BacktestGate, CandidateState, CandidatesConfig, Gate, PaperGate, RollbackRule, Verdict,
};

use crate::backtest;
use crate::sandbox::{Sandbox, StrategyArtifact};
use crate::store::{audit, now_ms};
use crate::validate;

use gates::{gate_data, judge_offline};
use rows::named;

pub use promotion::{promote, reject, rollback};
pub use rows::{
    active, describe_hash, gates, get, history, lineage, list, load_blob, record_initial,
    record_paper_gate, resolve_parent, store_blob,
};

/// The file read when no `--config`/`--candidates` names one, if it exists.
pub const DEFAULT_CONFIG: &str = "candidates.toml";

/// The candidates file a command reads: the one `named` (which must
/// exist: a mistyped name is not quietly the defaults), else
/// `./candidates.toml` when there is one; `None`: the built-in defaults.
pub fn config_file(named: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match named {
        Some(path) if !path.is_file() => bail!(
            "{}: no such file (the candidates' gates and thresholds; see examples/candidates.toml)",
            path.display()
        ),
        Some(path) => Ok(Some(path.to_path_buf())),
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file())),
    }
}

/// The gates' settings from the file `config_file` picks, or the defaults.
pub fn load_named_config(named: Option<&Path>) -> anyhow::Result<CandidatesConfig> {
    match config_file(named)? {
        Some(path) => load_config(&path),
        None => Ok(CandidatesConfig::default()),
    }
}

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

/// The data the evolution's gates run on: `specs` when given (as
/// `--data` takes them), else the candidate gates' data.
pub fn gate_data_for(
    config: &CandidatesConfig,
    db: &std::path::Path,
    specs: &[String],
) -> anyhow::Result<Vec<crate::backtest::Dataset>> {
    if specs.is_empty() {
        gate_data(config, db)
    } else {
        backtest::load_data(specs, &Default::default(), db)
    }
}

/// Stores a candidate and runs its offline gates on the gate's data
/// (`candidates.toml`). A hash already submitted is not stored twice: its
/// existing id comes back.
pub fn submit(
    conn: &mut Connection,
    sandbox: &Sandbox,
    config: &CandidatesConfig,
    artifact: &StrategyArtifact,
    submission: &Submission,
) -> anyhow::Result<(i64, bool, Vec<GateResult>)> {
    // The gate's data first: a bad `candidates.toml` stores nothing.
    let db = PathBuf::from(conn.path().unwrap_or("keel.db"));
    let data = gate_data(config, &db)?;
    submit_on(conn, sandbox, config, &data, artifact, submission)
}

/// `submit`, the backtest gate run on `data` (the evolution's: the gate's
/// data cut before its locked holdout).
pub fn submit_on(
    conn: &mut Connection,
    sandbox: &Sandbox,
    config: &CandidatesConfig,
    data: &[backtest::Dataset],
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
    if config.backtest.walk_forward > 0 {
        backtest::walk_forward_windows(data, config.backtest.walk_forward)
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
            return judge_offline(conn, sandbox, config, data, artifact, id, &report)
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
    let event = serde_json::json!({
        "id": id, "state": CandidateState::Submitted.as_str(), "name": name, "version": version,
        "hash": hash, "actor": submission.submitted_by.as_str(),
    });
    crate::store::events::emit(&tx, crate::store::events::Kind::Candidate, event)?;
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
    let gates = judge_offline(conn, sandbox, config, data, artifact, id, &report)?;
    Ok((id, false, gates))
}
