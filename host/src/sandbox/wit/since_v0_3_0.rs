//! `keel:strategy@0.3.0`: the bars go out packed as in 0.4.0, but as two
//! lists (ticks and keys); positions and fills name their symbol and tag as
//! strings; fills ride with the next batch.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use keel_model as m;
use keel_model::batch::{Batch, PackedBuffers};

use super::convert::{named_by_string, positions_by_string, same_shape, since_v2};
use super::{Handled, bound};
use crate::sandbox::{Binding, Fault, Guard, HostState};

use self::bindings as b;

/// The `keel:strategy` version this file runs.
pub(super) const VERSION: &str = "0.3.0";

/// Host-side bindings of the `keel:strategy@0.3.0` world, so components
/// built against it keep loading.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.3.0",
        world: "keel:strategy/strategy@0.3.0",
    });
    pub use self::keel::strategy::types::*;
}

/// Links this version's `keel:strategy/host` for the strategy to import.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    b::Strategy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl b::keel::strategy::types::Host for HostState {}

impl b::keel::strategy::host::Host for HostState {
    fn log(&mut self, level: b::LogLevel, message: String) {
        self.log.push(log_level(level), message);
    }
}

/// A component whose exports checked against this version.
pub(super) type Pre = b::StrategyPre<HostState>;

/// Type-checks the component's exports against this version.
pub(super) fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Pre> {
    Pre::new(pre)
}

/// A 0.3.0 instance's exports, and what goes out to them kept from call to
/// call to reuse the buffers and strings: the packed bars, the fills queued
/// for the next batch, and the portfolio.
pub(crate) struct Guest {
    exports: b::Strategy,
    packed: PackedBuffers,
    /// The first `pending` are queued; the rest are kept for their strings.
    fills: Vec<b::Fill>,
    pending: usize,
    portfolio: b::Portfolio,
}

impl Guest {
    pub(super) fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(Guest {
            exports: pre.instantiate(store)?,
            packed: PackedBuffers::default(),
            fills: Vec::new(),
            pending: 0,
            portfolio: empty_portfolio(),
        })
    }

    pub(super) fn describe(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<m::StrategyInfo> {
        Ok(info_in(self.exports.call_describe(store)?))
    }

    pub(super) fn init(
        &self,
        store: &mut Store<HostState>,
        binding: &Binding,
    ) -> wasmtime::Result<Result<(), String>> {
        self.exports
            .call_init(store, &params_out(&binding.params), &binding.symbols)
    }

    /// One `on-bars` call for `batch`, with the fills queued since the last.
    pub(super) fn on_bars(
        &mut self,
        guard: &mut Guard,
        batch: &Batch<'_>,
        symbol_map: &[u32],
    ) -> Result<Handled, Fault> {
        let Guest {
            exports,
            packed,
            fills,
            pending,
            portfolio,
        } = self;
        packed.pack(batch, bound(symbol_map));
        portfolio_into(batch.portfolio, portfolio);
        let limits = limits_out(batch.limits);
        let view = packed.view();
        let result = guard.call(batch.tick_times[0], batch.tick_times.len(), |store| {
            exports.call_on_bars(
                store,
                view.ticks,
                view.keys,
                view.prices,
                portfolio,
                limits,
                &fills[..*pending],
            )
        });
        // Delivered with this call, whatever becomes of it.
        *pending = 0;
        let result = match result? {
            Ok(result) => result,
            Err(msg) => return Ok((1, Vec::new(), Some(msg))),
        };
        guard.check_count(result.signals.len())?;
        let signals = result.signals.into_iter().map(signal_in);
        Ok((result.consumed as usize, signals.collect(), result.error))
    }

    /// Queues `fill` for the next batch, reusing an earlier fill's strings.
    pub(super) fn on_fill(&mut self, fill: &m::Fill) {
        match self.fills.get_mut(self.pending) {
            Some(reused) => fill_into(fill, reused),
            None => self.fills.push(fill_out(fill)),
        }
        self.pending += 1;
    }
}

same_shape!();
named_by_string!();
since_v2!();
positions_by_string!();

/// [`fill_out`] written over a fill of an earlier call, reusing its
/// strings.
fn fill_into(f: &m::Fill, out: &mut b::Fill) {
    out.symbol.clone_from(&f.symbol);
    out.tag.clone_from(&f.tag);
    out.action = action_out(f.action);
    out.price = f.price;
    out.quantity = f.quantity;
    out.fee = f.fee;
    out.time_ms = f.time_ms;
}
