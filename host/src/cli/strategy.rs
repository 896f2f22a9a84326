//! `keel strategy …`: build, inspect, validate and run strategy components.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use keel_model::candles::format_time;
use keel_model::replay::Series;
use keel_model::shown::{fixed, line, number, text};
use keel_model::{Action, Params, Size};

use crate::backtest;
use crate::build_strategy;
use crate::ranges;
use crate::sandbox::{Binding, CompileCache, LoadedStrategy, Metering, Sandbox, timed};
use crate::scaffold;
use crate::validate::{self, ValidationReport};

use super::sandbox;

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
        /// The component (`.wasm`).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every load-time check, a smoke run and a determinism check; exit 1 on failure.
    Validate {
        /// The components (`.wasm`) to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Drive a component over candle files and print its signals.
    Run(StrategyRunArgs),
    /// Start a strategy crate from an example: it builds anywhere (a
    /// workspace of its own, the SDK by path) and has a native unit test.
    New {
        /// The strategy's name, e.g. `my-breakout` (a-z, 0-9, '-').
        name: String,
        /// The example to start from: sma-cross, rsi-reversion, atr-breakout or
        /// blocks (the others' entries and exits, chosen by parameters).
        #[arg(long, default_value = "sma-cross", value_name = "EXAMPLE")]
        from: String,
        /// Where to write it; default `./NAME`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Keel's strategy-sdk crate; default: the one this keel was built from.
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct StrategyRunArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// `[SYMBOL=]FILE` (CSV, freqtrade JSON, Feather or Parquet; .csv.gz and .json.gz too) or `SYMBOL@TF` from the store (repeat for several symbols).
    #[arg(long = "data", required = true, value_name = "[SYMBOL=]CSV")]
    pub data: Vec<String>,
    /// Aggregate each series to bars of this length first, as `keel
    /// backtest --timeframe` does.
    #[arg(long, value_name = "TF", value_parser = super::backtest::timeframe)]
    pub timeframe: Option<keel_model::candles::Timeframe>,
    /// The candle files' columns by role, as `keel backtest --columns` takes them.
    #[arg(long, value_name = "ROLE=COLUMN,…", value_parser = super::backtest::columns)]
    pub columns: Option<keel_model::candles::Columns>,
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

/// `keel strategy …`.
pub(super) fn run(
    command: StrategyCommand,
    db: &Path,
    cache: &CompileCache,
) -> anyhow::Result<bool> {
    match command {
        StrategyCommand::Build {
            crate_dirs,
            target_dir,
        } => {
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
        StrategyCommand::Inspect { file, json } => {
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
        StrategyCommand::Validate { files } => {
            let sandbox = sandbox(Metering::Fuel, cache)?;
            let mut all_passed = true;
            for file in files {
                let report = validate::validate_file(&sandbox, &file);
                print_report(&report);
                all_passed &= report.passed();
            }
            Ok(all_passed)
        }
        StrategyCommand::New {
            name,
            from,
            dir,
            sdk,
        } => {
            scaffold::check_name(&name)?;
            let template = scaffold::template(&from)?;
            let sdk = sdk.or_else(scaffold::default_sdk).context(
                "the strategy-sdk this keel was built from is gone: pass --sdk <keel>/strategy-sdk",
            )?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::write(&dir, &name, template, &sdk)?;
            println!(
                "{}: strategy {name} from {from}
  test:  cargo test --manifest-path {}
  build: keel strategy build {}",
                dir.display(),
                dir.join("Cargo.toml").display(),
                dir.display()
            );
            Ok(true)
        }
        StrategyCommand::Run(args) => {
            let sandbox = sandbox(Metering::Fuel, cache)?;
            run_file(&sandbox, &args, db)?;
            Ok(true)
        }
    }
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

pub(super) fn print_report(report: &ValidationReport) {
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

pub(super) fn run_file(sandbox: &Sandbox, args: &StrategyRunArgs, db: &Path) -> anyhow::Result<()> {
    let loaded = sandbox.load_file(&args.file)?;
    let columns = args.columns.clone().unwrap_or_default();
    backtest::check_columns(&args.data, &columns)?;
    let (data, notes) = backtest::load_whole(&args.data, &columns, db, args.timeframe)?;
    let given: Vec<backtest::Given> = data.iter().map(backtest::Dataset::given).collect();
    backtest::distinct(&given)?;
    let warnings = backtest::mismatches(&loaded.info, &given);
    let series: Vec<Series> = data.into_iter().map(|d| d.series).collect();
    let params = Params::resolve_text(&loaded.info.params, &args.params)
        .with_context(|| format!("{}: bad parameters", loaded.info.name))?;
    let binding = Binding {
        symbols: series.iter().map(|s| s.symbol.clone()).collect(),
        params,
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(&loaded, binding)?;
    // Said once everything is checked: a refusal stays one line.
    for note in notes {
        eprintln!("note: {note}");
    }
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
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
