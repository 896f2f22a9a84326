//! Reload latency and the cost of many strategies side by side.
//!
//!     cargo bench -p keel-host --bench reload
//!
//! 1. Reload: a new version of a component is written over the watched
//!    file; timed from just before the write to the new version having
//!    handled its first bar: the file-watch event, reading the file, loading
//!    it (a cold compile, or from the compile cache), instantiating, warming
//!    up on the last bars, and the first call.
//! 2. Per bar, N strategies side by side: N sma-cross instances each handed
//!    the same bar (sandbox only), and a whole paper run with N books (every
//!    bar booked in SQLite with synchronous=FULL).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher;

use keel_host::build_strategy;
use keel_host::paper::feed::Feed;
use keel_host::paper::{PaperEngine, PaperSettings, StrategySpec};
use keel_host::sandbox::{Binding, Metering, Sandbox, SandboxConfig};
use keel_model::batch::{BarColumns, Batch};
use keel_model::{Params, Portfolio, RiskLimits, Symbol, synth};

fn components() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["sma-cross", "rsi-reversion", "atr-breakout"]
        .iter()
        .map(|name| {
            build_strategy::build(
                &repo.join("strategies").join(name),
                Some(&repo.join("target/keel-wasm")),
            )
            .expect("build")[0]
                .clone()
        })
        .collect()
}

fn sandbox(cache: Option<PathBuf>) -> Sandbox {
    Sandbox::new(SandboxConfig {
        metering: Metering::WallClock,
        cache_dir: cache,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Writes `bytes` to `file` and times until the new version handled a bar.
fn reload_once(
    sandbox: &Sandbox,
    file: &Path,
    bytes: &[u8],
    history: &[keel_model::Candle],
) -> f64 {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).expect("watcher");
    watcher
        .watch(
            file.parent().expect("dir"),
            notify::RecursiveMode::NonRecursive,
        )
        .expect("watch");
    let started = Instant::now();
    std::fs::write(file, bytes).expect("write");
    loop {
        match rx.recv_timeout(Duration::from_secs(5)).expect("event") {
            Ok(e)
                if e.paths
                    .iter()
                    .any(|p| p.ends_with(file.file_name().expect("name")))
                    && matches!(
                        e.kind,
                        notify::EventKind::Modify(_) | notify::EventKind::Create(_)
                    ) =>
            {
                break;
            }
            _ => continue,
        }
    }
    let loaded = sandbox.load_file(file).expect("load");
    let binding = Binding {
        symbols: loaded.info.symbols.clone(),
        params: Params::resolve(&loaded.info.params, &[]).expect("params"),
        simulated_clock: true,
        seed: 1,
    };
    let mut instance = sandbox.instantiate(&loaded, binding).expect("instance");
    let symbols: Vec<Symbol> = loaded
        .info
        .symbols
        .iter()
        .map(|s| Symbol::from(s.as_str()))
        .collect();
    let portfolio = Portfolio {
        cash: 10_000.0,
        equity: 10_000.0,
        positions: vec![],
    };
    let warmup = loaded.info.warmup_bars as usize;
    // Warm-up bars, then the first live one.
    for candle in &history[history.len() - warmup - 1..] {
        let mut columns = BarColumns::default();
        columns.push(0, candle);
        let batch = Batch {
            symbols: &symbols,
            tick_times: &[candle.time_ms + 60_000],
            tick_bars: &[1],
            bars: columns.slice(0, 1),
            portfolio: &portfolio,
            limits: RiskLimits::default(),
        };
        instance.on_bars(&batch).expect("bar");
    }
    started.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let files = components();
    let history = synth::random_walk(3, 400, 1_700_000_000_000, 60_000, 100.0, 0.004);
    let dir = tempfile::tempdir().expect("tempdir");
    let watched = dir.path().join("strategy.wasm");
    std::fs::write(&watched, b"").expect("write");

    println!("reload: file change -> new version handled its first bar");
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        let name = file.file_stem().expect("name").to_string_lossy();
        let mut cold = Vec::new();
        let mut cached = Vec::new();
        for i in 0..7 {
            // Cold: a fresh sandbox and an empty compile cache.
            let cache = dir.path().join(format!("cache-{name}-{i}"));
            let fresh = sandbox(Some(cache.clone()));
            cold.push(reload_once(&fresh, &watched, &bytes, &history));
            // From the compile cache on disk (a new sandbox: nothing in memory).
            let warm = sandbox(Some(cache));
            cached.push(reload_once(&warm, &watched, &bytes, &history));
        }
        println!(
            "  {name:<14} {:>7} KB   cold compile {:>7.1} ms (target <= 100)   from cache {:>6.2} ms (target <= 10)",
            bytes.len() / 1024,
            median(cold),
            median(cached)
        );
    }

    println!("per bar, N strategies side by side (sma-cross)");
    let sma = &files[0];
    for n in [1usize, 10, 50] {
        // Sandbox only: N instances, one bar each.
        let sb = sandbox(None);
        let loaded = sb.load_file(sma).expect("load");
        let mut instances: Vec<_> = (0..n)
            .map(|i| {
                let binding = Binding {
                    symbols: vec!["BTC/USD".into()],
                    params: Params::resolve(&loaded.info.params, &[]).expect("params"),
                    simulated_clock: true,
                    seed: i as u64,
                };
                sb.instantiate(&loaded, binding).expect("instance")
            })
            .collect();
        let symbols = [Symbol::from("BTC/USD")];
        let portfolio = Portfolio {
            cash: 10_000.0,
            equity: 10_000.0,
            positions: vec![],
        };
        let bars = synth::random_walk(5, 2000, 1_700_000_000_000, 60_000, 100.0, 0.004);
        let started = Instant::now();
        for candle in &bars {
            let mut columns = BarColumns::default();
            columns.push(0, candle);
            let batch = Batch {
                symbols: &symbols,
                tick_times: &[candle.time_ms + 60_000],
                tick_bars: &[1],
                bars: columns.slice(0, 1),
                portfolio: &portfolio,
                limits: RiskLimits::default(),
            };
            for instance in &mut instances {
                instance.on_bars(&batch).expect("bar");
            }
        }
        let sandbox_us = started.elapsed().as_secs_f64() * 1e6 / bars.len() as f64;

        // A whole paper run with N books.
        let db = dir.path().join(format!("paper-{n}.db"));
        let mut store = keel_host::store::Store::open(&db).expect("db");
        let settings = PaperSettings {
            feed_name: "sample:500".into(),
            symbol: "BTC/USD".into(),
            speed: None,
            cash: 10_000.0,
            risk: Default::default(),
            fills: Default::default(),
            strategies: (0..n)
                .map(|i| {
                    let mut spec = StrategySpec::file(sma.clone(), vec![]);
                    spec.slot = Some(format!("s{i}"));
                    spec
                })
                .collect(),
            max_bars: None,
            candidates: Default::default(),
        };
        let sb = sandbox(None);
        let mut engine = PaperEngine::open(store.conn(), &sb, settings, None).expect("engine");
        let mut feed = Feed::sample(7, 500);
        let started = Instant::now();
        let summary = engine.run(&mut feed).expect("run");
        let paper_ms = started.elapsed().as_secs_f64() * 1e3 / summary.bars as f64;
        println!(
            "  N = {n:>2}   sandbox {sandbox_us:>8.1} µs/bar ({:.2} µs per strategy)   paper engine {paper_ms:>7.2} ms/bar",
            sandbox_us / n as f64
        );
    }
}
