//! Who trades on a database. One process at a time may write a database's
//! ledger (`keel run`, `keel dev --paper`): it holds an exclusive OS lock on
//! `<db>.lock` for its whole life, taken before it opens the database, so
//! before any migration or row is written. The lock is the kernel's, so it
//! is released the moment the process ends, however it ends (SIGKILL too):
//! no stale owner is ever left behind to be guessed at.
//!
//! The file also names the owner (`pid command`), for the one-line refusal
//! the others print.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a database could not be owned.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "{db}: {owner} is trading on this database; one process trades on a database at a time"
    )]
    Taken { db: String, owner: String },
    #[error("{path}: cannot take the database's lock: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The exclusive right to write a database's ledger, held until dropped.
#[derive(Debug)]
pub struct Ownership {
    _file: File,
    db: PathBuf,
}

/// The lock file of a database.
pub fn lock_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Ownership {
    /// Takes the database for this process (`command` names it to others,
    /// e.g. "keel run"), or says who has it.
    pub fn claim(db: &Path, command: &str) -> Result<Ownership, OwnerError> {
        let path = lock_file(db);
        let io = |source| OwnerError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = open_private(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OwnerError::Taken {
                    db: db.display().to_string(),
                    owner: owner_of(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{} {command}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Ownership {
            _file: file,
            db: db.to_owned(),
        })
    }

    /// The database owned.
    pub fn db(&self) -> &Path {
        &self.db
    }
}

/// The owner named in a held lock file. The owner writes its name just
/// after it takes the lock, so an empty file is read again for a moment.
fn owner_of(file: &mut File) -> String {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.take(256).read_to_string(&mut text));
        if let Ok(n) = read
            && n > 0
            && let Some((pid, command)) = text.trim().split_once(' ')
            && pid.parse::<u32>().is_ok()
        {
            // Written by whoever holds the lock: printable ASCII only.
            let command: String = command
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(40)
                .collect();
            return format!("{command} (pid {pid})");
        }
        if Instant::now() >= deadline {
            return "another keel process (pid unknown)".to_owned();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Opens (creating) a file only its owner can read.
fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_owner_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let first = Ownership::claim(&db, "keel run").expect("first claim");
        let err = Ownership::claim(&db, "keel dev --paper").expect_err("second claim");
        let text = err.to_string();
        assert!(
            text.contains(&format!("keel run (pid {})", std::process::id())),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        drop(first);
        let again = Ownership::claim(&db, "keel dev --paper").expect("claim after release");
        assert_eq!(again.db(), db);
    }
}
