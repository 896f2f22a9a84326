//! Who trades on a database. One process at a time may write a database's
//! ledger (`keel run`, `keel dev --paper`): it holds an exclusive OS lock on
//! `<db>.lock` for its whole life, taken before it opens the database, so
//! before any migration or row is written. The lock is the kernel's, so it
//! is released the moment the process ends, however it ends (SIGKILL too):
//! no stale owner is ever left behind to be guessed at. It holds one on the
//! database file too: the lock file can be removed while a run goes on.
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
    // Not `source`: the cause is in the line already, and a source would
    // be printed again after it.
    #[error("{path}: cannot take the database's lock: {why}")]
    Io { path: String, why: std::io::Error },
}

/// The exclusive right to write a database's ledger, held until dropped.
#[derive(Debug)]
pub struct Ownership {
    _file: File,
    /// The database file, locked as the lock file is. One the claim made
    /// is left, empty, if the process ends before SQLite writes to it (an
    /// empty file is an empty database): removing it could take it from
    /// under an import that has just opened it.
    _database: File,
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
        let io = |why| OwnerError::Io {
            path: path.display().to_string(),
            why,
        };
        let mut file = open_private(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, owner) = owner_of(&mut file);
                // An owner that is gone while its lock is held: a process it
                // was starting when it died holds a copy of the lock until
                // that process execs (the lock is close-on-exec). Wait for it.
                let orphaned = pid.is_some_and(|pid| !alive(pid));
                if !(orphaned && released_within(&file, ORPHAN_WAIT).map_err(io)?) {
                    let owner = if orphaned {
                        format!("{owner}, which has ended, through a process it started")
                    } else {
                        owner
                    };
                    return Err(OwnerError::Taken {
                        db: db.display().to_string(),
                        owner,
                    });
                }
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The database itself is locked too, and it is what counts: a lock
        // file can be removed or replaced while its run goes on (a cleaner
        // of old files, an `rm`), and a second run would take the new one.
        // The database cannot be, and keep its ledger. (SQLite's own locks
        // are POSIX ones, which an flock neither meets nor blocks.)
        let database = lock_database(db).map_err(|why| OwnerError::Io {
            path: db.display().to_string(),
            why,
        })?;
        let Some(database) = database else {
            return Err(OwnerError::Taken {
                db: db.display().to_string(),
                owner: format!(
                    "another keel process (whose lock file {} was removed or replaced while it ran)",
                    path.display()
                ),
            });
        };
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // One write: a reader never sees the pid without the command.
        let line = format!("{} {command}", std::process::id());
        file.write_all(line.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Ownership {
            _file: file,
            _database: database,
            db: db.to_owned(),
        })
    }

    /// The database owned.
    pub fn db(&self) -> &Path {
        &self.db
    }
}

/// Opens (creating, as SQLite would) and locks the database file itself:
/// `None` when another process holds it past a dead owner's child's moment.
fn lock_database(db: &Path) -> std::io::Result<Option<File>> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    }
    let file = options.open(db)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(released_within(&file, ORPHAN_WAIT)?.then_some(file)),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// How long a lock left to a dead owner's child is waited for: that child
/// lets go when it execs, in microseconds unless the machine is starved.
const ORPHAN_WAIT: Duration = Duration::from_secs(5);

/// Whether the lock could be taken within `wait`.
fn released_within(file: &File, wait: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Whether process `pid` exists (a zombie not yet reaped counts).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The owner named in a held lock file: its pid and how to name it. The
/// owner writes its name just after it takes the lock, so an empty file is
/// read again for a moment.
fn owner_of(file: &mut File) -> (Option<u32>, String) {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.take(256).read_to_string(&mut text));
        if let Ok(n) = read
            && n > 0
            && let Some((pid, command)) = parse_owner(&text)
            && !command.is_empty()
        {
            return (Some(pid), format!("{command} (pid {pid})"));
        }
        if Instant::now() >= deadline {
            return (None, "another keel process (pid unknown)".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A lock file's "PID COMMAND" line: the pid, and the command as printable
/// ASCII (whoever holds the lock wrote it; it is shown to the user).
pub(crate) fn parse_owner(text: &str) -> Option<(u32, String)> {
    let text = text.trim();
    let (pid, command) = text.split_once(' ').unwrap_or((text, ""));
    let pid = pid.parse::<u32>().ok()?;
    let command = command
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(40)
        .collect();
    Some((pid, command))
}

/// Opens (creating) a file only its owner can read; never through a link
/// (the lock file is truncated once taken: a link planted in its place
/// would have Keel truncate whatever it points to), nor waiting on a pipe.
pub(crate) fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NOFOLLOW | libc::O_NONBLOCK,
        );
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_owner_until_the_first_is_dropped() {
        let _serial = SERIAL.lock();
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

    /// A lock file removed (or replaced) while its run goes on: the run
    /// still holds the database itself, and a second is refused.
    #[test]
    fn a_run_whose_lock_file_was_removed_still_holds_the_database() {
        let _serial = SERIAL.lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let first = Ownership::claim(&db, "keel run").expect("first claim");
        std::fs::remove_file(lock_file(&db)).expect("remove the lock file");
        let err = Ownership::claim(&db, "keel run").expect_err("second claim");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: another keel process (whose lock file {} was removed or replaced while it ran) is trading on this database; one process trades on a database at a time",
                db.display(),
                lock_file(&db).display()
            )
        );
        std::fs::write(lock_file(&db), "").expect("a new lock file");
        assert!(Ownership::claim(&db, "keel run").is_err(), "replaced");
        drop(first);
        let again = Ownership::claim(&db, "keel run").expect("claim once the first ends");
        assert_eq!(again.db(), db);
    }

    /// A process the owner was starting when it was SIGKILLed holds a copy
    /// of the lock until it execs. Found by CI: a restart right after the
    /// kill was refused, naming an owner that was already gone.
    #[cfg(unix)]
    #[test]
    #[allow(unsafe_code)]
    fn a_lock_left_to_a_dead_owners_child_for_a_moment_is_waited_for() {
        use std::os::unix::process::CommandExt;
        let _serial = SERIAL.lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let first = Ownership::claim(&db, "keel run").expect("first claim");
        // Another thread starts a process, which holds every descriptor of
        // this one (the lock's too) until it execs, and pauses before the
        // exec; it says so through a pipe once it is paused.
        let (mut forked, paused) = std::io::pipe().expect("pipe");
        let starter = std::thread::spawn(move || {
            let mut child = std::process::Command::new("true");
            // SAFETY: the closure writes to a pipe and sleeps, both
            // async-signal-safe.
            unsafe {
                child.pre_exec(move || {
                    (&paused).write_all(b"x")?;
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                });
            }
            child.status().expect("run the child")
        });
        let mut byte = [0u8; 1];
        forked.read_exact(&mut byte).expect("the child paused");
        // The owner named in the file is gone: a reaped process.
        let mut gone = std::process::Command::new("true").spawn().expect("spawn");
        gone.wait().expect("reap");
        std::fs::write(lock_file(&db), format!("{} keel run", gone.id())).expect("rewrite");
        drop(first);
        let again = Ownership::claim(&db, "keel run").expect("claim once the child lets go");
        assert_eq!(again.db(), db);
        starter.join().expect("starter");
    }

    #[test]
    fn the_lock_files_owner_line_is_read_as_printable_text() {
        assert_eq!(
            parse_owner("4242 keel run --mode paper\n"),
            Some((4242, "keel run --mode paper".to_owned()))
        );
        let (pid, command) = parse_owner("7 keel\u{1b}[2J\u{7}run").expect("pid");
        assert_eq!((pid, command.as_str()), (7, "keel[2Jrun"));
        assert_eq!(parse_owner("4242 "), Some((4242, String::new())));
        assert_eq!(parse_owner("-1 keel"), None);
        assert_eq!(parse_owner(""), None);
    }

    /// The test above forks this process with every descriptor it has: no
    /// other claim may be held meanwhile.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
}
