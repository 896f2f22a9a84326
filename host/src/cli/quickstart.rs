//! `keel quickstart`: the example strategies built, validated and run over
//! the sample data.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::build_strategy;
use crate::sandbox::{CompileCache, Metering};
use crate::validate;

use super::sandbox;
use super::strategy::{StrategyRunArgs, print_report, run_file};

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

pub(super) fn run(args: &QuickstartArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
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
        let run = StrategyRunArgs {
            file,
            data: data.iter().map(|d| with_dir(d, &args.data)).collect(),
            timeframe: None,
            columns: None,
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
