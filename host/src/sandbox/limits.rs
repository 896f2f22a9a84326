//! The sandbox's hard limits, in one small type.

use std::time::Duration;

/// Every limit a strategy runs under. Defaults are on; tune, never disable.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// Largest `.wasm` file accepted, in bytes.
    pub max_wasm_bytes: usize,
    /// CPU time a compile may take before the artifact is refused (the
    /// process's, every compiling thread counted; time spent waiting for
    /// the CPU does not count, up to 30 times this in wall-clock time).
    pub max_compile_time: Duration,
    /// Linear memory (and tables) one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wasm stack one call may use, in bytes (deep recursion traps past it).
    pub max_stack_bytes: usize,
    /// Wall-clock time one call may run (epoch deadline), under
    /// `Metering::WallClock`; fuel-metered calls are bounded by fuel alone.
    pub call_deadline: Duration,
    /// Fuel one call may burn, when the engine meters fuel (backtests).
    pub fuel_per_call: u64,
    /// Signals one `on-bar` may return; more fails the whole call.
    pub max_signals_per_call: usize,
    /// Log bytes one call may write; the rest is dropped and counted.
    pub max_log_bytes_per_call: usize,
    /// Bytes one call may hand to the host (return values, log strings);
    /// past it the call fails before the host allocates the rest.
    pub max_output_bytes: usize,
    /// Longest symbol, tag and reason accepted in a signal, in bytes.
    pub max_symbol_bytes: usize,
    pub max_tag_bytes: usize,
    pub max_reason_bytes: usize,
    /// Failed calls in a row (trap, limit hit or `err`) before quarantine.
    pub max_consecutive_failures: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            max_wasm_bytes: 8 << 20,
            max_compile_time: Duration::from_secs(20),
            max_memory_bytes: 64 << 20,
            max_stack_bytes: 512 << 10,
            call_deadline: Duration::from_millis(50),
            fuel_per_call: 50_000_000,
            max_signals_per_call: 64,
            max_log_bytes_per_call: 16 << 10,
            max_output_bytes: 1 << 20,
            max_symbol_bytes: 32,
            max_tag_bytes: 64,
            max_reason_bytes: 256,
            max_consecutive_failures: 3,
        }
    }
}

/// How often the epoch ticker advances. Deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

impl SandboxLimits {
    /// The call deadline in epoch ticks (at least one, rounded up).
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        (self.call_deadline.as_nanos().div_ceil(tick)).max(1) as u64
    }

    /// Refuses limits that would switch a protection off.
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("max_wasm_bytes", self.max_wasm_bytes == 0),
            ("max_memory_bytes", self.max_memory_bytes == 0),
            ("max_stack_bytes", self.max_stack_bytes == 0),
            ("call_deadline", self.call_deadline.is_zero()),
            ("fuel_per_call", self.fuel_per_call == 0),
            ("max_output_bytes", self.max_output_bytes == 0),
            ("max_compile_time", self.max_compile_time.is_zero()),
            (
                "max_consecutive_failures",
                self.max_consecutive_failures == 0,
            ),
        ];
        match zero.iter().find(|(_, z)| *z) {
            Some((name, _)) => Err(format!("sandbox limit {name} must be above zero")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        struct Case {
            deadline: Duration,
            ticks: u64,
        }
        let cases = [
            Case {
                deadline: Duration::from_millis(50),
                ticks: 50,
            },
            Case {
                deadline: Duration::from_micros(1500),
                ticks: 2,
            },
            Case {
                deadline: Duration::from_nanos(1),
                ticks: 1,
            },
        ];
        for case in cases {
            let limits = SandboxLimits {
                call_deadline: case.deadline,
                ..SandboxLimits::default()
            };
            assert_eq!(limits.deadline_ticks(), case.ticks, "{:?}", case.deadline);
        }
    }

    #[test]
    fn defaults_are_on_and_zero_is_refused() {
        assert_eq!(SandboxLimits::default().check(), Ok(()));
        let off = SandboxLimits {
            max_memory_bytes: 0,
            ..SandboxLimits::default()
        };
        assert_eq!(
            off.check(),
            Err("sandbox limit max_memory_bytes must be above zero".into())
        );
        let off = SandboxLimits {
            call_deadline: Duration::ZERO,
            ..SandboxLimits::default()
        };
        assert!(off.check().is_err());
    }
}
