//! One night: benchmarks from the ledger → reflection (every N nights) →
//! decision → for `create`, a strategy written, reviewed, built and sent
//! through the gates, cheapest first (`cascade`) → submission as a
//! candidate with its lineage. Every step is stored as it happens (inputs,
//! output, tokens, cost, time). Each role is played offline (code) or by a
//! model (`roles`: the analyst, the author and the reviewer), under one
//! budget for the night.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rusqlite::Connection;

use keel_backtester::fills::FillModel;
use keel_candidates::{Actor, CandidateState, CandidatesConfig};
use keel_model::ParamValue;

use crate::build_strategy;
use crate::candidates;
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};
use crate::scaffold;
use crate::store::now_ms;

use super::benchmarks;
use super::cascade::{Cascade, Choice, review};
use super::config::{EvolveConfig, Role};
use super::diversity::TradeLists;
use super::gates::{self, Split};
use super::lock::NightLock;
use super::offline;
use super::record::{self, NightStatus, Prediction, Step};
use super::roles::{Models, Stopped};

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

/// Runs one night on `conn`'s record. A night the budget (or a provider's
/// spend limit) stops ends `stopped`, with the reason, and nothing else is
/// touched after it.
pub fn run(
    conn: &mut Connection,
    sandbox: &Sandbox,
    settings: &NightSettings,
) -> anyhow::Result<NightOutcome> {
    let config = &settings.config;
    let providers = [Role::Analyst, Role::Author, Role::Reviewer]
        .map(|r| format!("{}={}", r.as_str(), config.role(r).label()))
        .join(" ");
    // Held until the night ends: with it, a night still `running` is one
    // whose process is gone.
    let _lock = NightLock::take(conn)?;
    let (night, abandoned) = record::open_night(conn, &providers, &serde_json::to_value(config)?)?;
    // On the record before anything can fail (a key that cannot be read,
    // say): a failed night is a night, and its scheduled time has passed.
    let models = match Models::new(config) {
        Ok(models) => models,
        Err(e) => {
            let note = format!("{e:#}");
            record::close_night(conn, night, NightStatus::Failed, None, &note, (0.0, 0))?;
            return Err(e.context(format!("night {night}")));
        }
    };
    let mut n = Night {
        conn,
        sandbox,
        settings,
        models: &models,
        id: night,
        traded: TradeLists::new(),
    };
    let result = n.go();
    let spent = models.spent();
    let (status, decision, note) = match result {
        Ok((decision, note)) => (NightStatus::Finished, Some(decision), note),
        Err(e) => match e.downcast_ref::<Stopped>() {
            Some(stopped) => (NightStatus::Stopped, None, format!("stopped: {stopped}")),
            None => {
                let note = format!("{e:#}");
                record::close_night(n.conn, night, NightStatus::Failed, None, &note, spent)?;
                return Err(e.context(format!("night {night}")));
            }
        },
    };
    record::close_night(n.conn, night, status, decision.as_deref(), &note, spent)?;
    let decision = match decision {
        Some(d) => d,
        None => record::night(n.conn, night)?
            .decision
            .unwrap_or_else(|| "none".into()),
    };
    Ok(NightOutcome {
        night,
        decision,
        status: status.as_str(),
        note,
        attempts: record::attempts(n.conn, night)?,
        abandoned,
    })
}

pub(super) struct Night<'a> {
    pub conn: &'a mut Connection,
    pub sandbox: &'a Sandbox,
    pub settings: &'a NightSettings,
    pub models: &'a Models,
    pub id: i64,
    /// The trade lists of stored components already run tonight.
    pub traded: TradeLists,
}

/// A step's outcome before it is recorded.
#[derive(Debug, Clone, Default)]
pub(super) struct Done {
    pub ok: bool,
    pub input: String,
    pub output: String,
    /// What a model call used (zero for code).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usd: f64,
}

impl Done {
    pub fn new(ok: bool, input: impl Into<String>, output: impl Into<String>) -> Done {
        Done {
            ok,
            input: input.into(),
            output: output.into(),
            ..Done::default()
        }
    }
}

impl Night<'_> {
    /// Runs `work` as step `kind`, recording it whatever it returns.
    pub(super) fn step(
        &mut self,
        kind: &str,
        actor: &str,
        attempt: Option<i64>,
        work: impl FnOnce(&mut Self) -> anyhow::Result<Done>,
    ) -> anyhow::Result<Done> {
        let (started_ms, clock) = (now_ms(), Instant::now());
        let done = work(self);
        let duration_ms = clock.elapsed().as_millis() as i64;
        let recorded = match &done {
            Ok(d) => d.clone(),
            Err(e) => Done::new(false, "", format!("error: {e:#}")),
        };
        record::add_step(
            self.conn,
            self.id,
            &Step {
                seq: 0,
                kind: kind.into(),
                actor: actor.into(),
                ok: recorded.ok,
                input: recorded.input,
                output: recorded.output,
                input_tokens: recorded.input_tokens,
                output_tokens: recorded.output_tokens,
                usd: recorded.usd,
                started_ms,
                duration_ms,
                attempt,
            },
        )?;
        done
    }

    fn go(&mut self) -> anyhow::Result<(String, String)> {
        // The data first: a night whose data cannot be read decides nothing.
        let config = &self.settings.config;
        let data =
            candidates::gate_data_for(&self.settings.candidates, &self.settings.db, &config.data)
                .context("the evolution's data")?;
        let split = gates::split(data, config.holdout_pct).context("the evolution's data")?;
        let bench = self.step("benchmarks", "code", None, |n| {
            let b = benchmarks::compute(n.conn)?;
            Ok(Done {
                input_tokens: 0,
                output_tokens: 0,
                usd: 0.0,
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
        let decided = if self.models.plays(Role::Analyst) {
            self.decide_by_model(&bench.output, split.holdout_from_ms)?
        } else {
            let decision = self.step("decide", "analyst", None, |n| n.decide())?;
            let answer: serde_json::Value = serde_json::from_str(&decision.output)?;
            Decided {
                kind: answer["decision"].as_str().unwrap_or("nothing").to_owned(),
                reason: answer["reason"].as_str().unwrap_or_default().to_owned(),
                brief: answer["reason"].as_str().unwrap_or_default().to_owned(),
                predictions: serde_json::from_value(answer["predictions"].clone())?,
            }
        };
        let Decided {
            kind,
            reason,
            brief,
            predictions,
        } = decided;
        record::set_decision(self.conn, self.id, &kind, &reason)?;
        let made = now_ms();
        for p in &predictions {
            record::add_prediction(self.conn, self.id, p, made)?;
        }
        if kind == "create" {
            for k in 0..self.settings.config.max_candidates {
                self.attempt(k, &brief, &split)?;
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
            input_tokens: 0,
            output_tokens: 0,
            usd: 0.0,
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
            input_tokens: 0,
            output_tokens: 0,
            usd: 0.0,
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
        k: usize,
    ) -> anyhow::Result<(String, String, Option<String>, Option<StrategyArtifact>)> {
        // Taken in turn, night by night and attempt by attempt: the active
        // strategy, the evolution's candidates still in or through their
        // paper gate (the most recent first), and `blocks`, the examples'
        // entries and exits to recombine.
        let promising: Vec<String> = self
            .conn
            .prepare(
                "SELECT c.hash FROM candidates c
                 WHERE c.submitted_by = 'evolution' AND c.state IN ('gated', 'passed')
                   AND EXISTS (SELECT 1 FROM evolve_attempts a WHERE a.hash = c.hash)
                 ORDER BY c.id DESC LIMIT 3",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let turns = 2 + promising.len();
        let turn = (self.id as usize).saturating_sub(1).wrapping_add(k) % turns;
        if turn == turns - 1 {
            let t = scaffold::template("blocks")?;
            return Ok((t.name.into(), scaffold::source(t, t.name)?, None, None));
        }
        if turn > 0 {
            let hash = promising[turn - 1].clone();
            let artifact = candidates::load_blob(self.conn, &hash)?;
            let name = self.sandbox.load(&artifact)?.info.name.clone();
            if let Some(source) = record::source_of(self.conn, &hash)? {
                return Ok((name, source, Some(hash), Some(artifact)));
            }
        }
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

    /// One candidate: written (by the offline author, or by a model from
    /// `brief`), reviewed, built, gated, submitted.
    fn attempt(&mut self, k: usize, brief: &str, split: &Split) -> anyhow::Result<()> {
        let settings = self.settings;
        let config = &settings.config;
        let fills = FillModel {
            fee_bps: settings.candidates.backtest.fee_bps,
            slippage_bps: settings.candidates.backtest.slippage_bps,
            ..FillModel::default()
        };
        let (parent_name, parent_source, parent_hash, parent_artifact) = self.parent(k)?;
        let slug = slug(&parent_name, self.id, k);
        let workdir =
            std::path::absolute(&config.workdir).unwrap_or_else(|_| config.workdir.clone());
        let dir = workdir.join(format!("{}-{slug}", self.id));

        // The parent's component runs the grid (and its trades are what a
        // new strategy must differ from): the one on record, else the
        // template built as it is.
        let parent_built = match parent_artifact {
            Some(a) => a,
            None => {
                let base = workdir.join(format!("{}-{slug}-parent", self.id));
                if !base.exists() {
                    scaffold::write_unique(&base, &parent_name, &parent_source, &settings.sdk)?;
                }
                let files = build_strategy::build(&base, Some(&settings.target_dir))?;
                StrategyArtifact::read(&files[0], usize::MAX)?
            }
        };
        let parent = self.sandbox.load(&parent_built)?;
        if self.models.plays(Role::Author) {
            return self.authored(&Plan {
                slug,
                dir,
                brief: brief.to_owned(),
                parent_name,
                parent_source,
                parent_hash,
                parent: &parent,
                split,
                fills,
            });
        }
        let mut found = None;
        self.step("generate", "author", None, |n| {
            let known = n.known_trades(split, fills, &parent, None)?;
            let (done, grid) = n.grid(&parent, split, fills, Choice::BestNew, &known)?;
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
        scaffold::write_unique(&dir, &slug, &source, &settings.sdk)?;
        let brief = format!(
            "{parent_name} with new defaults {}",
            offline::assignments(&values).join(" ")
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
        let figures = serde_json::json!({
            "trades_hash": grid.trades_hash,
            "in_sample": grid.figures,
        });
        let stop = |n: &mut Night<'_>, gate: &str, hash: Option<&str>| {
            record::update_attempt(n.conn, attempt, gate, false, hash, &figures, None)
        };
        let review = self.step("review", "reviewer", Some(attempt), |_| Ok(review(&source)))?;
        if !review.ok {
            return Ok(stop(self, "review", None)?);
        }
        if self.models.plays(Role::Reviewer) {
            let verdict = self.review_by_model(attempt, &brief, &source)?;
            if !verdict.accept {
                return Ok(stop(self, "review", None)?);
            }
        }
        let build = self.build_step(&dir, attempt)?;
        if !build.ok {
            return Ok(stop(self, "build", None)?);
        }
        let file = PathBuf::from(&build.output);
        let artifact = StrategyArtifact::read(&file, usize::MAX)?;
        let hash = artifact.hash.to_hex();
        if !self.validate_step(&file, &hash, attempt)?.ok {
            return Ok(stop(self, "validate", Some(&hash))?);
        }
        let diverse = self.diversity_step(attempt, &artifact, split, fills, &parent)?;
        if !diverse.passed {
            return Ok(());
        }
        let mut figures = figures;
        figures["diversity"] = diverse.figures;
        self.gates_and_submit(Cascade {
            attempt,
            artifact,
            split,
            fills,
            grid,
            brief,
            parent_hash,
            dir,
            figures,
        })
    }
}

/// What a night decided, and the brief its author writes from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decided {
    pub kind: String,
    pub reason: String,
    pub brief: String,
    pub predictions: Vec<Prediction>,
}

/// What an attempt is written from.
pub(super) struct Plan<'p> {
    pub slug: String,
    /// Where its crate is written.
    pub dir: PathBuf,
    pub brief: String,
    pub parent_name: String,
    pub parent_source: String,
    pub parent_hash: Option<String>,
    pub parent: &'p LoadedStrategy,
    pub split: &'p Split,
    pub fills: FillModel,
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
            // The active book: each run's first book that is no
            // candidate's shadow.
            "SELECT e.equity FROM equity_snapshots e
             WHERE e.book_id IN (SELECT MIN(id) FROM books WHERE slot NOT LIKE 'candidate-%' GROUP BY run_id)
               AND e.time_ms BETWEEN ?1 AND ?2 ORDER BY e.time_ms",
        )?
        .query_map([from, to], |r| r.get::<_, String>(0))?
        .map(|e| e.map(|e| e.parse::<f64>().unwrap_or(f64::NAN)))
        .collect::<rusqlite::Result<_>>()?;
    let (Some(first), Some(last)) = (equity.first(), equity.last()) else {
        return Ok(None);
    };
    Ok(match metric {
        "active_return_pct" => Some((last / first - 1.0) * 100.0),
        "active_max_drawdown_pct" => Some(benchmarks::max_drawdown_pct(*first, &equity)),
        _ => None,
    })
}

/// The default target directory of candidate crates: cargo's own default
/// when the user set one (`CARGO_TARGET_DIR`, as cargo reads it: relative to
/// where keel was started), else beside the workdir. A night's builds then
/// share what the user's other builds compiled (the SDK and its macros).
pub fn default_target(workdir: &Path, cargo_target_dir: Option<OsString>) -> PathBuf {
    match cargo_target_dir.filter(|dir| !dir.is_empty()) {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
        None => workdir.join("target"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_crates_build_where_cargo_would_or_beside_the_workdir() {
        let workdir = Path::new("/nights");
        assert_eq!(default_target(workdir, None), workdir.join("target"));
        assert_eq!(
            default_target(workdir, Some(OsString::new())),
            workdir.join("target")
        );
        assert_eq!(
            default_target(workdir, Some("/cache/target".into())),
            Path::new("/cache/target")
        );
        let relative = default_target(workdir, Some("shared".into()));
        assert!(relative.is_absolute(), "{}", relative.display());
        assert!(relative.ends_with("shared"), "{}", relative.display());
    }

    #[test]
    fn slugs_are_valid_names_and_do_not_grow_with_generations() {
        assert_eq!(slug("sma-cross", 12, 0), "sma-cross-e12a");
        assert_eq!(slug("sma-cross-e12a", 13, 1), "sma-cross-e13b");
        let long = slug(&"x".repeat(60), 123_456, 0);
        assert!(long.len() <= 48, "{long}");
        scaffold::check_name(&long).expect("valid");
    }
}
