//! What each strategy store holds: the deny-all WASI context, the memory
//! limiter, the simulated clock and the log budget of the current call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use keel_model::LogLevel;

use super::{ClockMode, SandboxLimits};

/// Per-store state: the deny-all WASI context, the memory limiter, the
/// simulated clock, and this call's log budget.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) log: LogBuffer,
}

/// Log lines of the current call, capped in bytes.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pub(crate) cap: usize,
    pub(crate) bytes: usize,
    pub(crate) dropped: usize,
    pub(crate) lines: Vec<(LogLevel, String)>,
    pub(crate) label: String,
}

impl HostState {
    pub(crate) fn new(
        limits: &SandboxLimits,
        clock: &ClockMode,
        seed: u64,
        label: String,
        stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    ) -> HostState {
        // Deny-all: no preopened directories, no environment, no arguments, no
        // network; stdout is discarded and stderr is kept only to report panics.
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stderr(stderr);
        let mut rng = keel_model::synth::SplitMix64::new(seed);
        let bytes: Vec<u8> = (0..64).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
        wasi.secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
            .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
            .insecure_random_seed(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
        if let ClockMode::Simulated(now) = clock {
            wasi.wall_clock(SimulatedClock(now.clone()))
                .monotonic_clock(SimulatedClock(now.clone()));
        }
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory_bytes)
                .table_elements(100_000)
                .instances(64)
                .memories(16)
                .tables(64)
                .trap_on_grow_failure(true)
                .build(),
            log: LogBuffer {
                cap: limits.max_log_bytes_per_call,
                label,
                ..LogBuffer::default()
            },
        }
    }

    pub(crate) fn store(engine: &Engine, state: HostState) -> Store<HostState> {
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LogBuffer {
    /// Logs one line of the strategy's, unless it is over its byte cap.
    pub(crate) fn push(&mut self, level: LogLevel, message: String) {
        if self.bytes + message.len() > self.cap {
            self.dropped += message.len();
            return;
        }
        self.bytes += message.len();
        let label = &self.label;
        // The terminal gets it escaped and cut; `take_logs` gets it whole.
        let shown = keel_model::shown::line(&message);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "keel::strategy", strategy = %label, "{shown}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "keel::strategy", strategy = %label, "{shown}")
            }
            LogLevel::Info => {
                tracing::info!(target: "keel::strategy", strategy = %label, "{shown}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "keel::strategy", strategy = %label, "{shown}")
            }
            LogLevel::Error => {
                tracing::error!(target: "keel::strategy", strategy = %label, "{shown}")
            }
        }
        self.lines.push((level, message));
    }
}

/// The host's simulated time: what the strategy's WASI clocks read.
#[derive(Debug, Clone)]
struct SimulatedClock(Arc<AtomicI64>);

impl wasmtime_wasi::HostWallClock for SimulatedClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed).max(0) as u64)
    }
}

impl wasmtime_wasi::HostMonotonicClock for SimulatedClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64 * 1_000_000
    }
}
