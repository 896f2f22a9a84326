//! Why a call into a strategy failed, named from what stopped it.

use std::fmt;
use std::time::Duration;

use wasmtime::Trap;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use keel_model::shown;

use super::{SandboxLimits, one_line};

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
    /// It broke the contract in a way the types cannot express.
    Contract(String),
    Quarantined(String),
}

impl Fault {
    /// Did the sandbox stop it (as opposed to the strategy's own `err`)?
    pub fn is_trap(&self) -> bool {
        !matches!(
            self,
            Fault::Returned(_)
                | Fault::Quarantined(_)
                | Fault::TooManySignals { .. }
                | Fault::Contract(_)
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
            Fault::Panic(msg) => write!(f, "panicked: {}", shown::text(msg)),
            Fault::Trap(msg) => write!(f, "trapped: {msg}"),
            Fault::OutputTooLarge(limit) => {
                write!(f, "handed the host more than {limit} bytes in one call")
            }
            Fault::TooManySignals { count, limit } => {
                write!(
                    f,
                    "returned {count} signals, more than the {limit} allowed per bar close"
                )
            }
            Fault::Returned(msg) => write!(f, "returned an error: {}", shown::text(msg)),
            Fault::Contract(msg) => write!(f, "broke the contract: {msg}"),
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

/// Names what stopped a call of `closes` bar closes.
pub(super) fn classify(
    e: &wasmtime::Error,
    limits: &SandboxLimits,
    stderr: &MemoryOutputPipe,
    seen: usize,
    closes: usize,
) -> Fault {
    let text = one_line(e);
    let closes = closes.max(1) as u64;
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Deadline(limits.call_deadline * closes as u32),
        Some(Trap::OutOfFuel) => Fault::Fuel(limits.fuel_per_call.saturating_mul(closes)),
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

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}
