//! A run's history as its strategies were shown it, so that a strategy
//! starting mid-run — after a restart, a hot swap, or as a new shadow —
//! reaches exactly the state it would have had running from the start, and
//! a restarted run's kernel books are exactly the ones it had.
//!
//! A strategy's state is whatever its calls made it: recursive indicators
//! (Wilder's RSI, EMA, ATR) depend on every bar since it began, and its
//! decisions on the portfolio and fills it was shown at each. So a new
//! instance is shown every step the run booked, in order, each with the
//! fills booked at it and the portfolio its book held at its close — what
//! the running instance was shown — and what it signals is discarded.
//!
//! Both come from the ledger. Each bar is stored in the transaction that
//! books it (`run_bars`), so the stored bars are exactly the booked ones;
//! each fill records the close it was booked at (`booked_ms`). The book at
//! a close is rebuilt from the stored fills through the kernel's own
//! [`Book::apply`] and marks, and the fills' decimals are the kernel's
//! floats exactly (`kernel::exact`), so the rebuilt book is the running one
//! to the last bit. The decimal ledger is rebuilt beside it, as a check.
//!
//! Memory does not grow with the run: bars and fills are read as a stream.

use anyhow::{Context, anyhow};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rust_decimal::Decimal;

use keel_backtester::kernel::{Book, ClientOrderId, FillSource, Market};
use keel_model::candles::Candle;
use keel_model::{Fill, Portfolio};

use crate::ledger::{Ledger, LedgerFill, dec, float};
use crate::venues::paper::action_parse;

/// A book's fills in the order they were booked, with the close they were
/// booked at and the exits of the order that made them.
pub(super) const FILLS_OF_BOOK: &str = "SELECT f.symbol, f.tag, f.action, f.price, f.quantity, f.fee, f.time_ms,
        COALESCE(f.booked_ms, f.time_ms + 1), f.source, f.client_order_id, o.stop_loss, o.take_profit
     FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id
     WHERE f.book_id = ?1 ORDER BY f.rowid";

/// One row of [`FILLS_OF_BOOK`].
pub(super) struct StoredFill {
    pub ledger: LedgerFill,
    pub booked_ms: i64,
    pub source: FillSource,
    pub exits: (Option<f64>, Option<f64>),
}

impl StoredFill {
    /// The fill as the kernel booked it.
    fn fill(&self) -> Fill {
        let f = &self.ledger;
        Fill {
            symbol: f.symbol.clone(),
            tag: f.tag.clone(),
            action: f.action,
            price: float(f.price),
            quantity: float(f.quantity),
            fee: float(f.fee),
            time_ms: f.time_ms,
        }
    }
}

pub(super) fn stored_fill(r: &Row<'_>) -> rusqlite::Result<StoredFill> {
    let d = |i: usize| -> rusqlite::Result<Decimal> {
        Ok(r.get::<_, String>(i)?.parse().unwrap_or(Decimal::ZERO))
    };
    let source: String = r.get(8)?;
    let order: Option<String> = r.get(9)?;
    Ok(StoredFill {
        ledger: LedgerFill {
            symbol: r.get(0)?,
            tag: r.get(1)?,
            action: action_parse(&r.get::<_, String>(2)?).unwrap_or(keel_model::Action::Close),
            price: d(3)?,
            quantity: d(4)?,
            fee: d(5)?,
            time_ms: r.get(6)?,
        },
        booked_ms: r.get(7)?,
        source: FillSource::parse(&source, order.map(ClientOrderId)),
        exits: (r.get(10)?, r.get(11)?),
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

/// The stored bars of run `run_id` closing at `close_ms`, in `market`'s
/// symbol order.
pub(super) fn stored_step(
    conn: &Connection,
    run_id: i64,
    close_ms: i64,
    market: &Market,
) -> rusqlite::Result<Vec<(usize, Candle)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT symbol, time_ms, open, high, low, close, volume FROM run_bars WHERE run_id = ?1 AND close_ms = ?2",
    )?;
    let rows = stmt.query_map(params![run_id, close_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Candle {
                time_ms: r.get(1)?,
                open: r.get(2)?,
                high: r.get(3)?,
                low: r.get(4)?,
                close: r.get(5)?,
                volume: r.get(6)?,
            },
        ))
    })?;
    let mut step = Vec::new();
    for row in rows {
        let (symbol, candle) = row?;
        if let Some(sym) = market.index(&symbol) {
            step.push((sym, candle));
        }
    }
    step.sort_by_key(|(sym, _)| *sym);
    Ok(step)
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
    .optional()
    .map(Option::flatten)
}

/// What a replay went through.
#[derive(Debug)]
pub(super) struct Replayed {
    /// Steps shown.
    pub shown: usize,
    /// The kernel's book as its stored fills and the stored bars leave it:
    /// the live book, unless the history is incomplete.
    pub book: Book,
    /// The decimal ledger the same way, to check against the stored one.
    pub ledger: Ledger,
    /// Every close's last prices, as the run's market had them.
    pub last_close: Vec<f64>,
    /// The fills booked after the last step shown, in order: the running
    /// strategy was told them before the next step, so is a replayed one.
    pub untold: Vec<Fill>,
}

/// A step as replay shows it: the close time, its bars (symbol index and
/// candle), the portfolio at its close and the fills booked at it.
pub(super) struct Shown<'a> {
    pub close_ms: i64,
    pub bars: &'a [(usize, Candle)],
    pub portfolio: &'a Portfolio,
    pub fills: &'a [Fill],
}

/// Walks run `run_id`'s stored bars in order, rebuilding book `book_id`
/// (which started with `start_cash`) from its stored fills, and calls
/// `show` with each step that closed at or before `through_ms`.
pub(super) fn replay(
    conn: &Connection,
    run_id: i64,
    book_id: i64,
    start_cash: Decimal,
    market: &Market,
    through_ms: Option<i64>,
    mut show: impl FnMut(Shown<'_>),
) -> anyhow::Result<Replayed> {
    let mut book = Book::new(float(start_cash));
    let mut ledger = Ledger::new(start_cash);
    let mut last_close = vec![f64::NAN; market.symbols.len()];
    let mut bars = conn.prepare_cached(
        "SELECT close_ms, symbol, time_ms, open, high, low, close, volume
         FROM run_bars WHERE run_id = ?1 ORDER BY close_ms, symbol",
    )?;
    let mut fills = conn.prepare_cached(FILLS_OF_BOOK)?;
    let mut fills = fills.query_map([book_id], stored_fill)?.peekable();
    let apply = |book: &mut Book, ledger: &mut Ledger, stored: StoredFill| {
        let fill = stored.fill();
        let sym = market.index(&fill.symbol).ok_or_else(|| {
            anyhow!(
                "book {book_id}: a stored fill of {} is not of this run's symbols",
                fill.symbol
            )
        })?;
        ledger
            .apply(&stored.ledger)
            .map_err(|e| anyhow!("book {book_id}: a stored fill does not apply: {e}"))?;
        book.apply(sym, fill.clone(), stored.exits, stored.source)
            .map_err(|e| anyhow!("book {book_id}: a stored fill does not apply: {e}"))?;
        Ok::<Fill, anyhow::Error>(fill)
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
    let mut step: Vec<(usize, Candle)> = Vec::new();
    let mut told: Vec<Fill> = Vec::new();
    let mut untold: Vec<Fill> = Vec::new();
    let mut rows = rows.peekable();
    while let Some(row) = rows.next() {
        let (close_ms, symbol, candle) = row?;
        if let Some(sym) = market.index(&symbol) {
            step.push((sym, candle));
        }
        // The rest of this close's bars.
        if rows
            .peek()
            .is_some_and(|next| next.as_ref().is_ok_and(|(c, ..)| *c == close_ms))
        {
            continue;
        }
        step.sort_by_key(|(sym, _)| *sym);
        // Every fill booked at or before this close, as booked.
        told.clear();
        while let Some(stored) =
            fills.next_if(|f| f.as_ref().map_or(true, |f| f.booked_ms <= close_ms))
        {
            told.push(apply(&mut book, &mut ledger, stored?)?);
        }
        let showing = through_ms.is_some_and(|through| close_ms <= through);
        if !showing {
            untold.append(&mut told);
        }
        book.fills.clear();
        let mut columns = keel_model::batch::BarColumns::default();
        for (sym, candle) in &step {
            columns.push(*sym as u32, candle);
            last_close[*sym] = candle.close;
            if ledger
                .holdings
                .iter()
                .any(|h| h.symbol == market.symbols[*sym].as_ref())
            {
                let price = |x: f64| dec(x).with_context(|| format!("stored bar at {close_ms}"));
                ledger.mark(
                    &market.symbols[*sym],
                    price(candle.low)?,
                    price(candle.high)?,
                    price(candle.close)?,
                );
            }
        }
        let equity = book.mark(columns.slice(0, step.len()));
        if showing {
            let portfolio = book.view(equity);
            show(Shown {
                close_ms,
                bars: &step,
                portfolio: &portfolio,
                fills: &told,
            });
            shown += 1;
        }
        step.clear();
    }
    // Fills after the last bar (a kill's flattening at its close).
    for stored in fills {
        untold.push(apply(&mut book, &mut ledger, stored?)?);
    }
    book.fills.clear();
    book.trades.clear();
    Ok(Replayed {
        shown,
        book,
        ledger,
        last_close,
        untold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn market() -> Market {
        Market::new(
            vec!["X".into()],
            keel_model::RiskLimits::default(),
            &keel_backtester::risk::MinOrders::default(),
            keel_backtester::fills::FillModel::default(),
            None,
        )
    }

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
                "INSERT INTO fills VALUES (?1, NULL, 1, 'X', '', ?2, ?3, ?4, '0.1', ?5, 'signal', NULL)",
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
            &market(),
            Some(240_000),
            |s| {
                let p = s.portfolio;
                seen.push((
                    s.close_ms,
                    s.bars[0].1.close,
                    p.positions.len(),
                    p.cash,
                    p.equity,
                ));
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
            &market(),
            Some(120_000),
            |s| shown.push(s.close_ms),
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
        replay(
            store.conn(),
            1,
            1,
            Decimal::from(1000),
            &market(),
            None,
            |_| none += 1,
        )
        .expect("replay");
        assert_eq!(none, 0, "nothing shown yet: nothing replayed");
    }
}
