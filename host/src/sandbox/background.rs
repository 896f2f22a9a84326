//! Background work that must not slow what a user is waiting for.
//!
//! A baseline-first load hands the optimised compile of the same artifact to
//! [`Background`]: one thread, in the idle scheduling class, that starts a
//! job only once no foreground compile has run for a quiet period. Without
//! that, `keel dev`'s next save compiled its baseline code beside the
//! previous save's optimised compile and took half as long again.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock;

/// How long the sandbox must go without a foreground compile before a
/// background compile starts.
pub const BACKGROUND_QUIET: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct Background {
    /// One thread: wasmtime's parallel compile, run inside it, stays on it.
    pool: rayon::ThreadPool,
    foreground: Arc<Foreground>,
    quiet: Duration,
}

/// Foreground compiles running now, and when the last one ended.
#[derive(Debug)]
struct Foreground {
    state: Mutex<(usize, Instant)>,
    changed: Condvar,
}

/// Marks a foreground compile for as long as it lives.
#[derive(Debug)]
pub(super) struct ForegroundCompile(Arc<Foreground>);

impl Drop for ForegroundCompile {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.0 -= 1;
        state.1 = Instant::now();
        self.0.changed.notify_all();
    }
}

impl Background {
    pub(super) fn new(quiet: Duration) -> Result<Background, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "keel-optimize".into())
            .start_handler(|_| lowest_priority())
            .build()?;
        // A sandbox starts quiet: its first background job need not wait.
        let long_ago = Instant::now()
            .checked_sub(quiet)
            .unwrap_or_else(Instant::now);
        Ok(Background {
            pool,
            foreground: Arc::new(Foreground {
                state: Mutex::new((0, long_ago)),
                changed: Condvar::new(),
            }),
            quiet,
        })
    }

    /// Call before a compile someone waits for; keep the guard until it ends.
    pub(super) fn foreground(&self) -> ForegroundCompile {
        lock(&self.foreground.state).0 += 1;
        ForegroundCompile(self.foreground.clone())
    }

    /// Runs `job` on the background thread, after the jobs queued before
    /// it, once no foreground compile has run for the quiet period.
    pub(super) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let (foreground, quiet) = (self.foreground.clone(), self.quiet);
        self.pool.spawn(move || {
            let mut state = lock(&foreground.state);
            loop {
                let (running, last_end) = *state;
                let waited = last_end.elapsed();
                if running == 0 && waited >= quiet {
                    break;
                }
                let wait = if running > 0 { quiet } else { quiet - waited };
                state = foreground
                    .changed
                    .wait_timeout(state, wait)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
            drop(state);
            job();
        });
    }
}

/// Puts the calling thread in the idle scheduling class, so that it runs
/// only on a core nothing else wants. Where that is refused, the lowest nice
/// value instead (on Linux, both belong to the thread).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both calls only read `param`, which outlives them; `0` names
    // the calling thread.
    let lowered = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0
        || unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
    if !lowered {
        tracing::debug!(
            "background compiles keep normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lowest_priority() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_job_waits_for_the_foreground_compile_and_the_quiet_after_it() {
        let quiet = Duration::from_millis(80);
        let background = Background::new(quiet).expect("pool");
        let (tx, rx) = mpsc::channel();
        let compiling = background.foreground();
        background.spawn(move || tx.send(Instant::now()).expect("send"));
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            rx.try_recv().is_err(),
            "the job ran during a foreground compile"
        );
        let ended = Instant::now();
        drop(compiling);
        let started = rx.recv_timeout(Duration::from_secs(10)).expect("job ran");
        assert!(
            started.duration_since(ended) >= quiet,
            "the job started {:?} after the foreground compile ended",
            started.duration_since(ended)
        );
    }

    #[test]
    fn a_quiet_sandbox_runs_its_jobs_in_order() {
        let background = Background::new(Duration::from_millis(20)).expect("pool");
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            background.spawn(move || tx.send(i).expect("send"));
        }
        let order: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("job ran"))
            .collect();
        assert_eq!(order, [0, 1, 2]);
    }
}
