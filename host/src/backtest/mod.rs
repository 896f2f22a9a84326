//! `keel backtest`: strategies × parameter grid × data, run across cores with
//! the backtester engine, each call fuel-metered so runs are reproducible.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};

use keel_backtester::report::{DataRef, ParamEntry, StrategyRef, score};
use keel_backtester::{BacktestConfig, Report};
use keel_model::candles::{self, format_time};
use keel_model::replay::{Feed, Series};
use keel_model::{Params, Timeframe, shown};

use crate::sandbox::{Binding, LoadedStrategy, Metering, Sandbox};
use crate::store::Store;

mod grid;
mod streamed;

pub use grid::{MAX_COMBINATIONS, expand_grid};

pub use streamed::{Streamed, run_streamed, settle, stream_data};

/// One series to test on, with what the report says about it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub series: Series,
    pub reference: DataRef,
}

impl Dataset {
    pub fn given(&self) -> Given<'_> {
        Given {
            symbol: &self.series.symbol,
            bar_ms: self.series.bar_ms,
            source: &self.reference.source,
        }
    }
}

/// What a warning about a series names: its symbol, bar length and source.
#[derive(Debug, Clone, Copy)]
pub struct Given<'a> {
    pub symbol: &'a str,
    pub bar_ms: i64,
    pub source: &'a str,
}

/// Refuses a symbol given twice: a run keeps one market, one set of
/// positions and one line of the report per symbol.
pub fn distinct(given: &[Given<'_>]) -> anyhow::Result<()> {
    for (i, g) in given.iter().enumerate() {
        if let Some(first) = given[..i].iter().find(|f| f.symbol == g.symbol) {
            bail!(
                "{} is given twice ({} and {}): a run takes each symbol once",
                shown::text(g.symbol),
                shown::text(first.source),
                shown::text(g.source)
            );
        }
    }
    Ok(())
}

/// `--data` values: `[SYMBOL=]FILE` (CSV or `.json`; without `SYMBOL=`
/// the file's name gives it; its columns found by `columns`) or
/// `SYMBOL@TF` from the store.
pub fn load_data(
    specs: &[String],
    columns: &candles::Columns,
    db: &Path,
) -> anyhow::Result<Vec<Dataset>> {
    load_to(specs, columns, db, None)
}

/// [`load_data`] for a run that aggregates to `to`: a file too short to
/// tell its bar length is taken to be of that length (see
/// [`named_bar_ms`]).
fn load_to(
    specs: &[String],
    columns: &candles::Columns,
    db: &Path,
    to: Option<Timeframe>,
) -> anyhow::Result<Vec<Dataset>> {
    let data = load_marked(specs, columns, db, to)?;
    Ok(data.into_iter().map(|(d, _)| d).collect())
}

/// [`load_to`], each series with the open times of the bars its file
/// marks partial (a column `partial`, as `keel data export --timeframe`
/// writes it; for a stored series, the marks its import kept).
fn load_marked(
    specs: &[String],
    columns: &candles::Columns,
    db: &Path,
    to: Option<Timeframe>,
) -> anyhow::Result<Vec<(Dataset, Vec<i64>)>> {
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if spec.trim().is_empty() {
            bail!("--data '': give a candle file, SYMBOL=FILE or SYMBOL@TIMEFRAME");
        }
        let (symbol, candles, source, bar_ms, digest, marks) =
            if let Some(stored) = stored_spec(spec) {
                let (symbol, tf) = stored?;
                let store = Store::open_existing(db)?;
                // The bars and their marks of one state of the store.
                store.hold_still()?;
                let Some((candles, digest)) = store.load_series(symbol, tf)? else {
                    bail!(not_stored(spec, symbol, tf, db));
                };
                let mut marks = crate::store::SpanMarks::new(store.marks(symbol, tf)?);
                let at = marks.of(&candles);
                marks.check(&store, symbol, tf, true)?;
                let marks = at;
                (
                    symbol.to_owned(),
                    candles,
                    format!("store:{spec}"),
                    tf.duration_ms(),
                    Some(digest),
                    marks,
                )
            } else {
                let (symbol, path) = file_spec(spec, i)?;
                let (mut candles, mut marks) = candles::read_file_marked(&path, columns)?;
                let mut bar_ms = candles::typical_spacing_ms(&candles)
                    .unwrap_or_else(|| named_bar_ms(&path, to));
                if bar_ms >= Timeframe::D1.duration_ms() {
                    // Daily or longer: dated as an import dates them (a local
                    // midnight is its date), so the file and the store agree.
                    // Times an import would refuse to date (a zone known by
                    // name alone) stay the instants they are.
                    let dated = columns.clone().with_dates(true);
                    if let Ok(dated) = candles::read_file_marked(&path, &dated) {
                        (candles, marks) = dated;
                        bar_ms = candles::typical_spacing_ms(&candles).unwrap_or(bar_ms);
                    }
                }
                (
                    symbol,
                    candles,
                    path.display().to_string(),
                    bar_ms,
                    None,
                    marks,
                )
            };
        let reference = match digest {
            Some(digest) => DataRef::with_digest(&symbol, source, &candles, digest),
            None => DataRef::of(&symbol, source, &candles),
        };
        let series = Series {
            symbol,
            candles,
            bar_ms,
        };
        out.push((Dataset { series, reference }, marks));
    }
    Ok(out)
}

/// Refuses `--columns` when no `--data` value names a file: a stored
/// series has no columns to name, and the option would be ignored.
pub fn check_columns(specs: &[String], columns: &candles::Columns) -> anyhow::Result<()> {
    if *columns != candles::Columns::default() && specs.iter().all(|s| stored_spec(s).is_some()) {
        bail!(
            "--columns names a candle file's columns; every --data here is a stored series \
             (SYMBOL@TF), whose columns are Keel's own"
        );
    }
    Ok(())
}

/// The bar length of a file too short to tell by its bars (one bar): the
/// one its name ends in (`ONE_BTC-5m.csv`), else the length a run
/// aggregates to (`to`: a bar whose length is not known is not called
/// partial, nor made a bar of another length), else a minute.
pub(crate) fn named_bar_ms(path: &Path, to: Option<Timeframe>) -> i64 {
    candles::timeframe_from_file(path)
        .or(to)
        .map_or(60_000, Timeframe::duration_ms)
}

/// The symbol and file of `--data` value `spec`, the `i`th, that names a
/// file: `SYMBOL=FILE`, or the file alone (its name gives the symbol).
fn file_spec(spec: &str, i: usize) -> anyhow::Result<(String, PathBuf)> {
    if spec.trim().is_empty() {
        bail!("--data '': give a candle file, SYMBOL=FILE or SYMBOL@TIMEFRAME");
    }
    let (symbol, path) = match spec.split_once('=') {
        Some((s, p)) => (s.to_owned(), PathBuf::from(p)),
        // The file's name says what it holds (`SYMBOL=` overrides).
        None => {
            let path = PathBuf::from(spec);
            let symbol =
                candles::symbol_from_file(&path).unwrap_or_else(|| format!("SYMBOL{}", i + 1));
            (symbol, path)
        }
    };
    crate::sandbox::bindable(&symbol)
        .map_err(|e| anyhow::anyhow!("--data {spec}: {e}; name it: SYMBOL=FILE"))?;
    Ok((symbol, path))
}

/// A `--data` value naming a stored series, `SYMBOL@TF` (and no file of
/// that name): its symbol and timeframe, or why the timeframe is not one.
fn stored_spec(spec: &str) -> Option<anyhow::Result<(&str, Timeframe)>> {
    let (symbol, tf) = spec.split_once('@')?;
    if Path::new(spec).exists() {
        return None;
    }
    if symbol.trim().is_empty() {
        return Some(Err(anyhow::anyhow!(
            "--data {}: no symbol before the '@' (SYMBOL@TIMEFRAME)",
            shown::text(spec)
        )));
    }
    Some(
        Timeframe::parse(tf)
            .map(|tf| (symbol, tf))
            .with_context(|| format!("--data {spec}: unknown timeframe '{tf}'")),
    )
}

fn not_stored(spec: &str, symbol: &str, tf: Timeframe, db: &Path) -> String {
    format!(
        "--data {spec}: no {symbol} {tf} candles in {} (import them with keel data import)",
        db.display()
    )
}

/// Each series aggregated to bars of `to` (see `candles::resample`), its
/// reference made of what the strategy will see; a note for each series
/// with partial bars (a gap inside, the data starting or ending inside
/// them, or a bar its file marks partial): kept as they are, never filled.
fn resample_data(data: &mut [(Dataset, Vec<i64>)], to: Timeframe) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for (d, marks) in data.iter_mut() {
        let made =
            candles::resample::resample_partial(&d.series.candles, marks, d.series.bar_ms, to)
                .map_err(|e| anyhow::anyhow!("--timeframe {to}: {}: {e}", d.reference.source))?;
        let source = format!("{} as {to}", d.reference.source);
        if made.partial.count > 0 {
            let marked = !marks.is_empty();
            notes.push(partial_note(
                &source,
                &made.partial,
                made.candles.len(),
                marked,
            ));
        }
        d.reference = DataRef {
            partial: made.partial.count,
            ..DataRef::of(&d.series.symbol, source, &made.candles)
        };
        d.series.candles = made.candles;
        d.series.bar_ms = to.duration_ms();
    }
    Ok(notes)
}

/// The bars each file marks partial, counted in its reference, with a
/// note for each file that marks any: kept as they are.
fn note_marked(data: &mut [(Dataset, Vec<i64>)]) -> Vec<String> {
    let mut notes = Vec::new();
    for (d, marks) in data.iter_mut().filter(|(_, m)| !m.is_empty()) {
        let mut partial = candles::resample::Partial::default();
        partial.extend(marks.iter().copied());
        notes.push(marked_note(
            &d.reference.source,
            &partial,
            d.series.candles.len(),
        ));
        d.reference.partial = partial.count;
    }
    notes
}

/// [`load_data`], aggregated to `to` when it is given: the data, and the
/// notes of its partial bars (aggregated so, or marked so by its file).
pub fn load_whole(
    specs: &[String],
    columns: &candles::Columns,
    db: &Path,
    to: Option<Timeframe>,
) -> anyhow::Result<(Vec<Dataset>, Vec<String>)> {
    let mut data = load_marked(specs, columns, db, to)?;
    let notes = match to {
        Some(to) => resample_data(&mut data, to)?,
        None => note_marked(&mut data),
    };
    Ok((data.into_iter().map(|(d, _)| d).collect(), notes))
}

/// The note for an aggregated series (`source`, already `… as TF`) with
/// `partial` of its `bars` partial: how many, and where the first are.
/// `marked`: the series' file marks bars partial itself, which makes the
/// bars they fall in partial too.
fn partial_note(
    source: &str,
    partial: &candles::resample::Partial,
    bars: usize,
    marked: bool,
) -> String {
    let why = match (marked, stored(source)) {
        (false, _) => "a gap inside, or the data starts or ends inside them",
        (true, false) => {
            "a gap inside, the data starting or ending inside them, or a bar the file marks partial"
        }
        (true, true) => {
            "a gap inside, the data starting or ending inside them, or a bar marked partial by the file it was imported from"
        }
    };
    format!(
        "{}: {} of {} {} partial ({why}): {}; kept as they are, never filled",
        shown::text(source),
        partial.count,
        shown::counted(bars, "bar"),
        shown::is_are(partial.count),
        partial.places()
    )
}

/// The note for a file (`source`) whose column of marks (`partial`, or
/// the one `--columns partial=NAME` named) marks `partial` of its `bars`
/// (as an aggregation that wrote it found them). A stored series' marks
/// came from the file it was imported from.
fn marked_note(source: &str, partial: &candles::resample::Partial, bars: usize) -> String {
    let by = match stored(source) {
        true => "the file it was imported from",
        false => "the file",
    };
    format!(
        "{}: {} of {} {} marked partial by {by} (fewer candles than a whole bar where it was made): {}; kept as they are",
        shown::text(source),
        partial.count,
        shown::counted(bars, "bar"),
        shown::is_are(partial.count),
        partial.places()
    )
}

/// Whether a series' `source` (as a `DataRef` names it) is the store's.
fn stored(source: &str) -> bool {
    source.starts_with("store:")
}

/// Where the data differs from what a strategy declares (its symbols, its
/// bar length): one line each, for a warning. A strategy is bound to the
/// data's symbols in their order whatever it declares, and is handed the
/// bars as they are.
pub fn mismatches(info: &keel_model::StrategyInfo, data: &[Given<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    let given: Vec<&str> = data.iter().map(|d| d.symbol).collect();
    let declared: Vec<&str> = info.symbols.iter().map(String::as_str).collect();
    if !declared.is_empty() && declared != given {
        out.push(format!(
            "{} declares {} and is given {}: it trades them in that order",
            shown::text(&info.name),
            shown::text(&declared.join(", ")),
            shown::text(&given.join(", "))
        ));
    }
    if let Some(tf) = Timeframe::parse(&info.timeframe) {
        for d in data.iter().filter(|d| !tf.matches_spacing(d.bar_ms)) {
            let theirs = Timeframe::ALL
                .into_iter()
                .find(|t| t.matches_spacing(d.bar_ms))
                .map_or_else(|| format!("{} s", d.bar_ms / 1000), |t| t.to_string());
            let fix = candles::resample::resample(&[], d.bar_ms, tf).map_or(String::new(), |_| {
                format!("; --timeframe {tf} aggregates them")
            });
            out.push(format!(
                "{} declares {tf} bars; {}'s are {theirs} (it is handed them as they are{fix})",
                shown::text(&info.name),
                shown::text(d.source)
            ));
        }
    }
    out
}

/// The fewest bars a walk-forward window may hold: fewer say nothing about
/// a strategy (and most strategies would still be warming up).
pub const MIN_BARS_PER_WINDOW: usize = 100;

/// One backtest to run.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub strategy: &'a LoadedStrategy,
    pub params: Params,
    /// Only bars opening in `[from, to)` (ms), when set.
    pub window: Option<(i64, i64)>,
}

/// Runs one job; the strategy's own failures end up in the report, not here.
pub fn run_job(
    sandbox: &Sandbox,
    job: &Job<'_>,
    data: &[Dataset],
    config: &BacktestConfig,
) -> anyhow::Result<Report> {
    // Each job borrows the loaded candles (only its window of them) instead
    // of copying every series.
    let window = job.window.unwrap_or((i64::MIN, i64::MAX));
    let feeds: Vec<Feed<'_>> = data
        .iter()
        .map(|d| {
            let candles = &d.series.candles;
            let from = candles.partition_point(|c| c.time_ms < window.0);
            let to = from + candles[from..].partition_point(|c| c.time_ms < window.1);
            Feed::slice(d.series.symbol.clone(), d.series.bar_ms, &candles[from..to])
        })
        .collect();
    let references = data.iter().map(|d| d.reference.clone()).collect();
    run_on(sandbox, job, feeds, references, config)
}

/// Runs `job` over `feeds`, which `references` describe in the report.
fn run_on(
    sandbox: &Sandbox,
    job: &Job<'_>,
    feeds: Vec<Feed<'_>>,
    references: Vec<DataRef>,
    config: &BacktestConfig,
) -> anyhow::Result<Report> {
    let binding = Binding {
        symbols: feeds.iter().map(|f| f.symbol.clone()).collect(),
        params: job.params.clone(),
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(job.strategy, binding)?;
    let result = keel_backtester::engine::run_feeds(&mut instance, feeds, config);
    let info = &job.strategy.info;
    let strategy = StrategyRef {
        name: info.name.clone(),
        version: info.version.clone(),
        sha256: job.strategy.hash.to_hex(),
        params: params_entries(&job.params),
    };
    let fuel = (sandbox.metering() == Metering::Fuel).then_some(sandbox.limits().fuel_per_call);
    Ok(Report::new(
        strategy, references, config, fuel, None, &result,
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

/// Parameters as a report lists them, in declaration order.
pub fn params_entries(params: &Params) -> Vec<ParamEntry> {
    params
        .values()
        .iter()
        .map(|(name, value)| ParamEntry {
            name: name.clone(),
            value: value.to_string(),
        })
        .collect()
}

/// One walk-forward fold and the whole walk-forward's report: the
/// grid's best on each in-sample window, then those parameters alone on
/// the out-of-sample window that follows.
pub use keel_backtester::report::{Fold, WalkForward};

/// The data's time span split into `folds + 1` equal windows (`[from, to)`,
/// ms), each holding at least [`MIN_BARS_PER_WINDOW`] bars of some series;
/// else why not. Checked before any job runs (and before a candidate is
/// stored: its gate's data must allow the walk-forward it asks for).
pub fn walk_forward_windows(data: &[Dataset], folds: usize) -> anyhow::Result<Vec<(i64, i64)>> {
    crate::ranges::WALK_FORWARD_FOLDS.check("walk-forward folds", folds)?;
    let start = data
        .iter()
        .filter_map(|d| d.series.candles.first())
        .map(|c| c.time_ms)
        .min();
    let end = data
        .iter()
        .filter_map(|d| d.series.candles.last().map(|c| c.time_ms + d.series.bar_ms))
        .max();
    let (Some(start), Some(end)) = (start, end) else {
        bail!("no candles to walk forward over")
    };
    // Both within the candle time range, and folds <= 100: no overflow.
    let segment = (end - start) / (folds as i64 + 1);
    let windows: Vec<(i64, i64)> = (0..=folds)
        .map(|k| {
            let to = if k == folds {
                end
            } else {
                start + segment * (k as i64 + 1)
            };
            (start + segment * k as i64, to)
        })
        .collect();
    let smallest = windows
        .iter()
        .map(|&(from, to)| {
            data.iter()
                .map(|d| {
                    let c = &d.series.candles;
                    c.partition_point(|c| c.time_ms < to) - c.partition_point(|c| c.time_ms < from)
                })
                .max()
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0);
    if smallest < MIN_BARS_PER_WINDOW {
        let bars = data
            .iter()
            .map(|d| d.series.candles.len())
            .max()
            .unwrap_or(0);
        bail!(
            "walk-forward over {folds} folds: {} windows over {bars} bars leave {smallest} bars in the smallest, under the {MIN_BARS_PER_WINDOW} a window needs",
            folds + 1
        );
    }
    Ok(windows)
}

/// Splits the data's time span into `folds + 1` equal windows; fold k picks
/// the best Sharpe (then return) of the grid on window k−1 and runs it on
/// window k. Each window's run starts from a fresh instance and fresh cash,
/// so its first warm-up bars are spent warming up.
pub fn walk_forward(
    sandbox: &Sandbox,
    strategy: &LoadedStrategy,
    grid: &[Params],
    data: &[Dataset],
    config: &BacktestConfig,
    folds: usize,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<WalkForward> {
    let windows = walk_forward_windows(data, folds)?;
    let bound = |k: usize| {
        if k == folds + 1 {
            windows[folds].1
        } else {
            windows[k].0
        }
    };
    let total = folds * (grid.len() + 1);
    let mut done = 0;
    let mut out = Vec::with_capacity(folds);
    let mut compounded = 1.0;
    for k in 1..=folds {
        let in_sample = (bound(k - 1), bound(k));
        let jobs: Vec<Job<'_>> = grid
            .iter()
            .map(|params| Job {
                strategy,
                params: params.clone(),
                window: Some(in_sample),
            })
            .collect();
        let reports = run_all(sandbox, &jobs, data, config, |_, _, _, _| {
            done += 1;
            progress(done, total);
        });
        let mut best: Option<(usize, Report)> = None;
        let mut in_sample_sharpe = Vec::with_capacity(grid.len());
        for (i, report) in reports.into_iter().enumerate() {
            // A combination the strategy refuses cannot win the fold.
            let Ok(report) = report else {
                in_sample_sharpe.push(None);
                continue;
            };
            in_sample_sharpe.push(report.metrics.sharpe);
            let better = |b: &Report| score(&report.metrics) > score(&b.metrics);
            if best.as_ref().is_none_or(|(_, b)| better(b)) {
                best = Some((i, report));
            }
        }
        let (chosen, in_report) =
            best.with_context(|| format!("fold {k}: no parameter combination could run"))?;
        let out_of_sample = (bound(k), bound(k + 1));
        let job = Job {
            strategy,
            params: grid[chosen].clone(),
            window: Some(out_of_sample),
        };
        let out_report = run_job(sandbox, &job, data, config)?;
        done += 1;
        progress(done, total);
        compounded *= 1.0 + out_report.metrics.total_return;
        out.push(Fold {
            fold: k,
            in_sample: (format_time(in_sample.0), format_time(in_sample.1)),
            out_of_sample: (format_time(out_of_sample.0), format_time(out_of_sample.1)),
            params: in_report.strategy.params.clone(),
            in_sample_metrics: in_report.metrics,
            out_of_sample_metrics: out_report.metrics,
            chosen,
            in_sample_sharpe,
        });
    }
    Ok(WalkForward {
        schema: "keel.walk-forward/1",
        strategy: format!("{} {}", strategy.info.name, strategy.info.version),
        sha256: strategy.hash.to_hex(),
        data: data.iter().map(|d| d.reference.clone()).collect(),
        candidates_per_fold: grid.len(),
        folds: out,
        out_of_sample_return: compounded - 1.0,
        grid: grid.iter().map(params_entries).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One bar is one: "1 of 240 bars is", not "are".
    #[test]
    fn a_note_of_one_bar_says_is() {
        let mut one = candles::resample::Partial::default();
        one.extend([0]);
        let note = marked_note("store:A/B@1h", &one, 240);
        assert!(
            note.contains("1 of 240 bars is marked partial by the file it was imported from"),
            "{note}"
        );
        let note = partial_note("a.csv", &one, 240, false);
        assert!(note.contains("a.csv: 1 of 240 bars is partial ("), "{note}");
        one.extend([3_600_000]);
        assert!(
            marked_note("a.csv", &one, 240)
                .contains("2 of 240 bars are marked partial by the file (")
        );
    }
}
