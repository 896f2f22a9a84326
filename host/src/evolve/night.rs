//! One night: benchmarks from the ledger → reflection (every N nights) →
//! decision → for `create`, a strategy written, reviewed, built and sent
//! through the gates, cheapest first → submission as a candidate with its
//! lineage. Every step is stored as it happens (inputs, output, tokens,
//! cost, time). The offline analyst and author play every role here; a
//! model-backed role plugs into the same steps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use rusqlite::Connection;

use keel_backtester::fills::FillModel;
use keel_candidates::overfit;
use keel_candidates::{Actor, CandidateState, CandidatesConfig};
use keel_model::{ParamValue, Params};

use crate::build_strategy::{self, Built};
use crate::candidates::{self, Submission};
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::scaffold;
use crate::store::now_ms;
use crate::validate;

use super::benchmarks;
use super::config::{EvolveConfig, Role};
use super::gates::{self, Split, Verdict};
use super::offline::{self, Draws};
use super::record::{self, NightStatus, Prediction, Step};

/// What a night runs with.
#[derive(Debug, Clone)]
pub struct NightSettings {
    pub config: EvolveConfig,
    pub candidates: CandidatesConfig,
    /// Where the candidates' data files are relative to (the database's
    /// directory for the store).
    pub db: PathBuf,
    /// The strategy-sdk the written crates depend on.
    pub sdk: PathBuf,
    /// The cargo target directory candidate crates build in (shared, so
    /// the SDK is compiled once).
    pub target_dir: PathBuf,
}

/// How a night ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NightOutcome {
    pub night: i64,
    pub decision: String,
    pub status: &'static str,
    pub note: String,
    pub attempts: Vec<record::Attempt>,
    /// Nights found still running and closed as abandoned.
    pub abandoned: Vec<i64>,
}

/// Runs one night on `conn`'s record.
pub fn run(
    conn: &mut Connection,
    sandbox: &Sandbox,
    settings: &NightSettings,
) -> anyhow::Result<NightOutcome> {
    let config = &settings.config;
    let providers = [Role::Analyst, Role::Author, Role::Reviewer]
        .map(|r| format!("{}={}", r.as_str(), config.role(r).label()))
        .join(" ");
    let (night, abandoned) = record::open_night(conn, &providers, &serde_json::to_value(config)?)?;
    let mut n = Night {
        conn,
        sandbox,
        settings,
        id: night,
    };
    match n.go() {
        Ok((decision, note)) => {
            record::close_night(
                n.conn,
                night,
                NightStatus::Finished,
                Some(&decision),
                &note,
                (0.0, 0),
            )?;
            Ok(NightOutcome {
                night,
                decision,
                status: NightStatus::Finished.as_str(),
                note,
                attempts: record::attempts(n.conn, night)?,
                abandoned,
            })
        }
        Err(e) => {
            let note = format!("{e:#}");
            record::close_night(n.conn, night, NightStatus::Failed, None, &note, (0.0, 0))?;
            Err(e.context(format!("night {night}")))
        }
    }
}

struct Night<'a> {
    conn: &'a mut Connection,
    sandbox: &'a Sandbox,
    settings: &'a NightSettings,
    id: i64,
}

/// A step's outcome before it is recorded.
struct Done {
    ok: bool,
    input: String,
    output: String,
}

impl Night<'_> {
    /// Runs `work` as step `kind`, recording it whatever it returns.
    fn step(
        &mut self,
        kind: &str,
        actor: &str,
        attempt: Option<i64>,
        work: impl FnOnce(&mut Self) -> anyhow::Result<Done>,
    ) -> anyhow::Result<Done> {
        let (started_ms, clock) = (now_ms(), Instant::now());
        let done = work(self);
        let duration_ms = clock.elapsed().as_millis() as i64;
        let (ok, input, output) = match &done {
            Ok(d) => (d.ok, d.input.clone(), d.output.clone()),
            Err(e) => (false, String::new(), format!("error: {e:#}")),
        };
        record::add_step(
            self.conn,
            self.id,
            &Step {
                seq: 0,
                kind: kind.into(),
                actor: actor.into(),
                ok,
                input,
                output,
                input_tokens: 0,
                output_tokens: 0,
                usd: 0.0,
                started_ms,
                duration_ms,
                attempt,
            },
        )?;
        done
    }

    fn go(&mut self) -> anyhow::Result<(String, String)> {
        let bench = self.step("benchmarks", "code", None, |n| {
            let b = benchmarks::compute(n.conn)?;
            Ok(Done {
                ok: true,
                input: "the ledger's latest run".into(),
                output: serde_json::to_string_pretty(&b)?,
            })
        })?;
        let nights: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM evolve_nights", [], |r| r.get(0))?;
        if nights % i64::from(self.settings.config.reflect_every) == 0 {
            self.step("reflect", "code", None, |n| n.reflect(&bench.output))?;
        }
        let decision = self.step("decide", "analyst", None, |n| n.decide())?;
        let answer: serde_json::Value = serde_json::from_str(&decision.output)?;
        let kind = answer["decision"].as_str().unwrap_or("nothing").to_owned();
        let reason = answer["reason"].as_str().unwrap_or_default().to_owned();
        record::set_decision(self.conn, self.id, &kind, &reason)?;
        let made = now_ms();
        for p in answer["predictions"].as_array().into_iter().flatten() {
            let p: Prediction = serde_json::from_value(p.clone())?;
            record::add_prediction(self.conn, self.id, &p, made)?;
        }
        if kind == "create" {
            for k in 0..self.settings.config.max_candidates {
                self.attempt(k)?;
            }
        }
        Ok((kind, reason))
    }

    /// Grades the predictions that are due and revises the strategy
    /// document with the grades and the benchmarks.
    fn reflect(&mut self, benchmarks: &str) -> anyhow::Result<Done> {
        let now = now_ms();
        let due = record::due_predictions(self.conn, now)?;
        let mut lines = Vec::new();
        let mut briers = Vec::new();
        for (id, metric, comparator, threshold, p, made, due_ms) in due {
            let outcome = measure(self.conn, &metric, made, due_ms)?;
            let hit = outcome.map(|v| match comparator.as_str() {
                ">=" => v >= threshold,
                _ => v <= threshold,
            });
            let brier = hit.map(|h| (p - if h { 1.0 } else { 0.0 }).powi(2));
            briers.extend(brier);
            record::grade(self.conn, id, outcome, hit, brier)?;
            lines.push(match (outcome, hit) {
                (Some(v), Some(h)) => format!(
                    "- prediction {id}: {metric} {comparator} {threshold} at p={p}: {v:.4}, {}",
                    if h { "held" } else { "failed" }
                ),
                _ => format!("- prediction {id}: {metric} could not be measured (void)"),
            });
        }
        let brier = (!briers.is_empty()).then(|| briers.iter().sum::<f64>() / briers.len() as f64);
        let (version, old) = record::document(self.conn)?;
        let mut text = if old.is_empty() {
            "# Strategy document\n\nKept by the nightly evolution: what was tried, what was predicted, what happened.\n".to_owned()
        } else {
            old
        };
        text.push_str(&format!(
            "\n## Night {}\n\n{} prediction(s) graded{}.\n{}\n\nBenchmarks:\n\n```json\n{}\n```\n",
            self.id,
            lines.len(),
            brier.map_or(String::new(), |b| format!(", mean Brier score {b:.4}")),
            lines.join("\n"),
            benchmarks
        ));
        let new = record::revise_document(self.conn, self.id, &text)?;
        Ok(Done {
            ok: true,
            input: format!("strategy document v{version}, predictions due by {now}"),
            output: serde_json::json!({
                "graded": lines.len(), "brier": brier, "document_version": new,
            })
            .to_string(),
        })
    }

    /// The offline analyst: `nothing` while an evolution candidate waits
    /// for its paper gate, or when a night may make none; `promote` a
    /// candidate whose gates all passed (or recommend it, when the config
    /// does not allow the evolution to); else `create`.
    fn decide(&mut self) -> anyhow::Result<Done> {
        let list = candidates::list(self.conn)?;
        let ours = |s: CandidateState| {
            list.iter()
                .filter(move |c| c.submitted_by == Actor::Evolution && c.state == s)
        };
        let config = &self.settings.config;
        let (decision, reason) = if let Some(c) = ours(CandidateState::Passed).next() {
            if config.allow_promote {
                candidates::promote(
                    self.conn,
                    &self.settings.candidates,
                    c.id,
                    Actor::Evolution,
                    None,
                )?;
                (
                    "promote",
                    format!(
                        "candidate {} passed every gate, paper included: promoted",
                        c.id
                    ),
                )
            } else {
                (
                    "nothing",
                    format!(
                        "candidate {} passed every gate: recommended to the operator (`keel candidate promote {}`); this evolution may not promote",
                        c.id, c.id
                    ),
                )
            }
        } else if let Some(c) = ours(CandidateState::Gated).next() {
            (
                "nothing",
                format!("candidate {} is still in its paper gate", c.id),
            )
        } else if config.max_candidates == 0 {
            ("nothing", "max_candidates is 0".into())
        } else {
            ("create", "no candidate of ours is in its paper gate: try parameter mutations of the active strategy".into())
        };
        let prediction = Prediction {
            claim: "the active book does not lose more than 2% over the next 7 days".into(),
            metric: "active_return_pct".into(),
            comparator: ">=".into(),
            threshold: -2.0,
            horizon_days: 7.0,
            probability: 0.7,
        };
        Ok(Done {
            ok: true,
            input: format!("{} candidates on record", list.len()),
            output: serde_json::to_string_pretty(&serde_json::json!({
                "decision": decision,
                "reason": reason,
                "predictions": [prediction],
            }))?,
        })
    }

    /// The parent to mutate: the active strategy when its source is known
    /// (an earlier night's, or an example's by name), else the sma-cross
    /// example. Returns (name, source, parent hash, built component).
    fn parent(
        &mut self,
    ) -> anyhow::Result<(String, String, Option<String>, Option<StrategyArtifact>)> {
        if let Some(hash) = candidates::active(self.conn)? {
            let artifact = candidates::load_blob(self.conn, &hash)?;
            let loaded = self.sandbox.load(&artifact)?;
            let name = loaded.info.name.clone();
            if let Some(source) = record::source_of(self.conn, &hash)? {
                return Ok((name, source, Some(hash), Some(artifact)));
            }
            if let Ok(t) = scaffold::template(&name) {
                return Ok((
                    name.clone(),
                    scaffold::source(t, &name)?,
                    Some(hash),
                    Some(artifact),
                ));
            }
        }
        let t = scaffold::template("sma-cross")?;
        Ok((t.name.into(), scaffold::source(t, t.name)?, None, None))
    }

    /// One candidate: written, reviewed, built, gated, submitted.
    fn attempt(&mut self, k: usize) -> anyhow::Result<()> {
        let settings = self.settings;
        let config = &settings.config;
        let data = candidates::gate_data_for(&settings.candidates, &settings.db, &config.data)?;
        let split = gates::split(data, config.holdout_pct)?;
        let fills = FillModel {
            fee_bps: settings.candidates.backtest.fee_bps,
            slippage_bps: settings.candidates.backtest.slippage_bps,
            ..FillModel::default()
        };
        let (parent_name, parent_source, parent_hash, parent_artifact) = self.parent()?;
        let slug = slug(&parent_name, self.id, k);
        let workdir =
            std::path::absolute(&config.workdir).unwrap_or_else(|_| config.workdir.clone());
        let dir = workdir.join(format!("{}-{slug}", self.id));

        // The parent's component runs the grid: the one on record, else the
        // template built as it is.
        let parent_built = match parent_artifact {
            Some(a) => a,
            None => {
                let base = workdir.join(format!("{}-{slug}-parent", self.id));
                if !base.exists() {
                    scaffold::write_source(&base, &parent_name, &parent_source, &settings.sdk)?;
                }
                let files = build_strategy::build(&base, Some(&settings.target_dir))?;
                StrategyArtifact::read(&files[0], usize::MAX)?
            }
        };
        let parent = self.sandbox.load(&parent_built)?;
        let mut found = None;
        self.step("generate", "author", None, |n| {
            let (done, grid) = n.grid(&parent, &split, fills)?;
            found = Some(grid);
            Ok(done)
        })?;
        let Some(grid) = found else {
            return Ok(());
        };
        let Some(chosen) = grid.chosen.clone() else {
            return Ok(());
        };
        let values: Vec<(String, ParamValue)> = chosen.clone();
        let source = offline::rewrite(&parent_source, &values, &parent_name, &slug)
            .map_err(anyhow::Error::msg)?;
        scaffold::write_source(&dir, &slug, &source, &settings.sdk)?;
        let brief = format!(
            "{parent_name} with new defaults {}",
            values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let attempt = record::add_attempt(
            self.conn,
            self.id,
            &slug,
            &dir.display().to_string(),
            parent_hash.as_deref(),
            &brief,
            &source,
        )?;
        let mut figures = serde_json::json!({
            "trades_hash": grid.trades_hash,
            "in_sample": grid.figures,
        });
        let reached = |n: &mut Night<'_>,
                       gate: &str,
                       passed: bool,
                       figures: &serde_json::Value,
                       hash: Option<&str>| {
            record::update_attempt(n.conn, attempt, gate, passed, hash, figures, None)
        };

        let review = self.step("review", "reviewer", Some(attempt), |_| Ok(review(&source)))?;
        if !review.ok {
            return Ok(reached(self, "review", false, &figures, None)?);
        }
        let build = self.step("build", "code", Some(attempt), |_| {
            Ok(
                match build_strategy::build_quiet(&dir, Some(&settings.target_dir)) {
                    Ok(files) => Done {
                        ok: true,
                        input: dir.display().to_string(),
                        output: files[0].display().to_string(),
                    },
                    Err(Built::Diagnostics(words, e)) => Done {
                        ok: false,
                        input: dir.display().to_string(),
                        output: format!("{e}\n{words}"),
                    },
                    Err(Built::Failed(e)) => Done {
                        ok: false,
                        input: dir.display().to_string(),
                        output: format!("{e:#}"),
                    },
                },
            )
        })?;
        if !build.ok {
            return Ok(reached(self, "build", false, &figures, None)?);
        }
        let file = PathBuf::from(&build.output);
        let artifact = StrategyArtifact::read(&file, usize::MAX)?;
        let hash = artifact.hash.to_hex();
        let valid = self.step("validate", "code", Some(attempt), |n| {
            let report = validate::validate_file(n.sandbox, &file);
            Ok(Done {
                ok: report.passed(),
                input: hash.clone(),
                output: if report.passed() {
                    "every check passed".into()
                } else {
                    report.failures().join("\n")
                },
            })
        })?;
        if !valid.ok {
            return Ok(reached(self, "validate", false, &figures, Some(&hash))?);
        }
        let loaded = self.sandbox.load(&artifact)?;
        let params = Params::resolve(&loaded.info.params, &[])?;
        let grid_returns = grid.returns.clone();
        let chosen_returns = grid.chosen_returns.clone();
        let gates: [(&str, Box<dyn Fn(&mut Night<'_>) -> anyhow::Result<Verdict>>); 8] = [
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
                "diversity",
                Box::new(|n| {
                    let seen = record::trade_lists(n.conn)?;
                    let copies = seen.iter().filter(|h| **h == grid.trades_hash).count();
                    Ok(Verdict {
                        gate: "diversity",
                        passed: copies <= 1 && grid.trades_hash != grid.parent_trades_hash,
                        detail: if grid.trades_hash == grid.parent_trades_hash {
                            "trades exactly as its parent: nothing new".into()
                        } else if copies > 1 {
                            "trades exactly as an earlier candidate of the evolution".into()
                        } else {
                            "a trade list of its own".into()
                        },
                        figures: serde_json::json!({ "trades_hash": grid.trades_hash }),
                    })
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
                        &split,
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
            let (id, _, gates) = candidates::submit(
                n.conn,
                n.sandbox,
                &settings.candidates,
                &artifact,
                &submission,
            )?;
            Ok(Done {
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
    /// trial registered, the best new trade list chosen.
    fn grid(
        &mut self,
        parent: &LoadedStrategy,
        split: &Split,
        fills: FillModel,
    ) -> anyhow::Result<(Done, Grid)> {
        let config = &self.settings.config;
        let sets = offline::mutations(
            &parent.info.params,
            &mut Draws::new(self.id as u64),
            config.mutations,
        );
        let bt = gates::config(fills, false);
        let sandbox = self.sandbox;
        let runs: Vec<Option<(Vec<(String, ParamValue)>, keel_backtester::BacktestResult)>> = sets
            .par_iter()
            .map(|set| {
                let params = Params::resolve(&parent.info.params, set).ok()?;
                let r = gates::run(sandbox, parent, &params, &split.in_sample, &bt, false).ok()?;
                r.errors.is_empty().then(|| (set.clone(), r))
            })
            .collect();
        let runs: Vec<_> = runs.into_iter().flatten().collect();
        let trials: Vec<record::Trial> = runs
            .iter()
            .map(|(set, r)| {
                // A trial that never moved its equity is a trial too: a
                // Sharpe of 0 with normal moments.
                let returns = gates::returns(r);
                let m = overfit::moments(&returns);
                record::Trial {
                    dataset: split.digest.clone(),
                    strategy: parent.info.name.clone(),
                    params: set
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    sharpe: m.as_ref().map_or(0.0, |m| m.sharpe),
                    n_obs: m.as_ref().map_or(returns.len(), |m| m.n) as u64,
                    skew: m.as_ref().map_or(0.0, |m| m.skewness),
                    kurtosis: m.as_ref().map_or(3.0, |m| m.kurtosis),
                    trades: r.trades.len() as u64,
                }
            })
            .collect();
        record::add_trials(self.conn, self.id, &trials)?;
        let parent_trades = runs
            .first()
            .filter(|(set, _)| *set == sets[0])
            .map(|(_, r)| gates::trades_hash(r))
            .unwrap_or_default();
        let seen = record::trade_lists(self.conn)?;
        let sharpe = |r: &keel_backtester::BacktestResult| {
            overfit::moments(&gates::returns(r)).map_or(f64::NEG_INFINITY, |m| m.sharpe)
        };
        let best = runs
            .iter()
            .filter(|(_, r)| {
                let h = gates::trades_hash(r);
                h != parent_trades && !seen.contains(&h) && !r.trades.is_empty()
            })
            .max_by(|a, b| sharpe(&a.1).total_cmp(&sharpe(&b.1)));
        let output = Grid {
            tried: sets.len(),
            ran: runs.len(),
            registered: trials.len(),
            parent_trades_hash: parent_trades,
            chosen: best.map(|(set, _)| set.clone()),
            chosen_returns: best.map(|(_, r)| gates::returns(r)).unwrap_or_default(),
            trades_hash: best.map(|(_, r)| gates::trades_hash(r)).unwrap_or_default(),
            figures: best.map_or(serde_json::Value::Null, |(_, r)| {
                serde_json::json!({
                    "trades": r.trades.len(),
                    "return_pct": (r.equity_final / r.cash_start - 1.0) * 100.0,
                    "sharpe_per_bar": sharpe(r),
                })
            }),
            returns: runs.iter().map(|(_, r)| gates::returns(r)).collect(),
        };
        let done = Done {
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
                "chosen": output.chosen.as_ref().map(|set| set
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()),
                "figures": output.figures,
                "trades_hash": output.trades_hash,
                "parent_trades_hash": output.parent_trades_hash,
            }))?,
        };
        Ok((done, output))
    }
}

/// What the offline author's grid found.
#[derive(Debug, Clone)]
struct Grid {
    tried: usize,
    ran: usize,
    registered: usize,
    parent_trades_hash: String,
    chosen: Option<Vec<(String, ParamValue)>>,
    chosen_returns: Vec<f64>,
    trades_hash: String,
    figures: serde_json::Value,
    returns: Vec<Vec<f64>>,
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
fn review(source: &str) -> Done {
    let forbidden = [
        ("unsafe", "unsafe code"),
        ("include_bytes!", "embedded data (include_bytes!)"),
        ("include_str!", "embedded data (include_str!)"),
        ("std::fs", "file access"),
        ("std::net", "network access"),
        ("std::process", "processes"),
        ("std::env", "the environment"),
        ("extern \"C\"", "foreign functions"),
    ];
    let found: Vec<&str> = forbidden
        .iter()
        .filter(|(word, _)| source.contains(word))
        .map(|(_, what)| *what)
        .collect();
    let stops = source.contains(".stop_loss(") || source.contains("stop_loss:");
    Done {
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

/// A candidate's name: its parent's, then `-e<night>` and a letter per
/// candidate of the night, at most 48 characters.
fn slug(parent: &str, night: i64, k: usize) -> String {
    let tail = format!("-e{night}{}", (b'a' + (k % 26) as u8) as char);
    let keep = 48usize.saturating_sub(tail.len());
    let base: String = parent
        .split("-e")
        .next()
        .unwrap_or(parent)
        .chars()
        .take(keep)
        .collect();
    format!("{}{tail}", base.trim_end_matches('-'))
}

/// A prediction's metric between `from` and `to`, from the ledger: the main
/// book of the run covering the span (none when nothing was booked then).
fn measure(conn: &Connection, metric: &str, from: i64, to: i64) -> anyhow::Result<Option<f64>> {
    let equity: Vec<f64> = conn
        .prepare(
            "SELECT e.equity FROM equity_snapshots e JOIN books b ON b.id = e.book_id
             WHERE b.slot = 'main' AND e.time_ms BETWEEN ?1 AND ?2 ORDER BY e.time_ms",
        )?
        .query_map([from, to], |r| r.get::<_, String>(0))?
        .map(|e| e.map(|e| e.parse::<f64>().unwrap_or(f64::NAN)))
        .collect::<rusqlite::Result<_>>()?;
    let (Some(first), Some(last)) = (equity.first(), equity.last()) else {
        return Ok(None);
    };
    Ok(match metric {
        "active_return_pct" => Some((last / first - 1.0) * 100.0),
        "active_max_drawdown_pct" => {
            let mut peak = f64::MIN;
            let mut worst: f64 = 0.0;
            for e in &equity {
                peak = peak.max(*e);
                worst = worst.max((peak - e) / peak * 100.0);
            }
            Some(worst)
        }
        _ => None,
    })
}

/// The default target directory of candidate crates: beside the workdir.
pub fn default_target(workdir: &Path) -> PathBuf {
    workdir.join("target")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_names_and_do_not_grow_with_generations() {
        assert_eq!(slug("sma-cross", 12, 0), "sma-cross-e12a");
        assert_eq!(slug("sma-cross-e12a", 13, 1), "sma-cross-e13b");
        let long = slug(&"x".repeat(60), 123_456, 0);
        assert!(long.len() <= 48, "{long}");
        scaffold::check_name(&long).expect("valid");
    }

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
