//! Kill-switch latency in paper mode: from the control API receiving
//! `POST /kill` to every strategy stopped and orders blocked, as the engine
//! measures and stores it (risk event `kill`), and the client's whole round
//! trip. Starts a paper run per sample on the built-in feed, waits until it
//! has booked a few bars, kills it, and reads the stored latency. Each run
//! is done three ways: quiet; under siege (200 idle connections, a
//! slowloris and a 1 GB header from a local process without the token,
//! with the engine's memory growth measured); and through the kill file
//! (`<db>.kill`), timed until the engine has taken it. A fourth, *kraken*,
//! kills a live run against the fake Kraken on loopback and reads the
//! latency the engine stored with the `kill-venue` event: from the command
//! received to Kraken's `CancelAll` acknowledged (the round trip also waits
//! for the venue to fill the orders selling every position).
//!
//!     cargo bench -p keel-host --bench kill_latency            # 10 runs
//!     cargo bench -p keel-host --bench kill_latency -- 30

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_host::build_strategy;
use keel_host::control;

#[path = "../../tests/support/siege.rs"]
mod siege;

/// The key pair the fake Kraken knows (a test key, nobody's account).
const KEY: &str = "bench-key";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";

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
    let mut figures: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut growth_kb = Vec::new();
    let fake = keel_host::venues::kraken::fake::FakeKraken::start(0, KEY, SECRET).expect("fake");
    fake.set_price("XBTUSD", 100.0, 2);
    for mode in ["quiet", "siege", "kill file", "kraken"] {
        let (mut stored_ms, mut round_ms) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let db = dir
                .path()
                .join(format!("kill-{}-{i}.db", mode.replace(' ', "-")));
            let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
            command.arg("--db").arg(&db);
            if mode == "kraken" {
                command
                    .args(["run", "--live", "--i-understand-this-trades-real-money"])
                    .args([
                        "--kraken-url",
                        &fake.base_url(),
                        "--kraken-ws-url",
                        &fake.ws_url(),
                    ])
                    .args(["--kraken-tier", "unlimited", "--symbol", "XBT/USD"])
                    .env("KEEL_KRAKEN_KEY", KEY)
                    .env("KEEL_KRAKEN_SECRET", SECRET);
            } else {
                command.args(["run", "--paper"]);
            }
            let mut child = command
                .args(["--speed", "600x", "--strategy"])
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
            let siege = (mode == "siege").then(|| Siege::start(&db, child.id()));
            let asked = Instant::now();
            if mode == "kill file" {
                let file = control::write_kill_file(&db, "bench").expect("kill file");
                while file.exists() {
                    assert!(
                        asked.elapsed() < Duration::from_secs(10),
                        "kill file not taken"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
            } else {
                let (status, body) = control::request(&db, "POST", "/kill", "bench").expect("kill");
                assert_eq!(status, 200, "{body}");
            }
            round_ms.push(asked.elapsed().as_secs_f64() * 1e3);
            let kind = if mode == "kraken" {
                "kill-venue"
            } else {
                "kill"
            };
            let stored: i64 = rusqlite::Connection::open(&db)
                .expect("db")
                .query_row(
                    "SELECT latency_us FROM risk_events WHERE kind = ?1",
                    [kind],
                    |r| r.get(0),
                )
                .expect("kill event");
            stored_ms.push(stored as f64 / 1000.0);
            if let Some(siege) = siege {
                growth_kb.push(siege.end(child.id()));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        figures.push((mode, stored_ms, round_ms));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    println!(
        "kill latency over {runs} runs each (target < 10 ms stored; < 1 s end to end under siege; kraken: command to CancelAll acknowledged <= 50 ms):"
    );
    for (mode, mut stored, mut round) in figures {
        let (s_med, s_max) = median(&mut stored);
        let (r_med, r_max) = median(&mut round);
        println!(
            "  {mode:<10} engine: median {s_med:.3} ms, max {s_max:.3} ms   round trip: median {r_med:.1} ms, max {r_max:.1} ms"
        );
    }
    let (g_med, g_max) = median(&mut growth_kb);
    println!(
        "  a 1 GB header grew the engine by median {g_med:.0} kB, max {g_max:.0} kB (target < 10 MB)"
    );
}

/// A local process without the token: 200 idle connections, a slowloris
/// and a header that never ends, sent until the server hangs up.
struct Siege {
    idle: Vec<std::net::TcpStream>,
    rss_before_kb: u64,
}

impl Siege {
    fn start(db: &Path, pid: u32) -> Siege {
        use std::io::Write;
        let addr = siege::control_addr(db);
        let rss_before_kb = siege::rss_kb(pid);
        let mut idle: Vec<_> = (0..200)
            .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
            .collect();
        let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
        let _ = slow.write_all(b"GET /status HTTP/1.1\r\nX-Slow: 1\r\n");
        idle.push(slow);
        siege::huge_header(&addr);
        Siege {
            idle,
            rss_before_kb,
        }
    }

    /// The engine's growth since the siege began, kB.
    fn end(self, pid: u32) -> f64 {
        let grown = siege::rss_kb(pid) as f64 - self.rss_before_kb as f64;
        drop(self.idle);
        grown
    }
}
