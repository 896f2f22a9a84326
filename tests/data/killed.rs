//! Imports killed at the worst moment: into a file of its own an import
//! writes in place, beside a rollback journal, and a SIGKILL leaves that
//! journal hot. The next process to open the file must roll it back, even
//! one that only reads: the store is as it was before the import, or holds
//! all of it, and works on.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keel_host::store::Store;
use keel_model::{Candle, Timeframe};

use super::{import_file, keel, path, stderr};

fn stored(db: &Path) -> Vec<Candle> {
    let store = Store::open(db).expect("the store opens after a kill");
    (store.load_series("SYN/USD", Timeframe::M1))
        .expect("the series reads whole")
        .map(|(bars, _)| bars)
        .unwrap_or_default()
}

fn size_of(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}

#[test]
fn an_import_killed_while_it_writes_in_place_leaves_the_store_as_it_was_or_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (all, half) = (dir.path().join("all.csv"), dir.path().join("half.csv"));
    let base = dir.path().join("base.db");
    let made = keel(
        &base,
        &["data", "synth", "--bars", "240000", "--seed", "9"]
            .into_iter()
            .chain(["--timeframe", "1m", "--out", path(&all)])
            .collect::<Vec<_>>(),
    );
    assert!(made.status.success(), "{}", stderr(&made));
    // The first half of the same walk, stored before each kill: the
    // import killed extends the series, and merges into its last span.
    let text = std::fs::read_to_string(&all).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&half, lines[..=120_000].join("\n")).expect("write");
    let imported = import_file(&base, path(&half), "SYN/USD", "1m");
    assert!(imported.status.success(), "{}", stderr(&imported));
    let before = stored(&base);
    let whole = {
        let db = dir.path().join("whole.db");
        std::fs::copy(&base, &db).expect("copy");
        let out = import_file(&db, path(&all), "SYN/USD", "1m");
        assert!(out.status.success(), "{}", stderr(&out));
        stored(&db)
    };
    assert_eq!((before.len(), whole.len()), (120_000, 240_000));

    let mut landed = 0;
    for i in 0..6u64 {
        let db = dir.path().join(format!("killed-{i}.db"));
        let journal = dir.path().join(format!("killed-{i}.db-journal"));
        std::fs::copy(&base, &db).expect("copy");
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--db")
            .arg(&db)
            .args(["data", "import", path(&all), "--symbol", "SYN/USD"])
            .args(["--timeframe", "1m"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Killed once the journal holds pages the import changed (it is
        // hot from then on), at a later moment each time.
        let started = Instant::now();
        while size_of(&journal) == 0 && child.try_wait().expect("try_wait").is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "no journal");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(i * i * 8));
        if child.try_wait().expect("try_wait").is_none() {
            landed += 1;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // A command that only reads, first after the kill: it must read
        // the store as it was, not stumble on the journal.
        let record = keel(&db, &["candidates"]);
        assert!(record.status.success(), "kill {i}: {}", stderr(&record));
        let after = stored(&db);
        assert!(
            after == before || after == whole,
            "kill {i}: {} bars stored, neither the {} before nor the {} of the import",
            after.len(),
            before.len(),
            whole.len()
        );
        // Back to its write-ahead log, and imports go on.
        assert_eq!(std::fs::read(&db).expect("read")[18], 2, "kill {i}: WAL");
        let again = import_file(&db, path(&all), "SYN/USD", "1m");
        assert!(again.status.success(), "kill {i}: {}", stderr(&again));
        assert_eq!(stored(&db), whole, "kill {i}");
    }
    assert!(landed >= 3, "only {landed} of 6 kills landed mid-import");
}
