//! A local process without the control token, as the kill switch's test
//! and its benchmark play one: the run's control address, its resident
//! memory, and a request header that never ends. (Included by
//! `host/benches/kill_latency.rs` too, by path.)

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

/// Where the run on `db` serves its control API.
pub fn control_addr(db: &Path) -> String {
    let endpoint: serde_json::Value = serde_json::from_slice(
        &std::fs::read(keel_host::control::control_file(db)).expect("control file"),
    )
    .expect("control file json");
    format!("127.0.0.1:{}", endpoint["port"])
}

/// Process `pid`'s resident memory, kB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends `addr` a request whose header never ends, a megabyte at a time
/// (writes time out after 5 s), until the server hangs up or 1 GB has
/// gone; how many bytes went.
pub fn huge_header(addr: &str) -> usize {
    let mut huge = TcpStream::connect(addr).expect("connect");
    huge.set_write_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let _ = huge.write_all(b"GET /status HTTP/1.1\r\nX-Huge: ");
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    while sent < 1 << 30 {
        match huge.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}
