//! The one place the wasm engine is configured, the compiler built on it
//! (an engine and the linker of its stores), and the epoch ticker that
//! wall-clock metering needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

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

    /// Compiles `bytes` on a thread of its own, giving up once it has
    /// taken `limit` of CPU time (see [`over_limit`]).
    pub(super) fn compile(
        &self,
        origin: &str,
        bytes: &[u8],
        limit: Duration,
    ) -> Result<Component, LoadError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let bytes = bytes.to_vec();
        let (cpu_before, started) = (process_cpu(), Instant::now());
        let used = || match (cpu_before, process_cpu()) {
            (Some(before), Some(now)) => now.saturating_sub(before),
            _ => started.elapsed(),
        };
        std::thread::Builder::new()
            .name("keel-compile".into())
            .spawn(move || {
                let _ = tx.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| LoadError::NotAComponent {
                origin: origin.to_owned(),
                reason: format!("cannot start compiler: {e}"),
            })?;
        let timeout = || LoadError::CompileTimeout {
            origin: origin.to_owned(),
            limit,
        };
        loop {
            match rx.recv_timeout(COMPILE_POLL.min(limit)) {
                Ok(_) if over_limit(used(), started.elapsed(), limit) => return Err(timeout()),
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => {
                    return Err(LoadError::NotAComponent {
                        origin: origin.to_owned(),
                        reason: one_line(&e),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    if over_limit(used(), started.elapsed(), limit) {
                        return Err(timeout());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(LoadError::NotAComponent {
                        origin: origin.to_owned(),
                        reason: "the compiler stopped without an answer".into(),
                    });
                }
            }
        }
    }
}

/// How often a compile's CPU time is looked at.
const COMPILE_POLL: Duration = Duration::from_millis(50);

/// A compile waiting for the CPU, not using it, is still given up after
/// this many times its limit of wall-clock time.
const COMPILE_WALL_FACTOR: u32 = 30;

/// Whether a compile that has used `cpu` of the process's CPU time in
/// `wall` is over `limit`. CPU time, not wall time, is what a compile is
/// allowed: one held back by the scheduler (a night of the evolution runs
/// at the lowest priority, and a busy machine can leave it no CPU for a
/// long while) is not refused for waiting; a compile bomb burns CPU and
/// is. The wall-clock backstop keeps a starved compile from being waited
/// for forever.
fn over_limit(cpu: Duration, wall: Duration, limit: Duration) -> bool {
    cpu >= limit || wall >= limit.saturating_mul(COMPILE_WALL_FACTOR)
}

/// The CPU time this process has used, every thread counted (a compile
/// runs on several); `None` where the clock cannot be read.
#[allow(unsafe_code)]
fn process_cpu() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } == 0;
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    read.then(|| Duration::new(secs, nanos))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_is_timed_by_the_cpu_it_uses_not_the_time_it_waits() {
        let limit = Duration::from_secs(20);
        let s = Duration::from_secs;
        // Held back by the scheduler for a minute, one second of work:
        // not over (a wall-clock limit refused this).
        assert!(!over_limit(s(1), s(60), limit));
        // Twenty seconds of work, however quickly: over.
        assert!(over_limit(s(20), s(10), limit));
        // Starved past thirty times the limit: given up.
        assert!(over_limit(s(1), s(600), limit));
        assert!(!over_limit(s(1), s(599), limit));
        let (a, b) = (process_cpu().expect("clock"), process_cpu().expect("clock"));
        assert!(b >= a, "the process clock does not go back");
    }
}
