//! The control API's HTTP server: hyper (HTTP/1.1) on the IO edge's tokio
//! runtime, on 127.0.0.1 only. Hand-written HTTP served one connection at a
//! time, so any local process holding a few sockets open blocked the kill
//! switch; hyper is a well-kept parser with the limits a hostile peer needs,
//! and the accept loop here adds the rest:
//!
//! - every connection runs as its own task, up to `Limits::connections` at
//!   once; one more is closed at accept, so the backlog never fills;
//! - the request head must arrive within `Limits::head_timeout` and fit in
//!   `Limits::head_bytes` (hyper answers 431 past it), with at most
//!   `Limits::headers` header lines; a whole connection lives at most
//!   `Limits::connection_timeout` (an event stream, once upgraded, is
//!   counted and kept by `events`);
//! - the bearer token is checked before the body is read, and a body is read
//!   only up to `Limits::body_bytes`, within the head's timeout.
//!
//! Endpoints: `GET /status`, `GET /positions`, `GET /trades`, `GET /metrics`
//! (Prometheus text), `POST /pause`, `POST /resume`, `POST /kill` (the body
//! is the reason), `POST /swap` (`<sha256> <actor> <reason…>`); and API v1
//! (`v1`): `GET /v1/<read>` and `POST /v1/{pause,resume,kill}`, each answer
//! in the envelope `{data, meta}`.

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::control::{self, Command, Endpoint, Snapshot};

/// The server's limits. The defaults hold against a hostile local process:
/// a few hundred idle or slow connections leave room for the operator's,
/// and memory stays within a few megabytes whatever is sent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub head_bytes: usize,
    pub headers: usize,
    pub body_bytes: usize,
    pub head_timeout: Duration,
    pub connection_timeout: Duration,
    /// Event streams (`/v1/events`) open at once; they outlive their
    /// connection's slot.
    pub streams: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 512,
            head_bytes: 16 << 10,
            headers: 32,
            body_bytes: 64 << 10,
            head_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
            streams: 32,
        }
    }
}

/// A bound listener, not served yet: binding first means a taken port
/// fails a start before anything is written.
#[derive(Debug)]
pub struct Bound {
    listener: StdListener,
    pub port: u16,
}

/// Binds 127.0.0.1:`port` (0: any free port).
pub fn bind(port: u16) -> anyhow::Result<Bound> {
    let listener = StdListener::bind(("127.0.0.1", port))
        .with_context(|| format!("control API: cannot listen on 127.0.0.1:{port}"))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    Ok(Bound { listener, port })
}

/// What the handlers reach: the engine's snapshot and command channel.
#[derive(Debug, Clone)]
pub struct Shared {
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub commands: Sender<Command>,
    pub kill_requested: Arc<AtomicBool>,
}

/// A served control API; stops serving and removes its control file (if
/// it is still this run's) when dropped.
#[derive(Debug)]
pub struct ApiServer {
    pub port: u16,
    file: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        control::remove_own_control_file(&self.file);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Server {
    token: String,
    shared: Shared,
    limits: Limits,
    /// The run's database, read by API v1 (read-only, off the runtime).
    db: PathBuf,
    streams: Arc<Semaphore>,
}

/// Writes `<db>.control` and serves `bound` on `runtime`.
pub fn serve(
    runtime: &tokio::runtime::Handle,
    bound: Bound,
    db: &Path,
    shared: Shared,
    limits: Limits,
) -> anyhow::Result<ApiServer> {
    let token = control::token()?;
    let file = control::control_file(db);
    let endpoint = Endpoint {
        port: bound.port,
        token: token.clone(),
        pid: std::process::id(),
    };
    control::replace_private(&file, &serde_json::to_vec(&endpoint)?)
        .with_context(|| format!("{}: cannot write the control file", file.display()))?;
    let listener = {
        let _inside = runtime.enter();
        tokio::net::TcpListener::from_std(bound.listener)?
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server = Arc::new(Server {
        token,
        shared,
        limits,
        db: db.to_owned(),
        streams: Arc::new(Semaphore::new(limits.streams)),
    });
    runtime.spawn(accept(listener, server, stop_rx));
    Ok(ApiServer {
        port: bound.port,
        file,
        stop: Some(stop_tx),
    })
}

/// The connections being served, oldest first: each one's id, whether it
/// has shown the token, and how to end it.
#[derive(Default)]
struct Live {
    next: u64,
    connections: std::collections::VecDeque<(u64, Arc<AtomicBool>, tokio::task::AbortHandle)>,
}

impl Live {
    /// Ends the oldest connection that has not shown the token; whether
    /// there was one.
    fn evict_stranger(&mut self) -> bool {
        let oldest =
            (self.connections.iter()).position(|(_, trusted, _)| !trusted.load(Ordering::Relaxed));
        let Some(evicted) = oldest.and_then(|i| self.connections.remove(i)) else {
            return false;
        };
        evicted.2.abort();
        true
    }

    fn ended(&mut self, id: u64) {
        self.connections.retain(|(each, _, _)| *each != id);
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(server.limits.connections));
    let live = Arc::new(std::sync::Mutex::new(Live::default()));
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!("control API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Every slot taken: the oldest connection that never showed the
        // token gives its slot up, so that idle or slow connections from
        // another process cannot lock the operator out.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                let evicted = (live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner))
                .evict_stranger();
                match evicted {
                    true => tokio::time::timeout(EVICTED_WITHIN, slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    false => None,
                }
            }
        };
        let Some(slot) = slot else {
            tracing::warn!(
                "control API: {} connections open, one more refused",
                server.limits.connections
            );
            drop(stream);
            continue;
        };
        let trusted = Arc::new(AtomicBool::new(false));
        let (task_server, task_trusted, task_live) =
            (server.clone(), trusted.clone(), live.clone());
        let mut registry = live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = registry.next;
        registry.next += 1;
        let task = tokio::spawn(async move {
            let (server, trusted, live) = (task_server, task_trusted, task_live);
            let limits = server.limits;
            let service = hyper::service::service_fn(move |request| {
                let server = server.clone();
                let authorised = server.authorised(&request);
                if authorised {
                    trusted.store(true, Ordering::Relaxed);
                }
                async move { Ok::<_, Infallible>(server.handle(request, authorised).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .max_buf_size(limits.head_bytes.max(8192))
                .max_header_size(limits.head_bytes)
                .max_headers(limits.headers)
                // Kept alive (within the connection's time) for a browser's
                // several reads, and because a closing connection cannot
                // be upgraded to the event stream.
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Err(e)) => tracing::debug!("control API: {e}"),
                Err(_) => tracing::debug!("control API: a connection outlived its time"),
                Ok(Ok(())) => {}
            }
            (live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner))
            .ended(id);
            drop(slot);
        });
        registry
            .connections
            .push_back((id, trusted, task.abort_handle()));
    }
}

/// How long a new connection waits for the slot of one evicted for it.
const EVICTED_WITHIN: Duration = Duration::from_millis(200);

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    response
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Server {
    /// The bearer token in `Authorization`, or (a browser's WebSocket
    /// cannot set headers) offered as the subprotocol `bearer.<token>`.
    fn authorised(&self, request: &Request<Incoming>) -> bool {
        let headers = request.headers();
        let bearer = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let offered = headers
            .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .and_then(super::events::offered_token)
            .map(str::as_bytes);
        bearer
            .or(offered)
            .is_some_and(|t| same_secret(t, self.token.as_bytes()))
    }

    fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Answers `request`; `authorised`: whether it showed the token (asked
    /// once, as the connection is marked trusted).
    async fn handle(&self, request: Request<Incoming>, authorised: bool) -> Response<Full<Bytes>> {
        let received = Instant::now();
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        // `POST /resume?after_kill=true`: lifting a kill's halt is asked for by name.
        let after_kill =
            form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
                .any(|(k, v)| k == "after_kill" && (v == "true" || v == "1"));
        // The dashboard's page holds no data: it asks for the token.
        if method == Method::GET
            && let Some(page) = super::dashboard::page(&path)
        {
            return page;
        }
        if !authorised {
            return text(StatusCode::UNAUTHORIZED, "missing or wrong token\n");
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/v1/events") => self.events(request),
            (&Method::GET, "/status") => {
                let mut s = self.snapshot();
                s.trades.clear();
                json(&s)
            }
            (&Method::GET, "/positions") => json(&control::positions_json(&self.snapshot())),
            (&Method::GET, "/trades") => json(&self.snapshot().trades),
            (&Method::GET, "/metrics") => self.metrics().await,
            (&Method::GET, v1) if v1.starts_with("/v1/") => self.v1_read(&v1[4..]).await,
            (&Method::POST, "/v1/pause" | "/v1/resume" | "/v1/kill") => {
                let command = &path[3..];
                if command == "/kill" {
                    self.shared.kill_requested.store(true, Ordering::SeqCst);
                }
                let body = match self.body(request).await {
                    Ok(body) => body,
                    Err(response) if command != "/kill" => return response,
                    Err(_) => String::new(),
                };
                match self.reply(command, body, received, after_kill).await {
                    Ok(reply) => json(&super::v1::envelope(
                        serde_json::to_value(reply).unwrap_or_default(),
                        &self.snapshot().mode,
                    )),
                    Err(response) => response,
                }
            }
            (&Method::POST, "/pause" | "/resume" | "/kill" | "/swap") => {
                if path == "/kill" {
                    // Orders stop going out now, before the body is read.
                    self.shared.kill_requested.store(true, Ordering::SeqCst);
                }
                let body = match self.body(request).await {
                    Ok(body) => body,
                    Err(response) => {
                        if path != "/kill" {
                            return response;
                        }
                        String::new()
                    }
                };
                self.command(&path, body, received, after_kill).await
            }
            _ => text(StatusCode::NOT_FOUND, "no such endpoint\n"),
        }
    }

    /// `GET /v1/events`: the WebSocket handshake, then the stream on a
    /// task of its own (it outlives the connection's slot and time limit).
    fn events(&self, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
        let subscription = match super::events::Subscription::parse(request.uri().query()) {
            Ok(s) => s,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        let headers = request.headers();
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
        };
        let upgrade =
            header(hyper::header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let (Some(key), true, Some("13")) = (
            header(hyper::header::SEC_WEBSOCKET_KEY),
            upgrade,
            header(hyper::header::SEC_WEBSOCKET_VERSION),
        ) else {
            return text(
                StatusCode::UPGRADE_REQUIRED,
                "/v1/events is a WebSocket (version 13)\n",
            );
        };
        use base64::Engine as _;
        let nonce = base64::engine::general_purpose::STANDARD.decode(key.trim());
        if nonce.map_or(true, |n| n.len() != 16) {
            return text(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be 16 bytes in base64\n",
            );
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let named = header(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .is_some_and(|p| p.split(',').any(|p| p.trim() == "keel"));
        let Ok(slot) = self.streams.clone().try_acquire_owned() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} event streams are open already\n", self.limits.streams),
            );
        };
        let upgrading = hyper::upgrade::on(&mut request);
        let db = self.db.clone();
        tokio::spawn(async move {
            match upgrading.await {
                Ok(upgraded) => super::events::stream(upgraded, db, subscription).await,
                Err(e) => tracing::debug!("event stream: the upgrade failed: {e}"),
            }
            drop(slot);
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        let value = hyper::header::HeaderValue::from_static;
        h.insert(hyper::header::UPGRADE, value("websocket"));
        h.insert(hyper::header::CONNECTION, value("Upgrade"));
        if let Ok(accept) = hyper::header::HeaderValue::from_str(&accept) {
            h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if named {
            h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, value("keel"));
        }
        response
    }

    /// The request's body as text, at most `Limits::body_bytes`.
    async fn body(&self, request: Request<Incoming>) -> Result<String, Response<Full<Bytes>>> {
        let limited = Limited::new(request.into_body(), self.limits.body_bytes);
        match tokio::time::timeout(self.limits.head_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(String::from_utf8_lossy(&collected.to_bytes()).into_owned()),
            Ok(Err(_)) => Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is limited to {} bytes\n", self.limits.body_bytes),
            )),
            Err(_) => Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive\n",
            )),
        }
    }

    /// `GET /metrics`: the snapshot's figures, then the ledger's (read
    /// off the runtime's threads; left out, with a comment, if the ledger
    /// cannot be read).
    async fn metrics(&self) -> Response<Full<Bytes>> {
        let mut text = super::metrics(&self.snapshot());
        let db = self.db.clone();
        let read = tokio::task::spawn_blocking(move || {
            let conn = crate::store::read_only(&db)?;
            super::metrics::ledger_metrics(&conn)
        })
        .await;
        match read {
            Ok(Ok(ledger)) => text.push_str(&ledger),
            Ok(Err(e)) => text.push_str(&format!("# the ledger could not be read: {e}\n")),
            Err(_) => text.push_str("# the ledger read failed\n"),
        }
        respond(StatusCode::OK, "text/plain; version=0.0.4", text)
    }

    /// `GET /v1/<name>`: from the snapshot, or the ledger read off the
    /// runtime's threads.
    async fn v1_read(&self, name: &str) -> Response<Full<Bytes>> {
        let snapshot = self.snapshot();
        if let Some(data) = super::v1::from_snapshot(name, &snapshot) {
            return json(&super::v1::envelope(data, &snapshot.mode));
        }
        if !super::v1::READS.contains(&name) {
            return text(StatusCode::NOT_FOUND, "no such endpoint\n");
        }
        let (db, name_owned, run_id) = (self.db.clone(), name.to_owned(), snapshot.run_id);
        let read = tokio::task::spawn_blocking(move || {
            let conn = crate::store::read_only(&db)?;
            super::v1::from_ledger(&name_owned, &conn, run_id)
        })
        .await;
        match read {
            Ok(Ok(Some(data))) => json(&super::v1::envelope(data, &snapshot.mode)),
            Ok(Ok(None)) => text(StatusCode::NOT_FOUND, "no such endpoint\n"),
            Ok(Err(e)) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the ledger could not be read: {e}\n"),
            ),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the read failed\n"),
        }
    }

    async fn command(
        &self,
        path: &str,
        body: String,
        received: Instant,
        after_kill: bool,
    ) -> Response<Full<Bytes>> {
        match self.reply(path, body, received, after_kill).await {
            Ok(reply) => json(&reply),
            Err(response) => response,
        }
    }

    /// Sends a command to the engine and waits for its reply.
    async fn reply(
        &self,
        path: &str,
        body: String,
        received: Instant,
        after_kill: bool,
    ) -> Result<control::Reply, Response<Full<Bytes>>> {
        let reason = match body.trim() {
            "" => "no reason given".to_owned(),
            reason => reason.to_owned(),
        };
        let (reply, answer) = mpsc::channel();
        let (command, wait) = match path {
            "/pause" => (Command::Pause { reason, reply }, 10),
            "/resume" => (
                Command::Resume {
                    reason,
                    after_kill,
                    reply,
                },
                10,
            ),
            "/kill" => (
                Command::Kill {
                    reason,
                    received,
                    reply,
                },
                10,
            ),
            _ => {
                let mut parts = reason.splitn(3, ' ');
                let hash = parts.next().unwrap_or_default().to_owned();
                let actor = parts.next().unwrap_or("operator").to_owned();
                let reason = parts.next().unwrap_or("no reason given").to_owned();
                let swap = Command::Swap {
                    hash,
                    actor,
                    reason,
                    reply,
                };
                (swap, 30)
            }
        };
        if self.shared.commands.send(command).is_err() {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped\n",
            ));
        }
        let waited =
            tokio::task::spawn_blocking(move || answer.recv_timeout(Duration::from_secs(wait)))
                .await;
        match waited {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(text(StatusCode::CONFLICT, format!("{e}\n"))),
            _ => Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the engine did not answer\n",
            )),
        }
    }
}
