//! A candle file read while a backtest runs: its pieces as the reader
//! gives them (CSV and freqtrade JSON as they are parsed, Parquet a row
//! group at a time), checked as a load checks them, aggregated on the way
//! when `--timeframe` asks.
//!
//! A file's bar length is what its bars are most often apart, over the
//! whole file, and the run needs it before the first bar: it is judged
//! from the first [`FIRST_BARS`] (or the whole of a shorter file), and the
//! reader counts every spacing as it goes. When the whole says otherwise
//! (a rare file whose start is unlike the rest), the run is made again
//! with the file loaded whole. Bars a day or longer apart are loaded whole
//! from the start: they are dated as a load dates them (a local midnight
//! is its date), and such a file is small.

use std::sync::mpsc::{SyncSender, sync_channel};

use keel_backtester::report::DataRef;
use keel_model::Timeframe;
use keel_model::candles::columns::Digester;
use keel_model::candles::resample::{Partial, Resampler};
use keel_model::candles::{self, Candle, CandleError, Columns, Spacings, format_time};
use keel_model::replay::FEED_CHUNK;

use super::{Made, PIECES_AHEAD, Streamed};
use crate::backtest::file_spec;

/// Bars read before a file's bar length is judged.
pub(super) const FIRST_BARS: usize = 4 * FEED_CHUNK;

/// How a file's reader began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::backtest) enum Start {
    /// Its bars as they are read, this far apart (aggregated, when asked).
    Stream(i64),
    /// The file is to be loaded whole.
    Whole,
}

/// `--data` value `spec` (the `i`th), a file, read on a thread of its own
/// and aggregated there to bars of `to` when given. Its bar length is
/// known once the reader has begun (`settle`).
pub(super) fn stream_file(
    spec: &str,
    i: usize,
    to: Option<Timeframe>,
    columns: Columns,
) -> anyhow::Result<Streamed> {
    let (symbol, path) = file_spec(spec, i)?;
    let source = path.display().to_string();
    let (tx, spans) = sync_channel(PIECES_AHEAD);
    let (began, start) = sync_channel(1);
    let reference = DataRef {
        symbol: symbol.clone(),
        source: match to {
            Some(to) => format!("{source} as {to}"),
            None => source.clone(),
        },
        digest: String::new(),
        bars: 0,
        partial: 0,
        first: String::new(),
        last: String::new(),
    };
    let reader = std::thread::Builder::new()
        .name(format!("read {}", keel_model::shown::text(&symbol)))
        .spawn(move || {
            let mut reading = Reading {
                symbol,
                source,
                to,
                tx,
                began: Some(began),
                first: Vec::new(),
                first_marks: Vec::new(),
                last_ms: None,
                spacings: Spacings::default(),
                named_ms: crate::backtest::named_bar_ms(&path, to),
                sink: None,
            };
            reading.read(&path, &columns)
        })?;
    Ok(Streamed {
        bar_ms: 0,
        reference,
        spans,
        reader,
        start: Some(start),
    })
}

/// Why a read ended early.
enum Ended {
    /// The run stopped taking bars, or the file is to be loaded whole.
    Stopped,
    /// Aggregating to `--timeframe` cannot be done.
    Refused(anyhow::Error),
    Failed(CandleError),
}

impl From<CandleError> for Ended {
    fn from(e: CandleError) -> Ended {
        Ended::Failed(e)
    }
}

/// A file being read.
struct Reading {
    symbol: String,
    source: String,
    to: Option<Timeframe>,
    tx: SyncSender<Vec<Candle>>,
    /// Where to say how the read began, until it has.
    began: Option<SyncSender<Start>>,
    /// The bars read before the bar length was judged, and the times of
    /// those the file marks partial.
    first: Vec<Candle>,
    first_marks: Vec<i64>,
    last_ms: Option<i64>,
    /// Every spacing between the file's bars.
    spacings: Spacings,
    /// The bar length when the bars cannot tell (one bar): by the name,
    /// else the one aggregated to.
    named_ms: i64,
    /// Where the bars go once the read has begun.
    sink: Option<Sink>,
}

/// What becomes of the bars once the bar length is known.
struct Sink {
    bar_ms: i64,
    resampler: Option<Resampler>,
    /// The bars the run is given (aggregated or not), for the report.
    digester: Digester,
    bars: usize,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    /// The bars the file marks partial, when they are not aggregated.
    marked: Partial,
    /// Whether the file marks any.
    any_marked: bool,
}

impl Reading {
    fn read(&mut self, path: &std::path::Path, columns: &Columns) -> anyhow::Result<Option<Made>> {
        let read =
            candles::read_file_each_marked(path, columns, |piece, marks| self.take(piece, marks));
        let read = read.and_then(|()| match self.sink {
            Some(_) => Ok(()),
            // A file shorter than the bars judged: judged whole.
            None => self.begin(),
        });
        match read {
            Ok(()) => {}
            Err(Ended::Stopped) => return Ok(None),
            Err(Ended::Refused(e)) => return Err(e),
            Err(Ended::Failed(e)) => return Err(e.into()),
        }
        let Some(mut sink) = self.sink.take() else {
            return Ok(None);
        };
        let aggregated = sink.resampler.is_some();
        let mut partial = std::mem::take(&mut sink.marked);
        if let Some(resampler) = sink.resampler.take() {
            let mut made = Vec::new();
            partial = resampler.finish(&mut made);
            sink.note(&made);
            // The run has stopped taking bars if this fails: nothing to say.
            let _ = self.tx.send(made);
        }
        let time = |t: Option<i64>| t.map_or_else(String::new, format_time);
        let source = match self.to {
            Some(to) => format!("{} as {to}", self.source),
            None => self.source.clone(),
        };
        let typical = self.spacings.typical().unwrap_or(self.named_ms);
        Ok(Some(Made {
            reference: DataRef {
                symbol: self.symbol.clone(),
                source,
                digest: sink.digester.finish(),
                bars: sink.bars,
                first: time(sink.first_ms),
                last: time(sink.last_ms),
                partial: 0,
            },
            partial,
            aggregated,
            marked: sink.any_marked,
            again: typical != sink.bar_ms,
        }))
    }

    /// A piece the file's reader gave, and the times of its bars the file
    /// marks partial.
    fn take(&mut self, piece: Vec<Candle>, marks: Vec<i64>) -> Result<(), Ended> {
        for c in &piece {
            if let Some(last) = self.last_ms {
                self.spacings.add(c.time_ms - last);
            }
            self.last_ms = Some(c.time_ms);
        }
        if self.sink.is_some() {
            return self.send(piece, &marks);
        }
        self.first.extend(piece);
        self.first_marks.extend(marks);
        match self.first.len() >= FIRST_BARS {
            true => self.begin(),
            false => Ok(()),
        }
    }

    /// Judges the bar length from the bars read so far, says how the read
    /// begins, and sends them.
    fn begin(&mut self) -> Result<(), Ended> {
        let judged = &self.first[..self.first.len().min(FIRST_BARS)];
        let bar_ms = candles::typical_spacing_ms(judged).unwrap_or(self.named_ms);
        let whole = bar_ms >= Timeframe::D1.duration_ms();
        // What cannot be aggregated is refused before the run begins.
        let resampler = match self.to.filter(|_| !whole) {
            Some(to) => Some(Resampler::new(bar_ms, to).map_err(|e| {
                Ended::Refused(anyhow::anyhow!("--timeframe {to}: {}: {e}", self.source))
            })?),
            None => None,
        };
        // The run's bars are the aggregated ones when it asks for them.
        let start = match whole {
            true => Start::Whole,
            false => Start::Stream(self.to.map_or(bar_ms, Timeframe::duration_ms)),
        };
        if let Some(began) = self.began.take() {
            // The run decides with this; if it has gone, so has the read.
            began.send(start).map_err(|_| Ended::Stopped)?;
        }
        if whole {
            return Err(Ended::Stopped);
        }
        self.sink = Some(Sink {
            bar_ms,
            resampler,
            digester: Digester::default(),
            bars: 0,
            first_ms: None,
            last_ms: None,
            marked: Partial::default(),
            any_marked: false,
        });
        let first = std::mem::take(&mut self.first);
        let marks = std::mem::take(&mut self.first_marks);
        self.send(first, &marks)
    }

    /// Hands `piece` to the run (aggregated when asked), noting it and
    /// the bars of it the file marks partial (`marks`) for the report.
    fn send(&mut self, piece: Vec<Candle>, marks: &[i64]) -> Result<(), Ended> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        sink.any_marked |= !marks.is_empty();
        let piece = match &mut sink.resampler {
            Some(resampler) => {
                let mut made = Vec::new();
                if let Err(e) = resampler.push_partial(&piece, marks, &mut made) {
                    return Err(Ended::Refused(anyhow::anyhow!("{}: {e}", self.source)));
                }
                made
            }
            None => {
                sink.marked.extend(marks.iter().copied());
                piece
            }
        };
        sink.note(&piece);
        // In pieces of a bounded size, whatever the file's reader gives.
        for bars in piece.chunks(FEED_CHUNK) {
            self.tx.send(bars.to_vec()).map_err(|_| Ended::Stopped)?;
        }
        Ok(())
    }
}

impl Sink {
    fn note(&mut self, bars: &[Candle]) {
        self.digester.push(bars);
        self.bars += bars.len();
        self.first_ms = self.first_ms.or(bars.first().map(|c| c.time_ms));
        self.last_ms = bars.last().map(|c| c.time_ms).or(self.last_ms);
    }
}
