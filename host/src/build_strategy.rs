//! `keel strategy build`: a strategy crate to a `wasm32-wasip2` component.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};

/// Settings that make a small, fast component, given on the command line so
/// they apply to any crate, inside this workspace or not.
const PROFILE: [&str; 4] = [
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
    "profile.release.panic=\"abort\"",
    "profile.release.strip=true",
];

/// Builds every cdylib of the crate (or workspace) at `manifest_dir` and
/// returns the component files, in the order cargo reports them.
pub fn build(manifest_dir: &Path, target_dir: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    build_with(manifest_dir, target_dir, false).map_err(|e| match e {
        Built::Failed(e) => e,
        Built::Diagnostics(_, e) => e,
    })
}

/// Why a quiet build failed: the compiler's own words (errors and
/// warnings, rendered), or something else.
#[derive(Debug)]
pub enum Built {
    Diagnostics(String, anyhow::Error),
    Failed(anyhow::Error),
}

/// As [`build`], printing nothing: a failed compile returns the rendered
/// diagnostics (at most 64 KiB), to be shown to whoever wrote the code.
pub fn build_quiet(manifest_dir: &Path, target_dir: Option<&Path>) -> Result<Vec<PathBuf>, Built> {
    build_with(manifest_dir, target_dir, true)
}

fn build_with(
    manifest_dir: &Path,
    target_dir: Option<&Path>,
    quiet: bool,
) -> Result<Vec<PathBuf>, Built> {
    let failed = |e: anyhow::Error| Built::Failed(e);
    let manifest = manifest_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(failed(anyhow!(
            "{}: no Cargo.toml there",
            manifest_dir.display()
        )));
    }
    ensure_target().map_err(failed)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--target",
            "wasm32-wasip2",
            "--release",
            "--message-format=json-render-diagnostics",
        ]);
    for setting in PROFILE {
        cmd.args(["--config", setting]);
    }
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let output = cmd
        .stdout(Stdio::piped())
        .stderr(if quiet {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .output()
        .context("failed to run cargo")
        .map_err(failed)?;
    if !output.status.success() {
        if quiet {
            let mut words = String::new();
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if msg["reason"] == "compiler-message"
                    && let Some(text) = msg["message"]["rendered"].as_str()
                    && words.len() < 64 * 1024
                {
                    words.push_str(text);
                }
            }
            if words.is_empty() {
                words = String::from_utf8_lossy(&output.stderr).into_owned();
            }
            words.truncate(words.floor_char_boundary(64 * 1024));
            return Err(Built::Diagnostics(
                words,
                anyhow!(
                    "{}: cargo build for wasm32-wasip2 failed",
                    manifest.display()
                ),
            ));
        }
        return Err(failed(anyhow!(
            "{}: cargo build for wasm32-wasip2 failed (see the compiler output above)",
            manifest.display()
        )));
    }
    let mut wasm = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["crate_types"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                wasm.push(PathBuf::from(f));
            }
        }
    }
    if wasm.is_empty() {
        return Err(failed(anyhow!(
            "{}: the build produced no .wasm component (is crate-type = [\"cdylib\"] set?)",
            manifest.display()
        )));
    }
    Ok(wasm)
}

/// Installs the wasm32-wasip2 standard library through rustup when missing,
/// so a fresh checkout builds strategies without a manual step.
fn ensure_target() -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("failed to run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        return Ok(());
    }
    eprintln!("installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .context("the wasm32-wasip2 target is missing and rustup could not be run to add it")?;
    if !status.success() {
        bail!("rustup target add wasm32-wasip2 failed");
    }
    Ok(())
}
