//! One night at a time on a database. A night holds an exclusive OS lock
//! on `<db>.evolve.lock` from before it is opened until its process ends;
//! the file names the process (`pid`). The lock is the kernel's, released
//! the moment the process ends however it ends, so a night that holds it
//! and finds another night still `running` knows that night's process is
//! gone, and closes it as abandoned; a second night while one runs is
//! refused, naming the one running.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};

use crate::store::{alive, open_private};

/// Why a night could not start.
#[derive(Debug, thiserror::Error)]
pub enum NightLockError {
    #[error("{night} is running on {db} ({holder}); one night runs at a time on a database")]
    Running {
        night: String,
        db: String,
        holder: String,
    },
    // Not `source`: the cause is in the line already, and a source would
    // be printed again after it.
    #[error("{path}: cannot take the night's lock: {why}")]
    Io { path: String, why: std::io::Error },
}

/// The right to run a night on a database, held until dropped.
#[derive(Debug)]
pub struct NightLock {
    _file: File,
}

/// The night lock file of a database.
pub fn night_lock_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".evolve.lock");
    PathBuf::from(name)
}

/// How long a lock left to a dead night's child is waited for: a process
/// it was starting holds a copy of the lock until it execs.
const ORPHAN_WAIT: Duration = Duration::from_secs(5);

impl NightLock {
    /// Takes the night lock of the database `conn` is open on (none for
    /// a database in memory: no other process can reach it), or names the
    /// night running.
    pub fn take(conn: &Connection) -> Result<Option<NightLock>, NightLockError> {
        let db = match conn.path() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Ok(None),
        };
        let path = night_lock_file(&db);
        let io = |why| NightLockError::Io {
            path: path.display().to_string(),
            why,
        };
        let mut file = open_private(&path).map_err(io)?;
        let deadline = Instant::now() + ORPHAN_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let pid = holder(&mut file);
                    let orphaned = pid.is_some_and(|pid| !alive(pid));
                    if orphaned && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    let night: Option<i64> = conn
                        .query_row(
                            "SELECT id FROM evolve_nights WHERE status = 'running' ORDER BY id DESC LIMIT 1",
                            [],
                            |r| r.get(0),
                        )
                        .optional()
                        .unwrap_or(None);
                    return Err(NightLockError::Running {
                        night: night.map_or("a night".into(), |id| format!("night {id}")),
                        db: db.display().to_string(),
                        holder: pid.map_or("pid unknown".into(), |pid| format!("pid {pid}")),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Some(NightLock { _file: file }))
    }
}

/// The pid the holder of a lock file wrote in it, if it did yet.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_night_is_refused_naming_the_running_one_until_the_first_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(
            "CREATE TABLE evolve_nights (id INTEGER PRIMARY KEY, status TEXT NOT NULL);
             INSERT INTO evolve_nights (id, status) VALUES (4, 'running');",
        )
        .expect("table");
        let first = NightLock::take(&conn).expect("first").expect("a file");
        let e = NightLock::take(&conn).expect_err("second").to_string();
        assert_eq!(
            e,
            format!(
                "night 4 is running on {} (pid {}); one night runs at a time on a database",
                db.display(),
                std::process::id()
            )
        );
        drop(first);
        assert!(NightLock::take(&conn).expect("after").is_some());
        let memory = Connection::open_in_memory().expect("db");
        assert!(NightLock::take(&memory).expect("in memory").is_none());
    }
}
