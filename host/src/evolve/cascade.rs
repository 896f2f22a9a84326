//! The cascade a written strategy goes through, cheapest check first:
//! the static review, the build, validation, diversity (`diversity`), then
//! the evolution's gates (look-ahead probe, backtest, walk-forward, stress,
//! deflated Sharpe, PBO, the locked holdout) and submission with its
//! lineage. Also
//! the trials a strategy's parameter grid runs in sample, every one
//! registered.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;

use keel_backtester::fills::FillModel;
use keel_candidates::Actor;
use keel_candidates::overfit;
use keel_model::{ParamValue, Params};

use crate::build_strategy::{self, Built};
use crate::candidates::{self, Submission};
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::validate;

use super::diversity::Known;
use super::gates::{self, Split, Verdict};
use super::night::{Done, Night};
use super::offline::{self, Draws};
use super::record;

/// One gate: judges the attempt with what the night knows.
type GateFn<'a, 'n> = dyn Fn(&mut Night<'n>) -> anyhow::Result<Verdict> + 'a;

/// One parameter set and its in-sample backtest.
type Run = (Vec<(String, ParamValue)>, keel_backtester::BacktestResult);

/// A built, validated strategy on its way through the gates.
pub(super) struct Cascade<'c> {
    pub attempt: i64,
    pub artifact: StrategyArtifact,
    pub split: &'c Split,
    pub fills: FillModel,
    pub grid: Grid,
    pub brief: String,
    pub parent_hash: Option<String>,
    pub dir: PathBuf,
    pub figures: serde_json::Value,
}

/// Which of a grid's parameter sets becomes the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice {
    /// The best new trade list (the offline author's mutation).
    BestNew,
    /// The strategy's own defaults (a model-written strategy, whose
    /// diversity was judged before its grid ran).
    Defaults,
}

impl Night<'_> {
    /// Builds the crate in `dir`; a failure's output is the compiler's
    /// diagnostics.
    pub(super) fn build_step(&mut self, dir: &Path, attempt: i64) -> anyhow::Result<Done> {
        let settings = self.settings;
        self.step("build", "code", Some(attempt), |_| {
            Ok(
                match build_strategy::build_quiet(dir, Some(&settings.target_dir)) {
                    Ok(files) => Done::new(
                        true,
                        dir.display().to_string(),
                        files[0].display().to_string(),
                    ),
                    Err(Built::Diagnostics(words, e)) => {
                        Done::new(false, dir.display().to_string(), format!("{e}\n{words}"))
                    }
                    Err(Built::Failed(e)) => {
                        Done::new(false, dir.display().to_string(), format!("{e:#}"))
                    }
                },
            )
        })
    }

    /// Validates the component at `file` (whose hash is `hash`).
    pub(super) fn validate_step(
        &mut self,
        file: &Path,
        hash: &str,
        attempt: i64,
    ) -> anyhow::Result<Done> {
        self.step("validate", "code", Some(attempt), |n| {
            let report = validate::validate_file(n.sandbox, file);
            Ok(Done::new(
                report.passed(),
                hash.to_owned(),
                if report.passed() {
                    "every check passed".into()
                } else {
                    report.failures().join("\n")
                },
            ))
        })
    }

    /// The gates, cheapest first, then submission; the attempt's record
    /// says where it stopped.
    pub(super) fn gates_and_submit(&mut self, c: Cascade<'_>) -> anyhow::Result<()> {
        let settings = self.settings;
        let config = &settings.config;
        let Cascade {
            attempt,
            artifact,
            split,
            fills,
            grid,
            brief,
            parent_hash,
            dir,
            mut figures,
        } = c;
        let hash = artifact.hash.to_hex();
        let reached = |n: &mut Night<'_>,
                       gate: &str,
                       passed: bool,
                       figures: &serde_json::Value,
                       hash: Option<&str>| {
            record::update_attempt(n.conn, attempt, gate, passed, hash, figures, None)
        };
        let loaded = self.sandbox.load(&artifact)?;
        let params = Params::resolve(&loaded.info.params, &[])?;
        let grid_returns = grid.returns.clone();
        let chosen_returns = grid.chosen_returns.clone();
        let gates: [(&str, Box<GateFn<'_, '_>>); 7] = [
            (
                "lookahead",
                Box::new(|n| {
                    gates::lookahead(
                        n.sandbox,
                        &loaded,
                        &params,
                        &split.in_sample,
                        fills,
                        config.gates.lookahead_probes,
                    )
                }),
            ),
            (
                "backtest",
                Box::new(|_| {
                    let trades = grid.figures["trades"].as_u64().unwrap_or(0) as usize;
                    let ret = grid.figures["return_pct"].as_f64().unwrap_or(0.0);
                    let min = settings.candidates.backtest.min_trades;
                    let min_ret = config.gates.min_return_pct;
                    Ok(Verdict {
                        gate: "backtest",
                        passed: trades >= min && ret >= min_ret,
                        detail: format!(
                            "in sample: {trades} trades (min {min}), return {ret:.3}% (min {min_ret}%)"
                        ),
                        figures: grid.figures.clone(),
                    })
                }),
            ),
            (
                "walk-forward",
                Box::new(|n| {
                    walk_forward(
                        n.sandbox,
                        &loaded,
                        &params,
                        split,
                        fills,
                        config.gates.min_fold_return_pct,
                    )
                }),
            ),
            (
                "stress",
                Box::new(|n| {
                    let stressed = FillModel {
                        fee_bps: fills.fee_bps * 2.0,
                        slippage_bps: fills.slippage_bps * 2.0,
                        ..fills
                    };
                    let r = gates::run(
                        n.sandbox,
                        &loaded,
                        &params,
                        &split.in_sample,
                        &gates::config(stressed, false),
                        true,
                    )?;
                    let ret = (r.equity_final / r.cash_start - 1.0) * 100.0;
                    let min = config.gates.min_stress_return_pct;
                    Ok(Verdict {
                        gate: "stress",
                        passed: ret >= min,
                        detail: format!(
                            "2x fees and slippage, signals one bar late: return {ret:.3}% (min {min}%)"
                        ),
                        figures: serde_json::json!({ "return_pct": ret, "trades": r.trades.len() }),
                    })
                }),
            ),
            (
                "deflated-sharpe",
                Box::new(|n| {
                    let (trials, variance) = record::trial_stats(n.conn, &split.digest)?;
                    Ok(gates::deflated(
                        &chosen_returns,
                        trials,
                        variance,
                        config.gates.min_dsr,
                    ))
                }),
            ),
            (
                "pbo",
                Box::new(|_| {
                    Ok(gates::pbo(
                        &grid_returns,
                        config.gates.pbo_splits,
                        config.gates.max_pbo,
                    ))
                }),
            ),
            (
                "holdout",
                Box::new(|n| {
                    let uses = record::use_holdout(n.conn, n.id, attempt, &split.holdout_digest)?;
                    let r = gates::run(
                        n.sandbox,
                        &loaded,
                        &params,
                        &split.holdout,
                        &gates::config(fills, false),
                        false,
                    )?;
                    let m = overfit::moments(&gates::returns(&r));
                    let sharpe = m.as_ref().map_or(0.0, |m| m.sharpe);
                    let min = config.gates.min_holdout_sharpe;
                    Ok(Verdict {
                        gate: "holdout",
                        passed: sharpe >= min && m.is_some(),
                        detail: format!(
                            "locked holdout (look {uses} at it): Sharpe {sharpe:.5} per bar (min {min}), {} trades",
                            r.trades.len()
                        ),
                        figures: serde_json::json!({
                            "sharpe_per_bar": sharpe, "trades": r.trades.len(), "uses": uses,
                            "return_pct": (r.equity_final / r.cash_start - 1.0) * 100.0,
                        }),
                    })
                }),
            ),
        ];
        for (name, gate) in gates.iter() {
            let verdict = self.step(name, "code", Some(attempt), |n| {
                let v = gate(n)?;
                Ok(Done {
                    input_tokens: 0,
                    output_tokens: 0,
                    usd: 0.0,
                    ok: v.passed,
                    input: hash.clone(),
                    output: serde_json::to_string(&v)?,
                })
            })?;
            let v: serde_json::Value = serde_json::from_str(&verdict.output)?;
            figures[*name] = v["figures"].clone();
            if !verdict.ok {
                return Ok(reached(self, name, false, &figures, Some(&hash))?);
            }
        }
        let submitted = self.step("submit", "code", Some(attempt), |n| {
            let submission = Submission {
                note: brief.clone(),
                submitted_by: Actor::Evolution,
                parent: parent_hash.clone(),
                source: dir.display().to_string(),
            };
            // The candidate gate's figures are shown to the analyst on
            // later nights: they are computed before the locked holdout.
            let data = candidates::gate_data_for(&settings.candidates, &settings.db, &[])?;
            let data = gates::before(&data, split.holdout_from_ms)
                .context("the candidate gate's data before the locked holdout")?;
            let (id, _, gates) = candidates::submit_on(
                n.conn,
                n.sandbox,
                &settings.candidates,
                &data,
                &artifact,
                &submission,
            )?;
            Ok(Done {
                input_tokens: 0,
                output_tokens: 0,
                usd: 0.0,
                ok: true,
                input: hash.clone(),
                output: serde_json::json!({
                    "candidate": id,
                    "gates": gates.iter().map(|g| serde_json::json!({
                        "gate": g.gate.as_str(), "passed": g.passed(), "detail": g.detail,
                    })).collect::<Vec<_>>(),
                })
                .to_string(),
            })
        })?;
        let out: serde_json::Value = serde_json::from_str(&submitted.output)?;
        record::update_attempt(
            self.conn,
            attempt,
            "submitted",
            true,
            Some(&hash),
            &figures,
            out["candidate"].as_i64(),
        )?;
        Ok(())
    }

    /// The offline author's work: the mutation grid run in sample, every
    /// trial registered, the best trade list not in `known` chosen.
    pub(super) fn grid(
        &mut self,
        parent: &LoadedStrategy,
        split: &Split,
        fills: FillModel,
        choice: Choice,
        known: &[Known],
    ) -> anyhow::Result<(Done, Grid)> {
        let config = &self.settings.config;
        let sets = offline::mutations(
            &parent.info.params,
            &mut Draws::new(self.id as u64),
            config.mutations,
        );
        let bt = gates::config(fills, false);
        let sandbox = self.sandbox;
        let runs: Vec<Option<Run>> = sets
            .par_iter()
            .map(|set| {
                let params = Params::resolve(&parent.info.params, set).ok()?;
                let r = gates::run(sandbox, parent, &params, &split.in_sample, &bt, false).ok()?;
                r.errors.is_empty().then(|| (set.clone(), r))
            })
            .collect();
        // Each run's returns, moments and trade list, once.
        let scored: Vec<Scored> = runs
            .into_iter()
            .flatten()
            .map(|(set, result)| {
                let returns = gates::returns(&result);
                Scored {
                    moments: overfit::moments(&returns),
                    hash: gates::trades_hash(&result),
                    set,
                    result,
                    returns,
                }
            })
            .collect();
        let trials: Vec<record::Trial> = scored
            .iter()
            .map(|run| {
                // A trial that never moved its equity is a trial too: a
                // Sharpe of 0 with normal moments.
                let m = run.moments.as_ref();
                record::Trial {
                    dataset: split.digest.clone(),
                    strategy: parent.info.name.clone(),
                    params: offline::assignments(&run.set).join(" "),
                    sharpe: m.map_or(0.0, |m| m.sharpe),
                    n_obs: m.map_or(run.returns.len(), |m| m.n) as u64,
                    skew: m.map_or(0.0, |m| m.skewness),
                    kurtosis: m.map_or(3.0, |m| m.kurtosis),
                    trades: run.result.trades.len() as u64,
                }
            })
            .collect();
        record::add_trials(self.conn, self.id, &trials)?;
        let defaults = scored.first().filter(|run| run.set == sets[0]);
        let sharpe = |run: &Scored| run.moments.as_ref().map_or(f64::NEG_INFINITY, |m| m.sharpe);
        let best = match choice {
            Choice::Defaults => defaults,
            Choice::BestNew => scored
                .iter()
                .filter(|run| {
                    !known.iter().any(|k| k.hash == run.hash) && !run.result.trades.is_empty()
                })
                .max_by(|a, b| sharpe(a).total_cmp(&sharpe(b))),
        };
        let output = Grid {
            tried: sets.len(),
            ran: scored.len(),
            registered: trials.len(),
            chosen: best.map(|run| run.set.clone()),
            chosen_returns: best.map(|run| run.returns.clone()).unwrap_or_default(),
            trades_hash: best.map(|run| run.hash.clone()).unwrap_or_default(),
            figures: best.map_or(serde_json::Value::Null, |run| {
                let r = &run.result;
                serde_json::json!({
                    "trades": r.trades.len(),
                    "return_pct": (r.equity_final / r.cash_start - 1.0) * 100.0,
                    "sharpe_per_bar": sharpe(run),
                })
            }),
            returns: scored.into_iter().map(|run| run.returns).collect(),
        };
        let done = Done {
            input_tokens: 0,
            output_tokens: 0,
            usd: 0.0,
            ok: output.chosen.is_some(),
            input: format!(
                "{} parameter sets of {} near its defaults, in sample ({})",
                sets.len(),
                parent.info.name,
                split.digest
            ),
            output: serde_json::to_string_pretty(&serde_json::json!({
                "tried": output.tried,
                "ran": output.ran,
                "registered": output.registered,
                "chosen": output.chosen.as_deref().map(offline::assignments),
                "figures": output.figures,
                "trades_hash": output.trades_hash,
            }))?,
        };
        Ok((done, output))
    }
}

/// One run of the grid, scored once.
struct Scored {
    set: Vec<(String, ParamValue)>,
    result: keel_backtester::BacktestResult,
    returns: Vec<f64>,
    moments: Option<overfit::Moments>,
    hash: String,
}

/// What the offline author's grid found.
#[derive(Debug, Clone)]
pub(super) struct Grid {
    pub tried: usize,
    pub ran: usize,
    pub registered: usize,
    pub chosen: Option<Vec<(String, ParamValue)>>,
    pub chosen_returns: Vec<f64>,
    pub trades_hash: String,
    pub figures: serde_json::Value,
    pub returns: Vec<Vec<f64>>,
}

/// The in-sample walk-forward of the chosen parameters: three folds, none
/// of whose out-of-sample returns may fall below `min` percent.
fn walk_forward(
    sandbox: &Sandbox,
    loaded: &LoadedStrategy,
    params: &Params,
    split: &Split,
    fills: FillModel,
    min: f64,
) -> anyhow::Result<Verdict> {
    let bt = gates::config(fills, false);
    let wf = crate::backtest::walk_forward(
        sandbox,
        loaded,
        std::slice::from_ref(params),
        &split.in_sample,
        &bt,
        3,
        |_, _| {},
    )?;
    let worst = wf
        .folds
        .iter()
        .map(|f| f.out_of_sample_metrics.total_return * 100.0)
        .fold(f64::INFINITY, f64::min);
    Ok(Verdict {
        gate: "walk-forward",
        passed: worst >= min,
        detail: format!(
            "{} folds, worst out-of-sample return {worst:.3}% (min {min}%), compounded {:.3}%",
            wf.folds.len(),
            wf.out_of_sample_return * 100.0
        ),
        figures: serde_json::json!({
            "folds": wf.folds.len(), "worst_oos_return_pct": worst,
            "oos_return_pct": wf.out_of_sample_return * 100.0,
        }),
    })
}

/// The offline reviewer: the house rules a reading of the code can check.
pub(super) fn review(source: &str) -> Done {
    let forbidden = [
        ("unsafe", "unsafe code"),
        ("include_bytes!", "embedded data (include_bytes!)"),
        ("include_str!", "embedded data (include_str!)"),
        ("std::fs", "file access"),
        ("std::net", "network access"),
        ("std::process", "processes"),
        ("std::env", "the environment"),
        ("extern \"C\"", "foreign functions"),
        // The one way a strategy could read the later closes of a call
        // (the look-ahead probe is the defence behind this one).
        ("__private", "the SDK's private interface (__private)"),
        ("wit_bindgen", "its own bindings (wit_bindgen)"),
    ];
    let found: Vec<&str> = forbidden
        .iter()
        .filter(|(word, _)| source.contains(word))
        .map(|(_, what)| *what)
        .collect();
    let stops = source.contains(".stop_loss(") || source.contains("stop_loss:");
    Done {
        input_tokens: 0,
        output_tokens: 0,
        usd: 0.0,
        ok: found.is_empty(),
        input: format!("{} bytes of source", source.len()),
        output: if found.is_empty() {
            format!(
                "house rules kept{}",
                if stops {
                    ""
                } else {
                    "; note: no stop-loss on its entries"
                }
            )
        } else {
            format!("refused: {}", found.join(", "))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reviewer_refuses_what_a_strategy_must_not_do() {
        assert!(review("fn a() {}").ok);
        let r = review("let x = include_bytes!(\"prices.bin\"); unsafe {}");
        assert!(!r.ok);
        assert_eq!(
            r.output,
            "refused: unsafe code, embedded data (include_bytes!)"
        );
    }
}
