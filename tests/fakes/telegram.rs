//! A fake Telegram Bot API on 127.0.0.1: `POST /bot<TOKEN>/<method>` for
//! `getUpdates` (long polling: held until an update is queued or the
//! timeout passes; updates below `offset` are confirmed and dropped),
//! `sendMessage` (recorded, answered with a Message) and
//! `answerCallbackQuery`, each answered in the documented envelope. A
//! wrong token gets `401 Unauthorized`; a request not in the documented
//! shape gets a 400. A test queues what users say or press, scripts the
//! next answer (a 429 with `retry_after`, say) and reads what was sent.
//! Nothing reaches the internet.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A message the bot sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub reply_markup: Value,
}

impl Sent {
    /// The `callback_data` of every inline button.
    pub fn buttons(&self) -> Vec<String> {
        let rows = self.reply_markup["inline_keyboard"].as_array().cloned();
        rows.unwrap_or_default()
            .iter()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["callback_data"].as_str().map(str::to_owned))
            .collect()
    }
}

/// A call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub at: Instant,
    /// The HTTP status it was answered with.
    pub status: u16,
    pub body: Value,
}

/// A scripted answer to the next call (of one method, or of any).
#[derive(Debug, Clone)]
struct Scripted {
    method: Option<String>,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct State {
    next_update_id: i64,
    next_message_id: i64,
    updates: Vec<Value>,
    sent: Vec<Sent>,
    calls: Vec<Call>,
    scripted: VecDeque<Scripted>,
}

struct Inner {
    token: String,
    state: Mutex<State>,
    changed: Condvar,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake telegram lock")
    }
}

pub struct FakeTelegram {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl FakeTelegram {
    /// Serves a bot whose token is `token`.
    pub fn start(token: &str) -> FakeTelegram {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            state: Mutex::new(State {
                next_update_id: 500,
                next_message_id: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let served = inner.clone();
        // A thread per connection: a long poll holds its own. The threads
        // end with the test binary.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let inner = served.clone();
                thread::spawn(move || serve(stream, &inner));
            }
        });
        FakeTelegram { addr, inner }
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn queue(&self, update: impl FnOnce(i64, i64) -> Value) {
        let mut state = self.inner.state();
        let (id, message) = (state.next_update_id, state.next_message_id);
        state.next_update_id += 1;
        state.next_message_id += 1;
        state.updates.push(update(id, message));
        self.inner.changed.notify_all();
    }

    /// `user` says `text` in `chat` (a private chat when they are equal).
    pub fn say(&self, user: i64, chat: i64, text: &str) {
        self.queue(|id, message| {
            json!({"update_id": id, "message": {
                "message_id": message, "date": now_secs(), "text": text,
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}")},
                "chat": chat_object(user, chat),
            }})
        });
    }

    /// `user` presses a button carrying `data` on a message in `chat`.
    pub fn press(&self, user: i64, chat: i64, data: &str) {
        self.queue(|id, message| {
            json!({"update_id": id, "callback_query": {
                "id": format!("cb{id}"), "chat_instance": "1", "data": data,
                "from": {"id": user, "is_bot": false, "first_name": format!("user{user}")},
                "message": {"message_id": message, "date": now_secs(), "chat": chat_object(user, chat)},
            }})
        });
    }

    /// The next call (of `method`, or of any when `None`) is answered
    /// `status` with `body`.
    pub fn answer_next(&self, method: Option<&str>, status: u16, body: Value) {
        let scripted = Scripted {
            method: method.map(str::to_owned),
            status,
            body,
        };
        self.inner.state().scripted.push_back(scripted);
        // A held long poll is answered now, so "next" comes soon.
        self.inner.changed.notify_all();
    }

    /// Flood control's answer, as Telegram gives it.
    pub fn too_many_requests(retry_after: u64) -> Value {
        json!({"ok": false, "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": {"retry_after": retry_after}})
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.inner.state().sent.clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|m| m.chat_id == chat)
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    /// Waits up to `within` for a message to `chat` whose text contains
    /// `needle`, sent after the first `skip` messages to it.
    pub fn wait_for(&self, chat: i64, skip: usize, needle: &str, within: Duration) -> Sent {
        let started = Instant::now();
        let mut state = self.inner.state();
        loop {
            let found = state
                .sent
                .iter()
                .filter(|m| m.chat_id == chat)
                .skip(skip)
                .find(|m| m.text.contains(needle));
            if let Some(found) = found {
                return found.clone();
            }
            let left = within.checked_sub(started.elapsed()).unwrap_or_else(|| {
                let said: Vec<&str> = state
                    .sent
                    .iter()
                    .filter(|m| m.chat_id == chat)
                    .map(|m| m.text.as_str())
                    .collect();
                panic!("no message to chat {chat} containing {needle:?}; sent to it: {said:#?}")
            });
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .expect("lock")
                .0;
        }
    }
}

fn chat_object(user: i64, chat: i64) -> Value {
    match user == chat {
        true => json!({"id": chat, "type": "private", "first_name": format!("user{user}")}),
        false => json!({"id": chat, "type": "group", "title": "desk"}),
    }
}

fn serve(stream: TcpStream, inner: &Inner) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((path, body)) = read_request(&stream) else {
        return;
    };
    let (status, reply) = answer(inner, &path, &body);
    let text = reply.to_string();
    let head = format!(
        "HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        text.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

fn refused(code: u16, description: &str) -> (u16, Value) {
    let body = json!({"ok": false, "error_code": code, "description": description});
    (code, body)
}

fn answer(inner: &Inner, path: &str, body: &Value) -> (u16, Value) {
    let at = Instant::now();
    let (token, method) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.rsplit_once('/'))
        .unwrap_or(("", path));
    let (status, reply) = if token != inner.token {
        refused(401, "Unauthorized")
    } else {
        let scripted = {
            let mut state = inner.state();
            let i = state
                .scripted
                .iter()
                .position(|s| s.method.as_deref().is_none_or(|m| m == method));
            i.and_then(|i| state.scripted.remove(i))
        };
        match scripted {
            Some(s) => (s.status, s.body),
            None => match method {
                "getUpdates" => get_updates(inner, body),
                "sendMessage" => send_message(inner, body),
                "answerCallbackQuery" => match body["callback_query_id"].as_str() {
                    Some(_) => (200, json!({"ok": true, "result": true})),
                    None => refused(400, "Bad Request: query_id is empty"),
                },
                _ => refused(404, "Not Found"),
            },
        }
    };
    let call = Call {
        method: method.to_owned(),
        at,
        status,
        body: body.clone(),
    };
    inner.state().calls.push(call);
    inner.changed.notify_all();
    (status, reply)
}

fn get_updates(inner: &Inner, body: &Value) -> (u16, Value) {
    let documented = ["offset", "timeout", "limit"]
        .iter()
        .all(|k| body.get(*k).is_none_or(Value::is_i64))
        && body
            .get("allowed_updates")
            .is_none_or(|a| a.as_array().is_some_and(|a| a.iter().all(Value::is_string)));
    if !documented {
        return refused(400, "Bad Request: wrong parameters");
    }
    let offset = body["offset"].as_i64();
    let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(50));
    let started = Instant::now();
    let mut state = inner.state();
    if let Some(offset) = offset {
        state
            .updates
            .retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= offset));
    }
    loop {
        let scripted =
            (state.scripted.iter()).any(|s| s.method.as_deref().is_none_or(|m| m == "getUpdates"));
        if !state.updates.is_empty() || scripted {
            break;
        }
        let Some(left) = timeout.checked_sub(started.elapsed()) else {
            break;
        };
        state = inner.changed.wait_timeout(state, left).expect("lock").0;
    }
    let updates: Vec<Value> = state.updates.iter().take(100).cloned().collect();
    (200, json!({"ok": true, "result": updates}))
}

fn send_message(inner: &Inner, body: &Value) -> (u16, Value) {
    let Some(chat_id) = body["chat_id"].as_i64() else {
        return refused(400, "Bad Request: chat_id is empty");
    };
    let text = body["text"].as_str().unwrap_or_default();
    if text.is_empty() {
        return refused(400, "Bad Request: message text is empty");
    }
    if text.encode_utf16().count() > 4096 {
        return refused(400, "Bad Request: message is too long");
    }
    let markup = body.get("reply_markup").cloned().unwrap_or(Value::Null);
    if !markup.is_null() && !keyboard_documented(&markup) {
        return refused(
            400,
            "Bad Request: can't parse reply keyboard markup JSON object",
        );
    }
    let mut state = inner.state();
    let id = state.next_message_id;
    state.next_message_id += 1;
    state.sent.push(Sent {
        chat_id,
        text: text.to_owned(),
        reply_markup: markup,
    });
    let message = json!({"message_id": id, "date": now_secs(), "text": text,
        "chat": {"id": chat_id, "type": "private"},
        "from": {"id": 1, "is_bot": true, "first_name": "keel"}});
    (200, json!({"ok": true, "result": message}))
}

/// An InlineKeyboardMarkup: rows of buttons, each a text and 1-64 bytes
/// of callback data.
fn keyboard_documented(markup: &Value) -> bool {
    markup["inline_keyboard"].as_array().is_some_and(|rows| {
        rows.iter().all(|row| {
            row.as_array().is_some_and(|buttons| {
                buttons.iter().all(|b| {
                    b["text"].as_str().is_some_and(|t| !t.is_empty())
                        && b["callback_data"]
                            .as_str()
                            .is_some_and(|d| (1..=64).contains(&d.len()))
                })
            })
        })
    })
}

fn read_request(stream: &TcpStream) -> Option<(String, Value)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
