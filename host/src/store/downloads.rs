//! Where each download stands (`download_cursors`): a batch of bars and
//! the cursor past it commit in one transaction, so a download killed at
//! any moment has stored whole batches only, and the next run goes on from
//! the first bar not stored without counting any twice.

use rusqlite::{OptionalExtension, params};

use keel_model::candles::{Candle, Timeframe};

use super::candles::import_in;
use super::{ImportReport, Store, StoreError, now_ms};

/// Which download: a venue's pair at a timeframe, stored as `symbol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadKey<'a> {
    pub venue: &'a str,
    pub pair: &'a str,
    pub timeframe: Timeframe,
    pub symbol: &'a str,
}

/// How far a download has come: every bar opening from `from_ms` up to
/// (not including) `next_ms` is stored, or had no trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadCursor {
    pub from_ms: i64,
    pub next_ms: i64,
    /// The last bar stored, if any: a gap after it shows in the next batch.
    pub last_bar_ms: Option<i64>,
}

impl Store {
    /// Where the download `key` stands; `None` if it never committed.
    pub fn download_cursor(&self, key: &DownloadKey) -> Result<Option<DownloadCursor>, StoreError> {
        self.conn
            .query_row(
                "SELECT from_ms, next_ms, last_bar_ms FROM download_cursors
                 WHERE venue = ?1 AND pair = ?2 AND timeframe = ?3 AND symbol = ?4",
                params![key.venue, key.pair, key.timeframe.as_str(), key.symbol],
                |r| {
                    Ok(DownloadCursor {
                        from_ms: r.get(0)?,
                        next_ms: r.get(1)?,
                        last_bar_ms: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Stores `candles` (oldest first, all before `cursor.next_ms`) as
    /// `key.symbol` and moves the cursor to `cursor`, in one transaction.
    /// A stored bar with other values is refused unless `replace`, as an
    /// import's; then neither is written.
    pub fn commit_download(
        &mut self,
        key: &DownloadKey,
        candles: &[Candle],
        cursor: &DownloadCursor,
        replace: bool,
    ) -> Result<ImportReport, StoreError> {
        let path = self.path.clone();
        let sql = |error| StoreError::Sql {
            path: path.clone(),
            error,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let report = if candles.is_empty() {
            ImportReport {
                symbol: key.symbol.to_owned(),
                timeframe: key.timeframe,
                bars: 0,
                inserted: 0,
                unchanged: 0,
                replaced: 0,
                marked: 0,
                gaps: Vec::new(),
                range: None,
                mended: Vec::new(),
            }
        } else {
            let source = format!("{}:{}", key.venue, key.pair);
            import_in(
                &tx,
                &path,
                key.symbol,
                key.timeframe,
                candles,
                &source,
                &bars_digest(candles),
                replace,
            )?
        };
        tx.execute(
            "INSERT INTO download_cursors
                 (venue, pair, timeframe, symbol, from_ms, next_ms, last_bar_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (venue, pair, timeframe, symbol) DO UPDATE SET
                 from_ms = ?5, next_ms = ?6, last_bar_ms = ?7, updated_ms = ?8",
            params![
                key.venue,
                key.pair,
                key.timeframe.as_str(),
                key.symbol,
                cursor.from_ms,
                cursor.next_ms,
                cursor.last_bar_ms,
                now_ms()
            ],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(report)
    }
}

/// What a batch is recorded by in `candle_imports` (it has no file): the
/// BLAKE3 of its bars' values.
fn bars_digest(candles: &[Candle]) -> String {
    let mut h = blake3::Hasher::new();
    for c in candles {
        h.update(&c.time_ms.to_le_bytes());
        for v in [c.open, c.high, c.low, c.close, c.volume] {
            h.update(&v.to_le_bytes());
        }
    }
    format!("blake3:{}", h.finalize().to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::synth;

    #[test]
    fn a_batch_and_its_cursor_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
        let key = DownloadKey {
            venue: "kraken",
            pair: "XBTUSD",
            timeframe: Timeframe::H1,
            symbol: "XBT/USD",
        };
        assert_eq!(store.download_cursor(&key).expect("read"), None);
        let bars = synth::random_walk(1, 10, 0, 3_600_000, 100.0, 0.01);
        let cursor = DownloadCursor {
            from_ms: 0,
            next_ms: 10 * 3_600_000,
            last_bar_ms: Some(9 * 3_600_000),
        };
        let report = store
            .commit_download(&key, &bars, &cursor, false)
            .expect("commit");
        assert_eq!(report.inserted, 10);
        assert_eq!(store.download_cursor(&key).expect("read"), Some(cursor));
        let stored = store
            .load_candles("XBT/USD", Timeframe::H1, None, None)
            .expect("load");
        assert_eq!(stored, bars);

        // Another symbol or timeframe is another download.
        let other = DownloadKey {
            symbol: "BTC/USD",
            ..key
        };
        assert_eq!(store.download_cursor(&other).expect("read"), None);

        // A batch refused (a stored bar with other values) moves nothing.
        let mut changed = bars[8..].to_vec();
        changed[0].close = changed[0].low;
        let later = DownloadCursor {
            next_ms: 12 * 3_600_000,
            ..cursor
        };
        let err = store
            .commit_download(&key, &changed, &later, false)
            .expect_err("conflict");
        assert!(
            err.to_string().contains("already stored with other values"),
            "{err}"
        );
        assert_eq!(store.download_cursor(&key).expect("read"), Some(cursor));

        // Empty bars (a quiet stretch) move the cursor only.
        let quiet = DownloadCursor {
            next_ms: 15 * 3_600_000,
            ..cursor
        };
        let report = store
            .commit_download(&key, &[], &quiet, false)
            .expect("quiet");
        assert_eq!(report.bars, 0);
        assert_eq!(store.download_cursor(&key).expect("read"), Some(quiet));
    }
}
