//! API v1: the operator's read of the fund and its three commands, every
//! answer in one envelope, `{data, meta: {time, mode, version}}`. What the
//! engine holds in memory (the books, their positions, recent trades, the
//! feed and the venue) comes from its snapshot; what the ledger keeps
//! (performance, risk events, signals, the strategy, candidates, the
//! evolution, the activity log) is read from the database, read-only, off
//! the server's threads. `docs/openapi-v1.yaml` documents every path.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::control::{self, Snapshot};

/// The read endpoints, by the name after `/v1/`.
pub const READS: [&str; 12] = [
    "system",
    "portfolio",
    "positions",
    "trades",
    "performance",
    "equity",
    "risk",
    "signals",
    "strategy",
    "candidates",
    "evolution",
    "activity",
];

/// The commands, by the name after `/v1/`.
pub const COMMANDS: [&str; 3] = ["pause", "resume", "kill"];

/// How many rows a list answers with, newest first.
const RECENT: i64 = 100;

/// `data` in the envelope, with the time, the run's mode and this keel's
/// version.
pub fn envelope(data: Value, mode: &str) -> Value {
    let time = jiff::Timestamp::now().to_string();
    json!({
        "data": data,
        "meta": { "time": time, "mode": mode, "version": env!("CARGO_PKG_VERSION") },
    })
}

/// A read answered from the engine's snapshot, if `name` is one.
pub fn from_snapshot(name: &str, s: &Snapshot) -> Option<Value> {
    Some(match name {
        "system" => json!({
            "run_id": s.run_id,
            "mode": s.mode,
            "feed": s.feed,
            "feed_health": s.feed_health,
            "state": s.state,
            "killed": s.killed,
            "bars": s.bars,
            "last_bar_ms": s.cursor_ms,
            "venue": s.venue,
            "pid": std::process::id(),
        }),
        "portfolio" => {
            let sum = |f: fn(&control::SnapshotBook) -> f64| s.books.iter().map(f).sum::<f64>();
            json!({
                "books": s.books.iter().map(|b| json!({
                    "slot": b.slot, "strategy": b.strategy, "symbols": b.symbols,
                    "start_cash": b.start_cash, "cash": b.cash, "equity": b.equity,
                    "realized": b.realized, "fees": b.fees, "drawdown_pct": b.drawdown_pct,
                    "positions": b.positions.len(),
                })).collect::<Vec<_>>(),
                "total": {
                    "start_cash": sum(|b| b.start_cash),
                    "cash": sum(|b| b.cash),
                    "equity": sum(|b| b.equity),
                },
            })
        }
        "positions" => control::positions_json(s),
        "trades" => serde_json::to_value(&s.trades).unwrap_or_default(),
        _ => return None,
    })
}

/// Rows of `sql` as JSON objects named by their columns.
fn rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let rows = stmt.query_map(params, |r| {
        let mut object = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(n) => n.into(),
                rusqlite::types::ValueRef::Real(x) => json!(x),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                rusqlite::types::ValueRef::Blob(_) => Value::Null,
            };
            object.insert(name.clone(), value);
        }
        Ok(Value::Object(object))
    })?;
    rows.collect()
}

/// A read answered from the ledger of run `run_id`, if `name` is one.
pub fn from_ledger(name: &str, conn: &Connection, run_id: i64) -> rusqlite::Result<Option<Value>> {
    Ok(Some(match name {
        "performance" => performance(conn, run_id)?,
        "risk" => {
            let state = rows(
                conn,
                "SELECT state, reason, changed_ms FROM trading_state WHERE id = 1",
                [],
            )?;
            let events = rows(
                conn,
                "SELECT time_ms, kind, book_id, detail, latency_us FROM risk_events
                 ORDER BY id DESC LIMIT ?1",
                [RECENT],
            )?;
            json!({ "trading": state.into_iter().next(), "events": events })
        }
        "signals" => Value::Array(rows(
            conn,
            "SELECT b.slot, s.time_ms, s.seq, s.symbol, s.action, s.size, s.tag, s.stop_loss,
                 s.take_profit, s.reason, s.confidence, s.decision, s.reject_reason
             FROM signals s JOIN books b ON b.id = s.book_id WHERE b.run_id = ?1
             ORDER BY s.time_ms DESC, s.seq DESC LIMIT ?2",
            [run_id, RECENT],
        )?),
        "strategy" => {
            let active = rows(
                conn,
                "SELECT d.hash, d.action, d.actor, d.reason, d.time_ms, c.name, c.version
                 FROM deployments d LEFT JOIN candidates c ON c.id = d.candidate_id
                 ORDER BY d.id DESC LIMIT 1",
                [],
            )?;
            let books = rows(
                conn,
                "SELECT b.slot, b.artifact_hash AS hash, a.name, a.version, b.params
                 FROM books b LEFT JOIN artifacts a ON a.hash = b.artifact_hash
                 WHERE b.run_id = ?1 ORDER BY b.id",
                [run_id],
            )?;
            json!({ "active": active.into_iter().next(), "books": books })
        }
        "candidates" => Value::Array(rows(
            conn,
            "SELECT c.id, c.hash, c.name, c.version, c.parent, c.submitted_by, c.state, c.created_ms,
                 (SELECT json_group_array(json_object('gate', g.gate, 'verdict', g.verdict,
                      'figures', json(g.figures), 'detail', g.detail, 'time_ms', g.time_ms))
                  FROM gate_results g WHERE g.candidate_id = c.id) AS gates
             FROM candidates c ORDER BY c.id DESC LIMIT ?1",
            [RECENT],
        )?
        .into_iter()
        .map(|mut c| {
            // The gates come as JSON text: served as JSON.
            if let Some(text) = c["gates"].as_str() {
                c["gates"] = serde_json::from_str(text).unwrap_or_default();
            }
            c
        })
        .collect()),
        "evolution" => Value::Array(rows(
            conn,
            "SELECT id, started_ms, ended_ms, status, providers, decision, note, usd, tokens
             FROM evolve_nights ORDER BY id DESC LIMIT 30",
            [],
        )?),
        "activity" => Value::Array(
            crate::store::events::recent(conn, RECENT as usize)?
                .iter()
                .map(super::events::served)
                .collect(),
        ),
        "equity" => equity(conn, run_id)?,
        _ => return Ok(None),
    }))
}

/// Points of each book's equity curve a chart needs: at most this many.
const CURVE_POINTS: i64 = 500;

/// Each book's equity over time, `[time_ms, equity]` at each close, evenly
/// thinned to at most `CURVE_POINTS` (the last close always kept).
fn equity(conn: &Connection, run_id: i64) -> rusqlite::Result<Value> {
    let books = rows(
        conn,
        "SELECT id, slot, CAST(start_cash AS REAL) AS start_cash FROM books WHERE run_id = ?1 ORDER BY id",
        [run_id],
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT time_ms, equity FROM (
             SELECT time_ms, CAST(equity AS REAL) AS equity,
                 ROW_NUMBER() OVER (ORDER BY time_ms) AS n, COUNT(*) OVER () AS total
             FROM equity_snapshots WHERE book_id = ?1)
         WHERE (n - 1) % ((total + ?2 - 2) / (?2 - 1)) = 0 OR n = total
         ORDER BY time_ms",
    )?;
    let mut out = Vec::new();
    for book in books {
        let points = stmt
            .query_map(rusqlite::params![book["id"].as_i64(), CURVE_POINTS], |r| {
                Ok(json!([r.get::<_, i64>(0)?, r.get::<_, f64>(1)?]))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(
            json!({ "slot": book["slot"], "start_cash": book["start_cash"], "points": points }),
        );
    }
    Ok(json!({ "books": out }))
}

/// Each book's record: closed trades, wins, net P&L, fees, return and the
/// deepest drawdown of its closing equity.
fn performance(conn: &Connection, run_id: i64) -> rusqlite::Result<Value> {
    let mut books = rows(
        conn,
        "SELECT b.id, b.slot, CAST(b.start_cash AS REAL) AS start_cash,
             (SELECT COUNT(*) FROM trades t WHERE t.book_id = b.id) AS trades,
             (SELECT COUNT(*) FROM trades t WHERE t.book_id = b.id
                  AND CAST(t.pnl_gross AS REAL) - CAST(t.fees AS REAL) > 0) AS wins,
             (SELECT COALESCE(SUM(CAST(t.pnl_gross AS REAL) - CAST(t.fees AS REAL)), 0)
                  FROM trades t WHERE t.book_id = b.id) AS pnl,
             CAST(b.fees AS REAL) AS fees
         FROM books b WHERE b.run_id = ?1 ORDER BY b.id",
        [run_id],
    )?;
    for book in &mut books {
        let id = book["id"].as_i64().unwrap_or_default();
        let mut stmt = conn.prepare_cached(
            "SELECT CAST(equity AS REAL) FROM equity_snapshots WHERE book_id = ?1 ORDER BY time_ms",
        )?;
        let curve = stmt
            .query_map([id], |r| r.get::<_, f64>(0))?
            .collect::<rusqlite::Result<Vec<f64>>>()?;
        let deepest = crate::run_report::deepest_drawdown_pct(curve.iter().copied());
        let last = curve.last().copied();
        let start = book["start_cash"].as_f64().unwrap_or(0.0);
        let trades = book["trades"].as_i64().unwrap_or(0);
        book["win_rate"] = match trades {
            0 => Value::Null,
            n => json!(book["wins"].as_i64().unwrap_or(0) as f64 / n as f64),
        };
        book["equity"] = json!(last);
        book["return_pct"] = match last {
            Some(e) if start > 0.0 => json!((e - start) / start * 100.0),
            _ => Value::Null,
        };
        book["max_drawdown_pct"] = json!(deepest);
        if let Some(object) = book.as_object_mut() {
            object.remove("id");
        }
    }
    Ok(json!({ "books": books }))
}
