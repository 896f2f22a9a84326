//! A backtest of stored series that does not wait for them to load: each
//! series is read span by span (some 65,000 bars at a time) on a thread
//! and a connection of its own while the run consumes the spans before it,
//! so reading and checking the bars takes the second core instead of the
//! run's time, and memory holds a few spans, never the whole series.
//!
//! Every span is checked as `Store::load_series` checks it, and the whole
//! against the catalogue once it is read. A damaged series is found only
//! after the run has started: its run is then thrown away and the
//! backtest refused with the store's own error, as before — bars changed
//! behind Keel's back are never reported on.

use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::bail;

use keel_backtester::report::DataRef;
use keel_backtester::{BacktestConfig, Report};
use keel_model::candles::columns::Digester;
use keel_model::candles::resample::Resampler;
use keel_model::candles::{Candle, format_time};
use keel_model::replay::{FEED_CHUNK, Feed};
use keel_model::{Timeframe, shown};

use super::{Given, Job, not_stored, partial_note, run_on, stored_spec};
use crate::sandbox::Sandbox;
use crate::store::{Store, StoreError, StoredSeries};

/// Pieces of [`FEED_CHUNK`] bars read ahead of the run, per series: enough
/// that the reader is never what the run waits for, few enough that memory
/// stays flat. A span is handed over in pieces, not whole, so the run
/// reads bars the reader wrote moments ago, still in the cache the two
/// cores share (measured: about 4% of a 500,000-bar run).
const PIECES_AHEAD: usize = 16;

/// A stored series being read while a backtest runs.
#[derive(Debug)]
pub struct Streamed {
    bar_ms: i64,
    /// What the report says of the series: from the catalogue, or, when
    /// it is aggregated, made by the reader as it goes.
    reference: DataRef,
    spans: Receiver<Vec<Candle>>,
    reader: JoinHandle<Result<Option<Made>, StoreError>>,
}

/// What aggregating a series made: its reference and how many of its bars
/// are partial.
#[derive(Debug)]
struct Made {
    reference: DataRef,
    partial: usize,
}

impl Streamed {
    pub fn given(&self) -> Given<'_> {
        Given {
            symbol: &self.reference.symbol,
            bar_ms: self.bar_ms,
            source: &self.reference.source,
        }
    }
}

/// The `--data` values as stored series being read, each on its own
/// thread and aggregated there to bars of `to` when given; `None` unless
/// every one names a stored series (a file is read whole, by
/// `load_data`). What the catalogue does not list, or cannot be
/// aggregated so, is refused here, before any run.
pub fn stream_data(
    specs: &[String],
    db: &Path,
    to: Option<Timeframe>,
) -> anyhow::Result<Option<Vec<Streamed>>> {
    let stored: Option<Vec<_>> = specs.iter().map(|s| stored_spec(s)).collect();
    let Some(stored) = stored.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(specs.len());
    for (spec, stored) in specs.iter().zip(stored) {
        let (symbol, tf) = stored?;
        let store = Store::open(db)?;
        let Some(listed) = store.series(symbol, tf)? else {
            // Bars without a catalogue row are damaged: said as a load says it.
            store.load_series(symbol, tf)?;
            bail!(not_stored(spec, symbol, tf, db));
        };
        let mut reference = DataRef {
            symbol: symbol.to_owned(),
            source: format!("store:{spec}"),
            digest: listed.digest.clone(),
            bars: usize::try_from(listed.bars).unwrap_or(0),
            first: format_time(listed.first_ms),
            last: format_time(listed.last_ms),
        };
        let resampler = match to {
            Some(to) => {
                reference.source = format!("{} as {to}", reference.source);
                let made = Resampler::new(tf.duration_ms(), to).map_err(|e| {
                    anyhow::anyhow!("--timeframe {to}: store:{}: {e}", shown::text(spec))
                })?;
                Some(made)
            }
            None => None,
        };
        let (tx, spans) = sync_channel(PIECES_AHEAD);
        let (name, source) = (symbol.to_owned(), reference.source.clone());
        let reader = std::thread::Builder::new()
            .name(format!("read {symbol}"))
            .spawn(move || match resampler {
                Some(resampler) => read_resampled(store, listed, tf, resampler, tx, name, source),
                None => read(store, listed, tf, tx).map(|()| None),
            })?;
        out.push(Streamed {
            bar_ms: to.unwrap_or(tf).duration_ms(),
            reference,
            spans,
            reader,
        });
    }
    Ok(Some(out))
}

/// Sends the series' bars, a piece at a time, until the run stops taking
/// them.
fn read(
    store: Store,
    listed: StoredSeries,
    tf: keel_model::Timeframe,
    tx: SyncSender<Vec<Candle>>,
) -> Result<(), StoreError> {
    store.stream_series(&listed, tf, |span| {
        span.chunks(FEED_CHUNK)
            .all(|piece| tx.send(piece.to_vec()).is_ok())
    })?;
    Ok(())
}

/// Sends the series' spans aggregated by `resampler`, until the run stops
/// taking them; the reference of what it sent (what the strategy saw).
fn read_resampled(
    store: Store,
    listed: StoredSeries,
    tf: keel_model::Timeframe,
    mut resampler: Resampler,
    tx: SyncSender<Vec<Candle>>,
    symbol: String,
    source: String,
) -> Result<Option<Made>, StoreError> {
    let mut digester = Digester::default();
    let (mut bars, mut first, mut last) = (0, None, None);
    let mut note = |made: &[Candle]| {
        digester.push(made);
        bars += made.len();
        first = first.or(made.first().map(|c| c.time_ms));
        last = made.last().map(|c| c.time_ms).or(last);
    };
    let whole = store.stream_series(&listed, tf, |span| {
        let mut made = Vec::new();
        resampler.push(span, &mut made);
        note(&made);
        made.is_empty() || tx.send(made).is_ok()
    })?;
    let mut made = Vec::new();
    let partial = resampler.finish(&mut made);
    note(&made);
    if whole && !made.is_empty() {
        // The run has stopped taking bars if this fails: nothing to say.
        let _ = tx.send(made);
    }
    let time = |t: Option<i64>| t.map_or_else(String::new, format_time);
    let reference = DataRef {
        symbol,
        source,
        digest: digester.finish(),
        bars,
        first: time(first),
        last: time(last),
    };
    Ok(Some(Made { reference, partial }))
}

/// Runs `job` over the series as they are read; a series found damaged
/// on the way refuses the run (its report is never made). Notes for
/// aggregated series with partial bars come with the report.
pub fn run_streamed(
    sandbox: &Sandbox,
    job: &Job<'_>,
    data: Vec<Streamed>,
    config: &BacktestConfig,
) -> anyhow::Result<(Report, Vec<String>)> {
    let mut readers = Vec::with_capacity(data.len());
    let mut references = Vec::with_capacity(data.len());
    let mut feeds = Vec::with_capacity(data.len());
    for d in data {
        feeds.push(Feed {
            symbol: d.reference.symbol.clone(),
            bar_ms: d.bar_ms,
            runs: Box::new(d.spans.into_iter().map(Cow::Owned)),
        });
        references.push(d.reference);
        readers.push(d.reader);
    }
    // The run ends when every feed has: each reader has finished by then.
    let report = run_on(sandbox, job, feeds, references, config);
    let mut made = Vec::with_capacity(readers.len());
    for reader in readers {
        match reader.join() {
            Ok(read) => made.push(read?),
            Err(_) => bail!("the thread reading the stored bars failed"),
        }
    }
    let mut report = report?;
    let mut notes = Vec::new();
    for (i, made) in made.into_iter().enumerate() {
        let Some(Made { reference, partial }) = made else {
            continue;
        };
        if partial > 0 {
            notes.push(partial_note(&reference.source, partial, reference.bars));
        }
        if let Some(data) = report.data.get_mut(i) {
            *data = reference;
        }
    }
    Ok((report, notes))
}
