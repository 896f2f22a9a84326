//! The activity log as one stream (`events`): what the API's event stream,
//! the dashboard and the Telegram bridge read. Each event is written by
//! the code that writes its fact, in the same transaction, so a reader
//! that follows the ids sees every committed fact once and in order, from
//! any process that writes the database (the engine, `keel candidate`,
//! the nightly evolution).

use rusqlite::{Connection, params};

use super::Cached;
use serde::Serialize;
use serde_json::Value;

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A close booked: its bars.
    Bar,
    /// A strategy's signal and what became of it.
    Signal,
    /// An order written, or its state changed.
    Order,
    /// A fill booked.
    Fill,
    /// A risk event (an order refused, a breach, a kill's latency, …).
    Risk,
    /// The account halted.
    Halt,
    /// The trading state changed (active, reduce-only, paused, halted).
    State,
    /// A candidate submitted or its state changed.
    Candidate,
    /// A step of the nightly evolution, or a night started or ended.
    Evolution,
    /// A line of the audit log.
    Audit,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Bar,
        Kind::Signal,
        Kind::Order,
        Kind::Fill,
        Kind::Risk,
        Kind::Halt,
        Kind::State,
        Kind::Candidate,
        Kind::Evolution,
        Kind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bar => "bar",
            Kind::Signal => "signal",
            Kind::Order => "order",
            Kind::Fill => "fill",
            Kind::Risk => "risk",
            Kind::Halt => "halt",
            Kind::State => "state",
            Kind::Candidate => "candidate",
            Kind::Evolution => "evolution",
            Kind::Audit => "audit",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One event as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub time_ms: i64,
    pub kind: String,
    pub data: Value,
}

/// Writes one event (inside the caller's transaction, if it has one).
pub fn emit(conn: &Connection, kind: Kind, data: Value) -> rusqlite::Result<()> {
    conn.run(
        "INSERT INTO events (time_ms, kind, data) VALUES (?1, ?2, ?3)",
        params![super::now_ms(), kind.as_str(), data.to_string()],
    )?;
    Ok(())
}

/// At most `limit` events after `after`, oldest first.
pub fn after(conn: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, time_ms, kind, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        let data: String = r.get(3)?;
        Ok(Event {
            id: r.get(0)?,
            time_ms: r.get(1)?,
            kind: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
        })
    })?;
    rows.collect()
}

/// The newest event's id (0 when there is none).
pub fn last_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
}

/// The newest `limit` events, newest first.
pub fn recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Event>> {
    let from = last_id(conn)?.saturating_sub(limit as i64);
    let mut events = after(conn, from, limit)?;
    events.reverse();
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_read_back_in_order_after_an_id_and_never_reuse_one() {
        let dir = tempfile::tempdir().expect("test");
        let mut store = crate::store::Store::open(&dir.path().join("k.db")).expect("test");
        let conn: &Connection = store.conn();
        assert_eq!(last_id(conn).expect("test"), 0);
        for n in 0..5 {
            emit(conn, Kind::Fill, json!({ "n": n })).expect("test");
        }
        let read = after(conn, 2, 10).expect("test");
        let ns: Vec<_> = read
            .iter()
            .map(|e| e.data["n"].as_i64().expect("test"))
            .collect();
        assert_eq!(ns, [2, 3, 4]);
        assert!(read.iter().all(|e| e.kind == "fill"));
        assert_eq!(after(conn, 0, 2).expect("test").len(), 2);
        let newest: Vec<_> = recent(conn, 2)
            .expect("test")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(newest, [5, 4]);
        conn.execute("DELETE FROM events WHERE id = 5", [])
            .expect("test");
        emit(conn, Kind::Bar, json!({})).expect("test");
        assert_eq!(
            last_id(conn).expect("test"),
            6,
            "an id is never given twice"
        );
        assert_eq!(Kind::parse("halt"), Some(Kind::Halt));
        assert_eq!(Kind::parse("nope"), None);
    }
}
