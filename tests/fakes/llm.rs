//! A fake language-model server on 127.0.0.1 speaking both the Anthropic
//! Messages shape (`POST /v1/messages`) and the OpenAI chat-completions
//! shape (`POST /v1/chat/completions`), answering each request with the
//! next scripted reply and keeping what it was sent. Nothing reaches the
//! internet. A request past the end of the script is answered 500, and
//! counted, so a test can tell that nothing more was asked.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// How long the server waits before answering (a slow model).
    delay: Duration,
}

impl Reply {
    /// An Anthropic Messages answer whose text is `text`.
    pub fn anthropic(text: &str, input_tokens: u64, output_tokens: u64) -> Reply {
        Reply::json(
            200,
            serde_json::json!({
                "id": "msg_test", "type": "message", "role": "assistant",
                "model": "claude-test",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }),
        )
    }

    /// An OpenAI chat-completions answer whose text is `text`.
    pub fn openai(text: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
        Reply::json(
            200,
            serde_json::json!({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 1,
                "model": "gpt-test",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens},
            }),
        )
    }

    /// Anthropic's error shape, `{"type":"error","error":{type, message}}`.
    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    /// OpenAI's error shape, `{"error":{message, type, param, code}}`.
    pub fn openai_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": kind}}),
        )
    }

    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, given `delay` after the request arrives.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every message's text (and the system prompt), joined.
    pub fn text(&self) -> String {
        let mut out = self.body["system"].as_str().unwrap_or_default().to_owned();
        for m in self.body["messages"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(m["content"].as_str().unwrap_or_default());
        }
        out
    }

    /// The last message's text.
    pub fn last(&self) -> String {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

pub struct FakeLlm {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeLlm {
    pub fn start(script: Vec<Reply>) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = received.clone();
        // The thread ends with the test binary; each connection is served
        // in turn (the night asks one thing at a time).
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &seen, &script);
            }
        });
        FakeLlm { addr, received }
    }

    /// The base URL for Anthropic (`/v1/messages` is added by the client).
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL for OpenAI-compatible clients (with the version path).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Received>>, script: &Mutex<VecDeque<Reply>>) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    let refused = refusal(&request);
    seen.lock().expect("lock").push(request);
    let reply = match refused {
        Some(why) => Reply::anthropic_error(400, "invalid_request_error", &why),
        None => script.lock().expect("lock").pop_front().unwrap_or_else(|| {
            Reply::anthropic_error(500, "api_error", "the fake's script is exhausted")
        }),
    };
    thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

/// Why a request is not in the shape its API documents, if it is not.
fn refusal(r: &Received) -> Option<String> {
    let b = &r.body;
    let Some(messages) = b["messages"].as_array() else {
        return Some("no messages".into());
    };
    let roles_ok = |allowed: &[&str]| {
        messages.iter().all(|m| {
            m["role"]
                .as_str()
                .is_some_and(|role| allowed.contains(&role))
                && m["content"].is_string()
        })
    };
    match r.path.as_str() {
        "/v1/messages" => {
            let ok = r.header("x-api-key").is_some()
                && r.header("anthropic-version") == Some("2023-06-01")
                && b["model"].is_string()
                && b["max_tokens"].is_u64()
                && roles_ok(&["user", "assistant"])
                && messages.first().is_some_and(|m| m["role"] == "user");
            (!ok).then(|| "not an Anthropic Messages request".into())
        }
        "/v1/chat/completions" => {
            let ok = b["model"].is_string() && roles_ok(&["system", "user", "assistant"]);
            (!ok).then(|| "not a chat-completions request".into())
        }
        other => Some(format!("no route {other}")),
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or_default(),
    })
}
