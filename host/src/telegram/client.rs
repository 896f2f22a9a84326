//! The Bot API as the bridge speaks it: `getUpdates` (long polling),
//! `sendMessage` (optionally with an inline keyboard) and
//! `answerCallbackQuery`, each a JSON `POST` to `<api_url>/bot<token>/<method>`
//! answered `{"ok":true,"result":…}` or `{"ok":false,"error_code":…,
//! "description":…,"parameters":{"retry_after":…}}`.
//!
//! Every call is timed out, every reply read up to `MAX_REPLY_BYTES`; a 429
//! holds every later call of this client until its `retry_after` (at most
//! `MAX_RETRY_AFTER`) has passed, since Telegram's flood control is per bot.
//! No error carries the token: reqwest's errors are taken without their URL,
//! and whatever text comes back has the token replaced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{BotToken, TOKEN_ENV, TelegramConfig, is_loopback};

/// The largest reply read; a page of 100 updates is far below it.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// The longest flood-control wait honoured; a longer `retry_after` is cut
/// to this (the next call then finds out whether the wait is over).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long a call other than the long poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A long poll may take its own timeout and this much more.
const POLL_SLACK: Duration = Duration::from_secs(10);

/// One incoming update. Fields the bridge does not use are ignored, and
/// an update it cannot read still moves the offset past it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub message_id: i64,
    /// The sender; none for a post in a channel.
    pub from: Option<User>,
    pub chat: Chat,
    /// When it was sent, seconds since the epoch.
    #[serde(default)]
    pub date: i64,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
}

/// A press of an inline keyboard's button.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    /// The message the button was on (its chat, even when the message is
    /// too old to be read).
    pub message: Option<ButtonMessage>,
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ButtonMessage {
    pub chat: Chat,
}

/// One button of an inline keyboard: its label and what a press sends back.
#[derive(Debug, Clone, PartialEq)]
pub struct Button {
    pub text: String,
    pub callback_data: String,
}

/// Why a call failed. Never carries the token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{method}: flood control: retry after {} s", wait.as_secs())]
    RetryAfter {
        method: &'static str,
        wait: Duration,
    },
    #[error(
        "{method}: the Bot API refused the token (401 Unauthorized): check {TOKEN_ENV} or token_file"
    )]
    Unauthorized { method: &'static str },
    #[error("{method}: refused ({code}): {description}")]
    Refused {
        method: &'static str,
        code: i64,
        description: String,
    },
    #[error("{method}: the Bot API failed ({code}): {description}")]
    Unavailable {
        method: &'static str,
        code: i64,
        description: String,
    },
    #[error("{method}: {why}")]
    Network { method: &'static str, why: String },
}

impl ApiError {
    /// Whether the same call may succeed later: flood control, a server's
    /// failure, the network. A refusal or a bad token will not.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            ApiError::RetryAfter { .. } | ApiError::Unavailable { .. } | ApiError::Network { .. }
        )
    }
}

/// The Bot API client.
pub struct BotApi {
    http: reqwest::Client,
    base: String,
    token: BotToken,
    poll_timeout: Duration,
    /// No call leaves before this: the last 429's `retry_after`.
    quiet_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApi")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl BotApi {
    pub fn new(config: &TelegramConfig) -> anyhow::Result<BotApi> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if is_loopback(&config.api_url) {
            // A local Bot API server or a test's fake: never via a proxy.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("telegram: cannot set up HTTP: {}", e.without_url()))?;
        Ok(BotApi {
            http,
            base: config.api_url.clone(),
            token: config.token.clone(),
            poll_timeout: config.poll_timeout,
            quiet_until: Mutex::new(None),
        })
    }

    /// The updates after `offset` (the last update id seen plus one),
    /// waiting up to the poll timeout for one to come.
    pub async fn get_updates(&self, offset: Option<i64>) -> Result<Vec<Update>, ApiError> {
        let mut body = json!({
            "timeout": self.poll_timeout.as_secs(),
            "allowed_updates": ["message", "callback_query"],
        });
        if let Some(offset) = offset {
            body["offset"] = offset.into();
        }
        let timeout = self.poll_timeout + POLL_SLACK;
        let result = self.call("getUpdates", &body, timeout).await?;
        Ok(updates(result))
    }

    /// Sends `text` (plain text, no markup parsed) to `chat`, with a row of
    /// inline buttons if any.
    pub async fn send_message(
        &self,
        chat: i64,
        text: &str,
        buttons: &[Button],
    ) -> Result<(), ApiError> {
        let mut body = json!({ "chat_id": chat, "text": text });
        if !buttons.is_empty() {
            let row: Vec<Value> = buttons
                .iter()
                .map(|b| json!({ "text": b.text, "callback_data": b.callback_data }))
                .collect();
            body["reply_markup"] = json!({ "inline_keyboard": [row] });
        }
        self.call("sendMessage", &body, CALL_TIMEOUT).await?;
        Ok(())
    }

    /// Tells the client a button press was taken (it stops its spinner),
    /// with a short notice.
    pub async fn answer_callback_query(&self, id: &str, text: &str) -> Result<(), ApiError> {
        let text: String = text.chars().take(200).collect();
        let body = json!({ "callback_query_id": id, "text": text });
        self.call("answerCallbackQuery", &body, CALL_TIMEOUT)
            .await?;
        Ok(())
    }

    async fn call(
        &self,
        method: &'static str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        self.flood_control().await;
        let url = format!("{}/bot{}/{method}", self.base, self.token.expose());
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.network(method, e, timeout))?;
        let status = sent.status().as_u16();
        let bytes = read_bounded(sent, MAX_REPLY_BYTES)
            .await
            .map_err(|why| match why {
                Read::TooLarge => ApiError::Network {
                    method,
                    why: format!("a reply over {MAX_REPLY_BYTES} bytes"),
                },
                Read::Failed(e) => self.network(method, e, timeout),
            })?;
        let reply = reply(method, status, &bytes, self.token.expose());
        if let Err(ApiError::RetryAfter { wait, .. }) = &reply
            && let Ok(mut quiet) = self.quiet_until.lock()
        {
            let until = Instant::now() + *wait;
            *quiet = Some(quiet.map_or(until, |q| q.max(until)));
        }
        reply
    }

    /// Waits out the last 429's `retry_after`, if it has not passed.
    async fn flood_control(&self) {
        let until = self.quiet_until.lock().ok().and_then(|q| *q);
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// A transport failure in words, without the URL (it holds the token).
    fn network(&self, method: &'static str, e: reqwest::Error, timeout: Duration) -> ApiError {
        let why = if e.is_timeout() {
            format!("no reply within {} s", timeout.as_secs())
        } else if e.is_connect() {
            format!("cannot connect to {}", self.base)
        } else {
            let e = e.without_url();
            let mut words = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                words = format!("{words}: {c}");
                cause = c.source();
            }
            scrub(&words, self.token.expose())
        };
        ApiError::Network { method, why }
    }
}

/// Why a reply's body could not be read.
enum Read {
    TooLarge,
    Failed(reqwest::Error),
}

/// The body, at most `max` bytes.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, Read> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(Read::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Read::Failed)? {
        if body.len() + chunk.len() > max {
            return Err(Read::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The reply envelope; anything else in it is ignored.
#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Value,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    retry_after: Option<u64>,
}

/// What a reply means: its `result`, or why not. `token` is scrubbed from
/// any text taken from it.
fn reply(method: &'static str, status: u16, body: &[u8], token: &str) -> Result<Value, ApiError> {
    let envelope: Option<Envelope> = serde_json::from_slice(body).ok();
    let (code, description, retry_after) = match envelope {
        Some(e) if e.ok => return Ok(e.result),
        Some(e) => (
            e.error_code.unwrap_or(i64::from(status)),
            e.description.unwrap_or_default(),
            e.parameters.and_then(|p| p.retry_after),
        ),
        None if (200..300).contains(&status) => {
            return Err(ApiError::Network {
                method,
                why: "a reply that is not the Bot API's JSON".into(),
            });
        }
        None => (i64::from(status), String::new(), None),
    };
    let description = match scrub(&description, token) {
        d if d.is_empty() => format!("HTTP {status}"),
        d => d,
    };
    Err(match code {
        429 => ApiError::RetryAfter {
            method,
            // No `retry_after`: a second, so a 429 never makes a loop spin.
            wait: Duration::from_secs(retry_after.unwrap_or(1).max(1)).min(MAX_RETRY_AFTER),
        },
        401 => ApiError::Unauthorized { method },
        500.. => ApiError::Unavailable {
            method,
            code,
            description,
        },
        _ => ApiError::Refused {
            method,
            code,
            description,
        },
    })
}

/// `getUpdates`' result: every update with an id, read leniently (one
/// that does not parse keeps its id, so the offset moves past it).
fn updates(result: Value) -> Vec<Update> {
    let Value::Array(items) = result else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let id = item.get("update_id")?.as_i64()?;
            Some(serde_json::from_value(item).unwrap_or(Update {
                update_id: id,
                ..Update::default()
            }))
        })
        .collect()
}

/// Text from elsewhere made fit for a log line: the token replaced, one
/// line, at most 300 characters.
pub(super) fn scrub(text: &str, token: &str) -> String {
    let clean = match token.is_empty() {
        true => text.to_owned(),
        false => text.replace(token, "[redacted]"),
    };
    keel_model::shown::message(&clean.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Waits between failed calls: 1 s, doubling to a minute, reset by a
/// success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MOST: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff {
            next: Backoff::FIRST,
        }
    }

    /// The wait before the next try, and the one after it doubled.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Backoff::MOST);
        wait
    }

    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123:SECRET";

    #[test]
    fn replies_are_read_as_the_bot_api_documents_them() {
        let ok = reply(
            "getMe",
            200,
            br#"{"ok":true,"result":{"id":1},"extra":1}"#,
            TOKEN,
        );
        assert_eq!(ok, Ok(json!({"id": 1})));
        let cases: Vec<(u16, &str, ApiError)> = vec![
            (
                429,
                r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#,
                ApiError::RetryAfter {
                    method: "m",
                    wait: Duration::from_secs(7),
                },
            ),
            (
                429,
                r#"{"ok":false,"error_code":429,"description":"x","parameters":{"retry_after":86400}}"#,
                ApiError::RetryAfter {
                    method: "m",
                    wait: MAX_RETRY_AFTER,
                },
            ),
            (
                429,
                r#"{"ok":false,"error_code":429,"description":"x"}"#,
                ApiError::RetryAfter {
                    method: "m",
                    wait: Duration::from_secs(1),
                },
            ),
            (
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
                ApiError::Unauthorized { method: "m" },
            ),
            (
                403,
                r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#,
                ApiError::Refused {
                    method: "m",
                    code: 403,
                    description: "Forbidden: bot was blocked by the user".into(),
                },
            ),
            (
                502,
                "<html>Bad Gateway</html>",
                ApiError::Unavailable {
                    method: "m",
                    code: 502,
                    description: "HTTP 502".into(),
                },
            ),
            (
                400,
                r#"{"ok":false,"error_code":400,"description":"bad token 123:SECRET\nhere"}"#,
                ApiError::Refused {
                    method: "m",
                    code: 400,
                    description: "bad token [redacted] here".into(),
                },
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                reply("m", status, body.as_bytes(), TOKEN),
                Err(expected),
                "{body}"
            );
        }
        assert!(matches!(
            reply("m", 200, b"not json", TOKEN),
            Err(ApiError::Network { .. })
        ));
    }

    #[test]
    fn updates_are_read_leniently_and_never_lose_an_id() {
        let result = json!([
            {"update_id": 10, "message": {"message_id": 1, "date": 5, "text": "/status",
                "from": {"id": 7, "is_bot": false, "first_name": "A"},
                "chat": {"id": 7, "type": "private"}}},
            {"update_id": 11, "callback_query": {"id": "cb1", "from": {"id": 7},
                "chat_instance": "x", "data": "confirm:abc",
                "message": {"message_id": 2, "date": 0, "chat": {"id": -100}}}},
            {"update_id": 12, "message": {"message_id": "not a number"}},
            {"update_id": 13, "edited_message": {}},
            {"no_id": true},
        ]);
        let read = updates(result);
        let ids: Vec<i64> = read.iter().map(|u| u.update_id).collect();
        assert_eq!(ids, [10, 11, 12, 13]);
        let message = read[0].message.as_ref().expect("message");
        assert_eq!(
            (
                message.from.as_ref().map(|u| u.id),
                message.chat.id,
                message.text.as_deref()
            ),
            (Some(7), 7, Some("/status"))
        );
        let press = read[1].callback_query.as_ref().expect("callback");
        assert_eq!(press.message.as_ref().map(|m| m.chat.id), Some(-100));
        assert_eq!(press.data.as_deref(), Some("confirm:abc"));
        assert_eq!(
            read[2],
            Update {
                update_id: 12,
                ..Update::default()
            }
        );
        assert!(updates(json!({"not": "a list"})).is_empty());
    }

    #[test]
    fn the_backoff_doubles_to_a_minute_and_resets() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| backoff.wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.wait(), Duration::from_secs(1));
    }

    #[test]
    fn scrubbed_text_has_no_token_and_one_line() {
        let clean = scrub("GET /bot123:SECRET/getUpdates\nfailed", TOKEN);
        assert_eq!(clean, "GET /bot[redacted]/getUpdates failed");
    }
}
