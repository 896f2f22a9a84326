//! The candle store: validated series by symbol and timeframe, kept by
//! columns in spans of the clock (`keel_model::candles::columns`: one row
//! per 65,536 minutes, read in bulk), with a catalogue of every series
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

use rusqlite::{OptionalExtension, Transaction, params};

use keel_model::candles::columns::{self, span_of};
use keel_model::candles::{
    Candle, Gap, Timeframe, check_candle, format_time, gaps, missing_between,
};

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
    /// The gaps in what was imported (not in the whole series).
    pub gaps: Vec<Gap>,
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

/// The digest of a file's bytes, read as a stream: `blake3:<hex>`.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
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
        self.import_candles_from(symbol, timeframe, candles, source, &digest, replace)
    }

    /// `import_candles`, the source named by its digest (`file_digest`).
    pub fn import_candles_from(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        candles: &[Candle],
        source: &str,
        source_digest: &str,
        replace: bool,
    ) -> Result<ImportReport, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        let report = import_in(
            &tx,
            &path,
            symbol,
            timeframe,
            candles,
            source,
            source_digest,
            replace,
        )?;
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
    /// the spans' digests. Each span is checked against its own digest and
    /// bar count, its bars against the candle rules, their order and their
    /// span: bars changed behind Keel's back are refused, never backtested.
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
        let key = params![symbol, timeframe.as_str(), spans.0, spans.1];
        // TOTAL, not SUM: a damaged count cannot overflow the query.
        let total: f64 = self
            .conn
            .query_row(
                "SELECT TOTAL(bars) FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 AND span BETWEEN ?3 AND ?4",
                key,
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::with_capacity((total.max(0.0) as usize).min(1 << 26));
        let mut digests = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT span, bars, digest, columns FROM candle_spans
                 WHERE symbol = ?1 AND timeframe = ?2 AND span BETWEEN ?3 AND ?4
                 ORDER BY span",
            )
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt.query(key).map_err(|e| self.sql(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            let span: i64 = row.get(0).map_err(|e| self.sql(e))?;
            let damaged = |why: &str| self.corrupt(symbol, timeframe, span, why);
            let bars: i64 = row
                .get(1)
                .map_err(|_| damaged("its bar count is not a number"))?;
            let digest: [u8; 32] = (row.get_ref(2).ok())
                .and_then(|v| v.as_blob().ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| damaged("its digest is not one"))?;
            let bytes = (row.get_ref(3).ok())
                .and_then(|v| v.as_blob().ok())
                .ok_or_else(|| damaged("its columns are not bytes"))?;
            if columns::span_digest(bytes) != digest {
                return Err(damaged("its bars do not match their digest"));
            }
            let before = out.len();
            let whole = columns::decode(bytes, &mut out).is_some();
            if !whole || (out.len() - before) as i64 != bars {
                return Err(damaged("its columns are not its bars"));
            }
            for (i, c) in out[before..].iter().enumerate() {
                let previous = (before + i).checked_sub(1).map(|p| out[p].time_ms);
                let why = if span_of(c.time_ms) != span {
                    Err(format!("a bar at {} is outside it", format_time(c.time_ms)))
                } else if previous.is_some_and(|p| c.time_ms <= p) {
                    Err("its bars are out of order".to_owned())
                } else {
                    check_candle(c)
                };
                if let Err(why) = why {
                    return Err(damaged(&why));
                }
            }
            digests.push(digest);
        }
        let start = out.partition_point(|c| c.time_ms < from);
        let end = out.partition_point(|c| c.time_ms < to);
        out.truncate(end);
        out.drain(..start);
        Ok((out, digests))
    }

    /// A whole stored series with its digest, as the catalogue keeps it
    /// (not recomputed from the bars: checked against the spans' own
    /// digests); `None` when nothing is stored.
    pub fn load_series(
        &self,
        symbol: &str,
        timeframe: Timeframe,
    ) -> Result<Option<(Vec<Candle>, String)>, StoreError> {
        let listed: Option<(i64, i64, i64, String)> = self
            .conn
            .query_row(
                "SELECT bars, first_ms, last_ms, digest FROM candle_series
                 WHERE symbol = ?1 AND timeframe = ?2",
                params![symbol, timeframe.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let (candles, digests) = self.read_spans(symbol, timeframe, None, None)?;
        let Some((bars, first_ms, last_ms, digest)) = listed else {
            return match candles.first() {
                None => Ok(None),
                Some(c) => Err(self.corrupt(
                    symbol,
                    timeframe,
                    span_of(c.time_ms),
                    "the catalogue has no row for them",
                )),
            };
        };
        let agrees = bars == candles.len() as i64
            && candles.first().map(|c| c.time_ms) == Some(first_ms)
            && candles.last().map(|c| c.time_ms) == Some(last_ms)
            && columns::combine(&digests) == digest;
        if !agrees {
            return Err(self.corrupt(
                symbol,
                timeframe,
                span_of(first_ms),
                "the catalogue and the bars disagree",
            ));
        }
        Ok(Some((candles, digest)))
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
        let rows = stmt
            .query_map([], |r| {
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
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    fn corrupt(&self, symbol: &str, timeframe: Timeframe, span: i64, why: &str) -> StoreError {
        StoreError::Conflict(format!(
            "{}: the stored {symbol} {timeframe} bars from {} are damaged ({why}); import them again with --replace",
            self.path,
            format_time(span.saturating_mul(columns::SPAN_MS))
        ))
    }
}

fn sql(path: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_owned(),
        source,
    }
}

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
    let sql = |e| sql(path, e);
    let mut report = ImportReport {
        symbol: symbol.to_owned(),
        timeframe,
        bars: candles.len(),
        inserted: 0,
        unchanged: 0,
        replaced: 0,
        gaps: gaps(candles, timeframe.duration_ms()),
    };
    let mut bytes = Vec::new();
    for incoming in columns::spans(candles) {
        let span = span_of(incoming[0].time_ms);
        let stored: Option<Vec<u8>> = tx
            .query_row(
                "SELECT columns FROM candle_spans WHERE symbol = ?1 AND timeframe = ?2 AND span = ?3",
                params![symbol, timeframe.as_str(), span],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        let mut bars = Vec::new();
        if let Some(stored) = stored
            && columns::decode(&stored, &mut bars).is_none()
        {
            return Err(StoreError::Conflict(format!(
                "{path}: the stored {symbol} {timeframe} bars from {} are damaged; nothing imported",
                format_time(span.saturating_mul(columns::SPAN_MS))
            )));
        }
        let counts = (report.inserted, report.replaced);
        let merged =
            merge(&bars, incoming, replace, &mut report).map_err(|(at, name, old, new)| {
                StoreError::Conflict(format!(
                    "{source}: {symbol} {timeframe} {} is already stored with other values \
                 ({name} {old} there, {new} here); nothing imported (use --replace to overwrite)",
                    format_time(at)
                ))
            })?;
        if (report.inserted, report.replaced) != counts {
            write_span(
                tx,
                symbol,
                timeframe.as_str(),
                timeframe.duration_ms(),
                &merged,
                &mut bytes,
            )
            .map_err(sql)?;
        }
    }
    refresh_series(tx, symbol, timeframe.as_str(), timeframe.duration_ms()).map_err(sql)?;
    tx.execute(
        "INSERT INTO candle_imports (symbol, timeframe, source, file_digest, bars, inserted, gaps, imported_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            symbol,
            timeframe.as_str(),
            source,
            source_digest,
            candles.len() as i64,
            report.inserted as i64,
            report.gaps.len() as i64,
            now_ms()
        ],
    )
    .map_err(sql)?;
    Ok(report)
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

/// One span's bars, written whole over what was stored.
fn write_span(
    tx: &Transaction,
    symbol: &str,
    timeframe: &str,
    bar_ms: i64,
    bars: &[Candle],
    bytes: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let (Some(first), Some(last)) = (bars.first(), bars.last()) else {
        return Ok(());
    };
    columns::encode(bars, bytes);
    let holes = gaps(bars, bar_ms);
    let missing: u64 = holes.iter().map(|g| g.missing).sum();
    tx.prepare_cached(
        "INSERT INTO candle_spans (symbol, timeframe, span, bars, first_ms, last_ms, gaps, missing, digest, columns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (symbol, timeframe, span) DO UPDATE SET
            bars = excluded.bars, first_ms = excluded.first_ms, last_ms = excluded.last_ms,
            gaps = excluded.gaps, missing = excluded.missing, digest = excluded.digest,
            columns = excluded.columns",
    )?
    .execute(params![
        symbol,
        timeframe,
        span_of(first.time_ms),
        bars.len() as i64,
        first.time_ms,
        last.time_ms,
        holes.len() as i64,
        missing as i64,
        &columns::span_digest(bytes)[..],
        &bytes[..]
    ])?;
    Ok(())
}

/// The catalogue's row of a series, remade from its spans' own figures
/// (their columns are not read): bars, range, the gaps inside spans and
/// across their edges, and the digest of the spans' digests.
fn refresh_series(
    tx: &Transaction,
    symbol: &str,
    timeframe: &str,
    bar_ms: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "SELECT bars, first_ms, last_ms, gaps, missing, digest FROM candle_spans
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
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Ok(());
    };
    let (mut bars, mut holes, mut missing) = (0, 0, 0);
    let mut digests = Vec::with_capacity(spans.len());
    for (i, (n, first_ms, _, g, m, digest)) in spans.iter().enumerate() {
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
    Ok(())
}

/// Moves the rows of the old `candles` table (one row per bar) into spans
/// and the catalogue, then drops it: part of migration 11's transaction.
pub(super) fn move_rows_to_spans(tx: &Transaction) -> rusqlite::Result<()> {
    let series: Vec<(String, String)> = tx
        .prepare("SELECT DISTINCT symbol, timeframe FROM candles")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut bytes = Vec::new();
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
            write_span(tx, &symbol, &timeframe, bar_ms, span, &mut bytes)?;
        }
        refresh_series(tx, &symbol, &timeframe, bar_ms)?;
    }
    tx.execute_batch("DROP TABLE candles")
}
#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::synth;

    #[test]
    fn import_round_trips_and_refuses_silent_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
        let mut candles = synth::random_walk(3, 500, 0, 300_000, 10.0, 0.01);
        candles.remove(100); // a real gap
        let report = store
            .import_candles("ETH/BTC", Timeframe::M5, &candles, "a.csv", b"a", false)
            .expect("import");
        assert_eq!(
            (report.inserted, report.unchanged, report.replaced),
            (499, 0, 0)
        );
        assert_eq!(
            report.gaps,
            vec![Gap {
                after_ms: 99 * 300_000,
                missing: 1
            }]
        );
        assert_eq!(
            store
                .load_candles("ETH/BTC", Timeframe::M5, None, None)
                .expect("load"),
            candles
        );
        let window = store
            .load_candles(
                "ETH/BTC",
                Timeframe::M5,
                Some(10 * 300_000),
                Some(20 * 300_000),
            )
            .expect("window");
        assert_eq!(window, candles[10..20]);

        // The same file again changes nothing.
        let again = store
            .import_candles("ETH/BTC", Timeframe::M5, &candles, "a.csv", b"a", false)
            .expect("reimport");
        assert_eq!((again.inserted, again.unchanged), (0, 499));

        // Different values for a stored bar: refused whole, then allowed with replace.
        let mut changed = candles[..3].to_vec();
        changed[1].close = changed[1].low;
        let err = store
            .import_candles("ETH/BTC", Timeframe::M5, &changed, "b.csv", b"b", false)
            .expect_err("conflict");
        assert!(
            err.to_string()
                .contains("1970-01-01T00:05:00Z is already stored with other values"),
            "{err}"
        );
        let replaced = store
            .import_candles("ETH/BTC", Timeframe::M5, &changed, "b.csv", b"b", true)
            .expect("replace");
        assert_eq!((replaced.replaced, replaced.unchanged), (1, 2));

        let series = store.list_series().expect("list");
        assert_eq!(series.len(), 1);
        assert_eq!((series[0].bars, series[0].first_ms), (499, 0));
    }

    #[test]
    fn the_catalogue_counts_every_span_and_the_gaps_across_their_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
        // 200,000 minutes: four spans; one gap inside a span, one across an edge.
        let mut candles = synth::random_walk(5, 200_000, 0, 60_000, 10.0, 0.01);
        let edge = columns::SPAN_MS / 60_000;
        candles.drain(edge as usize - 2..edge as usize + 3);
        candles.drain(1000..1010);
        // Imported in two halves, the second overlapping the first.
        let half = candles.len() / 2;
        store
            .import_candles(
                "ETH/BTC",
                Timeframe::M1,
                &candles[..half + 50],
                "a",
                b"a",
                false,
            )
            .expect("first half");
        let second = store
            .import_candles("ETH/BTC", Timeframe::M1, &candles[half..], "b", b"b", false)
            .expect("second half");
        assert_eq!(
            (second.unchanged, second.inserted),
            (50, candles.len() - half - 50)
        );
        let listed = store.list_series().expect("list");
        assert_eq!(
            listed,
            vec![StoredSeries {
                symbol: "ETH/BTC".into(),
                timeframe: "1m".into(),
                bars: candles.len() as i64,
                first_ms: 0,
                last_ms: candles[candles.len() - 1].time_ms,
                gaps: 2,
                missing: 15,
                digest: columns::digest(&candles),
            }]
        );
        let (loaded, digest) = store
            .load_series("ETH/BTC", Timeframe::M1)
            .expect("load")
            .expect("stored");
        assert_eq!(loaded, candles);
        assert_eq!(digest, columns::digest(&candles));
        // A window across a span's edge.
        let (from, to) = (columns::SPAN_MS - 600_000, columns::SPAN_MS + 600_000);
        let window = store
            .load_candles("ETH/BTC", Timeframe::M1, Some(from), Some(to))
            .expect("window");
        let expected: Vec<Candle> = (candles.iter())
            .filter(|c| (from..to).contains(&c.time_ms))
            .copied()
            .collect();
        assert_eq!(window, expected);
        assert!(
            store
                .load_series("ETH/BTC", Timeframe::M5)
                .expect("load")
                .is_none()
        );
    }

    #[test]
    fn a_damaged_span_is_refused_by_name_not_handed_to_a_backtest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keel.db");
        let candles = synth::random_walk(9, 70_000, 0, 60_000, 10.0, 0.01);
        let fresh = || {
            let _ = std::fs::remove_file(&path);
            let mut store = Store::open(&path).expect("open");
            store
                .import_candles("ETH/BTC", Timeframe::M1, &candles, "a", b"a", false)
                .expect("import");
            store
        };
        let refused = |store: &Store, why: &str| {
            let err = store
                .load_series("ETH/BTC", Timeframe::M1)
                .expect_err(why)
                .to_string();
            assert!(
                err.contains("the stored ETH/BTC 1m bars from 1970-01-01T00:00:00Z are damaged")
                    && err.contains(why)
                    && err.ends_with("import them again with --replace"),
                "{why}: {err}"
            );
        };
        let mut bytes = Vec::new();
        let mut moved = candles[..65_536].to_vec();
        moved[7].close = moved[7].low;

        // A value changed, its digest not: caught by the digest.
        let store = fresh();
        columns::encode(&moved, &mut bytes);
        store
            .conn
            .execute(
                "UPDATE candle_spans SET columns = ?1 WHERE span = 0",
                [&bytes],
            )
            .expect("damage");
        refused(&store, "its bars do not match their digest");
        drop(store);

        // Both changed, as a hand that knows the layout would: the bars
        // no longer make the catalogue's digest.
        let store = fresh();
        store
            .conn
            .execute(
                "UPDATE candle_spans SET columns = ?1, digest = ?2 WHERE span = 0",
                params![&bytes, &columns::span_digest(&bytes)[..]],
            )
            .expect("damage");
        refused(&store, "the catalogue and the bars disagree");
        // … and a price no candle may have is refused even then.
        let mut negative = candles[..65_536].to_vec();
        negative[7].open = -1.0;
        columns::encode(&negative, &mut bytes);
        store
            .conn
            .execute(
                "UPDATE candle_spans SET columns = ?1, digest = ?2 WHERE span = 0",
                params![&bytes, &columns::span_digest(&bytes)[..]],
            )
            .expect("damage");
        refused(&store, "open -1 is outside the prices Keel books");
        drop(store);

        // A span gone: the series would be shorter than the catalogue says.
        let store = fresh();
        store
            .conn
            .execute("DELETE FROM candle_spans WHERE span = 1", [])
            .expect("damage");
        refused(&store, "the catalogue and the bars disagree");
        drop(store);

        // The catalogue's row gone, the bars left.
        let store = fresh();
        store
            .conn
            .execute("DELETE FROM candle_series", [])
            .expect("damage");
        refused(&store, "the catalogue has no row for them");
        drop(store);

        // Not bytes at all, and a count no query can sum.
        let store = fresh();
        store
            .conn
            .execute(
                "UPDATE candle_spans SET columns = 'hello' WHERE span = 0",
                [],
            )
            .expect("damage");
        refused(&store, "its columns are not bytes");
        drop(store);
        let store = fresh();
        store
            .conn
            .execute(
                "UPDATE candle_spans SET bars = 9223372036854775807 WHERE span = 0",
                [],
            )
            .expect("damage");
        refused(&store, "its columns are not its bars");
    }

    #[test]
    fn a_conflict_names_the_value_that_differs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
        let candles = synth::random_walk(9, 10, 0, 60_000, 10.0, 0.01);
        store
            .import_candles("ETH/BTC", Timeframe::M1, &candles, "a", b"a", false)
            .expect("import");
        let mut louder = candles.clone();
        louder[4].volume += 1.0;
        let err = store
            .import_candles("ETH/BTC", Timeframe::M1, &louder, "b.csv", b"b", false)
            .expect_err("conflict")
            .to_string();
        assert!(
            err.starts_with(&format!(
                "b.csv: ETH/BTC 1m 1970-01-01T00:04:00Z is already stored with other values (volume {} there, {} here)",
                candles[4].volume, louder[4].volume
            )),
            "{err}"
        );
    }

    #[test]
    fn a_database_of_rows_is_moved_into_spans_when_it_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keel.db");
        // A database as the last release left it: migrations 1 to 10, one
        // row per bar.
        let candles = synth::random_walk(4, 70_000, 0, 60_000, 10.0, 0.01);
        {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
            )
            .expect("schema");
            for &(version, name, sql) in &super::super::MIGRATIONS[..10] {
                conn.execute_batch(sql).expect("migration");
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                    params![version, name],
                )
                .expect("record");
            }
            let tx = conn.unchecked_transaction().expect("begin");
            let mut insert = tx
                .prepare("INSERT INTO candles VALUES ('ETH/BTC', '1m', ?1, ?2, ?3, ?4, ?5, ?6)")
                .expect("prepare");
            for c in &candles {
                insert
                    .execute(params![c.time_ms, c.open, c.high, c.low, c.close, c.volume])
                    .expect("row");
            }
            drop(insert);
            tx.commit().expect("commit");
            conn.execute(
                "INSERT INTO candle_imports (symbol, timeframe, source, sha256, bars, inserted, gaps, imported_ms)
                 VALUES ('ETH/BTC', '1m', 'a.csv', 'ab12', 70000, 70000, 0, 0)",
                [],
            )
            .expect("import row");
        }
        let store = Store::open(&path).expect("migrate");
        let (loaded, digest) = store
            .load_series("ETH/BTC", Timeframe::M1)
            .expect("load")
            .expect("stored");
        assert_eq!(loaded, candles);
        assert_eq!(digest, columns::digest(&candles));
        let spans: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM candle_spans", [], |r| r.get(0))
            .expect("spans");
        assert_eq!(spans, 2);
        let gone: bool = store
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'candles')",
                [],
                |r| r.get(0),
            )
            .expect("master");
        assert!(!gone, "the rows' table is dropped");
        let named: String = store
            .conn
            .query_row("SELECT file_digest FROM candle_imports", [], |r| r.get(0))
            .expect("import row");
        assert_eq!(named, "sha256:ab12");
    }
}
