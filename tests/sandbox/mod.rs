//! The sandbox end to end, with real components built from this repo.

use std::time::{Duration, Instant};

use keel_backtester::engine::RejectedBy;
use keel_backtester::{BacktestResult, run as backtest};
use keel_host::sandbox::{
    CONTRACT_VERSIONS, Fault, LoadError, Metering, Sandbox, SandboxLimits, StrategyArtifact,
    StrategyInstance,
};
use keel_host::validate;
use keel_model::replay::Series;
use keel_model::{Bar, Portfolio, RiskLimits, Tick};
use keel_strategy_sdk::harness::{Harness, build, default_config};

use crate::support::{self, binding, example, fixture, sandbox, sandbox_with, series, synthetic};

mod compile;

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
    for name in ["sma-cross", "rsi-reversion", "atr-breakout", "blocks"] {
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
