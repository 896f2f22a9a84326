//! Nonces for Kraken's private endpoints: strictly increasing per key,
//! across restarts and clock steps. Each nonce is at least the clock in
//! microseconds and above every one handed out before; the high-water mark
//! is leased ahead in the database (a block at a time, so a call costs no
//! write), and a restart starts above the lease, used or not.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Nonces leased per database write.
const LEASE: u64 = 1_000_000;

/// The nonces of one key.
#[derive(Debug)]
pub struct Nonces {
    venue: String,
    key_print: String,
    last: u64,
    leased: u64,
}

/// The fingerprint a key is stored by: never the key.
pub fn fingerprint(public_key: &str) -> String {
    hex::encode(&Sha256::digest(public_key.as_bytes())[..8])
}

impl Nonces {
    /// The nonces of `public_key` at `venue`, above whatever the database
    /// says was leased before.
    pub fn open(conn: &Connection, venue: &str, public_key: &str) -> rusqlite::Result<Nonces> {
        let key_print = fingerprint(public_key);
        let high: Option<i64> = conn
            .query_row(
                "SELECT high_water FROM venue_nonces WHERE venue = ?1 AND key_print = ?2",
                params![venue, key_print],
                |r| r.get(0),
            )
            .optional()?;
        let high = high.map_or(0, |h| h.max(0) as u64);
        Ok(Nonces {
            venue: venue.into(),
            key_print,
            last: high,
            leased: high,
        })
    }

    /// The next nonce, given the clock in microseconds: above the last one
    /// and not below the clock. The lease is extended in `conn` first when
    /// it runs out, so no nonce is handed out that a restart could repeat.
    pub fn next(&mut self, conn: &Connection, now_us: u64) -> rusqlite::Result<u64> {
        let n = now_us.max(self.last.saturating_add(1));
        if n > self.leased {
            let leased = n.saturating_add(LEASE);
            conn.execute(
                "INSERT INTO venue_nonces (venue, key_print, high_water) VALUES (?1, ?2, ?3)
                 ON CONFLICT (venue, key_print) DO UPDATE SET high_water = MAX(high_water, excluded.high_water)",
                params![self.venue, self.key_print, leased.min(i64::MAX as u64) as i64],
            )?;
            self.leased = leased;
        }
        self.last = n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(include_str!("../../../../migrations/0008_venue_nonces.sql"))
            .expect("schema");
        conn
    }

    #[test]
    fn nonces_rise_strictly_even_when_the_clock_steps_back() {
        let conn = db();
        let mut n = Nonces::open(&conn, "kraken", "pub").expect("open");
        let a = n.next(&conn, 5_000_000).expect("a");
        let b = n.next(&conn, 5_000_000).expect("b");
        let c = n.next(&conn, 4_000_000).expect("c: the clock went back");
        let d = n.next(&conn, 9_000_000).expect("d");
        assert_eq!([a, b, c, d], [5_000_000, 5_000_001, 5_000_002, 9_000_000]);
    }

    #[test]
    fn a_restart_starts_above_every_nonce_it_could_have_used() {
        let conn = db();
        let mut first = Nonces::open(&conn, "kraken", "pub").expect("open");
        let mut used = Vec::new();
        for _ in 0..10 {
            used.push(first.next(&conn, 1_000).expect("next"));
        }
        // Killed without a word; the clock is now far behind.
        drop(first);
        let mut again = Nonces::open(&conn, "kraken", "pub").expect("reopen");
        let next = again.next(&conn, 1).expect("next");
        assert!(used.iter().all(|u| next > *u), "{next} after {used:?}");
        // Another key has nonces of its own.
        let mut other = Nonces::open(&conn, "kraken", "other").expect("other");
        assert_eq!(other.next(&conn, 7).expect("next"), 7);
    }

    #[test]
    fn the_key_is_stored_by_fingerprint_only() {
        let conn = db();
        let mut n = Nonces::open(&conn, "kraken", "my-public-key").expect("open");
        n.next(&conn, 1).expect("next");
        let stored: String = conn
            .query_row("SELECT key_print FROM venue_nonces", [], |r| r.get(0))
            .expect("row");
        assert_eq!(stored.len(), 16);
        assert!(!stored.contains("my-public-key"));
    }
}
