//! Sandbox costs: one `on-bar` call for a one-symbol tick (target: under 2 µs
//! median), instantiation from the cached `InstancePre` (including `init`),
//! loading from the disk compile cache (read, deserialize, import/export
//! checks, `describe`), and a cold compile.
//!
//!     cargo bench -p keel-host --bench runtime
//!
//! The sma-cross component is built from this repo first (target/keel-wasm).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};

use keel_host::build_strategy;
use keel_host::sandbox::{Binding, Metering, Sandbox, SandboxConfig, SandboxLimits};
use keel_model::{Bar, Params, Portfolio, RiskLimits, Tick, synth};

/// The `keel` binary's allocator, so figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn component() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = build_strategy::build(
        &repo.join("strategies/sma-cross"),
        Some(&repo.join("target/keel-wasm")),
    )
    .expect("build sma-cross");
    files[0].clone()
}

fn ticks(count: usize) -> Vec<Tick> {
    let btc = keel_model::Symbol::from("BTC/USD");
    synth::random_walk(42, count, 1_700_000_000_000, 60_000, 100.0, 0.01)
        .into_iter()
        .map(|c| Tick {
            time_ms: c.time_ms + 60_000,
            bars: vec![Bar::from_candle(&btc, &c)],
            portfolio: Portfolio {
                cash: 10_000.0,
                equity: 10_000.0,
                positions: vec![],
            },
            limits: RiskLimits::default(),
        })
        .collect()
}

fn sandbox(metering: Metering, cache_dir: Option<PathBuf>) -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits: SandboxLimits::default(),
        metering,
        cache_dir,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn binding(params: &keel_model::StrategyInfo) -> Binding {
    Binding {
        symbols: vec!["BTC/USD".into()],
        params: Params::resolve(&params.params, &[]).expect("defaults"),
        simulated_clock: true,
        seed: 1,
    }
}

fn on_bar(c: &mut Criterion) {
    let file = component();
    let ticks = ticks(4096);
    for (name, metering) in [
        ("on_bar/one-symbol/epoch", Metering::WallClock),
        ("on_bar/one-symbol/fuel", Metering::Fuel),
    ] {
        let sandbox = sandbox(metering, None);
        let loaded = sandbox.load_file(&file).expect("load");
        let mut instance = sandbox
            .instantiate(&loaded, binding(&loaded.info))
            .expect("instance");
        let mut i = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                let tick = &ticks[i % ticks.len()];
                i += 1;
                black_box(instance.on_bar(black_box(tick)).expect("on_bar"))
            })
        });
    }
}

fn instantiate(c: &mut Criterion) {
    let file = component();
    let cache = tempfile::tempdir().expect("tempdir");
    let sandbox = sandbox(Metering::WallClock, Some(cache.path().to_owned()));
    let loaded = sandbox.load_file(&file).expect("load");
    c.bench_function("instantiate/from-instance-pre", |b| {
        b.iter(|| {
            black_box(
                sandbox
                    .instantiate(&loaded, binding(&loaded.info))
                    .expect("instance"),
            )
        })
    });
    c.bench_function("load/from-disk-cache", |b| {
        b.iter(|| {
            sandbox.forget_compiled();
            let loaded = sandbox.load_file(&file).expect("load");
            assert!(loaded.from_cache);
            black_box(loaded)
        })
    });
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    let uncached = self::sandbox(Metering::WallClock, None);
    group.bench_function("cold-compile", |b| {
        b.iter(|| {
            uncached.forget_compiled();
            black_box(uncached.load_file(&file).expect("load"))
        })
    });
    group.finish();
}

criterion_group!(benches, on_bar, instantiate);
criterion_main!(benches);
