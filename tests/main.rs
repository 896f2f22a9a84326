//! Keel's cross-crate integration tests: one binary, so wasmtime links once.
//! Strategy components are built from the repo's own sources by `support`.

mod api;
mod backtest;
mod candidates;
mod cli;
mod dashboard;
mod data;
mod dev;
mod download;
mod equivalence;
mod events;
mod evolve;
mod fakes;
mod files;
mod fuzz;
mod kraken;
mod limits;
mod live;
mod paper;
mod readme;
mod safety;
mod sandbox;
mod support;
mod telegram;
