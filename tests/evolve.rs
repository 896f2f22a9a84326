//! The nightly evolution and the template it writes from: `keel strategy
//! new` makes a crate that builds anywhere, passes its own native test and
//! validates as a component.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::repo;

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env_remove("KEEL_LOG")
        .output()
        .expect("run keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_new_strategy_builds_inside_another_workspace_tests_natively_and_validates() {
    let outer = tempfile::tempdir().expect("tempdir");
    // Someone else's workspace: the new crate must not be taken for one
    // of its members.
    std::fs::write(
        outer.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .expect("write");
    let dir = outer.path().join("strategies/my-rsi");
    let out = keel(&[
        "strategy",
        "new",
        "my-rsi",
        "--from",
        "rsi-reversion",
        "--dir",
        path(&dir),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("strategy my-rsi from rsi-reversion"));

    let target = repo().join("target/keel-wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(&cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo test");
    assert!(test.status.success(), "{}", text(&test.stderr));
    assert!(
        text(&test.stdout).contains("1 passed"),
        "{}",
        text(&test.stdout)
    );

    let built = keel(&[
        "strategy",
        "build",
        path(&dir),
        "--target-dir",
        path(&target),
    ]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let stdout = text(&built.stdout);
    let wasm = stdout
        .split_whitespace()
        .find(|w| w.ends_with("my_rsi.wasm"))
        .unwrap_or_else(|| panic!("no component in {stdout}"));
    let valid = keel(&["strategy", "validate", wasm]);
    assert!(
        valid.status.success(),
        "{}{}",
        text(&valid.stdout),
        text(&valid.stderr)
    );
    let inspect = keel(&["strategy", "inspect", "--json", wasm]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
    assert_eq!(info["name"], "my-rsi", "{info}");
}

#[test]
fn a_new_strategy_with_a_bad_name_template_or_place_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = dir.path().join("taken");
    std::fs::create_dir_all(&taken).expect("mkdir");
    std::fs::write(taken.join("keep.txt"), "mine").expect("write");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["Bad_Name"],
            "strategy name \"Bad_Name\": use 1 to 48 of a-z, 0-9 and '-', starting with a letter",
        ),
        (
            vec!["ok", "--from", "macd"],
            "--from \"macd\": no such example (one of sma-cross, rsi-reversion, atr-breakout)",
        ),
        (
            vec!["ok", "--dir", path(&taken)],
            "already exists and is not empty",
        ),
        (vec!["ok", "--sdk", path(dir.path())], "no Cargo.toml there"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["strategy", "new"];
        args.extend(extra);
        let out = keel(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(taken.join("keep.txt")).expect("read"),
        "mine"
    );
}
