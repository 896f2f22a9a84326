//! The backtester: an event-driven candle engine with no IO of its own.
//!
//! [`engine::run`] drives any [`keel_model::RunningStrategy`] (a sandboxed
//! component or a native strategy) over aligned candle series. Signals pass
//! the shared pre-trade [`risk`] checks, become market orders, and fill at the
//! next bar's open through the [`fills`] model (fees, slippage, volume cap,
//! lot rounding, stop-loss and take-profit inside the bar). [`metrics`] turns
//! the trades and the equity curve into figures. [`kernel`] is the per-close
//! step every mode shares — the book, order intents, the `Venue` trait and
//! the simulated venue; [`engine`] drives it for a backtest, the host's
//! paper engine for a paper run. Nothing here reads a clock, a file or the
//! network.

pub mod engine;
pub mod equity;
pub mod fills;
pub mod html;
pub mod kernel;
pub mod metrics;
pub mod report;
pub mod risk;

pub use engine::{BacktestConfig, BacktestResult, EquityPoint, ExitReason, Trade, run};
pub use metrics::Metrics;
pub use report::Report;
