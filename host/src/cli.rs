//! The `keel` command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use keel_model::candles::{self, format_time};
use keel_model::replay::Series;
use keel_model::shown::{fixed, line, number, text};
use keel_model::{Action, Params, Size, Timeframe, synth};

use crate::backtest;
use crate::build_strategy;
use crate::ranges;
use crate::risk_limits::RiskConfig;
use crate::sandbox::{
    Binding, CompileCache, LoadedStrategy, Metering, Sandbox, SandboxConfig, timed,
};
use crate::store::Store;
use crate::validate::{self, ValidationReport};

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Hot-reloadable host for sandboxed WebAssembly trading strategies"
)]
pub struct Cli {
    /// Where compiled components are cached (default: $KEEL_CACHE_DIR, else ~/.cache/keel).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may take on disk; the least recently used
    /// code goes first.
    #[arg(
        long,
        global = true,
        env = "KEEL_CACHE_MAX_MB",
        default_value_t = crate::sandbox::DEFAULT_DISK_CACHE_BYTES >> 20,
        value_name = "MB",
        value_parser = ranges::CACHE_MAX_MB.parser()
    )]
    pub cache_max_mb: u64,
    /// The SQLite database (candles and the ledger).
    #[arg(
        long,
        global = true,
        env = "KEEL_DB",
        default_value = "keel.db",
        value_name = "FILE"
    )]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, inspect, validate and run strategy components.
    #[command(subcommand)]
    Strategy(StrategyCommand),
    /// Import, generate and list candle data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Backtest strategies (× a parameter grid) on candle files or stored series.
    Backtest(BacktestArgs),
    /// Build the example strategies, validate them and run each over the
    /// sample data: the whole path from source to signals, on built-in defaults.
    Quickstart(QuickstartArgs),
    /// Trade strategies on a feed: `--paper` books every order and fill in
    /// the ledger through a paper exchange. Serves a control API on loopback.
    Run(crate::operate::PaperArgs),
    /// Show a running `keel run`: state, equity, positions per book.
    Status(crate::operate::ShowArgs),
    /// Show the open positions of a running `keel run`.
    Positions(crate::operate::ShowArgs),
    /// Show the latest closed trades of a running `keel run`.
    Trades(crate::operate::ShowArgs),
    /// Reduce-only: no new exposure until `keel resume`.
    Pause(crate::operate::ReasonArgs),
    /// Back to ACTIVE trading.
    Resume(crate::operate::ReasonArgs),
    /// Kill switch: stop every strategy, block and cancel orders, close all
    /// positions and halt.
    Kill(crate::operate::ReasonArgs),
    /// Submit, judge, promote and roll back candidate strategies.
    Candidate(crate::operate::CandidateArgs),
    /// Hot reload while writing a strategy: rebuild, validate and swap on
    /// every save, over a candle file or into a paper engine.
    Dev(crate::dev::DevArgs),
    /// Internal: the worker a host starts for a background optimising
    /// compile (component on stdin, compiled code on stdout).
    #[command(name = "__optimize", hide = true)]
    Optimize {
        /// `fuel` or `wall-clock`, as the host's sandbox.
        #[arg(long, value_parser = parse_metering)]
        metering: Metering,
        #[arg(long)]
        max_stack_bytes: usize,
    },
}

fn parse_metering(text: &str) -> Result<Metering, String> {
    match text {
        "fuel" => Ok(Metering::Fuel),
        "wall-clock" => Ok(Metering::WallClock),
        other => Err(format!("{other:?} is not fuel or wall-clock")),
    }
}

#[derive(Debug, Subcommand)]
pub enum StrategyCommand {
    /// Build strategy crates into wasm32-wasip2 components.
    Build {
        /// Each crate's directory (holding Cargo.toml), e.g. `strategies/*`.
        #[arg(required = true)]
        crate_dirs: Vec<PathBuf>,
        /// Cargo target directory to build in.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Show a component's hash, size, describe() and imports.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every load-time check, a smoke run and a determinism check; exit 1 on failure.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Drive a component over candle files and print its signals.
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Validate a candle file (CSV or freqtrade JSON) and store it.
    Import {
        /// `time,open,high,low,close,volume` CSV (RFC 3339 or epoch ms), or `.json`.
        file: PathBuf,
        #[arg(long)]
        symbol: String,
        /// Bar length: 1m 5m 15m 1h 4h 1d 1w 1M.
        #[arg(long)]
        timeframe: String,
        /// Overwrite stored bars whose values differ (otherwise refused).
        #[arg(long)]
        replace: bool,
    },
    /// Write seeded random-walk candles (for scale and speed tests).
    Synth {
        #[arg(long, default_value = "SYN/USD")]
        symbol: String,
        #[arg(long, default_value_t = 100_000, value_parser = ranges::SYNTH_BARS.parser())]
        bars: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "1m")]
        timeframe: String,
        /// Open time of the first bar (RFC 3339 or epoch ms).
        #[arg(long, default_value = "2024-01-01T00:00:00Z")]
        start: String,
        #[arg(long, default_value_t = 100.0, value_parser = ranges::SYNTH_PRICE.parser())]
        price: f64,
        /// Per-bar volatility (0.01 = 1%).
        #[arg(long, default_value_t = 0.01, value_parser = ranges::SYNTH_SIGMA.parser())]
        sigma: f64,
        /// Write CSV here; without it the candles go into the database.
        #[arg(long, value_name = "CSV")]
        out: Option<PathBuf>,
    },
    /// List the stored series.
    List,
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Strategy components to test.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// `[SYMBOL=]FILE` (CSV or .json) or `SYMBOL@TF` from the store; repeat for several symbols.
    #[arg(long = "data", required = true, value_name = "SOURCE")]
    pub data: Vec<String>,
    /// Fee per fill, basis points of notional.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true, value_parser = ranges::BPS.parser())]
    pub fee_bps: f64,
    /// Slippage per market fill, basis points.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true, value_parser = ranges::BPS.parser())]
    pub slippage_bps: f64,
    /// Cap each fill at this share of the bar's volume (0 < x <= 1).
    #[arg(long, value_name = "SHARE", value_parser = ranges::VOLUME_SHARE.parser())]
    pub volume_share: Option<f64>,
    /// Quantities are rounded down to a multiple of this.
    #[arg(long, default_value_t = 1e-8, value_parser = ranges::LOT_SIZE.parser())]
    pub lot_size: f64,
    /// Starting cash, quote currency.
    #[arg(long, default_value_t = 10_000.0, allow_negative_numbers = true, value_parser = ranges::CASH.parser())]
    pub cash: f64,
    /// `NAME=VALUE`, `NAME=a,b,c` or `NAME=from..to:step` (repeatable; a grid runs every combination).
    #[arg(long = "param", value_name = "NAME=VALUES")]
    pub params: Vec<String>,
    /// Write the JSON report here (an array when several runs).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here (one run only).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Walk forward over K folds: pick the grid's best in-sample, test it on the next window.
    #[arg(long, value_name = "K", value_parser = ranges::WALK_FORWARD_FOLDS.parser())]
    pub walk_forward: Option<usize>,
    /// The pre-trade limits of a `risk_limits.toml` (as `keel run` takes);
    /// the defaults otherwise. Halts apply to paper and live trading only.
    #[arg(long, value_name = "FILE")]
    pub risk_limits: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub file: PathBuf,
    /// `[SYMBOL=]FILE` (CSV or .json) or `SYMBOL@TF` from the store (repeat for several symbols).
    #[arg(long = "data", required = true, value_name = "[SYMBOL=]CSV")]
    pub data: Vec<String>,
    /// Parameter override `NAME=VALUE` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Starting cash of the replay's book (quote currency).
    #[arg(long, default_value_t = 10_000.0, value_parser = ranges::CASH.parser())]
    pub cash: f64,
    /// Print only the summary, not every signal.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// The Keel source tree (holding strategies/).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Sample data directory.
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Cargo target directory to build the examples in.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
}

/// Runs a parsed command; `Ok(false)` means "ran, but the verdict is no" (exit 1).
pub fn run(cli: Cli) -> anyhow::Result<bool> {
    let cache = &CompileCache {
        dir: cli.cache_dir.or_else(default_cache_dir),
        max_bytes: cli.cache_max_mb.saturating_mul(1 << 20),
    };
    match cli.command {
        Command::Optimize {
            metering,
            max_stack_bytes,
        } => {
            crate::sandbox::serve_optimizer(
                metering,
                max_stack_bytes,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            )?;
            Ok(true)
        }
        Command::Strategy(StrategyCommand::Build {
            crate_dirs,
            target_dir,
        }) => {
            let mut files = Vec::new();
            for dir in &crate_dirs {
                files.extend(build_strategy::build(dir, target_dir.as_deref())?);
            }
            let sandbox = sandbox(Metering::Fuel, cache)?;
            let mut all_loaded = true;
            for file in files {
                match sandbox.load_file(&file) {
                    Ok(l) => println!(
                        "{}  {}  {} {}",
                        file.display(),
                        l.hash,
                        l.info.name,
                        l.info.version
                    ),
                    Err(e) => {
                        println!("{}  built, but it does not load: {e}", file.display());
                        all_loaded = false;
                    }
                }
            }
            Ok(all_loaded)
        }
        Command::Strategy(StrategyCommand::Inspect { file, json }) => {
            let sandbox = sandbox(Metering::Fuel, cache)?;
            let (loaded, took) = timed(|| sandbox.load_file(&file));
            let loaded = loaded?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inspect_json(&loaded))?);
            } else {
                print_inspect(&loaded, took);
            }
            Ok(true)
        }
        Command::Strategy(StrategyCommand::Validate { files }) => {
            let sandbox = sandbox(Metering::Fuel, cache)?;
            let mut all_passed = true;
            for file in files {
                let report = validate::validate_file(&sandbox, &file);
                print_report(&report);
                all_passed &= report.passed();
            }
            Ok(all_passed)
        }
        Command::Strategy(StrategyCommand::Run(args)) => {
            let sandbox = sandbox(Metering::Fuel, cache)?;
            run_file(&sandbox, &args, &cli.db)?;
            Ok(true)
        }
        Command::Data(command) => data(command, &cli.db),
        Command::Backtest(args) => backtest(&args, &cli.db, cache),
        Command::Quickstart(args) => quickstart(&args, &cli.db, cache),
        Command::Run(args) => crate::operate::run(&args, &cli.db, cache),
        Command::Status(args) => crate::operate::status(&args, &cli.db),
        Command::Positions(args) => crate::operate::positions(&args, &cli.db),
        Command::Trades(args) => crate::operate::trades(&args, &cli.db),
        Command::Pause(args) => crate::operate::command("pause", &args, &cli.db),
        Command::Resume(args) => crate::operate::command("resume", &args, &cli.db),
        Command::Kill(args) => crate::operate::command("kill", &args, &cli.db),
        Command::Candidate(args) => crate::operate::candidate(&args, &cli.db, cache),
        Command::Dev(args) => crate::dev::run(&args, &cli.db, cache),
    }
}

fn backtest(args: &BacktestArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    let sandbox = sandbox(Metering::Fuel, cache)?;
    let loaded = args
        .files
        .iter()
        .map(|f| sandbox.load_file(f))
        .collect::<Result<Vec<_>, _>>()?;
    let data = backtest::load_data(&args.data, db, &loaded[0].info.symbols)?;
    let mut jobs = Vec::new();
    for strategy in &loaded {
        for params in backtest::expand_grid(&strategy.info.params, &args.params)
            .with_context(|| format!("{}: bad parameters", strategy.info.name))?
        {
            jobs.push(backtest::Job {
                strategy,
                params,
                window: None,
            });
        }
    }
    let risk = match &args.risk_limits {
        Some(path) => RiskConfig::load(path).map_err(anyhow::Error::msg)?,
        None => RiskConfig::default(),
    };
    let config = keel_backtester::BacktestConfig {
        cash: args.cash,
        fills: keel_backtester::fills::FillModel {
            fee_bps: args.fee_bps,
            slippage_bps: args.slippage_bps,
            max_volume_share: args.volume_share,
            lot_size: args.lot_size,
        },
        limits: risk.base_limits(),
        min_orders: risk.min_orders(),
        // The reports count signals and fills; keeping each one would make
        // memory grow with the data.
        record_signals: false,
        record_fills: false,
    };
    if let Some(folds) = args.walk_forward {
        let [strategy] = loaded.as_slice() else {
            bail!(
                "--walk-forward takes one strategy; {} were given",
                loaded.len()
            );
        };
        let grid: Vec<Params> = jobs.iter().map(|j| j.params.clone()).collect();
        let mut bar = ProgressBar::new("walk-forward");
        let report = backtest::walk_forward(
            &sandbox,
            strategy,
            &grid,
            &data,
            &config,
            folds,
            |done, total| bar.update(done, total),
        )?;
        bar.finish();
        println!(
            "{:<5} {:<43} {:<40} {:>9} {:>10} {:>8}",
            "fold",
            "out-of-sample window",
            "chosen params",
            "IS Sharpe",
            "OOS return",
            "OOS trades"
        );
        for f in &report.folds {
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| format!("{}={}", p.name, p.value))
                .collect();
            println!(
                "{:<5} {:<43} {:<40} {:>9} {:>9.2}% {:>8}",
                f.fold,
                format!("{} .. {}", f.out_of_sample.0, f.out_of_sample.1),
                params.join(" "),
                f.in_sample_metrics
                    .sharpe
                    .map_or("-".into(), |s| format!("{s:.2}")),
                f.out_of_sample_metrics.total_return * 100.0,
                f.out_of_sample_metrics.trades
            );
        }
        println!(
            "out-of-sample return, compounded over {} folds: {:+.2}%",
            report.folds.len(),
            report.out_of_sample_return * 100.0
        );
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("{}: cannot write the report", path.display()))?;
        }
        return Ok(true);
    }
    let quiet_progress = jobs.len() == 1;
    let mut bar = ProgressBar::new("backtests");
    let progress =
        |done: usize, total: usize, i: usize, result: &anyhow::Result<keel_backtester::Report>| {
            if quiet_progress {
                return;
            }
            if bar.tty {
                bar.update(done, total);
                return;
            }
            let what = match result {
                Ok(r) => format!(
                    "return {:+.2}%, {} trades",
                    r.metrics.total_return * 100.0,
                    r.metrics.trades
                ),
                Err(e) => format!("failed: {e}"),
            };
            eprintln!(
                "[{done:>4}/{total}] {} {}: {what}",
                jobs[i].strategy.info.name,
                params_text(&jobs[i].params)
            );
        };
    let results = backtest::run_all(&sandbox, &jobs, &data, &config, progress);
    if !quiet_progress {
        bar.finish();
    }
    // A combination the strategy refuses (its init says no) is skipped and
    // named; the command fails only when nothing could run.
    let mut reports = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for (job, result) in jobs.iter().zip(results) {
        let what = || format!("{} {}", job.strategy.info.name, params_text(&job.params));
        match result {
            Ok(report) => reports.push(report),
            Err(e) if jobs.len() == 1 => return Err(e.context(what())),
            Err(e) => refused.push(format!("{}: {e}", what())),
        }
    }
    for line in &refused {
        println!("skipped {line}");
    }
    if reports.is_empty() {
        bail!("none of the {} runs could start", jobs.len());
    }
    if let [report] = reports.as_slice() {
        print!("{}", report.table());
        const SHOWN: usize = 5;
        for (what, issues) in [("error", &report.errors), ("rejected", &report.rejected)] {
            for issue in issues.iter().take(SHOWN) {
                println!("  {what} at {}: {}", issue.time, issue.message);
            }
            if issues.len() > SHOWN {
                let more = issues.len() - SHOWN;
                println!("  … and {more} more {what} (every one in --json and --report)");
            }
        }
    } else {
        println!(
            "{:<16} {:<36} {:>10} {:>8} {:>9} {:>7}",
            "strategy", "params", "return", "Sharpe", "max DD", "trades"
        );
        for r in &reports {
            let params: Vec<String> = r
                .strategy
                .params
                .iter()
                .map(|p| format!("{}={}", p.name, p.value))
                .collect();
            println!(
                "{:<16} {:<36} {:>9.2}% {:>8} {:>8.2}% {:>7}",
                r.strategy.name,
                params.join(" "),
                r.metrics.total_return * 100.0,
                r.metrics.sharpe.map_or("-".into(), |s| format!("{s:.2}")),
                r.metrics.max_drawdown * 100.0,
                r.metrics.trades
            );
        }
    }
    if let Some(path) = &args.report {
        let [report] = reports.as_slice() else {
            bail!(
                "--report draws one run; this was {} runs (use --json for all of them)",
                reports.len()
            );
        };
        std::fs::write(path, report.html())
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = match reports.as_slice() {
            [one] => one.to_json(),
            many => format!(
                "[\n{}\n]",
                many.iter()
                    .map(|r| r.to_json())
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
        };
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    Ok(true)
}

/// A one-line progress bar on a terminal; plain lines elsewhere (logs, CI).
struct ProgressBar {
    label: &'static str,
    tty: bool,
}

impl ProgressBar {
    fn new(label: &'static str) -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            label,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        if self.tty {
            let width = 30;
            let filled = (done * width)
                .checked_div(total)
                .unwrap_or(width)
                .min(width);
            eprint!(
                "\r{} [{}{}] {done}/{total}",
                self.label,
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
        } else {
            eprintln!("{} {done}/{total}", self.label);
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn params_text(params: &Params) -> String {
    params
        .values()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn timeframe(text: &str) -> anyhow::Result<Timeframe> {
    Timeframe::parse(text)
        .with_context(|| format!("timeframe '{text}' is not one of 1m 5m 15m 1h 4h 1d 1w 1M"))
}

fn data(command: DataCommand, db: &Path) -> anyhow::Result<bool> {
    match command {
        DataCommand::Import {
            file,
            symbol,
            timeframe: tf,
            replace,
        } => {
            let tf = timeframe(&tf)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?;
            let candles = candles::read_file(&file)?;
            if let Some(spacing) = candles::typical_spacing_ms(&candles)
                && !tf.matches_spacing(spacing)
            {
                bail!(
                    "{}: bars are mostly {} s apart, which is not --timeframe {tf}",
                    file.display(),
                    spacing / 1000
                );
            }
            let mut store = Store::open(db)?;
            let source = file.display().to_string();
            let report = store.import_candles(&symbol, tf, &candles, &source, &bytes, replace)?;
            println!(
                "imported {} {} from {}: {} bars ({} new, {} unchanged, {} replaced), {} .. {}",
                report.symbol,
                report.timeframe,
                source,
                report.bars,
                report.inserted,
                report.unchanged,
                report.replaced,
                format_time(candles[0].time_ms),
                format_time(candles[candles.len() - 1].time_ms),
            );
            let missing: u64 = report.gaps.iter().map(|g| g.missing).sum();
            match report.gaps.iter().max_by_key(|g| g.missing) {
                None => println!("no gaps"),
                Some(largest) => println!(
                    "{} gaps, {missing} missing bars (not filled); largest: {} bars after {}",
                    report.gaps.len(),
                    largest.missing,
                    format_time(largest.after_ms)
                ),
            }
            Ok(true)
        }
        DataCommand::Synth {
            symbol,
            bars,
            seed,
            timeframe: tf,
            start,
            price,
            sigma,
            out,
        } => {
            let tf = timeframe(&tf)?;
            let start_ms = candles::parse_time(&start).map_err(anyhow::Error::msg)?;
            let candles = synth::random_walk(seed, bars, start_ms, tf.duration_ms(), price, sigma);
            // A wild enough walk leaves what the ledger books (or the times
            // Keel accepts): the same rule as every imported candle.
            for (i, c) in candles.iter().enumerate() {
                candles::check_candle(c).map_err(|e| {
                    anyhow::anyhow!(
                        "synth bar {}: {e} (try a smaller --sigma or fewer --bars)",
                        i + 1
                    )
                })?;
            }
            match out {
                Some(path) => {
                    candles::write_csv(&path, &candles)?;
                    println!(
                        "wrote {bars} {tf} bars of {symbol} (seed {seed}) to {}",
                        path.display()
                    );
                }
                None => {
                    let mut store = Store::open(db)?;
                    let source = format!("synth:seed={seed}");
                    let report = store.import_candles(
                        &symbol,
                        tf,
                        &candles,
                        &source,
                        source.as_bytes(),
                        false,
                    )?;
                    println!(
                        "stored {} {tf} bars of {symbol} (seed {seed}) in {}",
                        report.inserted,
                        db.display()
                    );
                }
            }
            Ok(true)
        }
        DataCommand::List => {
            let store = Store::open(db)?;
            let series = store.list_series()?;
            if series.is_empty() {
                println!("no candles stored in {}", db.display());
            }
            for s in series {
                println!(
                    "{:<12} {:<4} {:>9} bars  {} .. {}",
                    s.symbol,
                    s.timeframe,
                    s.bars,
                    format_time(s.first_ms),
                    format_time(s.last_ms)
                );
            }
            Ok(true)
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KEEL_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("keel"))
}

fn sandbox(metering: Metering, cache: &CompileCache) -> anyhow::Result<Sandbox> {
    Sandbox::new(cache.sandbox_config(SandboxConfig {
        metering,
        ..SandboxConfig::default()
    }))
    .context("failed to set up the wasm sandbox")
}

fn print_inspect(loaded: &LoadedStrategy, took: std::time::Duration) {
    let info = &loaded.info;
    println!("file       {}", loaded.origin.display());
    println!("sha256     {}", loaded.hash);
    println!("size       {} bytes", loaded.size);
    println!("strategy   {} {}", info.name, text(&info.version));
    println!("contract   keel:strategy@{}", loaded.contract);
    if !info.description.is_empty() {
        println!("about      {}", line(&info.description));
    }
    println!("symbols    {}", line(&info.symbols.join(", ")));
    println!(
        "timeframe  {}    warm-up {} bars",
        info.timeframe, info.warmup_bars
    );
    for (i, p) in info.params.iter().enumerate() {
        let range = match (p.min, p.max) {
            (None, None) => String::new(),
            (min, max) => format!(
                "[{}, {}]",
                min.map_or("-".into(), |v| v.to_string()),
                max.map_or("-".into(), |v| v.to_string())
            ),
        };
        let head = if i == 0 { "params" } else { "" };
        println!(
            "{head:<10} {:<14} {:<5} {:<8} {:<14} {}",
            p.name,
            p.kind,
            p.default,
            range,
            line(&p.description)
        );
    }
    for (i, import) in loaded.imports.iter().enumerate() {
        let head = if i == 0 { "imports" } else { "" };
        println!("{head:<10} {import}");
    }
    let source = if loaded.from_cache {
        "compile cache"
    } else {
        "fresh compile"
    };
    println!(
        "loaded     in {:.1} ms ({source})",
        took.as_secs_f64() * 1e3
    );
}

fn inspect_json(loaded: &LoadedStrategy) -> serde_json::Value {
    let info = &loaded.info;
    serde_json::json!({
        "file": loaded.origin.display().to_string(),
        "sha256": loaded.hash.to_hex(),
        "size": loaded.size,
        "name": info.name,
        "version": info.version,
        "contract": loaded.contract,
        "description": info.description,
        "symbols": info.symbols,
        "timeframe": info.timeframe,
        "warmup_bars": info.warmup_bars,
        "params": info.params.iter().map(|p| serde_json::json!({
            "name": p.name,
            "kind": p.kind.to_string(),
            "default": p.default.to_string(),
            "min": p.min,
            "max": p.max,
            "description": p.description,
        })).collect::<Vec<_>>(),
        "imports": loaded.imports,
    })
}

fn print_report(report: &ValidationReport) {
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    let name = report
        .info
        .as_ref()
        .map_or_else(String::new, |i| format!(" ({} {})", i.name, i.version));
    println!("{verdict}  {}{name}", report.origin);
    if let Some(hash) = report.hash {
        println!("      sha256 {hash}");
    }
    for check in &report.checks {
        match &check.outcome {
            Ok(detail) => println!("  ok    {:<12} {detail}", check.name),
            Err(reason) => println!("  FAIL  {:<12} {reason}", check.name),
        }
    }
}

pub fn run_file(sandbox: &Sandbox, args: &RunArgs, db: &Path) -> anyhow::Result<()> {
    let loaded = sandbox.load_file(&args.file)?;
    let series: Vec<Series> = backtest::load_data(&args.data, db, &loaded.info.symbols)?
        .into_iter()
        .map(|d| d.series)
        .collect();
    let params = Params::resolve_text(&loaded.info.params, &args.params)
        .with_context(|| format!("{}: bad parameters", loaded.info.name))?;
    let binding = Binding {
        symbols: series.iter().map(|s| s.symbol.clone()).collect(),
        params,
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(&loaded, binding)?;
    let config = keel_backtester::BacktestConfig {
        cash: args.cash,
        ..keel_backtester::BacktestConfig::default()
    };
    let outcome = keel_backtester::run(&mut instance, &series, &config);
    if !args.quiet {
        for (time, s) in &outcome.signals {
            let size = match (s.action, s.size) {
                (Action::Close, _) => String::new(),
                (_, Size::FractionOfEquity(f)) => format!("{} of equity", number(f)),
                (_, Size::Quote(q)) => format!("{} quote", number(q)),
                (_, Size::Base(b)) => format!("{} base", number(b)),
            };
            let tag = if s.tag.is_empty() {
                String::new()
            } else {
                format!("[{}]", text(&s.tag))
            };
            println!(
                "{}  {:<10} {:<10} {:<9} {:<22} {}",
                format_time(*time),
                s.action.as_str(),
                text(&s.symbol),
                tag,
                size,
                text(&s.reason)
            );
        }
        // Refused by the sandbox's checks, by risk, or at fill time.
        for r in &outcome.rejected {
            println!(
                "{}  REJECTED {} {}: {}",
                format_time(r.time_ms),
                r.signal.action.as_str(),
                text(&r.signal.symbol),
                line(&r.reason)
            );
        }
        const SHOWN: usize = 10;
        for (time, e) in outcome.errors.iter().take(SHOWN) {
            println!("{}  ERROR {}", format_time(*time), line(e));
        }
        if outcome.errors.len() > SHOWN {
            println!("… and {} more errors", outcome.errors.len() - SHOWN);
        }
    }
    let stats = instance.stats();
    let rejected = outcome.rejected.len();
    println!(
        "{}: {} bars on {} symbol(s), {} signals ({} rejected), {} fills, {} trades, {} errors, {} traps; equity {} -> {} (fees {} bps, slippage {} bps)",
        instance.label(),
        outcome.steps,
        series.len(),
        outcome.signal_count,
        rejected,
        outcome.fills.len(),
        outcome.trades.len(),
        outcome.errors.len(),
        stats.traps,
        fixed(args.cash, 2),
        fixed(outcome.equity_final, 2),
        config.fills.fee_bps,
        config.fills.slippage_bps
    );
    Ok(())
}

fn quickstart(args: &QuickstartArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    let examples = [
        ("sma-cross", vec!["BTC/USD=UNITTEST_BTC-1m.csv"]),
        ("rsi-reversion", vec!["BTC/USD=UNITTEST_BTC-1m.csv"]),
        (
            "atr-breakout",
            vec![
                "ETH/BTC=crypto-5m/ETH_BTC-5m.csv",
                "LTC/BTC=crypto-5m/LTC_BTC-5m.csv",
                "XMR/BTC=crypto-5m/XMR_BTC-5m.csv",
            ],
        ),
    ];
    if !args.data.is_dir() {
        bail!(
            "{}: sample data directory not found (pass --data)",
            args.data.display()
        );
    }
    let sandbox = sandbox(Metering::Fuel, cache)?;
    let mut all_passed = true;
    for (name, data) in examples {
        let crate_dir = args.repo.join("strategies").join(name);
        println!("== {name}: build");
        let file = build_strategy::build(&crate_dir, args.target_dir.as_deref())?
            .into_iter()
            .next()
            .context("no component built")?;
        println!("== {name}: validate");
        let report = validate::validate_file(&sandbox, &file);
        print_report(&report);
        all_passed &= report.passed();
        println!("== {name}: run over sample data");
        let run = RunArgs {
            file,
            data: data.iter().map(|d| with_dir(d, &args.data)).collect(),
            params: vec![],
            cash: 10_000.0,
            quiet: true,
        };
        run_file(&sandbox, &run, db)?;
    }
    Ok(all_passed)
}

fn with_dir(spec: &str, dir: &Path) -> String {
    match spec.split_once('=') {
        Some((symbol, file)) => format!("{symbol}={}", dir.join(file).display()),
        None => dir.join(spec).display().to_string(),
    }
}
