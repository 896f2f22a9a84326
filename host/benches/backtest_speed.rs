//! Backtest throughput: sma-cross as a wasm component vs the same crate
//! compiled natively, through the same engine, on generated bars.
//!
//!     cargo bench -p keel-host --bench backtest_speed            # 5M bars
//!     cargo bench -p keel-host --bench backtest_speed -- 10000000
//!     cargo bench -p keel-host --bench backtest_speed -- 5000000 --rounds 5
//!
//! With `--rounds N` every mode runs N times, in turn, and the ratio is taken
//! between the fastest runs: the machine's speed drifts between minutes, and
//! alternating runs sees each mode at its best.
//!
//! The bars are generated while the engine consumes them (as a file or the
//! store would stream them). Each mode runs in its own child process so its
//! peak memory (VmHWM) is its own. Targets on the 2-core machine: >= 2M bars/s for wasm, wasm/native
//! time <= 1.5, peak memory <= 200 MB for 10M bars.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use keel_backtester::BacktestConfig;
use keel_backtester::engine::run_feeds;
use keel_host::build_strategy;
use keel_host::sandbox::{Binding, Metering, Sandbox, SandboxConfig};
use keel_model::replay::Feed;
use keel_model::{Params, synth};
use keel_strategy_sdk::harness::{Native, build};

/// The `keel` binary's allocator, so figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The bars are generated as the engine consumes them: nothing holds them.
fn feed(bars: usize) -> Vec<Feed<'static>> {
    vec![Feed::gathered(
        "SYN/USD".into(),
        60_000,
        synth::random_walk_iter(7, bars, 1_600_000_000_000, 60_000, 100.0, 0.002),
    )]
}

fn child(mode: &str, bars: usize) {
    // No fees or slippage: equity is not drained, so the strategy keeps
    // trading (and the risk checks keep running) over every bar. Signals and
    // fills are counted, not kept, as in `keel backtest`.
    let config = BacktestConfig {
        record_signals: false,
        record_fills: false,
        fills: keel_backtester::fills::FillModel {
            fee_bps: 0.0,
            slippage_bps: 0.0,
            ..Default::default()
        },
        ..BacktestConfig::default()
    };
    let started = Instant::now();
    let result = match mode {
        "native" => {
            let strategy: sma_cross::SmaCross = build(&[]).expect("defaults");
            run_feeds(&mut Native(strategy), feed(bars), &config)
        }
        _ => {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let file = build_strategy::build(
                &repo.join("strategies/sma-cross"),
                Some(&repo.join("target/keel-wasm")),
            )
            .expect("build")[0]
                .clone();
            let metering = if mode == "wasm-epoch" {
                Metering::WallClock
            } else {
                Metering::Fuel
            };
            let sandbox = Sandbox::new(SandboxConfig {
                metering,
                ..SandboxConfig::default()
            })
            .expect("sandbox");
            let loaded = sandbox.load_file(&file).expect("load");
            let binding = Binding {
                symbols: vec!["SYN/USD".into()],
                params: Params::resolve(&loaded.info.params, &[]).expect("params"),
                simulated_clock: true,
                seed: 1,
            };
            let mut instance = sandbox.instantiate(&loaded, binding).expect("instance");
            let started_run = Instant::now();
            let result = run_feeds(&mut instance, feed(bars), &config);
            let secs = started_run.elapsed().as_secs_f64();
            println!(
                "{mode} {bars} {secs} {} {}",
                peak_rss_mb(),
                result.trades.len()
            );
            return;
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{mode} {bars} {secs} {} {}",
        peak_rss_mb(),
        result.trades.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [mode, bars] = args.as_slice()
        && mode.starts_with("--child=")
    {
        child(
            mode.trim_start_matches("--child="),
            bars.parse().expect("bars"),
        );
        return;
    }
    // `[BARS] [--rounds N]`: each round runs every mode once, in turn.
    let (mut bars, mut rounds) = (5_000_000usize, 1usize);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--rounds" {
            rounds = rest
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--rounds N");
        } else if let Ok(n) = arg.parse() {
            bars = n;
        }
    }
    let me = std::env::current_exe().expect("exe");
    let modes = ["native", "wasm-fuel", "wasm-epoch"];
    let mut fastest = std::collections::BTreeMap::new();
    println!(
        "{:<12} {:>5} {:>12} {:>10} {:>14} {:>12} {:>8}",
        "mode", "round", "bars", "seconds", "bars/s", "peak MB", "trades"
    );
    for round in 1..=rounds {
        for mode in modes {
            let out = Command::new(&me)
                .arg(format!("--child={mode}"))
                .arg(bars.to_string())
                .output()
                .expect("child");
            let line = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, _, secs, mb, trades] = fields.as_slice() else {
                panic!("{mode}: {line} {}", String::from_utf8_lossy(&out.stderr));
            };
            let secs: f64 = secs.parse().expect("secs");
            let best = fastest.entry(mode).or_insert(f64::INFINITY);
            *best = best.min(secs);
            println!(
                "{mode:<12} {round:>5} {bars:>12} {secs:>10.2} {:>14.0} {mb:>12} {trades:>8}",
                bars as f64 / secs
            );
        }
    }
    if rounds > 1 {
        for mode in modes {
            println!(
                "{mode:<12} fastest of {rounds}: {:.3} s, {:.0} bars/s",
                fastest[mode],
                bars as f64 / fastest[mode]
            );
        }
    }
    println!(
        "ratio wasm/native time{}: fuel {:.2}, epoch {:.2}",
        if rounds > 1 { " (fastest runs)" } else { "" },
        fastest["wasm-fuel"] / fastest["native"],
        fastest["wasm-epoch"] / fastest["native"]
    );
}
