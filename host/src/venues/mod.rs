//! Implementations of the kernel's `Venue`: the durable paper exchange
//! here; the backtest's in-memory one is `keel_backtester::kernel::SimulatedVenue`;
//! live exchanges follow.

pub mod paper;

pub use paper::PaperVenue;
