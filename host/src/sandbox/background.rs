//! Background work that must not slow what a user is waiting for.
//!
//! A baseline-first load hands the optimised compile of the same artifact to
//! [`Background`]: one thread, in the idle scheduling class, that starts a
//! job only once no foreground compile has run for a quiet period. Without
//! that, `keel dev`'s next save compiled its baseline code beside the
//! previous save's optimised compile and took half as long again.

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The worker's pid, and whether it is stopped now.
    worker: Option<(u32, bool)>,
}

impl State {
    /// How long until background work may run (zero: now).
    fn wait_before_work(&self, quiet: Duration) -> Duration {
        if self.running > 0 {
            return quiet;
        }
        quiet.saturating_sub(self.last_end.elapsed())
    }
}

impl Foreground {
    /// Waits on `state` until it changes or `timeout` passes.
    fn wait<'a>(
        &self,
        state: std::sync::MutexGuard<'a, State>,
        timeout: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, timeout)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner().0)
    }
}

/// Marks a foreground compile for as long as it lives; the worker process,
/// if one runs, is stopped at once, and continued once the sandbox has
/// been quiet again for the quiet period.
#[derive(Debug)]
pub(super) struct ForegroundCompile(Arc<Foreground>);

impl Drop for ForegroundCompile {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.running -= 1;
        state.last_end = Instant::now();
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
        if let Some((pid, stopped @ false)) = &mut state.worker {
            signal(*pid, Signal::Stop);
            *stopped = true;
        }
        ForegroundCompile(self.foreground.clone())
    }

    /// Runs `job` on the background thread, after the jobs queued before
    /// it, once no foreground compile has run for the quiet period. The
    /// job runs there any process it does its work in.
    pub(super) fn spawn(&self, job: impl FnOnce(&Workers) + Send + 'static) {
        let (foreground, quiet) = (self.foreground.clone(), self.quiet);
        self.pool.spawn(move || {
            let mut state = lock(&foreground.state);
            loop {
                let wait = state.wait_before_work(quiet);
                if wait.is_zero() {
                    break;
                }
                state = foreground.wait(state, wait);
            }
            drop(state);
            job(&Workers { foreground, quiet });
        });
    }
}

/// How a background job runs a worker process under the foreground rule.
#[derive(Debug)]
pub(super) struct Workers {
    foreground: Arc<Foreground>,
    quiet: Duration,
}

impl Workers {
    /// Runs `wait_for_worker` (which returns once process `pid` has done
    /// its work) on a thread of its own, while this thread keeps the
    /// process stopped during foreground compiles and until the sandbox has
    /// been quiet for the quiet period after them, and kills it once its
    /// work is no longer `wanted` (checked at least every quiet period).
    /// When it returns, the process is no longer tracked and is continued
    /// (stopped, it would never end), so the caller may reap it.
    pub(super) fn supervise<T: Send>(
        &self,
        pid: u32,
        wanted: &dyn Fn() -> bool,
        wait_for_worker: impl FnOnce() -> T + Send,
    ) -> T {
        let foreground = &self.foreground;
        // Set under the state lock, so the loop below never misses it.
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| {
                let result = wait_for_worker();
                let _state = lock(&foreground.state);
                done.store(true, Ordering::Relaxed);
                foreground.changed.notify_all();
                result
            });
            let mut state = lock(&foreground.state);
            state.worker = Some((pid, false));
            while !done.load(Ordering::Relaxed) {
                if !wanted()
                    && let Some((pid, _)) = state.worker.take()
                {
                    signal(pid, Signal::Kill);
                }
                let wait = state.wait_before_work(self.quiet);
                if let Some((pid, stopped)) = &mut state.worker {
                    if wait.is_zero() && *stopped {
                        signal(*pid, Signal::Continue);
                        *stopped = false;
                    } else if !wait.is_zero() && !*stopped {
                        signal(*pid, Signal::Stop);
                        *stopped = true;
                    }
                }
                // Woken by a foreground compile's end and by the worker's;
                // the timeout ends the quiet period.
                let timeout = if wait.is_zero() { self.quiet } else { wait };
                state = foreground.wait(state, timeout);
            }
            if let Some((pid, _)) = state.worker.take() {
                signal(pid, Signal::Continue);
            }
            drop(state);
            waiting
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Puts the calling thread in the idle scheduling class, so that it runs
/// only on a core nothing else wants. Where that is refused, the lowest nice
/// value instead (on Linux, both belong to the thread).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lowest_priority() {
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
pub fn lowest_priority() {}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Stop,
    Continue,
    Kill,
}

/// Stops, continues or kills process `pid` (a worker this host started).
#[cfg(unix)]
#[allow(unsafe_code)]
fn signal(pid: u32, what: Signal) {
    let number = match what {
        Signal::Stop => libc::SIGSTOP,
        Signal::Continue => libc::SIGCONT,
        Signal::Kill => libc::SIGKILL,
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_whose_work_is_no_longer_wanted_is_killed() {
        use std::os::unix::process::ExitStatusExt;
        let background = Background::new(Duration::from_millis(100)).expect("pool");
        let wanted = Arc::new(AtomicBool::new(true));
        let flag = wanted.clone();
        let (tx, rx) = mpsc::channel();
        background.spawn(move |workers| {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep");
            let pid = child.id();
            let wanted = || flag.load(Ordering::Relaxed);
            let status = workers.supervise(pid, &wanted, move || child.wait().expect("wait"));
            tx.send(status).expect("send");
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "the worker ended while wanted");
        let unwanted = Instant::now();
        wanted.store(false, Ordering::Relaxed);
        let status = rx.recv_timeout(Duration::from_secs(10)).expect("killed");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(unwanted.elapsed() < Duration::from_secs(5));
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
    fn a_worker_process_is_stopped_while_a_foreground_compile_runs_and_for_the_quiet_after() {
        let quiet = Duration::from_millis(1500);
        let background = Background::new(quiet).expect("pool");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (ended_tx, ended_rx) = mpsc::channel();
        background.spawn(move |workers| {
            workers.supervise(pid, &|| true, move || release_rx.recv().expect("release"));
            ended_tx.send(()).expect("send");
        });
        // The job starts at once (the sandbox starts quiet); the worker runs.
        std::thread::sleep(Duration::from_millis(50));
        await_stopped(pid, false);
        // A foreground compile stops it at once ...
        let compiling = background.foreground();
        await_stopped(pid, true);
        // ... and it stays stopped for the quiet period after its end.
        drop(compiling);
        let ended = Instant::now();
        std::thread::sleep(quiet / 5);
        assert_eq!(process_state(pid), 'T');
        await_stopped(pid, false);
        assert!(ended.elapsed() >= quiet, "{:?}", ended.elapsed());
        // Stopped again, then its work ends while it is stopped: continued,
        // or it would never end.
        let compiling = background.foreground();
        await_stopped(pid, true);
        release_tx.send(()).expect("release");
        ended_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("supervision ended");
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
