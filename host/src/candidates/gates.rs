//! The offline gates run: validate's report recorded, and the backtest
//! gate's runs on the gate's data beside the active strategy, judged
//! against `candidates.toml`.

use std::path::Path;

use rusqlite::Connection;

use keel_candidates::judge::{self, FoldReturn};
use keel_candidates::{Actor, CandidateState, CandidatesConfig, Verdict};
use keel_candidates::{Move, transition};

use keel_backtester::engine::BacktestConfig;
use keel_backtester::fills::FillModel;
use keel_model::Params;
use keel_model::replay::Series;

use crate::backtest::{self, Dataset, Job};
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::validate;

use super::GateResult;
use super::rows::{active, load_blob, record_gate, set_state};

/// Records the validate gate from `report` and, when it passed, runs and
/// records the backtest gate on `data`; the candidate is then `gated` or
/// `failed`.
pub(super) fn judge_offline(
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

pub(super) fn gate_data(config: &CandidatesConfig, db: &Path) -> anyhow::Result<Vec<Dataset>> {
    if config.backtest.data.is_empty() {
        let candles =
            keel_model::synth::random_walk(11, 4000, 1_767_225_600_000, 60_000, 100.0, 0.004);
        let series = Series {
            symbol: "SAMPLE/USD".into(),
            candles,
            bar_ms: 60_000,
        };
        let reference = keel_backtester::report::DataRef::of(
            &series.symbol,
            "sample:4000".into(),
            &series.candles,
        );
        return Ok(vec![Dataset { series, reference }]);
    }
    backtest::load_data(&config.backtest.data, &Default::default(), db)
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

/// The bars a data set spans: how many, the first's and the last's time.
fn span(d: &Dataset) -> serde_json::Value {
    let candles = &d.series.candles;
    serde_json::json!({
        "symbol": d.series.symbol,
        "bars": candles.len(),
        "first_ms": candles.first().map(|c| c.time_ms),
        "last_ms": candles.last().map(|c| c.time_ms),
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
            "spans": data.iter().map(span).collect::<Vec<_>>(),
            "candidate": metrics_json(&m),
            "active": active_figures,
            "out_of_sample_return_pct": oos,
        }),
    ))
}
