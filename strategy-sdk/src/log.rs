//! Logging from a strategy. In a component each line goes to the host's log,
//! tagged with the strategy's name and hash (the host caps the bytes per call);
//! natively it is kept for the harness (`harness::take_logs`).

use crate::LogLevel;

/// Writes one log line at `level`.
pub fn log(level: LogLevel, message: &str) {
    sink(level, message);
}

pub fn trace(message: &str) {
    log(LogLevel::Trace, message);
}
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

#[cfg(target_arch = "wasm32")]
fn sink(level: LogLevel, message: &str) {
    crate::__private::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn sink(level: LogLevel, message: &str) {
    crate::harness::record_log(level, message);
}
