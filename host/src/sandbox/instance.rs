//! One running strategy: a store, an instance, and the guard around every call.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use keel_model::batch::{BarColumns, Batch, BatchOutcome, PackedBuffers, drive};
use keel_model::candles::Candle;
use keel_model::{
    Fill, LogLevel, Params, Portfolio, RiskLimits, RunningStrategy, Signal, StrategyInfo, Symbol,
    Tick,
};

use super::checks::check_signal;
use super::fault::{classify, truncate};
use super::recent::Recent;
use super::{
    Fault, HostState, LoadedStrategy, Metering, Pre, Sandbox, SandboxLimits, StrategyError,
    StrategyHash, bindings_v1, bindings_v2, bindings_v3, bindings_v4, convert, one_line,
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

/// The exports of one instance, by contract version.
enum Exports {
    V4(bindings_v4::Strategy),
    V3(bindings_v3::Strategy),
    V2(bindings_v2::Strategy),
    V1(bindings_v1::Strategy),
}

impl Pre {
    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        Ok(match self {
            Pre::V4(pre) => Exports::V4(pre.instantiate(store)?),
            Pre::V3(pre) => Exports::V3(pre.instantiate(store)?),
            Pre::V2(pre) => Exports::V2(pre.instantiate(store)?),
            Pre::V1(pre) => Exports::V1(pre.instantiate(store)?),
        })
    }
}

impl Exports {
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<StrategyInfo> {
        Ok(match self {
            Exports::V4(e) => convert::v4::info_in(e.call_describe(store)?),
            Exports::V3(e) => convert::v3::info_in(e.call_describe(store)?),
            Exports::V2(e) => convert::v2::info_in(e.call_describe(store)?),
            Exports::V1(e) => convert::v1::info_in(e.call_describe(store)?),
        })
    }

    fn init(
        &self,
        store: &mut Store<HostState>,
        binding: &Binding,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Exports::V4(e) => e.call_init(
                store,
                &convert::v4::params_out(&binding.params),
                &binding.symbols,
            ),
            Exports::V3(e) => e.call_init(
                store,
                &convert::v3::params_out(&binding.params),
                &binding.symbols,
            ),
            Exports::V2(e) => e.call_init(
                store,
                &convert::v2::params_out(&binding.params),
                &binding.symbols,
            ),
            Exports::V1(e) => e.call_init(store, &convert::v1::params_out(&binding.params)),
        }
    }

    /// Calls `on-fill` (0.3.0 and later have none: fills go with the next
    /// batch).
    fn on_fill(&self, store: &mut Store<HostState>, fill: &Fill) -> wasmtime::Result<()> {
        match self {
            Exports::V4(_) | Exports::V3(_) => Ok(()),
            Exports::V2(e) => e.call_on_fill(store, &convert::v2::fill_out(fill)),
            Exports::V1(e) => e.call_on_fill(store, &convert::v1::fill_out(fill)),
        }
    }
}

/// What an instance hands its component in binding form, kept from call to
/// call to reuse the buffers (and, up to 0.3.0, the strings), by contract
/// version. Fills queued here go with the next batch, whatever becomes of
/// that call.
enum Outbox {
    V4 {
        fills: Vec<bindings_v4::Fill>,
        /// The tags the queued fills and the next portfolio name.
        tags: convert::v4::Tags,
        portfolio: bindings_v4::Portfolio,
    },
    V3 {
        /// The first `pending` are queued; the rest are kept for their
        /// strings.
        fills: Vec<bindings_v3::Fill>,
        pending: usize,
        portfolio: bindings_v3::Portfolio,
    },
    V2(bindings_v2::Batch),
    V1,
}

impl Outbox {
    fn new(exports: &Exports) -> Outbox {
        match exports {
            Exports::V4(_) => Outbox::V4 {
                fills: Vec::new(),
                tags: convert::v4::Tags::default(),
                portfolio: convert::v4::empty_portfolio(),
            },
            Exports::V3(_) => Outbox::V3 {
                fills: Vec::new(),
                pending: 0,
                portfolio: convert::v3::empty_portfolio(),
            },
            Exports::V2(_) => Outbox::V2(convert::v2::empty_batch()),
            Exports::V1(_) => Outbox::V1,
        }
    }
}

/// What one call made of a batch: ticks handled, their last one's signals,
/// and its error.
type Handled = (usize, Vec<Signal>, Option<String>);

/// One bound, initialised strategy instance, rebuilt after a trap and
/// quarantined after repeated failures.
pub struct StrategyInstance {
    label: String,
    info: StrategyInfo,
    hash: StrategyHash,
    pre: Pre,
    engine: Engine,
    /// Keeps the artifact "in use" for the sandbox while this runs.
    _in_use: std::sync::Arc<super::InUse>,
    limits: SandboxLimits,
    metering: Metering,
    binding: Binding,
    clock: ClockMode,
    store: Store<HostState>,
    stderr: MemoryOutputPipe,
    stderr_seen: usize,
    exports: Exports,
    /// The symbol table of the last batch, and each entry's index in the
    /// bound symbols (`u32::MAX`: not bound).
    symbols: Vec<Symbol>,
    symbol_map: Vec<u32>,
    /// The packed batch (0.3.0 and later) and the rest of what goes out,
    /// kept to reuse their buffers.
    packed: PackedBuffers,
    outbox: Outbox,
    /// Most ticks per call now: starts at one and doubles after each call
    /// that handled all it was given, so a strategy that misbehaves from the
    /// start is caught on a one-tick budget; back to one after a fault.
    batch_cap: usize,
    /// Ticks handled per call, smoothed: a batch much longer than the
    /// strategy uses is converted and copied for nothing, so the cap
    /// follows twice this.
    consumed_avg: f64,
    /// The last `warmup_bars` ticks, replayed into a rebuilt instance.
    recent: Recent,
    failures_in_row: u32,
    quarantined: Option<Fault>,
    stats: InstanceStats,
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

/// Most ticks in one call (the engine may offer more).
const MAX_BATCH: usize = 256;

/// Calls `describe()` in a throwaway instance under the sandbox's limits.
pub(super) fn describe(
    sandbox: &Sandbox,
    engine: &Engine,
    pre: &Pre,
    hash: StrategyHash,
) -> Result<StrategyInfo, StrategyError> {
    let label = format!("@{}", hash.short());
    let clock = ClockMode::Simulated(Arc::new(AtomicI64::new(0)));
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let mut store = HostState::store(
        engine,
        HostState::new(sandbox.limits(), &clock, 0, label.clone(), stderr.clone()),
    );
    let limits = sandbox.limits().clone();
    let fail = |fault| StrategyError {
        label: label.clone(),
        fault,
    };
    arm(&mut store, &limits, sandbox.metering(), 1).map_err(fail)?;
    let exports = pre
        .instantiate(&mut store)
        .map_err(|e| fail(classify(&e, &limits, &stderr, 0, 1)))?;
    arm(&mut store, &limits, sandbox.metering(), 1).map_err(fail)?;
    exports
        .describe(&mut store)
        .map_err(|e| fail(classify(&e, &limits, &stderr, 0, 1)))
}

/// Sets the fuel, deadline, output budget and log budget of a call that
/// handles `closes` bar closes (the per-close budgets are pooled).
fn arm(
    store: &mut Store<HostState>,
    limits: &SandboxLimits,
    metering: Metering,
    closes: usize,
) -> Result<(), Fault> {
    let closes = closes.max(1) as u64;
    if metering == Metering::Fuel {
        store
            .set_fuel(limits.fuel_per_call.saturating_mul(closes))
            .map_err(|e| Fault::Trap(one_line(&e)))?;
    }
    if metering == Metering::WallClock {
        store.set_epoch_deadline(limits.deadline_ticks().saturating_mul(closes));
    }
    store.set_hostcall_fuel(limits.max_output_bytes);
    let log = &mut store.data_mut().log;
    log.bytes = 0;
    Ok(())
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

/// The batch cap after a good call that handled `consumed` of `offered`
/// ticks: double when it took everything, else twice the smoothed number it
/// takes (at least 2).
fn next_cap(cap: usize, avg: &mut f64, consumed: usize, offered: usize) -> usize {
    *avg = 0.75 * *avg + 0.25 * consumed as f64;
    let next = if consumed == offered && offered == cap {
        cap * 2
    } else {
        (2.0 * *avg).ceil() as usize
    };
    next.clamp(2, MAX_BATCH)
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
            &loaded.engine,
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
            engine: loaded.engine.clone(),
            _in_use: loaded.in_use.clone(),
            limits: sandbox.limits().clone(),
            metering: sandbox.metering(),
            binding,
            clock,
            store,
            stderr,
            stderr_seen: 0,
            outbox: Outbox::new(&exports),
            exports,
            symbols: Vec::new(),
            symbol_map: Vec::new(),
            packed: PackedBuffers::default(),
            batch_cap: 1,
            consumed_avg: 1.0,
            recent: Recent::default(),
            failures_in_row: 0,
            quarantined: None,
            stats: InstanceStats::default(),
            logs: Vec::new(),
        })
    }

    /// A new store and instance with `init` called.
    fn fresh(
        engine: &Engine,
        limits: &SandboxLimits,
        metering: Metering,
        pre: &Pre,
        binding: &Binding,
        clock: &ClockMode,
        label: &str,
    ) -> Result<(Store<HostState>, MemoryOutputPipe, Exports), Fault> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let state = HostState::new(
            limits,
            clock,
            binding.seed,
            label.to_owned(),
            stderr.clone(),
        );
        let mut store = HostState::store(engine, state);
        arm(&mut store, limits, metering, 1)?;
        let exports = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&e, limits, &stderr, 0, 1))?;
        arm(&mut store, limits, metering, 1)?;
        match exports.init(&mut store, binding) {
            Ok(Ok(())) => Ok((store, stderr, exports)),
            Ok(Err(msg)) => Err(Fault::Returned(format!(
                "init refused its parameters: {}",
                truncate(&msg, 256)
            ))),
            Err(e) => Err(classify(&e, limits, &stderr, 0, 1)),
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
    /// Lines logged since the last call of this method (within the caps).
    pub fn take_logs(&mut self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.logs)
    }

    /// Runs one bar close: a batch of one tick. Refused signals are left
    /// out (counted in `stats`, and logged); `on_bars` returns them.
    pub fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, StrategyError> {
        let symbols: Vec<Symbol> = tick.bars.iter().map(|b| b.symbol.clone()).collect();
        let mut bars = BarColumns::default();
        for (i, b) in tick.bars.iter().enumerate() {
            let candle = Candle {
                time_ms: b.time_ms,
                open: b.open,
                high: b.high,
                low: b.low,
                close: b.close,
                volume: b.volume,
            };
            bars.push(i as u32, &candle);
        }
        let (outcome, error) = self.handle(&Batch {
            symbols: &symbols,
            tick_times: &[tick.time_ms],
            tick_bars: &[bars.len() as u32],
            bars: bars.slice(0, bars.len()),
            portfolio: &tick.portfolio,
            limits: tick.limits,
        })?;
        match error {
            Some(error) => Err(error),
            None => Ok(outcome.signals),
        }
    }

    /// Runs the bar closes of `batch`, up to the first that gives signals.
    /// Accepted signals come back in `signals`, refused ones with their
    /// reasons in `refused`. A fault rebuilds the instance and fails the
    /// batch's first tick.
    pub fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, StrategyError> {
        let (mut outcome, error) = self.handle(batch)?;
        outcome.error = error.map(|e| e.to_string());
        Ok(outcome)
    }

    /// `on_bars`, with the last tick's own error (if any) kept whole.
    fn handle(
        &mut self,
        batch: &Batch<'_>,
    ) -> Result<(BatchOutcome, Option<StrategyError>), StrategyError> {
        if let Some(fault) = &self.quarantined {
            return Err(self.error(Fault::Quarantined(fault.to_string())));
        }
        if batch.tick_times.is_empty() {
            return Ok((BatchOutcome::default(), None));
        }
        self.stats.calls += 1;
        let cap = match self.exports {
            Exports::V4(_) | Exports::V3(_) | Exports::V2(_) => self.batch_cap,
            Exports::V1(_) => 1,
        };
        let batch = batch.first(cap);
        self.bind_symbols(batch.symbols);
        let called = self.call(&batch);
        let handled = called.as_ref().map_or(1, |(consumed, _, _)| *consumed);
        // Before any rebuild, so a rebuild sees the last of these ticks last
        // (and skips it).
        self.remember(&batch, handled);
        let (consumed, signals, error) = match called {
            Ok(handled) => handled,
            Err(fault) => {
                self.batch_cap = 1;
                return Err(self.failed(fault));
            }
        };
        if let Some(msg) = error {
            let error = self.failed(Fault::Returned(truncate(&msg, 256)));
            let outcome = BatchOutcome {
                consumed,
                ..BatchOutcome::default()
            };
            return Ok((outcome, Some(error)));
        }
        self.batch_cap = next_cap(
            self.batch_cap,
            &mut self.consumed_avg,
            consumed,
            batch.tick_times.len(),
        );
        self.failures_in_row = 0;
        let time_ms = batch.tick_times[consumed - 1];
        // Refused signals leave the list in place (they are rare).
        let (mut accepted, mut refused) = (signals, Vec::new());
        let mut i = 0;
        while i < accepted.len() {
            match check_signal(&accepted[i], &self.binding.symbols, &self.limits) {
                Ok(()) => i += 1,
                Err(reason) => {
                    let signal = accepted.remove(i);
                    self.stats.signals_rejected += 1;
                    tracing::warn!(strategy = %self.label, time_ms, "signal rejected: {reason}");
                    refused.push((convert::shortened(signal), reason));
                }
            }
        }
        self.stats.signals_accepted += accepted.len() as u64;
        let outcome = BatchOutcome {
            consumed,
            signals: accepted,
            refused,
            error: None,
        };
        Ok((outcome, None))
    }

    /// One call into the component for `batch` (V1: one call per tick).
    fn call(&mut self, batch: &Batch<'_>) -> Result<Handled, Fault> {
        let n = batch.tick_times.len();
        let mut outbox = std::mem::replace(&mut self.outbox, Outbox::V1);
        let (consumed, signals, error) = match &mut outbox {
            Outbox::V4 {
                fills,
                tags,
                portfolio,
            } => {
                let mut packed = std::mem::take(&mut self.packed);
                packed.pack(batch, bound(&self.symbol_map));
                let bound_symbols = &self.binding.symbols;
                convert::v4::portfolio_into(batch.portfolio, bound_symbols, tags, portfolio);
                let limits = convert::v4::limits_out(batch.limits);
                let result = self.guarded(batch.tick_times[0], n, |exports, store| match exports {
                    Exports::V4(e) => e.call_on_bars(
                        store,
                        &packed.lanes,
                        &packed.prices,
                        portfolio,
                        limits,
                        fills,
                        tags.list(),
                    ),
                    _ => Err(wasmtime::Error::msg("not a 0.4.0 component")),
                });
                self.packed = packed;
                // Delivered with this call, whatever becomes of it.
                fills.clear();
                tags.clear();
                self.outbox = outbox;
                let result = match result? {
                    Ok(result) => result,
                    Err(msg) => return Ok((1, Vec::new(), Some(msg))),
                };
                self.check_count(result.signals.len())?;
                let signals = result.signals.into_iter().map(convert::v4::signal_in);
                (result.consumed as usize, signals.collect(), result.error)
            }
            Outbox::V3 {
                fills,
                pending,
                portfolio,
            } => {
                let mut packed = std::mem::take(&mut self.packed);
                packed.pack(batch, bound(&self.symbol_map));
                convert::v3::portfolio_into(batch.portfolio, portfolio);
                let limits = convert::v3::limits_out(batch.limits);
                let view = packed.view();
                let result = self.guarded(batch.tick_times[0], n, |exports, store| match exports {
                    Exports::V3(e) => e.call_on_bars(
                        store,
                        view.ticks,
                        view.keys,
                        view.prices,
                        portfolio,
                        limits,
                        &fills[..*pending],
                    ),
                    _ => Err(wasmtime::Error::msg("not a 0.3.0 component")),
                });
                self.packed = packed;
                // Delivered with this call, whatever becomes of it.
                *pending = 0;
                self.outbox = outbox;
                let result = match result? {
                    Ok(result) => result,
                    Err(msg) => return Ok((1, Vec::new(), Some(msg))),
                };
                self.check_count(result.signals.len())?;
                let signals = result.signals.into_iter().map(convert::v3::signal_in);
                (result.consumed as usize, signals.collect(), result.error)
            }
            Outbox::V2(wit) => {
                convert::v2::batch_out(batch, bound(&self.symbol_map), wit);
                let result = self.guarded(batch.tick_times[0], n, |exports, store| match exports {
                    Exports::V2(e) => e.call_on_bars(store, wit),
                    _ => Err(wasmtime::Error::msg("not a 0.2.0 component")),
                });
                self.outbox = outbox;
                let result = match result? {
                    Ok(result) => result,
                    Err(msg) => return Ok((1, Vec::new(), Some(msg))),
                };
                self.check_count(result.signals.len())?;
                let signals = result.signals.into_iter().map(convert::v2::signal_in);
                (result.consumed as usize, signals.collect(), result.error)
            }
            Outbox::V1 => {
                self.outbox = outbox;
                let mut fault = None;
                let outcome = drive(batch, |tick| {
                    let wit_tick = convert::v1::tick_out(tick, &self.binding.symbols);
                    let result = self.guarded(tick.time_ms, 1, |exports, store| match exports {
                        Exports::V1(e) => e.call_on_bar(store, &wit_tick),
                        _ => Err(wasmtime::Error::msg("not a 0.1.0 component")),
                    });
                    match result {
                        Ok(Ok(signals)) => {
                            if let Err(f) = self.check_count(signals.len()) {
                                fault = Some(f);
                                return Err(String::new());
                            }
                            Ok(signals.into_iter().map(convert::v1::signal_in).collect())
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
                (outcome.consumed, outcome.signals, outcome.error)
            }
        };
        if !(1..=n).contains(&consumed) {
            return Err(Fault::Contract(format!(
                "said it handled {consumed} of a batch of {n} bar closes"
            )));
        }
        Ok((consumed, signals, error))
    }

    fn check_count(&self, count: usize) -> Result<(), Fault> {
        let limit = self.limits.max_signals_per_call;
        if count > limit {
            return Err(Fault::TooManySignals { count, limit });
        }
        Ok(())
    }

    /// Maps the batch's symbol table to the bound symbols, when it changed.
    fn bind_symbols(&mut self, symbols: &[Symbol]) {
        let same = self.symbols.len() == symbols.len()
            && self
                .symbols
                .iter()
                .zip(symbols)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        if same {
            return;
        }
        self.symbols = symbols.to_vec();
        self.symbol_map = symbols
            .iter()
            .map(|s| {
                self.binding
                    .symbols
                    .iter()
                    .position(|bound| **bound == **s)
                    .map_or(u32::MAX, |i| i as u32)
            })
            .collect();
    }

    /// Tells the strategy one of its orders filled: at once for an older
    /// component, with its next batch for a 0.3.0 or later one.
    pub fn on_fill(&mut self, fill: &Fill) -> Result<(), StrategyError> {
        if let Some(fault) = &self.quarantined {
            return Err(self.error(Fault::Quarantined(fault.to_string())));
        }
        match &mut self.outbox {
            Outbox::V4 { fills, tags, .. } => {
                fills.push(convert::v4::fill_out(fill, &self.binding.symbols, tags));
                return Ok(());
            }
            Outbox::V3 { fills, pending, .. } => {
                match fills.get_mut(*pending) {
                    Some(reused) => convert::v3::fill_into(fill, reused),
                    None => fills.push(convert::v3::fill_out(fill)),
                }
                *pending += 1;
                return Ok(());
            }
            Outbox::V2(_) | Outbox::V1 => {}
        }
        match self.guarded(fill.time_ms, 1, |exports, store| {
            exports.on_fill(store, fill)
        }) {
            Ok(()) => Ok(()),
            Err(fault) => Err(self.failed(fault)),
        }
    }

    /// Arms the limits for `closes` bar closes, sets the clock, runs `call`,
    /// and collects logs.
    fn guarded<R>(
        &mut self,
        time_ms: i64,
        closes: usize,
        call: impl FnOnce(&Exports, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        if let ClockMode::Simulated(now) = &self.clock {
            now.store(time_ms, Ordering::Relaxed);
        }
        arm(&mut self.store, &self.limits, self.metering, closes)?;
        let result = call(&self.exports, &mut self.store);
        let log = &mut self.store.data_mut().log;
        self.stats.log_bytes_dropped += std::mem::take(&mut log.dropped) as u64;
        self.logs.append(&mut log.lines);
        // Stderr is only read when a call failed (it holds a panic message);
        // reading it copies the buffer, so successful calls leave it alone.
        result.map_err(|e| {
            let fault = classify(&e, &self.limits, &self.stderr, self.stderr_seen, closes);
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
            let failures = self.failures_in_row;
            match self.clock {
                // A replay (backtest, validation) reports it as data.
                ClockMode::Simulated(_) => {
                    tracing::warn!(strategy = %self.label, "quarantined after {failures} failures in a row");
                }
                ClockMode::Real => {
                    tracing::error!(strategy = %self.label, "quarantined after {failures} failures in a row");
                }
            }
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
        // The tick that trapped is the last one; replaying it could trap again.
        let recent = std::mem::take(&mut self.recent);
        let live = &recent.ticks[recent.ticks_from..];
        let (times, counts): (Vec<i64>, Vec<u32>) = live
            .iter()
            .take(live.len().saturating_sub(1))
            .copied()
            .unzip();
        let bars = recent.bars.slice(recent.bars_from, recent.bars.len());
        let symbols = self.symbols.clone();
        let portfolio = Portfolio::default();
        let (mut from_tick, mut from_bar) = (0, 0);
        let mut replayed = Ok(());
        while from_tick < times.len() {
            let rest = Batch {
                symbols: &symbols,
                tick_times: &times[from_tick..],
                tick_bars: &counts[from_tick..],
                bars: bars.slice(from_bar, bars.len()),
                portfolio: &portfolio,
                limits: RiskLimits::default(),
            };
            let consumed = match self.call(&rest.first(MAX_BATCH)) {
                Ok((consumed, _, _)) => consumed,
                Err(fault) => {
                    replayed = Err(fault);
                    break;
                }
            };
            from_bar += counts[from_tick..from_tick + consumed]
                .iter()
                .map(|&n| n as usize)
                .sum::<usize>();
            from_tick += consumed;
        }
        self.recent = recent;
        replayed
    }

    /// Keeps the first `handled` ticks of `batch` for a rebuild's warm-up.
    fn remember(&mut self, batch: &Batch<'_>, handled: usize) {
        let keep = self.info.warmup_bars as usize;
        if keep > 0 {
            self.recent.remember(batch, handled, keep);
        }
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
    fn on_bars(&mut self, batch: &Batch<'_>) -> Result<BatchOutcome, String> {
        StrategyInstance::on_bars(self, batch).map_err(|e| e.to_string())
    }
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        StrategyInstance::on_fill(self, fill).map_err(|e| e.to_string())
    }
}
