//! `keel:strategy@0.2.0`: one `batch` record of columns per `on-bars`
//! call, and `on-fill` as a call of its own.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use keel_model as m;
use keel_model::batch::Batch;

use super::convert::{named_by_string, positions_by_string, same_shape, since_v2};
use super::{Handled, bound};
use crate::sandbox::{Binding, Fault, Guard, HostState};

use self::bindings as b;

/// The `keel:strategy` version this file runs.
pub(super) const VERSION: &str = "0.2.0";

/// Host-side bindings of the `keel:strategy@0.2.0` world, so components built
/// against it keep loading.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.2.0",
        world: "keel:strategy/strategy@0.2.0",
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

/// A 0.2.0 instance's exports, and the batch that goes out to them, kept
/// from call to call to reuse its buffers and strings.
pub(crate) struct Guest {
    exports: b::Strategy,
    batch: b::Batch,
}

impl Guest {
    pub(super) fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(Guest {
            exports: pre.instantiate(store)?,
            batch: empty_batch(),
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

    /// One `on-bars` call for `batch`.
    pub(super) fn on_bars(
        &mut self,
        guard: &mut Guard,
        batch: &Batch<'_>,
        symbol_map: &[u32],
    ) -> Result<Handled, Fault> {
        let Guest {
            exports,
            batch: wit,
        } = self;
        batch_out(batch, bound(symbol_map), wit);
        let result = guard.call(batch.tick_times[0], batch.tick_times.len(), |store| {
            exports.call_on_bars(store, wit)
        });
        let result = match result? {
            Ok(result) => result,
            Err(msg) => return Ok((1, Vec::new(), Some(msg))),
        };
        guard.check_count(result.signals.len())?;
        let signals = result.signals.into_iter().map(signal_in);
        Ok((result.consumed as usize, signals.collect(), result.error))
    }

    /// Calls `on-fill` at once.
    pub(super) fn on_fill(&self, guard: &mut Guard, fill: &m::Fill) -> Result<(), Fault> {
        guard.call(fill.time_ms, 1, |store| {
            self.exports.call_on_fill(store, &fill_out(fill))
        })
    }
}

same_shape!();
named_by_string!();
since_v2!();
positions_by_string!();

/// The batch in binding form, each bar's symbol index renamed by
/// `symbol` (the instance's, from `init`); bars it maps to `None` (of
/// symbols it was not bound to) are left out.
fn batch_out(batch: &m::batch::Batch<'_>, symbol: impl Fn(u32) -> Option<u32>, out: &mut b::Batch) {
    out.tick_times.clear();
    out.tick_bars.clear();
    let columns = &mut out.bars;
    for column in [
        &mut columns.open,
        &mut columns.high,
        &mut columns.low,
        &mut columns.close,
        &mut columns.volume,
    ] {
        column.clear();
    }
    columns.symbol.clear();
    columns.time_ms.clear();
    if batch.keeps_all(&symbol) {
        // Every bar is kept: the columns copy as they are.
        let bars = batch.bars.slice(0, batch.bars.len());
        out.tick_times.extend_from_slice(batch.tick_times);
        out.tick_bars.extend_from_slice(batch.tick_bars);
        columns
            .symbol
            .extend(bars.symbol.iter().filter_map(|&s| symbol(s)));
        columns.time_ms.extend_from_slice(bars.time_ms);
        columns.open.extend_from_slice(bars.open);
        columns.high.extend_from_slice(bars.high);
        columns.low.extend_from_slice(bars.low);
        columns.close.extend_from_slice(bars.close);
        columns.volume.extend_from_slice(bars.volume);
    } else {
        let (times, counts) = (&mut out.tick_times, &mut out.tick_bars);
        batch.for_each_kept(
            symbol,
            |index, c| {
                columns.symbol.push(index);
                columns.time_ms.push(c.time_ms);
                columns.open.push(c.open);
                columns.high.push(c.high);
                columns.low.push(c.low);
                columns.close.push(c.close);
                columns.volume.push(c.volume);
            },
            |time_ms, kept| {
                times.push(time_ms);
                counts.push(kept);
            },
        );
    }
    portfolio_into(batch.portfolio, &mut out.portfolio);
    out.limits = limits_out(batch.limits);
}

/// An empty batch to fill with [`batch_out`].
fn empty_batch() -> b::Batch {
    b::Batch {
        tick_times: Vec::new(),
        tick_bars: Vec::new(),
        bars: b::Bars {
            symbol: Vec::new(),
            time_ms: Vec::new(),
            open: Vec::new(),
            high: Vec::new(),
            low: Vec::new(),
            close: Vec::new(),
            volume: Vec::new(),
        },
        portfolio: empty_portfolio(),
        limits: b::RiskLimits {
            max_position_fraction: 0.0,
            max_open_positions: 0,
            max_trade_fraction: 0.0,
            min_order_quote: 0.0,
        },
    }
}
