//! `keel run --evolve`: the night started at its scheduled time, as a child
//! process (`keel evolve --once`) at the lowest priority, so it never blocks
//! or slows trading. A night is due when the latest scheduled instant has
//! passed and no night started since it: a machine that was off at that
//! time runs the night when it comes back, and a restart does not run it
//! twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

const DAY_MS: i64 = 86_400_000;

/// The latest scheduled instant at or before `now_ms`, for a night at
/// `minute` of the UTC day.
pub fn latest_instant(now_ms: i64, minute: u32) -> i64 {
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS + i64::from(minute) * 60_000;
    if today <= now_ms {
        today
    } else {
        today - DAY_MS
    }
}

/// Whether a night is due at `now_ms`: none started since the latest
/// scheduled instant.
pub fn due(conn: &Connection, now_ms: i64, minute: u32) -> rusqlite::Result<bool> {
    let since = latest_instant(now_ms, minute);
    let started: i64 = conn.query_row(
        "SELECT COUNT(*) FROM evolve_nights WHERE started_ms >= ?1",
        [since],
        |r| r.get(0),
    )?;
    Ok(started == 0)
}

/// Runs nights on schedule beside a `keel run` until dropped; the night in
/// progress when it is dropped is stopped (the next night closes it as
/// abandoned).
#[derive(Debug)]
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How a scheduled night is started: this binary, with these arguments.
#[derive(Debug, Clone)]
pub struct NightCommand {
    pub keel: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
    pub candidates: PathBuf,
    /// Where its crates are built; the night's default when none.
    pub target_dir: Option<PathBuf>,
}

impl Scheduler {
    /// Starts the schedule: checks every `poll` whether a night is due.
    pub fn start(night: NightCommand, minute: u32, poll: Duration) -> Scheduler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keel-evolve-schedule".into())
            .spawn(move || schedule(&night, minute, poll, &stopping))
            .ok();
        Scheduler { stop, thread }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn schedule(night: &NightCommand, minute: u32, poll: Duration, stop: &AtomicBool) {
    let mut child: Option<Child> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some(c) = &mut child {
            match c.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(%status, "the night ended");
                    child = None;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("the night's process: {e}");
                    child = None;
                }
            }
        } else {
            match is_due(&night.db, minute) {
                Ok(true) => match spawn(night) {
                    Ok(c) => {
                        tracing::info!(pid = c.id(), "a night of the evolution started");
                        child = Some(c);
                    }
                    Err(e) => tracing::warn!("the night could not start: {e}"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!("the evolution's schedule: {e:#}"),
            }
        }
        std::thread::sleep(poll);
    }
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn is_due(db: &Path, minute: u32) -> anyhow::Result<bool> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(due(&conn, crate::store::now_ms(), minute)?)
}

fn spawn(night: &NightCommand) -> std::io::Result<Child> {
    let mut cmd = Command::new(&night.keel);
    cmd.arg("--db")
        .arg(&night.db)
        .args(["evolve", "--once", "--config"])
        .arg(&night.config)
        .arg("--candidates")
        .arg(&night.candidates);
    if let Some(dir) = &night.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_instant_is_today_once_passed_else_yesterday() {
        let day = 20_000 * DAY_MS;
        assert_eq!(latest_instant(day + 3 * 3_600_000, 120), day + 7_200_000);
        assert_eq!(
            latest_instant(day + 3_600_000, 120),
            day - DAY_MS + 7_200_000
        );
        assert_eq!(latest_instant(day + 7_200_000, 120), day + 7_200_000);
    }

    #[test]
    fn a_night_is_due_until_one_starts_after_the_instant() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE TABLE evolve_nights (started_ms INTEGER NOT NULL)")
            .expect("table");
        let day = 20_000 * DAY_MS;
        let now = day + 3 * 3_600_000;
        assert!(due(&conn, now, 120).expect("due"));
        conn.execute("INSERT INTO evolve_nights VALUES (?1)", [day + 7_100_000])
            .expect("before the instant");
        assert!(due(&conn, now, 120).expect("due"));
        conn.execute("INSERT INTO evolve_nights VALUES (?1)", [day + 7_300_000])
            .expect("after it");
        assert!(!due(&conn, now, 120).expect("not due"));
    }
}
