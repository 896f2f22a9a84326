//! `keel report run [RUN]`: a paper or live run's record as one HTML page.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::run_report;

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Write a paper or live run's report (one self-contained HTML file,
    /// from the ledger): each book's figures, equity and drawdown on dated
    /// axes, trades, refused signals, shadow candidates with their
    /// verdicts, and the risk events. Works whether or not the run is live.
    Run {
        /// The run's id (`keel status` names it); default: the last run.
        #[arg(value_name = "RUN", value_parser = clap::value_parser!(i64).range(1..))]
        run: Option<i64>,
        /// Where to write it; default: `run-<RUN>.html`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub(super) fn run(command: &ReportCommand, db: &Path) -> anyhow::Result<bool> {
    let ReportCommand::Run { run, out } = command;
    let record = run_report::load(db, *run)?;
    let out = out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("run-{}.html", record.id)));
    std::fs::write(&out, record.html())
        .with_context(|| format!("{}: cannot write the report", out.display()))?;
    print!("{}", record.summary());
    println!(
        "{} run {} ({}): report written to {}",
        record.mode,
        record.id,
        record.status,
        out.display()
    );
    Ok(true)
}
