//! `keel dev`: hot reload for strategy authors. Watches a strategy crate
//! (or a `.wasm` file something else rebuilds), and on every save rebuilds,
//! validates and swaps the new version in — over a candle file (each
//! version re-run over it, figures printed) or into a running paper engine
//! (`--paper`, hot-swapped between two bars). A broken build or a failed
//! check keeps the old version running and says why.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use notify::{Event, RecursiveMode, Watcher};

use keel_backtester::engine::BacktestConfig;
use keel_model::Params;

use crate::api::Controls;
use crate::backtest::{self, Job};
use crate::build_strategy;
use crate::candidates;
use crate::control::{Command, Reply};
use crate::engine::feed::BarFeed;
use crate::engine::feeds::Feeds;
use crate::engine::{Engine, RunSettings, StrategySource, StrategySpec};
use crate::risk_limits::RiskConfig;
use crate::sandbox::{
    CompileCache, LoadedStrategy, Metering, Sandbox, SandboxConfig, StrategyArtifact,
};
use crate::store::{Ownership, Store};
use crate::validate;

/// What `keel dev` watches and where each version runs.
#[derive(Debug)]
pub struct DevSettings {
    /// A strategy crate directory, or a `.wasm` component to watch.
    pub source: PathBuf,
    pub mode: DevMode,
    /// Stop after this many swaps (for scripts and tests).
    pub max_reloads: Option<usize>,
    /// The Cargo target directory a crate is built in.
    pub target_dir: Option<PathBuf>,
}

/// Where each version runs.
#[derive(Debug)]
pub enum DevMode {
    /// Re-run over this candle source (`[SYMBOL=]CSV`), figures printed.
    Replay { data: String },
    /// Hot-swapped into a paper engine on this feed, named `dev:<feed_spec>`
    /// in the ledger; `speed` as `RunSettings::speed`.
    Paper {
        feed: Box<BarFeed>,
        feed_spec: String,
        /// What the feed's bars are of.
        symbol: String,
        speed: Option<f64>,
    },
}

/// What a save produced.
enum Version {
    Good(StrategyArtifact, Box<LoadedStrategy>),
    Broken(String),
}

struct Builder<'s> {
    source: &'s Path,
    target_dir: Option<&'s Path>,
    sandbox: &'s Sandbox,
}

impl Builder<'_> {
    /// Builds (a crate) or reads (a `.wasm`) and validates.
    fn version(&self) -> Version {
        let file = if self.source.is_dir() {
            match build_strategy::build(self.source, self.target_dir) {
                Ok(files) => match files.into_iter().next() {
                    Some(f) => f,
                    None => return Version::Broken("the build produced no component".into()),
                },
                Err(e) => return Version::Broken(format!("{e:#}")),
            }
        } else {
            self.source.to_path_buf()
        };
        let artifact = match StrategyArtifact::read(&file, self.sandbox.limits().max_wasm_bytes) {
            Ok(a) => a,
            Err(e) => return Version::Broken(e.to_string()),
        };
        match validate::validate_and_load(self.sandbox, &artifact) {
            (report, Some(loaded)) if report.passed() => Version::Good(artifact, Box::new(loaded)),
            (report, _) => Version::Broken(format!(
                "{} failed validation: {}",
                artifact.hash.short(),
                report.failures().join("; ")
            )),
        }
    }
}

/// Waits for the next change under the watched path; a burst of events
/// (an editor's save, a build writing files) counts once.
fn next_change(events: &Receiver<notify::Result<Event>>, watched: &Path, skip: &Path) -> bool {
    let relevant = |e: &notify::Result<Event>| match e {
        Ok(event) => {
            !matches!(event.kind, notify::EventKind::Access(_))
                && event
                    .paths
                    .iter()
                    .any(|p| p.starts_with(watched) && !p.starts_with(skip))
        }
        Err(_) => false,
    };
    loop {
        match events.recv() {
            Ok(e) if relevant(&e) => break,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    // Let the burst settle.
    let settle = Instant::now() + Duration::from_millis(150);
    while let Some(left) = settle.checked_duration_since(Instant::now()) {
        if events.recv_timeout(left).is_err() {
            break;
        }
    }
    true
}

fn watch(
    source: &Path,
) -> anyhow::Result<(
    notify::RecommendedWatcher,
    Receiver<notify::Result<Event>>,
    PathBuf,
    PathBuf,
)> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx)?;
    let source = std::fs::canonicalize(source)
        .with_context(|| format!("{}: not found", source.display()))?;
    let (watched, skip) = if source.is_dir() {
        (source.clone(), source.join("target"))
    } else {
        (source.clone(), PathBuf::from("/nonexistent"))
    };
    let dir = if source.is_dir() {
        source.clone()
    } else {
        source.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    watcher.watch(&dir, RecursiveMode::Recursive)?;
    Ok((watcher, rx, watched, skip))
}

/// `keel dev`.
pub fn run(settings: DevSettings, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    // Every save is a new artifact, so every load is a cold compile: the
    // baseline compiler gets each version validated and running quickly.
    let sandbox = Sandbox::new(cache.sandbox_config(SandboxConfig {
        metering: Metering::Fuel,
        baseline_first: true,
        // This binary: background compiles in a process of their own.
        optimizer: std::env::current_exe().ok(),
        ..SandboxConfig::default()
    }))?;
    let (_watcher, events, watched, skip) = watch(&settings.source)?;
    let builder = Builder {
        source: &settings.source,
        target_dir: settings.target_dir.as_deref(),
        sandbox: &sandbox,
    };
    let spec = match settings.mode {
        DevMode::Paper {
            feed,
            feed_spec,
            symbol,
            speed,
        } => {
            let paper_settings = Paper {
                source: &settings.source,
                feed_name: format!("dev:{feed_spec}"),
                symbol,
                speed,
                max_reloads: settings.max_reloads,
            };
            return paper(
                &paper_settings,
                db,
                &sandbox,
                &builder,
                feed,
                events,
                &watched,
                &skip,
            );
        }
        DevMode::Replay { data } => data,
    };
    let data = backtest::load_data(std::slice::from_ref(&spec), &Default::default(), db)?;
    let config = BacktestConfig {
        record_signals: false,
        record_fills: false,
        ..BacktestConfig::default()
    };
    let replay = |loaded: &LoadedStrategy| -> anyhow::Result<String> {
        let params = Params::resolve(&loaded.info.params, &[])?;
        let job = Job {
            strategy: loaded,
            params,
            window: None,
        };
        let report = backtest::run_job(&sandbox, &job, &data, &config)?;
        let m = &report.metrics;
        Ok(format!(
            "{} trades, return {:+.2}%, max drawdown {:.2}%, {} signals ({} rejected), {} errors",
            m.trades,
            m.total_return * 100.0,
            m.max_drawdown * 100.0,
            report.summary.signals,
            report.summary.rejected,
            report.errors.len()
        ))
    };
    let mut current: Option<StrategyArtifact> = None;
    // The current version, held as a running strategy is: the sandbox
    // builds optimised code (for the next `keel dev` or backtest of it) only
    // for versions still held, not for the ones each save replaces.
    let mut _current_code: Option<Box<LoadedStrategy>> = None;
    let mut reloads = 0;
    let mut first = true;
    loop {
        if !first && !next_change(&events, &watched, &skip) {
            return Ok(true);
        }
        let changed = Instant::now();
        match builder.version() {
            Version::Broken(why) => match &current {
                Some(old) => println!("still running {}: {why}", old.hash.short()),
                None => println!("nothing running yet: {why}"),
            },
            Version::Good(artifact, loaded) => {
                let same = current.as_ref().is_some_and(|c| c.hash == artifact.hash);
                if same {
                    println!("{} unchanged", artifact.hash.short());
                } else {
                    let figures = replay(&loaded)?;
                    let took = changed.elapsed();
                    match &current {
                        Some(old) => {
                            reloads += 1;
                            println!(
                                "swapped {} -> {} ({:.0} ms from the change): {figures}",
                                old.hash.short(),
                                artifact.hash.short(),
                                took.as_secs_f64() * 1e3
                            );
                        }
                        None => println!(
                            "running {} {} ({}): {figures}",
                            loaded.info.name,
                            loaded.info.version,
                            artifact.hash.short()
                        ),
                    }
                    current = Some(artifact);
                    _current_code = Some(loaded);
                }
            }
        }
        if first {
            println!("watching {} (Ctrl-C to stop)", watched.display());
            first = false;
        }
        if settings.max_reloads.is_some_and(|n| reloads >= n) {
            return Ok(true);
        }
    }
}

/// What the paper engine of `keel dev --paper` is set up with.
struct Paper<'s> {
    source: &'s Path,
    feed_name: String,
    symbol: String,
    speed: Option<f64>,
    max_reloads: Option<usize>,
}

/// `keel dev --paper`: a paper engine on this thread, the watcher on
/// another, swaps through the engine's command channel.
#[allow(clippy::too_many_arguments)]
fn paper(
    dev: &Paper<'_>,
    db: &Path,
    sandbox: &Sandbox,
    builder: &Builder<'_>,
    feed: Box<BarFeed>,
    events: Receiver<notify::Result<Event>>,
    watched: &Path,
    skip: &Path,
) -> anyhow::Result<bool> {
    let Version::Good(artifact, _) = builder.version() else {
        bail!(
            "{}: the first version must build and validate",
            dev.source.display()
        );
    };
    let owner = Ownership::claim(db, "keel dev --paper")?;
    let mut store = Store::open(db)?;
    candidates::store_blob(store.conn(), &artifact)?;
    let mut controls = Controls::start(db, 0)?;
    let commands_tx = controls.commands();
    let symbol = dev.symbol.clone();
    let mut feeds = Feeds::new(vec![symbol.clone()], vec![*feed], std::time::Duration::ZERO);
    let settings = RunSettings {
        feed_name: dev.feed_name.clone(),
        symbols: vec![symbol],
        speed: dev.speed,
        cash: 10_000.0,
        risk: RiskConfig::default(),
        fills: Default::default(),
        strategies: vec![StrategySpec {
            source: StrategySource::Stored(artifact.clone()),
            params: vec![],
            symbols: vec![],
            slot: Some("dev".into()),
        }],
        max_bars: None,
        // The strategy being written runs alone: no candidates in shadow.
        candidates: candidates::CandidatesConfig {
            paper: candidates::PaperGate {
                slots: 0,
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let link = controls.link();
    let mut engine = Engine::open(&owner, store.conn(), sandbox, settings, link)?;
    let _server = controls.serve(db)?;
    println!(
        "running {} in a paper engine; watching {}",
        artifact.hash.short(),
        watched.display()
    );
    let db = db.to_path_buf();
    let (watched, skip) = (watched.to_path_buf(), skip.to_path_buf());
    let max = dev.max_reloads;
    let first = artifact.hash;
    std::thread::scope(|scope| -> anyhow::Result<bool> {
        scope.spawn(move || {
            let mut current = first;
            let mut reloads = 0;
            while next_change(&events, &watched, &skip) {
                let changed = Instant::now();
                match builder.version() {
                    Version::Broken(why) => println!("still running {}: {why}", current.short()),
                    Version::Good(new, _) if new.hash == current => println!("{} unchanged", new.hash.short()),
                    Version::Good(new, _) => {
                        let stored = Store::open(&db).and_then(|mut s| {
                            candidates::store_blob(s.conn(), &new).map_err(|e| crate::store::StoreError::Conflict(e.to_string()))
                        });
                        if let Err(e) = stored {
                            println!("still running {}: {e}", current.short());
                            continue;
                        }
                        let (reply, answer) = mpsc::channel();
                        let _ = commands_tx.send(Command::Swap {
                            hash: new.hash.to_hex(),
                            actor: "keel dev".into(),
                            reason: "source changed".into(),
                            reply,
                        });
                        match answer.recv_timeout(Duration::from_secs(30)) {
                            Ok(Ok(Reply::Swapped { warmed_bars, .. })) => {
                                reloads += 1;
                                println!(
                                    "swapped {} -> {} ({:.0} ms from the change, warmed on {warmed_bars} bars)",
                                    current.short(),
                                    new.hash.short(),
                                    changed.elapsed().as_secs_f64() * 1e3
                                );
                                current = new.hash;
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => println!("still running {}: {e}", current.short()),
                            Err(_) => println!("still running {}: the engine did not answer", current.short()),
                        }
                    }
                }
                if max.is_some_and(|n| reloads >= n) {
                    let (reply, _answer) = mpsc::channel();
                    let _ = commands_tx.send(Command::Stop { reply });
                    break;
                }
            }
        });
        let summary = engine.run(&mut feeds)?;
        println!("{} bars booked", summary.bars);
        Ok(true)
    })
}
