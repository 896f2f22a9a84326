//! `keel data export`: a stored series written out and read back.

use super::*;

/// `keel data export` writes a stored series back out as Keel's CSV (gzip
/// when the name says so), aggregated if asked: read back, it is the same
/// bars; what it cannot do is one line, and no file is left behind.
#[test]
fn a_stored_series_exports_to_csv_and_gzip_and_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    let out = import_file(&db, eth.to_str().expect("path"), "ETH/BTC", "5m");
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = keel_model::candles::read_csv(&eth).expect("eth");
    for name in ["eth.csv", "eth.csv.gz"] {
        let file = dir.path().join(name);
        let out = export_eth(&db, &file, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("wrote 5760 bars of ETH/BTC 5m"),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            keel_model::candles::read_file(&file).expect(name),
            stored,
            "{name}"
        );
    }
    let hourly = dir.path().join("eth-1h.csv");
    let out = export_eth(&db, &hourly, &["--timeframe", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let made = keel_model::candles::resample::resample(&stored, 300_000, keel_model::Timeframe::H1)
        .expect("1h");
    assert_eq!(
        keel_model::candles::read_file(&hourly).expect("1h"),
        made.candles
    );

    let nowhere = dir.path().join("no/such/dir/x.csv");
    for (args, says) in [
        (
            vec!["data", "export", "XRP/BTC@5m", "--out", "x.csv"],
            "XRP/BTC@5m: no such series",
        ),
        (
            vec!["data", "export", "ETH/BTC", "--out", "x.csv"],
            "expected SYMBOL@TIMEFRAME",
        ),
        (
            vec!["data", "export", "@5m", "--out", "x.csv"],
            "@5m: expected SYMBOL@TIMEFRAME",
        ),
        (
            vec!["data", "export", "ETH/BTC@", "--out", "x.csv"],
            "ETH/BTC@: expected SYMBOL@TIMEFRAME",
        ),
        (vec!["data", "delete", "@"], "@: expected SYMBOL@TIMEFRAME"),
        (
            vec!["data", "export", "ETH/BTC@5m", "--out", path(&nowhere)],
            "x.csv: cannot write: No such file or directory",
        ),
    ] {
        let out = keel(&db, &args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert!(!Path::new("x.csv").exists());

    // Only a regular file is replaced: not a pipe (or a device), not the
    // database, not a JSON name; a link is written through, and a file
    // replaced keeps its permissions.
    let fifo = dir.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let json = dir.path().join("eth.json");
    for (out, says) in [
        (fifo.clone(), "pipe: cannot write: not a regular file"),
        (db.clone(), "that is the database's own file"),
        // Its log, which SQLite removes as the database closes.
        (
            dir.path().join(format!(
                "{}-wal",
                db.file_name().expect("name").to_string_lossy()
            )),
            "that is the database's own file",
        ),
        // A link to the log, which does not exist yet.
        (
            {
                let link = dir.path().join("to-the-log.csv");
                let log = format!("{}-wal", db.file_name().expect("name").to_string_lossy());
                std::os::unix::fs::symlink(log, &link).expect("link");
                link
            },
            "that is the database's own file",
        ),
        (
            json,
            "export writes CSV or Parquet; name it .csv, .csv.gz or .parquet",
        ),
        // A compression export does not do: the file would be plain CSV.
        (
            dir.path().join("eth.csv.bz2"),
            "export writes CSV or Parquet; name it .csv, .csv.gz or .parquet",
        ),
        (
            dir.path().join("eth.csv.ZST"),
            "export writes CSV or Parquet; name it .csv, .csv.gz or .parquet",
        ),
    ] {
        let run = export_eth(&db, &out, &[]);
        assert!(!run.status.success(), "{}", out.display());
        assert!(stderr(&run).contains(says), "{}", stderr(&run));
    }
    assert!(
        std::fs::metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(
        keel_host::store::Store::open(&db).is_ok(),
        "the database is whole"
    );
    // A name that only begins with the database's is a file of its own.
    let beside = dir.path().join(format!(
        "{}.csv",
        db.file_name().expect("name").to_string_lossy()
    ));
    let run = export_eth(&db, &beside, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        keel_model::candles::read_file(&beside).expect("beside"),
        stored
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let private = dir.path().join("private.csv");
    std::fs::write(&private, "old").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&private, &link).expect("link");
    let run = export_eth(&db, &link, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        keel_model::candles::read_file(&private).expect("through the link"),
        stored
    );
    let mode = std::fs::metadata(&private)
        .expect("private")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // `-` is the standard output.
    let run = keel(&db, &["data", "export", "ETH/BTC@5m", "--out", "-"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run).lines().count(), 5761);
    assert!(!Path::new("-").exists());
    // A reader that stops early (`| head -2`) ends it quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(&db)
        .args(["data", "export", "ETH/BTC@5m", "--out", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run keel");
    let mut head = [0u8; 64];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut head).expect("head");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");

    // A symbol with '@' could never be named as SYMBOL@TF; an empty,
    // padded or control-character one could not be told apart in a
    // listing: all refused, and nothing stored.
    for (symbol, why) in [
        ("A@B", "holds no '@'"),
        ("", "is not empty"),
        (" ", "is not empty"),
        (" ETH/BTC", "has no space around it"),
        ("N\nL", "holds no control character"),
        ("T\tAB", "holds no control character"),
        // Ü as U and a combining diaeresis: it prints as the Ü typed as one
        // character, which would name another series.
        (
            "U\u{308}SD",
            "is written composed (Unicode NFC: \"ÜSD\", 3 characters, not 4)",
        ),
    ] {
        let out = import_file(&db, eth.to_str().expect("path"), symbol, "5m");
        assert!(!out.status.success());
        assert!(
            stderr(&out).trim().lines().count() == 1 && stderr(&out).contains(why),
            "{symbol:?}: {}",
            stderr(&out)
        );
    }
    let listed = stdout(&keel(&db, &["data", "list"]));
    assert_eq!(
        listed.lines().filter(|l| l.contains(" 5m ")).count(),
        1,
        "{listed}"
    );

    // Deleted whole, then nothing to delete.
    let out = keel(&db, &["data", "delete", "ETH/BTC@5m"]);
    assert_eq!(
        stdout(&out).trim(),
        "deleted ETH/BTC 5m: 5760 bars",
        "{}",
        stderr(&out)
    );
    let out = keel(&db, &["data", "delete", "ETH/BTC@5m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ETH/BTC@5m: no such series in"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&keel(&db, &["data", "list"])).contains(" 5m "));
}

/// What an export aggregates can be imported again, however large the
/// volumes: a token of vast supply trades 9e13 a minute, 1.296e17 a day.
#[test]
fn an_aggregated_export_of_vast_volumes_imports_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let minutes = dir.path().join("bttc-1m.csv");
    let mut text = String::from("time,open,high,low,close,volume\n");
    for i in 0..2880i64 {
        let t = 1_704_067_200 + i * 60;
        text.push_str(&format!("{t},7e-7,7.1e-7,6.9e-7,7e-7,9e13\n"));
    }
    std::fs::write(&minutes, text).expect("write");
    let out = import_file(&db, path(&minutes), "BTTC/USDT", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["bttc-1d.csv", "bttc-1d.parquet"] {
        let daily = dir.path().join(name);
        let out = keel(
            &db,
            &[
                "data",
                "export",
                "BTTC/USDT@1m",
                "--timeframe",
                "1d",
                "--out",
                path(&daily),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out)
                .contains("2 bars of BTTC/USDT 1d (none partial: its partial column is all false)"),
            "{}",
            stdout(&out)
        );
        let again = dir.path().join(format!("again-{name}.db"));
        let out = import_file(&again, path(&daily), "BTTC/USDT", "1d");
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let read = keel_model::candles::read_file(&daily).expect(name);
        assert_eq!(read.len(), 2, "{name}");
        assert!(read.iter().all(|c| c.volume == 9e13 * 1440.0), "{read:?}");
    }
}
