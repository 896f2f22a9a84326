//! The author and the reviewer played by models. The author writes a whole
//! `src/lib.rs` from the brief, following its parent's source; the crate is
//! written under the workdir and goes through the cheapest checks first —
//! the static review, the build, validation — each failure fed back to the
//! author (compiler diagnostics cut to their end), as many times as
//! `retries` allows. A strategy that trades exactly as one already known
//! is then dropped (`diversity`), before it costs a review. The reviewer
//! reads the code against the brief and the house rules; its rejection is
//! fed back once. What passes runs
//! its parameter grid in sample (every trial registered) and goes through
//! the gates at its own defaults.

use std::path::PathBuf;

use crate::sandbox::StrategyArtifact;
use crate::scaffold;

use super::cascade::{Cascade, Choice, review};
use super::config::Role;
use super::night::{Night, Plan};
use super::prompts::{self, Review};
use super::provider::Turn;
use super::record;

impl Night<'_> {
    /// One attempt written by the author's model.
    pub(super) fn authored(&mut self, plan: &Plan<'_>) -> anyhow::Result<()> {
        let settings = self.settings;
        let mut turns = vec![Turn::user(prompts::author(
            &plan.brief,
            &plan.slug,
            &plan.parent_name,
            &plan.parent_source,
        ))];
        let mut fixes_left = settings.config.retries;
        let mut review_fed_back = false;
        let mut attempt: Option<i64> = None;
        let none = serde_json::json!({});
        // Ends the attempt at `gate`, or feeds `what` back to the author
        // when a fix-up is left.
        let mut refuse = |n: &mut Night<'_>,
                          turns: &mut Vec<Turn>,
                          attempt: Option<i64>,
                          gate: &str,
                          hash: Option<&str>,
                          what: &str,
                          detail: &str|
         -> anyhow::Result<bool> {
            if fixes_left == 0 {
                // On the record even when no answer ever gave code.
                let a = match attempt {
                    Some(a) => a,
                    None => record::add_attempt(
                        n.conn,
                        n.id,
                        &plan.slug,
                        &plan.dir.display().to_string(),
                        plan.parent_hash.as_deref(),
                        &plan.brief,
                        "",
                    )?,
                };
                record::update_attempt(n.conn, a, gate, false, hash, &none, None)?;
                return Ok(false);
            }
            fixes_left -= 1;
            turns.push(Turn::user(prompts::author_fix(what, detail)));
            Ok(true)
        };
        loop {
            let (text, code) = self.ask(
                Role::Author,
                "generate",
                attempt,
                prompts::AUTHOR_SYSTEM,
                &turns,
                |t| prompts::authored_code(t, &plan.slug),
            )?;
            turns.push(Turn::assistant(text));
            let code = match code {
                Ok(code) => code,
                Err(why) => {
                    let what = "the answer was refused";
                    if refuse(self, &mut turns, attempt, "generate", None, what, &why)? {
                        continue;
                    }
                    return Ok(());
                }
            };
            let id = match attempt {
                Some(a) => {
                    record::set_attempt_source(self.conn, a, &code)?;
                    a
                }
                None => {
                    let a = record::add_attempt(
                        self.conn,
                        self.id,
                        &plan.slug,
                        &plan.dir.display().to_string(),
                        plan.parent_hash.as_deref(),
                        &plan.brief,
                        &code,
                    )?;
                    attempt = Some(a);
                    a
                }
            };
            if plan.dir.join("src").is_dir() {
                std::fs::write(plan.dir.join("src/lib.rs"), &code)?;
            } else {
                scaffold::write_unique(&plan.dir, &plan.slug, &code, &settings.sdk)?;
            }

            let house = self.step("review", "reviewer", Some(id), |_| Ok(review(&code)))?;
            if !house.ok {
                let what = "it breaks the house rules";
                if refuse(
                    self,
                    &mut turns,
                    attempt,
                    "review",
                    None,
                    what,
                    &house.output,
                )? {
                    continue;
                }
                return Ok(());
            }
            let build = self.build_step(&plan.dir, id)?;
            if !build.ok {
                let what = "it does not build";
                if refuse(
                    self,
                    &mut turns,
                    attempt,
                    "build",
                    None,
                    what,
                    &build.output,
                )? {
                    continue;
                }
                return Ok(());
            }
            let file = PathBuf::from(&build.output);
            let artifact = StrategyArtifact::read(&file, usize::MAX)?;
            let hash = artifact.hash.to_hex();
            let valid = self.validate_step(&file, &hash, id)?;
            if !valid.ok {
                let what = "the component fails validation";
                let h = Some(hash.as_str());
                if refuse(
                    self,
                    &mut turns,
                    attempt,
                    "validate",
                    h,
                    what,
                    &valid.output,
                )? {
                    continue;
                }
                return Ok(());
            }
            // A copy is dropped before it costs a review or a gate.
            let diverse =
                self.diversity_step(id, &artifact, plan.split, plan.fills, plan.parent)?;
            if !diverse.passed {
                return Ok(());
            }
            if self.models.plays(Role::Reviewer) {
                let verdict = self.review_by_model(id, &plan.brief, &code)?;
                if !verdict.accept {
                    if review_fed_back {
                        record::update_attempt(
                            self.conn,
                            id,
                            "review",
                            false,
                            Some(&hash),
                            &none,
                            None,
                        )?;
                        return Ok(());
                    }
                    // A rejection is fed back once, beside the fix-ups.
                    review_fed_back = true;
                    turns.push(Turn::user(prompts::author_fix(
                        "the reviewer rejected it",
                        &verdict.reasons.join("\n"),
                    )));
                    continue;
                }
            }
            return self.trials_and_gates(plan, id, artifact, diverse.figures);
        }
    }

    /// The written strategy's own parameter grid in sample (every trial
    /// registered), then the gates at its defaults.
    fn trials_and_gates(
        &mut self,
        plan: &Plan<'_>,
        attempt: i64,
        artifact: StrategyArtifact,
        diversity: serde_json::Value,
    ) -> anyhow::Result<()> {
        let loaded = self.sandbox.load(&artifact)?;
        let mut found = None;
        self.step("trials", "code", Some(attempt), |n| {
            let (done, grid) = n.grid(&loaded, plan.split, plan.fills, Choice::Defaults, &[])?;
            found = Some(grid);
            Ok(done)
        })?;
        let hash = artifact.hash.to_hex();
        let grid = match found {
            Some(grid) if grid.chosen.is_some() => grid,
            _ => {
                let none = serde_json::json!({});
                record::update_attempt(
                    self.conn,
                    attempt,
                    "trials",
                    false,
                    Some(&hash),
                    &none,
                    None,
                )?;
                return Ok(());
            }
        };
        let figures = serde_json::json!({
            "trades_hash": grid.trades_hash,
            "in_sample": grid.figures,
            "diversity": diversity,
        });
        self.gates_and_submit(Cascade {
            attempt,
            artifact,
            split: plan.split,
            fills: plan.fills,
            grid,
            brief: plan.brief.clone(),
            parent_hash: plan.parent_hash.clone(),
            dir: plan.dir.clone(),
            figures,
        })
    }

    /// The reviewer's verdict on `code`; an answer outside the schema is
    /// asked again once, and a second one counts as a rejection.
    pub(super) fn review_by_model(
        &mut self,
        attempt: i64,
        brief: &str,
        code: &str,
    ) -> anyhow::Result<Review> {
        let mut turns = vec![Turn::user(prompts::reviewer(brief, code))];
        let ask = |n: &mut Night<'_>, turns: &[Turn]| {
            n.ask(
                Role::Reviewer,
                "review",
                Some(attempt),
                prompts::REVIEWER_SYSTEM,
                turns,
                prompts::parse_review,
            )
        };
        let (text, first) = ask(self, &turns)?;
        let why = match first {
            Ok(review) => return Ok(review),
            Err(why) => why,
        };
        turns.push(Turn::assistant(text));
        turns.push(Turn::user(prompts::refused(&why)));
        Ok(ask(self, &turns)?.1.unwrap_or_else(|why| Review {
            accept: false,
            reasons: vec![format!("the reviewer's answer was refused twice: {why}")],
        }))
    }
}
