//! The guard around every call into a strategy: one instance's store, its
//! fuel, deadline, output and log budgets armed and its clock set before
//! each call, and what stopped a failed call named.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use keel_model::{LogLevel, StrategyInfo};

use super::fault::{classify, truncate};
use super::wit::{Guest, GuestPre};
use super::{
    Binding, ClockMode, Fault, HostState, Metering, Sandbox, SandboxLimits, StrategyError,
    StrategyHash, one_line,
};

const STDERR_CAPACITY: usize = 64 << 10;

/// One instance's store, and the guard around every call into it.
pub(crate) struct Guard {
    store: Store<HostState>,
    /// Kept only to read a panic message from when a call failed.
    stderr: MemoryOutputPipe,
    /// How much of `stderr` earlier failed calls have read.
    stderr_seen: usize,
    limits: SandboxLimits,
    metering: Metering,
    clock: ClockMode,
}

impl Guard {
    /// A new store; the strategy's WASI randomness starts from `seed`.
    pub(super) fn new(
        engine: &Engine,
        limits: &SandboxLimits,
        metering: Metering,
        clock: &ClockMode,
        seed: u64,
        label: &str,
    ) -> Guard {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let state = HostState::new(limits, clock, seed, label.to_owned(), stderr.clone());
        Guard {
            store: HostState::store(engine, state),
            stderr,
            stderr_seen: 0,
            limits: limits.clone(),
            metering,
            clock: clock.clone(),
        }
    }

    pub(super) fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    pub(super) fn metering(&self) -> Metering {
        self.metering
    }

    pub(super) fn clock(&self) -> &ClockMode {
        &self.clock
    }

    /// Instantiates `pre` in this store.
    fn instantiate(&mut self, pre: &GuestPre) -> Result<Guest, Fault> {
        self.arm(1)?;
        pre.instantiate(&mut self.store)
            .map_err(|e| classify(&e, &self.limits, &self.stderr, 0, 1))
    }

    /// Instantiates `pre` in this store and calls its `init`.
    pub(super) fn start(&mut self, pre: &GuestPre, binding: &Binding) -> Result<Guest, Fault> {
        let guest = self.instantiate(pre)?;
        self.arm(1)?;
        match guest.init(&mut self.store, binding) {
            Ok(Ok(())) => Ok(guest),
            Ok(Err(msg)) => Err(Fault::Returned(format!(
                "init refused its parameters: {}",
                truncate(&msg, 256)
            ))),
            Err(e) => Err(classify(&e, &self.limits, &self.stderr, 0, 1)),
        }
    }

    /// Arms the limits for `closes` bar closes, sets the clock to
    /// `time_ms` and runs `call`; a failure comes back named.
    pub(crate) fn call<R>(
        &mut self,
        time_ms: i64,
        closes: usize,
        call: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        if let ClockMode::Simulated(now) = &self.clock {
            now.store(time_ms, Ordering::Relaxed);
        }
        self.arm(closes)?;
        // Stderr is only read when a call failed (it holds a panic message);
        // reading it copies the buffer, so successful calls leave it alone.
        call(&mut self.store).map_err(|e| {
            let fault = classify(&e, &self.limits, &self.stderr, self.stderr_seen, closes);
            self.stderr_seen = self.stderr.contents().len();
            fault
        })
    }

    /// Refuses more signals from one call than the limit.
    pub(crate) fn check_count(&self, count: usize) -> Result<(), Fault> {
        let limit = self.limits.max_signals_per_call;
        if count > limit {
            return Err(Fault::TooManySignals { count, limit });
        }
        Ok(())
    }

    /// Moves the lines logged since the last time onto `lines`; returns
    /// how many bytes of lines were dropped over the cap since.
    pub(super) fn drain_logs(&mut self, lines: &mut Vec<(LogLevel, String)>) -> u64 {
        let log = &mut self.store.data_mut().log;
        lines.append(&mut log.lines);
        std::mem::take(&mut log.dropped) as u64
    }

    /// Sets the fuel, deadline, output budget and log budget of a call that
    /// handles `closes` bar closes (the per-close budgets are pooled).
    fn arm(&mut self, closes: usize) -> Result<(), Fault> {
        let (store, limits) = (&mut self.store, &self.limits);
        let closes = closes.max(1) as u64;
        if self.metering == Metering::Fuel {
            store
                .set_fuel(limits.fuel_per_call.saturating_mul(closes))
                .map_err(|e| Fault::Trap(one_line(&e)))?;
        }
        if self.metering == Metering::WallClock {
            store.set_epoch_deadline(limits.deadline_ticks().saturating_mul(closes));
        }
        store.set_hostcall_fuel(limits.max_output_bytes);
        let log = &mut store.data_mut().log;
        log.bytes = 0;
        Ok(())
    }
}

/// Calls `describe()` in a throwaway instance under the sandbox's limits.
pub(super) fn describe(
    sandbox: &Sandbox,
    engine: &Engine,
    pre: &GuestPre,
    hash: StrategyHash,
) -> Result<StrategyInfo, StrategyError> {
    let label = format!("@{}", hash.short());
    let clock = ClockMode::Simulated(Arc::new(AtomicI64::new(0)));
    let (limits, metering) = (sandbox.limits(), sandbox.metering());
    let mut guard = Guard::new(engine, limits, metering, &clock, 0, &label);
    let fail = |fault| StrategyError {
        label: label.clone(),
        fault,
    };
    let guest = guard.instantiate(pre).map_err(fail)?;
    guard.arm(1).map_err(fail)?;
    guest
        .describe(&mut guard.store)
        .map_err(|e| fail(classify(&e, limits, &guard.stderr, 0, 1)))
}
