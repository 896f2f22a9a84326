//! What a running `keel run` and the commands that talk to it share: the
//! snapshot the engine publishes, the commands it takes, the control file
//! `<db>.control` (port, bearer token and pid; readable by its owner only),
//! the kill file, and the client `keel status`, `keel pause` and the rest
//! use. The server is `crate::api`.
//!
//! The kill switch does not depend on the API alone: `<db>.kill` (its text
//! is the reason) is checked by the engine at start, before every bar and
//! while it waits for one; `keel kill` writes it when the API does not
//! answer.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

mod holders;
use holders::{lock_held_by, port_not_held_by};

/// One open position, as served.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotPosition {
    pub symbol: String,
    pub tag: String,
    pub side: String,
    pub quantity: f64,
    pub entry: f64,
    pub mark: f64,
    pub unrealized: f64,
    /// The stop-loss and take-profit prices the host holds for it.
    #[serde(default)]
    pub stop_loss: Option<f64>,
    #[serde(default)]
    pub take_profit: Option<f64>,
}

/// One book (strategy slot), as served.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotBook {
    pub slot: String,
    pub strategy: String,
    /// The symbols its strategy is bound to.
    #[serde(default)]
    pub symbols: Vec<String>,
    pub start_cash: f64,
    pub cash: f64,
    pub equity: f64,
    pub realized: f64,
    pub fees: f64,
    pub drawdown_pct: f64,
    pub positions: Vec<SnapshotPosition>,
    pub signals: u64,
    pub rejected: u64,
    pub calls: u64,
    pub traps: u64,
}

/// One closed trade, as served.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotTrade {
    pub slot: String,
    pub symbol: String,
    pub tag: String,
    pub side: String,
    pub quantity: f64,
    pub entry: f64,
    pub exit: f64,
    pub opened_ms: i64,
    pub closed_ms: i64,
    pub pnl: f64,
    pub exit_reason: String,
}

/// How the feed is doing, as served.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeedHealth {
    /// Open time of the last bar the feed delivered.
    pub last_bar_ms: Option<i64>,
    /// Polls in a row that failed (0 while the feed is healthy).
    pub consecutive_failures: u32,
    /// The last failure, while it lasts.
    pub last_error: Option<String>,
}

/// What the engine last published.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub run_id: i64,
    pub feed: String,
    #[serde(default)]
    pub feed_health: FeedHealth,
    pub state: String,
    pub killed: bool,
    pub bars: u64,
    pub cursor_ms: Option<i64>,
    pub books: Vec<SnapshotBook>,
    pub trades: Vec<SnapshotTrade>,
    /// The live venue's health (a live run only).
    #[serde(default)]
    pub venue: Option<crate::venues::kraken::VenueHealth>,
    /// `paper` or `live`.
    #[serde(default)]
    pub mode: String,
}

/// Every book's positions, as `GET /positions` serves them.
pub fn positions_json(s: &Snapshot) -> serde_json::Value {
    s.books
        .iter()
        .map(|b| serde_json::json!({"slot": b.slot, "positions": b.positions}))
        .collect()
}

/// The engine's answer to a command.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reply")]
pub enum Reply {
    State {
        state: String,
    },
    Killed {
        latency_us: u64,
        positions_closed: usize,
        orders_cancelled: usize,
        /// What the live venue confirmed (a live run only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        venue: Option<String>,
    },
    Swapped {
        slot: String,
        from: String,
        to: String,
        warmed_bars: usize,
        after_ms: Option<i64>,
    },
}

type Answer = Sender<Result<Reply, String>>;

/// A command for the engine.
#[derive(Debug)]
pub enum Command {
    Pause {
        reason: String,
        reply: Answer,
    },
    Resume {
        reason: String,
        /// Lift a halt the kill switch left (`keel resume --after-kill`).
        after_kill: bool,
        reply: Answer,
    },
    Kill {
        reason: String,
        received: Instant,
        reply: Answer,
    },
    /// End the run cleanly after the current bar.
    Stop {
        reply: Answer,
    },
    /// Hot-swap the main book to a stored artifact.
    Swap {
        hash: String,
        actor: String,
        reason: String,
        reply: Answer,
    },
}

/// Where a running engine listens, as written to `<db>.control`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Endpoint {
    pub port: u16,
    pub token: String,
    pub pid: u32,
}

/// The control file of a database.
pub fn control_file(db: &Path) -> PathBuf {
    suffixed(db, ".control")
}

/// The pid of the live process serving the control API of `db`, if any
/// (for what a command says; ownership itself is `store::Ownership`).
pub fn serving_pid(db: &Path) -> Option<u32> {
    let endpoint = endpoint_in(&control_file(db))?;
    crate::store::alive(endpoint.pid).then_some(endpoint.pid)
}

/// What a control file says, if it can be read as one.
fn endpoint_in(file: &Path) -> Option<Endpoint> {
    let text = read_regular(file, CONTROL_FILE_BYTES).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The pid of the run trading on `db` (the live holder of its lock), if
/// any: the run a kill file waits for, whatever a control file names.
/// Asked of the kernel (`/proc`) where it can be: a pid named in a
/// file may have ended and been handed to another process, a held lock
/// cannot outlive its holder. Elsewhere, the lock file's pid if alive.
pub fn lock_holder(db: &Path) -> Option<u32> {
    let own = std::process::id();
    if let Some(held) = lock_held_by(db) {
        return held.filter(|&pid| pid != own);
    }
    let text = read_regular(&crate::store::lock_file(db), 256).ok()?;
    let (pid, _) = crate::store::parse_owner(&String::from_utf8_lossy(&text))?;
    (pid != own && crate::store::alive(pid)).then_some(pid)
}

/// Removes a control file as its run ends, unless it names another pid:
/// then it is another run's (one that started on the database once this
/// one could no longer hold it), which it still serves.
pub(crate) fn remove_own_control_file(file: &Path) {
    let another = endpoint_in(file).is_some_and(|endpoint| endpoint.pid != std::process::id());
    if !another {
        let _ = std::fs::remove_file(file);
    }
}

/// The kill file of a database: its presence halts the engine trading on
/// it; its text is the reason.
pub fn kill_file(db: &Path) -> PathBuf {
    suffixed(db, ".kill")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Longest reason read from a kill file.
const KILL_REASON_BYTES: u64 = 1024;

/// Longest control file read (its port, token and pid are a hundred bytes).
const CONTROL_FILE_BYTES: u64 = 64 << 10;

/// At most `max` bytes of `path` when it is a regular file: a link is not
/// followed and a pipe never waited on (whoever can write beside the
/// database could otherwise hang a reader with a FIFO, or feed it
/// `/dev/zero`).
fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NONBLOCK | libc::O_NOFOLLOW,
    );
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Asks for a kill through the kill file (replaced atomically, private).
pub fn write_kill_file(db: &Path, reason: &str) -> std::io::Result<PathBuf> {
    let file = kill_file(db);
    write_kill_request(&file, reason)?;
    Ok(file)
}

/// Writes the kill file `file` (replaced atomically, private).
pub(crate) fn write_kill_request(file: &Path, reason: &str) -> std::io::Result<()> {
    replace_private(file, reason.as_bytes())
}

/// The reason in a kill file, if there is one. The engine removes the file
/// once the kill is applied and stored, which is what `keel kill` waits
/// for. A reason that is not text, or none, still kills.
pub fn read_kill_file(file: &Path) -> Option<String> {
    // Whatever is there kills, a link or a pipe too; only a regular file's
    // text is read as the reason.
    std::fs::symlink_metadata(file).ok()?;
    let bytes = read_regular(file, KILL_REASON_BYTES).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    Some(if text.is_empty() {
        "kill file".to_owned()
    } else {
        format!("{text} (kill file)")
    })
}

/// A fresh bearer token: 32 random bytes, hex.
pub(crate) fn token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for the control token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Replaces `path` with a file only its owner can read, holding `bytes`:
/// written under a name of its own, created afresh (never through a link
/// or into a file someone put there first), then renamed over `path`,
/// which replaces whatever is there (a link, a pipe) rather than writing
/// through it. Whoever can write beside the database could otherwise plant
/// a link and have Keel write the control token into a file they can
/// read, or truncate any file the operator can write; a pipe would hang
/// the write.
pub(crate) fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static FRESH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tries = 0;
    let (partial, mut f) = loop {
        let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let partial = suffixed(
            path,
            &format!(".{}-{n}-{nanos}.partial", std::process::id()),
        );
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        }
        match options.open(&partial) {
            Ok(f) => break (partial, f),
            // Someone took the name first: another.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Why a request did not reach the engine.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("no keel run is running on {db} (no {file})")]
    NoControlFile { db: String, file: String },
    #[error("{file}: not a control file: {why}")]
    BadControlFile { file: String, why: String },
    #[error("the keel run on {db} (pid {pid}) did not answer on 127.0.0.1:{port}: {why}")]
    NoAnswer {
        db: String,
        pid: u32,
        port: u16,
        why: String,
    },
    #[error(
        "127.0.0.1:{port} (in {file}) is not the control port of a keel run on {db}: {why}; it was not asked, nor shown the token"
    )]
    NotTheEngine {
        db: String,
        file: String,
        /// The pid the control file names.
        pid: u32,
        port: u16,
        why: String,
    },
}

/// What a request that did not reach an engine says of the run on a
/// database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    /// No process holds the database's lock: whatever control file is
    /// there was left by a run that has ended.
    None,
    /// A run holds the lock but its control file is not yet written (the
    /// one there, if any, names a process that is not it): it is starting.
    Starting(u32),
    /// The run holding the lock is the one the control file names, and it
    /// was not reached (or the control file cannot be read).
    Unreached,
}

impl Unreachable {
    /// What this says of the run on `db`. The one rule: a run is live iff a
    /// process holds the database's lock (asked of the kernel where it can
    /// be); a control file's pid alone says nothing, since it outlives its
    /// run and a new run writes its own only once it serves.
    pub fn run_on(&self, db: &Path) -> RunOn {
        let named = match self {
            Unreachable::BadControlFile { .. } => return RunOn::Unreached,
            Unreachable::NoControlFile { .. } => None,
            Unreachable::NoAnswer { pid, .. } | Unreachable::NotTheEngine { pid, .. } => Some(*pid),
        };
        match lock_holder(db) {
            None => RunOn::None,
            Some(holder) if named != Some(holder) => RunOn::Starting(holder),
            Some(_) => RunOn::Unreached,
        }
    }
}

/// What a command says of a run holding `db`'s lock that does not serve yet.
pub fn starting(pid: u32, db: &Path) -> String {
    format!(
        "keel (pid {pid}) holds {} but serves no control API yet (starting?); ask again in a moment",
        db.display()
    )
}

/// How long a request may take end to end, unless said otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest reply the control client reads (a status or a list of
/// trades is kilobytes).
const MAX_CONTROL_REPLY: u64 = 16 << 20;

/// Sends one request to the engine running on `db`; returns the status
/// and body.
pub fn request(
    db: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), Unreachable> {
    request_within(db, method, path, body, REQUEST_TIMEOUT)
}

/// `request`, connecting within 2 s and done within `timeout`.
pub fn request_within(
    db: &Path,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), Unreachable> {
    let file = control_file(db);
    if std::fs::symlink_metadata(&file).is_err() {
        return Err(Unreachable::NoControlFile {
            db: db.display().to_string(),
            file: file.display().to_string(),
        });
    }
    let text =
        read_regular(&file, CONTROL_FILE_BYTES).map_err(|e| Unreachable::BadControlFile {
            file: file.display().to_string(),
            why: e.to_string(),
        })?;
    let endpoint: Endpoint =
        serde_json::from_slice(&text).map_err(|e| Unreachable::BadControlFile {
            file: file.display().to_string(),
            why: e.to_string(),
        })?;
    let no_answer = |why: String| Unreachable::NoAnswer {
        db: db.display().to_string(),
        pid: endpoint.pid,
        port: endpoint.port,
        why,
    };
    // A run that has ended answers nothing: whatever listens on the port it
    // left is another process, which is neither asked nor shown the token
    // (it could fake the engine's replies, a kill's too).
    if !crate::store::alive(endpoint.pid) {
        return Err(no_answer(
            "it has ended; its control file is left over".into(),
        ));
    }
    let not_the_engine = match lock_held_by(db) {
        Some(None) => Some(format!(
            "no run holds the database's lock (pid {} named there is not a live run)",
            endpoint.pid
        )),
        Some(Some(holder)) if holder != endpoint.pid => Some(format!(
            "the run holding the database's lock is pid {holder}, not pid {}",
            endpoint.pid
        )),
        _ => port_not_held_by(endpoint.pid, endpoint.port),
    };
    if let Some(why) = not_the_engine {
        return Err(Unreachable::NotTheEngine {
            db: db.display().to_string(),
            file: file.display().to_string(),
            pid: endpoint.pid,
            port: endpoint.port,
            why,
        });
    }
    let started = Instant::now();
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .no_proxy()
        // The engine never redirects: a redirect is someone else's.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| no_answer(e.to_string()))?;
    let method =
        reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| no_answer(e.to_string()))?;
    let response = client
        .request(method, format!("http://127.0.0.1:{}{path}", endpoint.port))
        .bearer_auth(&endpoint.token)
        .body(body.to_owned())
        .send()
        .map_err(|e| {
            no_answer(if e.is_timeout() {
                format!("no reply within {:.1} s", started.elapsed().as_secs_f64())
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                // Without the URL: nothing of the request is echoed.
                e.without_url().to_string()
            })
        })?;
    let status = response.status().as_u16();
    // Whatever answers on the port may be another process: its reply is
    // read within the timeout and a cap, not for as long as it drips.
    let body = crate::venues::body::read_body(response, MAX_CONTROL_REPLY, started, timeout)
        .map_err(|e| no_answer(e.to_string()))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ending_removes_its_own_control_file_not_anothers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = control_file(&dir.path().join("keel.db"));
        let naming = |pid: u32| format!(r#"{{"port":1,"token":"t","pid":{pid}}}"#);
        std::fs::write(&file, naming(std::process::id() + 1)).expect("write");
        remove_own_control_file(&file);
        assert!(file.exists(), "another run's control file removed");
        std::fs::write(&file, naming(std::process::id())).expect("write");
        remove_own_control_file(&file);
        assert!(!file.exists(), "its own control file left");
        // One that cannot be read as a control file goes as it always did.
        std::fs::write(&file, "\x00garbage").expect("write");
        remove_own_control_file(&file);
        assert!(!file.exists(), "a damaged control file left");
    }

    #[test]
    fn a_kill_files_reason_is_made_printable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let file = write_kill_file(&db, "flash\x1b crash\n").expect("write");
        assert_eq!(file, kill_file(&db));
        assert_eq!(
            read_kill_file(&file).as_deref(),
            Some("flash  crash (kill file)")
        );
        std::fs::write(&file, [0x1b, 0xff]).expect("write");
        assert_eq!(
            read_kill_file(&file).as_deref(),
            Some("\u{fffd} (kill file)")
        );
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(read_kill_file(&file), None);
        // A pipe or a link to an endless device still kills, at once: the
        // engine never waits on it nor reads it whole.
        let made = std::process::Command::new("mkfifo").arg(&file).status();
        assert!(made.expect("mkfifo").success());
        assert_eq!(read_kill_file(&file).as_deref(), Some("kill file"));
        std::fs::remove_file(&file).expect("remove");
        std::os::unix::fs::symlink("/dev/zero", &file).expect("link");
        assert_eq!(read_kill_file(&file).as_deref(), Some("kill file"));
    }
}
