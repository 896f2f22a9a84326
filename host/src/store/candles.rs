//! The candle store: validated series by symbol and timeframe.

use rusqlite::params;
use sha2::{Digest, Sha256};

use keel_model::candles::{Candle, Gap, Timeframe, format_time, gaps};

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
    pub gaps: Vec<Gap>,
}

/// A stored series' extent.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeries {
    pub symbol: String,
    pub timeframe: String,
    pub bars: i64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Store {
    /// Writes validated candles in one transaction. A stored bar with other
    /// values is a conflict, refused unless `replace`; then nothing is written.
    pub fn import_candles(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        candles: &[Candle],
        source: &str,
        source_bytes: &[u8],
        replace: bool,
    ) -> Result<ImportReport, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let mut report = ImportReport {
            symbol: symbol.to_owned(),
            timeframe,
            bars: candles.len(),
            inserted: 0,
            unchanged: 0,
            replaced: 0,
            gaps: gaps(candles, timeframe.duration_ms()),
        };
        {
            let mut find = tx
                .prepare_cached(
                    "SELECT open, high, low, close, volume FROM candles
                     WHERE symbol = ?1 AND timeframe = ?2 AND time_ms = ?3",
                )
                .map_err(sql)?;
            let mut write = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO candles (symbol, timeframe, time_ms, open, high, low, close, volume)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql)?;
            for c in candles {
                let stored: Option<[f64; 5]> = find
                    .query_row(params![symbol, timeframe.as_str(), c.time_ms], |r| {
                        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
                    })
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(sql)?;
                let incoming = [c.open, c.high, c.low, c.close, c.volume];
                match stored {
                    Some(old) if old == incoming => {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(old) if !replace => {
                        return Err(StoreError::Conflict(format!(
                            "{source}: {symbol} {timeframe} {} is already stored with other values \
                             (close {} there, {} here); nothing imported (use --replace to overwrite)",
                            format_time(c.time_ms),
                            old[3],
                            c.close
                        )));
                    }
                    Some(_) => report.replaced += 1,
                    None => report.inserted += 1,
                }
                write
                    .execute(params![
                        symbol,
                        timeframe.as_str(),
                        c.time_ms,
                        c.open,
                        c.high,
                        c.low,
                        c.close,
                        c.volume
                    ])
                    .map_err(sql)?;
            }
        }
        tx.execute(
            "INSERT INTO candle_imports (symbol, timeframe, source, sha256, bars, inserted, gaps, imported_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                symbol,
                timeframe.as_str(),
                source,
                hex::encode(Sha256::digest(source_bytes)),
                candles.len() as i64,
                report.inserted as i64,
                report.gaps.len() as i64,
                now_ms()
            ],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT time_ms, open, high, low, close, volume FROM candles
                 WHERE symbol = ?1 AND timeframe = ?2 AND time_ms >= ?3 AND time_ms < ?4
                 ORDER BY time_ms",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(
                params![
                    symbol,
                    timeframe.as_str(),
                    from_ms.unwrap_or(i64::MIN),
                    to_ms.unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(Candle {
                        time_ms: r.get(0)?,
                        open: r.get(1)?,
                        high: r.get(2)?,
                        low: r.get(3)?,
                        close: r.get(4)?,
                        volume: r.get(5)?,
                    })
                },
            )
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Every stored series with its extent.
    pub fn list_series(&self) -> Result<Vec<StoredSeries>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT symbol, timeframe, COUNT(*), MIN(time_ms), MAX(time_ms) FROM candles
                 GROUP BY symbol, timeframe ORDER BY symbol, timeframe",
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
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }
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
}
