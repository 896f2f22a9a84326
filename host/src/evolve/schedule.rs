//! `keel run --evolve`: the night started at its scheduled time, as a child
//! process (`keel evolve --once`) at the lowest priority, so it never blocks
//! or slows trading. A night is due when the latest scheduled instant has
//! passed and no night started since it: a machine that was off at that
//! time runs the night when it comes back, and a restart does not run it
//! twice. A scheduled instant's night is started once, whatever becomes of
//! it; what a failed night said on its stderr goes to the log.

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

/// A night's process, and what it says on its stderr.
struct Running {
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

/// The most of a night's stderr kept for the log.
const STDERR_KEPT: usize = 4096;

fn run_schedule(night: &NightCommand, schedule: &Schedule, poll: Duration, stop: &AtomicBool) {
    let mut running: Option<Running> = None;
    // The instant whose night was last started: started once, whatever
    // became of it (a night that fails before it is recorded must not be
    // started again at every poll).
    let mut started_for: Option<i64> = None;
    // One connection for every look, opened at the first.
    let mut conn: Option<Connection> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some(r) = &mut running {
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let said = r.stderr.take().and_then(|t| t.join().ok());
                    let said = said.unwrap_or_default();
                    if status.success() {
                        tracing::info!(%status, "the night ended");
                    } else {
                        tracing::error!(
                            target: "keel::evolve",
                            "the night failed ({status}): {}",
                            said.trim()
                        );
                    }
                    running = None;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(target: "keel::evolve", "the night's process: {e}");
                    running = None;
                }
            }
        } else {
            match is_due(&mut conn, &night.db, schedule) {
                Ok(Some(instant)) if started_for == Some(instant) => {}
                Ok(Some(instant)) => {
                    started_for = Some(instant);
                    match spawn(night) {
                        Ok(mut child) => {
                            tracing::info!(pid = child.id(), "a night of the evolution started");
                            let stderr = child.stderr.take().and_then(|pipe| {
                                std::thread::Builder::new()
                                    .name("keel-evolve-stderr".into())
                                    .spawn(move || kept_tail(pipe))
                                    .ok()
                            });
                            running = Some(Running { child, stderr });
                        }
                        Err(e) => {
                            tracing::error!(target: "keel::evolve", "the night could not start: {e}")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("the evolution's schedule: {e:#}"),
            }
        }
        std::thread::sleep(poll);
    }
    if let Some(mut r) = running {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

/// Everything read from `pipe` until it closes, but only its last
/// `STDERR_KEPT` bytes kept.
fn kept_tail(mut pipe: impl std::io::Read) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        let over = kept.len().saturating_sub(STDERR_KEPT);
        kept.drain(..over);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The scheduled instant whose night is due, if one is.
fn is_due(
    conn: &mut Option<Connection>,
    db: &Path,
    schedule: &Schedule,
) -> anyhow::Result<Option<i64>> {
    let conn = match conn {
        Some(c) => c,
        None => {
            let c = Connection::open(db)?;
            c.busy_timeout(Duration::from_secs(5))?;
            conn.insert(c)
        }
    };
    let now = crate::store::now_ms();
    let instant = schedule.latest(now).map_err(anyhow::Error::msg)?;
    Ok(due(conn, now, schedule)?.then_some(instant))
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
    // Its stderr is read into the log: a night that fails says why.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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

    #[test]
    fn only_the_end_of_a_long_stderr_is_kept() {
        let long = format!("{}the reason", "x".repeat(10_000));
        let kept = kept_tail(long.as_bytes());
        assert_eq!(kept.len(), STDERR_KEPT);
        assert!(kept.ends_with("the reason"));
        assert_eq!(
            kept_tail("error: night 1: why\n".as_bytes()),
            "error: night 1: why\n"
        );
    }
}
