//! Embedding the Keel host: load a strategy component, check it, bind it to a
//! symbol and drive it over a candle file, reading its signals and faults.
//!
//!     cargo run -p keel-host --example embed -- target/wasm32-wasip2/release/sma_cross.wasm \
//!         ../shared/data/UNITTEST_BTC-1m.csv BTC/USD
//!
//! (Build the component first: `cargo run -p keel-host -- strategy build strategies/sma-cross`.)

use std::path::PathBuf;

use anyhow::Context;
use keel_host::sandbox::{Binding, Metering, Sandbox, SandboxConfig, SandboxLimits};
use keel_model::{Bar, Params, Portfolio, RiskLimits, Tick, candles};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(wasm), Some(csv)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: embed <strategy.wasm> <candles.csv> [SYMBOL]");
    };
    let symbol = args.next().unwrap_or_else(|| "BTC/USD".to_owned());

    // One sandbox per process; its limits apply to every instance it starts.
    let sandbox = Sandbox::new(SandboxConfig {
        limits: SandboxLimits::default(),
        metering: Metering::WallClock,
        cache_dir: Some(std::env::temp_dir().join("keel-embed-cache")),
        // Optimised code from the start: this example runs a whole file
        // (so no background compiles, and no worker binary for them).
        baseline_first: false,
        ..SandboxConfig::default()
    })?;
    let loaded = sandbox.load_file(&PathBuf::from(&wasm))?;
    println!(
        "loaded {} {} ({})",
        loaded.info.name,
        loaded.info.version,
        loaded.hash.short()
    );

    let params = Params::resolve(&loaded.info.params, &[])?;
    let binding = Binding {
        symbols: vec![symbol.clone()],
        params,
        simulated_clock: true,
        seed: 1,
    };
    let mut strategy = sandbox.instantiate(&loaded, binding)?;

    let candles = candles::read_csv(&PathBuf::from(&csv))?;
    let bar_ms = candles::typical_spacing_ms(&candles).context("need at least two candles")?;
    let mut signals = 0;
    let shared = keel_model::Symbol::from(symbol.as_str());
    for candle in &candles {
        let tick = Tick {
            time_ms: candle.time_ms + bar_ms,
            bars: vec![Bar::from_candle(&shared, candle)],
            portfolio: Portfolio {
                cash: 10_000.0,
                equity: 10_000.0,
                positions: vec![],
            },
            limits: RiskLimits::default(),
        };
        // A fault is data about the strategy: print it and carry on.
        match strategy.on_bar(&tick) {
            Ok(batch) => signals += batch.len(),
            Err(fault) => eprintln!("{fault}"),
        }
    }
    println!(
        "{} bars, {signals} signals, stats {:?}",
        candles.len(),
        strategy.stats()
    );
    Ok(())
}
