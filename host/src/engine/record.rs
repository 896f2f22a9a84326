//! The record of a database's last run, read from its ledger: what `keel
//! status`, `positions` and `trades` show when no run is live — the books as
//! last booked, their positions and trades, the account's state — in the
//! same shape the control API serves a live run's.

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension};

use crate::control::Snapshot;

use super::journal::{d, load_state, recent_trades};
use super::slot::{book_snapshot, stored_ledger};

/// A run as last booked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub snapshot: Snapshot,
    /// `paper` or `live`.
    pub mode: String,
    /// `running` (its process gone without a word: SIGKILL, a crash),
    /// `interrupted`, `finished`, `stopped`, `abandoned`.
    pub status: String,
    pub ended_ms: Option<i64>,
}

/// The last run booked in the database at `db`, read without writing (the
/// database is not created if missing); `None` before any run.
pub fn last_run(db: &std::path::Path) -> anyhow::Result<Option<Record>> {
    let conn = crate::store::open_record(db)?;
    read(&conn).with_context(|| format!("{}: cannot read the last run", db.display()))
}

fn read(conn: &Connection) -> anyhow::Result<Option<Record>> {
    type Run = (
        i64,
        String,
        String,
        String,
        String,
        Option<i64>,
        Option<i64>,
    );
    let run: Option<Run> = conn
        .query_row(
            "SELECT id, mode, feed, settings, status, cursor_ms, ended_ms FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((run_id, mode, feed, settings, status, cursor_ms, ended_ms)) = run else {
        return Ok(None);
    };
    let (state, reason) = load_state(conn)?;
    let bars: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT close_ms) FROM run_bars WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap_or_default();
    let all: Vec<String> = match &settings["symbol"] {
        serde_json::Value::String(one) => vec![one.clone()],
        many => serde_json::from_value(many.clone()).unwrap_or_default(),
    };
    // A book bound to some of the symbols only: the run's settings say
    // which, in the order of its strategies' slots.
    let bound = |slot: &str| -> Vec<String> {
        let slots = settings["strategies"].as_array();
        let at = slots.and_then(|s| s.iter().position(|v| v.as_str() == Some(slot)));
        at.and_then(|i| serde_json::from_value(settings["bindings"][i].clone()).ok())
            .unwrap_or_else(|| all.clone())
    };
    let mut books = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT b.id, b.slot, b.artifact_hash, COALESCE(a.name, '?'), b.start_cash, b.cash, b.realized,
                 b.fees, b.peak_equity,
                 (SELECT COUNT(*) FROM signals s WHERE s.book_id = b.id),
                 (SELECT COUNT(*) FROM signals s WHERE s.book_id = b.id AND s.decision = 'rejected')
             FROM books b LEFT JOIN artifacts a ON a.hash = b.artifact_hash
             WHERE b.run_id = ?1 ORDER BY b.id",
        )?;
        type Book = (i64, String, String, String, [String; 5], (i64, i64));
        let rows = stmt.query_map([run_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
                (r.get(9)?, r.get(10)?),
            ))
        })?;
        for row in rows {
            let (id, slot, hash, name, [start, cash, realized, fees, peak], (signals, rejected)): Book =
                row?;
            let ledger = stored_ledger(conn, id, [&start, &cash, &realized, &fees])?;
            let label = format!("{name}@{}", hash.get(..12).unwrap_or(&hash));
            let mut book = book_snapshot(&slot, &label, &bound(&slot), &ledger, d(&peak));
            for p in &mut book.positions {
                (p.stop_loss, p.take_profit) = conn.query_row(
                    "SELECT stop_loss, take_profit FROM positions WHERE book_id = ?1 AND symbol = ?2 AND tag = ?3",
                    rusqlite::params![id, p.symbol, p.tag],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
            }
            book.signals = signals.max(0) as u64;
            book.rejected = rejected.max(0) as u64;
            books.push(book);
        }
    }
    let snapshot = Snapshot {
        run_id,
        feed,
        feed_health: Default::default(),
        state: state.as_str().into(),
        killed: reason.starts_with("kill switch"),
        bars: bars.max(0) as u64,
        cursor_ms,
        books,
        trades: recent_trades(conn, run_id, 50)?,
        venue: None,
        mode: mode.clone(),
    };
    Ok(Some(Record {
        snapshot,
        mode,
        status,
        ended_ms,
    }))
}
