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
    let text = read_regular(&control_file(db), CONTROL_FILE_BYTES).ok()?;
    let endpoint: Endpoint = serde_json::from_slice(&text).ok()?;
    crate::store::alive(endpoint.pid).then_some(endpoint.pid)
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

/// Who holds `db`'s lock, as the kernel says: `None` where its table of
/// locks cannot be read, `Some(None)` when no live process holds it.
///
/// A run holds two: its lock file's and the database file's own (the lock
/// file may have been removed or replaced while it runs; the database
/// cannot be). The pids the lock file and the control file name are asked
/// first, of their own descriptors (`/proc/PID/fdinfo` of one open on
/// either file lists its locks, read whole). `/proc/locks`, which names
/// every holder, is read a page at a time, each read starting again by
/// position: while other processes lock and unlock, a line moves and is
/// skipped, so it is searched only where neither named pid holds either
/// file (a run starting, before it names itself). That table names a
/// lock's file by inode number alone (a snapshot of a filesystem repeats
/// them) and keeps the pid that took it after that process has ended (a
/// child it forked may hold it a moment longer): a pid found there counts
/// only if the file itself is among its open files.
fn lock_held_by(db: &Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let path = crate::store::lock_file(db);
    let files: Vec<(u64, u64)> = [std::fs::symlink_metadata(&path), std::fs::metadata(db)]
        .into_iter()
        .filter_map(|m| m.ok().filter(|m| m.is_file()).map(|m| (m.dev(), m.ino())))
        .collect();
    let named = read_regular(&path, 256)
        .ok()
        .and_then(|text| crate::store::parse_owner(&String::from_utf8_lossy(&text)))
        .map(|(pid, _)| pid);
    let serving = read_regular(&control_file(db), CONTROL_FILE_BYTES)
        .ok()
        .and_then(|text| serde_json::from_slice::<Endpoint>(&text).ok())
        .map(|endpoint| endpoint.pid);
    if let Some(pid) = [named, serving]
        .into_iter()
        .flatten()
        .find(|&pid| holds_flock(pid, &files) == Some(true))
    {
        return Some(Some(pid));
    }
    let holder = files.iter().find_map(|&(dev, ino)| {
        exclusive_flocks_on(&table, ino)
            .into_iter()
            .find(|&pid| has_open(pid, dev, ino))
    });
    Some(holder)
}

/// Whether process `pid` holds an exclusive `flock` on one of `files`
/// (device, inode) through a descriptor of its own; `None` where its
/// descriptors cannot be read (another user's process, or no `/proc`).
fn holds_flock(pid: u32, files: &[(u64, u64)]) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.filter_map(Result::ok).any(|fd| {
        let Some(ino) = std::fs::metadata(fd.path())
            .ok()
            .filter(|m| files.contains(&(m.dev(), m.ino())))
            .map(|m| m.ino())
        else {
            return false;
        };
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        read_regular(Path::new(&info), 64 << 10).is_ok_and(|info| {
            let locks = String::from_utf8_lossy(&info).replace("lock:", "");
            !exclusive_flocks_on(&locks, ino).is_empty()
        })
    }))
}

/// Whether process `pid` has the file (`dev`, `ino`) open; where its open
/// files cannot be read (another user's), whether it is alive.
fn has_open(pid: u32, dev: u64, ino: u64) -> bool {
    match open_files(pid) {
        Ok(files) => files.contains(&(dev, ino)),
        Err(_) => crate::store::alive(pid),
    }
}

/// The (device, inode) of every file process `pid` has open, sockets
/// among them (a socket's inode is the one `/proc/net/tcp` names).
fn open_files(pid: u32) -> std::io::Result<std::collections::HashSet<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?;
    Ok(fds
        .filter_map(|fd| std::fs::metadata(fd.ok()?.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect())
}

/// The pids holding an exclusive `flock` on inode `inode` in a
/// `/proc/locks` table (waiters, shown after `->`, hold nothing).
fn exclusive_flocks_on(table: &str, inode: u64) -> Vec<u32> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [_, "FLOCK", _, "WRITE", pid, file, ..] = f.as_slice() else {
                return None;
            };
            let on: u64 = file.rsplit(':').next()?.parse().ok()?;
            (on == inode).then(|| pid.parse().ok()).flatten()
        })
        .collect()
}

/// Removes a control file as its run ends, unless it names another pid:
/// then it is another run's (one that started on the database once this
/// one could no longer hold it), which it still serves.
pub(crate) fn remove_own_control_file(file: &Path) {
    let another = read_regular(file, CONTROL_FILE_BYTES)
        .ok()
        .and_then(|text| serde_json::from_slice::<Endpoint>(&text).ok())
        .is_some_and(|endpoint| endpoint.pid != std::process::id());
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

/// Why the socket listening on `port` where 127.0.0.1 reaches it is not
/// process `pid`'s, if it is not. A control file's port is asked only
/// while its run holds it: after a crash, or a reboot that handed the run's
/// pid to another process, whoever listens there would be shown the token
/// (and could answer a kill). Nothing is said where this cannot be told (no
/// `/proc`), nor when nothing listens (the connection fails as it would).
fn port_not_held_by(pid: u32, port: u16) -> Option<String> {
    let mut listeners = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listeners.extend(listening_on(&text, port));
        }
    }
    if listeners.is_empty() {
        return None;
    }
    let files = match open_files(pid) {
        Ok(files) => files,
        Err(e) => return Some(format!("the descriptors of pid {pid} cannot be read ({e})")),
    };
    let inodes = files.into_iter().map(|(_, ino)| ino).collect();
    let uid = foreign_listener(&listeners, &inodes)?;
    Some(format!(
        "another process (uid {uid}) listens there, not pid {pid}"
    ))
}

/// The uid of a listener a connection to 127.0.0.1 may reach that is not
/// among `sockets`: none when one of `sockets` listens on 127.0.0.1 itself
/// (Linux hands a connection to the exact address before any wildcard, and
/// a wildcard socket of IPv6 only, which the tables cannot tell apart,
/// never gets it).
fn foreign_listener(
    listeners: &[Listener],
    sockets: &std::collections::HashSet<u64>,
) -> Option<String> {
    let ours = |l: &&Listener| sockets.contains(&l.inode);
    if listeners.iter().filter(|l| l.loopback).any(|l| ours(&l)) {
        return None;
    }
    listeners.iter().find(|l| !ours(l)).map(|l| l.uid.clone())
}

/// A listening socket from a `/proc/net/tcp` or `tcp6` table.
#[derive(Debug, Clone, PartialEq)]
struct Listener {
    inode: u64,
    uid: String,
    /// On 127.0.0.1 itself (not a wildcard).
    loopback: bool,
}

/// The sockets of a `/proc/net/tcp` or `tcp6` table that listen on
/// `port` at an address a connection to 127.0.0.1 reaches: loopback
/// itself, or a wildcard (IPv4's, IPv6's, or IPv6's for IPv4 only).
fn listening_on(table: &str, port: u16) -> Vec<Listener> {
    const LOOPBACK: [&str; 2] = ["0100007F", "0000000000000000FFFF00000100007F"];
    const WILDCARDS: [&str; 3] = [
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF000000000000",
    ];
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid, inode) = (f.get(1)?, f.get(3)?, f.get(7)?, f.get(9)?);
            let address = local.strip_suffix(port.as_str())?;
            let inode = inode.parse().ok()?;
            let loopback = LOOPBACK.contains(&address);
            (*state == "0A" && (loopback || WILDCARDS.contains(&address))).then(|| Listener {
                inode,
                uid: (*uid).to_owned(),
                loopback,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listeners_a_loopback_connection_reaches_are_read_from_the_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4545 1 0000000000000000 100 0 0 10 0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4646 1 0000000000000000 100 0 0 10 0
";
        let listener = |inode: u64, uid: &str, loopback| Listener {
            inode,
            uid: uid.to_owned(),
            loopback,
        };
        // Loopback and any address; not 127.0.0.2, a connection, another port.
        assert_eq!(
            listening_on(v4, 8080),
            [listener(4242, "1000", true), listener(4343, "0", false)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 5252 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 5353 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 5454 1 0000000000000000 100 0 0 10 0
";
        // Any address, IPv4's any as IPv6 says it, IPv4's loopback; not ::1.
        assert_eq!(
            listening_on(v6, 8080),
            [
                listener(5151, "1001", false),
                listener(5353, "1002", false),
                listener(5454, "1003", true)
            ]
        );

        // A connection to 127.0.0.1 goes to a socket on that address before
        // any wildcard (one of IPv6 only, which the tables do not tell
        // apart, never gets it): the engine's own listener there is enough.
        let ours: std::collections::HashSet<u64> = [4242].into();
        let wild = listener(5151, "1001", false);
        let engines = listener(4242, "1000", true);
        assert_eq!(
            foreign_listener(&[wild.clone(), engines.clone()], &ours),
            None
        );
        assert_eq!(foreign_listener(&[engines], &ours), None);
        assert_eq!(
            foreign_listener(std::slice::from_ref(&wild), &ours),
            Some("1001".to_owned())
        );
        let strangers = listener(4444, "0", true);
        assert_eq!(
            foreign_listener(&[strangers, wild], &ours),
            Some("0".to_owned())
        );
        assert!(listening_on("garbage\n\n 0: x", 8080).is_empty());
    }

    #[test]
    fn the_holder_of_an_exclusive_flock_is_read_from_the_kernels_table() {
        let table = "1: FLOCK  ADVISORY  WRITE 18372 fe:00:10010753 0 EOF
2: FLOCK  ADVISORY  READ 14620 fe:00:10133507 0 EOF
2: -> FLOCK  ADVISORY  WRITE 14700 fe:00:10133507 0 EOF
3: POSIX  ADVISORY  WRITE 14621 fe:00:777 0 EOF
";
        assert_eq!(exclusive_flocks_on(table, 10010753), [18372]);
        // Shared, waiting, a POSIX lock, no lock: none holds it.
        assert!(exclusive_flocks_on(table, 10133507).is_empty());
        assert!(exclusive_flocks_on(table, 777).is_empty());
        assert!(exclusive_flocks_on(table, 1).is_empty());
        assert!(exclusive_flocks_on("garbage\n1: FLOCK", 1).is_empty());
        // The same inode number on two filesystems: both named.
        let twice = "1: FLOCK  ADVISORY  WRITE 10 fe:00:99 0 EOF\n2: FLOCK  ADVISORY  WRITE 20 fe:01:99 0 EOF";
        assert_eq!(exclusive_flocks_on(twice, 99), [10, 20]);

        // A lock this process holds is read back as its own.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        assert_eq!(lock_held_by(&db), Some(None));
        let file = std::fs::File::create(crate::store::lock_file(&db)).expect("lock file");
        assert_eq!(lock_held_by(&db), Some(None));
        file.try_lock().expect("lock");
        assert_eq!(lock_held_by(&db), Some(Some(std::process::id())));
        // (A test elsewhere in this binary forks, and its child may hold a
        // copy of the lock a moment longer: not this process, nor a run.)
        drop(file);
        assert_eq!(lock_held_by(&db), Some(None));

        // A holder counts only with the lock file among its open files, by
        // device and inode: an open file is found, another inode is not,
        // nor a process that does not exist.
        use std::os::unix::fs::MetadataExt;
        let lock = std::fs::metadata(crate::store::lock_file(&db)).expect("lock");
        let other = std::fs::File::create(dir.path().join("other")).expect("other");
        let other_ino = other.metadata().expect("other").ino();
        assert!(!has_open(
            std::process::id(),
            lock.dev(),
            other_ino ^ 1 << 40
        ));
        assert!(has_open(std::process::id(), lock.dev(), other_ino));
        assert!(!has_open(u32::MAX, lock.dev(), other_ino));
    }

    /// `/proc/locks` is read a page at a time and each read starts again
    /// by position: as other processes lock and unlock, a line moves and
    /// is skipped. A run's lock must be seen whatever the machine locks
    /// meanwhile (once it was not, `keel kill` said no run held it).
    #[test]
    fn a_held_lock_is_seen_while_other_files_are_locked_and_unlocked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keel.db");
        let held = crate::store::Ownership::claim(&db, "keel run").expect("claim");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn: Vec<_> = (0..3)
            .map(|t| {
                let files: Vec<_> = (0..40)
                    .map(|i| std::fs::File::create(dir.path().join(format!("churn-{t}-{i}"))))
                    .collect::<Result<_, _>>()
                    .expect("churn files");
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        files.iter().for_each(|f| f.lock().expect("churn lock"));
                        files.iter().for_each(|f| f.unlock().expect("churn unlock"));
                    }
                })
            })
            .collect();
        let me = std::process::id();
        let missed = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        assert_eq!(missed, 0, "the held lock was missed {missed} times in 300");
        // Its lock file emptied, or removed: the control file names the
        // run, which holds the database's own lock.
        let control = format!(r#"{{"port":1,"token":"t","pid":{me}}}"#);
        std::fs::write(control_file(&db), control).expect("control file");
        std::fs::write(crate::store::lock_file(&db), "").expect("empty the lock file");
        let emptied = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        std::fs::remove_file(crate::store::lock_file(&db)).expect("remove the lock file");
        let removed = (0..300)
            .filter(|_| lock_held_by(&db) != Some(Some(me)))
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.into_iter().for_each(|t| t.join().expect("churn"));
        assert_eq!(
            (emptied, removed),
            (0, 0),
            "missed with the lock file emptied, removed"
        );
        std::fs::write(crate::store::lock_file(&db), format!("{me} keel run")).expect("lock file");
        // Let go, the lock file still names this process: it holds nothing.
        drop(held);
        assert_eq!(lock_held_by(&db), Some(None));
        let lock = std::fs::metadata(crate::store::lock_file(&db)).expect("lock");
        use std::os::unix::fs::MetadataExt;
        let files = [(lock.dev(), lock.ino())];
        assert_eq!(holds_flock(std::process::id(), &files), Some(false));
        assert_eq!(holds_flock(u32::MAX, &files), None);
    }

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
    fn a_port_held_here_is_not_another_pids() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(port_not_held_by(std::process::id(), port), None);
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let said = port_not_held_by(other.id(), port);
        let _ = other.kill();
        let _ = other.wait();
        let said = said.expect("another pid's port");
        assert!(said.contains("another process"), "{said}");
        drop(listener);
        assert_eq!(port_not_held_by(std::process::id(), port), None);
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
