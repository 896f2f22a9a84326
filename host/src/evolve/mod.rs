//! The nightly evolution: from the fund's own record to gated candidates.
//! `config` is `evolve.toml`; `night` runs one night, step by step, each
//! step stored by `record`; `benchmarks` computes the truth from the
//! ledger; `offline` is the author that needs no model; `provider` the
//! language-model APIs a role may be played by (with retries and the
//! night's budget); `diversity` drops a strategy trading exactly as one
//! already known; `gates` are the evolution's own gates before a
//! candidate is submitted, run in order by `cascade`. `roles` plays the
//! analyst, author and reviewer with a model when `evolve.toml` names one
//! (`analyst`, `author`), every prompt built by `prompts` from quoted data;
//! `schedule` starts the night beside `keel run --evolve`; `lock` lets one
//! night run at a time on a database.

mod analyst;
mod author;
pub mod benchmarks;
mod cascade;
pub mod config;
mod diversity;
pub mod gates;
pub mod lock;
pub mod night;
pub mod offline;
pub mod prompts;
pub mod provider;
pub mod record;
pub mod roles;
pub mod schedule;
