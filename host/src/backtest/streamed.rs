//! A backtest that does not wait for its data to load: each series — a
//! stored one, or a candle file — is read on a thread of its own while the
//! run consumes the bars before it, so reading and checking them takes the
//! second core instead of the run's time, and memory holds a piece or two
//! of the series, never the whole.
//!
//! Every stored span is checked as `Store::load_series` checks it, and the
//! whole against the catalogue once it is read; a file's bars are checked
//! as a load checks them. A damaged series or a bad line is found only
//! after the run has started: its run is then thrown away and the
//! backtest refused with the store's or the file's own error, as before —
//! bars changed behind Keel's back are never reported on. A file's bar
//! length is judged from its first bars (`files`); one whose whole says
//! otherwise, or whose bars are a day or longer (dated as a load dates
//! them), is run again loaded whole.

use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::bail;

use keel_backtester::report::DataRef;
use keel_backtester::{BacktestConfig, Report};
use keel_model::candles::columns::Digester;
use keel_model::candles::resample::Resampler;
use keel_model::candles::{Candle, Columns, format_time};
use keel_model::replay::{FEED_CHUNK, Feed};
use keel_model::{Timeframe, shown};

use super::{Given, Job, marked_note, not_stored, partial_note, run_on, stored_spec};
use crate::sandbox::Sandbox;
use crate::store::{SpanMarks, Store, StoreError, StoredSeries};

mod files;

/// Pieces of [`FEED_CHUNK`] bars read ahead of the run, per series: enough
/// that the reader is never what the run waits for (a span's worth), few
/// enough that memory stays flat.
const PIECES_AHEAD: usize = 16;

/// A series being read while a backtest runs.
#[derive(Debug)]
pub struct Streamed {
    bar_ms: i64,
    /// What the report says of the series: from the catalogue, or, when
    /// it is aggregated or a file, made by the reader as it goes.
    reference: DataRef,
    spans: Receiver<Vec<Candle>>,
    reader: JoinHandle<anyhow::Result<Option<Made>>>,
    /// A file's reader says here how it began: its bar length, or that the
    /// file is to be loaded whole.
    start: Option<Receiver<files::Start>>,
}

/// What a reader made of what it read: the series' reference, how many of
/// its bars are partial (aggregated, or marked so by its file), and
/// whether the run must be made again with the series loaded whole.
#[derive(Debug)]
struct Made {
    reference: DataRef,
    partial: keel_model::candles::resample::Partial,
    /// The bars were aggregated (else `partial` are those the file marks).
    aggregated: bool,
    /// The file marks bars partial itself.
    marked: bool,
    again: bool,
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

/// The `--data` values — stored series or candle files — being read, each
/// on its own thread and aggregated there to bars of `to` when given;
/// `None` when there are none. What the catalogue does not list, or cannot
/// be aggregated so, is refused here, before any run; a file's reader
/// says how it began through `settle`.
pub fn stream_data(
    specs: &[String],
    columns: &Columns,
    db: &Path,
    to: Option<Timeframe>,
) -> anyhow::Result<Option<Vec<Streamed>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let Some(stored) = stored_spec(spec) else {
            out.push(files::stream_file(spec, i, to, columns.clone())?);
            continue;
        };
        let (symbol, tf) = stored?;
        let store = Store::open_existing(db)?;
        // The catalogue, the marks and the spans of one state of the
        // store, whatever an import commits while the run reads them.
        store.hold_still()?;
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
            partial: 0,
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
        // The bars the file they were imported from marked partial.
        let marks = store.marks(symbol, tf)?;
        let (tx, spans) = sync_channel(PIECES_AHEAD);
        let listing = reference.clone();
        let reader = std::thread::Builder::new()
            .name(format!("read {symbol}"))
            .spawn(move || {
                let marks = SpanMarks::new(marks);
                let read = match resampler {
                    Some(resampler) => {
                        read_resampled(store, listed, tf, resampler, marks, tx, listing)
                    }
                    None => read(store, listed, tf, marks, tx, listing),
                };
                Ok(read?)
            })?;
        out.push(Streamed {
            bar_ms: to.unwrap_or(tf).duration_ms(),
            reference,
            spans,
            reader,
            start: None,
        });
    }
    Ok(Some(out))
}

/// Sends the series' bars, a piece at a time, until the run stops taking
/// them; when its import kept marks of partial bars, the reference
/// (`listing`, the catalogue's) with what they count.
fn read(
    store: Store,
    listed: StoredSeries,
    tf: keel_model::Timeframe,
    mut marks: SpanMarks,
    tx: SyncSender<Vec<Candle>>,
    listing: DataRef,
) -> Result<Option<Made>, StoreError> {
    let mut partial = keel_model::candles::resample::Partial::default();
    let whole = store.stream_series(&listed, tf, |span| {
        partial.extend(marks.of(span));
        span.chunks(FEED_CHUNK)
            .all(|piece| tx.send(piece.to_vec()).is_ok())
    })?;
    marks.check(&store, &listed.symbol, tf, whole)?;
    Ok(marks.any().then_some(Made {
        reference: listing,
        partial,
        aggregated: false,
        marked: true,
        again: false,
    }))
}

/// Sends the series' spans aggregated by `resampler`, until the run stops
/// taking them; the reference of what it sent (what the strategy saw),
/// named as `listing` names it.
fn read_resampled(
    store: Store,
    listed: StoredSeries,
    tf: keel_model::Timeframe,
    mut resampler: Resampler,
    mut marks: SpanMarks,
    tx: SyncSender<Vec<Candle>>,
    listing: DataRef,
) -> Result<Option<Made>, StoreError> {
    let DataRef { symbol, source, .. } = listing;
    let mut off_the_clock = None;
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
        if let Err(why) = resampler.push_partial(span, &marks.of(span), &mut made) {
            off_the_clock = Some(why);
            return false;
        }
        note(&made);
        made.is_empty() || tx.send(made).is_ok()
    })?;
    if let Some(why) = off_the_clock {
        return Err(StoreError::Conflict(format!(
            "{}: {why}",
            shown::text(&source)
        )));
    }
    marks.check(&store, &listed.symbol, tf, whole)?;
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
        partial: 0,
    };
    Ok(Some(Made {
        reference,
        partial,
        aggregated: true,
        marked: marks.any(),
        again: false,
    }))
}

/// Waits for each file's reader to say how it began: the series as they
/// are read, or `None` when one is to be loaded whole (the others'
/// readers stop as they are dropped). A file that cannot be read is its
/// error.
pub fn settle(data: Vec<Streamed>) -> anyhow::Result<Option<Vec<Streamed>>> {
    let mut out = Vec::with_capacity(data.len());
    for mut d in data {
        if let Some(start) = d.start.take() {
            match start.recv() {
                Ok(files::Start::Stream(bar_ms)) => d.bar_ms = bar_ms,
                Ok(files::Start::Whole) => return Ok(None),
                // It ended before it could begin: its error says why.
                Err(_) => return Err(failed(d)),
            }
        }
        out.push(d);
    }
    Ok(Some(out))
}

/// Why a reader ended before it began: its own error.
fn failed(d: Streamed) -> anyhow::Error {
    let source = d.reference.source;
    match d.reader.join() {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => anyhow::anyhow!("the thread reading {} stopped", shown::text(&source)),
        Err(_) => anyhow::anyhow!("the thread reading {} failed", shown::text(&source)),
    }
}

/// Runs `job` over the series as they are read; a series found damaged
/// on the way refuses the run (its report is never made). Notes for
/// aggregated series with partial bars come with the report. `None` when
/// a file's whole gave another bar length than its first bars: the run is
/// to be made again with the data loaded whole.
pub fn run_streamed(
    sandbox: &Sandbox,
    job: &Job<'_>,
    data: Vec<Streamed>,
    config: &BacktestConfig,
) -> anyhow::Result<Option<(Report, Vec<String>)>> {
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
            Err(_) => bail!("the thread reading the bars failed"),
        }
    }
    if made.iter().flatten().any(|m| m.again) {
        return Ok(None);
    }
    let mut report = report?;
    let mut notes = Vec::new();
    for (i, made) in made.into_iter().enumerate() {
        let Some(Made {
            mut reference,
            partial,
            aggregated,
            marked,
            ..
        }) = made
        else {
            continue;
        };
        reference.partial = partial.count;
        if partial.count > 0 {
            let (source, bars) = (&reference.source, reference.bars);
            notes.push(match aggregated {
                true => partial_note(source, &partial, bars, marked),
                false => marked_note(source, &partial, bars),
            });
        }
        if let Some(data) = report.data.get_mut(i) {
            *data = reference;
        }
    }
    Ok(Some((report, notes)))
}
