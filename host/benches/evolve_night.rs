//! The nightly evolution's cost: one offline night on a year of one-minute
//! bars (525,600) of one symbol — the 50-mutation grid, then one candidate
//! through the whole cascade up to submission (build from source included)
//! — timed stage by stage from the night's own record.
//!
//!     cargo bench -p keel-host --bench evolve_night             # 525,600 bars, 50 mutations
//!     cargo bench -p keel-host --bench evolve_night -- 100000 20
//!
//! Targets on the 2-core machine: the cascade without the build <= 2 s;
//! the offline night of 50 mutations <= 2 minutes.

use std::path::Path;
use std::time::Instant;

use keel_host::build_strategy;
use keel_host::candidates;
use keel_host::evolve::config::EvolveConfig;
use keel_host::evolve::night::{self, NightSettings};
use keel_host::evolve::record;
use keel_host::sandbox::{Metering, Sandbox, SandboxConfig, StrategyArtifact};
use keel_host::store::Store;
use keel_model::synth;

/// The `keel` binary's allocator, so figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let bars: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(525_600);
    let mutations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = repo.join("target/keel-wasm");
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("btc-1m.csv");
    let candles = synth::random_walk(42, bars, 1_704_067_200_000, 60_000, 40_000.0, 0.0008);
    keel_model::candles::write_csv(&csv, &candles)?;
    std::fs::write(
        dir.path().join("evolve.toml"),
        format!(
            "data = [\"BTC/USD={}\"]\nmutations = {mutations}\n[gates]\nmin_dsr = 0\nmax_pbo = 1\nmin_holdout_sharpe = -1000000\nmin_return_pct = -100\nmin_fold_return_pct = -100\nmin_stress_return_pct = -100\n",
            csv.display()
        ),
    )?;
    let config = EvolveConfig::load(&dir.path().join("evolve.toml"))?;
    let mut candidates_config = keel_candidates::CandidatesConfig::default();
    candidates_config.backtest.data = vec![format!("BTC/USD={}", csv.display())];
    candidates_config.backtest.min_trades = 0;
    candidates_config.backtest.min_sharpe = -1e6;
    candidates_config.backtest.max_drawdown_pct = 100.0;
    candidates_config.backtest.min_profit_factor = 0.0;

    let db = dir.path().join("keel.db");
    let mut store = Store::open(&db)?;
    let sandbox = Sandbox::new(SandboxConfig {
        metering: Metering::Fuel,
        ..SandboxConfig::default()
    })?;
    // The active strategy: the repo's sma-cross, as a first run records it.
    let sma = build_strategy::build(&repo.join("strategies/sma-cross"), Some(&target))?;
    candidates::record_initial(store.conn(), &StrategyArtifact::read(&sma[0], usize::MAX)?)?;

    let settings = NightSettings {
        config,
        candidates: candidates_config,
        db: db.clone(),
        sdk: repo.join("strategy-sdk").canonicalize()?,
        target_dir: target,
    };
    let started = Instant::now();
    let outcome = night::run(store.conn(), &sandbox, &settings)?;
    let total = started.elapsed();
    let steps = record::steps(store.conn(), outcome.night)?;
    println!("offline night on {bars} one-minute bars, {mutations} mutations");
    println!("{:<18} {:>10}", "step", "ms");
    // Every gate after the build, validation included.
    let cascade = [
        "validate",
        "lookahead",
        "diversity",
        "backtest",
        "walk-forward",
        "stress",
        "deflated-sharpe",
        "pbo",
        "holdout",
        "submit",
    ];
    let mut cascade_ms = 0;
    for s in &steps {
        println!(
            "{:<18} {:>10} {}",
            s.kind,
            s.duration_ms,
            if s.ok { "" } else { "(stopped)" }
        );
        if cascade.contains(&s.kind.as_str()) {
            cascade_ms += s.duration_ms;
        }
    }
    let attempt = outcome.attempts.first();
    println!(
        "cascade after the build (validate to submit): {cascade_ms} ms; reached {}",
        attempt.map_or("nothing", |a| a.reached.as_str())
    );
    println!("whole night: {:.1} s", total.as_secs_f64());
    Ok(())
}
