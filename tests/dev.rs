//! `keel dev`: a strategy author saves, Keel rebuilds, validates and swaps;
//! a broken save keeps the old version running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{cache_files, data, repo};

/// A copy of sma-cross as its own crate `name`, in `dir`. (Tests running
/// at once share a target directory, so each names its crate apart.)
fn author_crate(dir: &Path, name: &str) -> std::path::PathBuf {
    let krate = dir.join(name);
    std::fs::create_dir_all(krate.join("src")).expect("mkdir");
    std::fs::copy(
        repo().join("strategies/sma-cross/src/lib.rs"),
        krate.join("src/lib.rs"),
    )
    .expect("copy source");
    // The repo's lock file keeps the build offline and on the same versions.
    std::fs::copy(repo().join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy lock");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nkeel-strategy-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
            repo().join("strategy-sdk").display()
        ),
    )
    .expect("manifest");
    krate
}

/// Lines of the child's stdout, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains(what) => return line,
            Ok(line) => {
                eprintln!("keel dev: {line}");
                continue;
            }
            Err(e) => panic!("no line with {what:?}: {e}"),
        }
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    assert!(text.contains(from), "{from} not in {}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).expect("write");
}

fn spawn_dev(dir: &Path, krate: &Path, mode: &[&str]) -> Child {
    let target = repo().join("target/keel-wasm");
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(dir.join("dev.db"))
        .arg("dev")
        .arg(krate)
        .args(mode)
        .args(["--max-reloads", "1", "--target-dir"])
        .arg(&target)
        .env("KEEL_CACHE_DIR", dir.join("cache"))
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("KEEL_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel dev")
}

#[test]
fn each_save_is_rebuilt_validated_and_swapped_and_a_broken_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let krate = author_crate(dir.path(), "my-strategy-data");
    let csv = format!("BTC/USD={}", data("UNITTEST_BTC-1m.csv").display());
    let mut child = spawn_dev(dir.path(), &krate, &["--data", &csv]);
    let rx = lines(&mut child);
    let first = wait_for(&rx, "running sma-cross 1.0.0");
    assert!(first.contains("trades, return"), "{first}");
    wait_for(&rx, "watching");
    // The version running gets its optimised code in the background (at
    // idle priority: other tests may keep the cores busy for a while).
    let cache = dir.path().join("cache");
    let started = std::time::Instant::now();
    while cached(&cache) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the running version was never optimised"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let source = krate.join("src/lib.rs");

    // A save that does not compile: the old version keeps running.
    edit(
        &source,
        "impl Strategy for SmaCross {",
        "impl Strategy for SmaCross { broken",
    );
    let kept = wait_for(&rx, "still running");
    assert!(
        kept.contains("cargo build for wasm32-wasip2 failed"),
        "{kept}"
    );

    // A save that compiles but fails a check (init refuses its defaults).
    edit(
        &source,
        "impl Strategy for SmaCross { broken",
        "impl Strategy for SmaCross {",
    );
    edit(
        &source,
        "ParamSpec::int(\"slow\", 30,",
        "ParamSpec::int(\"slow\", 5,",
    );
    let kept = wait_for(&rx, "still running");
    assert!(kept.contains("failed validation"), "{kept}");
    assert!(kept.contains("must be shorter than slow"), "{kept}");

    // A good save is swapped in and re-run.
    edit(
        &source,
        "ParamSpec::int(\"slow\", 5,",
        "ParamSpec::int(\"slow\", 40,",
    );
    let swapped = wait_for(&rx, "swapped");
    assert!(
        swapped.contains("ms from the change") && swapped.contains("trades, return"),
        "{swapped}"
    );
    let status = child.wait().expect("keel dev");
    assert!(status.success());
    // The version that failed its checks was never optimised.
    assert_eq!(cached(&cache), 1);
}

/// How many compiled components `cache` holds (complete files only).
fn cached(cache: &Path) -> usize {
    cache_files(cache)
        .iter()
        .filter(|name| name.ends_with(".cwasm"))
        .count()
}

#[test]
fn in_paper_mode_a_save_is_hot_swapped_into_the_running_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let krate = author_crate(dir.path(), "my-strategy-paper");
    let mut child = spawn_dev(dir.path(), &krate, &["--paper", "--speed", "60000x"]);
    let rx = lines(&mut child);
    wait_for(&rx, "in a paper engine");
    std::thread::sleep(Duration::from_millis(500));
    edit(
        &krate.join("src/lib.rs"),
        "ParamSpec::int(\"fast\", 10,",
        "ParamSpec::int(\"fast\", 8,",
    );
    let swapped = wait_for(&rx, "swapped");
    let warmed: usize = swapped
        .split_once("warmed on ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{swapped}"));
    let booked = wait_for(&rx, "bars booked");
    assert!(child.wait().expect("keel dev").success(), "{booked}");
    let conn = rusqlite::Connection::open(dir.path().join("dev.db")).expect("db");
    let swaps: Vec<String> = conn
        .prepare("SELECT detail FROM audit_log WHERE action = 'hot swap' AND actor = 'keel dev'")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("audit")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(swaps.len(), 1, "{swaps:?}");
    // The new version was replayed through every bar booked before it took
    // over, not only its declared warm-up.
    let after = swaps[0]
        .split_once("takes over after bar ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(time, _)| time.to_owned())
        .unwrap_or_else(|| panic!("{swaps:?}"));
    let closes: Vec<i64> = conn
        .prepare("SELECT close_ms FROM run_bars ORDER BY close_ms")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("bars")
        .collect::<Result<_, _>>()
        .expect("rows");
    let through = closes
        .iter()
        .position(|t| keel_model::candles::format_time(*t) == after)
        .unwrap_or_else(|| panic!("no bar at {after}"));
    assert_eq!(warmed, through + 1, "{swapped}");
    keel_host::engine::audit_ledger(&conn).expect("ledger adds up");
}
