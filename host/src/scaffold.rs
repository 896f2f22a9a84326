//! `keel strategy new`: a strategy crate that builds anywhere, from one of
//! the example strategies. The nightly evolution's author writes from the
//! same template.
//!
//! The examples' sources are built into the binary, so a crate can be
//! started without the repo at hand; only the SDK is needed, by path. The
//! crate is a workspace of its own (an empty `[workspace]` table), so it
//! builds inside another workspace's tree too, and its test runs natively
//! on a seeded random walk of its own (no data files).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// An example a new strategy starts from: its name and its `src/lib.rs`.
#[derive(Debug)]
pub struct Template {
    pub name: &'static str,
    source: &'static str,
}

/// The examples, in the order `keel strategy new --help` lists them.
pub const TEMPLATES: [Template; 4] = [
    Template {
        name: "sma-cross",
        source: include_str!("../../strategies/sma-cross/src/lib.rs"),
    },
    Template {
        name: "rsi-reversion",
        source: include_str!("../../strategies/rsi-reversion/src/lib.rs"),
    },
    Template {
        name: "atr-breakout",
        source: include_str!("../../strategies/atr-breakout/src/lib.rs"),
    },
    Template {
        name: "blocks",
        source: include_str!("../../strategies/blocks/src/lib.rs"),
    },
];

/// The SDK of the source tree this binary was built from, when it is still
/// there.
pub fn default_sdk() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../strategy-sdk");
    dir.join("Cargo.toml")
        .is_file()
        .then(|| dir.canonicalize().unwrap_or(dir))
}

/// The template called `name`.
pub fn template(name: &str) -> anyhow::Result<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        format!(
            "--from {}: no such example (one of {})",
            keel_model::shown::quoted(name),
            names.join(", ")
        )
    })
}

/// A strategy name: 1 to 48 of `[a-z0-9-]`, starting with a letter, as
/// `describe()` names and cargo packages both accept.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "strategy name {}: use 1 to 48 of a-z, 0-9 and '-', starting with a letter",
            keel_model::shown::quoted(name)
        );
    }
    Ok(())
}

/// The `src/lib.rs` of strategy `name` from `template`: the example's
/// code, named `name`, with a test of its own in place of the example's
/// (which reads the repo's data files).
pub fn source(template: &Template, name: &str) -> anyhow::Result<String> {
    let code = template
        .source
        .split("\n#[cfg(test)]")
        .next()
        .unwrap_or(template.source);
    let quoted_name = format!("name: \"{}\".into()", template.name);
    if !code.contains(&quoted_name) {
        bail!(
            "template {}: its describe() name was not found",
            template.name
        );
    }
    let code = code.replacen(&quoted_name, &format!("name: \"{name}\".into()"), 1);
    let strategy = code
        .split("export_strategy!(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .with_context(|| format!("template {}: no export_strategy!", template.name))?;
    Ok(format!(
        "{}\n{}",
        code.trim_end(),
        TEST.replace("STRATEGY", strategy)
    ))
}

/// The test every new strategy starts with.
const TEST: &str = r#"
#[cfg(test)]
mod tests {
    use super::*;
    use keel_strategy_sdk::harness::{Candle, Harness, RejectedBy, build};

    /// A seeded random walk of one-minute bars, the same on every run.
    fn walk(seed: u64, bars: usize) -> Vec<Candle> {
        let mut state = seed;
        let mut close = 100.0_f64;
        (0..bars)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let step = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.02;
                let open = close;
                close = (open * (1.0 + step)).max(0.01);
                Candle {
                    time_ms: i as i64 * 60_000,
                    open,
                    high: open.max(close) * 1.001,
                    low: open.min(close) * 0.999,
                    close,
                    volume: 1_000.0,
                }
            })
            .collect()
    }

    #[test]
    fn trades_a_random_walk_without_errors_or_refused_signals() {
        let info = <STRATEGY as Strategy>::describe();
        let mut symbols = info.symbols.clone();
        if symbols.is_empty() {
            symbols.push("BTC/USD".into());
        }
        let mut harness = Harness::new();
        for (i, symbol) in symbols.iter().enumerate() {
            harness = harness.with_series(symbol, walk(7 + i as u64, 5_000));
        }
        let strategy: STRATEGY = build(&[]).expect("the default parameters are accepted");
        let out = harness.run(strategy);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        // Refused by the sandbox's or the risk checks; a signal the market
        // could not fill (the data ended, say) is no fault of the code.
        let refused: Vec<_> = (out.rejected.iter())
            .filter(|r| !matches!(r.by, RejectedBy::Fill))
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        assert!(!out.signals.is_empty(), "no signal in 5,000 bars");
    }
}
"#;

/// The `Cargo.toml` of strategy `name`, depending on the SDK at `sdk`.
pub fn manifest(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
keel-strategy-sdk = {{ path = {sdk:?} }}

# A workspace of its own: the crate builds wherever it is put.
[workspace]
"#,
        sdk = sdk.display().to_string()
    )
}

/// Writes strategy `name` from `template` into the new directory `dir`
/// (which must not exist, or be empty).
pub fn write(dir: &Path, name: &str, template: &Template, sdk: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    let lib = source(template, name)?;
    write_source(dir, name, &lib, sdk)
}

/// Writes strategy `name` with `lib` as its `src/lib.rs` into the new
/// directory `dir` (which must not exist, or be empty).
pub fn write_source(dir: &Path, name: &str, lib: &str, sdk: &Path) -> anyhow::Result<()> {
    write_package(dir, name, name, lib, sdk)
}

/// As [`write_source`], the cargo package named after `dir` as well, so
/// that crates written by different databases into one shared target
/// directory never build over each other's component (the strategy's own
/// name, in `describe()`, stays `name`).
pub fn write_unique(dir: &Path, name: &str, lib: &str, sdk: &Path) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let at = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let print = Sha256::digest(at.display().to_string().as_bytes());
    let package = format!("{name}-{}", hex::encode(&print[..4]));
    write_package(dir, &package, name, lib, sdk)
}

fn write_package(
    dir: &Path,
    package: &str,
    name: &str,
    lib: &str,
    sdk: &Path,
) -> anyhow::Result<()> {
    check_name(name)?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("--sdk {}: no Cargo.toml there", sdk.display());
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{}: already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("{}", dir.display()))?;
    let sdk = sdk.canonicalize().unwrap_or_else(|_| sdk.to_owned());
    std::fs::write(dir.join("Cargo.toml"), manifest(package, &sdk))
        .with_context(|| format!("{}", dir.join("Cargo.toml").display()))?;
    std::fs::write(dir.join("src/lib.rs"), lib)
        .with_context(|| format!("{}", dir.join("src/lib.rs").display()))?;
    // The SDK's own lock file, so the new crate builds with the versions
    // Keel is tested with, and without a registry at hand.
    let lock = sdk.join("../Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("{}", dir.join("Cargo.lock").display()))?;
    }
    std::fs::write(dir.join(".gitignore"), "/target\n")
        .with_context(|| format!("{}", dir.join(".gitignore").display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_renamed_and_gets_its_own_test() {
        for t in &TEMPLATES {
            let src = source(t, "my-strat").expect(t.name);
            assert!(src.contains("name: \"my-strat\".into()"), "{}", t.name);
            assert!(
                !src.contains(&format!("name: \"{}\"", t.name)),
                "{}",
                t.name
            );
            assert_eq!(src.matches("#[cfg(test)]").count(), 1, "{}", t.name);
            assert!(!src.contains("shared/data"), "{}: reads repo files", t.name);
            assert!(!src.contains("STRATEGY"), "{}", t.name);
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "Caps", "1abc", "a_b", "a-", &"x".repeat(49), "a b"] {
            let e = check_name(bad).expect_err(bad).to_string();
            assert!(e.starts_with("strategy name"), "{e}");
        }
        for good in ["a", "sma-cross-2", "x1"] {
            check_name(good).expect(good);
        }
        let e = template("nope")
            .map(|t| t.name)
            .expect_err("unknown")
            .to_string();
        assert!(
            e.contains("sma-cross, rsi-reversion, atr-breakout, blocks"),
            "{e}"
        );
    }
}
