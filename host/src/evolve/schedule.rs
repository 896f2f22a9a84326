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

use super::config::Schedule;

/// Whether a night is due at `now_ms`: none started since the latest
/// instant `schedule` names.
pub fn due(conn: &Connection, now_ms: i64, schedule: &Schedule) -> anyhow::Result<bool> {
    let since = schedule.latest(now_ms).map_err(anyhow::Error::msg)?;
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
    /// The candidates file, if the run has one (else the defaults).
    pub candidates: Option<PathBuf>,
    /// Where its crates are built; the night's default when none.
    pub target_dir: Option<PathBuf>,
}

impl Scheduler {
    /// Starts the schedule: checks every `poll` whether a night is due.
    pub fn start(night: NightCommand, schedule: Schedule, poll: Duration) -> Scheduler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keel-evolve-schedule".into())
            .spawn(move || run_schedule(&night, &schedule, poll, &stopping))
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

fn run_schedule(night: &NightCommand, schedule: &Schedule, poll: Duration, stop: &AtomicBool) {
    let mut child: Option<Child> = None;
    // One connection for every look, opened at the first.
    let mut conn: Option<Connection> = None;
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
            match is_due(&mut conn, &night.db, schedule) {
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

fn is_due(conn: &mut Option<Connection>, db: &Path, schedule: &Schedule) -> anyhow::Result<bool> {
    let conn = match conn {
        Some(c) => c,
        None => {
            let c = Connection::open(db)?;
            c.busy_timeout(Duration::from_secs(5))?;
            conn.insert(c)
        }
    };
    due(conn, crate::store::now_ms(), schedule)
}

fn spawn(night: &NightCommand) -> std::io::Result<Child> {
    let mut cmd = Command::new(&night.keel);
    cmd.arg("--db")
        .arg(&night.db)
        .args(["evolve", "--once", "--config"])
        .arg(&night.config);
    if let Some(file) = &night.candidates {
        cmd.arg("--candidates").arg(file);
    }
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
    fn a_night_is_due_until_one_starts_after_the_instant() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE TABLE evolve_nights (started_ms INTEGER NOT NULL)")
            .expect("table");
        let day = 20_000 * 86_400_000;
        let now = day + 3 * 3_600_000;
        let at_two = Schedule::default();
        assert!(due(&conn, now, &at_two).expect("due"));
        conn.execute("INSERT INTO evolve_nights VALUES (?1)", [day + 7_100_000])
            .expect("before the instant");
        assert!(due(&conn, now, &at_two).expect("due"));
        conn.execute("INSERT INTO evolve_nights VALUES (?1)", [day + 7_300_000])
            .expect("after it");
        assert!(!due(&conn, now, &at_two).expect("not due"));
        // Tomorrow after 02:00, those nights are before the instant: due.
        assert!(due(&conn, now + 86_400_000, &at_two).expect("tomorrow's"));
    }
}
