//! Candidates: how a new strategy artifact earns the right to trade, as
//! pure decisions over plain data. The host runs the gates (wasm,
//! backtests), reads and writes the rows; this crate says what the figures
//! mean and which moves are allowed.
//!
//! - [`state`]: the lifecycle, [`CandidateState`], and the one table of
//!   allowed moves, [`transition`].
//! - [`Actor`], [`Gate`], [`Verdict`]: who acts, which gate, what it said;
//!   strings only at the SQL and JSON boundary (`as_str`, `parse`).
//! - [`config`]: `candidates.toml` ([`CandidatesConfig`]), parsed from text
//!   with every number range-checked.
//! - [`judge`]: each gate's figures against its thresholds.
//! - [`deploy`]: the deployment stack, which version a rollback restores,
//!   and the automatic rollback rule.
//! - [`lineage`]: walking a candidate's ancestors, and hash prefixes.
//! - [`overfit`]: whether a backtest is overfit: moments, the probabilistic
//!   and deflated Sharpe ratios, and the probability of backtest
//!   overfitting by combinatorially symmetric cross-validation.
//!
//! No IO and no clock: every time and every row comes in as an argument.

mod names;

pub mod config;
pub mod deploy;
pub mod judge;
pub mod lineage;
pub mod overfit;
pub mod state;

pub use config::{BacktestGate, CandidatesConfig, ConfigError, PaperGate, RollbackRule};
pub use deploy::{DeployAction, Deployment, RollbackPlan, RollbackRefused, Version};
pub use judge::{FoldReturn, Judgement, PaperFigures};
pub use names::{Actor, Gate, UnknownName, Verdict};
pub use state::{CandidateState, Move, Refused, transition};
