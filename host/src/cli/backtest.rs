//! `keel backtest`: strategies × a parameter grid on candle files or stored
//! series, and walk-forward; the reports printed and written.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use keel_backtester::report::{GridRun, grid_html};
use keel_model::Params;
use keel_model::candles::{Columns, Timeframe};

use crate::backtest;
use crate::ranges;
use crate::risk_limits::RiskConfig;
use crate::sandbox::{CompileCache, Metering};

use super::sandbox;

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Strategy components to test.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// `[SYMBOL=]FILE` (CSV, freqtrade JSON, Feather or Parquet; .csv.gz and .json.gz too) or `SYMBOL@TF` from the store; repeat for several symbols.
    #[arg(long = "data", required = true, value_name = "SOURCE")]
    pub data: Vec<String>,
    /// Aggregate each series to bars of this length first (5m, 15m, 1h, 4h
    /// or 1d from a finer one that divides it): open of the first, highest
    /// high, lowest low, close of the last, volume summed; a bar with a gap
    /// inside is kept and counted, never filled.
    #[arg(long, value_name = "TF", value_parser = timeframe)]
    pub timeframe: Option<Timeframe>,
    /// The candle files' columns by role, for names Keel does not know, as
    /// `keel data import --columns` takes them (for every file of --data):
    /// `time=Zeit,close=Letzter` (roles not named are found by their usual
    /// names; `partial=NAME` names the column that marks partial bars).
    #[arg(long, value_name = "ROLE=COLUMN,…", value_parser = columns)]
    pub columns: Option<Columns>,
    /// Fee per fill, basis points of notional.
    #[arg(long, default_value_t = 10.0, value_parser = ranges::BPS.parser())]
    pub fee_bps: f64,
    /// Slippage per market fill, basis points.
    #[arg(long, default_value_t = 5.0, value_parser = ranges::BPS.parser())]
    pub slippage_bps: f64,
    /// Cap each fill at this share of the bar's volume (0 < x <= 1).
    #[arg(long, value_name = "SHARE", value_parser = ranges::VOLUME_SHARE.parser())]
    pub volume_share: Option<f64>,
    /// Quantities are rounded down to a multiple of this.
    #[arg(long, default_value_t = 1e-8, value_parser = ranges::LOT_SIZE.parser())]
    pub lot_size: f64,
    /// Starting cash, quote currency.
    #[arg(long, default_value_t = 10_000.0, value_parser = ranges::CASH.parser())]
    pub cash: f64,
    /// `NAME=VALUE`, `NAME=a,b,c` or `NAME=from..to:step` (repeatable; a grid runs every combination).
    #[arg(long = "param", value_name = "NAME=VALUES")]
    pub params: Vec<String>,
    /// Write the JSON report here (an array when several runs).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here: the run, or a grid's parameter surface, or a walk-forward's folds (one strategy).
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

pub(super) fn run(args: &BacktestArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    // One strategy, no folds and no page may be one run on stored series:
    // their reading starts now, beside the strategy's loading, so the first
    // bars are there when the run starts. What it finds wrong is said after
    // what is wrong with the strategy, as if it had started later.
    backtest::check_columns(&args.data, &args.columns())?;
    let early = (args.files.len() == 1 && args.walk_forward.is_none() && args.report.is_none())
        .then(|| backtest::stream_data(&args.data, &args.columns(), db, args.timeframe));
    let sandbox = sandbox(Metering::Fuel, cache)?;
    let loaded = args
        .files
        .iter()
        .map(|f| sandbox.load_file(f))
        .collect::<Result<Vec<_>, _>>()?;
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
    // What cannot be written is refused before any run.
    if args.report.is_some() && loaded.len() > 1 {
        bail!(
            "--report draws one strategy's runs; {} strategies were given (use --json for all of them)",
            loaded.len()
        );
    }
    for (path, what) in [(&args.report, "report"), (&args.json, "report")] {
        if let Some(path) = path {
            writable(path)
                .with_context(|| format!("{}: cannot write the {what}", path.display()))?;
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
    // One run reads its series (stored or files) while it runs, aggregated
    // as they are read when asked; anything else (a grid, folds, a page
    // that draws the closes) loads the data whole first, and so does a
    // run on a file of daily bars.
    let one_streamed_run = jobs.len() == 1 && args.walk_forward.is_none() && args.report.is_none();
    let streamed = match (one_streamed_run, early) {
        (true, Some(early)) => early?,
        (true, None) => backtest::stream_data(&args.data, &args.columns(), db, args.timeframe)?,
        // A grid after all: its readers stop when their bars are dropped.
        (false, _) => None,
    };
    let streamed = match streamed {
        Some(streamed) => backtest::settle(streamed)?,
        None => None,
    };
    // A streamed run's notes come with its report.
    let (data, notes) = match streamed {
        Some(_) => (Vec::new(), Vec::new()),
        None => backtest::load_whole(&args.data, &args.columns(), db, args.timeframe)?,
    };
    let notes = std::cell::RefCell::new(notes);
    let given: Vec<backtest::Given> = match &streamed {
        Some(streams) => streams.iter().map(backtest::Streamed::given).collect(),
        None => data.iter().map(backtest::Dataset::given).collect(),
    };
    backtest::distinct(&given)?;
    // Said once the work is done: a refusal stays one line.
    let warnings_of = |given: &[backtest::Given]| -> Vec<String> {
        (loaded.iter())
            .flat_map(|s| backtest::mismatches(&s.info, given))
            .collect()
    };
    let warnings = std::cell::RefCell::new(warnings_of(&given));
    drop(given);
    let warn = || {
        for note in notes.borrow().iter() {
            eprintln!("note: {note}");
        }
        for warning in warnings.borrow().iter() {
            eprintln!("warning: {warning}");
        }
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
        warn();
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
        if let Some(path) = &args.report {
            std::fs::write(path, report.html())
                .with_context(|| format!("{}: cannot write the report", path.display()))?;
        }
        return Ok(true);
    }
    let quiet_progress = jobs.len() == 1;
    let mut bar = ProgressBar::new("backtests");
    // A refused combination is named once, with the results, not here.
    let progress =
        |done: usize, total: usize, _: usize, _: &anyhow::Result<keel_backtester::Report>| {
            if !quiet_progress {
                bar.update(done, total);
            }
        };
    let results = match (streamed, jobs.as_slice()) {
        (Some(streams), [job]) => match backtest::run_streamed(&sandbox, job, streams, &config) {
            Ok(Some((report, made))) => {
                notes.borrow_mut().extend(made);
                vec![Ok(report)]
            }
            // A file's whole is not what its first bars said (its bar
            // length): the run is made again on the data loaded whole.
            Ok(None) => {
                let (data, made) =
                    backtest::load_whole(&args.data, &args.columns(), db, args.timeframe)?;
                *notes.borrow_mut() = made;
                let given: Vec<_> = data.iter().map(backtest::Dataset::given).collect();
                *warnings.borrow_mut() = warnings_of(&given);
                backtest::run_all(&sandbox, &jobs, &data, &config, progress)
            }
            Err(e) => vec![Err(e)],
        },
        _ => backtest::run_all(&sandbox, &jobs, &data, &config, progress),
    };
    if !quiet_progress {
        bar.finish();
    }
    if results.iter().any(Result::is_ok) {
        warn();
    }
    // A combination the strategy refuses (its init says no) is skipped and
    // named; the command fails only when nothing could run.
    let mut reports = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    let mut grid = Vec::with_capacity(results.len());
    for (job, result) in jobs.iter().zip(results) {
        let what = || format!("{} {}", job.strategy.info.name, params_text(&job.params));
        let params = backtest::params_entries(&job.params);
        match result {
            Ok(report) => {
                grid.push(GridRun {
                    params,
                    outcome: Ok(report.metrics.clone()),
                });
                reports.push(report);
            }
            Err(e) if jobs.len() == 1 => return Err(e.context(what())),
            Err(e) => {
                grid.push(GridRun {
                    params,
                    outcome: Err(format!("{e:#}")),
                });
                refused.push(format!("{}: {e}", what()));
            }
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
    if let Some(path) = &args.report
        && let ([strategy], true) = (loaded.as_slice(), jobs.len() > 1)
    {
        let page = grid_html(
            &format!("{} {}", strategy.info.name, strategy.info.version),
            &strategy.hash.to_hex(),
            &reports[0].data,
            &grid,
        );
        std::fs::write(path, page)
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
    } else if let Some(path) = &args.report
        && let [report] = reports.as_slice()
    {
        // Each symbol's closes at their close times, as the equity is.
        let prices: Vec<keel_backtester::report::PriceSeries> = data
            .iter()
            .map(|d| keel_backtester::report::PriceSeries {
                symbol: d.series.symbol.clone(),
                closes: (d.series.candles.iter())
                    .map(|c| (c.time_ms + d.series.bar_ms, c.close))
                    .collect(),
            })
            .collect();
        std::fs::write(path, report.html_with(&prices))
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

/// `--timeframe`: a bar length Keel knows (whether candles can be
/// aggregated to it is said with the data).
impl BacktestArgs {
    /// `--columns`, or none named.
    fn columns(&self) -> Columns {
        self.columns.clone().unwrap_or_default()
    }
}

/// `--columns ROLE=COLUMN,…`.
pub(super) fn columns(text: &str) -> Result<Columns, String> {
    if text.trim().is_empty() {
        return Err("name at least one ROLE=COLUMN, e.g. time=Date".into());
    }
    Columns::parse(text)
}

pub(super) fn timeframe(text: &str) -> Result<Timeframe, String> {
    Timeframe::parse(text).ok_or_else(|| {
        format!(
            "unknown timeframe (bars can be aggregated to {})",
            keel_model::candles::resample::TARGETS
                .map(|t| t.as_str())
                .join(", ")
        )
    })
}

/// A one-line progress bar on a terminal; plain lines elsewhere (logs, CI).
/// Progress on stderr: one bar redrawn in place on a terminal; off one
/// (a log, a pipe), a line at each tenth of the way.
struct ProgressBar {
    label: &'static str,
    tty: bool,
    /// The last tenth a line was written for.
    tenth: Option<usize>,
}

impl ProgressBar {
    fn new(label: &'static str) -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            label,
            tty: std::io::stderr().is_terminal(),
            tenth: None,
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
            let tenth = (done * 10).checked_div(total).unwrap_or(10).min(10);
            if self.tenth.is_none_or(|last| tenth > last) {
                self.tenth = Some(tenth);
                eprintln!("{} {done}/{total} ({}%)", self.label, tenth * 10);
            }
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Whether `path` can be written, without changing it: an existing file is
/// opened for writing (not truncated), a new one made and removed.
fn writable(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
    } else {
        std::fs::File::create(path)?;
        std::fs::remove_file(path)
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
