//! Reload latency and the cost of many strategies side by side.
//!
//!     cargo bench -p keel-host --bench reload
//!
//! 1. Reload: a new version of a component is written over the watched
//!    file; timed from just before the write to the new version having
//!    handled its first bar: the file-watch event, reading the file, loading
//!    it (a cold compile, or from the compile cache), instantiating, warming
//!    up on the last bars, and the first call. The components: the three
//!    examples and two generated ones of about 1 MB (direct calls, and every
//!    function called through a table). Columns: a cold load (baseline code
//!    first); a load from the disk compile cache; `keel dev`'s path
//!    (validation under fuel, then the strategy it loaded runs); `keel dev`
//!    again for a second save right after the first (the first's optimised
//!    compile waits for a quiet sandbox), and for a third save once that
//!    compile is running; and, for comparison, a cold load with the
//!    optimising compiler on the critical path.
//! 2. Per bar, N strategies side by side: N sma-cross instances each handed
//!    the same bar (sandbox only), and a whole paper run with N books (every
//!    bar booked in SQLite with synchronous=FULL).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher;

use keel_host::build_strategy;
use keel_host::engine::feed::BarFeed;
use keel_host::engine::feeds::Feeds;
use keel_host::engine::{Engine, RunSettings, StrategySpec};
use keel_host::sandbox::{
    BACKGROUND_QUIET, Binding, LoadedStrategy, Metering, Sandbox, SandboxConfig, StrategyArtifact,
    StrategyInstance,
};
use keel_model::batch::{BarColumns, Batch};
use keel_model::{Params, Portfolio, RiskLimits, Symbol, synth};

/// The `keel` binary's allocator, so figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The three examples, then two generated components of about 1 MB.
fn components() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = repo.join("target/keel-wasm");
    let mut crates: Vec<PathBuf> = ["sma-cross", "rsi-reversion", "atr-breakout"]
        .iter()
        .map(|name| repo.join("strategies").join(name))
        .collect();
    let generated = repo.join("target/keel-bench");
    crates.push(generated_crate(&generated, 1780, false));
    crates.push(generated_crate(&generated, 1580, true));
    crates
        .iter()
        .map(|krate| build_strategy::build(krate, Some(&target)).expect("build")[0].clone())
        .collect()
}

/// A large strategy crate, generated: `functions` distinct numeric
/// functions (a loop, branches and arithmetic with their own constants each),
/// one of them run per bar. `table`: called through a table of function
/// pointers (every function's address taken, so each needs an entry
/// trampoline), else through one `match` (direct calls).
fn generated_crate(dir: &Path, functions: usize, table: bool) -> PathBuf {
    let krate = dir.join(if table { "big-table" } else { "big-direct" });
    std::fs::create_dir_all(krate.join("src")).expect("dir");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../strategy-sdk");
    let manifest = format!(
        "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nkeel-strategy-sdk = {{ path = \"{}\" }}\n\n[workspace]\n",
        if table { "big-table" } else { "big-direct" },
        sdk.display()
    );
    let mut rng = keel_model::synth::SplitMix64::new(7);
    let mut pick = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo);
    let mut src = String::from(
        "use keel_strategy_sdk::prelude::*;\n\npub struct Big { n: usize, state: [f64; 8] }\n\n\
         fn wave(x: f64, k: u32) -> f64 { let y = x * 0.5 + k as f64; y - y * y * y / 6.0 }\n\n",
    );
    for i in 0..functions {
        let (a, b, c, d, k) = (
            pick(2, 97),
            pick(2, 97),
            pick(2, 97),
            pick(2, 97),
            pick(2, 9),
        );
        src += &format!(
            "#[inline(never)]\nfn f{i}(x: f64, s: &mut [f64; 8]) -> f64 {{\n\
             \x20   let mut acc = x * {a}.0 / {b}.5;\n\
             \x20   for j in 0..{k} {{\n\
             \x20       let v = s[(j + {i}) % 8];\n\
             \x20       if v > acc * {c}.25 {{ acc -= v / {d}.0; }} else {{ acc += v * {e}.0e-3; }}\n\
             \x20       s[(j * {a} + {d}) % 8] = wave(acc, {b});\n\
             \x20   }}\n\
             \x20   if acc.abs() > {ab}.0 {{ acc = acc.rem_euclid({c}.0); }}\n\
             \x20   acc + {i}.0\n}}\n\n",
            e = (a * c) % 91 + 1,
            ab = a * b
        );
    }
    let names: Vec<String> = (0..functions).map(|i| format!("f{i}")).collect();
    src += &if table {
        format!(
            "static TABLE: [fn(f64, &mut [f64; 8]) -> f64; {functions}] = [{}];\n\
             fn dispatch(i: usize, x: f64, s: &mut [f64; 8]) -> f64 {{ TABLE[i](x, s) }}\n",
            names.join(", ")
        )
    } else {
        let arms: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, f)| format!("        {i} => {f}(x, s),"))
            .collect();
        format!(
            "fn dispatch(i: usize, x: f64, s: &mut [f64; 8]) -> f64 {{\n    match i {{\n{}\n        _ => x,\n    }}\n}}\n",
            arms.join("\n")
        )
    };
    src += &format!(
        "\nimpl Strategy for Big {{\n\
         \x20   fn describe() -> StrategyInfo {{\n\
         \x20       StrategyInfo {{ name: \"big\".into(), version: \"0.1.0\".into(), description: \"generated\".into(),\n\
         \x20           symbols: vec![\"BTC/USD\".into()], timeframe: \"1m\".into(), warmup_bars: 10, params: vec![] }}\n\
         \x20   }}\n\
         \x20   fn init(_: &Params) -> Result<Self, String> {{ Ok(Big {{ n: 0, state: [0.0; 8] }}) }}\n\
         \x20   fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {{\n\
         \x20       let Some(bar) = tick.bars.first() else {{ return Ok(vec![]) }};\n\
         \x20       self.n += 1;\n\
         \x20       let _ = dispatch(self.n * 7919 % {functions}, bar.close, &mut self.state);\n\
         \x20       Ok(vec![])\n\
         \x20   }}\n}}\n\nkeel_strategy_sdk::export_strategy!(Big);\n"
    );
    for (file, text) in [("Cargo.toml", manifest), ("src/lib.rs", src)] {
        let path = krate.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).expect("write");
        }
    }
    krate
}

fn sandbox(cache: Option<PathBuf>, baseline_first: bool) -> Sandbox {
    sandbox_metered(Metering::WallClock, cache, baseline_first)
}

fn sandbox_metered(metering: Metering, cache: Option<PathBuf>, baseline_first: bool) -> Sandbox {
    Sandbox::new(SandboxConfig {
        metering,
        cache_dir: cache,
        baseline_first,
        // As `keel run` and `keel dev` do: the background compiles in a
        // `keel` worker process.
        optimizer: Some(PathBuf::from(env!("CARGO_BIN_EXE_keel"))),
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

/// Waits until `sandbox` has no optimising compile running in the background.
fn settle(sandbox: &Sandbox, file: &Path) {
    let hash = StrategyArtifact::read(file, usize::MAX).expect("read").hash;
    while sandbox.is_optimizing(&hash) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `component` with a custom section appended: the same code, another
/// artifact (hash), as a save that changes nothing a compiler sees.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Hands each of `instances` the one-minute bar `candle` of the first symbol.
fn one_bar(
    symbols: &[Symbol],
    portfolio: &Portfolio,
    candle: &keel_model::Candle,
    instances: &mut [StrategyInstance],
) {
    let mut columns = BarColumns::default();
    columns.push(0, candle);
    let batch = Batch {
        symbols,
        tick_times: &[candle.time_ms + 60_000],
        tick_bars: &[1],
        bars: columns.slice(0, 1),
        portfolio,
        limits: RiskLimits::default(),
    };
    for instance in instances {
        instance.on_bars(&batch).expect("bar");
    }
}

/// Writes `bytes` to `file` and times until the new version handled a bar;
/// `validate`: all of validation first, as `keel dev` does. Returns the
/// version loaded, to hold while it "runs": the sandbox builds optimised
/// code only for versions something still holds.
fn reload_once(
    sandbox: &Sandbox,
    file: &Path,
    bytes: &[u8],
    history: &[keel_model::Candle],
    validate: bool,
) -> (f64, LoadedStrategy) {
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
    let loaded = if validate {
        // As `keel dev` does: the strategy the checks loaded is the one run.
        let artifact = StrategyArtifact::read(file, usize::MAX).expect("read");
        let (report, loaded) = keel_host::validate::validate_and_load(sandbox, &artifact);
        assert!(report.passed(), "{:?}", report.failures());
        loaded.expect("loaded")
    } else {
        sandbox.load_file(file).expect("load")
    };
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
        one_bar(
            &symbols,
            &portfolio,
            candle,
            std::slice::from_mut(&mut instance),
        );
    }
    (started.elapsed().as_secs_f64() * 1e3, loaded)
}

fn main() {
    // `cargo bench --bench reload -- NAME…` times only the components whose
    // file name contains one of the NAMEs (the per-bar table always runs).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let files = components();
    let history = synth::random_walk(3, 400, 1_700_000_000_000, 60_000, 100.0, 0.004);
    let dir = tempfile::tempdir().expect("tempdir");
    let watched = dir.path().join("strategy.wasm");
    std::fs::write(&watched, b"").expect("write");

    println!("reload: file change -> new version handled its first bar (median of 7)");
    println!(
        "  {:<14} {:>8}   {:<26}   {:<22}   {:<28}   {:<26}   {:<26}   cold, optimising only",
        "component",
        "size",
        "cold, baseline first",
        "from cache",
        "keel dev: validate, then run",
        "keel dev: saved again",
        "saved again, 0.6 s later"
    );
    for file in &files {
        let name = file.file_stem().expect("name").to_string_lossy();
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let bytes = std::fs::read(file).expect("read");
        let (mut cold, mut cached, mut dev, mut resaved, mut resaved_later) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut optimizing = Vec::new();
        for i in 0..7 {
            // Cold: a fresh sandbox and an empty compile cache, loading the
            // way the paper engine does (baseline code first).
            let cache = dir.path().join(format!("cache-{name}-{i}"));
            let fresh = sandbox(Some(cache.clone()), true);
            let (ms, running) = reload_once(&fresh, &watched, &bytes, &history, false);
            cold.push(ms);
            // From the compile cache on disk, once the background compile
            // wrote it (a new sandbox: nothing in memory).
            settle(&fresh, &watched);
            drop(running);
            let warm = sandbox(Some(cache), true);
            cached.push(reload_once(&warm, &watched, &bytes, &history, false).0);
            // `keel dev`: every save is a new artifact, validated (fuel,
            // baseline code, two smoke runs) before it replaces the one
            // running.
            let dev_cache = dir.path().join(format!("dev-{name}-{i}"));
            let dev_sandbox = sandbox_metered(Metering::Fuel, Some(dev_cache), true);
            let (ms, first) = reload_once(&dev_sandbox, &watched, &bytes, &history, true);
            dev.push(ms);
            // Saved again at once, replacing the first save (whose
            // optimised compile, queued for a quiet sandbox, is then
            // dropped); then again once the second save's optimised compile
            // is running.
            let edited = with_custom_section(&bytes, &format!("keel-bench-{i}"));
            let (ms, second) = reload_once(&dev_sandbox, &watched, &edited, &history, true);
            resaved.push(ms);
            drop(first);
            std::thread::sleep(BACKGROUND_QUIET + Duration::from_millis(100));
            let edited = with_custom_section(&bytes, &format!("keel-bench-{i}-later"));
            let (ms, third) = reload_once(&dev_sandbox, &watched, &edited, &history, true);
            resaved_later.push(ms);
            drop(second);
            settle(&dev_sandbox, &watched);
            drop(third);
            // For comparison: the optimising compiler on the critical path.
            let slow = sandbox(None, false);
            optimizing.push(reload_once(&slow, &watched, &bytes, &history, false).0);
        }
        let (cold, cached, dev) = (median(cold), median(cached), median(dev));
        let (resaved, resaved_later) = (median(resaved), median(resaved_later));
        let mark = |ms: f64, target: f64| if ms <= target { "met" } else { "MISSED" };
        println!(
            "  {name:<14} {:>5} KB   {cold:>8.1} ms (<= 100 {:<6})   {cached:>6.2} ms (<= 10 {:<6})   {dev:>8.1} ms (<= 100 {:<6})   {resaved:>8.1} ms (<= 100 {:<6})   {resaved_later:>8.1} ms (<= 100 {:<6})   {:>8.1} ms",
            bytes.len() / 1024,
            mark(cold, 100.0),
            mark(cached, 10.0),
            mark(dev, 100.0),
            mark(resaved, 100.0),
            mark(resaved_later, 100.0),
            median(optimizing)
        );
    }

    println!("per bar, N strategies side by side (sma-cross)");
    let sma = &files[0];
    for n in [1usize, 10, 50] {
        // Sandbox only: N instances, one bar each; optimised code, then
        // baseline code (a quick first load before the background compile
        // lands).
        let mut per_bar = Vec::new();
        for baseline in [false, true] {
            let sb = sandbox(None, baseline);
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
                one_bar(&symbols, &portfolio, candle, &mut instances);
            }
            per_bar.push(started.elapsed().as_secs_f64() * 1e6 / bars.len() as f64);
        }
        let (sandbox_us, baseline_us) = (per_bar[0], per_bar[1]);

        // A whole paper run with N books.
        let db = dir.path().join(format!("paper-{n}.db"));
        let owner = keel_host::store::Ownership::claim(&db, "bench").expect("owner");
        let mut store = keel_host::store::Store::open(&db).expect("db");
        let settings = RunSettings {
            feed_name: "sample:500".into(),
            symbols: vec!["BTC/USD".into()],
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
        let sb = sandbox(None, false);
        let mut engine = Engine::open(&owner, store.conn(), &sb, settings, None).expect("engine");
        let mut feeds = Feeds::new(
            vec!["BTC/USD".into()],
            vec![BarFeed::sample(7, 500)],
            Duration::ZERO,
        );
        let started = Instant::now();
        let summary = engine.run(&mut feeds).expect("run");
        let paper_ms = started.elapsed().as_secs_f64() * 1e3 / summary.bars as f64;
        println!(
            "  N = {n:>2}   sandbox {sandbox_us:>8.1} µs/bar ({:.2} µs per strategy; baseline code {baseline_us:.1} µs/bar)   paper engine {paper_ms:>7.2} ms/bar",
            sandbox_us / n as f64
        );
    }

    long_session(&files, dir.path());
}

/// A long `keel dev` session: `SAVES` saves, each a new version replacing
/// the one running, 0.2 s apart; the process's resident memory and the
/// disk cache as it goes, and once the background work has settled.
fn long_session(files: &[PathBuf], dir: &Path) {
    const SAVES: usize = 30;
    println!("keel dev, {SAVES} saves 0.2 s apart: resident memory and disk cache");
    for file in [&files[0], &files[3]] {
        let name = file.file_stem().expect("name").to_string_lossy();
        let bytes = std::fs::read(file).expect("read");
        let cache = dir.join(format!("session-{name}"));
        let sandbox = sandbox_metered(Metering::Fuel, Some(cache.clone()), true);
        let before = resident_mb();
        let mut running = None;
        let mut peak = before;
        for i in 0..SAVES {
            let edited = with_custom_section(&bytes, &format!("keel-session-{i}"));
            let artifact = StrategyArtifact::from_bytes(edited, file);
            let (report, loaded) = keel_host::validate::validate_and_load(&sandbox, &artifact);
            assert!(report.passed(), "{:?}", report.failures());
            running = loaded;
            std::thread::sleep(Duration::from_millis(200));
            peak = peak.max(resident_mb());
        }
        let last = running.as_ref().expect("running").hash;
        while sandbox.is_optimizing(&last) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (files, bytes) = disk_usage(&cache);
        println!(
            "  {name:<14} resident {before:.0} MB before, {peak:.0} MB at most, {:.0} MB settled; disk cache {files} file(s), {:.1} MB",
            resident_mb(),
            bytes as f64 / 1e6
        );
    }
}

/// The process's resident set, in MB (Linux; 0 elsewhere).
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How many files, and how many bytes, under `dir`.
fn disk_usage(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries.flatten().fold((0, 0), |(n, total), entry| {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let (m, sub) = disk_usage(&entry.path());
            (n + m, total + sub)
        } else {
            (n + 1, total + entry.metadata().map_or(0, |m| m.len()))
        }
    })
}
