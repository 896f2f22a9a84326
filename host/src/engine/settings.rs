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

/// One strategy to run: its component, parameter overrides and book.
#[derive(Debug, Clone)]
pub struct StrategySpec {
    pub source: StrategySource,
    pub params: Vec<String>,
    /// The book's name; default `<name>#<n>`.
    pub slot: Option<String>,
}

impl StrategySpec {
    pub fn file(path: PathBuf, params: Vec<String>) -> StrategySpec {
        StrategySpec {
            source: StrategySource::File(path),
            params,
            slot: None,
        }
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
    /// The symbols the feed delivers, in its order: every strategy of the
    /// run is bound to them.
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
