//! The README's commands, taken from the README and run in order on a copy
//! of the repository, as a new user would type them: the walk-through
//! cannot drift from what works.
//!
//! A fenced `sh` block right after the line `<!-- run by tests/readme.rs -->`
//! is run, line by line (a line ending in `\` goes on), through bash, with
//! `keel` standing for the binary under test and `cargo run --release -p
//! keel-host --` read as `keel`, in the copy's root with `../shared/data`
//! beside it. Only `cargo test --workspace` — this very suite — is not run.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo;

const MARK: &str = "<!-- run by tests/readme.rs -->";
const QUICK_START_RUNNER: &str = "cargo run --release -p keel-host --";
const TEST_COMMAND: &str = "cargo test --workspace";
/// The longest one command may take: the first builds compile the SDK.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// The commands of every marked block, in order, continuations joined.
fn commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != MARK {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "README: {MARK} must precede a ```sh block"
        );
        let mut command = String::new();
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            match line.strip_suffix('\\') {
                Some(part) => command.push_str(part),
                None => {
                    command.push_str(line);
                    if !command.trim().is_empty() {
                        commands.push(command.trim().to_owned());
                    }
                    command.clear();
                }
            }
        }
        assert!(command.is_empty(), "README: a block ends inside a command");
    }
    commands
}

/// The command without its trailing `# comment`.
fn bare(command: &str) -> &str {
    command.split(" #").next().unwrap_or(command).trim()
}

/// A copy of every file git tracks (as it is in the working tree), in
/// `to`, with `target` pointing at `target` (kept between runs, so a
/// second run builds less: the first, in CI, builds everything once).
fn copy_repository(to: &Path, target: &Path) {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .expect("git ls-files: the README test copies the tracked files");
    assert!(listed.status.success(), "git ls-files failed");
    for name in listed.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("utf-8 file name");
        let from = repo().join(name);
        if !from.is_file() {
            continue; // deleted in the working tree, not yet in the index
        }
        let dest = to.join(name);
        std::fs::create_dir_all(dest.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&from, &dest).unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
    std::fs::create_dir_all(target).expect("mkdir target");
    std::os::unix::fs::symlink(target, to.join("target")).expect("link target");
}

/// Runs `command` through bash in `dir`; its exit status and output.
fn run(command: &str, dir: &Path, scratch: &Path) -> (bool, String) {
    let log = scratch.join("command.log");
    let out = File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let script = format!("keel() {{ \"$KEEL_BIN\" \"$@\"; }}\n{command}");
    let mut child = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .current_dir(dir)
        .env("KEEL_BIN", env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_CACHE_DIR", scratch.join("cache"))
        .env_remove("KEEL_DB")
        .env_remove("KEEL_LOG")
        // Every build of the walk-through (the examples, the crates it makes,
        // the night's) shares the copy's target directory, as a user who sets
        // cargo's target directory has it: the SDK compiles once, not four
        // times (about three minutes of the suite on two cores).
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("bash");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("README command still running after {COMMAND_TIMEOUT:?}: {command}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    (status.success(), output)
}

#[test]
fn the_readme_commands_succeed_in_order_on_a_fresh_copy() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let commands = commands(&readme);
    // The walk-through is all there: every step a new user takes.
    for step in [
        "run --paper",
        "status",
        "strategy build",
        "backtest",
        "candidate submit",
        "candidate list",
        "candidate show",
        "report run",
        "candidate promote",
        "candidate rollback",
        "strategy new",
        "candidates",
    ] {
        let step = format!("keel {step}");
        let found = commands.iter().any(|c| {
            let c = bare(c).replace(QUICK_START_RUNNER, "keel");
            c == step || c.starts_with(&format!("{step} "))
        });
        assert!(found, "the README's walk-through has no `{step}`");
    }
    assert_eq!(
        commands.iter().filter(|c| bare(c) == TEST_COMMAND).count(),
        1,
        "the README names its test command once, in the quick start"
    );

    let shared = repo().join("../shared");
    assert!(
        shared.join("data").is_dir(),
        "{}: the sample data the README uses is not there",
        shared.display()
    );
    let root = repo().join("target/readme");
    let copy = root.join("keel");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).expect("remove the last copy");
    }
    let scratch = root.join("scratch");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).expect("remove the last scratch");
    }
    std::fs::create_dir_all(&scratch).expect("mkdir");
    copy_repository(&copy, &root.join("target"));
    let link = root.join("shared");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(shared.canonicalize().expect("shared"), &link).expect("link");

    let mut outputs: Vec<(String, String)> = Vec::new();
    for command in &commands {
        if bare(command) == TEST_COMMAND {
            continue;
        }
        let command = match command.strip_prefix(QUICK_START_RUNNER) {
            Some(rest) => format!("keel{rest}"),
            None => command.clone(),
        };
        let (ok, output) = run(&command, &copy, &scratch);
        assert!(ok, "README command failed: {command}\n{output}");
        outputs.push((command, output));
    }

    // What the walk-through says happens, happened.
    let said = |prefix: &str, words: &str| {
        let (command, output) = outputs
            .iter()
            .find(|(c, _)| bare(c).starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` was run"));
        assert!(
            output.contains(words),
            "`{command}` did not say {words:?}:\n{output}"
        );
    };
    said("keel run --paper", "main (sma-cross"); // the quick start's, the first
    said(
        "keel candidate submit strategies/rsi-reversion",
        "backtest  PASS",
    );
    said(
        "keel run --paper --feed replay:../shared/data/crypto-5m/XLM",
        "paper gate pass",
    );
    said("keel candidate promote 1", "is the active strategy");
    said(
        "keel run --paper --feed replay:../shared/data/crypto-5m/ZEC",
        "main (rsi-reversion",
    );
    said("keel candidate rollback", "rolled back to");
    said("keel candidates", "my-rsi");
    for report in ["rsi-reversion.html", "first-run.html"] {
        let page =
            std::fs::read_to_string(copy.join(report)).unwrap_or_else(|e| panic!("{report}: {e}"));
        assert!(page.contains("<svg"), "{report} has no chart");
    }
}

#[test]
fn a_marked_block_is_read_command_by_command() {
    let readme = format!(
        "text\n{MARK}\n```sh\nkeel a --x \\\n     --y  # note\n\nkeel b\n```\n```sh\nkeel unmarked\n```\n"
    );
    assert_eq!(commands(&readme), ["keel a --x      --y  # note", "keel b"]);
    assert_eq!(bare("keel a --x # note"), "keel a --x");
}
