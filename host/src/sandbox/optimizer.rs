//! Optimising compiles in a process of their own.
//!
//! A baseline-first load queues the optimised compile of the same artifact
//! (see `background`). Run on a thread, that compile could only be given a
//! low priority: a baseline compile starting meanwhile (`keel dev`'s next
//! save) still shared the process's memory map and allocator with it, and
//! took a third longer. Run in a `keel __optimize` process, it is stopped
//! (`SIGSTOP`) as soon as a baseline compile starts, and continued once the
//! sandbox has been quiet for as long as a background compile waits before
//! it starts (the validation and first bars that follow a compile run
//! undisturbed too).
//!
//! The worker reads the component's bytes on stdin and writes
//! [`MAGIC`] followed by the serialized compiled code on stdout, from an
//! engine configured exactly as the host's optimising one (wasmtime checks
//! that on deserialisation too).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use wasmtime::component::Component;

use super::background::Workers;
use super::{Metering, SandboxConfig, SandboxLimits, Tier, engine};

/// The hidden `keel` subcommand that runs [`serve_optimizer`].
pub const OPTIMIZER_COMMAND: &str = "__optimize";

/// What a worker's output starts with: anything else (a binary that is not
/// `keel`) is never deserialised.
const MAGIC: &[u8] = b"keel-optimized-v1\n";

/// The worker's side: compiles the component read from `input` with the
/// optimising engine for `metering` and `max_stack_bytes`, and writes the
/// code to `output`. Dies with the host that started it (Linux), so a
/// stopped worker never outlives it.
pub fn serve_optimizer(
    metering: Metering,
    max_stack_bytes: usize,
    mut input: impl Read,
    mut output: impl Write,
) -> anyhow::Result<()> {
    die_with_parent();
    let config = SandboxConfig {
        metering,
        limits: SandboxLimits {
            max_stack_bytes,
            ..SandboxLimits::default()
        },
        ..SandboxConfig::default()
    };
    let engine = engine(&config, Tier::Optimized)?;
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .context("reading the component from stdin")?;
    let component = Component::new(&engine, &bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    output.write_all(MAGIC)?;
    output.write_all(&component.serialize()?)?;
    output.flush()?;
    Ok(())
}

/// The host's side: compiles `bytes` in a `worker` process (the `keel`
/// binary), supervised by `workers`: stopped while a baseline compile runs
/// and for the quiet period after it. Returns the code loaded, and as the
/// worker serialized it (for the disk cache, as it is).
pub(super) fn compile_in_worker(
    worker: &Path,
    config: (Metering, usize),
    bytes: &[u8],
    workers: &Workers,
    engine: &wasmtime::Engine,
    wanted: &dyn Fn() -> bool,
) -> anyhow::Result<(Component, Vec<u8>)> {
    let (metering, max_stack_bytes) = config;
    let metering = match metering {
        Metering::Fuel => "fuel",
        Metering::WallClock => "wall-clock",
    };
    let mut child = Command::new(worker)
        .args([
            OPTIMIZER_COMMAND,
            "--metering",
            metering,
            "--max-stack-bytes",
        ])
        .arg(max_stack_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", worker.display()))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        bail!("the worker's pipes were not set up");
    };
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (written, read, mut code) = workers.supervise(child.id(), wanted, move || {
        // The worker reads all of its input before it writes anything.
        let written = stdin.write_all(bytes);
        drop(stdin);
        let mut code = Vec::new();
        let read = stdout.read_to_end(&mut code);
        (written, read, code)
    });
    // No longer tracked, and continued: reaping it cannot leave a pid for
    // a signal to reach after reuse.
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{} {OPTIMIZER_COMMAND} failed ({status}): {}",
            worker.display(),
            errors.trim().replace('\n', " ")
        );
    }
    written.context("writing the component to the worker")?;
    read.context("reading the worker's output")?;
    if !code.starts_with(MAGIC) {
        bail!(
            "{} is not a keel binary (its {OPTIMIZER_COMMAND} output lacks the header)",
            worker.display()
        );
    }
    code.drain(..MAGIC.len());
    // SAFETY: `code` is `Component::serialize` output of an engine set up
    // by the same `engine()` function, written by a keel binary (the header
    // says so) that the host itself started; wasmtime re-checks the version
    // and settings. It is trusted like the compile cache on disk.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &code) }?;
    Ok((component, code))
}

/// Linux: the kernel kills this process when the thread that started it
/// ends (the host's background thread, or the host itself).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and reads
    // nothing else; getppid reads nothing.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The host may have ended before the line above.
        if libc::getppid() == 1 {
            std::process::exit(1);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}
