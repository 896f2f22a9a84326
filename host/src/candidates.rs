//! Candidates: how a new strategy artifact earns the right to trade.
//!
//! `submit` stores the artifact once by SHA-256 (with its lineage and note)
//! and runs the offline gates — *validate* (every load-time check, init, a
//! fuel-metered smoke run, determinism) and *backtest* (thresholds from
//! `candidates.toml`, beside the active strategy on the same data). The
//! *paper* gate runs in shadow inside `keel run`. `promote` makes a
//! candidate the active strategy (hot-swapped into a running engine), and
//! `rollback` restores the previous one. Every state change is audited.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rusqlite::{Connection, OptionalExtension, params};

use keel_backtester::engine::BacktestConfig;
use keel_backtester::fills::FillModel;
use keel_model::Params;
use keel_model::replay::Series;

use crate::backtest::{self, Dataset, Job};
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::store::audit;
use crate::validate;

/// `candidates.toml`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidatesConfig {
    pub backtest: BacktestGate,
    pub paper: PaperGate,
    pub rollback: RollbackRule,
}

/// The backtest gate's data and thresholds.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacktestGate {
    /// `[SYMBOL=]FILE` (relative to `candidates.toml`) or
    /// `SYMBOL@TIMEFRAME` (candles in the store); empty: the built-in
    /// seeded sample.
    pub data: Vec<String>,
    #[serde(deserialize_with = "bounded::trades")]
    pub min_trades: usize,
    #[serde(deserialize_with = "bounded::sharpe")]
    pub min_sharpe: f64,
    #[serde(deserialize_with = "bounded::max_drawdown_pct")]
    pub max_drawdown_pct: f64,
    #[serde(deserialize_with = "bounded::profit_factor")]
    pub min_profit_factor: f64,
    /// Walk-forward folds (0: none); each fold's out-of-sample return must
    /// not be below `min_oos_return_pct`.
    #[serde(deserialize_with = "bounded::folds")]
    pub walk_forward: usize,
    #[serde(deserialize_with = "bounded::return_pct")]
    pub min_oos_return_pct: f64,
    #[serde(deserialize_with = "bounded::fee_bps")]
    pub fee_bps: f64,
    #[serde(deserialize_with = "bounded::slippage_bps")]
    pub slippage_bps: f64,
}

impl Default for BacktestGate {
    fn default() -> Self {
        BacktestGate {
            data: Vec::new(),
            min_trades: 10,
            min_sharpe: 0.0,
            max_drawdown_pct: 25.0,
            min_profit_factor: 1.0,
            walk_forward: 0,
            min_oos_return_pct: -100.0,
            fee_bps: 10.0,
            slippage_bps: 5.0,
        }
    }
}

/// The paper gate's criteria.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperGate {
    /// Candidates run in shadow at once.
    #[serde(deserialize_with = "bounded::slots")]
    pub slots: usize,
    #[serde(deserialize_with = "bounded::trades")]
    pub min_trades: usize,
    #[serde(deserialize_with = "bounded::max_drawdown_pct")]
    pub max_drawdown_pct: f64,
    /// Must promotion wait for this gate?
    pub required: bool,
}

impl Default for PaperGate {
    fn default() -> Self {
        PaperGate {
            slots: 3,
            min_trades: 20,
            max_drawdown_pct: 20.0,
            required: true,
        }
    }
}

/// When a new version is rolled back by itself.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackRule {
    /// Loss in a day since promotion, percent of equity at promotion.
    #[serde(deserialize_with = "bounded::daily_loss_pct")]
    pub daily_loss_pct: f64,
}

impl Default for RollbackRule {
    fn default() -> Self {
        RollbackRule {
            daily_loss_pct: 15.0,
        }
    }
}

/// `candidates.toml`'s numbers, each checked against its range in
/// [`crate::ranges`] as it is read (the error then names its line).
mod bounded {
    use crate::ranges;
    use serde::Deserializer;

    pub(super) fn trades<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        ranges::TRADES.deserialize("min_trades", d)
    }
    pub(super) fn sharpe<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::SHARPE.deserialize("min_sharpe", d)
    }
    pub(super) fn max_drawdown_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::PERCENT.deserialize("max_drawdown_pct", d)
    }
    pub(super) fn daily_loss_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::PERCENT.deserialize("daily_loss_pct", d)
    }
    pub(super) fn profit_factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::PROFIT_FACTOR.deserialize("min_profit_factor", d)
    }
    pub(super) fn folds<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        ranges::GATE_FOLDS.deserialize("walk_forward", d)
    }
    pub(super) fn return_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::RETURN_PCT.deserialize("min_oos_return_pct", d)
    }
    pub(super) fn fee_bps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::BPS.deserialize("fee_bps", d)
    }
    pub(super) fn slippage_bps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        ranges::BPS.deserialize("slippage_bps", d)
    }
    pub(super) fn slots<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        ranges::SHADOW_SLOTS.deserialize("slots", d)
    }
}

impl CandidatesConfig {
    /// Reads `path`, or the defaults when it does not exist. Data paths are
    /// made relative to the file.
    pub fn load(path: &Path) -> anyhow::Result<CandidatesConfig> {
        if !path.exists() {
            return Ok(CandidatesConfig::default());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let mut config: CandidatesConfig = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            let msg = keel_model::shown::message(e.message().trim());
            anyhow!("{}:{line}: {msg}", path.display())
        })?;
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
}

/// Who submitted a candidate, and what it descends from.
#[derive(Debug, Clone)]
pub struct Submission {
    pub note: String,
    /// "person" or "evolution".
    pub submitted_by: String,
    /// The full SHA-256 of the strategy it was derived from (see
    /// [`resolve_parent`]).
    pub parent: Option<String>,
    /// Where it came from (file or crate directory).
    pub source: String,
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub figures: serde_json::Value,
    pub detail: String,
}

/// A stored candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub hash: String,
    pub name: String,
    pub version: String,
    pub parent: Option<String>,
    pub submitted_by: String,
    pub note: String,
    pub source: String,
    pub state: String,
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
        "INSERT INTO deployments (hash, action, actor, reason, time_ms) VALUES (?1, 'initial', 'keel', 'first strategy run', ?2)",
        params![artifact.hash.to_hex(), now_ms()],
    )?;
    audit(
        conn,
        "keel",
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
    let prefix = text.to_ascii_lowercase();
    if prefix.len() < 6 || prefix.len() > 64 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "--parent {text}: no candidate has that id, and it is not a SHA-256 (or 6 or more of its first hex digits)"
        );
    }
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
    let mut line = Vec::new();
    let mut next = get(conn, id)?.parent;
    while let Some(hash) = next.take() {
        if line.len() == 100 || line.contains(&hash) {
            break;
        }
        next = conn
            .query_row(
                "SELECT parent FROM candidates WHERE hash = ?1",
                [&hash],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten();
        line.push(hash);
    }
    Ok(line)
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
    let existing: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, state FROM candidates WHERE hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let report = match existing {
        Some((id, state)) if state != "submitted" => return Ok((id, true, Vec::new())),
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'submitted', ?8)",
        params![
            hash,
            name,
            version,
            submission.parent,
            submission.submitted_by,
            submission.note,
            submission.source,
            now_ms()
        ],
    )?;
    let id = tx.last_insert_rowid();
    audit(
        &tx,
        &submission.submitted_by,
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
    let validate = GateResult {
        gate: "validate".into(),
        passed: report.passed(),
        figures: serde_json::json!({ "checks": checks }),
        detail: if report.passed() {
            "every check passed".into()
        } else {
            report.failures().join("; ")
        },
    };
    record_gate(conn, id, &validate)?;
    gates.push(validate.clone());
    if validate.passed {
        let loaded = sandbox.load(artifact)?;
        let gate = backtest_gate(conn, sandbox, config, data, &loaded)?;
        record_gate(conn, id, &gate)?;
        gates.push(gate);
    }
    let state = if gates.iter().all(|g| g.passed) {
        "gated"
    } else {
        "failed"
    };
    set_state(conn, id, state, "keel", &format!("offline gates: {state}"))?;
    Ok(gates)
}

fn record_gate(conn: &Connection, id: i64, gate: &GateResult) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO gate_results (candidate_id, gate, verdict, figures, detail, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            gate.gate,
            if gate.passed { "pass" } else { "fail" },
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
    let gated: bool = conn.query_row(
        "SELECT state = 'gated' FROM candidates WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    if !gated {
        return Ok(());
    }
    let state = if gate.passed { "passed" } else { "failed" };
    set_state(
        conn,
        id,
        state,
        "keel",
        &format!("paper gate: {}", gate.detail),
    )
}

fn set_state(
    conn: &Connection,
    id: i64,
    state: &str,
    actor: &str,
    reason: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE candidates SET state = ?2 WHERE id = ?1",
        params![id, state],
    )?;
    audit(conn, actor, &format!("candidate {id} {state}"), reason)
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
    let mut failures = Vec::new();
    if m.trades < gate.min_trades {
        failures.push(format!(
            "{} trades, fewer than {}",
            m.trades, gate.min_trades
        ));
    }
    match m.sharpe {
        Some(s) if s >= gate.min_sharpe => {}
        Some(s) => failures.push(format!("Sharpe {s:.2} below {:.2}", gate.min_sharpe)),
        None => failures.push("no Sharpe ratio (flat equity)".into()),
    }
    if m.max_drawdown * 100.0 > gate.max_drawdown_pct {
        failures.push(format!(
            "max drawdown {:.2}% over {:.2}%",
            m.max_drawdown * 100.0,
            gate.max_drawdown_pct
        ));
    }
    match m.profit_factor {
        Some(pf) if pf >= gate.min_profit_factor => {}
        Some(pf) => failures.push(format!(
            "profit factor {pf:.2} below {:.2}",
            gate.min_profit_factor
        )),
        None => failures.push("no profit factor (no losing or no winning trade)".into()),
    }
    let mut oos = Vec::new();
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
        for fold in &wf.folds {
            let r = fold.out_of_sample_metrics.total_return * 100.0;
            oos.push(r);
            if r < gate.min_oos_return_pct {
                failures.push(format!(
                    "fold {} out-of-sample return {r:.2}% below {:.2}%",
                    fold.fold, gate.min_oos_return_pct
                ));
            }
        }
    }
    let active_figures = match active(conn)? {
        Some(hash) if hash != loaded.hash.to_hex() => {
            let artifact = load_blob(conn, &hash)?;
            let active = sandbox.load(&artifact)?;
            Some(metrics_json(&run(&active)?))
        }
        _ => None,
    };
    Ok(GateResult {
        gate: "backtest".into(),
        passed: failures.is_empty(),
        figures: serde_json::json!({
            "data": data.iter().map(|d| d.reference.source.clone()).collect::<Vec<_>>(),
            "candidate": metrics_json(&m),
            "active": active_figures,
            "out_of_sample_return_pct": oos,
        }),
        detail: if failures.is_empty() {
            "every threshold met".into()
        } else {
            failures.join("; ")
        },
    })
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        id: r.get(0)?,
        hash: r.get(1)?,
        name: r.get(2)?,
        version: r.get(3)?,
        parent: r.get(4)?,
        submitted_by: r.get(5)?,
        note: r.get(6)?,
        source: r.get(7)?,
        state: r.get(8)?,
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
                gate: r.get(0)?,
                passed: r.get::<_, String>(1)? == "pass",
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

pub fn reject(conn: &Connection, id: i64, actor: &str, reason: &str) -> anyhow::Result<()> {
    let c = get(conn, id)?;
    if c.state == "promoted" {
        bail!("candidate {id} is the active strategy; roll back instead");
    }
    set_state(conn, id, "rejected", actor, reason)?;
    Ok(())
}

/// Makes candidate `id` the active strategy. Refused unless every required
/// gate passed, or `force` (a reason, audited) is given.
pub fn promote(
    conn: &Connection,
    config: &CandidatesConfig,
    id: i64,
    actor: &str,
    force: Option<&str>,
) -> anyhow::Result<Candidate> {
    let c = get(conn, id)?;
    if matches!(c.state.as_str(), "rejected" | "promoted") {
        bail!("candidate {id} is {}; it cannot be promoted", c.state);
    }
    let results = gates(conn, id)?;
    let passed = |gate: &str| {
        results
            .iter()
            .rev()
            .find(|(g, _)| g.gate == gate)
            .map(|(g, _)| g.passed)
    };
    let mut missing = Vec::new();
    for gate in ["validate", "backtest", "paper"] {
        if gate == "paper" && !config.paper.required {
            continue;
        }
        match passed(gate) {
            Some(true) => {}
            Some(false) => missing.push(format!("{gate} failed")),
            None => missing.push(format!("{gate} has not run")),
        }
    }
    if !missing.is_empty() {
        match force {
            None => bail!(
                "candidate {id} cannot be promoted: {} (use --force --reason to override)",
                missing.join(", ")
            ),
            Some(reason) => audit(
                conn,
                actor,
                &format!("candidate {id} forced"),
                &format!("promoted despite: {}; reason: {reason}", missing.join(", ")),
            )?,
        }
    }
    if let Some(previous) = active(conn)? {
        conn.execute(
            "UPDATE candidates SET state = 'retired' WHERE hash = ?1 AND state = 'promoted'",
            [&previous],
        )?;
    }
    conn.execute(
        "INSERT INTO deployments (hash, candidate_id, action, actor, reason, forced, time_ms) VALUES (?1, ?2, 'promote', ?3, ?4, ?5, ?6)",
        params![
            c.hash,
            id,
            actor,
            force.unwrap_or("every gate passed"),
            i64::from(force.is_some()),
            now_ms()
        ],
    )?;
    set_state(
        conn,
        id,
        "promoted",
        actor,
        force.unwrap_or("every gate passed"),
    )?;
    get(conn, id)
}

/// The active versions the deployments describe, oldest first, each with
/// its candidate id: the first run and every promotion put a version on
/// top, a rollback takes the top one off and goes back to the one under it.
fn deployed_versions(conn: &Connection) -> rusqlite::Result<Vec<(String, Option<i64>)>> {
    let mut stmt =
        conn.prepare("SELECT hash, candidate_id, action FROM deployments ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut versions: Vec<(String, Option<i64>)> = Vec::new();
    for row in rows {
        let (hash, candidate, action) = row?;
        if action == "rollback" {
            versions.pop();
            // What the row says became active is the truth, should the
            // history say otherwise.
            if versions.last().is_none_or(|(top, _)| *top != hash) {
                versions.push((hash, candidate));
            }
        } else {
            versions.push((hash, candidate));
        }
    }
    Ok(versions)
}

/// Restores the active version from before the current one was deployed:
/// rolling back twice after two promotions restores the first version, never
/// the one just rolled back. The version rolled back is retired; a restored
/// candidate is the promoted one again. Returns the restored hash.
pub fn rollback(conn: &Connection, actor: &str, reason: &str) -> anyhow::Result<String> {
    let mut versions = deployed_versions(conn)?;
    let Some((current, current_candidate)) = versions.pop() else {
        bail!("nothing has been deployed; there is nothing to roll back");
    };
    let Some((previous, previous_candidate)) = versions.pop() else {
        bail!("there is no earlier version to roll back to");
    };
    conn.execute(
        "INSERT INTO deployments (hash, candidate_id, action, actor, reason, time_ms) VALUES (?1, ?2, 'rollback', ?3, ?4, ?5)",
        params![previous, previous_candidate, actor, reason, now_ms()],
    )?;
    if let Some(id) = current_candidate {
        set_state(
            conn,
            id,
            "retired",
            actor,
            &format!("rolled back: {reason}"),
        )?;
    }
    if let Some(id) = previous_candidate {
        set_state(
            conn,
            id,
            "promoted",
            actor,
            &format!("restored by a rollback: {reason}"),
        )?;
    }
    audit(
        conn,
        actor,
        "rollback",
        &format!(
            "{} replaced by {}: {reason}",
            &current[..12.min(current.len())],
            &previous[..12.min(previous.len())]
        ),
    )?;
    Ok(previous)
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

    fn state(conn: &Connection, id: i64) -> String {
        get(conn, id).expect("candidate").state
    }

    #[test]
    fn a_paper_verdict_moves_only_a_candidate_still_waiting_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = crate::store::Store::open(&dir.path().join("keel.db")).expect("store");
        let conn = store.conn();
        let (waiting, _) = candidate(conn, b"waiting");
        let (rejected, _) = candidate(conn, b"rejected");
        reject(conn, rejected, "operator", "no").expect("reject");
        let verdict = |passed| GateResult {
            gate: "paper".into(),
            passed,
            figures: serde_json::json!({}),
            detail: "test".into(),
        };
        record_paper_gate(conn, waiting, &verdict(true)).expect("verdict");
        record_paper_gate(conn, rejected, &verdict(true)).expect("verdict");
        assert_eq!(state(conn, waiting), "passed");
        assert_eq!(state(conn, rejected), "rejected");
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
            promote(conn, &config, id, "operator", Some("test")).expect("promote");
        }
        assert_eq!(active(conn).expect("active"), Some(c_hash.clone()));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            ("retired".into(), "promoted".into())
        );

        // The first rollback restores the second version, which is the
        // promoted candidate again.
        assert_eq!(rollback(conn, "operator", "one").expect("rollback"), b_hash);
        assert_eq!(active(conn).expect("active"), Some(b_hash));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            ("promoted".into(), "retired".into())
        );
        // The second goes further back, not forward to the third.
        assert_eq!(
            rollback(conn, "operator", "two").expect("rollback"),
            first.hash.to_hex()
        );
        assert_eq!(active(conn).expect("active"), Some(first.hash.to_hex()));
        assert_eq!(
            (state(conn, b), state(conn, c)),
            ("retired".into(), "retired".into())
        );
        let err = rollback(conn, "operator", "three").expect_err("nothing earlier");
        assert_eq!(
            err.to_string(),
            "there is no earlier version to roll back to"
        );

        // A promotion after the rollbacks is rolled back to the first again.
        promote(conn, &config, c, "operator", Some("again")).expect("promote");
        assert_eq!(
            rollback(conn, "operator", "four").expect("rollback"),
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
