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

/// Foreground compiles running now, when the last one ended, and the
/// worker process of the background compile running now, if any.
#[derive(Debug)]
struct Foreground {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    running: usize,
    last_end: Instant,
    worker: Option<u32>,
}

/// Marks a foreground compile for as long as it lives; the worker process,
/// if one runs, is stopped meanwhile.
#[derive(Debug)]
pub(super) struct ForegroundCompile(Arc<Foreground>);

impl Drop for ForegroundCompile {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.running -= 1;
        state.last_end = Instant::now();
        if state.running == 0
            && let Some(pid) = state.worker
        {
            signal(pid, Signal::Continue);
        }
        self.0.changed.notify_all();
    }
}

/// Registers a worker process for as long as it lives (see
/// [`Workers::register`]).
#[derive(Debug)]
pub(super) struct WorkerProcess(Arc<Foreground>);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Continued in any case: stopped now, it would never end.
        if let Some(pid) = lock(&self.0.state).worker.take() {
            signal(pid, Signal::Continue);
        }
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
                state: Mutex::new(State {
                    running: 0,
                    last_end: long_ago,
                    worker: None,
                }),
                changed: Condvar::new(),
            }),
            quiet,
        })
    }

    /// Call before a compile someone waits for; keep the guard until it ends.
    pub(super) fn foreground(&self) -> ForegroundCompile {
        let mut state = lock(&self.foreground.state);
        state.running += 1;
        if state.running == 1
            && let Some(pid) = state.worker
        {
            signal(pid, Signal::Stop);
        }
        ForegroundCompile(self.foreground.clone())
    }

    /// Runs `job` on the background thread, after the jobs queued before
    /// it, once no foreground compile has run for the quiet period. The
    /// job registers there any process it runs its work in.
    pub(super) fn spawn(&self, job: impl FnOnce(&Workers) + Send + 'static) {
        let (foreground, quiet) = (self.foreground.clone(), self.quiet);
        self.pool.spawn(move || {
            let mut state = lock(&foreground.state);
            loop {
                let (running, last_end) = (state.running, state.last_end);
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
            job(&Workers(foreground));
        });
    }
}

/// Where a background job registers the process it runs its work in.
#[derive(Debug)]
pub(super) struct Workers(Arc<Foreground>);

impl Workers {
    /// Registers process `pid` until the guard is dropped (before the
    /// process is reaped). It is stopped while foreground compiles run (at
    /// once, if one runs now).
    pub(super) fn register(&self, pid: u32) -> WorkerProcess {
        let mut state = lock(&self.0.state);
        state.worker = Some(pid);
        if state.running > 0 {
            signal(pid, Signal::Stop);
        }
        WorkerProcess(self.0.clone())
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

#[derive(Debug, Clone, Copy)]
enum Signal {
    Stop,
    Continue,
}

/// Stops or continues process `pid` (a worker this host started).
#[cfg(unix)]
#[allow(unsafe_code)]
fn signal(pid: u32, what: Signal) {
    let number = match what {
        Signal::Stop => libc::SIGSTOP,
        Signal::Continue => libc::SIGCONT,
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill reads its two integer arguments only. The pid is that of
    // a child this host started and has not yet reaped (the guard that
    // names it lives until `wait`), so it cannot name another process.
    if unsafe { libc::kill(pid, number) } != 0 {
        tracing::debug!(
            pid,
            "cannot signal the optimising worker: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(unix))]
fn signal(_pid: u32, _what: Signal) {}

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
        background.spawn(move |_| tx.send(Instant::now()).expect("send"));
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

    /// The state letter of process `pid` in /proc (`T`: stopped).
    #[cfg(target_os = "linux")]
    fn process_state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after_name = stat.rsplit_once(") ").expect("stat format").1;
        after_name.chars().next().expect("state")
    }

    /// Waits (up to 10 s) for process `pid` to be stopped, or not.
    #[cfg(target_os = "linux")]
    fn await_stopped(pid: u32, stopped: bool) {
        let started = Instant::now();
        while (process_state(pid) == 'T') != stopped {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "process {pid} is in state {}, wanted stopped = {stopped}",
                process_state(pid)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_process_is_stopped_while_a_foreground_compile_runs() {
        let background = Background::new(Duration::from_millis(10)).expect("pool");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let (registered_tx, registered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        background.spawn(move |workers| {
            let guard = workers.register(pid);
            registered_tx.send(()).expect("send");
            release_rx.recv().expect("release");
            drop(guard);
        });
        registered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("registered");
        await_stopped(pid, false);
        // A foreground compile stops it, its end continues it.
        let compiling = background.foreground();
        await_stopped(pid, true);
        drop(compiling);
        await_stopped(pid, false);
        // Stopped again, then unregistered while stopped: continued, or it
        // would never end.
        let compiling = background.foreground();
        await_stopped(pid, true);
        release_tx.send(()).expect("release");
        await_stopped(pid, false);
        drop(compiling);
        child.kill().expect("kill");
        child.wait().expect("reaped");
    }

    #[test]
    fn a_quiet_sandbox_runs_its_jobs_in_order() {
        let background = Background::new(Duration::from_millis(20)).expect("pool");
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            background.spawn(move |_| tx.send(i).expect("send"));
        }
        let order: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("job ran"))
            .collect();
        assert_eq!(order, [0, 1, 2]);
    }
}
