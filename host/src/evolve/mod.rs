//! The nightly evolution: from the fund's own record to gated candidates.
//! `config` is `evolve.toml`; `night` runs one night, step by step, each
//! step stored by `record`; `benchmarks` computes the truth from the
//! ledger; `offline` is the author that needs no model; `provider` the
//! language-model APIs a role may be played by (with retries and the
//! night's budget); `gates` are the evolution's own gates before a
//! candidate is submitted.

pub mod benchmarks;
pub mod config;
pub mod gates;
pub mod night;
pub mod offline;
pub mod provider;
pub mod record;
pub mod schedule;
