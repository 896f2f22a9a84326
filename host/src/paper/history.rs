//! A run's history as its strategies were shown it, so that a strategy
//! starting mid-run — after a restart, a hot swap, or as a new shadow —
//! reaches exactly the state it would have had running from the start.
//!
//! A strategy's state is whatever its calls made it: recursive indicators
//! (Wilder's RSI, EMA, ATR) depend on every bar since it began, and its
//! decisions on the portfolio it was shown at each (a "flat?" check). So a
//! new instance is shown every bar the run booked, in order, each with the
//! portfolio its book held at that bar's close — what the running instance
//! was shown — and what it signals is discarded.
//!
//! Both come from the ledger. Each bar is stored in the transaction that
//! books it (`run_bars`), so the stored bars are exactly the booked ones.
//! The portfolio at a bar is rebuilt from the book's stored fills: a fill
//! is booked before the strategy sees the first bar that closes after the
//! fill's time (an exchange fill or a stop at the bar's open, so inside it;
//! a kill's flattening at the last close, so before the next bar), and the
//! fills apply in the order they were booked; then the holdings are marked
//! at the bar, as the engine marks them. The same decimal operations in the
//! same order give the same figures, to the last digit.
//!
//! Memory does not grow with the run: bars and fills are read as a stream.
//! Paper trading does not tell strategies of fills (no `on_fill`, no fills
//! in the batch), so there are none to replay; the portfolio is all they
//! are told besides the bars.

use anyhow::{Context, anyhow};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rust_decimal::Decimal;

use keel_model::Portfolio;
use keel_model::candles::Candle;

use super::exchange::action_parse;
use crate::ledger::{Ledger, LedgerFill, dec};

/// A book's fills in the order they were booked.
pub(super) const FILLS_OF_BOOK: &str = "SELECT symbol, tag, action, price, quantity, fee, time_ms
     FROM fills WHERE book_id = ?1 ORDER BY rowid";

/// One row of [`FILLS_OF_BOOK`].
pub(super) fn stored_fill(r: &Row<'_>) -> rusqlite::Result<LedgerFill> {
    Ok(LedgerFill {
        symbol: r.get(0)?,
        tag: r.get(1)?,
        action: action_parse(&r.get::<_, String>(2)?).unwrap_or(keel_model::Action::Close),
        price: super::d(&r.get::<_, String>(3)?),
        quantity: super::d(&r.get::<_, String>(4)?),
        fee: super::d(&r.get::<_, String>(5)?),
        time_ms: r.get(6)?,
    })
}

/// Stores a bar of run `run_id` closing at `close_ms`; called inside the
/// transaction that books it.
pub(super) fn store_bar(
    conn: &Connection,
    run_id: i64,
    symbol: &str,
    candle: &Candle,
    close_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO run_bars (run_id, close_ms, symbol, time_ms, open, high, low, close, volume)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        run_id,
        close_ms,
        symbol,
        candle.time_ms,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume
    ])?;
    Ok(())
}

/// The stored bar of run `run_id` closing at `close_ms`.
pub(super) fn stored_bar(
    conn: &Connection,
    run_id: i64,
    close_ms: i64,
) -> rusqlite::Result<Option<Candle>> {
    conn.query_row(
        "SELECT time_ms, open, high, low, close, volume FROM run_bars WHERE run_id = ?1 AND close_ms = ?2",
        params![run_id, close_ms],
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
    .optional()
}

/// The close time of the last stored bar of run `run_id` before `close_ms`.
pub(super) fn bar_before(
    conn: &Connection,
    run_id: i64,
    close_ms: i64,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT MAX(close_ms) FROM run_bars WHERE run_id = ?1 AND close_ms < ?2",
        params![run_id, close_ms],
        |r| r.get(0),
    )
}

/// What a replay went through.
#[derive(Debug)]
pub(super) struct Replayed {
    /// Bars shown.
    pub shown: usize,
    /// The book as its stored fills and the stored bars leave it: the same
    /// as the live book, unless the history is incomplete.
    pub ledger: Ledger,
}

/// Walks run `run_id`'s stored bars in order, rebuilding book `book_id`'s
/// portfolio from its stored fills, and calls `show` with each bar that
/// closed at or before `through_ms`, its close time and the portfolio the
/// book held at that close.
pub(super) fn replay(
    conn: &Connection,
    run_id: i64,
    book_id: i64,
    start_cash: Decimal,
    through_ms: Option<i64>,
    mut show: impl FnMut(&Candle, i64, &Portfolio),
) -> anyhow::Result<Replayed> {
    let mut ledger = Ledger::new(start_cash);
    let mut bars = conn.prepare_cached(
        "SELECT close_ms, symbol, time_ms, open, high, low, close, volume
         FROM run_bars WHERE run_id = ?1 ORDER BY close_ms, symbol",
    )?;
    let mut fills = conn.prepare_cached(FILLS_OF_BOOK)?;
    let mut fills = fills.query_map([book_id], stored_fill)?.peekable();
    let apply = |ledger: &mut Ledger, fill: rusqlite::Result<LedgerFill>| {
        let fill = fill?;
        ledger
            .apply(&fill)
            .map(|_| ())
            .map_err(|e| anyhow!("book {book_id}: a stored fill does not apply: {e}"))
    };
    let rows = bars.query_map([run_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            Candle {
                time_ms: r.get(2)?,
                open: r.get(3)?,
                high: r.get(4)?,
                low: r.get(5)?,
                close: r.get(6)?,
                volume: r.get(7)?,
            },
        ))
    })?;
    let mut shown = 0;
    // The portfolio changes only with a fill or a mark: a flat book's is
    // built once per fill, not once per bar.
    let mut view = ledger.view();
    for row in rows {
        let (close_ms, symbol, candle) = row?;
        let mut changed = false;
        // Every fill booked before this bar's close, as booked.
        while let Some(fill) = fills.next_if(|f| f.as_ref().map_or(true, |f| f.time_ms < close_ms))
        {
            apply(&mut ledger, fill)?;
            changed = true;
        }
        // Marks touch only what is held of the bar's symbol.
        if ledger.holdings.iter().any(|h| h.symbol == symbol) {
            let price = |x: f64| dec(x).with_context(|| format!("stored bar at {close_ms}"));
            ledger.mark(
                &symbol,
                price(candle.low)?,
                price(candle.high)?,
                price(candle.close)?,
            );
            changed = true;
        }
        if through_ms.is_some_and(|through| close_ms <= through) {
            if changed {
                view = ledger.view();
            }
            show(&candle, close_ms, &view);
            shown += 1;
        }
    }
    // Fills after the last bar (a kill's flattening at its close).
    for fill in fills {
        apply(&mut ledger, fill)?;
    }
    Ok(Replayed { shown, ledger })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A database with run 1 and its book 1 (start cash 1000), bars closing
    /// every minute at 60k, 120k, 180k and 240k ms, and the given fills of
    /// book 1 as (action, price, quantity, time).
    fn ledger_with(dir: &std::path::Path, fills: &[(&str, &str, &str, i64)]) -> Store {
        let mut store = Store::open(&dir.join("keel.db")).expect("store");
        let conn = store.conn();
        conn.execute_batch(
            "INSERT INTO artifacts VALUES ('h', 'probe', '1', '0.4.0', 1, 0);
             INSERT INTO runs (id, mode, feed, settings, started_ms, status) VALUES (1, 'paper', 'f', 's', 0, 'running');
             INSERT INTO books (id, run_id, slot, artifact_hash, params, start_cash, cash, realized, fees, peak_equity, day_ms, day_start_equity)
                 VALUES (1, 1, 'b', 'h', '', '1000', '1000', '0', '0', '1000', -1, '1000');",
        )
        .expect("rows");
        for (i, close) in [10.0, 11.0, 12.0, 13.0].into_iter().enumerate() {
            let time_ms = i as i64 * 60_000;
            let candle = Candle {
                time_ms,
                open: close - 0.5,
                high: close + 1.0,
                low: close - 1.0,
                close,
                volume: 5.0,
            };
            store_bar(conn, 1, "X", &candle, time_ms + 60_000).expect("bar");
        }
        for (i, (action, price, quantity, time_ms)) in fills.iter().enumerate() {
            conn.execute(
                "INSERT INTO fills VALUES (?1, NULL, 1, 'X', '', ?2, ?3, ?4, '0.1', ?5, 'signal')",
                params![format!("f{i}"), action, price, quantity, time_ms],
            )
            .expect("fill");
        }
        store
    }

    #[test]
    fn each_bar_is_shown_with_the_portfolio_held_at_its_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Bought at the second bar's open; flattened by a kill at the third
        // bar's close, so flat only from the fourth bar on.
        let mut store = ledger_with(
            dir.path(),
            &[
                ("open-long", "10.5", "2", 60_000),
                ("close", "12", "2", 180_000),
            ],
        );
        let mut seen = Vec::new();
        let replayed = replay(
            store.conn(),
            1,
            1,
            Decimal::from(1000),
            Some(240_000),
            |c, close_ms, p| {
                seen.push((close_ms, c.close, p.positions.len(), p.cash, p.equity));
            },
        )
        .expect("replay");
        assert_eq!(
            seen,
            [
                (60_000, 10.0, 0, 1000.0, 1000.0),
                // 1000 - 2 × 10.5 - 0.1 fee, marked at the close of 11.
                (120_000, 11.0, 1, 978.9, 1000.9),
                (180_000, 12.0, 1, 978.9, 1002.9),
                (240_000, 13.0, 0, 1002.8, 1002.8),
            ]
        );
        assert_eq!(replayed.shown, 4);
        assert_eq!(replayed.ledger.cash, Decimal::new(10028, 1));
    }

    #[test]
    fn bars_after_the_last_shown_are_booked_but_not_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = ledger_with(dir.path(), &[("open-long", "12.5", "1", 180_000)]);
        let mut shown = Vec::new();
        let replayed = replay(
            store.conn(),
            1,
            1,
            Decimal::from(1000),
            Some(120_000),
            |_, t, _| shown.push(t),
        )
        .expect("replay");
        assert_eq!(shown, [60_000, 120_000]);
        // The book as live: the position bought at the last bar's open,
        // marked at its close.
        let held = &replayed.ledger.holdings[0];
        assert_eq!(
            (held.quantity, held.mark, held.opened_ms),
            (Decimal::ONE, Decimal::from(13), 180_000)
        );
        let mut none = 0;
        replay(store.conn(), 1, 1, Decimal::from(1000), None, |_, _, _| {
            none += 1
        })
        .expect("replay");
        assert_eq!(none, 0, "nothing shown yet: nothing replayed");
    }
}
