//! The `keel:strategy` contract versions this host runs, one file each
//! (`since_vX_Y_Z.rs`: that version's bindings, conversions, host functions
//! and calls), and the one enum that picks among them, [`Guest`]. A new
//! version is a new file, an arm of `Guest` and a line in each function
//! here; nothing outside this folder changes.

mod convert;
mod since_v0_1_0;
mod since_v0_2_0;
mod since_v0_3_0;
mod since_v0_4_0;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

use keel_model::batch::Batch;
use keel_model::{Fill, Signal, StrategyInfo};

use super::{Binding, Fault, Guard, HostState};

/// Contract versions this host runs, newest first.
pub const CONTRACT_VERSIONS: [&str; 4] = [
    since_v0_4_0::VERSION,
    since_v0_3_0::VERSION,
    since_v0_2_0::VERSION,
    since_v0_1_0::VERSION,
];

/// `versions` as a reader lists them: "0.3.0, 0.2.0 or 0.1.0".
pub(super) fn listed(versions: &[&str]) -> String {
    match versions.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// What one call made of a batch: ticks handled, their last one's signals,
/// and its error.
pub(crate) type Handled = (usize, Vec<Signal>, Option<String>);

/// Adds the host side of every version (`keel:strategy/host`) to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    since_v0_4_0::add_to_linker(linker)?;
    since_v0_3_0::add_to_linker(linker)?;
    since_v0_2_0::add_to_linker(linker)?;
    since_v0_1_0::add_to_linker(linker)?;
    Ok(())
}

/// Makes a [`Guest`] of one version in a store.
type Instantiate = dyn Fn(&mut Store<HostState>) -> wasmtime::Result<Guest> + Send + Sync;

/// A component whose exports checked against one contract version, ready
/// to instantiate many times.
#[derive(Clone)]
pub(crate) struct GuestPre {
    contract: &'static str,
    instantiate: Arc<Instantiate>,
}

impl GuestPre {
    /// Checks `pre`'s exports against each version, newest first. The error
    /// worth reporting is the newest's.
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<GuestPre> {
        let newest = match since_v0_4_0::pre(pre.clone()) {
            Ok(p) => {
                return Ok(GuestPre::of(since_v0_4_0::VERSION, move |store| {
                    since_v0_4_0::Guest::instantiate(&p, store).map(Guest::V4)
                }));
            }
            Err(newest) => newest,
        };
        if let Ok(p) = since_v0_3_0::pre(pre.clone()) {
            return Ok(GuestPre::of(since_v0_3_0::VERSION, move |store| {
                since_v0_3_0::Guest::instantiate(&p, store).map(Guest::V3)
            }));
        }
        if let Ok(p) = since_v0_2_0::pre(pre.clone()) {
            return Ok(GuestPre::of(since_v0_2_0::VERSION, move |store| {
                since_v0_2_0::Guest::instantiate(&p, store).map(Guest::V2)
            }));
        }
        if let Ok(p) = since_v0_1_0::pre(pre) {
            return Ok(GuestPre::of(since_v0_1_0::VERSION, move |store| {
                since_v0_1_0::Guest::instantiate(&p, store).map(Guest::V1)
            }));
        }
        Err(newest)
    }

    fn of(
        contract: &'static str,
        instantiate: impl Fn(&mut Store<HostState>) -> wasmtime::Result<Guest> + Send + Sync + 'static,
    ) -> GuestPre {
        GuestPre {
            contract,
            instantiate: Arc::new(instantiate),
        }
    }

    /// The version it implements, e.g. "0.2.0".
    pub(crate) fn contract(&self) -> &'static str {
        self.contract
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        (self.instantiate)(store)
    }
}

/// One instance's exports, and what goes out to them, by contract version.
pub(crate) enum Guest {
    V4(since_v0_4_0::Guest),
    V3(since_v0_3_0::Guest),
    V2(since_v0_2_0::Guest),
    V1(since_v0_1_0::Guest),
}

impl Guest {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<StrategyInfo> {
        match self {
            Guest::V4(g) => g.describe(store),
            Guest::V3(g) => g.describe(store),
            Guest::V2(g) => g.describe(store),
            Guest::V1(g) => g.describe(store),
        }
    }

    pub(crate) fn init(
        &self,
        store: &mut Store<HostState>,
        binding: &Binding,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Guest::V4(g) => g.init(store, binding),
            Guest::V3(g) => g.init(store, binding),
            Guest::V2(g) => g.init(store, binding),
            Guest::V1(g) => g.init(store, binding),
        }
    }

    /// Whether one call takes several bar closes (0.2.0 and later); a
    /// 0.1.0 component is given one at a time.
    pub(crate) fn takes_batches(&self) -> bool {
        match self {
            Guest::V4(_) | Guest::V3(_) | Guest::V2(_) => true,
            Guest::V1(_) => false,
        }
    }

    /// Hands `batch` over under `guard` (0.1.0: one call per close, up to
    /// the first that gives signals). `symbol_map` gives each of the
    /// batch's symbols its index among the `bound_symbols` (`u32::MAX`: not
    /// bound).
    pub(crate) fn on_bars(
        &mut self,
        guard: &mut Guard,
        batch: &Batch<'_>,
        symbol_map: &[u32],
        bound_symbols: &[String],
    ) -> Result<Handled, Fault> {
        match self {
            Guest::V4(g) => g.on_bars(guard, batch, symbol_map, bound_symbols),
            Guest::V3(g) => g.on_bars(guard, batch, symbol_map),
            Guest::V2(g) => g.on_bars(guard, batch, symbol_map),
            Guest::V1(g) => g.on_bars(guard, batch, bound_symbols),
        }
    }

    /// Tells the component one of its orders filled: queued for the next
    /// batch (0.3.0 and later), else a call of its own under `guard`.
    pub(crate) fn on_fill(
        &mut self,
        guard: &mut Guard,
        fill: &Fill,
        bound_symbols: &[String],
    ) -> Result<(), Fault> {
        match self {
            Guest::V4(g) => {
                g.on_fill(fill, bound_symbols);
                Ok(())
            }
            Guest::V3(g) => {
                g.on_fill(fill);
                Ok(())
            }
            Guest::V2(g) => g.on_fill(guard, fill),
            Guest::V1(g) => g.on_fill(guard, fill),
        }
    }
}

/// A batch's symbol index as the instance's own (`symbol_map`), or `None`
/// for a symbol it is not bound to.
fn bound(symbol_map: &[u32]) -> impl Fn(u32) -> Option<u32> + '_ {
    |i| {
        symbol_map
            .get(i as usize)
            .copied()
            .filter(|&s| s != u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_listed_as_a_reader_would() {
        assert_eq!(listed(&[]), "");
        assert_eq!(listed(&["0.1.0"]), "0.1.0");
        assert_eq!(listed(&["0.2.0", "0.1.0"]), "0.2.0 or 0.1.0");
        assert_eq!(
            listed(&["0.3.0", "0.2.0", "0.1.0"]),
            "0.3.0, 0.2.0 or 0.1.0"
        );
    }

    #[test]
    fn the_versions_run_are_newest_first() {
        let parsed: Vec<Vec<u32>> = CONTRACT_VERSIONS
            .iter()
            .map(|v| v.split('.').map(|n| n.parse().expect(v)).collect())
            .collect();
        assert!(parsed.iter().all(|v| v.len() == 3), "{CONTRACT_VERSIONS:?}");
        assert!(
            parsed.windows(2).all(|w| w[0] > w[1]),
            "{CONTRACT_VERSIONS:?}"
        );
    }
}
