//! Diversity by behaviour: a strategy whose trades on the reference data
//! (the night's in-sample part, at its default parameters) are exactly
//! those of a strategy already known is nothing new. Known are the active
//! strategy, the attempt's parent, every candidate on record (the
//! operator's too, whatever its state) and every earlier attempt of every
//! night. The check runs right after a strategy builds and validates,
//! before the expensive gates, and the record names the one it copies.

use std::collections::HashMap;

use keel_backtester::fills::FillModel;
use keel_model::Params;

use crate::candidates;
use crate::sandbox::{LoadedStrategy, Sandbox, StrategyArtifact};

use super::gates::{self, Split, Verdict};
use super::night::{Done, Night};
use super::record;

/// A trade list already known, and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Known {
    /// How the record names its owner ("candidate 3 (sma-cross)").
    pub whose: String,
    pub hash: String,
}

/// The diversity verdict on trade list `hash`: it fails when any of
/// `known` traded exactly so.
pub(super) fn judge(hash: &str, known: &[Known]) -> Verdict {
    match known.iter().find(|k| k.hash == hash) {
        Some(k) => Verdict {
            gate: "diversity",
            passed: false,
            detail: format!("trades exactly as {}: nothing new", k.whose),
            figures: serde_json::json!({ "trades_hash": hash, "copies": k.whose }),
        },
        None => Verdict {
            gate: "diversity",
            passed: true,
            detail: format!("a trade list of its own (against {} known)", known.len()),
            figures: serde_json::json!({ "trades_hash": hash, "known": known.len() }),
        },
    }
}

/// The trade lists of components already run tonight, by component hash
/// (the night's reference data and fills do not change).
pub(super) type TradeLists = HashMap<String, Option<String>>;

/// The trade-list hash of `loaded` at its defaults on the in-sample part;
/// none when it cannot run there (a component that cannot run trades
/// nothing to copy).
fn trades_of(
    sandbox: &Sandbox,
    loaded: &LoadedStrategy,
    split: &Split,
    fills: FillModel,
) -> Option<String> {
    let params = Params::resolve(&loaded.info.params, &[]).ok()?;
    let bt = gates::config(fills, false);
    let run = gates::run(sandbox, loaded, &params, &split.in_sample, &bt, false).ok()?;
    Some(gates::trades_hash(&run))
}

impl Night<'_> {
    /// The trade list of the component stored under `hash`, run once a night.
    fn stored_trades(
        &mut self,
        hash: &str,
        split: &Split,
        fills: FillModel,
    ) -> anyhow::Result<Option<String>> {
        if let Some(known) = self.traded.get(hash) {
            return Ok(known.clone());
        }
        let artifact = candidates::load_blob(self.conn, hash)?;
        let trades = self
            .sandbox
            .load(&artifact)
            .ok()
            .and_then(|loaded| trades_of(self.sandbox, &loaded, split, fills));
        self.traded.insert(hash.to_owned(), trades.clone());
        Ok(trades)
    }

    /// Every trade list a new strategy must differ from, but attempt
    /// `except`'s own: the active strategy's, `parent`'s, each
    /// candidate's, each earlier attempt's.
    pub(super) fn known_trades(
        &mut self,
        split: &Split,
        fills: FillModel,
        parent: &LoadedStrategy,
        except: Option<i64>,
    ) -> anyhow::Result<Vec<Known>> {
        let mut known = Vec::new();
        if let Some(active) = candidates::active(self.conn)?
            && let Some(hash) = self.stored_trades(&active, split, fills)?
        {
            known.push(Known {
                whose: format!(
                    "the active strategy ({})",
                    active.get(..12).unwrap_or(&active)
                ),
                hash,
            });
        }
        let parent_hash = parent.hash.to_hex();
        let parent_trades = match self.traded.get(&parent_hash) {
            Some(t) => t.clone(),
            None => {
                let t = trades_of(self.sandbox, parent, split, fills);
                self.traded.insert(parent_hash, t.clone());
                t
            }
        };
        if let Some(hash) = parent_trades {
            known.push(Known {
                whose: format!("its parent {}", parent.info.name),
                hash,
            });
        }
        for c in candidates::list(self.conn)? {
            if let Some(hash) = self.stored_trades(&c.hash, split, fills)? {
                known.push(Known {
                    whose: format!("candidate {} ({})", c.id, c.name),
                    hash,
                });
            }
        }
        for (attempt, night, slug, hash) in record::trade_lists(self.conn)? {
            if Some(attempt) != except {
                known.push(Known {
                    whose: format!("attempt {attempt} ({slug}) of night {night}"),
                    hash,
                });
            }
        }
        Ok(known)
    }

    /// The diversity check of attempt `attempt`'s component, recorded as
    /// its step; a copy ends the attempt there. Returns the verdict.
    pub(super) fn diversity_step(
        &mut self,
        attempt: i64,
        artifact: &StrategyArtifact,
        split: &Split,
        fills: FillModel,
        parent: &LoadedStrategy,
    ) -> anyhow::Result<Verdict> {
        let component = artifact.hash.to_hex();
        let mut judged = None;
        self.step("diversity", "code", Some(attempt), |n| {
            let loaded = n.sandbox.load(artifact)?;
            let own = trades_of(n.sandbox, &loaded, split, fills)
                .ok_or_else(|| anyhow::anyhow!("it does not run on the in-sample data"))?;
            let known = n.known_trades(split, fills, parent, Some(attempt))?;
            let verdict = judge(&own, &known);
            let done = Done::new(
                verdict.passed,
                component.clone(),
                serde_json::to_string(&verdict)?,
            );
            judged = Some(verdict);
            Ok(done)
        })?;
        let verdict =
            judged.ok_or_else(|| anyhow::anyhow!("the diversity step gave no verdict"))?;
        if !verdict.passed {
            let figures = serde_json::json!({
                "trades_hash": verdict.figures["trades_hash"],
                "diversity": verdict.figures,
            });
            record::update_attempt(
                self.conn,
                attempt,
                "diversity",
                false,
                Some(&component),
                &figures,
                None,
            )?;
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trade_list_already_known_is_dropped_naming_whose_it_is() {
        let known = [
            Known {
                whose: "the active strategy (0123456789ab)".into(),
                hash: "a".into(),
            },
            Known {
                whose: "candidate 2 (rsi-reversion)".into(),
                hash: "b".into(),
            },
        ];
        let copy = judge("b", &known);
        assert!(!copy.passed);
        assert_eq!(
            copy.detail,
            "trades exactly as candidate 2 (rsi-reversion): nothing new"
        );
        assert_eq!(copy.figures["copies"], "candidate 2 (rsi-reversion)");
        let new = judge("c", &known);
        assert!(new.passed, "{new:?}");
        assert_eq!(new.figures["trades_hash"], "c");
        assert!(judge("a", &[]).passed, "nothing known: nothing copied");
    }
}
