//! The deployments as a stack: the first run and each promotion push a
//! version, a rollback pops back to the one under it. The host loads the
//! rows; this decides which version is active and which one a rollback
//! restores. And the automatic rollback rule: a new version losing too
//! much in its first day.

use crate::config::RollbackRule;
use crate::names::named;

named! {
    /// What a deployment row records.
    pub enum DeployAction as "deployment action" {
        /// The first strategy a run traded, before any promotion.
        Initial = "initial",
        Promote = "promote",
        Rollback = "rollback",
    }
}

/// One deployment row: the version that became active, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub hash: String,
    pub candidate: Option<i64>,
    pub action: DeployAction,
}

/// An active version: its artifact's hash and, if it was one, its
/// candidate's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub hash: String,
    pub candidate: Option<i64>,
}

/// The active versions `rows` (oldest first) describe, oldest first: the
/// last is the active one. A rollback row takes the top off; what the row
/// says became active is the truth, should the history say otherwise.
pub fn versions(rows: impl IntoIterator<Item = Deployment>) -> Vec<Version> {
    let mut stack: Vec<Version> = Vec::new();
    for row in rows {
        let version = Version {
            hash: row.hash,
            candidate: row.candidate,
        };
        if row.action == DeployAction::Rollback {
            stack.pop();
            if stack.last().is_none_or(|top| top.hash != version.hash) {
                stack.push(version);
            }
        } else {
            stack.push(version);
        }
    }
    stack
}

/// What a rollback does: `current` stops being active, `restore` is active
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    pub current: Version,
    pub restore: Version,
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("nothing has been deployed; there is nothing to roll back")]
    NothingDeployed,
    #[error("there is no earlier version to roll back to")]
    NothingEarlier,
}

/// The rollback `rows` (oldest first) allow: back to the active version
/// from before the current one was deployed. Rolling back twice after two
/// promotions restores the first version, never the one just rolled back.
pub fn plan_rollback(
    rows: impl IntoIterator<Item = Deployment>,
) -> Result<RollbackPlan, RollbackRefused> {
    let mut stack = versions(rows);
    let current = stack.pop().ok_or(RollbackRefused::NothingDeployed)?;
    let restore = stack.pop().ok_or(RollbackRefused::NothingEarlier)?;
    Ok(RollbackPlan { current, restore })
}

/// A new version's first day: 24 hours of feed time after it took over.
pub const FIRST_DAY_MS: i64 = 86_400_000;

impl RollbackRule {
    /// The loss, percent of the equity at promotion, of a version promoted
    /// at `since_ms` with `equity_at` that now (`now_ms`) has `equity_now`,
    /// if it breaks the rule: still in its first day, and losing at least
    /// `daily_loss_pct`.
    pub fn first_day_loss(
        &self,
        equity_at: f64,
        since_ms: i64,
        equity_now: f64,
        now_ms: i64,
    ) -> Option<f64> {
        let loss = (equity_at - equity_now) / equity_at * 100.0;
        (now_ms - since_ms <= FIRST_DAY_MS && equity_at > 0.0 && loss >= self.daily_loss_pct)
            .then_some(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &str, candidate: Option<i64>, action: DeployAction) -> Deployment {
        Deployment {
            hash: hash.into(),
            candidate,
            action,
        }
    }

    fn hashes(stack: &[Version]) -> Vec<&str> {
        stack.iter().map(|v| v.hash.as_str()).collect()
    }

    #[test]
    fn promotions_push_and_rollbacks_pop() {
        use DeployAction::*;
        struct Case {
            name: &'static str,
            rows: Vec<Deployment>,
            stack: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "nothing deployed",
                rows: vec![],
                stack: &[],
            },
            Case {
                name: "two promotions",
                rows: vec![
                    row("a", None, Initial),
                    row("b", Some(1), Promote),
                    row("c", Some(2), Promote),
                ],
                stack: &["a", "b", "c"],
            },
            Case {
                name: "a rollback returns to the one under",
                rows: vec![
                    row("a", None, Initial),
                    row("b", Some(1), Promote),
                    row("c", Some(2), Promote),
                    row("b", Some(1), Rollback),
                ],
                stack: &["a", "b"],
            },
            Case {
                name: "a promotion after rollbacks",
                rows: vec![
                    row("a", None, Initial),
                    row("b", Some(1), Promote),
                    row("a", None, Rollback),
                    row("c", Some(2), Promote),
                ],
                stack: &["a", "c"],
            },
            Case {
                name: "a rollback row naming another version is the truth",
                rows: vec![
                    row("a", None, Initial),
                    row("b", Some(1), Promote),
                    row("x", None, Rollback),
                ],
                stack: &["a", "x"],
            },
        ];
        for case in cases {
            assert_eq!(hashes(&versions(case.rows)), case.stack, "{}", case.name);
        }
    }

    #[test]
    fn rollbacks_walk_back_never_forward() {
        use DeployAction::*;
        let mut rows = vec![
            row("a", None, Initial),
            row("b", Some(1), Promote),
            row("c", Some(2), Promote),
        ];
        let plan = plan_rollback(rows.clone()).expect("rollback");
        assert_eq!(
            (plan.current.candidate, plan.restore.clone()),
            (
                Some(2),
                Version {
                    hash: "b".into(),
                    candidate: Some(1)
                }
            )
        );
        rows.push(row("b", Some(1), Rollback));
        let plan = plan_rollback(rows.clone()).expect("rollback");
        assert_eq!(
            (plan.current.hash.as_str(), plan.restore.hash.as_str()),
            ("b", "a")
        );
        rows.push(row("a", None, Rollback));
        assert_eq!(
            plan_rollback(rows.clone()),
            Err(RollbackRefused::NothingEarlier)
        );
        assert_eq!(
            plan_rollback(Vec::new()).map_err(|e| e.to_string()),
            Err("nothing has been deployed; there is nothing to roll back".into())
        );
        assert_eq!(
            RollbackRefused::NothingEarlier.to_string(),
            "there is no earlier version to roll back to"
        );
    }

    #[test]
    fn the_rule_rolls_back_a_big_loss_in_the_first_day_only() {
        let rule = RollbackRule {
            daily_loss_pct: 10.0,
        };
        let cases = [
            (
                "a 10% loss within the day",
                1000.0,
                900.0,
                FIRST_DAY_MS,
                Some(10.0),
            ),
            ("a smaller loss", 1000.0, 901.0, 1000, None),
            ("a gain", 1000.0, 1100.0, 1000, None),
            ("after the first day", 1000.0, 500.0, FIRST_DAY_MS + 1, None),
            ("no equity at promotion", 0.0, -5.0, 1000, None),
        ];
        for (name, at, now, elapsed, loss) in cases {
            let got = rule.first_day_loss(at, 5_000, now, 5_000 + elapsed);
            assert_eq!(got.map(|l| (l * 1e6).round() / 1e6), loss, "{name}");
        }
    }
}
