//! Shared test setup: the repo's strategies and hostile fixtures, built once
//! per test run for wasm32-wasip2 (into target/keel-wasm, so the outer cargo's
//! build lock is never in the way), and the sample data.

pub mod siege;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keel_host::build_strategy;
use keel_host::sandbox::{
    Binding, LoadedStrategy, Metering, Sandbox, SandboxConfig, SandboxLimits,
};
use keel_model::replay::Series;
use keel_model::{Params, candles, synth};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of `../shared/data`.
pub fn data(file: &str) -> PathBuf {
    repo().join("../shared/data").join(file)
}

pub struct Built {
    /// Example strategies by crate name.
    pub examples: BTreeMap<String, PathBuf>,
    /// Hostile fixtures by name ("loop", "memory-bomb", …).
    pub fixtures: BTreeMap<String, PathBuf>,
}

pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = repo().join("target/keel-wasm");
        let mut examples = BTreeMap::new();
        for name in ["sma-cross", "rsi-reversion", "atr-breakout", "blocks"] {
            let files = build_strategy::build(&repo().join("strategies").join(name), Some(&target))
                .unwrap_or_else(|e| panic!("building {name}: {e:#}"));
            examples.insert(name.to_owned(), files[0].clone());
        }
        let files = build_strategy::build(&repo().join("tests/fixtures"), Some(&target))
            .unwrap_or_else(|e| panic!("building fixtures: {e:#}"));
        let fixtures = files
            .into_iter()
            .map(|f| {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (stem.trim_start_matches("fixture_").replace('_', "-"), f)
            })
            .collect();
        Built { examples, fixtures }
    })
}

pub fn example(name: &str) -> &'static Path {
    &built().examples[name]
}

pub fn fixture(name: &str) -> &'static Path {
    built()
        .fixtures
        .get(name)
        .unwrap_or_else(|| panic!("no fixture {name}: {:?}", built().fixtures.keys()))
}

pub fn sandbox(metering: Metering) -> Sandbox {
    sandbox_with(metering, SandboxLimits::default())
}

pub fn sandbox_with(metering: Metering, limits: SandboxLimits) -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits,
        metering,
        ..SandboxConfig::default()
    })
    .expect("sandbox")
}

/// Binds `loaded` to `symbols` with `overrides` (NAME=VALUE) and a simulated clock.
pub fn binding(
    loaded: &LoadedStrategy,
    symbols: &[&str],
    overrides: &[&str],
    seed: u64,
) -> Binding {
    let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
    Binding {
        symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
        params: Params::resolve_text(&loaded.info.params, &overrides).expect("params"),
        simulated_clock: true,
        seed,
    }
}

/// One symbol of a sample data file.
/// `candles` as freqtrade JSON: `[[ms, open, high, low, close, volume], …]`,
/// a row a line.
pub fn freqtrade_json(candles: &[candles::Candle]) -> String {
    let rows: Vec<String> = candles
        .iter()
        .map(|c| {
            format!(
                "[{}, {}, {}, {}, {}, {}]",
                c.time_ms, c.open, c.high, c.low, c.close, c.volume
            )
        })
        .collect();
    format!("[\n{}\n]", rows.join(",\n"))
}

pub fn series(symbol: &str, file: &str) -> Series {
    let candles = candles::read_csv(&data(file)).expect("sample data");
    let bar_ms = candles::typical_spacing_ms(&candles).expect("spacing");
    Series {
        symbol: symbol.to_owned(),
        candles,
        bar_ms,
    }
}

/// Seeded synthetic minute candles.
pub fn synthetic(symbol: &str, seed: u64, bars: usize) -> Series {
    Series {
        symbol: symbol.to_owned(),
        candles: synth::random_walk(seed, bars, 1_700_000_000_000, 60_000, 100.0, 0.01),
        bar_ms: 60_000,
    }
}

/// The files of a compile cache directory (`<cache>/<engine key>/<file>`),
/// by name, sorted; none if it does not exist.
pub fn cache_files(cache: &Path) -> Vec<String> {
    let Ok(keys) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut names: Vec<String> = keys
        .flat_map(|key| std::fs::read_dir(key.expect("entry").path()).expect("key dir"))
        .map(|file| {
            file.expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Flips the bits `mask` of byte `at` in the columns of the stored span
/// `nth` (0 for the first, in time order), as damage behind Keel's back.
pub fn flip_span_bit(
    conn: &rusqlite::Connection,
    nth: usize,
    at: usize,
    mask: u8,
) -> rusqlite::Result<usize> {
    let (span, mut columns): (i64, Vec<u8>) = conn.query_row(
        "SELECT span, columns FROM candle_spans ORDER BY span LIMIT 1 OFFSET ?1",
        [nth as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    columns[at] ^= mask;
    conn.execute(
        "UPDATE candle_spans SET columns = ?1 WHERE span = ?2",
        rusqlite::params![columns, span],
    )
}
