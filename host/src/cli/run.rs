//! `keel run --paper`: its options turned into the engine's `RunSettings`
//! (the `--feed`s into one aligned `Feeds`), the control side started, the
//! engine run and its summary printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use keel_backtester::fills::FillModel;
use keel_model::shown;

use crate::api::Controls;
use crate::build_strategy;
use crate::candidates;
use crate::engine::feed::BarFeed;
use crate::engine::feeds::Feeds;
use crate::engine::{Engine, RunSettings, RunSummary, StrategySource, StrategySpec};
use crate::evolve::config::EvolveConfig;
use crate::evolve::schedule::{NightCommand, Scheduler};
use crate::ranges;
use crate::risk_limits::RiskConfig;
use crate::sandbox::StrategyArtifact;
use crate::sandbox::{CompileCache, Metering, Sandbox, SandboxConfig, SandboxLimits};
use crate::store::{Ownership, Store};
use crate::telegram::TelegramConfig;
use crate::venues::kraken::KrakenVenue;
use crate::venues::kraken::client::{Client, Credentials};
use crate::venues::kraken::limits::Tier;
use crate::venues::kraken::stream::Executions;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Paper trading: orders fill on the paper exchange in the database.
    #[arg(long, conflicts_with = "live")]
    pub paper: bool,
    /// Live trading: the main books' orders go to the venue (`--venue`),
    /// with real money. Needs --i-understand-this-trades-real-money and
    /// the venue's keys (KEEL_KRAKEN_KEY and KEEL_KRAKEN_SECRET, or
    /// --kraken-keys). Candidates in shadow stay on paper.
    #[arg(long)]
    pub live: bool,
    /// The live venue: `kraken` (spot).
    #[arg(long, default_value = "kraken", value_name = "VENUE")]
    pub venue: String,
    /// The confirmation a live run needs.
    #[arg(long = "i-understand-this-trades-real-money")]
    pub real_money: bool,
    /// A file only its owner may read (mode 600) holding the Kraken API key
    /// on its first line and its private key (base64) on the second; else
    /// KEEL_KRAKEN_KEY and KEEL_KRAKEN_SECRET are read.
    #[arg(long, value_name = "FILE")]
    pub kraken_keys: Option<PathBuf>,
    /// Kraken's WebSocket v2 endpoint for the account's executions (fills
    /// as they happen, REST polling while it is down); `none` polls only.
    #[arg(
        long,
        default_value = "wss://ws-auth.kraken.com/v2",
        value_name = "URL"
    )]
    pub kraken_ws_url: String,
    /// How long a Kraken request may take before its outcome is unknown
    /// (and, for an order, looked up before anything is sent again), ms.
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub kraken_timeout_ms: u64,
    /// The Kraken account's verification tier (`starter`, `intermediate`,
    /// `pro`): the rate limits Keel keeps to. `unlimited` keeps to none:
    /// only for rehearsals against `keel __fake-kraken`.
    #[arg(long, default_value = "starter", value_name = "TIER")]
    pub kraken_tier: String,
    /// `replay:[SYMBOL=]<file>` to replay a candle file (CSV or freqtrade
    /// `.json`), `sample[:BARS]` for the built-in seeded sample (default:
    /// 720 one-minute bars), or `kraken:<PAIR>[,<PAIR>…]` for live bars
    /// from Kraken's public OHLC endpoint. Repeat it for several symbols
    /// (`--feed replay:BTC/USD=btc.csv --feed replay:ETH/USD=eth.csv`):
    /// their bars are aligned on close time, as in a backtest, and each
    /// strategy is given those it is bound to (`--strategy …,@SYMBOL`).
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
    /// The symbol of a feed that does not name one: by default a
    /// `replay:<file>` is named by its file (`GOOG-1d.csv` is GOOG), and
    /// `sample` (a seeded random walk) is SAMPLE/USD.
    #[arg(long)]
    pub symbol: Option<String>,
    /// The replayed files' columns by role, for names Keel does not know,
    /// as `keel data import --columns` takes them (for every
    /// `--feed replay:` file): `time=Zeit,close=Letzter`.
    #[arg(long, value_name = "ROLE=COLUMN,…", value_parser = super::backtest::columns)]
    pub columns: Option<keel_model::candles::Columns>,
    /// Replay speed: `600x` (600 feed seconds per second) or `max`.
    /// Ignored by a live feed.
    #[arg(long, default_value = "1440x")]
    pub speed: String,
    /// A strategy component, with parameter overrides and the symbols it
    /// trades after commas: `sma_cross.wasm,fast=5,@ETH/BTC` (repeatable;
    /// each gets its own book). Without `@SYMBOL`s it is bound to every
    /// symbol of the run. Default: the active strategy (the repo's
    /// sma-cross, built now, the first time).
    #[arg(long = "strategy", value_name = "FILE[,NAME=VALUE|@SYMBOL...]")]
    pub strategies: Vec<String>,
    /// Starting cash of each book (quote currency).
    #[arg(long, default_value_t = 10_000.0, value_parser = ranges::CASH.parser())]
    pub cash: f64,
    /// The host's risk limits (TOML); built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub risk_limits: Option<PathBuf>,
    /// The paper exchange's fee per fill, basis points of its value.
    #[arg(long, default_value_t = 10.0, value_parser = ranges::BPS.parser())]
    pub fee_bps: f64,
    /// The paper exchange's slippage against the open, basis points.
    #[arg(long, default_value_t = 5.0, value_parser = ranges::BPS.parser())]
    pub slippage_bps: f64,
    /// Control API port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub control_port: u16,
    /// The Keel source tree, for building the default strategy.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Cargo's target directory for building the default strategy.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Paper-gate criteria and the automatic rollback rule (default:
    /// `candidates.toml` if there is one, else the built-in defaults); a
    /// file named must exist.
    #[arg(long, value_name = "FILE")]
    pub candidates: Option<PathBuf>,
    /// Run the nightly evolution at its scheduled time (`evolve.toml`'s
    /// `[schedule]`), as a child process at the lowest priority: a night
    /// never blocks or slows trading. A night missed while keel was down
    /// runs at the start.
    #[arg(long)]
    pub evolve: bool,
    /// The nightly evolution's settings.
    #[arg(long, default_value = "evolve.toml", value_name = "FILE")]
    pub evolve_config: PathBuf,
    /// The Telegram bridge's settings (a `[telegram]` table: the allowed
    /// users and chats, what is notified); the bot token comes from
    /// KEEL_TELEGRAM_TOKEN or the table's token_file. Off without it.
    #[arg(long, value_name = "FILE")]
    pub telegram: Option<PathBuf>,
}

/// The symbol `sample` is traded as, unless --symbol names another.
pub(super) const SAMPLE_SYMBOL: &str = "SAMPLE/USD";

/// `--speed`: `600x` (or `600`), within [`ranges::SPEED`], or `max` (`None`).
pub(super) fn speed(text: &str) -> anyhow::Result<Option<f64>> {
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
fn feeds(args: &RunArgs) -> anyhow::Result<(Feeds, Vec<String>, String)> {
    let (mut symbols, mut bar_feeds, mut names) = (Vec::new(), Vec::new(), Vec::new());
    let mut live = None;
    let named: usize = args
        .feeds
        .iter()
        .map(|spec| match spec.strip_prefix("kraken:") {
            Some(pairs) => pairs.split(',').count(),
            None => 1,
        })
        .sum();
    if named > ranges::RUN_SYMBOLS {
        bail!(
            "--feed: a run takes at most {} symbols, {named} given",
            ranges::RUN_SYMBOLS
        );
    }
    if args.columns.is_some() && !args.feeds.iter().any(|f| f.starts_with("replay:")) {
        bail!(
            "--columns names a replayed file's columns; no --feed here replays a file (replay:FILE)"
        );
    }
    for spec in &args.feeds {
        for (symbol, feed, name, poll) in feed(spec, args)? {
            crate::sandbox::bindable(&symbol).map_err(|e| anyhow::anyhow!("--feed {spec}: {e}"))?;
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
fn feed(spec: &str, args: &RunArgs) -> anyhow::Result<Vec<SymbolFeed>> {
    if let Some(rest) = spec.strip_prefix("replay:") {
        let (symbol, path) = match rest.split_once('=') {
            Some((symbol, path)) if names_symbol(spec) => {
                if symbol.is_empty() || path.is_empty() {
                    bail!("--feed {spec}: expected replay:SYMBOL=FILE");
                }
                (symbol.to_owned(), path)
            }
            _ => {
                // The file's name says what it holds, unless --symbol is given.
                let named = args
                    .symbol
                    .clone()
                    .or_else(|| keel_model::candles::symbol_from_file(Path::new(rest)));
                (named.unwrap_or_else(|| SAMPLE_SYMBOL.to_owned()), rest)
            }
        };
        let path = PathBuf::from(path);
        let feed = BarFeed::replay(&path, &args.columns.clone().unwrap_or_default())?;
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
            args.symbol
                .clone()
                .unwrap_or_else(|| SAMPLE_SYMBOL.to_owned()),
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
fn strategies(args: &RunArgs, conn: &rusqlite::Connection) -> anyhow::Result<Vec<StrategySpec>> {
    let mut specs = Vec::new();
    for spec in &args.strategies {
        let mut parts = spec.split(',');
        let file = PathBuf::from(parts.next().unwrap_or_default());
        let (symbols, params): (Vec<&str>, Vec<&str>) = parts.partition(|p| p.starts_with('@'));
        let mut spec = StrategySpec::file(file, params.into_iter().map(str::to_owned).collect());
        spec.symbols = symbols.iter().map(|s| s[1..].to_owned()).collect();
        specs.push(spec);
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
            symbols: vec![],
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

/// `keel run --paper`.
pub(super) fn run(args: &RunArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    if !args.paper && !args.live {
        bail!("pass --paper, or --live --venue kraken to trade real money");
    }
    // Everything a live run needs is checked before anything is opened.
    let credentials = match args.live {
        true => Some(live_credentials(args)?),
        false => None,
    };
    let telegram = args
        .telegram
        .as_deref()
        .map(TelegramConfig::load)
        .transpose()?;
    // Before anything is read or written: one process trades on a database.
    let owner = Ownership::claim(db, "keel run")?;
    let speed = speed(&args.speed)?;
    let risk = match &args.risk_limits {
        Some(path) => RiskConfig::load(path).map_err(anyhow::Error::msg)?,
        None => RiskConfig::default(),
    };
    let candidates_config = candidates::load_named_config(args.candidates.as_deref())?;
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
    // The night's settings are checked now: a bad evolve.toml is refused
    // before trading starts, not at 02:00.
    let evolution = match args.evolve {
        true => {
            let config = EvolveConfig::load(&args.evolve_config)?;
            Some(config.schedule)
        }
        false => None,
    };
    let link = controls.link();
    let live = match credentials {
        Some((credentials, tier)) => {
            let clock = || Box::new(crate::store::now_ms) as Box<dyn Fn() -> i64 + Send>;
            let client = Client::new(&args.kraken_url, credentials, tier, db, clock())?
                .with_timeout(Duration::from_millis(args.kraken_timeout_ms))?;
            let mut venue =
                KrakenVenue::open(client, &settings.symbols, db, clock()).context("Kraken")?;
            if args.kraken_ws_url != "none" {
                let stream = Executions::start(&args.kraken_ws_url, crate::store::now_ms)?;
                venue = venue.with_stream(stream);
            }
            Some(venue)
        }
        None => None,
    };
    let mode = if live.is_some() { "LIVE" } else { "paper" };
    let mut engine = Engine::open_on(&owner, store.conn(), &sandbox, settings, link, live)?;
    // Served once the engine has published its first snapshot.
    let server = controls.serve(db)?;
    let bridge = telegram.map(|c| controls.telegram(db, c)).transpose()?;
    println!(
        "{mode} run {} on {} ({}); control API on 127.0.0.1:{} — try `keel status --db {}`",
        engine.run_id(),
        args.feeds.join(" "),
        args.speed,
        server.port,
        db.display()
    );
    let scheduler = match evolution {
        Some(schedule) => {
            let night = NightCommand {
                keel: std::env::current_exe().context("this keel's own path")?,
                db: std::path::absolute(db)?,
                config: std::path::absolute(&args.evolve_config)?,
                candidates: candidates::config_file(args.candidates.as_deref())?
                    .map(std::path::absolute)
                    .transpose()?,
                target_dir: args
                    .target_dir
                    .as_deref()
                    .map(std::path::absolute)
                    .transpose()?,
            };
            println!(
                "nightly evolution at {} {} ({})",
                schedule.at,
                schedule.time_zone,
                args.evolve_config.display()
            );
            Some(Scheduler::start(night, schedule, Duration::from_secs(1)))
        }
        None => None,
    };
    let summary = engine.run(&mut feeds)?;
    drop(scheduler);
    drop(bridge);
    drop(engine);
    drop(server);
    print_summary(&summary, db);
    Ok(summary.feed_error.is_none())
}

/// The venue's keys and tier for `--live`, after the confirmation: from
/// `--kraken-keys` (a file only its owner may read) or the environment.
/// No error names a key.
fn live_credentials(args: &RunArgs) -> anyhow::Result<(Credentials, Tier)> {
    if args.venue != "kraken" {
        bail!(
            "--venue {}: the live venue is kraken",
            shown::quoted(&args.venue)
        );
    }
    if !args.real_money {
        bail!(
            "--live trades real money on Kraken: add --i-understand-this-trades-real-money to go on"
        );
    }
    let tier = Tier::parse(&args.kraken_tier).ok_or_else(|| {
        anyhow::anyhow!(
            "--kraken-tier {}: expected starter, intermediate, pro or unlimited",
            shown::quoted(&args.kraken_tier)
        )
    })?;
    let (key, secret) = match &args.kraken_keys {
        Some(path) => read_keys(path)?,
        None => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    anyhow::anyhow!("{name} is not set: give the Kraken keys in KEEL_KRAKEN_KEY and KEEL_KRAKEN_SECRET, or --kraken-keys FILE")
                })
            };
            (var("KEEL_KRAKEN_KEY")?, var("KEEL_KRAKEN_SECRET")?)
        }
    };
    let credentials = Credentials::new(&key, &secret).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((credentials, tier))
}

/// The key and secret in a keys file: two lines, the file readable by its
/// owner only.
fn read_keys(path: &Path) -> anyhow::Result<(String, String)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("--kraken-keys {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "--kraken-keys {}: others may read it (mode {mode:o}); `chmod 600` it",
                path.display()
            );
        }
    }
    if meta.len() > 64 * 1024 {
        bail!(
            "--kraken-keys {}: over 64 KiB, not a keys file",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--kraken-keys {}", path.display()))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(key), Some(secret), None) => Ok((key.to_owned(), secret.to_owned())),
        _ => bail!(
            "--kraken-keys {}: expected two lines, the API key then the private key",
            path.display()
        ),
    }
}

/// What a run says when it ends: its record in the ledger, book by book
/// (strategy, return, drawdown, trades, shadow verdicts), and where its
/// report comes from.
fn print_summary(s: &RunSummary, db: &Path) {
    let how = if s.resumed { "resumed" } else { "new" };
    println!(
        "run {} ({how}): {} bars booked; trading state {}",
        s.run_id, s.bars, s.state
    );
    match crate::run_report::load(db, Some(s.run_id)) {
        Ok(record) => {
            for b in &record.books {
                let engine = s
                    .books
                    .iter()
                    .find(|e| e.slot == b.slot)
                    .map_or(String::new(), |e| {
                        format!(", {} strategy calls on {}", e.calls, e.symbols.join(", "))
                    });
                println!("{}{engine}", crate::run_report::RunRecord::book_line(b));
            }
            println!(
                "the whole record: `keel report run {} --db {}`",
                s.run_id,
                db.display()
            );
        }
        Err(e) => {
            tracing::warn!("the run's record could not be read: {e:#}");
            print_books(s);
        }
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

/// The books as the engine ended them (when the ledger cannot be read).
fn print_books(s: &RunSummary) {
    for b in &s.books {
        println!(
            "{:<20} equity {:>12.2} (start {:.2}, realized {:+.2}, fees {:.2}), {} open position(s), {} signals ({} rejected), {} strategy calls on {}",
            b.slot,
            b.equity,
            b.start_cash,
            b.realized,
            b.fees,
            b.positions.len(),
            b.signals,
            b.rejected,
            b.calls,
            b.symbols.join(", ")
        );
    }
}
