//! Implementations of the kernel's `Venue`: the durable paper exchange
//! here; the backtest's in-memory one is `keel_backtester::kernel::SimulatedVenue`;
//! `kraken` is being built (signature and nonces so far). `history` is a
//! venue's public trade history, which `keel data download` reads.

pub mod body;
pub mod history;
pub mod kraken;
pub mod paper;

pub use paper::PaperVenue;
