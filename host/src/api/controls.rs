//! What a process that trades on a database runs beside its engine.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::Context;

use super::{ApiServer, Bound, Edge, Shared};
use crate::control::{self, Command, Snapshot};
use crate::engine::ControlLink;

/// What a process that trades on a database runs beside its engine: the
/// IO edge (the API server, the signal watch), the API's port bound before
/// anything is written, and the engine's end of the link.
#[derive(Debug)]
pub struct Controls {
    edge: Edge,
    bound: Option<Bound>,
    shared: Shared,
    link: Option<ControlLink>,
}

impl Controls {
    /// Starts the IO edge and binds the API's port; SIGINT and SIGTERM stop
    /// the engine cleanly from here on.
    pub fn start(db: &Path, port: u16) -> anyhow::Result<Controls> {
        let edge = Edge::start()?;
        let (commands_tx, commands) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        edge.stop_on_signals(stop.clone(), commands_tx.clone());
        let bound = super::bind(port)?;
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let kill_requested = Arc::new(AtomicBool::new(false));
        Ok(Controls {
            edge,
            bound: Some(bound),
            shared: Shared {
                snapshot: snapshot.clone(),
                commands: commands_tx,
                kill_requested: kill_requested.clone(),
            },
            link: Some(ControlLink {
                commands,
                snapshot,
                kill_requested,
                stop_requested: stop,
                kill_file: control::kill_file(db),
            }),
        })
    }

    /// The engine's end, once.
    pub fn link(&mut self) -> Option<ControlLink> {
        self.link.take()
    }

    /// A sender of commands to the engine, for in-process callers.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.shared.commands.clone()
    }

    /// Starts the Telegram bridge on the edge's runtime (once the engine
    /// has published its first snapshot); it stops when the handle drops.
    pub fn telegram(
        &self,
        db: &Path,
        config: crate::telegram::TelegramConfig,
    ) -> anyhow::Result<crate::telegram::TelegramBridge> {
        crate::telegram::start(self.edge.runtime.handle(), db, self.shared.clone(), config)
    }

    /// Serves the API (once the engine has published its first snapshot)
    /// and writes `<db>.control`.
    pub fn serve(&mut self, db: &Path) -> anyhow::Result<ApiServer> {
        let bound = self
            .bound
            .take()
            .context("the control API is served once")?;
        self.edge
            .serve(bound, db, self.shared.clone(), super::Limits::default())
    }
}
