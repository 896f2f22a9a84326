//! `keel:strategy@0.1.0`: `on-bar(tick)`, one call per bar close, and
//! `on-fill` as a call of its own.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use keel_model as m;
use keel_model::batch::{Batch, drive};

use super::Handled;
use super::convert::{named_by_string, same_shape};
use crate::sandbox::{Binding, Fault, Guard, HostState};

use self::bindings as b;

/// The `keel:strategy` version this file runs.
pub(super) const VERSION: &str = "0.1.0";

/// Host-side bindings of the `keel:strategy@0.1.0` world, so components built
/// against it keep loading.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "keel:strategy/strategy@0.1.0",
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

/// A 0.1.0 instance's exports.
pub(crate) struct Guest {
    exports: b::Strategy,
}

impl Guest {
    pub(super) fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(Guest {
            exports: pre.instantiate(store)?,
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
        self.exports.call_init(store, &params_out(&binding.params))
    }

    /// One `on-bar` call per close of `batch`, up to the first that gives
    /// signals.
    pub(super) fn on_bars(
        &self,
        guard: &mut Guard,
        batch: &Batch<'_>,
        bound_symbols: &[String],
    ) -> Result<Handled, Fault> {
        let mut fault = None;
        let outcome = drive(batch, |tick| {
            let wit_tick = tick_out(tick, bound_symbols);
            let result = guard.call(tick.time_ms, 1, |store| {
                self.exports.call_on_bar(store, &wit_tick)
            });
            match result {
                Ok(Ok(signals)) => {
                    if let Err(f) = guard.check_count(signals.len()) {
                        fault = Some(f);
                        return Err(String::new());
                    }
                    Ok(signals.into_iter().map(signal_in).collect())
                }
                Ok(Err(msg)) => Err(msg),
                Err(f) => {
                    fault = Some(f);
                    Err(String::new())
                }
            }
        });
        if let Some(fault) = fault {
            return Err(fault);
        }
        Ok((outcome.consumed, outcome.signals, outcome.error))
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

/// The tick in binding form, with only the bars of `bound` symbols.
fn tick_out(t: &m::Tick, bound: &[String]) -> b::Tick {
    b::Tick {
        time_ms: t.time_ms,
        bars: t
            .bars
            .iter()
            .filter(|bar| bound.iter().any(|s| **s == *bar.symbol))
            .map(|bar| b::Bar {
                symbol: bar.symbol.to_string(),
                time_ms: bar.time_ms,
                open: bar.open,
                high: bar.high,
                low: bar.low,
                close: bar.close,
                volume: bar.volume,
            })
            .collect(),
        portfolio: b::Portfolio {
            cash: t.portfolio.cash,
            equity: t.portfolio.equity,
            positions: t
                .portfolio
                .positions
                .iter()
                .map(|p| b::Position {
                    symbol: p.symbol.clone(),
                    tag: p.tag.clone(),
                    side: side_out(p.side),
                    size: p.size,
                    price_entry: p.price_entry,
                    time_entry_ms: p.time_entry_ms,
                    pnl_unrealized: p.pnl_unrealized,
                    mae: p.mae,
                })
                .collect(),
        },
        limits: b::RiskLimits {
            max_position_fraction: t.limits.max_position_fraction,
            max_open_positions: t.limits.max_open_positions,
            max_trade_fraction: t.limits.max_trade_fraction,
            min_order_quote: t.limits.min_order_quote,
        },
    }
}
