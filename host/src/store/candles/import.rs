//! An import, span by span: bars handed over oldest first in pieces, each
//! span merged with what is stored of it and written once complete, the
//! catalogue remade at the end, all inside the caller's transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use keel_model::candles::columns::span_of;
use keel_model::candles::{Candle, Gap, Spacings, Timeframe, format_time, missing_between};

use super::{
    ImportReport, SPAN_COLUMNS, SpanBytes, SpanFault, damaged, marks_bytes, marks_of_bytes,
    refresh_series, said_times, span_times, sql, stored_marks, stored_span, write_span,
};
use crate::store::{StoreError, now_ms};

/// An import inside `tx` (for a caller that commits more with it, such as
/// a download's cursor): the spans the candles fall in are merged and
/// rewritten, the catalogue remade, and the import recorded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn import_in(
    tx: &Transaction,
    path: &str,
    symbol: &str,
    timeframe: Timeframe,
    candles: &[Candle],
    source: &str,
    source_digest: &str,
    replace: bool,
) -> Result<ImportReport, StoreError> {
    let mut import = Importer::new(tx, path, symbol, timeframe, source, replace);
    import.push(candles)?;
    import.finish(source_digest)
}

/// An import in progress, inside a transaction its caller commits: bars
/// are handed over oldest first, in as many pieces as the reader likes,
/// and each span is written once its last bar has come, so memory holds
/// one span whatever the file's size. Whatever fails leaves the rollback
/// to the caller: an import is all or nothing.
#[derive(Debug)]
pub struct Importer<'t> {
    tx: &'t Transaction<'t>,
    path: &'t str,
    /// What the bars are read from, as conflicts name it.
    source: String,
    replace: bool,
    report: ImportReport,
    /// The bars of the span being filled, not yet written.
    span: Vec<Candle>,
    spacing: Spacings,
    bytes: SpanBytes,
    /// The time the series' bars are whole timeframes from (the stored
    /// series' first bar, else the first bar handed), once known.
    grid: Option<Grid>,
    /// The spans the bars fell in, in order.
    spans: Vec<i64>,
    /// Why the first bar off the grid is (said at `finish`).
    off_grid: Option<String>,
    /// The open times of the bars handed that their file marks partial,
    /// not yet set (oldest first).
    marks: Vec<i64>,
}

/// What the bars' times are held to.
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// The time bars are whole timeframes from.
    anchor: i64,
    /// The stored series' first and last bars, if any.
    stored: Option<(i64, i64)>,
}

impl<'t> Importer<'t> {
    pub(super) fn new(
        tx: &'t Transaction<'t>,
        path: &'t str,
        symbol: &str,
        timeframe: Timeframe,
        source: &str,
        replace: bool,
    ) -> Importer<'t> {
        Importer {
            tx,
            path,
            source: source.to_owned(),
            replace,
            report: ImportReport {
                symbol: symbol.to_owned(),
                timeframe,
                bars: 0,
                inserted: 0,
                unchanged: 0,
                replaced: 0,
                marked: 0,
                gaps: Vec::new(),
                range: None,
                mended: Vec::new(),
            },
            span: Vec::new(),
            spacing: Spacings::default(),
            bytes: SpanBytes::default(),
            grid: None,
            spans: Vec::new(),
            off_grid: None,
            marks: Vec::new(),
        }
    }

    /// The next bars, oldest first and after every bar handed before
    /// (refused otherwise: a reader checks its order, this is the guard).
    pub fn push(&mut self, candles: &[Candle]) -> Result<(), StoreError> {
        let bar_ms = self.report.timeframe.duration_ms();
        for c in candles {
            self.check_grid(c.time_ms)?;
            if let Some((_, last)) = self.report.range {
                if c.time_ms <= last {
                    return Err(StoreError::Conflict(format!(
                        "{}: bars handed to the import out of order at {}",
                        self.path,
                        format_time(c.time_ms)
                    )));
                }
                if let Some(missing) = missing_between(last, c.time_ms, bar_ms) {
                    self.report.gaps.push(Gap {
                        after_ms: last,
                        missing,
                    });
                }
                self.spacing.add(c.time_ms - last);
                if span_of(c.time_ms) != span_of(last) {
                    self.write_span()?;
                }
            }
            let first = self.report.range.map_or(c.time_ms, |r| r.0);
            self.report.range = Some((first, c.time_ms));
            self.span.push(*c);
        }
        self.report.bars += candles.len();
        Ok(())
    }

    /// [`push`](Self::push), with the open times of the bars among
    /// `candles` that their file marks partial (oldest first): kept as
    /// the bars' marks. A bar stored unchanged keeps a mark it had unless
    /// the import replaces; any other bar handed has its file's mark, or
    /// none.
    pub fn push_marked(&mut self, candles: &[Candle], marks: &[i64]) -> Result<(), StoreError> {
        // Before the bars: the span they close is written with its marks.
        self.marks.extend_from_slice(marks);
        self.push(candles)
    }

    /// Notes the first bar that does not open a whole number of bars from
    /// the series' others, for `finish` to refuse: bars 30 s off a 1m
    /// series' are not its bars, and stored beside them they would be
    /// counted twice by every resample. (Said at the end, so that a caller
    /// that checks the bars' spacing first can say the timeframe is wrong.)
    /// Months have no fixed length, so no grid: a month's bar is refused
    /// when it is less than 28 days from its neighbour, stored or handed.
    fn check_grid(&mut self, time_ms: i64) -> Result<(), StoreError> {
        if self.off_grid.is_some() {
            return Ok(());
        }
        let timeframe = self.report.timeframe;
        let grid = match self.grid {
            Some(grid) => grid,
            None => {
                let stored = self.stored_range()?;
                *self.grid.insert(Grid {
                    anchor: stored.map_or(time_ms, |s| s.0),
                    stored,
                })
            }
        };
        let what = |time_ms| {
            format!(
                "{}: the {} {timeframe} bar at {}",
                self.source,
                self.report.symbol,
                format_time(time_ms)
            )
        };
        if timeframe != Timeframe::Month1 {
            if (time_ms - grid.anchor).rem_euclid(timeframe.duration_ms()) != 0 {
                let from = match grid.stored {
                    Some(_) => "the stored series' first bar",
                    None => "the first bar imported",
                };
                // Daily bars dated now beside ones stored at the instants
                // of their local midnights, before Keel dated them.
                const DAY_MS: i64 = 86_400_000;
                let dated_beside_instants = timeframe.duration_ms() >= DAY_MS
                    && grid.stored.is_some()
                    && time_ms.rem_euclid(DAY_MS) == 0
                    && grid.anchor.rem_euclid(DAY_MS) != 0;
                let hint = match dated_beside_instants {
                    true => format!(
                        "; daily bars written as local midnights are stored as their dates: \
                         remove the series stored at their instants with keel data delete \
                         {}@{timeframe} and import it again",
                        self.report.symbol
                    ),
                    false => String::new(),
                };
                self.off_grid = Some(format!(
                    "{} is off the grid of the series' bars (whole {timeframe} steps from \
                     {from}, at {}){hint}",
                    what(time_ms),
                    format_time(grid.anchor)
                ));
            }
            return Ok(());
        }
        const MONTH_MS: i64 = 28 * 86_400_000;
        let before = self.report.range.map(|r| r.1);
        let (first, last) = grid.stored.map_or((None, None), |s| (Some(s.0), Some(s.1)));
        let near = [
            before,
            last.filter(|&l| l < time_ms),
            first.filter(|&f| f > time_ms),
        ]
        .into_iter()
        .flatten()
        .find(|&other| (time_ms - other).abs() < MONTH_MS);
        if let Some(other) = near {
            let days = match (time_ms - other).abs() / 86_400_000 {
                1 => "1 day".to_owned(),
                n => format!("{n} days"),
            };
            self.off_grid = Some(format!(
                "{} is {days} from the bar at {} (months are 28 to 31 days apart)",
                what(time_ms),
                format_time(other)
            ));
        }
        Ok(())
    }

    /// The stored series' first and last bars, by its spans' own figures
    /// (the catalogue may be what is damaged). A catalogue that does not
    /// list what the spans hold (no row, or another count or range) is
    /// refused, unless `replace`, which makes it again and says so.
    fn stored_range(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
        let (symbol, timeframe) = (&self.report.symbol, self.report.timeframe);
        let key = params![symbol, timeframe.as_str()];
        let sql = |e| sql(self.path, e);
        let spans: (f64, Option<i64>, Option<i64>) = self
            .tx
            .query_row(
                "SELECT TOTAL(bars), MIN(first_ms), MAX(last_ms) FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2",
                key,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql)?;
        let listed: Option<(i64, i64, i64)> = self
            .tx
            .query_row(
                "SELECT bars, first_ms, last_ms FROM candle_series
                 WHERE symbol = ?1 AND timeframe = ?2",
                key,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?;
        let range = spans.1.zip(spans.2);
        let agrees = match (listed, range) {
            (None, None) => true,
            (Some((bars, first, last)), Some(range)) => {
                bars as f64 == spans.0 && (first, last) == range
            }
            _ => false,
        };
        if !agrees {
            let (first, last) = range.or(listed.map(|l| (l.1, l.2))).unwrap_or_default();
            let what = format!(
                "the stored {symbol} {timeframe} bars of {} .. {}",
                format_time(first),
                format_time(last)
            );
            if !self.replace {
                return Err(StoreError::Conflict(format!(
                    "{}: {what} are damaged (the catalogue and the bars disagree); nothing \
                     imported (use --replace to make the catalogue again)",
                    self.path
                )));
            }
            self.report.mended.push(format!(
                "made the catalogue of {what} again (it and the spans' figures disagreed)"
            ));
        }
        // The grid is counted from the first stored bar itself, read and
        // checked (figures may be what is damaged), else from the figures.
        let first_bar = self
            .tx
            .query_row(
                &format!(
                    "SELECT {SPAN_COLUMNS} FROM candle_spans
                     WHERE symbol = ?1 AND timeframe = ?2 ORDER BY span LIMIT 1"
                ),
                key,
                |row| {
                    let span: i64 = row.get(0)?;
                    let mut bars = Vec::new();
                    let plain = &mut self.bytes.plain;
                    let read = stored_span(row, span, timeframe, &mut None, &mut bars, plain);
                    Ok(bars
                        .first()
                        .filter(|_| !matches!(read, Err(SpanFault::Bars(_))))
                        .map(|c| c.time_ms))
                },
            )
            .optional()
            .map_err(sql)?
            .flatten();
        Ok(match (first_bar, range) {
            (Some(first), Some((_, last))) => Some((first, last.max(first))),
            _ => range,
        })
    }

    /// Hands `each` every stored span row of the series (its key and the
    /// row, [`SPAN_COLUMNS`]), oldest first.
    fn each_stored_span(
        &self,
        mut each: impl FnMut(i64, &rusqlite::Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let sql = |e| sql(self.path, e);
        let mut stmt = self
            .tx
            .prepare(&format!(
                "SELECT {SPAN_COLUMNS} FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 ORDER BY span"
            ))
            .map_err(sql)?;
        let key = params![self.report.symbol, self.report.timeframe.as_str()];
        let mut rows = stmt.query(key).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            each(row.get(0).map_err(sql)?, row)?;
        }
        Ok(())
    }

    /// A month's bars, stored and imported, at least 28 days apart: read
    /// whole (a monthly series is a few hundred bars).
    fn check_months(&self) -> Result<(), StoreError> {
        let (symbol, timeframe) = (&self.report.symbol, self.report.timeframe);
        let (mut bars, mut plain) = (Vec::new(), Vec::new());
        self.each_stored_span(|span, row| {
            stored_span(row, span, timeframe, &mut None, &mut bars, &mut plain).map_err(
                |fault| {
                    StoreError::Conflict(format!(
                        "{}; nothing imported",
                        damaged(
                            self.path,
                            symbol,
                            timeframe,
                            said_times(row, span, &fault),
                            fault.why()
                        )
                    ))
                },
            )?;
            Ok(())
        })?;
        const MONTH_MS: i64 = 28 * 86_400_000;
        match bars
            .windows(2)
            .find(|w| w[1].time_ms - w[0].time_ms < MONTH_MS)
        {
            None => Ok(()),
            Some(w) => Err(StoreError::Conflict(format!(
                "{}: the {symbol} {timeframe} bar at {} would be {} days after the one at {} \
                 (months are 28 to 31 days apart); nothing imported",
                self.source,
                format_time(w[1].time_ms),
                (w[1].time_ms - w[0].time_ms) / 86_400_000,
                format_time(w[0].time_ms)
            ))),
        }
    }

    /// The spacings between the bars handed so far.
    pub fn spacings(&self) -> &keel_model::candles::Spacings {
        &self.spacing
    }

    /// Writes the last span, remakes the catalogue's row and records the
    /// import (of a source whose digest is `source_digest`).
    pub fn finish(mut self, source_digest: &str) -> Result<ImportReport, StoreError> {
        if let Some(why) = self.off_grid.take() {
            return Err(StoreError::Conflict(format!("{why}; nothing imported")));
        }
        self.write_span()?;
        if self.replace {
            self.mend_the_rest()?;
        }
        if self.report.timeframe == Timeframe::Month1 {
            self.check_months()?;
        }
        let sql = |e| sql(self.path, e);
        let (symbol, timeframe) = (&self.report.symbol, self.report.timeframe);
        // Marks of spans with no bars (no import leaves them) mark nothing.
        self.tx
            .execute(
                "DELETE FROM candle_marks WHERE symbol = ?1 AND timeframe = ?2
                 AND span NOT IN (SELECT span FROM candle_spans WHERE symbol = ?1 AND timeframe = ?2)",
                params![symbol, timeframe.as_str()],
            )
            .map_err(sql)?;
        let refreshed =
            refresh_series(self.tx, symbol, timeframe.as_str(), timeframe.duration_ms())
                .map_err(sql)?;
        if let Err((span, why)) = refreshed {
            return Err(StoreError::Conflict(format!(
                "{}; nothing imported (use --replace to drop them)",
                damaged(self.path, symbol, timeframe, span_times(span), why)
            )));
        }
        self.tx
            .execute(
                "INSERT INTO candle_imports (symbol, timeframe, source, file_digest, bars, inserted, gaps, imported_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    symbol,
                    timeframe.as_str(),
                    self.source,
                    source_digest,
                    self.report.bars as i64,
                    self.report.inserted as i64,
                    self.report.gaps.len() as i64,
                    now_ms()
                ],
            )
            .map_err(sql)?;
        Ok(self.report)
    }

    /// Reads every stored span of the series the import did not write,
    /// checked as every read checks it: one whose bars are damaged is
    /// dropped, one whose bars are whole but whose figures are not theirs
    /// has them made again; each is said in the report. `--replace` is how
    /// damage is mended, and damaged bars the file does not cover can only
    /// be dropped. (Without it, an import reads only the spans it writes.)
    fn mend_the_rest(&mut self) -> Result<(), StoreError> {
        let (path, tx) = (self.path, self.tx);
        let sql = |e| sql(path, e);
        let (symbol, timeframe) = (self.report.symbol.clone(), self.report.timeframe);
        let bar_ms = timeframe.duration_ms();
        let (mut faults, mut plain) = (Vec::new(), Vec::new());
        self.each_stored_span(|span, row| {
            if self.spans.binary_search(&span).is_ok() {
                return Ok(());
            }
            let mut bars = Vec::new();
            let mut grid = self.grid.map(|g| g.anchor);
            if let Err(fault) = stored_span(row, span, timeframe, &mut grid, &mut bars, &mut plain)
            {
                faults.push((span, fault, bars, Listed::of(row)));
            }
            Ok(())
        })?;
        for (span, fault, bars, listed) in faults {
            // Whole bars are kept and their figures made again; damaged
            // bars, or a span with none, are dropped.
            let fault = match fault {
                SpanFault::Figures(_) if !bars.is_empty() => {
                    write_span(
                        tx,
                        &symbol,
                        timeframe.as_str(),
                        bar_ms,
                        &bars,
                        &mut self.bytes,
                    )
                    .map_err(sql)?;
                    fault
                }
                other => {
                    tx.execute(
                        "DELETE FROM candle_spans WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3",
                        params![symbol, timeframe.as_str(), span],
                    )
                    .map_err(sql)?;
                    tx.execute(
                        "DELETE FROM candle_marks WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3",
                        params![symbol, timeframe.as_str(), span],
                    )
                    .map_err(sql)?;
                    SpanFault::Bars(other.why().to_owned())
                }
            };
            self.note_mended(span, &fault, None, listed);
        }
        Ok(())
    }

    /// Says in the report what became of the damaged span `span`
    /// (`written`: the import's bars were written into it, and whether
    /// they cover all its row listed), with what its row listed of the
    /// bars it held, when that could be read.
    fn note_mended(
        &mut self,
        span: i64,
        fault: &SpanFault,
        written: Option<bool>,
        listed: Option<Listed>,
    ) {
        let (from, to) = span_times(span);
        let bars = format!(
            "stored bars of {} .. {}",
            format_time(from),
            format_time(to)
        );
        let why = match listed {
            Some(listed) => format!("{}; {listed}", fault.why()),
            None => fault.why().to_owned(),
        };
        self.report.mended.push(match (fault, written) {
            (SpanFault::Bars(_), None) => format!(
                "dropped damaged {bars} ({why}): import the file that has them to have them back"
            ),
            (SpanFault::Bars(_), Some(false)) => format!(
                "dropped damaged {bars} ({why}): the span holds this file's bars alone; \
                 import the file that has the rest to have them back"
            ),
            (SpanFault::Bars(_), Some(true)) => format!(
                "dropped damaged {bars} ({why}): this file's bars, which cover all it listed, \
                 take their place"
            ),
            (SpanFault::Figures(_), _) => {
                format!("made the figures of {bars} again from their bars ({why})")
            }
        });
    }

    /// The span being filled, merged with what is stored of it and
    /// written when that changes anything; then emptied.
    fn write_span(&mut self) -> Result<(), StoreError> {
        let Some(first) = self.span.first() else {
            return Ok(());
        };
        let (path, tx) = (self.path, self.tx);
        let (symbol, timeframe) = (self.report.symbol.clone(), self.report.timeframe);
        let symbol = symbol.as_str();
        let span = span_of(first.time_ms);
        self.spans.push(span);
        let sql = |e| sql(path, e);
        // The stored span, checked as every read checks it: damaged bars
        // are never merged and written back under a new digest. With
        // `replace` the damaged span is dropped and made of these bars.
        let mut bars = Vec::new();
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {SPAN_COLUMNS} FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3"
            ))
            .and_then(|mut stmt| {
                let mut rows = stmt.query(params![symbol, timeframe.as_str(), span])?;
                let mut grid = self.grid.map(|g| g.anchor);
                Ok(rows.next()?.map(|row| {
                    let plain = &mut self.bytes.plain;
                    let read = stored_span(row, span, timeframe, &mut grid, &mut bars, plain);
                    (
                        read.map_err(|f| {
                            let said = said_times(row, span, &f);
                            (f, said)
                        }),
                        Listed::of(row),
                    )
                }))
            })
            .map_err(sql)?;
        // Whole bars with wrong figures are kept (and the span written,
        // which makes the figures again); damaged bars are dropped.
        let mut rewrite = false;
        if let Some((Err((fault, said)), listed)) = stored {
            if !self.replace {
                return Err(StoreError::Conflict(format!(
                    "{}; nothing imported (use --replace to mend it with these bars)",
                    damaged(path, symbol, timeframe, said, fault.why())
                )));
            }
            if let SpanFault::Bars(_) = fault {
                bars.clear();
            }
            // The file's bars cover all the row listed: nothing is lost.
            let covered = listed.is_some_and(|l| {
                let (first, last) = (self.span.first(), self.span.last());
                first
                    .zip(last)
                    .is_some_and(|(f, e)| f.time_ms <= l.first_ms && l.last_ms <= e.time_ms)
            });
            self.note_mended(span, &fault, Some(covered), listed);
            rewrite = true;
        }
        let (report, source) = (&mut self.report, &self.source);
        let counts = (report.inserted, report.replaced);
        let merged =
            merge(&bars, &self.span, self.replace, report).map_err(|(at, name, old, new)| {
                StoreError::Conflict(format!(
                    "{source}: {symbol} {timeframe} {} is already stored with other values \
                 ({name} {old} there, {new} here); nothing imported (use --replace to overwrite)",
                    format_time(at)
                ))
            })?;
        if rewrite || (report.inserted, report.replaced) != counts {
            write_span(
                tx,
                symbol,
                timeframe.as_str(),
                timeframe.duration_ms(),
                &merged,
                &mut self.bytes,
            )
            .map_err(sql)?;
        }
        self.set_marks(span, &bars, &merged)?;
        self.span.clear();
        Ok(())
    }

    /// The marks of the span's bars handed (`self.span`; `stored`: the
    /// span's bars before them): each has its file's mark, or none, but
    /// for a bar stored unchanged, which keeps a mark it had unless the
    /// import replaces (then the file's marks are the bars' marks).
    /// `merged`: the span's bars now. A mark at none of them (a damaged
    /// span's dropped bars, or damage to the marks) goes, and marks not
    /// stored as an import stores them are written again.
    fn set_marks(
        &mut self,
        span: i64,
        stored: &[Candle],
        merged: &[Candle],
    ) -> Result<(), StoreError> {
        let (path, tx) = (self.path, self.tx);
        let sql = |e| sql(path, e);
        let handed = &self.span;
        let Some(last) = handed.last() else {
            return Ok(());
        };
        let at = |bars: &[Candle], t: i64| bars.binary_search_by_key(&t, |c| c.time_ms).ok();
        let cut = self.marks.partition_point(|&t| t <= last.time_ms);
        let marks: Vec<i64> = (self.marks.drain(..cut))
            .filter(|&t| at(handed, t).is_some())
            .collect();
        let key = params![self.report.symbol, self.report.timeframe.as_str(), span];
        // The row's bytes, or none when it is no blob (damage: written again).
        let had: Option<Vec<u8>> = tx
            .prepare_cached(
                "SELECT times FROM candle_marks WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3",
            )
            .and_then(|mut stmt| {
                (stmt.query_row(key, |r| stored_marks(r, 0)))
                    .optional()
                    .map(|row| row.unwrap_or(Some(Vec::new())))
            })
            .map_err(sql)?;
        let keep = |t: i64| match at(handed, t) {
            Some(i) => {
                let unchanged = at(stored, t).is_some_and(|j| stored[j] == handed[i]);
                (unchanged && !self.replace) || marks.binary_search(&t).is_ok()
            }
            None => at(merged, t).is_some(),
        };
        let mut kept: Vec<i64> = (marks_of_bytes(had.as_deref().unwrap_or_default()).into_iter())
            .filter(|&t| keep(t))
            .collect();
        kept.extend_from_slice(&marks);
        kept.sort_unstable();
        kept.dedup();
        self.report.marked += marks.len();
        if had.is_some_and(|had| marks_bytes(&kept) == had) {
            return Ok(());
        }
        let (symbol, timeframe) = (&self.report.symbol, self.report.timeframe.as_str());
        let changed = match kept.is_empty() {
            true => tx
                .prepare_cached(
                    "DELETE FROM candle_marks WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![symbol, timeframe, span])),
            false => tx
                .prepare_cached(
                    "INSERT INTO candle_marks (symbol, timeframe, span, times)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (symbol, timeframe, span) DO UPDATE SET times = excluded.times",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![symbol, timeframe, span, marks_bytes(&kept)])
                }),
        };
        changed.map_err(sql)?;
        Ok(())
    }
}

/// `stored` and `incoming` (both oldest first) as one series, counting in
/// `report`; a bar stored with other values is `(time, the first value
/// that differs: its name, stored, incoming)` unless `replace`.
fn merge(
    stored: &[Candle],
    incoming: &[Candle],
    replace: bool,
    report: &mut ImportReport,
) -> Result<Vec<Candle>, (i64, &'static str, f64, f64)> {
    let mut out = Vec::with_capacity(stored.len() + incoming.len());
    let mut old = stored.iter().peekable();
    for new in incoming {
        while let Some(o) = old.next_if(|o| o.time_ms < new.time_ms) {
            out.push(*o);
        }
        match old.next_if(|o| o.time_ms == new.time_ms) {
            Some(o) if o == new => report.unchanged += 1,
            Some(o) if !replace => {
                let values = |c: &Candle| [c.open, c.high, c.low, c.close, c.volume];
                let names = ["open", "high", "low", "close", "volume"];
                let (name, (there, here)) = names
                    .into_iter()
                    .zip(values(o).into_iter().zip(values(new)))
                    .find(|(_, (a, b))| a != b)
                    .unwrap_or(("close", (o.close, new.close)));
                return Err((new.time_ms, name, there, here));
            }
            Some(_) => report.replaced += 1,
            None => report.inserted += 1,
        }
        out.push(*new);
    }
    out.extend(old);
    Ok(out)
}

/// What a span's row lists of its bars: how many, the first and the last.
#[derive(Debug, Clone, Copy)]
struct Listed {
    bars: i64,
    first_ms: i64,
    last_ms: i64,
}

impl Listed {
    /// The row's figures (`SPAN_COLUMNS`' bars, first and last), when each
    /// is a number.
    fn of(row: &rusqlite::Row) -> Option<Listed> {
        let figure = |i: usize| row.get::<_, i64>(i).ok();
        Some(Listed {
            bars: figure(1)?,
            first_ms: figure(4)?,
            last_ms: figure(5)?,
        })
    }
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, last) = (format_time(self.first_ms), format_time(self.last_ms));
        match self.bars {
            1 => write!(f, "its row lists 1 bar, at {first}"),
            n => write!(f, "its row lists {n} bars, {first} .. {last}"),
        }
    }
}
