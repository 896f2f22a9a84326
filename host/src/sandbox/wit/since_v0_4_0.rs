//! `keel:strategy@0.4.0`, the current contract: the bars go out packed in
//! fixed lanes ([`PackedBuffers::pack`]); positions and fills name their
//! symbol by index among the bound symbols and their tag by index into the
//! call's [`Tags`]; fills ride with the next batch.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use keel_model as m;
use keel_model::batch::{Batch, PackedBuffers};

use super::convert::{same_shape, since_v2};
use super::{Handled, bound};
use crate::sandbox::{Binding, Fault, Guard, HostState};

use self::bindings as b;

/// The `keel:strategy` version this file runs.
pub(super) const VERSION: &str = "0.4.0";

/// Host-side bindings of the `keel:strategy@0.4.0` world. (`on-bars` takes
/// its parts as separate parameters, so the generated call has many.)
#[allow(clippy::too_many_arguments)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.4.0",
        world: "keel:strategy/strategy@0.4.0",
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

/// A 0.4.0 instance's exports, and what goes out to them kept from call to
/// call to reuse the buffers: the packed bars, the fills queued for the
/// next batch, the portfolio and the tags they name.
pub(crate) struct Guest {
    exports: b::Strategy,
    packed: PackedBuffers,
    fills: Vec<b::Fill>,
    tags: Tags,
    portfolio: b::Portfolio,
}

impl Guest {
    pub(super) fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(Guest {
            exports: pre.instantiate(store)?,
            packed: PackedBuffers::default(),
            fills: Vec::new(),
            tags: Tags::default(),
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
        bound_symbols: &[String],
    ) -> Result<Handled, Fault> {
        let Guest {
            exports,
            packed,
            fills,
            tags,
            portfolio,
        } = self;
        packed.pack(batch, bound(symbol_map));
        portfolio_into(batch.portfolio, bound_symbols, tags, portfolio);
        let limits = limits_out(batch.limits);
        let result = guard.call(batch.tick_times[0], batch.tick_times.len(), |store| {
            exports.call_on_bars(
                store,
                packed.lanes(),
                packed.prices(),
                portfolio,
                limits,
                fills,
                tags.list(),
            )
        });
        // Delivered with this call, whatever becomes of it.
        fills.clear();
        tags.clear();
        let result = match result? {
            Ok(result) => result,
            Err(msg) => return Ok((1, Vec::new(), Some(msg))),
        };
        guard.check_count(result.signals.len())?;
        let signals = result.signals.into_iter().map(signal_in);
        Ok((result.consumed as usize, signals.collect(), result.error))
    }

    /// Queues `fill` for the next batch.
    pub(super) fn on_fill(&mut self, fill: &m::Fill, bound_symbols: &[String]) {
        self.fills
            .push(fill_out(fill, bound_symbols, &mut self.tags));
    }
}

same_shape!();
since_v2!();

/// The tags of one call, each once, that its positions and fills name
/// by index. The strings are kept after [`Tags::clear`] to be written
/// over by the next call's.
#[derive(Debug, Default)]
struct Tags {
    names: Vec<String>,
    used: usize,
}

impl Tags {
    /// The index of `tag`, added if new; `None` for the empty tag.
    fn index(&mut self, tag: &str) -> Option<u32> {
        if tag.is_empty() {
            return None;
        }
        let known = self.names[..self.used].iter().position(|t| t == tag);
        let index = known.unwrap_or_else(|| {
            match self.names.get_mut(self.used) {
                Some(reused) => tag.clone_into(reused),
                None => self.names.push(tag.to_owned()),
            }
            self.used += 1;
            self.used - 1
        });
        Some(index as u32)
    }

    /// What the call hands over.
    fn list(&self) -> &[String] {
        &self.names[..self.used]
    }

    /// Empties the table (after the call that delivered it).
    fn clear(&mut self) {
        self.used = 0;
    }
}

/// `symbol`'s index among the `bound` symbols. A position or fill is
/// always in a bound symbol (a signal for any other is refused); were
/// one not, the index is out of range and the strategy reads the
/// symbol as empty.
fn symbol_index(symbol: &str, bound: &[String]) -> u32 {
    let index = bound.iter().position(|s| s == symbol);
    debug_assert!(index.is_some(), "{symbol} is not bound");
    index.map_or(u32::MAX, |i| i as u32)
}

fn fill_out(f: &m::Fill, bound: &[String], tags: &mut Tags) -> b::Fill {
    b::Fill {
        symbol: symbol_index(&f.symbol, bound),
        tag: tags.index(&f.tag),
        action: action_out(f.action),
        price: f.price,
        quantity: f.quantity,
        fee: f.fee,
        time_ms: f.time_ms,
    }
}

/// The portfolio in binding form, written over the one of an earlier
/// call (no allocation once its list is long enough).
fn portfolio_into(p: &m::Portfolio, bound: &[String], tags: &mut Tags, out: &mut b::Portfolio) {
    out.cash = p.cash;
    out.equity = p.equity;
    out.positions.clear();
    out.positions
        .extend(p.positions.iter().map(|p| b::Position {
            symbol: symbol_index(&p.symbol, bound),
            tag: tags.index(&p.tag),
            side: side_out(p.side),
            size: p.size,
            price_entry: p.price_entry,
            time_entry_ms: p.time_entry_ms,
            price_mark: p.price_mark,
            pnl_unrealized: p.pnl_unrealized,
            mae: p.mae,
        }));
}
