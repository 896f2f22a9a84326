//! `keel dev`: its options checked and turned into `dev::DevSettings`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use crate::dev::{self, DevMode, DevSettings};
use crate::engine::feed::BarFeed;
use crate::sandbox::CompileCache;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// A strategy crate directory, or a `.wasm` component to watch.
    pub source: PathBuf,
    /// `[SYMBOL=]CSV` to re-run every version over.
    #[arg(long, value_name = "[SYMBOL=]CSV")]
    pub data: Option<String>,
    /// Run the strategy in a paper engine on the built-in sample (or
    /// `--feed`) and hot-swap each new version into it.
    #[arg(long)]
    pub paper: bool,
    /// With --paper: `replay:<file>` or `sample[:<bars>]`.
    #[arg(long, default_value = "sample:100000")]
    pub feed: String,
    /// With --paper: replay speed, `600x` (feed seconds per second) or `max`.
    #[arg(long, default_value = "600x")]
    pub speed: String,
    /// Stop after this many swaps (for scripts and tests).
    #[arg(long, value_parser = crate::ranges::RELOADS.parser())]
    pub max_reloads: Option<usize>,
    /// Cargo's target directory for the strategy's builds.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
}

/// `keel dev`.
pub(super) fn run(args: DevArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    // Settings first: nothing is built or watched for a run that cannot start.
    // A file's bars are named by the file, the sample's honestly.
    let symbol = (args.feed.strip_prefix("replay:"))
        .and_then(|file| keel_model::candles::symbol_from_file(Path::new(file)))
        .unwrap_or_else(|| super::run::SAMPLE_SYMBOL.to_owned());
    if args.paper {
        crate::sandbox::bindable(&symbol)
            .map_err(|e| anyhow::anyhow!("--feed {}: {e}", args.feed))?;
    }
    let mode = match (args.paper, args.data) {
        (true, None) => DevMode::Paper {
            speed: super::run::speed(&args.speed)?,
            feed: Box::new(feed(&args.feed)?),
            symbol,
            feed_spec: args.feed,
        },
        (false, Some(data)) => DevMode::Replay { data },
        _ => bail!("keel dev needs exactly one of --data <csv> and --paper"),
    };
    let settings = DevSettings {
        source: args.source,
        mode,
        max_reloads: args.max_reloads,
        target_dir: args.target_dir,
    };
    dev::run(settings, db, cache)
}

/// `--feed`: `replay:<file>` or `sample[:<bars>]` (100,000 bars by default).
fn feed(spec: &str) -> anyhow::Result<BarFeed> {
    if let Some(path) = spec.strip_prefix("replay:") {
        return Ok(BarFeed::replay(Path::new(path), &Default::default())?);
    }
    let bars = match spec.strip_prefix("sample") {
        Some("") => "100000",
        Some(rest) if rest.starts_with(':') => &rest[1..],
        _ => bail!("--feed {spec}: expected replay:<file> or sample[:<bars>]"),
    };
    let bars = (crate::ranges::SAMPLE_BARS.parse(bars))
        .map_err(|e| anyhow::anyhow!("--feed {spec}: {e}"))?;
    Ok(BarFeed::sample(7, bars))
}
