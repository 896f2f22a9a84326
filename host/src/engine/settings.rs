//! What a run is set up with and what it ends with.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;

use keel_backtester::fills::FillModel;

use crate::candidates::CandidatesConfig;
use crate::control::{Command, Snapshot, SnapshotBook};
use crate::risk_limits::{RiskConfig, TradingState};
use crate::sandbox::StrategyArtifact;

/// Where a strategy's component comes from.
#[derive(Debug, Clone)]
pub enum StrategySource {
    File(PathBuf),
    /// Bytes already in hand (a stored candidate or deployment).
    Stored(StrategyArtifact),
}

/// One strategy to run: its component, parameter overrides, the symbols
/// it is bound to and its book.
#[derive(Debug, Clone)]
pub struct StrategySpec {
    pub source: StrategySource,
    pub params: Vec<String>,
    /// The run's symbols this strategy is shown and may trade, in the order
    /// it is told them; empty: every symbol of the run (as a backtest binds
    /// every `--data`).
    pub symbols: Vec<String>,
    /// The book's name; default `<name>#<n>`.
    pub slot: Option<String>,
}

impl StrategySpec {
    pub fn file(path: PathBuf, params: Vec<String>) -> StrategySpec {
        StrategySpec {
            source: StrategySource::File(path),
            params,
            symbols: Vec::new(),
            slot: None,
        }
    }

    /// The symbols this strategy is bound to among the run's `symbols`:
    /// the ones its spec names (each fed, none twice), else all of them.
    pub fn binding(&self, symbols: &[String]) -> anyhow::Result<Vec<String>> {
        if self.symbols.is_empty() {
            return Ok(symbols.to_vec());
        }
        for (i, s) in self.symbols.iter().enumerate() {
            if !symbols.contains(s) {
                anyhow::bail!(
                    "strategy {}: @{s} is not a symbol of this run (fed: {})",
                    self.origin(),
                    symbols.join(", ")
                );
            }
            if self.symbols[..i].contains(s) {
                anyhow::bail!("strategy {}: @{s} is named twice", self.origin());
            }
        }
        Ok(self.symbols.clone())
    }

    pub(super) fn origin(&self) -> String {
        match &self.source {
            StrategySource::File(p) => p.display().to_string(),
            StrategySource::Stored(a) => a.origin.display().to_string(),
        }
    }
}

/// Everything a run is set up with.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// How the feed is named in the ledger (`replay:<file>`, `sample:…`).
    pub feed_name: String,
    /// The symbols the feed delivers, in its order: a strategy is bound to
    /// all of them unless its spec names some.
    pub symbols: Vec<String>,
    /// Bars per second of feed time: `None` runs as fast as it can.
    pub speed: Option<f64>,
    pub cash: f64,
    pub risk: RiskConfig,
    pub fills: FillModel,
    pub strategies: Vec<StrategySpec>,
    /// Stop after booking this many bar closes (a live feed never ends).
    pub max_bars: Option<u64>,
    /// Paper-gate criteria and the automatic rollback rule.
    pub candidates: CandidatesConfig,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub run_id: i64,
    pub resumed: bool,
    /// Bar closes booked.
    pub bars: u64,
    pub state: TradingState,
    pub books: Vec<SnapshotBook>,
    /// The feed stopped on bad data (already booked bars are kept).
    pub feed_error: Option<String>,
    /// Stopped by a signal: the next start with the same settings resumes.
    pub interrupted: bool,
}

/// The control side: commands from the API and the snapshot it serves.
#[derive(Debug)]
pub struct ControlLink {
    pub commands: Receiver<Command>,
    pub snapshot: Arc<std::sync::Mutex<Snapshot>>,
    /// Set by the API the moment a kill arrives: no order leaves after it.
    pub kill_requested: Arc<AtomicBool>,
    /// Set by SIGINT or SIGTERM: the run stops after the current bar and
    /// stays resumable.
    pub stop_requested: Arc<AtomicBool>,
    /// `<db>.kill`, checked at start, before every bar and while waiting.
    pub kill_file: PathBuf,
}
