//! Compiling components: the disk cache by hash and engine, the baseline
//! tier that runs at once and the optimised code that follows (in a keel
//! worker process), and what is never compiled or trusted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_backtester::run as backtest;
use keel_host::sandbox::{
    BACKGROUND_QUIET, Fault, Metering, Sandbox, SandboxConfig, SandboxLimits, StrategyArtifact,
    Tier,
};
use keel_host::validate;
use keel_strategy_sdk::harness::default_config;

use super::{expect_fault, tick_of};
use crate::support::{self, binding, example, fixture, synthetic};

#[test]
fn compiled_components_are_cached_on_disk_by_hash_and_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |metering| keel_host::sandbox::SandboxConfig {
        limits: SandboxLimits::default(),
        metering,
        cache_dir: Some(dir.path().to_owned()),
        ..SandboxConfig::default()
    };
    let first = keel_host::sandbox::Sandbox::new(config(Metering::Fuel)).expect("sandbox");
    let cold = first.load_file(example("sma-cross")).expect("loads");
    assert!(!cold.from_cache);
    assert!(
        first
            .load_file(example("sma-cross"))
            .expect("loads")
            .from_cache,
        "memory cache"
    );

    let second = keel_host::sandbox::Sandbox::new(config(Metering::Fuel)).expect("sandbox");
    let warm = second.load_file(example("sma-cross")).expect("loads");
    assert!(warm.from_cache, "disk cache");
    assert_eq!(warm.hash, cold.hash);
    let entries: Vec<_> = walk(dir.path());
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].ends_with(format!("{}.cwasm", cold.hash)),
        "{entries:?}"
    );

    // Another engine configuration does not share compiled code.
    let other = keel_host::sandbox::Sandbox::new(config(Metering::WallClock)).expect("sandbox");
    assert!(
        !other
            .load_file(example("sma-cross"))
            .expect("loads")
            .from_cache
    );

    // A damaged entry is ignored and rebuilt, never trusted.
    for entry in walk(dir.path()) {
        std::fs::write(&entry, b"not a compiled component").expect("damage");
    }
    let third = keel_host::sandbox::Sandbox::new(config(Metering::Fuel)).expect("sandbox");
    let rebuilt = third
        .load_file(example("sma-cross"))
        .expect("loads after damage");
    assert!(!rebuilt.from_cache);
    let data = vec![synthetic("BTC/USD", 3, 300)];
    let mut instance = third
        .instantiate(&rebuilt, support::binding(&rebuilt, &["BTC/USD"], &[], 1))
        .expect("runs");
    assert!(
        backtest(&mut instance, &data, &default_config())
            .errors
            .is_empty()
    );
}

#[test]
fn a_baseline_first_load_runs_at_once_and_the_optimised_code_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quick = || {
        Sandbox::new(SandboxConfig {
            metering: Metering::WallClock,
            cache_dir: Some(dir.path().to_owned()),
            baseline_first: true,
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    };
    let sandbox = quick();
    let first = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(first.tier, Tier::Baseline);
    assert!(!first.from_cache);

    // Baseline code trades exactly as optimised code does.
    let data = vec![synthetic("BTC/USD", 5, 1500)];
    let run = |sandbox: &Sandbox, loaded: &keel_host::sandbox::LoadedStrategy| {
        let mut instance = sandbox
            .instantiate(loaded, binding(loaded, &["BTC/USD"], &[], 1))
            .expect("instance");
        backtest(&mut instance, &data, &default_config())
    };
    let optimised_sandbox = support::sandbox(Metering::WallClock);
    let optimised = optimised_sandbox
        .load_file(example("sma-cross"))
        .expect("loads");
    assert_eq!(optimised.tier, Tier::Optimized);
    let (quick_run, slow_run) = (run(&sandbox, &first), run(&optimised_sandbox, &optimised));
    assert!(!quick_run.signals.is_empty());
    assert_eq!(quick_run.signals, slow_run.signals);
    assert_eq!(quick_run.fills, slow_run.fills);

    // The wall-clock deadline stops a runaway call in baseline code too.
    let looping = sandbox.load_file(fixture("loop")).expect("loads");
    assert_eq!(looping.tier, Tier::Baseline);
    let mut instance = sandbox
        .instantiate(&looping, binding(&looping, &["BTC/USD"], &[], 1))
        .expect("instance");
    let error = (0..10)
        .find_map(|i| instance.on_bar(&tick_of(&data[0], i)).err())
        .expect("stopped");
    expect_fault("loop", &error.fault);

    // The optimised code is built in the background, for this sandbox's
    // later loads and, through the disk cache, for the next process's.
    await_optimised(&sandbox, &first.hash);
    let later = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!((later.tier, later.from_cache), (Tier::Optimized, true));
    let next_process = quick().load_file(example("sma-cross")).expect("loads");
    assert_eq!(
        (next_process.tier, next_process.from_cache),
        (Tier::Optimized, true)
    );
    assert_eq!(run(&sandbox, &later).signals, slow_run.signals);
}

#[test]
fn a_version_nothing_runs_any_more_gets_no_optimising_compile_and_no_cache_file() {
    // `keel dev`: each save replaces the version before; optimised code of
    // a replaced version would cost a compile and disk for nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = fuel_baseline_first(dir.path(), None);
    let bytes = std::fs::read(example("sma-cross")).expect("read");
    let save = |tag: &str| {
        StrategyArtifact::from_bytes(with_custom_section(&bytes, tag), example("sma-cross"))
    };
    let (first, second) = (save("first save"), save("second save"));
    let replaced = sandbox.load(&first).expect("loads");
    assert_eq!(replaced.tier, Tier::Baseline);
    drop(replaced);
    // What runs holds its version: here an instance alone, as the paper
    // engine keeps.
    let loaded = sandbox.load(&second).expect("loads");
    let running = sandbox
        .instantiate(&loaded, binding(&loaded, &["BTC/USD"], &[], 1))
        .expect("instance");
    drop(loaded);
    await_optimised(&sandbox, &second.hash);
    await_optimised(&sandbox, &first.hash);
    let cached = support::cache_files(dir.path());
    assert_eq!(cached, [format!("{}.cwasm", second.hash)]);
    // Nothing kept the replaced version's code: loaded again, it compiles.
    let again = sandbox.load(&first).expect("loads");
    assert_eq!((again.tier, again.from_cache), (Tier::Baseline, false));
    let later = sandbox.load(&second).expect("loads");
    assert_eq!((later.tier, later.from_cache), (Tier::Optimized, true));
    drop(running);
}

#[test]
fn a_version_loaded_again_before_its_turn_still_gets_its_optimised_code() {
    // Checked, let go, then loaded again to run (as a candidate is): the
    // background compile queued by the first load is still wanted.
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = fuel_baseline_first(dir.path(), None);
    let checked = sandbox.load_file(example("sma-cross")).expect("loads");
    let hash = checked.hash;
    drop(checked);
    let running = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!((running.tier, running.from_cache), (Tier::Baseline, true));
    await_optimised(&sandbox, &hash);
    let later = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!((later.tier, later.from_cache), (Tier::Optimized, true));
    drop(running);
}

#[cfg(target_os = "linux")]
#[test]
fn a_worker_compiling_a_version_nothing_runs_any_more_is_stopped_for_good() {
    use std::os::unix::fs::PermissionsExt;
    // A worker that never finishes stands for a long optimising compile.
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = dir.path().join("slow-worker");
    std::fs::write(&worker, "#!/bin/sh\nexec sleep 60\n").expect("script");
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cache = dir.path().join("cache");
    let sandbox = fuel_baseline_first(&cache, Some(worker));
    let loaded = sandbox.load_file(example("sma-cross")).expect("loads");
    // The background compile starts once the sandbox has been quiet.
    std::thread::sleep(BACKGROUND_QUIET * 3);
    assert!(sandbox.is_optimizing(&loaded.hash));
    let hash = loaded.hash;
    drop(loaded);
    let dropped = Instant::now();
    while sandbox.is_optimizing(&hash) {
        assert!(
            dropped.elapsed() < Duration::from_secs(20),
            "the worker was left running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Killed, and not compiled here instead: nothing was written.
    assert!(!cache.exists() || std::fs::read_dir(&cache).expect("cache").next().is_none());
    assert_eq!(sandbox.optimized_in_worker(), 0);
}

/// `component` with a custom section named `name` (under 128 bytes)
/// appended: the same code, another artifact, as a save that changes
/// nothing a compiler sees.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    assert!(name.len() < 127);
    let mut out = component.to_vec();
    out.extend([0, name.len() as u8 + 1, name.len() as u8]);
    out.extend_from_slice(name.as_bytes());
    out
}

/// A sandbox as `keel dev` sets one up: fuel, baseline code first, the
/// compile cache in `cache`, background compiles in `optimizer` if given.
fn fuel_baseline_first(cache: &std::path::Path, optimizer: Option<PathBuf>) -> Sandbox {
    Sandbox::new(SandboxConfig {
        metering: Metering::Fuel,
        cache_dir: Some(cache.to_owned()),
        baseline_first: true,
        optimizer,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

/// Waits (up to two minutes) for `sandbox`'s background compile of `hash`.
fn await_optimised(sandbox: &Sandbox, hash: &keel_host::sandbox::StrategyHash) {
    let started = Instant::now();
    while sandbox.is_optimizing(hash) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never optimised"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Loads sma-cross baseline-first with `optimizer` running the background
/// compiles; returns the sandbox once the optimised code has landed, and
/// the cache directory.
fn optimised_through(optimizer: PathBuf) -> (Sandbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = fuel_baseline_first(dir.path(), Some(optimizer));
    let first = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(first.tier, Tier::Baseline);
    await_optimised(&sandbox, &first.hash);
    (sandbox, dir)
}

#[cfg(target_os = "linux")]
#[test]
fn the_optimised_compile_runs_in_a_keel_worker_process_and_trades_the_same() {
    let (sandbox, dir) = optimised_through(PathBuf::from(env!("CARGO_BIN_EXE_keel")));
    assert_eq!(sandbox.optimized_in_worker(), 1);
    let later = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!((later.tier, later.from_cache), (Tier::Optimized, true));
    // Written to the disk cache for the next process, too.
    let next = Sandbox::new(SandboxConfig {
        metering: Metering::Fuel,
        cache_dir: Some(dir.path().to_owned()),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let next_load = next.load_file(example("sma-cross")).expect("loads");
    assert_eq!(
        (next_load.tier, next_load.from_cache),
        (Tier::Optimized, true)
    );
    // The worker's code trades exactly as code compiled here.
    let data = vec![synthetic("BTC/USD", 5, 1500)];
    let run = |sandbox: &Sandbox| {
        let loaded = sandbox.load_file(example("sma-cross")).expect("loads");
        let mut instance = sandbox
            .instantiate(&loaded, binding(&loaded, &["BTC/USD"], &[], 1))
            .expect("instance");
        backtest(&mut instance, &data, &default_config())
    };
    let here = support::sandbox(Metering::Fuel);
    let (worker_run, here_run) = (run(&sandbox), run(&here));
    assert!(!worker_run.signals.is_empty());
    assert_eq!(worker_run.signals, here_run.signals);
    assert_eq!(worker_run.fills, here_run.fills);
}

#[test]
fn a_worker_that_is_not_keel_is_never_trusted_and_the_compile_happens_here() {
    // `echo` exits 0 and prints its arguments: output without the header
    // is not deserialised; the host compiles on its own thread instead.
    let (sandbox, _dir) = optimised_through(PathBuf::from("/bin/echo"));
    assert_eq!(sandbox.optimized_in_worker(), 0);
    let later = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(later.tier, Tier::Optimized);
    // A worker that cannot start at all: the same.
    let (sandbox, _dir) = optimised_through(PathBuf::from("/nonexistent/keel"));
    assert_eq!(sandbox.optimized_in_worker(), 0);
    let later = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(later.tier, Tier::Optimized);
}

#[test]
fn a_fuel_metered_baseline_load_validates_and_fuel_stops_its_runaway_code() {
    // `keel dev` validates and swaps each new version under fuel with
    // baseline code first, so a save is running within the reload target.
    let sandbox = Sandbox::new(SandboxConfig {
        metering: Metering::Fuel,
        baseline_first: true,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let first = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(first.tier, Tier::Baseline);
    let mut checks = Vec::new();
    validate::validate_loaded(&sandbox, &first, &mut checks);
    let names: Vec<_> = checks.iter().map(|c| c.name).collect();
    assert!(names.contains(&"smoke run"), "{names:?}");
    assert!(checks.iter().all(|c| c.outcome.is_ok()), "{checks:?}");
    // Loading it again to run it (as `keel dev` does after validating)
    // compiles nothing: baseline code is kept until the optimised code lands.
    let again = sandbox.load_file(example("sma-cross")).expect("loads");
    assert!(again.from_cache, "{:?}", again.tier);

    // Baseline code under fuel trades as optimised code does.
    let data = vec![synthetic("BTC/USD", 5, 1500)];
    let baseline = sandbox.load_file(fixture("loop")).expect("loads");
    assert_eq!(baseline.tier, Tier::Baseline);
    let optimised_sandbox = support::sandbox(Metering::Fuel);
    let run = |sandbox: &Sandbox, loaded: &keel_host::sandbox::LoadedStrategy| {
        let mut instance = sandbox
            .instantiate(loaded, binding(loaded, &["BTC/USD"], &[], 1))
            .expect("instance");
        backtest(&mut instance, &data, &default_config())
    };
    let quick = run(&sandbox, &first);
    let slow = run(
        &optimised_sandbox,
        &optimised_sandbox
            .load_file(example("sma-cross"))
            .expect("loads"),
    );
    assert!(!quick.signals.is_empty());
    assert_eq!((quick.signals, quick.fills), (slow.signals, slow.fills));

    // Fuel, not a clock, stops a runaway loop in Winch's code.
    let mut instance = sandbox
        .instantiate(&baseline, binding(&baseline, &["BTC/USD"], &[], 1))
        .expect("instance");
    let err = instance
        .on_bar(&tick_of(&data[0], 0))
        .expect_err("out of fuel");
    assert_eq!(err.fault, Fault::Fuel(sandbox.limits().fuel_per_call));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
