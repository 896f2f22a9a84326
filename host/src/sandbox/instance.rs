//! One running strategy: a bound, initialised instance, its batch size,
//! the checks on what it returns, and its rebuilds and quarantine.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use wasmtime::Engine;

use keel_model::batch::{BarColumns, Batch, BatchOutcome};
use keel_model::candles::Candle;
use keel_model::{
    Fill, LogLevel, Params, Portfolio, RiskLimits, RunningStrategy, Signal, StrategyInfo, Symbol,
    Tick,
};

use super::checks::{check_signal, shortened};
use super::fault::truncate;
use super::guard::Guard;
use super::recent::Recent;
use super::wit::{Guest, GuestPre, Handled};
use super::{Fault, LoadedStrategy, Metering, Sandbox, SandboxLimits, StrategyError, StrategyHash};

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

/// One bound, initialised strategy instance, rebuilt after a trap and
/// quarantined after repeated failures.
pub struct StrategyInstance {
    label: String,
    info: StrategyInfo,
    hash: StrategyHash,
    pre: GuestPre,
    engine: Engine,
    /// Keeps the artifact "in use" for the sandbox while this runs.
    _in_use: std::sync::Arc<super::InUse>,
    binding: Binding,
    /// The store, its limits and clock.
    guard: Guard,
    /// The exports, and what goes out to them, of its contract version.
    guest: Guest,
    /// The symbol table of the last batch, and each entry's index in the
    /// bound symbols (`u32::MAX`: not bound).
    symbols: Vec<Symbol>,
    symbol_map: Vec<u32>,
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

/// Most ticks in one call (the engine may offer more).
const MAX_BATCH: usize = 256;

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
        let (guard, guest) = Self::fresh(
            &loaded.engine,
            sandbox.limits(),
            sandbox.metering(),
            &clock,
            &loaded.pre,
            &binding,
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
            binding,
            guard,
            guest,
            symbols: Vec::new(),
            symbol_map: Vec::new(),
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
        clock: &ClockMode,
        pre: &GuestPre,
        binding: &Binding,
        label: &str,
    ) -> Result<(Guard, Guest), Fault> {
        let mut guard = Guard::new(engine, limits, metering, clock, binding.seed, label);
        let guest = guard.start(pre, binding)?;
        Ok((guard, guest))
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
        let cap = match self.guest.takes_batches() {
            true => self.batch_cap,
            false => 1,
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
            match check_signal(&accepted[i], &self.binding.symbols, self.guard.limits()) {
                Ok(()) => i += 1,
                Err(reason) => {
                    let signal = accepted.remove(i);
                    self.stats.signals_rejected += 1;
                    tracing::warn!(strategy = %self.label, time_ms, "signal rejected: {reason}");
                    refused.push((shortened(signal), reason));
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

    /// One call into the component for `batch` (0.1.0: one call per tick).
    fn call(&mut self, batch: &Batch<'_>) -> Result<Handled, Fault> {
        let n = batch.tick_times.len();
        let called = self.guest.on_bars(
            &mut self.guard,
            batch,
            &self.symbol_map,
            &self.binding.symbols,
        );
        self.collect_logs();
        let (consumed, signals, error) = called?;
        if !(1..=n).contains(&consumed) {
            return Err(Fault::Contract(format!(
                "said it handled {consumed} of a batch of {n} bar closes"
            )));
        }
        Ok((consumed, signals, error))
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
        let called = self
            .guest
            .on_fill(&mut self.guard, fill, &self.binding.symbols);
        self.collect_logs();
        called.map_err(|fault| self.failed(fault))
    }

    /// Moves what the strategy logged into `logs` (and the count of what
    /// was dropped over its cap into the stats).
    fn collect_logs(&mut self) {
        let dropped = self.guard.drain_logs(&mut self.logs);
        self.stats.log_bytes_dropped += dropped;
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
        if self.failures_in_row >= self.guard.limits().max_consecutive_failures {
            let failures = self.failures_in_row;
            match self.guard.clock() {
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
        let (guard, guest) = Self::fresh(
            &self.engine,
            self.guard.limits(),
            self.guard.metering(),
            self.guard.clock(),
            &self.pre,
            &self.binding,
            &self.label,
        )?;
        self.guard = guard;
        self.guest = guest;
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
