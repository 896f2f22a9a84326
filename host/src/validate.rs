//! Every check an artifact must pass before it may run: the load-time checks,
//! `init` with its defaults, a fuel-metered smoke run through the backtester
//! on seeded synthetic candles, and determinism (a second run under a different random seed must
//! give the same signals). `keel strategy validate` and the candidate gate
//! both use this.

use std::path::Path;

use keel_model::replay::Series;
use keel_model::{Params, Signal, StrategyInfo, Timeframe, synth};

use crate::sandbox::{Binding, LoadedStrategy, Sandbox, StrategyHash};

/// One check and its outcome: `Ok(detail)` or `Err(reason)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// Everything validation found.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    pub origin: String,
    pub hash: Option<StrategyHash>,
    pub info: Option<StrategyInfo>,
    pub checks: Vec<Check>,
}

impl ValidationReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }

    /// The reasons of every failed check.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter_map(|c| c.outcome.as_ref().err().map(|e| format!("{}: {e}", c.name)))
            .collect()
    }
}

/// Bars in the smoke run (at least; more when the warm-up is long).
const SMOKE_BARS: usize = 600;

/// Validates the `.wasm` file at `path`.
pub fn validate_file(sandbox: &Sandbox, path: &Path) -> ValidationReport {
    match crate::sandbox::StrategyArtifact::read(path, sandbox.limits().max_wasm_bytes) {
        Ok(artifact) => validate_artifact(sandbox, &artifact),
        Err(e) => ValidationReport {
            origin: path.display().to_string(),
            hash: None,
            info: None,
            checks: vec![Check {
                name: "load",
                outcome: Err(e.to_string()),
            }],
        },
    }
}

/// Validates an artifact already in memory (a stored candidate, say).
pub fn validate_artifact(
    sandbox: &Sandbox,
    artifact: &crate::sandbox::StrategyArtifact,
) -> ValidationReport {
    validate_and_load(sandbox, artifact).0
}

/// [`validate_artifact`], also giving back the strategy as loaded for the
/// checks (when it loaded), so a caller about to run it need not load it
/// again (`keel dev`).
pub fn validate_and_load(
    sandbox: &Sandbox,
    artifact: &crate::sandbox::StrategyArtifact,
) -> (ValidationReport, Option<LoadedStrategy>) {
    let mut report = ValidationReport {
        origin: artifact.origin.display().to_string(),
        hash: Some(artifact.hash),
        info: None,
        checks: Vec::new(),
    };
    let loaded = match sandbox.load(artifact) {
        Ok(l) => l,
        Err(e) => {
            report.checks.push(Check {
                name: "load",
                outcome: Err(e.to_string()),
            });
            return (report, None);
        }
    };
    report.info = Some(loaded.info.clone());
    report.checks.push(Check {
        name: "load",
        outcome: Ok(format!(
            "component of {} bytes, imports only keel:strategy and WASI, exports the keel:strategy@{} world",
            loaded.size, loaded.contract
        )),
    });
    validate_loaded(sandbox, &loaded, &mut report.checks);
    (report, Some(loaded))
}

/// The checks after loading: init, smoke run, determinism.
pub fn validate_loaded(sandbox: &Sandbox, loaded: &LoadedStrategy, checks: &mut Vec<Check>) {
    let series = smoke_series(&loaded.info);
    let first = match smoke_run(sandbox, loaded, &series, 1) {
        Ok(run) => run,
        Err((name, reason)) => {
            checks.push(Check {
                name,
                outcome: Err(reason),
            });
            return;
        }
    };
    checks.push(Check {
        name: "init",
        outcome: Ok("accepted its default parameters".into()),
    });
    checks.push(Check {
        name: "smoke run",
        outcome: Ok(format!(
            "{} bars of seeded synthetic data on {} symbol(s): {} signals, no fault, no limit hit",
            first.steps,
            series.len(),
            first.signals.len()
        )),
    });
    let second = match smoke_run(sandbox, loaded, &series, 2) {
        Ok(run) => run,
        Err((_, reason)) => {
            checks.push(Check {
                name: "determinism",
                outcome: Err(format!("second run failed: {reason}")),
            });
            return;
        }
    };
    let outcome = match first
        .signals
        .iter()
        .zip(&second.signals)
        .position(|(a, b)| a != b)
    {
        None if first.signals.len() == second.signals.len() => {
            Ok("two runs under different random seeds gave identical signals".into())
        }
        position => Err(format!(
            "signals differ between two runs on the same data (first difference at signal {}): the strategy depends on randomness",
            position.unwrap_or(first.signals.len().min(second.signals.len()))
        )),
    };
    checks.push(Check {
        name: "determinism",
        outcome,
    });
}

/// Seeded random walks, one per declared symbol, in the declared timeframe.
fn smoke_series(info: &StrategyInfo) -> Vec<Series> {
    let bar_ms = Timeframe::parse(&info.timeframe).map_or(60_000, Timeframe::duration_ms);
    let bars = SMOKE_BARS
        .max(3 * info.warmup_bars as usize + 100)
        .min(20_000);
    let symbols = if info.symbols.is_empty() {
        vec!["TEST/USD".to_owned()]
    } else {
        info.symbols.clone()
    };
    symbols
        .into_iter()
        .enumerate()
        .map(|(i, symbol)| Series {
            symbol,
            candles: synth::random_walk(
                1000 + i as u64,
                bars,
                1_704_067_200_000,
                bar_ms,
                100.0,
                0.02,
            ),
            bar_ms,
        })
        .collect()
}

struct SmokeRun {
    steps: usize,
    signals: Vec<(i64, Signal)>,
}

fn smoke_run(
    sandbox: &Sandbox,
    loaded: &LoadedStrategy,
    series: &[Series],
    seed: u64,
) -> Result<SmokeRun, (&'static str, String)> {
    let params = Params::resolve(&loaded.info.params, &[]).map_err(|e| ("init", e.to_string()))?;
    let binding = Binding {
        symbols: series.iter().map(|s| s.symbol.clone()).collect(),
        params,
        simulated_clock: true,
        seed,
    };
    let mut instance = sandbox
        .instantiate(loaded, binding)
        .map_err(|e| ("init", e.to_string()))?;
    let out = keel_backtester::run(
        &mut instance,
        series,
        &keel_backtester::BacktestConfig::default(),
    );
    if let Some((time, error)) = out.errors.first() {
        let at = keel_model::candles::format_time(*time);
        return Err(("smoke run", format!("at {at}: {error}")));
    }
    let refused =
        (out.rejected.iter()).find(|r| r.by == keel_backtester::engine::RejectedBy::Sandbox);
    if let Some(r) = refused {
        return Err((
            "smoke run",
            format!(
                "signal rejected: {} ({:?} {})",
                r.reason,
                r.signal.action,
                keel_model::shown::text(&r.signal.symbol)
            ),
        ));
    }
    let dropped = instance.stats().log_bytes_dropped;
    if dropped > 0 {
        return Err((
            "smoke run",
            format!(
                "log flood: {dropped} bytes over the {}-byte per-call log limit were dropped",
                sandbox.limits().max_log_bytes_per_call
            ),
        ));
    }
    Ok(SmokeRun {
        steps: out.steps,
        signals: out.signals,
    })
}
