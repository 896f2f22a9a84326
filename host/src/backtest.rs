//! `keel backtest`: strategies × parameter grid × data, run across cores with
//! the backtester engine, each call fuel-metered so runs are reproducible.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};

use keel_backtester::report::{DataRef, ParamEntry, StrategyRef, candles_sha256};
use keel_backtester::{BacktestConfig, Report};
use keel_model::candles::{self, format_time};
use keel_model::replay::Series;
use keel_model::{ParamKind, ParamSpec, Params, Timeframe};

use crate::sandbox::{Binding, LoadedStrategy, Metering, Sandbox};
use crate::store::Store;

/// One series to test on, with what the report says about it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub series: Series,
    pub reference: DataRef,
}

/// `--data` values: `[SYMBOL=]FILE` (CSV or `.json`) or `SYMBOL@TF` from the store.
pub fn load_data(
    specs: &[String],
    db: &Path,
    default_symbols: &[String],
) -> anyhow::Result<Vec<Dataset>> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let (symbol, candles, source, bar_ms) = if let Some((symbol, tf)) = spec.split_once('@')
            && !Path::new(spec).exists()
        {
            let tf = Timeframe::parse(tf)
                .with_context(|| format!("--data {spec}: unknown timeframe '{tf}'"))?;
            let store = Store::open(db)?;
            let candles = store.load_candles(symbol, tf, None, None)?;
            if candles.is_empty() {
                bail!(
                    "--data {spec}: no {symbol} {tf} candles in {} (import them with keel data import)",
                    db.display()
                );
            }
            (
                symbol.to_owned(),
                candles,
                format!("store:{spec}"),
                tf.duration_ms(),
            )
        } else {
            let (symbol, path) = match spec.split_once('=') {
                Some((s, p)) => (s.to_owned(), PathBuf::from(p)),
                None => {
                    let path = PathBuf::from(spec);
                    let symbol = default_symbols.get(i).cloned().unwrap_or_else(|| {
                        path.file_stem().map_or_else(
                            || format!("SYMBOL{i}"),
                            |s| s.to_string_lossy().into_owned(),
                        )
                    });
                    (symbol, path)
                }
            };
            let candles = candles::read_file(&path)?;
            let bar_ms = candles::typical_spacing_ms(&candles).unwrap_or(60_000);
            (symbol, candles, path.display().to_string(), bar_ms)
        };
        let reference = DataRef {
            symbol: symbol.clone(),
            source,
            sha256: candles_sha256(&candles),
            bars: candles.len(),
            first: format_time(candles[0].time_ms),
            last: format_time(candles[candles.len() - 1].time_ms),
        };
        out.push(Dataset {
            series: Series {
                symbol,
                candles,
                bar_ms,
            },
            reference,
        });
    }
    Ok(out)
}

/// Expands `NAME=VALUE`, `NAME=a,b,c` and `NAME=from..to:step` into every
/// combination, each resolved and checked against the strategy's specs.
pub fn expand_grid(specs: &[ParamSpec], assignments: &[String]) -> anyhow::Result<Vec<Params>> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for text in assignments {
        let (name, values) = text.split_once('=').with_context(|| {
            format!("--param {text}: expected NAME=VALUE, NAME=a,b,c or NAME=from..to:step")
        })?;
        let spec = specs
            .iter()
            .find(|s| s.name == name.trim())
            .with_context(|| {
                format!(
                    "--param {text}: parameter '{}' is not declared by the strategy",
                    name.trim()
                )
            })?;
        axes.push((
            spec.name.clone(),
            expand_values(spec, values).with_context(|| format!("--param {text}"))?,
        ));
    }
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for (name, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut c = combo.clone();
                    c.push(format!("{name}={v}"));
                    c
                })
            })
            .collect();
    }
    if combos.len() > 10_000 {
        bail!(
            "the parameter grid has {} combinations, over 10000",
            combos.len()
        );
    }
    combos
        .iter()
        .map(|c| Params::resolve_text(specs, c).map_err(anyhow::Error::from))
        .collect()
}

fn expand_values(spec: &ParamSpec, text: &str) -> anyhow::Result<Vec<String>> {
    if let Some((range, step)) = text.split_once(':')
        && let Some((from, to)) = range.split_once("..")
    {
        let parse = |t: &str| {
            t.trim()
                .parse::<f64>()
                .with_context(|| format!("'{t}' is not a number"))
        };
        let (from, to, step) = (parse(from)?, parse(to)?, parse(step)?);
        if step.is_nan() || step <= 0.0 || to < from {
            bail!("a range needs from <= to and a positive step");
        }
        let count = ((to - from) / step + 1e-9).floor() as usize + 1;
        if count > 10_000 {
            bail!("the range has {count} values, over 10000");
        }
        return Ok((0..count)
            .map(|i| {
                let v = from + step * i as f64;
                match spec.kind {
                    ParamKind::Int => format!("{}", v.round() as i64),
                    _ => format!("{v}"),
                }
            })
            .collect());
    }
    Ok(text.split(',').map(|v| v.trim().to_owned()).collect())
}

/// One backtest to run.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub strategy: &'a LoadedStrategy,
    pub params: Params,
}

/// Runs one job; the strategy's own failures end up in the report, not here.
pub fn run_job(
    sandbox: &Sandbox,
    job: &Job<'_>,
    data: &[Dataset],
    config: &BacktestConfig,
) -> anyhow::Result<Report> {
    let series: Vec<Series> = data.iter().map(|d| d.series.clone()).collect();
    let binding = Binding {
        symbols: series.iter().map(|s| s.symbol.clone()).collect(),
        params: job.params.clone(),
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(job.strategy, binding)?;
    let result = keel_backtester::run(&mut instance, &series, config);
    let info = &job.strategy.info;
    let strategy = StrategyRef {
        name: info.name.clone(),
        version: info.version.clone(),
        sha256: job.strategy.hash.to_hex(),
        params: job
            .params
            .values()
            .iter()
            .map(|(name, value)| ParamEntry {
                name: name.clone(),
                value: value.to_string(),
            })
            .collect(),
    };
    let fuel = (sandbox.metering() == Metering::Fuel).then_some(sandbox.limits().fuel_per_call);
    Ok(Report::new(
        strategy,
        data.iter().map(|d| d.reference.clone()).collect(),
        config,
        fuel,
        None,
        &result,
    ))
}

/// Runs every job across the machine's cores; results keep the jobs' order.
/// `progress` is called on this thread as each finishes (done, total, job index).
pub fn run_all(
    sandbox: &Sandbox,
    jobs: &[Job<'_>],
    data: &[Dataset],
    config: &BacktestConfig,
    mut progress: impl FnMut(usize, usize, usize, &anyhow::Result<Report>),
) -> Vec<anyhow::Result<Report>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let next = &AtomicUsize::new(0);
    let mut results: Vec<Option<anyhow::Result<Report>>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let tx = tx.clone();
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if tx.send((i, run_job(sandbox, job, data, config))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (done, (i, result)) in rx.into_iter().enumerate() {
            progress(done + 1, jobs.len(), i, &result);
            results[i] = Some(result);
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("the job did not run"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_ranges_lists_and_singles() {
        let specs = vec![
            ParamSpec::int("fast", 10, 2, 100, ""),
            ParamSpec::float("size", 0.1, 0.01, 1.0, ""),
            ParamSpec::flag("short", false, ""),
        ];
        let grid = expand_grid(
            &specs,
            &[
                "fast=5..15:5".into(),
                "size=0.1,0.2".into(),
                "short=true".into(),
            ],
        )
        .expect("grid");
        assert_eq!(grid.len(), 6);
        let fast: Vec<i64> = grid.iter().map(|p| p.int("fast").expect("int")).collect();
        assert_eq!(fast, [5, 5, 10, 10, 15, 15]);
        assert!(grid.iter().all(|p| p.flag("short") == Ok(true)));
        assert_eq!(expand_grid(&specs, &[]).expect("defaults").len(), 1);
        let err = expand_grid(&specs, &["fast=1..5:1".into()]).expect_err("out of range");
        assert_eq!(err.to_string(), "parameter 'fast' = 1 is outside [2, 100]");
        let err = expand_grid(&specs, &["slow=3".into()]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "--param slow=3: parameter 'slow' is not declared by the strategy"
        );
    }
}
