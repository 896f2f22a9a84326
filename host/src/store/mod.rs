//! The host's one SQLite file. Opening it applies the migrations in
//! `migrations/` in order (each recorded in `schema_migrations`), in WAL mode
//! with `synchronous=FULL` (an import into a file of its own writes in
//! place, beside a rollback journal: `Store::write_in_place`), and refuses
//! a database newer than this binary.

mod audit;
mod candles;
mod downloads;
pub mod events;
mod owner;

use std::path::Path;

use rusqlite::Connection;

pub use audit::audit;
pub use candles::{ImportReport, Importer, SpanMarks, StoredSeries, file_digest};
pub use downloads::{DownloadCursor, DownloadKey};
pub use owner::{OwnerError, Ownership, alive, lock_file};
pub(crate) use owner::{open_private, parse_owner};

/// How long a writer of the database waits for another's write lock before
/// it gives up. Keel's own writers hold it for milliseconds; a user's
/// `sqlite3` session, a `VACUUM` or a stuck process may hold it longer, and
/// a trading engine that gave up would stop trading: it waits a minute
/// (while it waits, a kill already stops every order from going out).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A connection that only reads the database at `db` (never creates or
/// migrates it), waiting a few seconds for a writer's lock: for the API's
/// reads, the event stream and the Telegram bridge, which answer at once.
pub fn read_only(db: &Path) -> rusqlite::Result<Connection> {
    read_only_waiting(db, std::time::Duration::from_secs(5))
}

/// [`read_only`], waiting up to `wait` for a writer's lock.
///
/// The one write it may make is SQLite's own, before any read: rolling
/// back the journal of a writer killed mid-write (an import in place),
/// which a connection that only reads cannot do and would answer
/// "attempt to write a readonly database" to every read until then.
fn read_only_waiting(db: &Path, wait: std::time::Duration) -> rusqlite::Result<Connection> {
    let open = |flags| -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(db, flags)?;
        conn.busy_timeout(wait)?;
        Ok(conn)
    };
    let conn = open(rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version = |conn: &Connection| conn.query_row("PRAGMA schema_version", [], |_| Ok(()));
    match version(&conn) {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK =>
        {
            drop(conn);
            // Opened to write, never to create: the first read rolls back,
            // and the file goes back to its write-ahead log (or the next
            // store to open it takes it back, should another hold it).
            let writer = open(rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            version(&writer)?;
            let _ = writer.execute_batch("PRAGMA journal_mode = WAL");
            drop(writer);
            open(rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        }
        // Any other failure is the caller's to say, at its first read.
        _ => Ok(conn),
    }
}

/// `read_only` for a command reading a database's record, which must
/// exist: errors name the file. It waits for a writer as long as a writer
/// waits for another ([`LOCK_WAIT`]): an import holds the whole file while
/// it writes in place.
///
/// A file no Keel has made its tables in yet (empty, or being created by
/// another command this moment) holds no record, and one a newer Keel
/// wrote is refused, as [`Store::open`] refuses it: each said in a line.
pub fn open_record(db: &Path) -> anyhow::Result<Connection> {
    if !db.exists() {
        anyhow::bail!("{}: no such database", db.display());
    }
    let cannot =
        |e: rusqlite::Error| anyhow::anyhow!("{}: cannot open the database: {e}", db.display());
    let conn = read_only_waiting(db, LOCK_WAIT).map_err(cannot)?;
    match recorded_version(&conn).map_err(cannot)? {
        None | Some(0) => anyhow::bail!(
            "{}: no record yet (Keel has not made its tables in this file)",
            db.display()
        ),
        Some(found) => refuse_newer(&db.display().to_string(), found)?,
    }
    Ok(conn)
}

/// The highest migration the file of `conn` records: `None` when it has
/// no `schema_migrations` (Keel has not made its tables in it), 0 when
/// it records none yet.
fn recorded_version(conn: &Connection) -> rusqlite::Result<Option<u32>> {
    let made: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !made {
        return Ok(None);
    }
    let found = conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
        r.get::<_, Option<u32>>(0)
    })?;
    Ok(Some(found.unwrap_or(0)))
}

/// Refuses the database at `path`, at migration `found`, when a newer
/// Keel migrated it past what this one knows.
fn refuse_newer(path: &str, found: u32) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    match found > known {
        true => Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        }),
        false => Ok(()),
    }
}

/// Every migration this binary knows, in order. Forward-only: a file, once
/// released, never changes; a schema change is a new file.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "candles",
        include_str!("../../../migrations/0001_candles.sql"),
    ),
    (
        2,
        "ledger",
        include_str!("../../../migrations/0002_ledger.sql"),
    ),
    (
        3,
        "candidates",
        include_str!("../../../migrations/0003_candidates.sql"),
    ),
    (
        4,
        "candidates_waiting",
        include_str!("../../../migrations/0004_candidates_waiting.sql"),
    ),
    (
        5,
        "run_bars",
        include_str!("../../../migrations/0005_run_bars.sql"),
    ),
    (
        6,
        "fill_booked",
        include_str!("../../../migrations/0006_fill_booked.sql"),
    ),
    (
        7,
        "evolve",
        include_str!("../../../migrations/0007_evolve.sql"),
    ),
    (
        8,
        "venue_nonces",
        include_str!("../../../migrations/0008_venue_nonces.sql"),
    ),
    (
        9,
        "venue_orders",
        include_str!("../../../migrations/0009_venue_orders.sql"),
    ),
    (
        10,
        "events",
        include_str!("../../../migrations/0010_events.sql"),
    ),
    (
        11,
        "candle_spans",
        include_str!("../../../migrations/0011_candle_spans.sql"),
    ),
    (
        12,
        "download_cursors",
        include_str!("../../../migrations/0012_download_cursors.sql"),
    ),
    (
        13,
        "candle_marks",
        include_str!("../../../migrations/0013_candle_marks.sql"),
    ),
    (
        14,
        "packed_spans",
        include_str!("../../../migrations/0014_packed_spans.sql"),
    ),
];

/// The migration that moves the candle rows into spans: SQL alone cannot
/// write their columns, so the host does it inside that migration's
/// transaction.
const CANDLE_SPANS: u32 = 11;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // (`error` is part of the line, not a source below it: the one-line
    // report would repeat it.)
    #[error("{path}: cannot open the database: {error}")]
    Open {
        path: String,
        error: rusqlite::Error,
    },
    #[error(
        "{path}: the database is at schema version {found}, newer than this keel ({known}); use a newer keel"
    )]
    TooNew {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("{path}: migration {version} ({name}) failed: {error}")]
    Migration {
        path: String,
        version: u32,
        name: &'static str,
        error: rusqlite::Error,
    },
    #[error("{path}: {error}")]
    Sql {
        path: String,
        error: rusqlite::Error,
    },
    #[error("{path}: no such database (an import or a download makes one)")]
    Missing { path: String },
    /// Another program's database: Keel neither writes nor migrates it.
    #[error(
        "{path}: not a Keel database (it holds tables Keel did not make: {tables}); give --db a file of Keel's or a new one"
    )]
    Foreign { path: String, tables: String },
    #[error("{0}")]
    Conflict(String),
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: String,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|error| StoreError::Open {
            path: name.clone(),
            error,
        })?;
        let mut store = Store { conn, path: name };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// [`Store::open`] of a database that must be there already: what only
    /// reads it (a listing, an export, a backtest of stored bars) never
    /// leaves an empty one behind a mistyped `--db`.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        Store::open(path)
    }

    /// The connection, for the modules that own their tables (the paper
    /// engine and exchange).
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Where the database lives.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn sql(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            error,
        }
    }

    fn configure(&self) -> Result<(), StoreError> {
        // The wait first: another process may be creating or migrating
        // this file at this very moment.
        self.conn.busy_timeout(LOCK_WAIT).map_err(|e| self.sql(e))?;
        self.conn
            .set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        self.recognise()?;
        self.conn
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .and_then(|()| self.use_wal())
            .map_err(|error| StoreError::Open {
                path: self.path.clone(),
                error,
            })
    }

    /// Refuses a file that is not Keel's before anything is written to it
    /// (even the switch to the write-ahead log): another program's
    /// database (tables, none of them Keel's `schema_migrations`, which
    /// Keel makes before any other), or one a newer Keel wrote. An empty
    /// file, or one being made by another Keel this moment, is Keel's.
    fn recognise(&self) -> Result<(), StoreError> {
        let open = |error| StoreError::Open {
            path: self.path.clone(),
            error,
        };
        let mut stmt = (self.conn)
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(open)?;
        let tables = (stmt.query_map([], |r| r.get::<_, String>(0)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(open)?;
        if tables.is_empty() {
            return Ok(());
        }
        if !tables.iter().any(|t| t == "schema_migrations") {
            let mut named: Vec<String> = (tables.iter().take(5))
                .map(|t| keel_model::shown::text(t).to_string())
                .collect();
            if tables.len() > 5 {
                named.push(format!("and {} more", tables.len() - 5));
            }
            return Err(StoreError::Foreign {
                path: self.path.clone(),
                tables: named.join(", "),
            });
        }
        refuse_newer(&self.path, self.schema_version()?)
    }

    /// The write-ahead log, which lets readers go on beside a writer:
    /// how the file is kept but for an import's [`write_in_place`].
    /// Switching to it takes an exclusive lock, and SQLite answers
    /// "locked" at once, without its busy wait, while another connection
    /// holds one (a process creating or migrating the file, or importing
    /// into it in place): this asks again for as long as a writer waits.
    ///
    /// [`write_in_place`]: Store::write_in_place
    fn use_wal(&self) -> rusqlite::Result<()> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match self.conn.execute_batch("PRAGMA journal_mode = WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// Leaves the write-ahead log, when no other connection has the file
    /// open (SQLite refuses at once otherwise, and this says `false`), for
    /// a rollback journal until [`use_wal`]: a bulk write then puts its
    /// new pages in the file once, where the log would write them twice
    /// (into the log, then into the file at the checkpoint). The journal
    /// holds only the pages the write changes, and the file stays all or
    /// nothing: a process killed mid-write leaves the journal, with which
    /// the next connection rolls the file back before it reads.
    ///
    /// [`use_wal`]: Store::use_wal
    fn write_in_place(&self) -> Result<bool, StoreError> {
        // Without the busy wait: a reader of the log in another connection
        // would make the switch wait for it, when the import can go on
        // through the log at once.
        let switched = self
            .conn
            .busy_timeout(std::time::Duration::ZERO)
            .and_then(|()| {
                (self.conn).query_row("PRAGMA journal_mode = TRUNCATE", [], |r| {
                    r.get::<_, String>(0)
                })
            });
        self.conn.busy_timeout(LOCK_WAIT).map_err(|e| self.sql(e))?;
        Ok(switched.is_ok_and(|m| m == "truncate"))
    }

    /// The highest applied migration, 0 for a new database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        (recorded_version(&self.conn))
            .map(Option::unwrap_or_default)
            .map_err(|e| self.sql(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT    NOT NULL,
                    applied_ms INTEGER NOT NULL
                )",
            )
            .map_err(|e| self.sql(e))?;
        let current = self.schema_version()?;
        refuse_newer(&self.path, current)?;
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let path = self.path.clone();
            let failed = |error| StoreError::Migration {
                path: path.clone(),
                version,
                name,
                error,
            };
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(failed)?;
            // Another process opening the same new file may have applied
            // it between our read and our write lock: ask again inside.
            let applied: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                    [version],
                    |r| r.get(0),
                )
                .map_err(failed)?;
            if applied {
                continue;
            }
            tx.execute_batch(sql).map_err(failed)?;
            if version == CANDLE_SPANS {
                candles::move_rows_to_spans(&tx).map_err(failed)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, now_ms()],
            )
            .map_err(failed)?;
            tx.commit().map_err(failed)?;
        }
        Ok(())
    }
}

/// Statements a connection keeps prepared: every statement of a booked
/// close, for a run with many books, with room to spare.
pub const STATEMENT_CACHE: usize = 64;

/// `execute` through the connection's cache of prepared statements: what is
/// written at every close is parsed once per connection, not once a close.
pub trait Cached {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// The wall clock in ms since the Unix epoch: when the ledger says a
/// write happened (never what a strategy or the kernel decides by).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_new_database_at_once_migrate_it_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("keel.db");
            let barrier = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                let opened: Vec<_> = (0..6)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Store::open(&path).map(|_| ())
                        })
                    })
                    .collect();
                for o in opened {
                    let result = o.join().expect("thread");
                    assert!(
                        result.is_ok(),
                        "{}",
                        result.err().map(|e| e.to_string()).unwrap_or_default()
                    );
                }
            });
            let store = Store::open(&path).expect("open");
            assert_eq!(
                store.schema_version().expect("version") as usize,
                MIGRATIONS.len()
            );
        }
    }

    #[test]
    fn migrations_apply_once_and_a_newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keel.db");
        let store = Store::open(&path).expect("open");
        let latest = MIGRATIONS.len() as u32;
        assert_eq!(store.schema_version().expect("version"), latest);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening applies nothing twice.
        let store = Store::open(&path).expect("reopen");
        let rows: u32 = store
            .conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, latest);
        store
            .conn
            .execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)", [])
            .expect("insert");
        drop(store);
        let err = Store::open(&path).expect_err("too new");
        let newer = format!(
            "the database is at schema version 99, newer than this keel ({latest}); use a newer keel"
        );
        assert!(err.to_string().ends_with(&newer), "{err}");
        // A command reading the record refuses it too.
        let err = open_record(&path).expect_err("too new").to_string();
        assert_eq!(err, format!("{}: {newer}", path.display()));
    }

    /// A file without Keel's tables (empty, or being made this moment)
    /// holds no record: said so in a line, not as a missing table.
    #[test]
    fn a_record_is_read_only_from_a_file_keel_has_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        let bare = dir.path().join("bare.db");
        Connection::open(&bare)
            .and_then(|c| c.execute_batch("CREATE TABLE other (x)"))
            .expect("bare");
        for path in [&empty, &bare] {
            let err = open_record(path).expect_err("no record").to_string();
            assert_eq!(
                err,
                format!(
                    "{}: no record yet (Keel has not made its tables in this file)",
                    path.display()
                )
            );
        }
        let made = dir.path().join("keel.db");
        drop(Store::open(&made).expect("open"));
        open_record(&made).expect("a record");
    }

    /// Another program's database, and one a newer Keel wrote, are refused
    /// by a store before a byte of them is written (not even the switch to
    /// the write-ahead log); an empty file is made Keel's.
    #[test]
    fn a_store_leaves_a_file_that_is_not_its_own_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let foreign = dir.path().join("app.db");
        Connection::open(&foreign)
            .and_then(|c| {
                c.execute_batch(
                    "CREATE TABLE users (x); CREATE TABLE orders (x); CREATE TABLE a (x);
                     CREATE TABLE b (x); CREATE TABLE c (x); CREATE TABLE d (x);",
                )
            })
            .expect("foreign");
        let newer = dir.path().join("newer.db");
        drop(Store::open(&newer).expect("open"));
        Connection::open(&newer)
            .and_then(|c| {
                c.execute_batch(
                    "INSERT INTO schema_migrations VALUES (999, 'future', 0);
                     PRAGMA journal_mode = DELETE;",
                )
            })
            .expect("newer");
        for (path, says) in [
            (
                &foreign,
                "not a Keel database (it holds tables Keel did not make: a, b, c, d, orders, \
                 and 1 more); give --db a file of Keel's or a new one"
                    .to_owned(),
            ),
            (
                &newer,
                format!(
                    "the database is at schema version 999, newer than this keel ({}); use a \
                     newer keel",
                    MIGRATIONS.len()
                ),
            ),
        ] {
            let before = std::fs::read(path).expect("read");
            let err = Store::open(path).expect_err("refused").to_string();
            assert_eq!(err, format!("{}: {says}", path.display()));
            assert_eq!(std::fs::read(path).expect("read"), before, "{err}");
        }
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        let store = Store::open(&empty).expect("an empty file");
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as u32
        );
    }
}
