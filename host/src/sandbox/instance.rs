//! One running strategy: a store, an instance, and the guard around every call.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use keel_model::{Fill, LogLevel, Params, RunningStrategy, Signal, StrategyInfo, Tick};

use super::bindings::{self, StrategyPre};
use super::checks::check_signal;
use super::{
    HostState, LoadedStrategy, Metering, Sandbox, SandboxLimits, StrategyHash, convert, one_line,
};

/// How the strategy's WASI clocks read.
#[derive(Debug, Clone)]
pub enum ClockMode {
    /// The machine's clocks (live trading).
    Real,
    /// The host's simulated time: each call sees the close time of its tick.
    Simulated(Arc<AtomicI64>),
}

/// What an instance is bound to: symbols, parameters, clock and random seed.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Symbols the strategy may trade; a signal for any other is rejected.
    pub symbols: Vec<String>,
    /// Resolved parameters (every declared one, checked).
    pub params: Params,
    /// Simulated clock (backtests, paper replays) or the machine's.
    pub simulated_clock: bool,
    /// Seed of the strategy's WASI randomness.
    pub seed: u64,
}

/// Why a call failed. Every variant is data about the strategy.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Deadline(Duration),
    Fuel(u64),
    Memory(usize),
    Stack(usize),
    Panic(String),
    Trap(String),
    OutputTooLarge(usize),
    TooManySignals {
        count: usize,
        limit: usize,
    },
    /// The strategy returned `err`.
    Returned(String),
    Quarantined(String),
}

impl Fault {
    /// Did the sandbox stop it (as opposed to the strategy's own `err`)?
    pub fn is_trap(&self) -> bool {
        !matches!(
            self,
            Fault::Returned(_) | Fault::Quarantined(_) | Fault::TooManySignals { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Deadline(d) => write!(f, "ran past its {} ms deadline", d.as_millis()),
            Fault::Fuel(fuel) => write!(f, "used up its fuel ({fuel} per call)"),
            Fault::Memory(limit) => {
                write!(f, "tried to grow memory past its {} MiB limit", limit >> 20)
            }
            Fault::Stack(limit) => write!(
                f,
                "exhausted its {} KiB stack (runaway recursion?)",
                limit >> 10
            ),
            Fault::Panic(msg) if msg.is_empty() => write!(f, "panicked"),
            Fault::Panic(msg) => write!(f, "panicked: {msg}"),
            Fault::Trap(msg) => write!(f, "trapped: {msg}"),
            Fault::OutputTooLarge(limit) => {
                write!(f, "handed the host more than {limit} bytes in one call")
            }
            Fault::TooManySignals { count, limit } => {
                write!(
                    f,
                    "returned {count} signals, more than the {limit} allowed per bar"
                )
            }
            Fault::Returned(msg) => write!(f, "returned an error: {msg}"),
            Fault::Quarantined(why) => {
                write!(f, "is quarantined after repeated failures (last: {why})")
            }
        }
    }
}

/// A failed call, named by strategy and artifact hash.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("strategy {label} {fault}")]
pub struct StrategyError {
    pub label: String,
    pub fault: Fault,
}

/// A signal the host refused, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub time_ms: i64,
    pub signal: Signal,
    pub reason: String,
}

/// Counters of one instance's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceStats {
    pub calls: u64,
    pub failures: u64,
    pub traps: u64,
    pub rebuilds: u64,
    pub signals_accepted: u64,
    pub signals_rejected: u64,
    pub log_bytes_dropped: u64,
}

/// One bound, initialised strategy instance, rebuilt after a trap and
/// quarantined after repeated failures.
pub struct StrategyInstance {
    label: String,
    info: StrategyInfo,
    hash: StrategyHash,
    pre: StrategyPre<HostState>,
    engine: Engine,
    limits: SandboxLimits,
    metering: Metering,
    binding: Binding,
    clock: ClockMode,
    store: Store<HostState>,
    stderr: MemoryOutputPipe,
    stderr_seen: usize,
    exports: bindings::Strategy,
    /// Bars of the last `warmup_bars` ticks (already in binding form),
    /// replayed into a rebuilt instance.
    recent: VecDeque<(i64, Vec<bindings::Bar>)>,
    failures_in_row: u32,
    quarantined: Option<Fault>,
    stats: InstanceStats,
    rejections: Vec<Rejected>,
    logs: Vec<(LogLevel, String)>,
}

impl fmt::Debug for StrategyInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyInstance")
            .field("label", &self.label)
            .field("stats", &self.stats)
            .field("quarantined", &self.quarantined)
            .finish()
    }
}

const STDERR_CAPACITY: usize = 64 << 10;

/// Calls `describe()` in a throwaway instance under the sandbox's limits.
pub(super) fn describe(
    sandbox: &Sandbox,
    pre: &StrategyPre<HostState>,
    hash: StrategyHash,
) -> Result<StrategyInfo, StrategyError> {
    let label = format!("@{}", hash.short());
    let clock = ClockMode::Simulated(Arc::new(AtomicI64::new(0)));
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let mut store = HostState::store(
        sandbox.engine(),
        HostState::new(sandbox.limits(), &clock, 0, label.clone(), stderr.clone()),
    );
    let limits = sandbox.limits().clone();
    let fail = |fault| StrategyError {
        label: label.clone(),
        fault,
    };
    arm(&mut store, &limits, sandbox.metering()).map_err(fail)?;
    let exports = pre
        .instantiate(&mut store)
        .map_err(|e| fail(classify(&e, &limits, &stderr, 0)))?;
    arm(&mut store, &limits, sandbox.metering()).map_err(fail)?;
    let info = exports
        .call_describe(&mut store)
        .map_err(|e| fail(classify(&e, &limits, &stderr, 0)))?;
    Ok(convert::info_in(info))
}

/// Sets this call's fuel, deadline, output budget and log budget.
fn arm(
    store: &mut Store<HostState>,
    limits: &SandboxLimits,
    metering: Metering,
) -> Result<(), Fault> {
    if metering == Metering::Fuel {
        store
            .set_fuel(limits.fuel_per_call)
            .map_err(|e| Fault::Trap(one_line(&e)))?;
    }
    store.set_epoch_deadline(limits.deadline_ticks());
    store.set_hostcall_fuel(limits.max_output_bytes);
    let log = &mut store.data_mut().log;
    log.bytes = 0;
    Ok(())
}

/// Names what stopped a call.
fn classify(
    e: &wasmtime::Error,
    limits: &SandboxLimits,
    stderr: &MemoryOutputPipe,
    seen: usize,
) -> Fault {
    let text = one_line(e);
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Deadline(limits.call_deadline),
        Some(Trap::OutOfFuel) => Fault::Fuel(limits.fuel_per_call),
        Some(Trap::StackOverflow) => Fault::Stack(limits.max_stack_bytes),
        Some(Trap::UnreachableCodeReached) => Fault::Panic(panic_message(stderr, seen)),
        _ if text.contains("forcing trap when growing memory") => {
            Fault::Memory(limits.max_memory_bytes)
        }
        _ if text.contains("fuel allocated for hostcalls has been exhausted") => {
            Fault::OutputTooLarge(limits.max_output_bytes)
        }
        _ => Fault::Trap(text),
    }
}

/// The panic line a Rust guest wrote to stderr since `seen`, if any.
fn panic_message(stderr: &MemoryOutputPipe, seen: usize) -> String {
    let contents = stderr.contents();
    let new = contents.get(seen..).unwrap_or_default();
    let text = String::from_utf8_lossy(new);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut message = String::new();
    while let Some(line) = lines.next() {
        if line.contains("panicked at") {
            message = lines.next().unwrap_or(line).to_owned();
        }
    }
    truncate(&message, 256)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

impl StrategyInstance {
    pub(super) fn start(
        sandbox: &Sandbox,
        loaded: &LoadedStrategy,
        binding: Binding,
    ) -> Result<StrategyInstance, StrategyError> {
        let label = format!("{}@{}", loaded.info.name, loaded.hash.short());
        let clock = if binding.simulated_clock {
            ClockMode::Simulated(Arc::new(AtomicI64::new(0)))
        } else {
            ClockMode::Real
        };
        let (store, stderr, exports) = Self::fresh(
            sandbox.engine(),
            sandbox.limits(),
            sandbox.metering(),
            &loaded.pre,
            &binding,
            &clock,
            &label,
        )
        .map_err(|fault| StrategyError {
            label: label.clone(),
            fault,
        })?;
        Ok(StrategyInstance {
            label,
            info: loaded.info.clone(),
            hash: loaded.hash,
            pre: loaded.pre.clone(),
            engine: sandbox.engine().clone(),
            limits: sandbox.limits().clone(),
            metering: sandbox.metering(),
            binding,
            clock,
            store,
            stderr,
            stderr_seen: 0,
            exports,
            recent: VecDeque::new(),
            failures_in_row: 0,
            quarantined: None,
            stats: InstanceStats::default(),
            rejections: Vec::new(),
            logs: Vec::new(),
        })
    }

    /// A new store and instance with `init` called.
    fn fresh(
        engine: &Engine,
        limits: &SandboxLimits,
        metering: Metering,
        pre: &StrategyPre<HostState>,
        binding: &Binding,
        clock: &ClockMode,
        label: &str,
    ) -> Result<(Store<HostState>, MemoryOutputPipe, bindings::Strategy), Fault> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let state = HostState::new(
            limits,
            clock,
            binding.seed,
            label.to_owned(),
            stderr.clone(),
        );
        let mut store = HostState::store(engine, state);
        arm(&mut store, limits, metering)?;
        let exports = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&e, limits, &stderr, 0))?;
        arm(&mut store, limits, metering)?;
        let params = convert::params_out(&binding.params);
        match exports.call_init(&mut store, &params) {
            Ok(Ok(())) => Ok((store, stderr, exports)),
            Ok(Err(msg)) => Err(Fault::Returned(format!(
                "init refused its parameters: {}",
                truncate(&msg, 256)
            ))),
            Err(e) => Err(classify(&e, limits, &stderr, 0)),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn info(&self) -> &StrategyInfo {
        &self.info
    }
    pub fn hash(&self) -> StrategyHash {
        self.hash
    }
    pub fn stats(&self) -> &InstanceStats {
        &self.stats
    }
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.is_some()
    }
    /// Signals refused since the last call of this method.
    pub fn take_rejections(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejections)
    }
    /// Lines logged since the last call of this method (within the caps).
    pub fn take_logs(&mut self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.logs)
    }

    /// Runs one bar close. Accepted signals come back; refused ones are kept
    /// with their reasons (`take_rejections`). A fault rebuilds the instance.
    pub fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, StrategyError> {
        if let Some(fault) = &self.quarantined {
            return Err(self.error(Fault::Quarantined(fault.to_string())));
        }
        self.stats.calls += 1;
        let wit_tick = convert::tick_out(tick);
        let outcome = self.guarded(tick.time_ms, |exports, store| {
            exports.call_on_bar(store, &wit_tick)
        });
        // Before any rebuild, so a rebuild sees this bar last (and skips it).
        self.remember(tick.time_ms, wit_tick.bars);
        let signals = match outcome {
            Ok(Ok(signals)) => signals,
            Ok(Err(msg)) => return Err(self.failed(Fault::Returned(truncate(&msg, 256)))),
            Err(fault) => return Err(self.failed(fault)),
        };
        if signals.len() > self.limits.max_signals_per_call {
            let fault = Fault::TooManySignals {
                count: signals.len(),
                limit: self.limits.max_signals_per_call,
            };
            return Err(self.failed(fault));
        }
        self.failures_in_row = 0;
        let mut accepted = Vec::with_capacity(signals.len());
        for raw in signals {
            let signal = convert::signal_in(raw);
            match check_signal(&signal, &self.binding.symbols, &self.limits) {
                Ok(()) => accepted.push(signal),
                Err(reason) => {
                    self.stats.signals_rejected += 1;
                    tracing::warn!(strategy = %self.label, "signal rejected: {reason}");
                    self.rejections.push(Rejected {
                        time_ms: tick.time_ms,
                        signal: convert::shortened(signal),
                        reason,
                    });
                }
            }
        }
        self.stats.signals_accepted += accepted.len() as u64;
        Ok(accepted)
    }

    /// Tells the strategy one of its orders filled.
    pub fn on_fill(&mut self, fill: &Fill) -> Result<(), StrategyError> {
        if let Some(fault) = &self.quarantined {
            return Err(self.error(Fault::Quarantined(fault.to_string())));
        }
        let wit_fill = convert::fill_out(fill);
        match self.guarded(fill.time_ms, |exports, store| {
            exports.call_on_fill(store, &wit_fill)
        }) {
            Ok(()) => Ok(()),
            Err(fault) => Err(self.failed(fault)),
        }
    }

    /// Arms the limits, sets the clock, runs `call`, and collects logs.
    fn guarded<R>(
        &mut self,
        time_ms: i64,
        call: impl FnOnce(&bindings::Strategy, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        if let ClockMode::Simulated(now) = &self.clock {
            now.store(time_ms, Ordering::Relaxed);
        }
        arm(&mut self.store, &self.limits, self.metering)?;
        let result = call(&self.exports, &mut self.store);
        let log = &mut self.store.data_mut().log;
        self.stats.log_bytes_dropped += std::mem::take(&mut log.dropped) as u64;
        self.logs.append(&mut log.lines);
        // Stderr is only read when a call failed (it holds a panic message);
        // reading it copies the buffer, so successful calls leave it alone.
        result.map_err(|e| {
            let fault = classify(&e, &self.limits, &self.stderr, self.stderr_seen);
            self.stderr_seen = self.stderr.contents().len();
            fault
        })
    }

    /// Counts a failure; rebuilds after a trap; quarantines after too many.
    fn failed(&mut self, fault: Fault) -> StrategyError {
        self.stats.failures += 1;
        self.failures_in_row += 1;
        tracing::warn!(strategy = %self.label, "{fault}");
        if fault.is_trap() {
            self.stats.traps += 1;
            if let Err(rebuild) = self.rebuild() {
                tracing::error!(strategy = %self.label, "rebuild failed: {rebuild}");
                self.quarantined = Some(rebuild);
            }
        }
        if self.failures_in_row >= self.limits.max_consecutive_failures {
            tracing::error!(strategy = %self.label, "quarantined after {} failures in a row", self.failures_in_row);
            self.quarantined = Some(fault.clone());
        }
        self.error(fault)
    }

    /// A trapped instance cannot be entered again: start a new one from the
    /// cached `InstancePre`, `init` it, and replay the recent bars so its
    /// indicators are warm (their signals are discarded).
    fn rebuild(&mut self) -> Result<(), Fault> {
        let (store, stderr, exports) = Self::fresh(
            &self.engine,
            &self.limits,
            self.metering,
            &self.pre,
            &self.binding,
            &self.clock,
            &self.label,
        )?;
        self.store = store;
        self.stderr = stderr;
        self.stderr_seen = 0;
        self.exports = exports;
        self.stats.rebuilds += 1;
        let recent: Vec<(i64, Vec<bindings::Bar>)> = self.recent.iter().cloned().collect();
        // The bar that trapped is the last one; replaying it could trap again.
        for (time_ms, bars) in recent.iter().take(recent.len().saturating_sub(1)) {
            let mut wit_tick = convert::tick_out(&Tick {
                time_ms: *time_ms,
                bars: Vec::new(),
                portfolio: keel_model::Portfolio::default(),
                limits: keel_model::RiskLimits::default(),
            });
            wit_tick.bars = bars.clone();
            self.guarded(*time_ms, |exports, store| {
                exports.call_on_bar(store, &wit_tick)
            })?
            .map_err(Fault::Returned)?;
        }
        Ok(())
    }

    /// Keeps this tick's bars for a rebuild's warm-up (moved, not copied).
    fn remember(&mut self, time_ms: i64, bars: Vec<bindings::Bar>) {
        let keep = self.info.warmup_bars as usize;
        if keep == 0 {
            return;
        }
        if self.recent.len() == keep {
            self.recent.pop_front();
        }
        self.recent.push_back((time_ms, bars));
    }

    fn error(&self, fault: Fault) -> StrategyError {
        StrategyError {
            label: self.label.clone(),
            fault,
        }
    }
}

impl RunningStrategy for StrategyInstance {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        StrategyInstance::on_bar(self, tick).map_err(|e| e.to_string())
    }
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        StrategyInstance::on_fill(self, fill).map_err(|e| e.to_string())
    }
}
