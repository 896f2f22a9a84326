//! Kill-switch latency in paper mode: from the control API receiving
//! `POST /kill` to every strategy stopped and orders blocked, as the engine
//! measures and stores it (risk event `kill`). Starts a paper run per sample
//! on the built-in feed, waits until it has booked a few bars, kills it, and
//! reads the stored latency.
//!
//!     cargo bench -p keel-host --bench kill_latency            # 10 runs
//!     cargo bench -p keel-host --bench kill_latency -- 30

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_host::build_strategy;
use keel_host::control;

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = build_strategy::build(
        &repo.join("strategies/sma-cross"),
        Some(&repo.join("target/keel-wasm")),
    )
    .expect("build sma-cross")[0]
        .clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut latencies = Vec::new();
    for i in 0..runs {
        let db = dir.path().join(format!("kill-{i}.db"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(["run", "--paper", "--speed", "600x", "--strategy"])
            .arg(&wasm)
            .env("KEEL_CACHE_DIR", dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("keel run");
        let started = Instant::now();
        while !control::control_file(&db).exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no control API"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let it book a few bars (100 ms each at 600x).
        std::thread::sleep(Duration::from_millis(350));
        let (status, body) = control::request(&db, "POST", "/kill", "bench").expect("kill");
        assert_eq!(status, 200, "{body}");
        let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
        let stored: i64 = rusqlite::Connection::open(&db)
            .expect("db")
            .query_row(
                "SELECT latency_us FROM risk_events WHERE kind = 'kill'",
                [],
                |r| r.get(0),
            )
            .expect("kill event");
        assert_eq!(reply["latency_us"].as_i64(), Some(stored));
        latencies.push(stored as f64 / 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "kill latency over {runs} paper runs: median {median:.3} ms, max {max:.3} ms (target < 10 ms)"
    );
}
