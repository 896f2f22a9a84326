//! The control API of a running `keel run`: HTTP/1.1 on the loopback
//! interface only, every request carrying the run's bearer token. Where to
//! connect and the token are in `<db>.control` (readable by its owner only),
//! which `keel status`, `keel pause` and the rest read.
//!
//! Endpoints: `GET /status`, `GET /positions`, `GET /trades`, `GET /metrics`
//! (Prometheus text), `POST /pause`, `POST /resume`, `POST /kill` (the body
//! is the reason).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

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
}

/// One book (strategy slot), as served.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotBook {
    pub slot: String,
    pub strategy: String,
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

/// What the engine last published.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub run_id: i64,
    pub feed: String,
    pub state: String,
    pub killed: bool,
    pub bars: u64,
    pub cursor_ms: Option<i64>,
    pub books: Vec<SnapshotBook>,
    pub trades: Vec<SnapshotTrade>,
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
struct Endpoint {
    port: u16,
    token: String,
    pid: u32,
}

/// The control file of a database.
pub fn control_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".control");
    PathBuf::from(name)
}

/// The pid of another live `keel run` serving `db`, if there is one (a
/// control file left by a killed process does not count).
pub fn running_elsewhere(db: &Path) -> Option<u32> {
    let text = std::fs::read(control_file(db)).ok()?;
    let endpoint: Endpoint = serde_json::from_slice(&text).ok()?;
    let alive = Path::new(&format!("/proc/{}", endpoint.pid)).exists()
        && TcpStream::connect(("127.0.0.1", endpoint.port)).is_ok();
    (alive && endpoint.pid != std::process::id()).then_some(endpoint.pid)
}

/// A running control server; removes its control file when dropped.
#[derive(Debug)]
pub struct ControlServer {
    pub port: u16,
    file: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the control token")?;
    Ok(hex::encode(bytes))
}

/// Starts serving on 127.0.0.1 (`port` 0 picks a free one).
pub fn start(
    db: &Path,
    port: u16,
    snapshot: Arc<Mutex<Snapshot>>,
    commands: Sender<Command>,
    kill_requested: Arc<AtomicBool>,
) -> anyhow::Result<ControlServer> {
    let listener = TcpListener::bind(("127.0.0.1", port)).context("control API: cannot listen")?;
    let port = listener.local_addr()?.port();
    let token = token()?;
    let file = control_file(db);
    let endpoint = Endpoint {
        port,
        token: token.clone(),
        pid: std::process::id(),
    };
    write_private(&file, &serde_json::to_vec(&endpoint)?)
        .with_context(|| format!("{}: cannot write the control file", file.display()))?;
    std::thread::Builder::new()
        .name("keel-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = serve(stream, &token, &snapshot, &commands, &kill_requested);
                if let Err(e) = served {
                    tracing::debug!("control API: {e:#}");
                }
            }
        })?;
    Ok(ControlServer { port, file })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

struct Request {
    method: String,
    path: String,
    token: Option<String>,
    body: String,
}

fn read_request(stream: &mut TcpStream) -> anyhow::Result<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => (m.to_owned(), p.to_owned()),
        _ => bail!("malformed request line"),
    };
    let (mut length, mut token) = (0usize, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0).min(64 << 10),
                "authorization" => token = value.strip_prefix("Bearer ").map(str::to_owned),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        token,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn serve(
    mut stream: TcpStream,
    token: &str,
    snapshot: &Mutex<Snapshot>,
    commands: &Sender<Command>,
    kill_requested: &AtomicBool,
) -> anyhow::Result<()> {
    let request = read_request(&mut stream)?;
    let received = Instant::now();
    if !request
        .token
        .as_deref()
        .is_some_and(|t| same_secret(t, token))
    {
        respond(&mut stream, 401, "text/plain", "missing or wrong token\n")?;
        return Ok(());
    }
    let snap = || snapshot.lock().map(|s| s.clone()).unwrap_or_default();
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let answer = || -> anyhow::Result<(u16, &str, String)> {
        Ok(match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/status") => {
                let mut s = snap();
                s.trades.clear();
                (200, "application/json", json(&serde_json::to_value(s)?))
            }
            ("GET", "/positions") => {
                let s = snap();
                let books: Vec<_> = s
                    .books
                    .iter()
                    .map(|b| serde_json::json!({"slot": b.slot, "positions": b.positions}))
                    .collect();
                (200, "application/json", json(&serde_json::json!(books)))
            }
            ("GET", "/trades") => (
                200,
                "application/json",
                json(&serde_json::to_value(snap().trades)?),
            ),
            ("GET", "/metrics") => (200, "text/plain; version=0.0.4", metrics(&snap())),
            ("POST", "/swap") => {
                // Body: `<sha256> <actor> <reason…>`.
                let mut parts = request.body.trim().splitn(3, ' ');
                let hash = parts.next().unwrap_or_default().to_owned();
                let actor = parts.next().unwrap_or("operator").to_owned();
                let reason = parts.next().unwrap_or("no reason given").to_owned();
                let (reply, answer) = mpsc::channel();
                commands
                    .send(Command::Swap {
                        hash,
                        actor,
                        reason,
                        reply,
                    })
                    .map_err(|_| anyhow!("the engine has stopped"))?;
                match answer.recv_timeout(Duration::from_secs(30)) {
                    Ok(Ok(reply)) => (200, "application/json", json(&serde_json::to_value(reply)?)),
                    Ok(Err(e)) => (409, "text/plain", format!("{e}\n")),
                    Err(_) => (500, "text/plain", "the engine did not answer\n".to_owned()),
                }
            }
            ("POST", "/pause" | "/resume" | "/kill") => {
                let reason = if request.body.trim().is_empty() {
                    "no reason given".to_owned()
                } else {
                    request.body.trim().to_owned()
                };
                let (reply, answer) = mpsc::channel();
                let command = match request.path.as_str() {
                    "/pause" => Command::Pause { reason, reply },
                    "/resume" => Command::Resume { reason, reply },
                    _ => {
                        kill_requested.store(true, Ordering::SeqCst);
                        Command::Kill {
                            reason,
                            received,
                            reply,
                        }
                    }
                };
                commands
                    .send(command)
                    .map_err(|_| anyhow!("the engine has stopped"))?;
                match answer.recv_timeout(Duration::from_secs(10)) {
                    Ok(Ok(reply)) => (200, "application/json", json(&serde_json::to_value(reply)?)),
                    Ok(Err(e)) => (409, "text/plain", format!("{e}\n")),
                    Err(_) => (500, "text/plain", "the engine did not answer\n".to_owned()),
                }
            }
            _ => (404, "text/plain", "no such endpoint\n".to_owned()),
        })
    };
    let (status, kind, body) = answer().unwrap_or_else(|e| (500, "text/plain", format!("{e}\n")));
    respond(&mut stream, status, kind, &body)?;
    Ok(())
}

/// The snapshot in Prometheus' text format.
pub fn metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let per_book = |f: &dyn Fn(&SnapshotBook) -> f64| -> Vec<(String, f64)> {
        s.books
            .iter()
            .map(|b| (format!("{{book=\"{}\"}}", b.slot), f(b)))
            .collect()
    };
    gauge(
        "keel_equity",
        "Book equity, quote currency.",
        "gauge",
        per_book(&|b| b.equity),
    );
    gauge(
        "keel_drawdown_pct",
        "Book drawdown from its peak, percent.",
        "gauge",
        per_book(&|b| b.drawdown_pct),
    );
    gauge(
        "keel_open_positions",
        "Open positions per book.",
        "gauge",
        per_book(&|b| b.positions.len() as f64),
    );
    gauge(
        "keel_strategy_calls_total",
        "Calls into the strategy.",
        "counter",
        per_book(&|b| b.calls as f64),
    );
    gauge(
        "keel_strategy_traps_total",
        "Calls the sandbox stopped.",
        "counter",
        per_book(&|b| b.traps as f64),
    );
    gauge(
        "keel_signals_rejected_total",
        "Signals refused by the sandbox or the risk manager.",
        "counter",
        per_book(&|b| b.rejected as f64),
    );
    gauge(
        "keel_bars_total",
        "Bars booked by this process.",
        "counter",
        vec![(String::new(), s.bars as f64)],
    );
    gauge(
        "keel_trading_state",
        "1 for the account's current trading state.",
        "gauge",
        ["ACTIVE", "REDUCE_ONLY", "HALTED"]
            .iter()
            .map(|st| {
                (
                    format!("{{state=\"{st}\"}}"),
                    f64::from(u8::from(s.state == *st)),
                )
            })
            .collect(),
    );
    out
}

/// Sends one request to the engine running on `db`; returns the status
/// and body.
pub fn request(db: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let file = control_file(db);
    let text = std::fs::read(&file).map_err(|_| {
        anyhow!(
            "no keel run is running on {} (no {})",
            db.display(),
            file.display()
        )
    })?;
    let endpoint: Endpoint = serde_json::from_slice(&text)
        .map_err(|e| anyhow!("{}: not a control file: {e}", file.display()))?;
    let mut stream = TcpStream::connect(("127.0.0.1", endpoint.port)).map_err(|e| {
        anyhow!(
            "no keel run answers on {} (pid {} is gone?): {e}",
            db.display(),
            endpoint.pid
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        endpoint.token,
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("control API: malformed response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("control API: malformed status line"))?;
    Ok((status, body.to_owned()))
}
