//! The candle store: validated series by symbol and timeframe, kept by
//! columns in spans of the clock (`keel_model::candles::columns`: one row
//! per 65,536 minutes, read in bulk; packed, `keel_model::candles::packed`),
//! with a catalogue of every series
//! (`candle_series`: its bars, range, gaps and digest) that each import
//! remakes in the same transaction.
//!
//! Why SQLite blobs and not Arrow or Parquet files beside the database: an
//! import must be all or nothing, and a SIGKILL must never leave a file
//! that disagrees with the catalogue. In one SQLite file both commit
//! together; in two places they need a protocol of their own. Read by
//! columns, a 500,000-bar series loads in a few milliseconds either way
//! (BENCHMARKS.md, *The candle store*).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{OptionalExtension, Transaction, params};

use keel_model::candles::columns::{self, span_of};
use keel_model::candles::{Candle, Gap, Timeframe, format_time, missing_between};

use super::{Store, StoreError, now_ms};

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub bars: usize,
    /// New bars written.
    pub inserted: usize,
    /// Bars already stored with the same values.
    pub unchanged: usize,
    /// Stored bars overwritten with different values (only with `replace`).
    pub replaced: usize,
    /// Bars the file marks partial (its column `partial`), kept as marks.
    pub marked: usize,
    /// The gaps in what was imported (not in the whole series).
    pub gaps: Vec<Gap>,
    /// The first and last imported bars' times; `None` for no bars.
    pub range: Option<(i64, i64)>,
    /// With `replace`: what was found damaged among the stored bars and
    /// what became of it, a line each (damaged bars dropped, or the
    /// figures of whole bars made again).
    pub mended: Vec<String>,
}

/// A stored series, as the catalogue has it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub symbol: String,
    pub timeframe: String,
    pub bars: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Runs of missing bars, and how many bars they miss (never filled).
    pub gaps: i64,
    pub missing: i64,
    /// `blake3:<hex>` of the bars (`columns::digest`).
    pub digest: String,
}

/// The digest of a file's bytes, read as a stream: `blake3:<hex>`. Once
/// `stop` is set the read ends with an error (an import that failed does
/// not wait for the digest of the rest of a large file).
pub fn file_digest(path: &Path, stop: &AtomicBool) -> std::io::Result<String> {
    /// A reader that fails once `stop` is set.
    struct Stoppable<'a, R> {
        inner: R,
        stop: &'a AtomicBool,
    }
    impl<R: std::io::Read> std::io::Read for Stoppable<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.stop.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("stopped"));
            }
            self.inner.read(buf)
        }
    }
    let mut h = blake3::Hasher::new();
    h.update_reader(Stoppable {
        inner: std::fs::File::open(path)?,
        stop,
    })?;
    Ok(format!("blake3:{}", h.finalize().to_hex()))
}

impl Store {
    /// Writes validated candles (oldest first) in one transaction. A stored
    /// bar with other values is a conflict, refused unless `replace`; then
    /// nothing is written. `source_bytes` are the file's, for its digest.
    pub fn import_candles(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        candles: &[Candle],
        source: &str,
        source_bytes: &[u8],
        replace: bool,
    ) -> Result<ImportReport, StoreError> {
        let digest = format!("blake3:{}", blake3::hash(source_bytes).to_hex());
        self.import_with(symbol, timeframe, source, replace, |import| {
            import.push(candles)?;
            Ok::<_, StoreError>(digest)
        })
    }

    /// An import whose bars `fill` hands over in pieces (`Importer::push`)
    /// as it reads them, in one transaction: committed when `fill` returns
    /// the source's digest, rolled back whatever fails. Memory holds one
    /// span of the import, not the whole.
    ///
    /// Into a file no other connection has open, the import writes in
    /// place (`Store::write_in_place`): its bars are written once, not
    /// twice, and other processes that open the file meanwhile wait for
    /// it as for any writer (a minute at most, then they say the file is
    /// locked). Beside another connection (a running host's)
    /// it goes through the write-ahead log, and readers carry on.
    pub fn import_with<E: From<StoreError>>(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        source: &str,
        replace: bool,
        fill: impl FnOnce(&mut Importer<'_>) -> Result<String, E>,
    ) -> Result<ImportReport, E> {
        let in_place = self.write_in_place()?;
        // In place, the import holds the file whole from its start: a
        // reader that took the file meanwhile would keep the import from
        // writing pages out, and its memory would grow until the reader
        // let go. Readers wait for it instead, as for any writer.
        let behavior = match in_place {
            true => rusqlite::TransactionBehavior::Exclusive,
            false => rusqlite::TransactionBehavior::Immediate,
        };
        let imported = self.import_once(symbol, timeframe, source, replace, behavior, fill);
        if in_place {
            // Done or not, the file goes back to its log; should another
            // connection hold it past a writer's wait, the next to open
            // the file switches it back.
            if let Err(e) = self.use_wal() {
                tracing::warn!(db = %self.path, "the import's database stays without its write-ahead log until it is next opened: {e}");
            }
        }
        imported
    }

    fn import_once<E: From<StoreError>>(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        source: &str,
        replace: bool,
        behavior: rusqlite::TransactionBehavior,
        fill: impl FnOnce(&mut Importer<'_>) -> Result<String, E>,
    ) -> Result<ImportReport, E> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(behavior)
            .map_err(|e| sql(&path, e))?;
        let mut import = Importer::new(&tx, &path, symbol, timeframe, source, replace);
        let digest = fill(&mut import)?;
        let report = import.finish(&digest)?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(report)
    }

    /// A stored series, oldest first, optionally within `[from_ms, to_ms)`.
    pub fn load_candles(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<Candle>, StoreError> {
        Ok(self.read_spans(symbol, timeframe, from_ms, to_ms)?.0)
    }

    /// The bars of the spans covering `[from_ms, to_ms)`, cut to it, and
    /// the spans' digests.
    fn read_spans(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<(Vec<Candle>, Vec<[u8; 32]>), StoreError> {
        let (from, to) = (from_ms.unwrap_or(i64::MIN), to_ms.unwrap_or(i64::MAX));
        if from >= to {
            return Ok((Vec::new(), Vec::new()));
        }
        let spans = (span_of(from), span_of(to - 1));
        // TOTAL, not SUM: a damaged count cannot overflow the query.
        let total: f64 = self
            .conn
            .query_row(
                "SELECT TOTAL(bars) FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 AND span BETWEEN ?3 AND ?4",
                params![symbol, timeframe.as_str(), spans.0, spans.1],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::with_capacity((total.max(0.0) as usize).min(1 << 26));
        let mut digests = Vec::new();
        self.each_span(symbol, timeframe, spans, &mut out, |_, digest| {
            digests.push(digest);
            true
        })?;
        let start = out.partition_point(|c| c.time_ms < from);
        let end = out.partition_point(|c| c.time_ms < to);
        out.truncate(end);
        out.drain(..start);
        Ok((out, digests))
    }

    /// Reads the spans `first..=last` in time order, appending each one's
    /// bars to `out`, then calls `done(out, its digest)`, which may take
    /// them and says whether to go on. Each span is checked against its
    /// own digest and bar count, its bars against the candle rules, their
    /// order and their span: bars changed behind Keel's back are refused,
    /// never backtested. `Ok(false)` when `done` stopped the read.
    fn each_span(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        (first, last): (i64, i64),
        out: &mut Vec<Candle>,
        mut done: impl FnMut(&mut Vec<Candle>, [u8; 32]) -> bool,
    ) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SPAN_COLUMNS} FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 AND span BETWEEN ?3 AND ?4
                 ORDER BY span"
            ))
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![symbol, timeframe.as_str(), first, last])
            .map_err(|e| self.sql(e))?;
        let (mut grid, mut plain) = (None, Vec::new());
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            let span: i64 = row.get(0).map_err(|e| self.sql(e))?;
            let digest =
                stored_span(row, span, timeframe, &mut grid, out, &mut plain).map_err(|fault| {
                    self.corrupt(
                        symbol,
                        timeframe,
                        said_times(row, span, &fault),
                        fault.why(),
                    )
                })?;
            if !done(out, digest) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The catalogue's row of a series; `None` when it lists none.
    pub fn series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
    ) -> Result<Option<StoredSeries>, StoreError> {
        self.conn
            .query_row(
                "SELECT symbol, timeframe, bars, first_ms, last_ms, gaps, missing, digest
                 FROM candle_series WHERE symbol = ?1 AND timeframe = ?2",
                params![symbol, timeframe.as_str()],
                listed,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// A whole stored series with its digest, as the catalogue keeps it
    /// (not recomputed from the bars: checked against the spans' own
    /// digests); `None` when nothing is stored.
    pub fn load_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
    ) -> Result<Option<(Vec<Candle>, String)>, StoreError> {
        let listed = self.series(symbol, timeframe)?;
        let (candles, digests) = self.read_spans(symbol, timeframe, None, None)?;
        let Some(listed) = listed else {
            return match candles.first().zip(candles.last()) {
                None => Ok(None),
                Some((a, b)) => Err(self.corrupt(
                    symbol,
                    timeframe,
                    (a.time_ms, b.time_ms),
                    "the catalogue has no row for them",
                )),
            };
        };
        let range = candles.first().zip(candles.last());
        let range = range.map(|(a, b)| (a.time_ms, b.time_ms));
        self.agrees(&listed, timeframe, candles.len(), range, &digests)?;
        Ok(Some((candles, listed.digest)))
    }

    /// A whole series the catalogue lists (`series`), span by span: `each`
    /// gets each span's bars as they are read, checked as `load_series`
    /// checks them, and says whether to go on; at the end the whole is
    /// checked against the catalogue. A caller that acts on the spans
    /// before the end must undo what it did on an error. `Ok(false)` when
    /// `each` stopped the read. The bars are read into the same memory
    /// span after span (written over, not freshly taken from the system,
    /// whose every new page costs a fault): `each` takes them if it keeps
    /// them.
    pub fn stream_series(
        &self,
        listed: &StoredSeries,
        timeframe: Timeframe,
        mut each: impl FnMut(&mut Vec<Candle>) -> bool,
    ) -> Result<bool, StoreError> {
        let symbol = &listed.symbol;
        let (mut bars, mut range, mut digests) = (0, None::<(i64, i64)>, Vec::new());
        let mut out = Vec::new();
        let whole = self.each_span(
            symbol,
            timeframe,
            (i64::MIN, i64::MAX),
            &mut out,
            |out, digest| {
                let (Some(first), Some(last)) = (out.first(), out.last()) else {
                    return true;
                };
                range = Some((range.map_or(first.time_ms, |r| r.0), last.time_ms));
                bars += out.len();
                digests.push(digest);
                let go_on = each(out);
                out.clear();
                go_on
            },
        )?;
        if whole {
            self.agrees(listed, timeframe, bars, range, &digests)?;
        }
        Ok(whole)
    }

    /// Whether the bars read (how many, their first and last times, their
    /// spans' digests) are what the catalogue lists; else why not.
    fn agrees(
        &self,
        listed: &StoredSeries,
        timeframe: Timeframe,
        bars: usize,
        range: Option<(i64, i64)>,
        digests: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        let agrees = listed.bars == bars as i64
            && range == Some((listed.first_ms, listed.last_ms))
            && columns::combine(digests) == listed.digest;
        if agrees {
            return Ok(());
        }
        Err(self.corrupt(
            &listed.symbol,
            timeframe,
            (listed.first_ms, listed.last_ms),
            "the catalogue and the bars disagree",
        ))
    }

    /// The open times of the series' bars a file marked partial (see
    /// `migrations/0013_candle_marks.sql`), oldest first. Only a mark at
    /// a stored bar's time counts: [`SpanMarks`] keeps those. Marks that no
    /// import leaves — not whole times, out of order, outside their span,
    /// for a span with no bars — are refused as damage: read as they were,
    /// a partial bar would be handed on as a whole one.
    pub fn marks(&self, symbol: &str, timeframe: Timeframe) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.span, m.times, EXISTS (SELECT 1 FROM candle_spans s
                     WHERE s.symbol = m.symbol AND s.timeframe = m.timeframe AND s.span = m.span)
                 FROM candle_marks m WHERE m.symbol = ?1 AND m.timeframe = ?2
                 ORDER BY m.span",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt
            .query(params![symbol, timeframe.as_str()])
            .map_err(|e| self.sql(e))?;
        let mut marks = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            let span: i64 = row.get(0).map_err(|e| self.sql(e))?;
            // Not a blob: no marks an import wrote.
            let bytes = stored_marks(row, 1).map_err(|e| self.sql(e))?;
            let bars: bool = row.get(2).map_err(|e| self.sql(e))?;
            let (from, to) = span_times(span);
            let bytes = bytes.unwrap_or_default();
            let times = marks_of_bytes(&bytes);
            let whole = bytes.len() == times.len() * 8
                && !times.is_empty()
                && times.windows(2).all(|w| w[0] < w[1])
                && times.iter().all(|t| (from..=to).contains(t));
            let why = match (bars, whole) {
                (false, _) => "marks of partial bars kept where no bars are",
                (true, false) => "its marks of partial bars are damaged",
                (true, true) => {
                    marks.extend(times);
                    continue;
                }
            };
            return Err(self.corrupt(symbol, timeframe, (from, to), why));
        }
        Ok(marks)
    }

    /// Holds the database as it is now for every read after this one,
    /// until the store is dropped: the catalogue, the marks and the spans
    /// read in turn are of one state, whatever an import commits in the
    /// meantime (which would make them disagree, and the bars seem
    /// damaged). For a store that only reads.
    pub fn hold_still(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(|e| self.sql(e))
    }

    /// Removes a stored series whole, damaged or not: its spans, its
    /// marks, its catalogue row and the cursors of downloads into it (so a download
    /// starts again rather than resuming past bars no longer there), in
    /// one transaction. How many bars it held (from its spans' counts);
    /// `None` when nothing of it was stored. The record of past imports
    /// is kept.
    ///
    /// `timeframe` is as the store spells it (`Timeframe::as_str`), or any
    /// text damage put there, so that such rows can be removed too.
    pub fn delete_series(
        &mut self,
        symbol: &str,
        timeframe: &str,
    ) -> Result<Option<i64>, StoreError> {
        let path = self.path.clone();
        let sql = |e| sql(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let key = params![symbol, timeframe];
        let (spans, bars): (i64, f64) = tx
            .query_row(
                "SELECT COUNT(*), TOTAL(bars) FROM candle_spans WHERE symbol = ?1 AND timeframe = ?2",
                key,
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql)?;
        let listed = tx
            .execute(
                "DELETE FROM candle_series WHERE symbol = ?1 AND timeframe = ?2",
                key,
            )
            .map_err(sql)?;
        // Anything of it removed (marks or a cursor alone, too) is said.
        let mut removed = spans.max(0) as usize + listed;
        for table in ["candle_spans", "candle_marks", "download_cursors"] {
            removed += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE symbol = ?1 AND timeframe = ?2"),
                    key,
                )
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok((removed > 0).then_some(bars.max(0.0) as i64))
    }

    /// Every stored series, from the catalogue.
    pub fn list_series(&self) -> Result<Vec<StoredSeries>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT symbol, timeframe, bars, first_ms, last_ms, gaps, missing, digest
                 FROM candle_series ORDER BY symbol, timeframe",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], listed).map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Reads a series the catalogue lists, every span, checked as a
    /// backtest's read checks them (`stream_series`), keeping nothing:
    /// `Ok` when it is whole, else the first damage found.
    pub fn check_series(&self, listed: &StoredSeries) -> Result<(), StoreError> {
        let timeframe = Timeframe::parse(&listed.timeframe).ok_or_else(|| {
            StoreError::Conflict(format!(
                "{}: {} is listed with a timeframe Keel does not know: {:?} \
                 (keel data delete {}@{} removes it)",
                self.path, listed.symbol, listed.timeframe, listed.symbol, listed.timeframe
            ))
        })?;
        let mut marks = SpanMarks::new(self.marks(&listed.symbol, timeframe)?);
        let whole = self.stream_series(listed, timeframe, |bars| {
            marks.of(bars);
            true
        })?;
        marks.check(self, &listed.symbol, timeframe, whole)
    }

    /// The series whose spans or marks are stored but that the catalogue
    /// does not list (which no import leaves: damage), as (symbol,
    /// timeframe).
    pub fn unlisted_series(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.symbol, s.timeframe FROM candle_spans s
                 WHERE NOT EXISTS (SELECT 1 FROM candle_series c
                                   WHERE c.symbol = s.symbol AND c.timeframe = s.timeframe)
                 UNION
                 SELECT m.symbol, m.timeframe FROM candle_marks m
                 WHERE NOT EXISTS (SELECT 1 FROM candle_series c
                                   WHERE c.symbol = m.symbol AND c.timeframe = m.timeframe)
                 ORDER BY 1, 2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = (stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))).map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    fn corrupt(
        &self,
        symbol: &str,
        timeframe: Timeframe,
        times: (i64, i64),
        why: &str,
    ) -> StoreError {
        StoreError::Conflict(format!(
            "{}; import them again with --replace",
            damaged(&self.path, symbol, timeframe, times, why)
        ))
    }
}

/// A span's marks as `candle_marks.times` holds them.
fn marks_bytes(times: &[i64]) -> Vec<u8> {
    times.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// `candle_marks.times` in column `i` of `row`: its bytes, or `None`
/// when it is no blob (which no import writes).
fn stored_marks(row: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match row.get_ref(i)? {
        rusqlite::types::ValueRef::Blob(bytes) => Some(bytes.to_vec()),
        _ => None,
    })
}

/// The times `candle_marks.times` holds (trailing bytes short of a time
/// are no mark).
fn marks_of_bytes(bytes: &[u8]) -> Vec<i64> {
    (bytes.chunks_exact(8))
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect()
}

/// The marks (`Store::marks`, oldest first) at the times of `bars`
/// (oldest first): a mark whose bar is not stored says nothing.
fn marks_at(marks: &[i64], bars: &[Candle]) -> Vec<i64> {
    (marks.iter().copied())
        .filter(|t| bars.binary_search_by_key(t, |c| c.time_ms).is_ok())
        .collect()
}

/// A stored series' marks of partial bars (oldest first), taken span by
/// span as its bars are read; a mark at none of them (which no import
/// leaves: damage that would hand a partial bar on as whole) is kept to
/// be said by [`SpanMarks::check`].
#[derive(Debug)]
pub struct SpanMarks {
    times: Vec<i64>,
    next: usize,
    stray: Option<i64>,
}

impl SpanMarks {
    /// `times`: as [`Store::marks`] gives them.
    pub fn new(times: Vec<i64>) -> SpanMarks {
        SpanMarks {
            times,
            next: 0,
            stray: None,
        }
    }

    /// Whether the series has any marks.
    pub fn any(&self) -> bool {
        !self.times.is_empty()
    }

    /// The marks up to the last of `bars` (oldest first), from where the
    /// last call left off; a mark at no bar's time is passed over, and
    /// the first such kept for [`check`](Self::check).
    pub fn of(&mut self, bars: &[Candle]) -> Vec<i64> {
        let Some(last) = bars.last() else {
            return Vec::new();
        };
        let rest = &self.times[self.next..];
        let end = rest.partition_point(|&t| t <= last.time_ms);
        self.next += end;
        let at = marks_at(&rest[..end], bars);
        if at.len() < end && self.stray.is_none() {
            self.stray = (rest[..end].iter().copied()).find(|t| at.binary_search(t).is_err());
        }
        at
    }

    /// After the series' bars were read (all of them when `whole`): a
    /// mark at none of their times as the damage it is.
    pub fn check(
        &self,
        store: &Store,
        symbol: &str,
        timeframe: Timeframe,
        whole: bool,
    ) -> Result<(), StoreError> {
        let left = whole.then(|| self.times.get(self.next).copied()).flatten();
        match self.stray.or(left) {
            None => Ok(()),
            Some(t) => Err(store.corrupt(
                symbol,
                timeframe,
                span_times(span_of(t)),
                "a mark of a partial bar at no stored bar's time",
            )),
        }
    }
}

/// A `candle_series` row, its columns in `StoredSeries`' order.
fn listed(r: &rusqlite::Row) -> rusqlite::Result<StoredSeries> {
    Ok(StoredSeries {
        symbol: r.get(0)?,
        timeframe: r.get(1)?,
        bars: r.get(2)?,
        first_ms: r.get(3)?,
        last_ms: r.get(4)?,
        gaps: r.get(5)?,
        missing: r.get(6)?,
        digest: r.get(7)?,
    })
}

/// `<db>: the stored SYMBOL TF bars of FROM .. TO are damaged (why)`.
fn damaged(
    path: &str,
    symbol: &str,
    timeframe: Timeframe,
    (from_ms, to_ms): (i64, i64),
    why: &str,
) -> String {
    format!(
        "{path}: the stored {symbol} {timeframe} bars of {} .. {} are damaged ({why})",
        format_time(from_ms),
        format_time(to_ms)
    )
}

fn sql(path: &str, error: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_owned(),
        error,
    }
}

/// The catalogue's row of a series, remade from its spans' own figures
/// (their columns are not read): bars, range, the gaps inside spans and
/// across their edges, and the digest of the spans' digests.
fn refresh_series(
    tx: &Transaction,
    symbol: &str,
    timeframe: &str,
    bar_ms: i64,
) -> rusqlite::Result<Result<(), (i64, &'static str)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT bars, first_ms, last_ms, gaps, missing, digest, span FROM candle_spans
         WHERE symbol = ?1 AND timeframe = ?2 ORDER BY span",
    )?;
    let spans = stmt
        .query_map(params![symbol, timeframe], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // A span's figures that cannot be its own (a span stored under
    // another's key, times out of it) would make a catalogue of nothing.
    for &(bars, first_ms, last_ms, .., span) in &spans {
        if bars < 1 || first_ms > last_ms || span_of(first_ms) != span || span_of(last_ms) != span {
            return Ok(Err((span, "its first and last times are not of it")));
        }
    }
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Ok(Ok(()));
    };
    let (mut bars, mut holes, mut missing) = (0, 0, 0);
    let mut digests = Vec::with_capacity(spans.len());
    for (i, (n, first_ms, _, g, m, digest, _)) in spans.iter().enumerate() {
        (bars, holes, missing) = (bars + n, holes + g, missing + m);
        if i > 0
            && let Some(m) = missing_between(spans[i - 1].2, *first_ms, bar_ms)
        {
            (holes, missing) = (holes + 1, missing + m as i64);
        }
        digests.push(<[u8; 32]>::try_from(&digest[..]).unwrap_or([0; 32]));
    }
    tx.execute(
        "INSERT OR REPLACE INTO candle_series
            (symbol, timeframe, bars, first_ms, last_ms, gaps, missing, digest, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            symbol,
            timeframe,
            bars,
            first.1,
            last.2,
            holes,
            missing,
            columns::combine(&digests),
            now_ms()
        ],
    )?;
    Ok(Ok(()))
}

/// Moves the rows of the old `candles` table (one row per bar) into spans
/// and the catalogue, then drops it: part of migration 11's transaction.
pub(super) fn move_rows_to_spans(tx: &Transaction) -> rusqlite::Result<()> {
    let series: Vec<(String, String)> = tx
        .prepare("SELECT DISTINCT symbol, timeframe FROM candles")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut scratch = SpanBytes::plain_only();
    for (symbol, timeframe) in series {
        let bar_ms = Timeframe::parse(&timeframe).map_or(0, Timeframe::duration_ms);
        let candles: Vec<Candle> = tx
            .prepare(
                "SELECT time_ms, open, high, low, close, volume FROM candles
                 WHERE symbol = ?1 AND timeframe = ?2 ORDER BY time_ms",
            )?
            .query_map(params![symbol, timeframe], |r| {
                Ok(Candle {
                    time_ms: r.get(0)?,
                    open: r.get(1)?,
                    high: r.get(2)?,
                    low: r.get(3)?,
                    close: r.get(4)?,
                    volume: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        for span in columns::spans(&candles) {
            write_span(tx, &symbol, &timeframe, bar_ms, span, &mut scratch)?;
        }
        // Rows made from rows: their spans' figures are their own.
        let _ = refresh_series(tx, &symbol, &timeframe, bar_ms)?;
    }
    tx.execute_batch("DROP TABLE candles")
}
mod import;
mod spans;

pub use import::Importer;
pub(crate) use import::import_in;
use spans::{SPAN_COLUMNS, SpanBytes, SpanFault, said_times, span_times, stored_span, write_span};

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod marks_tests;
#[cfg(test)]
mod tests;
