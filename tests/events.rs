//! The event stream (`GET /v1/events`) as a script or the dashboard reads
//! it: a WebSocket over loopback to a real paper run, the token as a
//! header or a subprotocol, a refusal without it, and a reconnect that
//! resumes after the last id it saw.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::paper::{Setup, wait_for_control};

/// The port and token in `<db>.control`.
pub(crate) fn endpoint(db: &Path) -> (u16, String) {
    let file = keel_host::control::control_file(db);
    let text = std::fs::read_to_string(&file).expect("control file");
    let v: Value = serde_json::from_str(&text).expect("control file JSON");
    let port = v["port"].as_u64().expect("port") as u16;
    (port, v["token"].as_str().expect("token").to_owned())
}

type Socket = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Opens `/v1/events?query` with the given headers; the handshake's
/// error (with the HTTP status) if refused.
fn open(db: &Path, query: &str, headers: &[(&str, String)]) -> Result<Socket, tungstenite::Error> {
    let (port, _) = endpoint(db);
    let mut request = format!("ws://127.0.0.1:{port}/v1/events{query}")
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header"),
            value.parse().expect("value"),
        );
    }
    let (socket, response) = tungstenite::connect(request)?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
    }
    assert_eq!(response.status(), 101);
    Ok(socket)
}

fn bearer(db: &Path) -> (&'static str, String) {
    ("Authorization", format!("Bearer {}", endpoint(db).1))
}

fn refused_with(result: Result<Socket, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("the stream opened"),
    }
}

/// The next event on `socket` (pings are answered by the library).
fn next(socket: &mut Socket) -> Value {
    loop {
        match socket.read().expect("read an event") {
            Message::Text(text) => return serde_json::from_str(&text).expect("event JSON"),
            Message::Close(_) => panic!("the stream closed"),
            _ => {}
        }
    }
}

#[test]
fn a_client_sees_a_replays_bars_signals_orders_and_fills_in_order_and_needs_the_token() {
    let s = Setup::new();
    let db = s.db("events.db");
    let mut child = s.spawn_run(&db, "sample:3000", "1500x", &[]);
    wait_for_control(&db);

    // Without the token, or with a wrong one, the handshake is refused.
    assert_eq!(refused_with(open(&db, "", &[])), 401);
    let wrong = ("Sec-WebSocket-Protocol", "keel, bearer.0000".to_owned());
    assert_eq!(refused_with(open(&db, "", &[wrong])), 401);
    // A bad query is one line, before any upgrade.
    assert_eq!(refused_with(open(&db, "?kinds=nope", &[bearer(&db)])), 400);
    let (status, body) =
        keel_host::control::request(&db, "GET", "/v1/events", "").expect("plain GET");
    assert_eq!(
        (status, body.trim()),
        (426, "/v1/events is a WebSocket (version 13)")
    );

    // A key that is not 16 bytes of base64 is refused; a stale id is said
    // and closed, not waited on for ever.
    let (port, token) = endpoint(&db);
    let mut raw = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
        "k".repeat(500)
    );
    std::io::Write::write_all(&mut raw, head.as_bytes()).expect("send");
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut raw, &mut answer).expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 400");
    let mut stale = open(&db, "?since=999999999", &[bearer(&db)]).expect("opens");
    match stale.read() {
        Ok(Message::Close(Some(frame))) => {
            assert!(frame.reason.contains("past the newest event"), "{frame:?}")
        }
        other => panic!("not closed: {other:?}"),
    }

    // From the first event on: every bar, signal, order and fill, in the
    // order the ledger committed them.
    let mut socket = open(&db, "?since=0", &[bearer(&db)]).expect("stream");
    let (mut seen, mut last_id, mut last_close) = (Vec::<Value>::new(), 0, 0);
    let started = Instant::now();
    while !seen.iter().any(|e| e["kind"] == "fill") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no fill streamed"
        );
        let e = next(&mut socket);
        let id = e["id"].as_i64().expect("id");
        assert!(id > last_id, "ids rise: {id} after {last_id}");
        last_id = id;
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        if e["kind"] == "bar" {
            let close = e["data"]["close_ms"].as_i64().expect("close_ms");
            assert!(close > last_close, "bars in time order");
            last_close = close;
            assert_eq!(e["data"]["bars"][0]["symbol"], "SAMPLE/USD", "{e}");
        }
        seen.push(e);
    }
    let first = |kind: &str| seen.iter().position(|e| e["kind"] == kind);
    let fill = first("fill").expect("a fill");
    let order = &seen[fill]["data"]["order"];
    let placed = seen
        .iter()
        .position(|e| {
            e["kind"] == "order" && &e["data"]["id"] == order && e["data"]["state"] == "new"
        })
        .expect("the fill's order was streamed");
    let signal = first("signal").expect("a signal");
    assert!(
        first("bar").expect("a bar") < signal,
        "a bar before any signal"
    );
    assert!(
        signal < placed && placed < fill,
        "signal, order, fill: {signal} {placed} {fill}"
    );
    assert_eq!(seen[fill]["data"]["book"], "sma-cross#1");
    assert!(
        seen[fill]["data"]["price"].as_str().is_some(),
        "{}",
        seen[fill]
    );

    // The ledger holds what was streamed, under the same ids.
    let conn = crate::paper::open(&db);
    let fill_id = seen[fill]["data"]["fill_id"]
        .as_str()
        .expect("fill id")
        .to_owned();
    let booked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM fills WHERE fill_id = ?1",
            [&fill_id],
            |r| r.get(0),
        )
        .expect("fills");
    assert_eq!(booked, 1);
    drop(socket);

    // A browser's way: the token as a subprotocol; resumed after an id,
    // the next event is the one after it; kinds filter.
    let offered = (
        "Sec-WebSocket-Protocol",
        format!("keel, bearer.{}", endpoint(&db).1),
    );
    let mut resumed = open(&db, &format!("?since={}", last_id - 5), &[offered]).expect("resumed");
    assert_eq!(next(&mut resumed)["id"].as_i64(), Some(last_id - 4));
    let mut bars = open(&db, "?kinds=bar", &[bearer(&db)]).expect("bars only");
    for _ in 0..3 {
        let e = next(&mut bars);
        assert_eq!(e["kind"], "bar", "{e}");
        assert!(e["id"].as_i64() > Some(last_id - 5));
    }
    drop((resumed, bars));

    // A kill is on the stream too: the state, and a risk event with its latency.
    let mut watch = open(&db, "?kinds=state,risk", &[bearer(&db)]).expect("watch");
    let (status, body) =
        keel_host::control::request(&db, "POST", "/v1/kill", "from the stream test").expect("kill");
    assert_eq!(status, 200, "{body}");
    let halted = (0..10)
        .map(|_| next(&mut watch))
        .find(|e| e["kind"] == "state")
        .expect("the state change was streamed");
    assert_eq!(halted["data"]["state"], "HALTED", "{halted}");
    assert_eq!(
        halted["data"]["reason"], "kill switch: from the stream test",
        "{halted}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
