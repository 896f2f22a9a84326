//! The sandbox end to end, with real components built from this repo.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_backtester::engine::RejectedBy;
use keel_backtester::{BacktestResult, run as backtest};
use keel_host::sandbox::{
    BACKGROUND_QUIET, CONTRACT_VERSIONS, Fault, LoadError, Metering, Sandbox, SandboxConfig,
    SandboxLimits, StrategyArtifact, StrategyInstance, Tier,
};
use keel_host::validate;
use keel_model::replay::Series;
use keel_model::{Bar, Portfolio, RiskLimits, Tick};
use keel_strategy_sdk::harness::{Harness, build, default_config};

use crate::support::{self, binding, example, fixture, sandbox, sandbox_with, series, synthetic};

fn tick_of(series: &Series, i: usize) -> Tick {
    let c = &series.candles[i];
    Tick {
        time_ms: c.time_ms + series.bar_ms,
        bars: vec![Bar::from_candle(&series.symbol.as_str().into(), c)],
        portfolio: Portfolio {
            cash: 10_000.0,
            equity: 10_000.0,
            positions: vec![],
        },
        limits: RiskLimits::default(),
    }
}

/// The fixture `name`, loaded and bound to TEST/USD (seed 1).
fn fixture_instance(sandbox: &Sandbox, name: &str) -> StrategyInstance {
    let loaded = sandbox.load_file(fixture(name)).expect("fixture loads");
    sandbox
        .instantiate(&loaded, binding(&loaded, &["TEST/USD"], &[], 1))
        .expect("instance")
}

fn run_example(
    sandbox: &keel_host::sandbox::Sandbox,
    name: &str,
    data: &[Series],
    overrides: &[&str],
) -> BacktestResult {
    let loaded = sandbox.load_file(example(name)).expect("example loads");
    let symbols: Vec<&str> = data.iter().map(|s| s.symbol.as_str()).collect();
    let mut instance = sandbox
        .instantiate(&loaded, binding(&loaded, &symbols, overrides, 1))
        .expect("instance");
    let out = backtest(&mut instance, data, &default_config());
    assert!(out.rejected.iter().all(|r| r.by != RejectedBy::Sandbox));
    out
}

#[test]
fn the_examples_pass_every_validation_check() {
    let sandbox = sandbox(Metering::Fuel);
    for name in ["sma-cross", "rsi-reversion", "atr-breakout"] {
        let report = validate::validate_file(&sandbox, example(name));
        assert!(report.passed(), "{name}: {:?}", report.failures());
        assert_eq!(report.info.as_ref().map(|i| i.name.as_str()), Some(name));
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["load", "init", "smoke run", "determinism"]);
    }
}

#[test]
fn wasm_and_native_builds_give_identical_signals_and_fills() {
    let sandbox = sandbox(Metering::Fuel);
    // One symbol, real 1-minute data.
    let btc = vec![series("BTC/USD", "UNITTEST_BTC-1m.csv")];
    let wasm = run_example(&sandbox, "sma-cross", &btc, &["fast=5", "slow=20"]);
    let native = Harness::new()
        .with_series("BTC/USD", btc[0].candles.clone())
        .run(
            build::<sma_cross::SmaCross>(&[("fast", 5.into()), ("slow", 20.into())])
                .expect("params"),
        );
    assert!(
        wasm.signals.len() > 50,
        "only {} signals",
        wasm.signals.len()
    );
    assert_eq!(wasm.signals, native.signals);
    assert_eq!(wasm.fills, native.fills);
    assert_eq!(wasm.errors, native.errors);

    // Three symbols with real gaps.
    let pairs: Vec<Series> = ["ETH", "LTC", "XMR"]
        .iter()
        .map(|p| series(&format!("{p}/BTC"), &format!("crypto-5m/{p}_BTC-5m.csv")))
        .collect();
    let wasm = run_example(&sandbox, "atr-breakout", &pairs, &[]);
    let mut harness = Harness::new();
    for s in &pairs {
        harness = harness.with_series(&s.symbol, s.candles.clone());
    }
    let native = harness.run(build::<atr_breakout::AtrBreakout>(&[]).expect("defaults"));
    assert!(wasm.signals.len() > 20);
    assert_eq!(wasm.signals, native.signals);
    assert_eq!(wasm.fills, native.fills);
}

/// Runs a component kept in `tests/compat/` beside the current build of the
/// same strategy: same signals, fills and trades. Returns both call counts.
fn trades_like_the_current_build(file: &str, contract: &str) -> (u64, u64, usize) {
    let sandbox = sandbox(Metering::Fuel);
    let old = sandbox
        .load_file(&support::repo().join("tests/compat").join(file))
        .unwrap_or_else(|e| panic!("{file} loads: {e}"));
    let current = sandbox.load_file(example("sma-cross")).expect("loads");
    assert_eq!(
        (old.contract, current.contract),
        (contract, CONTRACT_VERSIONS[0])
    );
    let import = format!("keel:strategy/types@{contract}");
    assert!(old.imports.contains(&import), "{:?}", old.imports);
    let btc = vec![series("BTC/USD", "UNITTEST_BTC-1m.csv")];
    let run = |loaded| {
        let mut instance = sandbox
            .instantiate(
                loaded,
                binding(loaded, &["BTC/USD"], &["fast=5", "slow=20"], 1),
            )
            .expect("instance");
        let out = backtest(&mut instance, &btc, &default_config());
        (out, instance.stats().calls)
    };
    let (old_out, old_calls) = run(&old);
    let (new_out, new_calls) = run(&current);
    assert!(new_out.signals.len() > 50);
    assert!(old_out.errors.is_empty() && new_out.errors.is_empty());
    assert_eq!(old_out.signals, new_out.signals);
    assert_eq!(old_out.fills, new_out.fills);
    assert_eq!(old_out.trades, new_out.trades);
    (old_calls, new_calls, old_out.steps)
}

#[test]
fn a_component_built_for_contract_0_1_0_still_loads_and_trades_the_same() {
    let (old_calls, new_calls, steps) =
        trades_like_the_current_build("sma-cross-keel-0.1.0.wasm", "0.1.0");
    // One call per bar for the old contract; batches for the new one.
    assert_eq!(old_calls as usize, steps);
    assert!(
        new_calls * 5 < old_calls,
        "{new_calls} batched calls against {old_calls}"
    );
}

#[test]
fn a_component_built_for_contract_0_2_0_still_loads_and_trades_the_same() {
    let (old_calls, new_calls, _) =
        trades_like_the_current_build("sma-cross-keel-0.2.0.wasm", "0.2.0");
    // Both batch; 0.3.0 and later hand fills over with the next batch
    // instead of in calls of their own (which `calls` does not count), so
    // the batches match.
    assert_eq!(old_calls, new_calls);
}

#[test]
fn a_component_built_for_contract_0_3_0_still_loads_and_trades_the_same() {
    let (old_calls, new_calls, _) =
        trades_like_the_current_build("sma-cross-keel-0.3.0.wasm", "0.3.0");
    assert_eq!(old_calls, new_calls);
}

/// What each hostile fixture's first bad call must end with.
fn expect_fault(name: &str, fault: &Fault) {
    let ok = match name {
        "loop" => matches!(fault, Fault::Deadline(d) if *d == Duration::from_millis(50)),
        "memory-bomb" | "signal-flood" => {
            matches!(fault, Fault::Memory(limit) if *limit == 64 << 20)
        }
        "recursion" => matches!(fault, Fault::Stack(_)),
        "panic" => {
            *fault == Fault::Panic("fixture panic: index 7 is out of range for 3 entries".into())
        }
        _ => false,
    };
    assert!(ok, "{name}: unexpected fault {fault:?}");
}

#[test]
fn hostile_fixtures_are_stopped_while_a_good_strategy_keeps_identical_results() {
    let sandbox = sandbox(Metering::WallClock);
    let data = vec![synthetic("TEST/USD", 11, 1500)];
    let baseline = run_example(&sandbox, "sma-cross", &data, &[]);
    assert!(!baseline.signals.is_empty());
    let deadline = sandbox.limits().call_deadline;

    for name in ["loop", "memory-bomb", "recursion", "panic", "signal-flood"] {
        let mut instance = fixture_instance(&sandbox, name);
        let started = Instant::now();
        let error = (0..10)
            .find_map(|i| instance.on_bar(&tick_of(&data[0], i)).err())
            .unwrap_or_else(|| panic!("{name} was never stopped"));
        let took = started.elapsed();
        expect_fault(name, &error.fault);
        assert!(
            error
                .to_string()
                .starts_with(&format!("strategy fixture-{name}@")),
            "{error}"
        );
        // Stopped within its limit: the deadline plus scheduling slack, never unbounded.
        assert!(took < deadline * 20, "{name} took {took:?}");
        assert_eq!(instance.stats().traps, 1, "{name}");
        assert_eq!(
            instance.stats().rebuilds,
            1,
            "{name}: rebuilt from the cached InstancePre"
        );

        let again = run_example(&sandbox, "sma-cross", &data, &[]);
        assert_eq!(again.signals, baseline.signals, "after {name}");
        assert_eq!(again.fills, baseline.fills, "after {name}");
    }
}

#[test]
fn fuel_bounds_a_runaway_call_deterministically() {
    let sandbox = sandbox(Metering::Fuel);
    let mut instance = fixture_instance(&sandbox, "loop");
    let data = synthetic("TEST/USD", 1, 5);
    let err = instance
        .on_bar(&tick_of(&data, 0))
        .expect_err("out of fuel");
    assert_eq!(err.fault, Fault::Fuel(sandbox.limits().fuel_per_call));
    assert!(
        err.to_string()
            .ends_with("used up its fuel (50000000 per call)"),
        "{err}"
    );
}

#[test]
fn under_fuel_the_clock_never_decides_whether_a_call_fails() {
    // A wall-clock deadline far shorter than the fuel takes to burn: with
    // fuel metering only fuel may stop the loop, every time, or the same
    // backtest could fail on a busy machine and pass on an idle one.
    let limits = SandboxLimits {
        call_deadline: Duration::from_nanos(1),
        fuel_per_call: 200_000_000,
        ..SandboxLimits::default()
    };
    let sandbox = sandbox_with(Metering::Fuel, limits);
    let mut instance = fixture_instance(&sandbox, "loop");
    let data = synthetic("TEST/USD", 1, 5);
    for i in 0..2 {
        let err = instance.on_bar(&tick_of(&data, i)).expect_err("runaway");
        assert_eq!(err.fault, Fault::Fuel(200_000_000), "call {i}: {err}");
    }
    // And a real strategy's results do not depend on the deadline either.
    let series = vec![synthetic("TEST/USD", 11, 1500)];
    let tight = run_example(&sandbox, "sma-cross", &series, &[]);
    let default = run_example(&self::sandbox(Metering::Fuel), "sma-cross", &series, &[]);
    assert!(tight.errors.is_empty(), "{:?}", tight.errors);
    assert!(!tight.signals.is_empty());
    assert_eq!(tight.signals, default.signals);
}

#[test]
fn output_beyond_the_byte_cap_fails_before_the_host_copies_it() {
    // With room to build a million signals in its memory, the flood is cut
    // off by the host-side byte cap on what a call may hand over.
    let limits = SandboxLimits {
        max_memory_bytes: 1 << 30,
        call_deadline: Duration::from_secs(20),
        ..SandboxLimits::default()
    };
    let sandbox = sandbox_with(Metering::WallClock, limits);
    let mut instance = fixture_instance(&sandbox, "signal-flood");
    let err = instance
        .on_bar(&tick_of(&synthetic("TEST/USD", 1, 2), 0))
        .expect_err("flood");
    assert_eq!(err.fault, Fault::OutputTooLarge(1 << 20));
}

#[test]
fn too_many_signals_fail_the_call() {
    let limits = SandboxLimits {
        max_signals_per_call: 1,
        ..SandboxLimits::default()
    };
    let sandbox = sandbox_with(Metering::Fuel, limits);
    let pairs: Vec<Series> = ["ETH", "LTC", "XMR"]
        .iter()
        .map(|p| series(&format!("{p}/BTC"), &format!("crypto-5m/{p}_BTC-5m.csv")))
        .collect();
    let loaded = sandbox.load_file(example("atr-breakout")).expect("loads");
    let mut instance = sandbox
        .instantiate(
            &loaded,
            binding(
                &loaded,
                &["ETH/BTC", "LTC/BTC", "XMR/BTC"],
                &["channel=2", "exit_channel=2", "atr_period=2"],
                1,
            ),
        )
        .expect("instance");
    let out = backtest(&mut instance, &pairs, &default_config());
    let (_, first) = out
        .errors
        .first()
        .expect("some bar had two or more signals");
    assert!(first.contains("more than the 1 allowed per bar"), "{first}");
}

#[test]
fn a_strategy_that_keeps_failing_is_quarantined() {
    let sandbox = sandbox(Metering::WallClock);
    let mut instance = fixture_instance(&sandbox, "loop");
    let data = synthetic("TEST/USD", 1, 10);
    for i in 0..3 {
        let err = instance.on_bar(&tick_of(&data, i)).expect_err("deadline");
        assert!(matches!(err.fault, Fault::Deadline(_)), "{err}");
    }
    assert!(instance.is_quarantined());
    let err = instance
        .on_bar(&tick_of(&data, 3))
        .expect_err("quarantined");
    assert!(matches!(err.fault, Fault::Quarantined(_)), "{err}");
    assert!(
        err.to_string()
            .contains("is quarantined after repeated failures"),
        "{err}"
    );
    assert_eq!(
        instance.stats().traps,
        3,
        "a quarantined instance is not called again"
    );
}

#[test]
fn a_trapped_instance_is_rebuilt_and_carries_on() {
    let sandbox = sandbox(Metering::WallClock);
    let mut instance = fixture_instance(&sandbox, "panic");
    let data = synthetic("TEST/USD", 1, 12);
    let failed: Vec<usize> = (0..12)
        .filter(|&i| instance.on_bar(&tick_of(&data, i)).is_err())
        .collect();
    // It panics on its 5th bar; the rebuilt instance starts counting afresh.
    assert_eq!(failed, vec![4, 9]);
    assert_eq!(instance.stats().rebuilds, 2);
    assert!(!instance.is_quarantined());
}

#[test]
fn log_output_is_capped_per_call() {
    let sandbox = sandbox(Metering::WallClock);
    let mut instance = fixture_instance(&sandbox, "log-flood");
    let data = synthetic("TEST/USD", 1, 3);
    for i in 0..3 {
        assert_eq!(
            instance.on_bar(&tick_of(&data, i)),
            Ok(vec![]),
            "a log flood is not a fault"
        );
    }
    let logs = instance.take_logs();
    let kept: usize = logs.iter().map(|(_, l)| l.len()).sum();
    assert_eq!(kept, 3 * 16 * 1024, "16 KiB kept per call");
    assert_eq!(
        instance.stats().log_bytes_dropped,
        3 * (1024 * 1024 - 16 * 1024)
    );
}

#[test]
fn clock_and_randomness_are_the_hosts() {
    let sandbox = sandbox(Metering::Fuel);
    let loaded = sandbox.load_file(fixture("clock-random")).expect("loads");
    let data = synthetic("TEST/USD", 1, 64);
    let run = |seed| {
        let mut instance = sandbox
            .instantiate(&loaded, binding(&loaded, &["TEST/USD"], &[], seed))
            .expect("instance");
        (0..64)
            .map(|i| {
                let tick = tick_of(&data, i);
                let signals = instance.on_bar(&tick).expect("runs");
                // The wall clock reads the simulated close time, not the machine's.
                assert!(
                    signals[0]
                        .reason
                        .starts_with(&format!("clock={} ", tick.time_ms)),
                    "{}",
                    signals[0].reason
                );
                signals[0].clone()
            })
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same randomness");
    assert_ne!(a, run(8), "the seed is the only source of randomness");
    let report = validate::validate_file(&sandbox, fixture("clock-random"));
    assert!(!report.passed());
    assert!(
        report.failures()[0].contains("depends on randomness"),
        "{:?}",
        report.failures()
    );
}

#[test]
fn signals_for_unbound_symbols_are_rejected_with_a_reason() {
    let sandbox = sandbox(Metering::Fuel);
    let loaded = sandbox.load_file(fixture("foreign-symbol")).expect("loads");
    let mut instance = sandbox
        .instantiate(&loaded, binding(&loaded, &["BTC/USD"], &[], 1))
        .expect("instance");
    let btc = series("BTC/USD", "UNITTEST_BTC-1m.csv");
    let out = backtest(&mut instance, std::slice::from_ref(&btc), &default_config());
    let rejected = out.rejected;
    // One signal every tenth bar, each refused.
    assert_eq!(rejected.len(), out.steps / 10);
    assert_eq!(out.signal_count, rejected.len());
    assert!(rejected.iter().all(|r| r.by == RejectedBy::Sandbox));
    assert_eq!(
        rejected[0].reason,
        "unknown symbol \"NOT/BOUND\" (bound: BTC/USD)"
    );
    assert_eq!(rejected[0].time_ms, btc.candles[9].time_ms + btc.bar_ms);
    assert_eq!(instance.stats().signals_rejected, rejected.len() as u64);
}

#[test]
fn each_fill_reaches_the_strategy_once_in_order_and_whole() {
    let sandbox = sandbox(Metering::Fuel);
    let mut instance = fixture_instance(&sandbox, "fill-echo");
    let out = backtest(
        &mut instance,
        &[synthetic("TEST/USD", 11, 3_000)],
        &default_config(),
    );
    // The strategy logs each fill it is told of, as the host made it.
    let told: Vec<String> = instance
        .take_logs()
        .into_iter()
        .filter_map(|(_, line)| line.strip_prefix("fill ").map(str::to_owned))
        .collect();
    let made: Vec<String> = out
        .fills
        .iter()
        .map(|f| {
            format!(
                "{}|{}|{:?}|{}|{}|{}|{}",
                f.symbol, f.tag, f.action, f.price, f.quantity, f.fee, f.time_ms
            )
        })
        .collect();
    assert!(made.len() > 900, "only {} fills", made.len());
    assert!(
        told.len() <= made.len(),
        "told {} of {}",
        told.len(),
        made.len()
    );
    assert_eq!(told, made[..told.len()]);
    // Fills travel with the next batch: only those of the last bar may not
    // have gone yet.
    let last = out.fills.last().map(|f| f.time_ms);
    assert!(
        out.fills[told.len()..]
            .iter()
            .all(|f| Some(f.time_ms) == last),
        "told {} of {}",
        told.len(),
        made.len()
    );
    // Tags of every length went across, into buffers of earlier fills too.
    for tag in ["", "b", "a-much-longer-tag-than-the-others"] {
        assert!(
            out.fills.iter().any(|f| f.tag == tag),
            "no fill tagged {tag:?}"
        );
    }
}

#[test]
fn a_strategy_sees_only_the_bars_of_the_symbols_it_is_bound_to() {
    let sandbox = sandbox(Metering::Fuel);
    let loaded = sandbox.load_file(example("sma-cross")).expect("loads");
    // Bound to another symbol than the data's: it sees nothing, so it does nothing.
    let mut instance = sandbox
        .instantiate(
            &loaded,
            binding(&loaded, &["ETH/USD"], &["fast=5", "slow=20"], 1),
        )
        .expect("instance");
    let out = backtest(
        &mut instance,
        &[series("BTC/USD", "UNITTEST_BTC-1m.csv")],
        &default_config(),
    );
    assert!(out.steps > 1000);
    assert!(out.signals.is_empty() && out.errors.is_empty());
    assert!(out.rejected.is_empty());
}

#[test]
fn bad_artifacts_are_refused_at_load_with_a_reason() {
    let sandbox = sandbox(Metering::Fuel);
    let foreign = sandbox
        .load_file(fixture("foreign-import"))
        .expect_err("foreign import");
    assert!(
        matches!(foreign, LoadError::ForbiddenImport { ref import, .. } if import == "hostile:fixture/exfiltrate"),
        "{foreign}"
    );

    let garbage = StrategyArtifact::from_bytes(vec![0x42; 4096], "garbage.wasm");
    let err = sandbox.load(&garbage).expect_err("garbage");
    assert_eq!(
        err.to_string(),
        "garbage.wasm: not a valid WebAssembly component: missing the \\0asm header"
    );

    let core = StrategyArtifact::from_bytes(b"\0asm\x01\0\0\0".to_vec(), "core.wasm");
    let err = sandbox.load(&core).expect_err("core module");
    assert!(
        err.to_string()
            .contains("it is a core wasm module; build for wasm32-wasip2"),
        "{err}"
    );

    let mut truncated = std::fs::read(example("sma-cross")).expect("read");
    truncated.truncate(truncated.len() / 2);
    let err = sandbox
        .load(&StrategyArtifact::from_bytes(truncated, "half.wasm"))
        .expect_err("truncated");
    assert!(
        err.to_string()
            .starts_with("half.wasm: not a valid WebAssembly component: "),
        "{err}"
    );

    let small = sandbox_with(
        Metering::Fuel,
        SandboxLimits {
            max_wasm_bytes: 1024,
            ..SandboxLimits::default()
        },
    );
    let err = small
        .load_file(example("sma-cross"))
        .expect_err("too large");
    assert!(
        err.to_string()
            .ends_with("bytes is over the 1024-byte limit for a strategy"),
        "{err}"
    );

    let slow = sandbox_with(
        Metering::Fuel,
        SandboxLimits {
            max_compile_time: Duration::from_nanos(1),
            ..SandboxLimits::default()
        },
    );
    let err = slow
        .load_file(example("sma-cross"))
        .expect_err("compile cap");
    assert!(
        err.to_string().contains("compiling took longer than"),
        "{err}"
    );
}

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
