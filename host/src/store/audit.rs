//! The audit log: an append-only record of who did what to the fund
//! (starting runs, state changes, promotions, rollbacks, swaps), each line
//! with the time it was written.

use rusqlite::{Connection, params};

/// Writes one audit line.
pub fn audit(conn: &Connection, actor: &str, action: &str, detail: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (time_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![super::now_ms(), actor, action, detail],
    )?;
    let data = serde_json::json!({ "actor": actor, "action": action, "detail": detail });
    super::events::emit(conn, super::events::Kind::Audit, data)
}
