//! The candidate lifecycle: its states and the one table of moves between
//! them.
//!
//! ```text
//! submitted ──offline gates──▶ gated ──paper gate──▶ passed ──promote──▶ promoted
//!     │ fail                     │ fail                                   │ ▲
//!     ▼                          ▼                       retire (replaced │ │ restore (a rollback
//!   failed ◀─────────────────────┘                     or rolled back)    ▼ │ brings it back)
//!                                                                       retired
//! ```
//!
//! An operator may reject any candidate but the active one; a promotion is
//! refused of a rejected or already active one (forcing past failed or
//! missing gates is the host's audited decision, not a state); a
//! rollback restores the version under the top of the deployment stack
//! whatever was said of it since, so `retired` and `rejected` may both be
//! restored.

use crate::names::{Verdict, named};

named! {
    /// Where a candidate is on its way to trading.
    pub enum CandidateState as "candidate state" {
        /// Stored; its offline gates have not come to a verdict (a crash
        /// may leave it so; a resubmission judges it again).
        Submitted = "submitted",
        /// Validate and backtest passed; waiting for (or in) its paper run.
        Gated = "gated",
        /// A gate said no.
        Failed = "failed",
        /// Every gate passed, paper too.
        Passed = "passed",
        /// The active strategy.
        Promoted = "promoted",
        /// Was the active strategy; replaced or rolled back.
        Retired = "retired",
        /// An operator said no.
        Rejected = "rejected",
    }
}

/// What moves a candidate from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// The offline gates (validate, then backtest) came to a verdict.
    OfflineGates(Verdict),
    /// The paper gate came to a verdict.
    PaperGate(Verdict),
    /// Made the active strategy.
    Promote,
    /// No longer the active strategy: a promotion replaced it, or it was
    /// rolled back.
    Retire,
    /// The active strategy again, restored by a rollback.
    Restore,
    /// An operator said no.
    Reject,
}

impl Move {
    /// Every move.
    pub const ALL: &'static [Move] = &[
        Move::OfflineGates(Verdict::Pass),
        Move::OfflineGates(Verdict::Fail),
        Move::PaperGate(Verdict::Pass),
        Move::PaperGate(Verdict::Fail),
        Move::Promote,
        Move::Retire,
        Move::Restore,
        Move::Reject,
    ];

    /// The move in words, after "cannot be".
    pub fn as_words(self) -> &'static str {
        match self {
            Move::OfflineGates(_) => "judged by the offline gates",
            Move::PaperGate(_) => "judged by the paper gate",
            Move::Promote => "promoted",
            Move::Retire => "retired",
            Move::Restore => "restored",
            Move::Reject => "rejected",
        }
    }
}

/// A move the lifecycle does not allow from a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} candidate cannot be {}", by.as_words())]
pub struct Refused {
    pub from: CandidateState,
    pub by: Move,
}

/// The state `by` moves a candidate in state `from` to, or why not. This
/// is the lifecycle's one table.
pub fn transition(from: CandidateState, by: Move) -> Result<CandidateState, Refused> {
    use CandidateState::*;
    let to = match (from, by) {
        (Submitted, Move::OfflineGates(Verdict::Pass)) => Gated,
        (Submitted, Move::OfflineGates(Verdict::Fail)) => Failed,
        (Gated, Move::PaperGate(Verdict::Pass)) => Passed,
        (Gated, Move::PaperGate(Verdict::Fail)) => Failed,
        (Submitted | Gated | Failed | Passed | Retired, Move::Promote) => Promoted,
        (Promoted, Move::Retire) => Retired,
        (Retired | Rejected, Move::Restore) => Promoted,
        (Submitted | Gated | Failed | Passed | Retired | Rejected, Move::Reject) => Rejected,
        _ => return Err(Refused { from, by }),
    };
    Ok(to)
}

/// Can some move take a candidate from `from` to `to`?
pub fn can_move(from: CandidateState, to: CandidateState) -> bool {
    Move::ALL.iter().any(|by| transition(from, *by) == Ok(to))
}

#[cfg(test)]
mod tests {
    use super::CandidateState::*;
    use super::*;

    const PASS: Verdict = Verdict::Pass;
    const FAIL: Verdict = Verdict::Fail;

    /// Every allowed move: (from, move, to).
    const ALLOWED: &[(CandidateState, Move, CandidateState)] = &[
        (Submitted, Move::OfflineGates(PASS), Gated),
        (Submitted, Move::OfflineGates(FAIL), Failed),
        (Gated, Move::PaperGate(PASS), Passed),
        (Gated, Move::PaperGate(FAIL), Failed),
        // Promotion past failed or missing gates is forced, and audited.
        (Submitted, Move::Promote, Promoted),
        (Gated, Move::Promote, Promoted),
        (Failed, Move::Promote, Promoted),
        (Passed, Move::Promote, Promoted),
        // Promoted again after it was replaced.
        (Retired, Move::Promote, Promoted),
        (Promoted, Move::Retire, Retired),
        (Retired, Move::Restore, Promoted),
        (Rejected, Move::Restore, Promoted),
        (Submitted, Move::Reject, Rejected),
        (Gated, Move::Reject, Rejected),
        (Failed, Move::Reject, Rejected),
        (Passed, Move::Reject, Rejected),
        (Retired, Move::Reject, Rejected),
        (Rejected, Move::Reject, Rejected),
    ];

    #[test]
    fn every_allowed_move_lands_where_the_table_says() {
        for &(from, by, to) in ALLOWED {
            assert_eq!(transition(from, by), Ok(to), "{from} by {by:?}");
            assert!(can_move(from, to), "{from} -> {to}");
        }
    }

    #[test]
    fn every_other_move_is_refused() {
        let mut refused = 0;
        for &from in CandidateState::ALL {
            for &by in Move::ALL {
                if ALLOWED.iter().any(|&(f, b, _)| (f, b) == (from, by)) {
                    continue;
                }
                assert_eq!(transition(from, by), Err(Refused { from, by }));
                refused += 1;
            }
        }
        assert_eq!(
            refused,
            CandidateState::ALL.len() * Move::ALL.len() - ALLOWED.len()
        );
    }

    #[test]
    fn the_refusals_that_matter_say_why() {
        let cases = [
            (
                Promoted,
                Move::Promote,
                "a promoted candidate cannot be promoted",
            ),
            (
                Rejected,
                Move::Promote,
                "a rejected candidate cannot be promoted",
            ),
            (
                Promoted,
                Move::Reject,
                "a promoted candidate cannot be rejected",
            ),
            // A paper verdict moves only a candidate still waiting for it.
            (
                Rejected,
                Move::PaperGate(PASS),
                "a rejected candidate cannot be judged by the paper gate",
            ),
            (
                Promoted,
                Move::PaperGate(FAIL),
                "a promoted candidate cannot be judged by the paper gate",
            ),
            (
                Passed,
                Move::PaperGate(PASS),
                "a passed candidate cannot be judged by the paper gate",
            ),
            // The offline gates judge a candidate once.
            (
                Gated,
                Move::OfflineGates(PASS),
                "a gated candidate cannot be judged by the offline gates",
            ),
            (
                Failed,
                Move::OfflineGates(PASS),
                "a failed candidate cannot be judged by the offline gates",
            ),
            // Only the active version is retired, only a former one restored.
            (Gated, Move::Retire, "a gated candidate cannot be retired"),
            (
                Promoted,
                Move::Restore,
                "a promoted candidate cannot be restored",
            ),
            (
                Submitted,
                Move::Restore,
                "a submitted candidate cannot be restored",
            ),
        ];
        for (from, by, message) in cases {
            let err = transition(from, by).expect_err(message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn states_are_reached_only_along_the_table() {
        assert!(can_move(Submitted, Gated));
        assert!(!can_move(Submitted, Passed));
        assert!(!can_move(Failed, Gated));
        assert!(!can_move(Promoted, Rejected));
        assert!(!can_move(Rejected, Gated));
        for state in CandidateState::ALL {
            assert_eq!(CandidateState::parse(state.as_str()), Ok(*state));
        }
    }
}
