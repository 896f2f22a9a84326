//! Types every Keel crate shares: the strategy contract as plain Rust (what a
//! strategy sees and returns), candles and candle files, parameters, and the
//! replay loop that turns candle series into ticks.
//!
//! The host converts its wasm bindings to and from these types at the sandbox
//! boundary; the SDK re-exports them to strategy authors; a native strategy and
//! a sandboxed one therefore run through the same code.

pub mod batch;
pub mod bounds;
pub mod candles;
pub mod contract;
pub mod params;
pub mod replay;
pub mod running;
pub mod shown;
pub mod synth;

pub use bounds::{Bounds, OutOfRange};
pub use candles::{Candle, CandleError, Timeframe};
pub use contract::*;
pub use params::{ParamError, ParamKind, ParamSpec, ParamValue, Params};
pub use running::RunningStrategy;
