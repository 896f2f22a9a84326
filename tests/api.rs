//! API v1 as a script or a dashboard reads it: every read of a running
//! paper run in the one envelope, the commands, the token, and the OpenAPI
//! document kept true to what is served.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use keel_host::control;

use crate::paper::{Setup, snapshots, text, wait_for_control};

fn get(db: &std::path::Path, path: &str) -> serde_json::Value {
    let (status, body) = control::request(db, "GET", path, "").expect(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The paths `docs/openapi-v1.yaml` documents, with their method.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(crate::support::repo().join("docs/openapi-v1.yaml"))
        .expect("docs/openapi-v1.yaml");
    let mut out = Vec::new();
    let mut path = None;
    for line in doc.lines() {
        if let Some(p) = line.strip_prefix("  /v1/") {
            path = Some(format!("/v1/{}", p.trim_end_matches(':')));
        } else if let (Some(p), Some(method)) = (&path, line.strip_prefix("    "))
            && let Some(method) = method
                .strip_suffix(':')
                .filter(|m| ["get", "post"].contains(m))
        {
            out.push((method.to_uppercase(), p.clone()));
        }
    }
    out
}

#[test]
fn every_v1_read_answers_in_one_envelope_and_the_commands_act() {
    let s = Setup::new();
    let db = s.db("api.db");
    let mut child = s.spawn_run(&db, "sample:3000", "300x", &[]);
    wait_for_control(&db);
    let started = Instant::now();
    while snapshots(&db) < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no bars booked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let documented = documented();
    assert_eq!(documented.len(), 16, "{documented:?}");
    // The event stream is a WebSocket: `events.rs` tests it.
    let reads = documented
        .iter()
        .filter(|(m, p)| m == "GET" && p != "/v1/events");
    for (method, path) in reads {
        let answer = get(&db, path);
        assert_eq!(answer["meta"]["mode"], "paper", "{method} {path}: {answer}");
        assert_eq!(
            answer["meta"]["version"],
            env!("CARGO_PKG_VERSION"),
            "{path}"
        );
        assert!(
            answer["meta"]["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{path}"
        );
        assert!(!answer["data"].is_null(), "{path}: {answer}");
    }
    let system = get(&db, "/v1/system")["data"].clone();
    assert_eq!(
        (system["run_id"].clone(), system["state"].clone()),
        (1.into(), "ACTIVE".into())
    );
    let portfolio = get(&db, "/v1/portfolio")["data"].clone();
    assert_eq!(portfolio["books"][0]["slot"], "sma-cross#1");
    assert_eq!(portfolio["total"]["start_cash"], 10_000.0);
    let performance = get(&db, "/v1/performance")["data"].clone();
    assert_eq!(performance["books"][0]["slot"], "sma-cross#1");
    assert!(
        performance["books"][0]["max_drawdown_pct"]
            .as_f64()
            .is_some(),
        "{performance}"
    );
    let signals = get(&db, "/v1/signals")["data"].clone();
    assert!(
        signals.as_array().is_some_and(|s| !s.is_empty()),
        "{signals}"
    );
    assert_eq!(signals[0]["slot"], "sma-cross#1");
    let strategy = get(&db, "/v1/strategy")["data"].clone();
    assert_eq!(strategy["books"][0]["name"], "sma-cross");
    let activity = get(&db, "/v1/activity")["data"].clone();
    assert!(
        activity
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["data"]["action"] == "start run")),
        "{activity}"
    );
    // Unknown reads, and any read without the token, are refused.
    let (status, _) = control::request(&db, "GET", "/v1/nothing", "").expect("request");
    assert_eq!(status, 404);
    let endpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(control::control_file(&db)).expect("control"))
            .expect("json");
    let port = endpoint["port"].as_u64().expect("port") as u16;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /v1/system HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    // The commands answer in the envelope too; the kill halts.
    let (status, body) = control::request(&db, "POST", "/v1/pause", "api test").expect("pause");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get(&db, "/v1/risk")["data"]["trading"]["state"],
        "REDUCE_ONLY"
    );
    let (status, body) = control::request(&db, "POST", "/v1/kill", "api test").expect("kill");
    assert_eq!(status, 200, "{body}");
    let killed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(killed["data"]["reply"], "killed", "{killed}");
    assert_eq!(get(&db, "/v1/system")["data"]["state"], "HALTED");
    child.kill().expect("SIGKILL");
    let out = child.wait_with_output().expect("reap");
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}
