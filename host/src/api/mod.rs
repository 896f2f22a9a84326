//! The IO edge of a process that trades: a tokio runtime of its own (one
//! worker thread) that serves the control API (`server`, `metrics`) and
//! turns SIGINT and SIGTERM into a clean stop. The engine stays synchronous
//! and never sees tokio: it reads the command channel and two flags, and
//! publishes its snapshot.

mod controls;
mod dashboard;
pub mod events;
pub mod metrics;
mod server;
pub mod v1;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};

use anyhow::Context;

pub use controls::Controls;
pub use metrics::metrics;
pub use server::{ApiServer, Bound, Limits, Shared, bind};

use crate::control::Command;

/// The runtime the API and the signal watch run on.
#[derive(Debug)]
pub struct Edge {
    runtime: tokio::runtime::Runtime,
}

impl Edge {
    pub fn start() -> anyhow::Result<Edge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(16)
            .thread_name("keel-io")
            .enable_all()
            .build()
            .context("cannot start the IO runtime")?;
        Ok(Edge { runtime })
    }

    /// The first SIGINT or SIGTERM sets `stop` and asks the engine to stop
    /// after the bar it is on (the run stays resumable); a second one ends
    /// the process at once, which the write-ahead ledger makes safe too.
    pub fn stop_on_signals(&self, stop: Arc<AtomicBool>, commands: Sender<Command>) {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                tracing::warn!("cannot watch SIGINT and SIGTERM");
                return;
            };
            let mut first = true;
            loop {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                if !first {
                    eprintln!("{name} again: stopping now; the next start resumes the run");
                    std::process::exit(130);
                }
                first = false;
                eprintln!("{name}: stopping after the current bar ({name} again to stop now)");
                stop.store(true, Ordering::SeqCst);
                let (reply, _answer) = mpsc::channel();
                let _ = commands.send(Command::Stop { reply });
            }
        };
        self.runtime.spawn(watch);
    }

    /// Writes `<db>.control` and serves the control API on `bound`.
    pub fn serve(
        &self,
        bound: Bound,
        db: &std::path::Path,
        shared: Shared,
        limits: Limits,
    ) -> anyhow::Result<ApiServer> {
        server::serve(self.runtime.handle(), bound, db, shared, limits)
    }
}
