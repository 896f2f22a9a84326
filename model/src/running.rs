//! What runs a strategy: the one trait a native strategy (through the SDK's
//! adapter) and a sandboxed component (through the host) both implement.

use crate::batch::{Batch, BatchOutcome};
use crate::contract::{Fill, Signal, Tick};

/// Anything that handles bars like a strategy: a native `Strategy` through the
/// SDK's adapter, or a sandboxed component through the host.
pub trait RunningStrategy {
    /// One bar close. `Err` is the strategy's own failure, as text.
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String>;

    /// Several bar closes, up to and including the first that gives signals
    /// (see [`crate::batch`]). `Err` fails the batch's first tick. The
    /// default hands each tick to `on_bar`; a sandboxed component overrides
    /// it to cross into wasm once per batch.
    fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
        Ok(crate::batch::drive(batch, |tick| self.on_bar(tick)))
    }

    /// One of its orders filled.
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String>;
}
