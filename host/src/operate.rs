//! `keel run --paper` and the commands that act on a running one
//! (`keel status`, `positions`, `trades`, `pause`, `resume`, `kill`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::TypedValueParser;

use keel_backtester::fills::FillModel;
use keel_model::candles::format_time;
use keel_model::shown;

use crate::api::{self, ApiServer, Bound, Edge, Shared};
use crate::build_strategy;
use crate::candidates::{self, Actor, CandidateState, Gate};
use crate::control::{self, Command, Snapshot};
use crate::engine::feed::BarFeed;
use crate::engine::feeds::Feeds;
use crate::engine::{ControlLink, Engine, RunSettings, RunSummary, StrategySource, StrategySpec};
use crate::ranges;
use crate::risk_limits::RiskConfig;
use crate::sandbox::StrategyArtifact;
use crate::sandbox::{CompileCache, Metering, Sandbox, SandboxConfig, SandboxLimits};
use crate::store::{Ownership, Store};

#[derive(Debug, Args)]
pub struct PaperArgs {
    /// Paper trading (the only mode so far: live trading is not built yet).
    #[arg(long)]
    pub paper: bool,
    /// `replay:[SYMBOL=]<file>` to replay a candle file (CSV or freqtrade
    /// `.json`), `sample[:BARS]` for the built-in seeded sample (default:
    /// 720 one-minute bars), or `kraken:<PAIR>[,<PAIR>…]` for live bars
    /// from Kraken's public OHLC endpoint. Repeat it for several symbols
    /// (`--feed replay:BTC/USD=btc.csv --feed replay:ETH/USD=eth.csv`):
    /// their bars are aligned on close time, as in a backtest, and every
    /// strategy of the run is given all of them.
    #[arg(long = "feed", default_value = "sample", value_name = "FEED")]
    pub feeds: Vec<String>,
    /// Kraken's API base URL.
    #[arg(long, default_value = "https://api.kraken.com")]
    pub kraken_url: String,
    /// Kraken bar length in minutes.
    #[arg(long, default_value_t = 1)]
    pub interval: u32,
    /// How often to poll Kraken, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = ranges::POLL_MS.parser())]
    pub poll_ms: u64,
    /// A live feed that has not delivered a closed bar this many seconds
    /// after the start ends the run, in error.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub first_bar_timeout: u64,
    /// The wall-clock time one strategy call may take, in milliseconds; a
    /// call that runs over is a fault of that strategy (its instance is
    /// rebuilt, and quarantined after repeated faults).
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = ranges::CALL_DEADLINE_MS.parser())]
    pub call_deadline_ms: u64,
    /// Stop after booking this many bars.
    #[arg(long, value_parser = ranges::MAX_BARS.parser())]
    pub bars: Option<u64>,
    /// The symbol of a feed that does not name one (`replay:<file>`,
    /// `sample`).
    #[arg(long, default_value = "BTC/USD")]
    pub symbol: String,
    /// Replay speed: `600x` (600 feed seconds per second) or `max`.
    /// Ignored by a live feed.
    #[arg(long, default_value = "1440x")]
    pub speed: String,
    /// A strategy component, with parameter overrides after commas:
    /// `sma_cross.wasm,fast=5,slow=20` (repeatable; each gets its own book).
    /// Default: the repo's sma-cross, built now.
    #[arg(long = "strategy", value_name = "FILE[,NAME=VALUE...]")]
    pub strategies: Vec<String>,
    /// Starting cash of each book (quote currency).
    #[arg(long, default_value_t = 10_000.0, value_parser = ranges::CASH.parser())]
    pub cash: f64,
    /// The host's risk limits (TOML); built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub risk_limits: Option<PathBuf>,
    #[arg(long, default_value_t = 10.0, value_parser = ranges::BPS.parser())]
    pub fee_bps: f64,
    #[arg(long, default_value_t = 5.0, value_parser = ranges::BPS.parser())]
    pub slippage_bps: f64,
    /// Control API port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub control_port: u16,
    /// The Keel source tree, for building the default strategy.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Paper-gate criteria and the automatic rollback rule.
    #[arg(long, default_value = "candidates.toml", value_name = "FILE")]
    pub candidates: PathBuf,
}

/// Output format of the read-only commands.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print the engine's JSON as it came.
    #[arg(long)]
    pub json: bool,
}

/// The reason given with a state change.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    #[arg(long, default_value = "operator request")]
    pub reason: String,
}

/// `--speed`: `600x` (or `600`), within [`ranges::SPEED`], or `max` (`None`).
pub(crate) fn speed(text: &str) -> anyhow::Result<Option<f64>> {
    if text == "max" {
        return Ok(None);
    }
    let x: f64 = text
        .strip_suffix('x')
        .unwrap_or(text)
        .parse()
        .ok()
        .with_context(|| format!("--speed {text}: expected e.g. 600x or max"))?;
    Ok(Some(ranges::SPEED.check("--speed", x)?))
}

/// The feeds of `--feed`: each symbol's bar feed, in order, and how the
/// run names them in the ledger.
fn feeds(args: &PaperArgs) -> anyhow::Result<(Feeds, Vec<String>, String)> {
    let (mut symbols, mut bar_feeds, mut names) = (Vec::new(), Vec::new(), Vec::new());
    let mut live = None;
    for spec in &args.feeds {
        for (symbol, feed, name, poll) in feed(spec, args)? {
            if symbols.contains(&symbol) {
                bail!(
                    "--feed {spec}: symbol {} is fed twice",
                    shown::quoted(&symbol)
                );
            }
            live = live.or(poll);
            symbols.push(symbol);
            bar_feeds.push(feed);
            names.push(name);
        }
    }
    if symbols.len() > 1
        && let Some(spec) = args
            .feeds
            .iter()
            .find(|f| f.starts_with("sample") || (f.starts_with("replay:") && !names_symbol(f)))
    {
        bail!("--feed {spec}: with several feeds, each names its symbol (replay:SYMBOL=FILE)");
    }
    // A live feed's bar may come a few polls after the others'.
    let grace = live.map_or(Duration::ZERO, |poll: Duration| {
        (poll * 3).max(Duration::from_secs(1))
    });
    let name = names.join(" + ");
    Ok((Feeds::new(symbols.clone(), bar_feeds, grace), symbols, name))
}

/// Whether a `replay:` spec names its symbol (`replay:SYMBOL=FILE`).
fn names_symbol(spec: &str) -> bool {
    let rest = spec.strip_prefix("replay:").unwrap_or(spec);
    !Path::new(rest).exists() && rest.contains('=')
}

/// One symbol of a `--feed`: its bar feed, its name in the ledger and (for a
/// live feed) its poll interval.
type SymbolFeed = (String, BarFeed, String, Option<Duration>);

/// One `--feed`: its symbols.
fn feed(spec: &str, args: &PaperArgs) -> anyhow::Result<Vec<SymbolFeed>> {
    if let Some(rest) = spec.strip_prefix("replay:") {
        let (symbol, path) = match rest.split_once('=') {
            Some((symbol, path)) if names_symbol(spec) => {
                if symbol.is_empty() || path.is_empty() {
                    bail!("--feed {spec}: expected replay:SYMBOL=FILE");
                }
                (symbol.to_owned(), path)
            }
            _ => (args.symbol.clone(), rest),
        };
        let path = PathBuf::from(path);
        let feed = BarFeed::replay(&path)?;
        let canonical = std::fs::canonicalize(&path).unwrap_or(path);
        let name = match names_symbol(spec) {
            true => format!("replay:{symbol}={}", canonical.display()),
            false => format!("replay:{}", canonical.display()),
        };
        return Ok(vec![(symbol, feed, name, None)]);
    }
    if let Some(rest) = spec.strip_prefix("sample") {
        let bars = match rest.strip_prefix(':') {
            Some(n) => ranges::SAMPLE_BARS
                .parse(n)
                .map_err(|e| anyhow::anyhow!("--feed {spec}: {e}"))?,
            None if rest.is_empty() => 720,
            None => bail!("--feed {spec}: expected sample or sample:BARS"),
        };
        let feed = BarFeed::sample(7, bars);
        return Ok(vec![(
            args.symbol.clone(),
            feed,
            format!("sample:{bars}"),
            None,
        )]);
    }
    if let Some(pairs) = spec.strip_prefix("kraken:") {
        let pairs: Vec<&str> = pairs.split(',').collect();
        if pairs
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '/'))
        {
            bail!("--feed {spec}: expected Kraken pairs such as kraken:XBTUSD,ETHUSD");
        }
        if ![1, 5, 15, 30, 60, 240, 1440, 10080, 21600].contains(&args.interval) {
            bail!(
                "--interval {}: Kraken's intervals are 1, 5, 15, 30, 60, 240, 1440, 10080 and 21600 minutes",
                args.interval
            );
        }
        if !(10..=3_600_000).contains(&args.poll_ms) {
            bail!(
                "--poll-ms {}: expected 10 to 3600000 (one hour)",
                args.poll_ms
            );
        }
        if !(1..=86_400).contains(&args.first_bar_timeout) {
            bail!(
                "--first-bar-timeout {}: expected 1 to 86400 seconds",
                args.first_bar_timeout
            );
        }
        let poll = Duration::from_millis(args.poll_ms);
        let first_bar = Duration::from_secs(args.first_bar_timeout);
        let mut out = Vec::new();
        for pair in pairs {
            let feed = BarFeed::kraken(&args.kraken_url, pair, args.interval, poll, first_bar)?;
            let name = format!("kraken:{pair}@{}m", args.interval);
            out.push((pair.to_owned(), feed, name, Some(poll)));
        }
        return Ok(out);
    }
    bail!(
        "--feed {spec}: expected replay:[SYMBOL=]<file>, sample[:BARS] or kraken:<PAIR>[,<PAIR>…]"
    )
}

/// The books of a run: the given strategies, else the active one (the
/// repo's sma-cross the first time). The engine adds the candidates waiting
/// for their paper gate, in shadow.
fn strategies(args: &PaperArgs, conn: &rusqlite::Connection) -> anyhow::Result<Vec<StrategySpec>> {
    let mut specs = Vec::new();
    for spec in &args.strategies {
        let mut parts = spec.split(',');
        let file = PathBuf::from(parts.next().unwrap_or_default());
        specs.push(StrategySpec::file(file, parts.map(str::to_owned).collect()));
    }
    if specs.is_empty() {
        let artifact = match candidates::active(conn)? {
            Some(hash) => candidates::load_blob(conn, &hash)?,
            None => {
                let dir = args.repo.join("strategies/sma-cross");
                eprintln!("building the default strategy, {}", dir.display());
                let file = build_strategy::build(&dir, args.target_dir.as_deref())?
                    .into_iter()
                    .next()
                    .context("no component built")?;
                StrategyArtifact::read(&file, usize::MAX)?
            }
        };
        specs.push(StrategySpec {
            source: StrategySource::Stored(artifact),
            params: vec![],
            slot: Some("main".into()),
        });
    }
    if candidates::active(conn)?.is_none() {
        let artifact = match &specs[0].source {
            StrategySource::File(path) => StrategyArtifact::read(path, usize::MAX)?,
            StrategySource::Stored(a) => a.clone(),
        };
        candidates::record_initial(conn, &artifact)?;
    }
    Ok(specs)
}

/// What a process that trades on a database runs beside its engine: the
/// IO edge (the API server, the signal watch), the API's port bound before
/// anything is written, and the engine's end of the link.
pub(crate) struct Controls {
    edge: Edge,
    bound: Option<Bound>,
    shared: Shared,
    link: Option<ControlLink>,
}

impl Controls {
    /// Starts the IO edge and binds the API's port; SIGINT and SIGTERM stop
    /// the engine cleanly from here on.
    pub(crate) fn start(db: &Path, port: u16) -> anyhow::Result<Controls> {
        let edge = Edge::start()?;
        let (commands_tx, commands) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        edge.stop_on_signals(stop.clone(), commands_tx.clone());
        let bound = api::bind(port)?;
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
    pub(crate) fn link(&mut self) -> Option<ControlLink> {
        self.link.take()
    }

    /// A sender of commands to the engine, for in-process callers.
    pub(crate) fn commands(&self) -> mpsc::Sender<Command> {
        self.shared.commands.clone()
    }

    /// Serves the API (once the engine has published its first snapshot)
    /// and writes `<db>.control`.
    pub(crate) fn serve(&mut self, db: &Path) -> anyhow::Result<ApiServer> {
        let bound = self
            .bound
            .take()
            .context("the control API is served once")?;
        self.edge
            .serve(bound, db, self.shared.clone(), api::Limits::default())
    }
}

/// `keel run --paper`.
pub fn run(args: &PaperArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    if !args.paper {
        bail!("live trading is not available yet: pass --paper");
    }
    // Before anything is read or written: one process trades on a database.
    let owner = Ownership::claim(db, "keel run")?;
    let speed = speed(&args.speed)?;
    let risk = match &args.risk_limits {
        Some(path) => RiskConfig::load(path).map_err(anyhow::Error::msg)?,
        None => RiskConfig::default(),
    };
    let candidates_config = candidates::load_config(&args.candidates)?;
    let (mut feeds, symbols, feed_name) = feeds(args)?;
    let mut controls = Controls::start(db, args.control_port)?;
    // A promoted candidate swaps in within milliseconds: baseline code at
    // once, optimised code from the background compile for later loads.
    let sandbox = Sandbox::new(cache.sandbox_config(SandboxConfig {
        metering: Metering::WallClock,
        limits: SandboxLimits {
            call_deadline: Duration::from_millis(args.call_deadline_ms),
            ..SandboxLimits::default()
        },
        baseline_first: true,
        // This binary: background compiles in a process of their own.
        optimizer: std::env::current_exe().ok(),
        ..SandboxConfig::default()
    }))
    .context("failed to set up the wasm sandbox")?;
    let mut store = Store::open(db)?;
    let strategies = strategies(args, store.conn())?;
    let settings = RunSettings {
        feed_name,
        symbols,
        speed,
        cash: args.cash,
        risk,
        fills: FillModel {
            fee_bps: args.fee_bps,
            slippage_bps: args.slippage_bps,
            ..FillModel::default()
        },
        strategies,
        max_bars: args.bars,
        candidates: candidates_config,
    };
    let link = controls.link();
    let mut engine = Engine::open(&owner, store.conn(), &sandbox, settings, link)?;
    // Served once the engine has published its first snapshot.
    let server = controls.serve(db)?;
    println!(
        "paper run {} on {} ({}); control API on 127.0.0.1:{} — try `keel status --db {}`",
        engine.run_id(),
        args.feeds.join(" "),
        args.speed,
        server.port,
        db.display()
    );
    let summary = engine.run(&mut feeds)?;
    drop(engine);
    drop(server);
    print_summary(&summary);
    Ok(summary.feed_error.is_none())
}

fn print_summary(s: &RunSummary) {
    let how = if s.resumed { "resumed" } else { "new" };
    println!(
        "run {} ({how}): {} bars booked; trading state {}",
        s.run_id, s.bars, s.state
    );
    for b in &s.books {
        println!(
            "{:<20} equity {:>12.2} (start {:.2}, realized {:+.2}, fees {:.2}), {} open position(s), {} signals ({} rejected)",
            b.slot,
            b.equity,
            b.start_cash,
            b.realized,
            b.fees,
            b.positions.len(),
            b.signals,
            b.rejected
        );
    }
    if let Some(e) = &s.feed_error {
        println!("feed stopped: {e}");
    }
    if s.interrupted {
        println!(
            "interrupted: `keel run` with the same settings resumes run {} after its last booked bar",
            s.run_id
        );
    }
}

fn call(db: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let (status, body) = control::request(db, method, path, body)?;
    if status != 200 {
        bail!("{} {path}: {}", status, body.trim());
    }
    Ok(body)
}

/// Whether the process named by an unanswered request is still alive.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `keel status`.
pub fn status(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let body = call(db, "GET", "/status", "")?;
    if args.json {
        println!("{body}");
        return Ok(true);
    }
    let s: Snapshot = serde_json::from_str(&body)?;
    let at = s.cursor_ms.map_or("-".to_owned(), format_time);
    println!(
        "run {}  {}  state {}{}  bars {}  last bar {at}",
        s.run_id,
        s.feed,
        s.state,
        if s.killed { " (killed)" } else { "" },
        s.bars
    );
    let health = &s.feed_health;
    if health.consecutive_failures > 0 || s.feed.starts_with("kraken:") {
        println!(
            "feed: last bar {}, {} failed poll(s) in a row{}",
            health
                .last_bar_ms
                .map_or("none yet".to_owned(), format_time),
            health.consecutive_failures,
            health
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" — {e}"))
        );
    }
    for b in &s.books {
        println!(
            "{:<20} equity {:>12.2}  cash {:>12.2}  drawdown {:>5.2}%  positions {}  signals {} ({} rejected)  calls {}  traps {}",
            b.slot,
            b.equity,
            b.cash,
            b.drawdown_pct,
            b.positions.len(),
            b.signals,
            b.rejected,
            b.calls,
            b.traps
        );
    }
    Ok(true)
}

/// `keel positions`.
pub fn positions(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let body = call(db, "GET", "/status", "")?;
    let s: Snapshot = serde_json::from_str(&body)?;
    if args.json {
        println!("{}", call(db, "GET", "/positions", "")?);
        return Ok(true);
    }
    let mut any = false;
    for b in &s.books {
        for p in &b.positions {
            any = true;
            println!(
                "{:<20} {:<10} {:<8} {:<5} qty {:>14.8}  entry {:>12.4}  mark {:>12.4}  unrealized {:>+10.2}",
                b.slot,
                shown::text(&p.symbol),
                shown::text(if p.tag.is_empty() { "-" } else { &p.tag }),
                p.side,
                p.quantity,
                p.entry,
                p.mark,
                p.unrealized
            );
        }
    }
    if !any {
        println!("no open positions");
    }
    Ok(true)
}

/// `keel trades`.
pub fn trades(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let body = call(db, "GET", "/trades", "")?;
    if args.json {
        println!("{body}");
        return Ok(true);
    }
    let trades: Vec<control::SnapshotTrade> = serde_json::from_str(&body)?;
    if trades.is_empty() {
        println!("no closed trades yet");
    }
    for t in trades {
        println!(
            "{:<20} {:<10} {:<5} {} → {}  qty {:>12.8}  {:>10.4} → {:>10.4}  P&L {:>+10.2}  ({})",
            t.slot,
            shown::text(&t.symbol),
            t.side,
            format_time(t.opened_ms),
            format_time(t.closed_ms),
            t.quantity,
            t.entry,
            t.exit,
            t.pnl,
            t.exit_reason
        );
    }
    Ok(true)
}

/// `keel pause`, `keel resume` and `keel kill`.
pub fn command(which: &str, args: &ReasonArgs, db: &Path) -> anyhow::Result<bool> {
    let body = match control::request(db, "POST", &format!("/{which}"), &args.reason) {
        Ok((200, body)) => body,
        Ok((status, body)) => bail!("{status} /{which}: {}", body.trim()),
        Err(unreachable) if which == "kill" => return kill_by_file(db, &args.reason, &unreachable),
        Err(unreachable) => return Err(unreachable.into()),
    };
    let reply: control::Reply = serde_json::from_str(&body)?;
    match reply {
        control::Reply::State { state } => println!("trading state {state}"),
        control::Reply::Killed {
            latency_us,
            positions_closed,
            orders_cancelled,
        } => println!(
            "killed in {:.3} ms: strategies stopped, orders blocked; {positions_closed} position(s) closed, {orders_cancelled} order(s) cancelled; trading HALTED",
            latency_us as f64 / 1000.0
        ),
        control::Reply::Swapped { .. } => println!("{body}"),
    }
    Ok(true)
}

/// How long `keel kill` waits for an engine to take its kill file.
const KILL_FILE_WAIT: Duration = Duration::from_secs(3);

/// The kill switch's fallback when the API does not answer: `<db>.kill`,
/// which the engine looks for before every bar, while it waits for one,
/// and at start.
fn kill_by_file(
    db: &Path,
    reason: &str,
    unreachable: &control::Unreachable,
) -> anyhow::Result<bool> {
    eprintln!("{unreachable}");
    let file = control::write_kill_file(db, reason).with_context(|| {
        format!(
            "the kill was not delivered: cannot write {}",
            control::kill_file(db).display()
        )
    })?;
    let engine = match unreachable {
        control::Unreachable::NoAnswer { pid, .. } if alive(*pid) => Some(*pid),
        _ => None,
    };
    let Some(pid) = engine else {
        println!(
            "wrote {}: no engine is running on {}; the next keel run on it starts by killing (trading HALTED)",
            file.display(),
            db.display()
        );
        return Ok(true);
    };
    let asked = Instant::now();
    while file.exists() && asked.elapsed() < KILL_FILE_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    if file.exists() {
        println!(
            "wrote {}: keel run (pid {pid}) has not taken it within {} s; it halts before its next bar — if it never does, stop it with `kill -9 {pid}` (a restart resumes, then halts)",
            file.display(),
            KILL_FILE_WAIT.as_secs()
        );
        return Ok(false);
    }
    println!(
        "killed through {} in {:.0} ms: keel run (pid {pid}) took it; strategies stopped, positions closed, trading HALTED",
        file.display(),
        asked.elapsed().as_secs_f64() * 1e3
    );
    Ok(true)
}

/// `keel candidate …`.
#[derive(Debug, Args)]
pub struct CandidateArgs {
    /// Gate thresholds and criteria.
    #[arg(
        long,
        global = true,
        default_value = "candidates.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: CandidateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CandidateCommand {
    /// Store a component (or build a crate) as a candidate and run its
    /// validate and backtest gates.
    Submit {
        /// A `.wasm` component or a strategy crate directory.
        source: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
        /// Who submits it: `person` or `evolution`.
        #[arg(long, default_value = "person")]
        by: String,
        /// The strategy or candidate it was derived from (hash or id).
        #[arg(long)]
        parent: Option<String>,
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Every candidate and its state.
    List {
        /// As JSON: `{"active": <sha256 or null>, "candidates": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// One candidate: lineage, every gate's figures, its history.
    Show {
        id: i64,
        /// All of it as one JSON object (for scripts and the evolution job).
        #[arg(long)]
        json: bool,
    },
    /// Make it the active strategy (hot-swapped into a running `keel run`).
    Promote {
        id: i64,
        /// Promote although a gate has not passed (needs --reason; audited).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        by: Decider,
    },
    /// Refuse it for good.
    Reject {
        id: i64,
        #[arg(long, default_value = "rejected by an operator")]
        reason: String,
        #[command(flatten)]
        by: Decider,
    },
    /// Restore the previous active strategy.
    Rollback {
        #[arg(long, default_value = "operator rollback")]
        reason: String,
        #[command(flatten)]
        by: Decider,
    },
}

/// Who decides, as the audit log and the deployments record it.
#[derive(Debug, Args)]
pub struct Decider {
    /// `operator` (a person) or `evolution` (the nightly job).
    #[arg(
        long = "by",
        default_value = "operator",
        value_parser = clap::builder::PossibleValuesParser::new(["operator", "evolution"])
            .try_map(|by| Actor::parse(&by))
    )]
    pub actor: Actor,
}

fn gate_line(g: &candidates::GateResult) -> String {
    format!(
        "{:<9} {}  {}",
        g.gate,
        if g.passed() { "PASS" } else { "FAIL" },
        g.detail
    )
}

/// A gate's figures for a reader: each check of validation; the backtest's
/// metrics beside the active strategy's on the same data; the paper run's.
/// Figures of another shape are shown as they were stored.
fn figure_lines(g: &candidates::GateResult) -> Vec<String> {
    let f = &g.figures;
    let number = |v: &serde_json::Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.digits$}"))
    };
    match g.gate {
        Gate::Validate if f["checks"].is_array() => f["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mark = if c["ok"].as_bool() == Some(true) {
                    "ok  "
                } else {
                    "FAIL"
                };
                format!(
                    "{mark} {}: {}",
                    c["check"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                )
            })
            .collect(),
        Gate::Backtest if f["candidate"].is_object() => {
            let data: Vec<&str> = f["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            let (c, a) = (&f["candidate"], &f["active"]);
            let mut lines = vec![
                format!("on {}", data.join(", ")),
                format!(
                    "{:<16} {:>12} {:>12}",
                    "",
                    "candidate",
                    if a.is_object() {
                        "active"
                    } else {
                        "(no active)"
                    }
                ),
            ];
            // Label, key, digits, unit, scale.
            let rows: [(&str, &str, usize, &str, f64); 6] = [
                ("trades", "trades", 0, "", 1.0),
                ("total return", "total_return_pct", 2, "%", 1.0),
                ("Sharpe", "sharpe", 2, "", 1.0),
                ("max drawdown", "max_drawdown_pct", 2, "%", 1.0),
                ("profit factor", "profit_factor", 2, "", 1.0),
                ("win rate", "win_rate", 1, "%", 100.0),
            ];
            for (label, key, digits, unit, scale) in rows {
                let cell = |side: &serde_json::Value| match side[key].as_f64() {
                    Some(x) => format!("{:.digits$}{unit}", x * scale),
                    None if side.is_object() => "-".to_owned(),
                    None => String::new(),
                };
                let line = format!("{label:<16} {:>12} {:>12}", cell(c), cell(a));
                lines.push(line.trim_end().to_owned());
            }
            let oos: Vec<String> = f["out_of_sample_return_pct"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{}%", number(r, 2)))
                .collect();
            if !oos.is_empty() {
                lines.push(format!(
                    "walk-forward out-of-sample returns: {}",
                    oos.join(", ")
                ));
            }
            lines
        }
        Gate::Paper if f["trades"].is_number() => {
            let mut parts = Vec::new();
            if f["bars"].is_number() {
                parts.push(format!("{} bars", f["bars"]));
            }
            parts.push(format!("{} trades", f["trades"]));
            parts.push(format!("P&L {}", number(&f["pnl"], 2)));
            // Earlier runs stored the drawdown at the verdict.
            if let Some(d) = f["max_drawdown_pct"]
                .as_f64()
                .or(f["drawdown_pct"].as_f64())
            {
                parts.push(format!("max drawdown {d:.2}%"));
            }
            parts.push(format!(
                "Sharpe per bar {} (active strategy, same bars: {})",
                number(&f["sharpe_per_bar"], 4),
                number(&f["active_sharpe_per_bar"], 4)
            ));
            vec![format!("run {}: {}", f["run"], parts.join(", "))]
        }
        _ => vec![f.to_string()],
    }
}

/// How long a hot swap may take: a cold compile and a warm-up.
const SWAP_TIMEOUT: Duration = Duration::from_secs(40);

/// Tells a running engine (if any) to swap to `hash`.
fn hot_swap(db: &Path, hash: &str, actor: &str, reason: &str) -> anyhow::Result<()> {
    let not_swapped = || {
        format!(
            "recorded, but the running keel run did not swap to {} (the next run starts with it)",
            &hash[..12.min(hash.len())]
        )
    };
    let body = format!("{hash} {actor} {reason}");
    let body = match control::request_within(db, "POST", "/swap", &body, SWAP_TIMEOUT) {
        Ok((200, body)) => body,
        Ok((status, body)) => bail!("{}: {status} /swap: {}", not_swapped(), body.trim()),
        Err(control::Unreachable::NoAnswer { pid, .. }) if !alive(pid) => {
            println!(
                "no keel run is trading on {}; the next one starts with it",
                db.display()
            );
            return Ok(());
        }
        Err(control::Unreachable::NoControlFile { .. }) => {
            println!(
                "no keel run is trading on {}; the next one starts with it",
                db.display()
            );
            return Ok(());
        }
        Err(e) => return Err(anyhow::Error::from(e).context(not_swapped())),
    };
    let reply: control::Reply = serde_json::from_str(&body)?;
    if let control::Reply::Swapped {
        slot,
        warmed_bars,
        after_ms,
        ..
    } = reply
    {
        println!(
            "hot-swapped into the running engine: book {slot}, warmed on {warmed_bars} bars, trading from the bar after {}",
            after_ms.map_or("-".into(), format_time)
        );
    }
    Ok(())
}

/// `keel candidate …`.
pub fn candidate(args: &CandidateArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    let config = candidates::load_config(&args.config)?;
    let mut store = Store::open(db)?;
    match &args.command {
        CandidateCommand::Submit {
            source,
            note,
            by,
            parent,
            target_dir,
        } => {
            let by = match Actor::parse(by) {
                Ok(actor) if actor.submits() => actor,
                _ => bail!("--by {by}: expected person or evolution"),
            };
            let file = if source.is_dir() {
                build_strategy::build(source, target_dir.as_deref())?
                    .into_iter()
                    .next()
                    .context("no component built")?
            } else {
                source.clone()
            };
            let parent = parent
                .as_deref()
                .map(|p| candidates::resolve_parent(store.conn(), p))
                .transpose()?;
            let sandbox = Sandbox::new(cache.sandbox_config(SandboxConfig {
                metering: Metering::Fuel,
                ..SandboxConfig::default()
            }))?;
            let artifact = StrategyArtifact::read(&file, sandbox.limits().max_wasm_bytes)?;
            let submission = candidates::Submission {
                note: note.clone(),
                submitted_by: by,
                parent,
                source: source.display().to_string(),
            };
            let (id, existed, gates) =
                candidates::submit(store.conn(), &sandbox, &config, &artifact, &submission)?;
            if existed {
                println!(
                    "already submitted as candidate {id} ({})",
                    artifact.hash.short()
                );
                return Ok(true);
            }
            let c = candidates::get(store.conn(), id)?;
            println!(
                "candidate {id}: {} {} ({}) — {}",
                c.name,
                shown::text(&c.version),
                artifact.hash.short(),
                c.state
            );
            for g in &gates {
                println!("  {}", gate_line(g));
                if g.gate == Gate::Backtest {
                    for line in figure_lines(g) {
                        println!("            {line}");
                    }
                }
            }
            if c.state == CandidateState::Gated && control::serving_pid(db).is_some() {
                println!("  paper     next: the running keel run shadows it once a slot is free");
            }
            Ok(gates.iter().all(candidates::GateResult::passed))
        }
        CandidateCommand::List { json } => {
            let all = candidates::list(store.conn())?;
            let active = candidates::active(store.conn())?;
            if *json {
                let value = serde_json::json!({
                    "active": active,
                    "candidates": all.iter().map(|c| serde_json::json!({
                        "id": c.id, "state": c.state, "name": c.name, "version": c.version,
                        "sha256": c.hash, "parent": c.parent, "submitted_by": c.submitted_by,
                        "note": c.note, "created": format_time(c.created_ms),
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(true);
            }
            if all.is_empty() {
                println!("no candidates");
            }
            // Columns as wide as their longest entry: names come from
            // strategies, of any length.
            let width = |field: fn(&candidates::Candidate) -> &str| {
                all.iter()
                    .map(|c| shown::text(field(c)).to_string().chars().count())
                    .max()
                    .unwrap_or(0)
            };
            let (name_width, version_width) = (width(|c| &c.name), width(|c| &c.version));
            for c in &all {
                let mark = if active.as_deref() == Some(c.hash.as_str()) {
                    " (active)"
                } else {
                    ""
                };
                println!(
                    "{:>4}  {:<10} {:<name_width$}  {:<version_width$}  {}  {}  {}{mark}",
                    c.id,
                    c.state,
                    c.name,
                    shown::text(&c.version),
                    &c.hash[..12],
                    format_time(c.created_ms),
                    shown::line(&c.note)
                );
            }
            if let Some(hash) = active.filter(|a| !all.iter().any(|c| c.hash == *a)) {
                println!(
                    "active: {}, deployed without being a candidate",
                    candidates::describe_hash(store.conn(), &hash)?
                );
            }
            Ok(true)
        }
        CandidateCommand::Show { id, json } => {
            let conn = store.conn();
            let c = candidates::get(conn, *id)?;
            let lineage = candidates::lineage(conn, c.id)?;
            let gates = candidates::gates(conn, *id)?;
            let history = candidates::history(conn, *id, &c.hash)?;
            if *json {
                let value = serde_json::json!({
                    "id": c.id, "sha256": c.hash, "name": c.name, "version": c.version,
                    "state": c.state, "source": c.source, "submitted_by": c.submitted_by,
                    "note": c.note, "lineage": lineage,
                    "gates": gates.iter().map(|(g, at)| serde_json::json!({
                        "gate": g.gate, "passed": g.passed(), "detail": g.detail,
                        "figures": g.figures, "time": format_time(*at),
                    })).collect::<Vec<_>>(),
                    "history": history.iter().map(|(at, actor, action, detail)| serde_json::json!({
                        "time": format_time(*at), "actor": actor, "action": action, "detail": detail,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(true);
            }
            println!(
                "candidate {}  {} {}  state {}",
                c.id,
                c.name,
                shown::text(&c.version),
                c.state
            );
            println!("sha256     {}", c.hash);
            println!("source     {}", c.source);
            println!("by         {}", c.submitted_by);
            let ancestors = lineage
                .iter()
                .map(|hash| candidates::describe_hash(conn, hash))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            match ancestors.split_first() {
                None => println!("parent     -"),
                Some((parent, older)) => {
                    println!("parent     {parent}");
                    for ancestor in older {
                        println!("           <- {ancestor}");
                    }
                }
            }
            println!("note       {}", shown::line(&c.note));
            println!("gates");
            for (g, at) in &gates {
                println!("  {}  {}", format_time(*at), gate_line(g));
                for line in figure_lines(g) {
                    println!("             {line}");
                }
            }
            println!("history");
            for (at, actor, action, detail) in history {
                println!("  {}  {actor:<13} {action}: {detail}", format_time(at));
            }
            Ok(true)
        }
        CandidateCommand::Promote {
            id,
            force,
            reason,
            by,
        } => {
            let force_reason = match (force, reason) {
                (true, Some(r)) => Some(r.as_str()),
                (true, None) => bail!("--force needs --reason"),
                (false, _) => None,
            };
            let c = candidates::promote(store.conn(), &config, *id, by.actor, force_reason)?;
            println!(
                "candidate {} ({} {}) is the active strategy",
                c.id,
                c.name,
                shown::text(&c.version)
            );
            let why = reason
                .clone()
                .unwrap_or_else(|| format!("promote candidate {id}"));
            hot_swap(db, &c.hash, by.actor.as_str(), &why)?;
            Ok(true)
        }
        CandidateCommand::Reject { id, reason, by } => {
            candidates::reject(store.conn(), *id, by.actor, reason)?;
            println!("candidate {id} rejected");
            Ok(true)
        }
        CandidateCommand::Rollback { reason, by } => {
            let previous = candidates::rollback(store.conn(), by.actor, reason)?;
            println!("rolled back to {}", &previous[..12]);
            hot_swap(db, &previous, by.actor.as_str(), reason)?;
            Ok(true)
        }
    }
}
