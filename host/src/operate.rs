//! `keel run --paper` and the commands that act on a running one
//! (`keel status`, `positions`, `trades`, `pause`, `resume`, `kill`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, bail};
use clap::Args;

use keel_backtester::fills::FillModel;
use keel_model::candles::format_time;

use crate::build_strategy;
use crate::control::{self, Snapshot};
use crate::paper::feed::Feed;
use crate::paper::{ControlLink, PaperEngine, PaperSettings, PaperSummary, StrategySpec};
use crate::risk::RiskConfig;
use crate::sandbox::{Metering, Sandbox, SandboxConfig};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct PaperArgs {
    /// Paper trading (the only mode so far: live trading is not built yet).
    #[arg(long)]
    pub paper: bool,
    /// `replay:<csv>` to replay a candle file, `sample[:BARS]` for the
    /// built-in seeded sample (default: 720 one-minute bars), or
    /// `kraken:<PAIR>` for live bars from Kraken's public OHLC endpoint.
    #[arg(long, default_value = "sample")]
    pub feed: String,
    /// Kraken's API base URL.
    #[arg(long, default_value = "https://api.kraken.com")]
    pub kraken_url: String,
    /// Kraken bar length in minutes.
    #[arg(long, default_value_t = 1)]
    pub interval: u32,
    /// How often to poll Kraken, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub poll_ms: u64,
    /// Stop after booking this many bars.
    #[arg(long)]
    pub bars: Option<u64>,
    /// The feed's symbol.
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
    #[arg(long, default_value_t = 10_000.0)]
    pub cash: f64,
    /// The host's risk limits (TOML); built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub risk_limits: Option<PathBuf>,
    #[arg(long, default_value_t = 10.0)]
    pub fee_bps: f64,
    #[arg(long, default_value_t = 5.0)]
    pub slippage_bps: f64,
    /// Control API port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub control_port: u16,
    /// The Keel source tree, for building the default strategy.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
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

fn speed(text: &str) -> anyhow::Result<Option<f64>> {
    if text == "max" {
        return Ok(None);
    }
    let x: f64 = text
        .strip_suffix('x')
        .unwrap_or(text)
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x > 0.0)
        .with_context(|| format!("--speed {text}: expected e.g. 600x or max"))?;
    Ok(Some(x))
}

fn feed(spec: &str, args: &PaperArgs) -> anyhow::Result<(Feed, String)> {
    if let Some(path) = spec.strip_prefix("replay:") {
        let path = PathBuf::from(path);
        let feed = Feed::replay(&path)?;
        let name = std::fs::canonicalize(&path).unwrap_or(path);
        return Ok((feed, format!("replay:{}", name.display())));
    }
    if let Some(rest) = spec.strip_prefix("sample") {
        let bars = match rest.strip_prefix(':') {
            Some(n) => n
                .parse()
                .ok()
                .filter(|&n: &usize| n >= 2)
                .with_context(|| format!("--feed {spec}: the bar count must be 2 or more"))?,
            None if rest.is_empty() => 720,
            None => bail!("--feed {spec}: expected sample or sample:BARS"),
        };
        return Ok((Feed::sample(7, bars), format!("sample:{bars}")));
    }
    if let Some(pair) = spec.strip_prefix("kraken:") {
        if pair.is_empty() || !pair.chars().all(|c| c.is_ascii_alphanumeric() || c == '/') {
            bail!("--feed {spec}: expected a Kraken pair such as kraken:XBTUSD");
        }
        if ![1, 5, 15, 30, 60, 240, 1440, 10080, 21600].contains(&args.interval) {
            bail!(
                "--interval {}: Kraken's intervals are 1, 5, 15, 30, 60, 240, 1440, 10080 and 21600 minutes",
                args.interval
            );
        }
        let poll = std::time::Duration::from_millis(args.poll_ms.max(10));
        let feed = Feed::kraken(&args.kraken_url, pair, args.interval, poll)?;
        return Ok((feed, format!("kraken:{pair}@{}m", args.interval)));
    }
    bail!("--feed {spec}: expected replay:<csv>, sample[:BARS] or kraken:<PAIR>")
}

/// `keel run --paper`.
pub fn run(args: &PaperArgs, db: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<bool> {
    if !args.paper {
        bail!("live trading is not available yet: pass --paper");
    }
    if let Some(pid) = control::running_elsewhere(db) {
        bail!(
            "{}: another keel run (pid {pid}) is trading on this database",
            db.display()
        );
    }
    let speed = speed(&args.speed)?;
    let risk = match &args.risk_limits {
        Some(path) => RiskConfig::load(path).map_err(anyhow::Error::msg)?,
        None => RiskConfig::default(),
    };
    for (name, v) in [
        ("fee-bps", args.fee_bps),
        ("slippage-bps", args.slippage_bps),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("--{name} {v} must be a non-negative number");
        }
    }
    if !(args.cash.is_finite() && args.cash > 0.0) {
        bail!("--cash {} must be above zero", args.cash);
    }
    let mut strategies = Vec::new();
    for spec in &args.strategies {
        let mut parts = spec.split(',');
        let file = PathBuf::from(parts.next().unwrap_or_default());
        strategies.push(StrategySpec {
            file,
            params: parts.map(str::to_owned).collect(),
        });
    }
    if strategies.is_empty() {
        let dir = args.repo.join("strategies/sma-cross");
        eprintln!("building the default strategy, {}", dir.display());
        let file = build_strategy::build(&dir, args.target_dir.as_deref())?
            .into_iter()
            .next()
            .context("no component built")?;
        strategies.push(StrategySpec {
            file,
            params: vec![],
        });
    }
    let (mut feed, feed_name) = feed(&args.feed, args)?;
    let sandbox = Sandbox::new(SandboxConfig {
        metering: Metering::WallClock,
        cache_dir,
        ..SandboxConfig::default()
    })
    .context("failed to set up the wasm sandbox")?;
    let mut store = Store::open(db)?;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let kill_requested = Arc::new(AtomicBool::new(false));
    let (commands_tx, commands) = mpsc::channel();
    let settings = PaperSettings {
        feed_name,
        symbol: args.symbol.clone(),
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
    };
    let link = ControlLink {
        commands,
        snapshot: snapshot.clone(),
        kill_requested: kill_requested.clone(),
    };
    let mut engine = PaperEngine::open(store.conn(), &sandbox, settings, Some(link))?;
    // Served once the engine has published its first snapshot.
    let server = control::start(db, args.control_port, snapshot, commands_tx, kill_requested)?;
    println!(
        "paper run {} on {} ({}); control API on 127.0.0.1:{} — try `keel status --db {}`",
        engine.run_id(),
        args.feed,
        args.speed,
        server.port,
        db.display()
    );
    let summary = engine.run(&mut feed)?;
    drop(engine);
    print_summary(&summary);
    drop(server);
    Ok(summary.feed_error.is_none())
}

fn print_summary(s: &PaperSummary) {
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
}

fn call(db: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let (status, body) = control::request(db, method, path, body)?;
    if status != 200 {
        bail!("{} {path}: {}", status, body.trim());
    }
    Ok(body)
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
                p.symbol,
                if p.tag.is_empty() { "-" } else { &p.tag },
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
            t.symbol,
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
    let body = call(db, "POST", &format!("/{which}"), &args.reason)?;
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
    }
    Ok(true)
}
