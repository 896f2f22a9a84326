//! A real HTTP server on 127.0.0.1 for the provider tests: it answers each
//! request with the next scripted response (status, headers, body, an
//! optional delay) and records what it was sent. Nothing reaches the internet.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
    gate: Option<Gate>,
}

/// Holds a scripted answer back until the test opens it.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().expect("lock") = true;
        changed.notify_all();
    }

    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut is_open = open.lock().expect("lock");
        while !*is_open {
            is_open = changed.wait(is_open).expect("lock");
        }
    }
}

impl Scripted {
    pub fn json(status: u16, body: &str) -> Scripted {
        Scripted {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_owned(),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Scripted {
        self.delay = delay;
        self
    }

    /// Answers only once `gate` is open.
    pub fn until(mut self, gate: &Gate) -> Scripted {
        self.gate = Some(gate.clone());
        self
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(script: Vec<Scripted>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (seen, stopped) = (received.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, script) = (seen.clone(), script.clone());
                // A connection each, so a delayed answer does not hold up the next.
                thread::spawn(move || serve(stream, &seen, &script));
            }
        });
        TestServer {
            addr,
            received,
            stop,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server has been sent so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// A loopback address nothing listens on.
    pub fn unused_address() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.local_addr().expect("address")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Received>>, script: &Mutex<VecDeque<Scripted>>) {
    let Some(request) = read_request(&stream) else {
        return;
    };
    seen.lock().expect("lock").push(request);
    let answer = script.lock().expect("lock").pop_front().unwrap_or_else(|| {
        Scripted::json(
            500,
            r#"{"error":{"type":"test_error","message":"script exhausted"}}"#,
        )
    });
    if let Some(gate) = &answer.gate {
        gate.wait();
    }
    thread::sleep(answer.delay);
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(answer.body.as_bytes());
    let _ = stream.flush();
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
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
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}
