//! The Telegram bridge of `keel run --telegram FILE`: the operator's reads
//! and commands from a phone, and notifications of what the run did. It
//! runs as two tasks on the IO edge's runtime (`api::Controls::telegram`);
//! the engine never sees it: reads come from its snapshot and, read-only
//! on a blocking thread, the ledger (`api::v1`, as the API serves them);
//! commands go down the same channel the API's do.
//!
//! - `listen` long-polls `getUpdates` and answers each command from an
//!   allowed sender (`config::AllowList`: an allowed user anywhere, or
//!   anyone in an allowed chat). Anything else is ignored, never
//!   answered, and logged with its ids (never its text). `/kill` and
//!   `/pause` act at once, even from a backlog read after a restart (they
//!   only lower risk; the answer gives their age); `/resume` raises risk
//!   and waits for a confirmation (`confirm`), which a restart forgets.
//! - `notify` follows the activity log (`store::events`) from its newest
//!   event at start (no backlog flood) and sends each round's events of
//!   the `notify` kinds, summarised (`digest`), to every notified chat,
//!   paced within Telegram's limits (`outbox`).
//!
//! Why a small client (`client`) rather than teloxide or frankenstein: the
//! bridge needs three methods; teloxide brings a dispatching framework of
//! its own that would sit beside the edge's, and either crate brings its
//! own HTTP stack and error types that print request URLs — which carry
//! the token. A few hundred lines on the reqwest already here keep the
//! dependency tree, the limits (timeouts, bounded bodies, flood control)
//! and the secret's handling in our hands.

mod client;
mod commands;
pub mod config;
mod confirm;
mod digest;
mod outbox;
mod replies;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

pub use config::TelegramConfig;

use crate::api::Shared;
use crate::api::v1;
use crate::control::{Command, Reply, Snapshot};
use crate::store::events::{self, Kind};
use client::{ApiError, Backoff, BotApi, Button, CallbackQuery, Message, Update};
use commands::Request;
use confirm::{Confirmations, Confirmed, Risky};
use digest::Digest;
use outbox::Outbox;

/// How often the activity log is read for notifications.
const NOTIFY_EVERY: Duration = Duration::from_secs(1);
/// Events read at a time, and pages at most in one round: a round's read
/// stays short however far the run has run ahead.
const PAGE: usize = 500;
const PAGES_PER_ROUND: usize = 20;
/// A command older than this when read is answered with its age.
const LATE: Duration = Duration::from_secs(60);
/// How long the engine may take to answer a command.
const ENGINE_ANSWER: Duration = Duration::from_secs(10);

/// The running bridge; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct TelegramBridge {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TelegramBridge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the bridge on `runtime`, for the run trading on `db`.
pub fn start(
    runtime: &tokio::runtime::Handle,
    db: &Path,
    shared: Shared,
    config: TelegramConfig,
) -> anyhow::Result<TelegramBridge> {
    let _inside = runtime.enter();
    let api = Arc::new(BotApi::new(&config)?);
    let bridge = Arc::new(Bridge {
        outbox: Outbox::new(api.clone()),
        api,
        confirmations: Mutex::new(Confirmations::new(config.confirm_within)),
        strangers: Mutex::default(),
        confirm_within: config.confirm_within,
        allow: config.allow,
        notify: config.notify,
        shared,
        db: db.to_owned(),
    });
    let mut tasks = vec![runtime.spawn(listen(bridge.clone()))];
    if !bridge.notify.is_empty() {
        tasks.push(runtime.spawn(notify(bridge)));
    }
    Ok(TelegramBridge { tasks })
}

struct Bridge {
    api: Arc<BotApi>,
    outbox: Outbox,
    allow: config::AllowList,
    notify: Vec<Kind>,
    confirm_within: Duration,
    confirmations: Mutex<Confirmations>,
    /// Strangers heard from: when each was last logged and how many of
    /// their updates were ignored since (a stranger cannot flood the log).
    strangers: Mutex<std::collections::HashMap<Sender, (Option<Instant>, u64)>>,
    shared: Shared,
    db: PathBuf,
}

/// Who an update came from: the user (if any) and the chat.
type Sender = (Option<i64>, i64);

/// How often one stranger's ignored updates are logged.
const STRANGER_LOG_EVERY: Duration = Duration::from_secs(60);
/// How many strangers are remembered; past it the memory starts anew.
const STRANGERS_KEPT: usize = 256;

/// Who sent a command: the reason the engine records names them.
#[derive(Debug, Clone, Copy)]
struct Operator {
    user: Option<i64>,
    chat: i64,
}

impl Operator {
    fn reason(self, command: &str) -> String {
        match self.user {
            Some(user) => format!("telegram user {user} ({command})"),
            None => format!("telegram chat {} ({command})", self.chat),
        }
    }
}

/// Long-polls for updates and answers each, one at a time.
async fn listen(bridge: Arc<Bridge>) {
    let mut offset: Option<i64> = None;
    let mut backoff = Backoff::new();
    loop {
        match bridge.api.get_updates(offset).await {
            Ok(updates) => {
                backoff.reset();
                for update in updates {
                    let next = update.update_id.saturating_add(1);
                    offset = Some(offset.map_or(next, |o| o.max(next)));
                    bridge.take(update).await;
                }
            }
            // The client holds its next call until the wait is over.
            Err(e @ ApiError::RetryAfter { .. }) => {
                tracing::warn!(target: "keel::telegram", "telegram: {e}");
            }
            Err(e) => {
                let wait = backoff.wait();
                tracing::warn!(
                    target: "keel::telegram",
                    "telegram: {e}; polling again in {} s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Follows the activity log and sends each round's notified events.
async fn notify(bridge: Arc<Bridge>) {
    let chats = bridge.allow.notified_chats();
    let mut cursor = loop {
        match bridge.read(|conn| Ok(events::last_id(conn)?)).await {
            Ok(id) => break id,
            Err(e) => {
                tracing::warn!(target: "keel::telegram", "telegram: {e}; notifications wait");
                tokio::time::sleep(NOTIFY_EVERY * 5).await;
            }
        }
    };
    loop {
        tokio::time::sleep(NOTIFY_EVERY).await;
        let notify = bridge.notify.clone();
        let round = bridge
            .read(move |conn| {
                let mut digest = Digest::new(&notify);
                let mut last = cursor;
                for _ in 0..PAGES_PER_ROUND {
                    let page = events::after(conn, last, PAGE)?;
                    for event in &page {
                        digest.add(event);
                    }
                    last = page.last().map_or(last, |e| e.id);
                    if page.len() < PAGE {
                        break;
                    }
                }
                Ok((digest, last))
            })
            .await;
        let (digest, last) = match round {
            Ok(round) => round,
            Err(e) => {
                tracing::warn!(target: "keel::telegram", "telegram: {e}");
                continue;
            }
        };
        cursor = last;
        if let Some(text) = digest.text() {
            for chat in &chats {
                bridge.outbox.send(*chat, &text, &[]).await;
            }
        }
    }
}

impl Bridge {
    async fn take(&self, update: Update) {
        if let Some(message) = update.message {
            self.message(message).await;
        } else if let Some(press) = update.callback_query {
            self.press(press).await;
        }
    }

    /// Whether a message from `user` in `chat` is taken; a stranger's is
    /// logged with its ids, and nothing else is done with it.
    fn admitted(&self, user: Option<i64>, chat: i64) -> bool {
        let admitted = self.allow.admits(user, chat);
        if !admitted {
            let mut strangers = self.strangers.lock().unwrap_or_else(|p| p.into_inner());
            if strangers.len() >= STRANGERS_KEPT && !strangers.contains_key(&(user, chat)) {
                strangers.clear();
            }
            let now = Instant::now();
            let seen = strangers.entry((user, chat)).or_insert((None, 0));
            seen.1 += 1;
            if seen
                .0
                .is_none_or(|logged| now.duration_since(logged) >= STRANGER_LOG_EVERY)
            {
                let shown = user.map_or("none".to_owned(), |u| u.to_string());
                let more = match seen.1 {
                    1 => String::new(),
                    n => format!(" ({n} ignored since it was last logged)"),
                };
                tracing::warn!(
                    target: "keel::telegram",
                    "telegram: ignored an update from user {shown} in chat {chat}: not on the allow-list{more}"
                );
                *seen = (Some(now), 0);
            }
        }
        admitted
    }

    async fn message(&self, message: Message) {
        let received = Instant::now();
        let who = Operator {
            user: message.from.as_ref().map(|u| u.id),
            chat: message.chat.id,
        };
        if !self.admitted(who.user, who.chat) {
            return;
        }
        let Some(request) = message.text.as_deref().and_then(Request::parse) else {
            return;
        };
        let (mut text, buttons) = self.answer(request, who, received).await;
        // A backlog read after a restart: said, so an old /kill surprises no one.
        let age = jiff::Timestamp::now().as_second() - message.date;
        if message.date > 0 && age > LATE.as_secs() as i64 {
            text.push_str(&format!("\n(sent {age} s ago, while keel was not reading)"));
        }
        self.outbox.send(who.chat, &text, &buttons).await;
    }

    /// A button press: only the confirmation buttons exist.
    async fn press(&self, press: CallbackQuery) {
        let Some(chat) = press.message.as_ref().map(|m| m.chat.id) else {
            return;
        };
        let who = Operator {
            user: Some(press.from.id),
            chat,
        };
        if !self.admitted(who.user, chat) {
            return;
        }
        let code = press
            .data
            .as_deref()
            .and_then(|d| d.strip_prefix("confirm:"))
            .unwrap_or_default();
        let text = self.confirm(code, who).await;
        if let Err(e) = self.api.answer_callback_query(&press.id, &text).await {
            tracing::warn!(target: "keel::telegram", "telegram: {e}");
        }
        self.outbox.send(chat, &text, &[]).await;
    }

    /// The answer to `request`, and its buttons.
    async fn answer(
        &self,
        request: Request,
        who: Operator,
        received: Instant,
    ) -> (String, Vec<Button>) {
        let snapshot = self.snapshot();
        let read = |name: &str| v1::from_snapshot(name, &snapshot).unwrap_or_default();
        let text = match request {
            Request::Help => commands::HELP.to_owned(),
            Request::Status => replies::status(&read("system"), &read("portfolio")),
            Request::Health => replies::health(&read("system")),
            Request::Positions => replies::positions(&read("positions")),
            Request::Trades => replies::trades(&read("trades")),
            Request::Risk => self.ledger("risk", replies::risk).await,
            Request::Performance => self.ledger("performance", replies::performance).await,
            Request::Strategy => self.ledger("strategy", replies::strategy).await,
            Request::Candidates => self.ledger("candidates", replies::candidates).await,
            Request::Tokens => self.ledger("evolution", replies::tokens).await,
            Request::Pause => self.act(Act::Pause, who.reason("/pause"), received).await,
            Request::Kill => self.act(Act::Kill, who.reason("/kill"), received).await,
            Request::Resume => return self.ask(Risky::Resume, who),
            Request::Confirm(code) => self.confirm(&code, who).await,
            Request::Unknown(name) => format!(
                "unknown command /{}; /help lists them",
                keel_model::shown::text(&name)
            ),
        };
        (text, Vec::new())
    }

    /// Opens a confirmation of `action` and says how to give it.
    fn ask(&self, action: Risky, who: Operator) -> (String, Vec<Button>) {
        let code = match crate::control::token() {
            Ok(token) => token[..6].to_owned(),
            Err(e) => {
                return (
                    format!("{} not possible now: {e}", action.command()),
                    Vec::new(),
                );
            }
        };
        if let Ok(mut confirmations) = self.confirmations.lock() {
            confirmations.ask(action, who.chat, who.user, &code, Instant::now());
        }
        let text = format!(
            "{} raises risk: trading goes back to ACTIVE. Send /confirm {code} (or press Confirm) within {} s; nothing is done until then",
            action.command(),
            self.confirm_within.as_secs()
        );
        let button = Button {
            text: format!("Confirm {}", action.command()),
            callback_data: format!("confirm:{code}"),
        };
        (text, vec![button])
    }

    /// Takes a confirmation code and acts on it if it is right and in time.
    async fn confirm(&self, code: &str, who: Operator) -> String {
        let confirmed = match self.confirmations.lock() {
            Ok(mut c) => c.confirm(who.chat, who.user, code, Instant::now()),
            Err(_) => Confirmed::Nothing,
        };
        match confirmed {
            Confirmed::Go(Risky::Resume) => {
                self.act(Act::Resume, who.reason("/resume confirmed"), Instant::now())
                    .await
            }
            Confirmed::Expired(action) => format!(
                "that confirmation expired: nothing was done; send {} again",
                action.command()
            ),
            Confirmed::WrongCode => "wrong confirmation code: nothing was done".into(),
            Confirmed::Nothing => "nothing to confirm: nothing was done".into(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// A ledger read of API v1, as text.
    async fn ledger(&self, name: &'static str, show: fn(&Value) -> String) -> String {
        let run_id = self.snapshot().run_id;
        let read = self
            .read(move |conn| Ok(v1::from_ledger(name, conn, run_id)?.unwrap_or_default()))
            .await;
        match read {
            Ok(value) => show(&value),
            Err(e) => e,
        }
    }

    /// Runs `read` on the database, read-only, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        let done = tokio::task::spawn_blocking(move || {
            let conn = crate::store::read_only(&db)?;
            read(&conn)
        })
        .await;
        match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("the ledger could not be read: {e}")),
            Err(_) => Err("the ledger read failed".into()),
        }
    }

    /// Sends a command to the engine and says what it answered.
    async fn act(&self, act: Act, reason: String, received: Instant) -> String {
        let (reply, answer) = mpsc::channel();
        let command = match act {
            Act::Pause => Command::Pause { reason, reply },
            // A kill's halt is lifted from the command line only.
            Act::Resume => Command::Resume {
                reason,
                after_kill: false,
                reply,
            },
            Act::Kill => {
                // Orders stop going out now, before the engine takes the command.
                self.shared.kill_requested.store(true, Ordering::SeqCst);
                Command::Kill {
                    reason,
                    received,
                    reply,
                }
            }
        };
        if self.shared.commands.send(command).is_err() {
            return "the engine has stopped".into();
        }
        let waited = tokio::task::spawn_blocking(move || answer.recv_timeout(ENGINE_ANSWER)).await;
        match waited {
            Ok(Ok(Ok(reply))) => said(act, &reply),
            Ok(Ok(Err(e))) => format!("the engine refused: {}", keel_model::shown::line(&e)),
            _ => format!(
                "the engine did not answer within {} s",
                ENGINE_ANSWER.as_secs()
            ),
        }
    }
}

/// The commands that act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Pause,
    Resume,
    Kill,
}

/// The engine's answer to `act` in words.
fn said(act: Act, reply: &Reply) -> String {
    match reply {
        Reply::State { state } => match act {
            Act::Pause => {
                format!("paused: trading state {state} (positions may close; nothing new opens)")
            }
            _ => format!("resumed: trading state {state}"),
        },
        Reply::Killed {
            latency_us,
            positions_closed,
            orders_cancelled,
            venue,
        } => {
            let venue = venue.as_deref().map_or(String::new(), |v| {
                format!("; venue: {}", keel_model::shown::line(v))
            });
            format!(
                "killed: trading HALTED in {} ms; {positions_closed} position(s) closed, {orders_cancelled} order(s) cancelled{venue}",
                keel_model::shown::fixed(*latency_us as f64 / 1000.0, 1)
            )
        }
        Reply::Swapped { .. } => "the engine answered with a swap".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_answers_read_as_words() {
        let state = |s: &str| Reply::State { state: s.into() };
        assert_eq!(
            said(Act::Pause, &state("REDUCE_ONLY")),
            "paused: trading state REDUCE_ONLY (positions may close; nothing new opens)"
        );
        assert_eq!(
            said(Act::Resume, &state("ACTIVE")),
            "resumed: trading state ACTIVE"
        );
        let killed = Reply::Killed {
            latency_us: 1_300,
            positions_closed: 2,
            orders_cancelled: 1,
            venue: None,
        };
        assert_eq!(
            said(Act::Kill, &killed),
            "killed: trading HALTED in 1.3 ms; 2 position(s) closed, 1 order(s) cancelled"
        );
        let op = Operator {
            user: Some(7),
            chat: -100,
        };
        assert_eq!(op.reason("/kill"), "telegram user 7 (/kill)");
        let channel = Operator {
            user: None,
            chat: -100,
        };
        assert_eq!(channel.reason("/pause"), "telegram chat -100 (/pause)");
    }
}
