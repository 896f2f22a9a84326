//! `keel data list --check`: every stored bar read and checked, damage
//! named with what mends it, and what the check finds refused where the
//! bars are read.

use super::*;

/// `keel data list` shows the catalogue; `--check` reads every stored bar
/// and says which series are whole and which damaged (exit 1 then), so an
/// operator learns of damage before a backtest stumbles on it.
#[test]
fn data_list_check_reads_every_series_and_names_the_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let walk = dir.path().join("walk.csv");
    let args = ["data", "synth", "--bars", "100000", "--out", path(&walk)];
    assert!(keel(&db, &args).status.success());
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    for (file, symbol, tf) in [
        (path(&walk), "SYN/USD", "1m"),
        (path(&eth), "ETH/BTC", "5m"),
    ] {
        let out = import_file(&db, file, symbol, tf);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = keel(&db, &["data", "list", "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let whole = "  whole: every bar read and checked";
    assert_eq!(stdout(&out).matches(whole).count(), 2, "{}", stdout(&out));

    // A bit flipped in SYN/USD's second span, behind Keel's back: the
    // listing alone cannot tell; the check reads it and says where.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let second = conn
        .query_row(
            "SELECT COUNT(*) FROM candle_spans WHERE symbol < 'SYN/USD'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("count");
    crate::support::flip_span_bit(&conn, second as usize + 1, 100, 1).expect("flip");
    drop(conn);
    let listed = keel(&db, &["data", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(!stdout(&listed).contains("damaged"), "{}", stdout(&listed));
    let out = keel(&db, &["data", "list", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("ETH/BTC") && lines[1] == whole,
        "{text}"
    );
    assert!(lines[2].starts_with("SYN/USD"), "{text}");
    assert!(
        lines[3].starts_with("  damaged: ")
            && lines[3].contains("SYN/USD 1m")
            && lines[3].ends_with("import them again with --replace"),
        "{text}"
    );
    assert_eq!(
        stderr(&out).trim(),
        "error: 1 of 2 stored series is damaged (above)"
    );

    // Spans the catalogue does not list: damage too, and how to be rid of it.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute("DELETE FROM candle_series WHERE symbol = 'ETH/BTC'", [])
        .expect("delete the row");
    drop(conn);
    let out = keel(&db, &["data", "list", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ETH/BTC      5m   damaged: bars or marks stored that the catalogue does not list (keel data delete ETH/BTC@5m removes them)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stderr(&out).trim(),
        "error: 2 of 2 stored series are damaged (above)"
    );
    let out = keel(&db, &["data", "delete", "ETH/BTC@5m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel(&db, &["data", "list", "--check"]);
    assert!(!stdout(&out).contains("ETH/BTC"), "{}", stdout(&out));
    // Marks alone, of no listed series: found, and removed by the command
    // the check names, which says so.
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute(
        "INSERT INTO candle_marks (symbol, timeframe, span, times) VALUES ('M/X', '5m', 3, x'00')",
        [],
    )
    .expect("marks");
    drop(conn);
    let out = keel(&db, &["data", "list", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("keel data delete M/X@5m removes them"),
        "{}",
        stdout(&out)
    );
    let out = keel(&db, &["data", "delete", "M/X@5m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deleted M/X 5m: 0 bars");
    let out = keel(&db, &["data", "list", "--check"]);
    assert!(!stdout(&out).contains("M/X"), "{}", stdout(&out));

    // A timeframe Keel does not know, which only damage writes: named, and
    // the command the check offers removes it.
    let conn = rusqlite::Connection::open(&db).expect("open");
    for table in ["candle_series", "candle_spans"] {
        let damage = format!("UPDATE {table} SET timeframe = '7q' WHERE symbol = 'SYN/USD'");
        conn.execute(&damage, []).expect("damage");
    }
    drop(conn);
    let out = keel(&db, &["data", "list", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "is listed with a timeframe Keel does not know: \"7q\" (keel data delete SYN/USD@7q removes it)"
        ),
        "{}",
        stdout(&out)
    );
    let out = keel(&db, &["data", "delete", "SYN/USD@7q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("deleted SYN/USD 7q: "),
        "{}",
        stdout(&out)
    );
    let out = keel(&db, &["data", "delete", "SYN/USD@7q"]);
    assert_eq!(
        stderr(&out).trim(),
        "error: timeframe '7q' is not one of 1m 5m 15m 1h 4h 1d 1w 1M"
    );
    let out = keel(&db, &["data", "list", "--check"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("no candles stored"),
        "{}",
        stdout(&out)
    );
}

/// Marks of partial bars damaged behind Keel's back: the check finds them,
/// an export refuses them rather than writing a partial bar as a whole
/// one, and an import of the file with `--replace` mends them.
#[test]
fn damaged_marks_of_partial_bars_are_found_refused_and_mended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let file = dir.path().join("part.csv");
    std::fs::write(
        &file,
        "time,open,high,low,close,volume,partial\n\
         2024-01-01T00:00:00Z,1,2,0.5,1.5,10,false\n\
         2024-01-01T00:01:00Z,1.5,2,1,1.2,10,true\n",
    )
    .expect("write");
    let out = import_file(&db, path(&file), "P", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    let export = |name: &str| {
        let out_file = dir.path().join(name);
        let out = keel(&db, &["data", "export", "P@1m", "--out", path(&out_file)]);
        (out, std::fs::read_to_string(&out_file).unwrap_or_default())
    };
    let (out, written) = export("before.csv");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(written.ends_with(",true\n"), "{written}");
    for damage in [
        "UPDATE candle_marks SET times = x'deadbeef'",
        "UPDATE candle_marks SET times = x'0100000000000000'",
        "INSERT INTO candle_marks (symbol, timeframe, span, times) VALUES ('P', '1m', 7, x'00')",
        // The partial bar's mark moved 30 s, to no bar: the bar would be
        // handed on as whole.
        "UPDATE candle_marks SET times = x'905353c28c010000'",
    ] {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute(damage, []).expect(damage);
        drop(conn);
        let out = keel(&db, &["data", "list", "--check"]);
        assert_eq!(out.status.code(), Some(1), "{damage}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(" partial bar")
                && stdout(&out).contains("import them again with --replace"),
            "{damage}: {}",
            stdout(&out)
        );
        let (out, _) = export("damaged.csv");
        assert_eq!(out.status.code(), Some(1), "{damage}");
        assert!(stderr(&out).contains("are damaged"), "{}", stderr(&out));
        // Streamed as it is, aggregated, and loaded whole for a grid.
        let sma = crate::support::example("sma-cross");
        for extra in [&[][..], &["--timeframe", "5m"], &["--param", "fast=5,6"]] {
            let args = [&["backtest", path(sma), "--data", "P@1m"][..], extra].concat();
            let out = keel(&db, &args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{damage} {extra:?}: {}",
                stdout(&out)
            );
            assert!(stderr(&out).contains("are damaged"), "{}", stderr(&out));
        }
        let args = ["data", "import", path(&file), "--symbol", "P"];
        let out = keel(
            &db,
            &[&args[..], &["--timeframe", "1m", "--replace"]].concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = keel(&db, &["data", "list", "--check"]);
        assert!(out.status.success(), "{damage}: {}", stdout(&out));
        let (out, written) = export("after.csv");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(written.ends_with(",true\n"), "{damage}: {written}");
    }
}
