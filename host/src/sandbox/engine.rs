//! The one place the wasm engine is configured, the compiler built on it
//! (an engine and the linker of its stores), and the epoch ticker that
//! wall-clock metering needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::{EPOCH_TICK, HostState, LoadError, Metering, SandboxConfig, Tier, one_line, wit};

/// The one place the wasm engine is configured.
pub(super) fn engine(config: &SandboxConfig, tier: Tier) -> anyhow::Result<Engine> {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(config.metering != Metering::Fuel)
        .consume_fuel(config.metering == Metering::Fuel)
        .max_wasm_stack(config.limits.max_stack_bytes)
        .generate_address_map(false);
    match tier {
        Tier::Optimized => wasm.cranelift_opt_level(wasmtime::OptLevel::Speed),
        // Winch compiles the strategy's functions; Cranelift still
        // compiles an entry trampoline for each exported or
        // address-taken one (thousands in a big table-driven
        // component), and those gain nothing from optimisation. (The
        // single-pass register allocator would compile them ~15%
        // faster, but wasmtime 48 calls it not production-ready and
        // outside its security support: not for untrusted code.)
        Tier::Baseline => wasm
            .strategy(wasmtime::Strategy::Winch)
            .cranelift_opt_level(wasmtime::OptLevel::None),
    };
    // No `.eh_frame` for the strategy's code: wasmtime never unwinds
    // natively through wasm frames (a host panic is caught at the boundary
    // and resumed outside), so it would serve only outside unwinders, and it
    // costs every compile and load. A profiling run keeps it.
    let profiling = std::env::var_os("KEEL_PERFMAP").is_some();
    wasm.native_unwind_info(profiling);
    if profiling {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Ok(Engine::new(&wasm)?)
}

/// One wasm engine and the linker of its stores.
pub(super) struct Compiler {
    pub(super) engine: Engine,
    pub(super) linker: Linker<HostState>,
}

impl Compiler {
    pub(super) fn new(config: &SandboxConfig, tier: Tier) -> anyhow::Result<Compiler> {
        let engine = engine(config, tier)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wit::add_to_linker(&mut linker)?;
        Ok(Compiler { engine, linker })
    }

    /// Compiles `bytes` on a thread of its own, giving up after `limit`.
    pub(super) fn compile(
        &self,
        origin: &str,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<Component, LoadError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        std::thread::Builder::new()
            .name("keel-compile".into())
            .spawn(move || {
                let _ = tx.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| LoadError::NotAComponent {
                origin: origin.to_owned(),
                reason: format!("cannot start compiler: {e}"),
            })?;
        match rx.recv_timeout(limit) {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(LoadError::NotAComponent {
                origin: origin.to_owned(),
                reason: one_line(&e),
            }),
            Err(_) => Err(LoadError::CompileTimeout {
                origin: origin.to_owned(),
                limit,
            }),
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engines: Vec<Engine>) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keel-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
