//! The rigid Keel host: the sandbox that runs strategy components under hard
//! limits, validation of artifacts, and the `keel` command line.

pub mod api;
pub mod backtest;
pub mod build_strategy;
pub mod candidates;
pub mod cli;
pub mod control;
pub mod dev;
pub mod download;
pub mod engine;
pub mod evolve;
pub mod ledger;
pub mod ranges;
pub mod risk_limits;
pub mod run_report;
pub mod sandbox;
pub mod scaffold;
pub mod store;
pub mod telegram;
pub mod validate;
pub mod venues;
