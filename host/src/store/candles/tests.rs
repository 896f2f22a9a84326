//! The candle store's tests: imports, the catalogue, pieces, the migration (damage and the grid: `damage_tests`).
use super::*;
use keel_model::synth;

#[test]
fn import_round_trips_and_refuses_silent_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let mut candles = synth::random_walk(3, 500, 0, 300_000, 10.0, 0.01);
    candles.remove(100); // a real gap
    let report = store
        .import_candles("ETH/BTC", Timeframe::M5, &candles, "a.csv", b"a", false)
        .expect("import");
    assert_eq!(
        (report.inserted, report.unchanged, report.replaced),
        (499, 0, 0)
    );
    assert_eq!(
        report.gaps,
        vec![Gap {
            after_ms: 99 * 300_000,
            missing: 1
        }]
    );
    assert_eq!(
        store
            .load_candles("ETH/BTC", Timeframe::M5, None, None)
            .expect("load"),
        candles
    );
    let window = store
        .load_candles(
            "ETH/BTC",
            Timeframe::M5,
            Some(10 * 300_000),
            Some(20 * 300_000),
        )
        .expect("window");
    assert_eq!(window, candles[10..20]);

    // The same file again changes nothing.
    let again = store
        .import_candles("ETH/BTC", Timeframe::M5, &candles, "a.csv", b"a", false)
        .expect("reimport");
    assert_eq!((again.inserted, again.unchanged), (0, 499));

    // Different values for a stored bar: refused whole, then allowed with replace.
    let mut changed = candles[..3].to_vec();
    changed[1].close = changed[1].low;
    let err = store
        .import_candles("ETH/BTC", Timeframe::M5, &changed, "b.csv", b"b", false)
        .expect_err("conflict");
    assert!(
        err.to_string()
            .contains("1970-01-01T00:05:00Z is already stored with other values"),
        "{err}"
    );
    let replaced = store
        .import_candles("ETH/BTC", Timeframe::M5, &changed, "b.csv", b"b", true)
        .expect("replace");
    assert_eq!((replaced.replaced, replaced.unchanged), (1, 2));

    let series = store.list_series().expect("list");
    assert_eq!(series.len(), 1);
    assert_eq!((series[0].bars, series[0].first_ms), (499, 0));
}

#[test]
fn the_catalogue_counts_every_span_and_the_gaps_across_their_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    // 200,000 minutes: four spans; one gap inside a span, one across an edge.
    let mut candles = synth::random_walk(5, 200_000, 0, 60_000, 10.0, 0.01);
    let edge = columns::SPAN_MS / 60_000;
    candles.drain(edge as usize - 2..edge as usize + 3);
    candles.drain(1000..1010);
    // Imported in two halves, the second overlapping the first.
    let half = candles.len() / 2;
    store
        .import_candles(
            "ETH/BTC",
            Timeframe::M1,
            &candles[..half + 50],
            "a",
            b"a",
            false,
        )
        .expect("first half");
    let second = store
        .import_candles("ETH/BTC", Timeframe::M1, &candles[half..], "b", b"b", false)
        .expect("second half");
    assert_eq!(
        (second.unchanged, second.inserted),
        (50, candles.len() - half - 50)
    );
    let listed = store.list_series().expect("list");
    assert_eq!(
        listed,
        vec![StoredSeries {
            symbol: "ETH/BTC".into(),
            timeframe: "1m".into(),
            bars: candles.len() as i64,
            first_ms: 0,
            last_ms: candles[candles.len() - 1].time_ms,
            gaps: 2,
            missing: 15,
            digest: columns::digest(&candles),
        }]
    );
    let (loaded, digest) = store
        .load_series("ETH/BTC", Timeframe::M1)
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);
    assert_eq!(digest, columns::digest(&candles));
    // Read span by span: the same bars, a span at a time.
    let entry = store
        .series("ETH/BTC", Timeframe::M1)
        .expect("catalogue")
        .expect("listed");
    assert_eq!(entry, listed[0]);
    let mut streamed: Vec<Vec<Candle>> = Vec::new();
    let whole = store.stream_series(&entry, Timeframe::M1, |span| {
        streamed.push(std::mem::take(span));
        true
    });
    assert!(whole.expect("read"));
    assert_eq!(streamed.len(), 4);
    assert!(streamed.iter().all(|s| !s.is_empty()));
    assert_eq!(streamed.concat(), candles);
    // A reader that stops after the first span stops the read there.
    let mut taken = 0;
    let whole = store.stream_series(&entry, Timeframe::M1, |_| {
        taken += 1;
        false
    });
    assert!(!whole.expect("read") && taken == 1);
    // A window across a span's edge.
    let (from, to) = (columns::SPAN_MS - 600_000, columns::SPAN_MS + 600_000);
    let window = store
        .load_candles("ETH/BTC", Timeframe::M1, Some(from), Some(to))
        .expect("window");
    let expected: Vec<Candle> = (candles.iter())
        .filter(|c| (from..to).contains(&c.time_ms))
        .copied()
        .collect();
    assert_eq!(window, expected);
    assert!(
        store
            .load_series("ETH/BTC", Timeframe::M5)
            .expect("load")
            .is_none()
    );
}

#[test]
fn a_conflict_names_the_value_that_differs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let candles = synth::random_walk(9, 10, 0, 60_000, 10.0, 0.01);
    store
        .import_candles("ETH/BTC", Timeframe::M1, &candles, "a", b"a", false)
        .expect("import");
    let mut louder = candles.clone();
    louder[4].volume += 1.0;
    let err = store
        .import_candles("ETH/BTC", Timeframe::M1, &louder, "b.csv", b"b", false)
        .expect_err("conflict")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "b.csv: ETH/BTC 1m 1970-01-01T00:04:00Z is already stored with other values (volume {} there, {} here)",
            candles[4].volume, louder[4].volume
        )),
        "{err}"
    );
}

#[test]
fn a_database_of_rows_is_moved_into_spans_when_it_is_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keel.db");
    // A database as the last release left it: migrations 1 to 10, one
    // row per bar.
    let candles = synth::random_walk(4, 70_000, 0, 60_000, 10.0, 0.01);
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
        )
        .expect("schema");
        for &(version, name, sql) in &super::super::MIGRATIONS[..10] {
            conn.execute_batch(sql).expect("migration");
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                params![version, name],
            )
            .expect("record");
        }
        let tx = conn.unchecked_transaction().expect("begin");
        let mut insert = tx
            .prepare("INSERT INTO candles VALUES ('ETH/BTC', '1m', ?1, ?2, ?3, ?4, ?5, ?6)")
            .expect("prepare");
        for c in &candles {
            insert
                .execute(params![c.time_ms, c.open, c.high, c.low, c.close, c.volume])
                .expect("row");
        }
        drop(insert);
        tx.commit().expect("commit");
        conn.execute(
            "INSERT INTO candle_imports (symbol, timeframe, source, sha256, bars, inserted, gaps, imported_ms)
             VALUES ('ETH/BTC', '1m', 'a.csv', 'ab12', 70000, 70000, 0, 0)",
            [],
        )
        .expect("import row");
    }
    let store = Store::open(&path).expect("migrate");
    let (loaded, digest) = store
        .load_series("ETH/BTC", Timeframe::M1)
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);
    assert_eq!(digest, columns::digest(&candles));
    let spans: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM candle_spans", [], |r| r.get(0))
        .expect("spans");
    assert_eq!(spans, 2);
    let gone: bool = store
        .conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'candles')",
            [],
            |r| r.get(0),
        )
        .expect("master");
    assert!(!gone, "the rows' table is dropped");
    let named: String = store
        .conn
        .query_row("SELECT file_digest FROM candle_imports", [], |r| r.get(0))
        .expect("import row");
    assert_eq!(named, "sha256:ab12");
}

#[test]
fn an_import_in_pieces_stores_what_one_piece_does_and_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut candles = synth::random_walk(11, 150_000, 0, 60_000, 10.0, 0.01);
    candles.drain(70_000..70_010); // a gap inside the second span
    let whole = {
        let mut store = Store::open(&dir.path().join("whole.db")).expect("open");
        let report = store
            .import_candles("ETH/BTC", Timeframe::M1, &candles, "a.csv", b"a", false)
            .expect("import");
        (report, store.list_series().expect("list"))
    };
    let mut store = Store::open(&dir.path().join("pieces.db")).expect("open");
    // Pieces that end anywhere: inside spans, on their edges, one bar long.
    let cuts = [1, 2, 65_535, 65_536, 65_537, 70_000, 100_000, candles.len()];
    let report = store
        .import_with("ETH/BTC", Timeframe::M1, "a.csv", false, |import| {
            let mut from = 0;
            for to in cuts {
                import.push(&candles[from..to])?;
                from = to;
            }
            assert_eq!(import.spacings().typical(), Some(60_000));
            Ok::<_, StoreError>(file_digest_of(b"a"))
        })
        .expect("import");
    let last = candles[candles.len() - 1].time_ms;
    assert_eq!(report.range, Some((0, last)));
    assert_eq!(report, whole.0);
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(store.list_series().expect("list"), whole.1);
    let (loaded, _) = (store.load_series("ETH/BTC", Timeframe::M1))
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);

    // A failure after spans were written leaves nothing of the import.
    let fresh = synth::random_walk(12, 150_000, 400 * columns::SPAN_MS, 60_000, 10.0, 0.01);
    let failed = store.import_with("ETH/BTC", Timeframe::M1, "b.csv", false, |import| {
        import.push(&fresh[..140_000])?;
        Err::<String, _>(StoreError::Conflict("b.csv: row 140001: broken".into()))
    });
    assert!(failed.is_err());
    // Bars handed out of order are refused.
    let backwards = store.import_with("ETH/BTC", Timeframe::M1, "c.csv", false, |import| {
        import.push(&fresh[10..20])?;
        import.push(&fresh[..10])?;
        Ok::<_, StoreError>(String::new())
    });
    let err = backwards.expect_err("out of order").to_string();
    assert!(err.contains("out of order"), "{err}");
    assert_eq!(store.list_series().expect("list"), whole.1);
    let (loaded, _) = (store.load_series("ETH/BTC", Timeframe::M1))
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);
}

fn file_digest_of(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

#[test]
fn a_file_digest_stops_when_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    std::fs::write(&path, b"some bytes").expect("write");
    let go = AtomicBool::new(false);
    assert_eq!(
        file_digest(&path, &go).expect("digest"),
        file_digest_of(b"some bytes")
    );
    let stop = AtomicBool::new(true);
    let err = file_digest(&path, &stop).expect_err("stopped");
    assert_eq!(err.to_string(), "stopped");
}

/// The marks of partial bars an import keeps: each bar handed has its
/// file's mark; a bar stored unchanged keeps one it had, unless the
/// import replaces (then the file's marks are the bars'); pieces may
/// split a span anywhere; a mark never outlives its bar (a deleted
/// series); marks are no part of the bars' digest.
#[test]
fn an_import_keeps_the_marks_of_partial_bars_by_the_bars_they_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let tf = Timeframe::H1;
    let hour = 3_600_000;
    // Two spans and more (65,536 minutes is about 1,092 hours).
    let candles = synth::random_walk(9, 3000, 0, hour, 10.0, 0.01);
    let at = |i: usize| candles[i].time_ms;
    let marks = vec![at(0), at(5), at(1091), at(1092), at(2999)];
    let import = |store: &mut Store, bars: &[Candle], marks: &[i64], replace: bool| {
        store
            .import_with("ETH/BTC", tf, "m.csv", replace, |import| {
                // In uneven pieces, the marks with theirs.
                for piece in bars.chunks(700) {
                    let (from, to) = (piece[0].time_ms, piece[piece.len() - 1].time_ms);
                    let own: Vec<i64> = (marks.iter().copied())
                        .filter(|t| (from..=to).contains(t))
                        .collect();
                    import.push_marked(piece, &own)?;
                }
                Ok::<_, StoreError>("blake3:00".to_owned())
            })
            .expect("import")
    };
    let report = import(&mut store, &candles, &marks, false);
    assert_eq!((report.inserted, report.marked), (3000, 5));
    assert_eq!(store.marks("ETH/BTC", tf).expect("marks"), marks);
    let digest = store
        .series("ETH/BTC", tf)
        .expect("series")
        .expect("row")
        .digest;
    assert_eq!(
        digest,
        columns::digest(&candles),
        "marks are not in the digest"
    );

    // The same bars from a file that marks none: unchanged, marks kept.
    let again = import(&mut store, &candles, &[], false);
    assert_eq!((again.unchanged, again.marked), (3000, 0));
    assert_eq!(store.marks("ETH/BTC", tf).expect("marks"), marks);

    // Replacing, the file's marks are the bars': bar 5 (changed) and bar
    // 1091 (unchanged), not marked by it, lose theirs; bar 1092 (changed)
    // keeps its, marked again; bar 7 gains one; bars it does not bring
    // (0, 2999) keep theirs.
    let mut changed = candles[5..1093].to_vec();
    for i in [0, 1087] {
        changed[i].volume += 1.0;
    }
    let report = import(&mut store, &changed, &[at(7), at(1092)], true);
    assert_eq!((report.replaced, report.marked), (2, 2));
    assert_eq!(
        store.marks("ETH/BTC", tf).expect("marks"),
        [at(0), at(7), at(1092), at(2999)]
    );

    // A deleted series takes its marks with it.
    store.delete_series("ETH/BTC", tf.as_str()).expect("delete");
    import(&mut store, &candles, &[], false);
    assert!(store.marks("ETH/BTC", tf).expect("marks").is_empty());
}

/// A reader that holds the store still sees the catalogue, the marks and
/// the spans of one state while an import commits another: never bars
/// that seem damaged because the catalogue was read before the import
/// and the spans after it, nor another import's marks beside its bars.
#[test]
fn a_reader_held_still_sees_one_state_while_an_import_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let tf = Timeframe::H1;
    let candles = synth::random_walk(4, 2000, 0, 3_600_000, 10.0, 0.01);
    let marked = |store: &mut Store, bars: &[Candle], marks: &[i64]| {
        store
            .import_with("ETH/BTC", tf, "m.csv", true, |import| {
                import.push_marked(bars, marks)?;
                Ok::<_, StoreError>("blake3:00".to_owned())
            })
            .expect("import")
    };
    let mut writer = Store::open(&db).expect("open");
    marked(&mut writer, &candles, &[candles[3].time_ms]);

    let reader = Store::open(&db).expect("open");
    reader.hold_still().expect("hold");
    let listed = reader.series("ETH/BTC", tf).expect("series").expect("row");
    // Another state: every bar's volume changed, two other marks.
    let mut changed = candles.clone();
    changed.iter_mut().for_each(|c| c.volume += 1.0);
    marked(
        &mut writer,
        &changed,
        &[changed[1].time_ms, changed[1500].time_ms],
    );

    assert_eq!(
        reader.marks("ETH/BTC", tf).expect("marks"),
        [candles[3].time_ms]
    );
    let mut read = Vec::new();
    let whole = reader
        .stream_series(&listed, tf, |span| {
            read.append(span);
            true
        })
        .expect("the state the catalogue was read in");
    assert!(whole);
    assert_eq!(read, candles);
    drop(reader);
    // Let go, a reader sees the import.
    let reader = Store::open(&db).expect("open");
    assert_eq!(reader.marks("ETH/BTC", tf).expect("marks").len(), 2);
}

#[test]
fn spans_an_older_keel_kept_plain_are_read_alike_and_packed_when_written_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let candles = synth::random_walk(4, 70_000, 0, 60_000, 10.0, 0.01);
    let import = |store: &mut Store, bars: &[Candle]| {
        store
            .import_candles("ETH/BTC", Timeframe::M1, bars, "a.csv", b"a", false)
            .expect("import")
    };
    import(&mut store, &candles[..69_990]);
    let sizes = |store: &Store| -> Vec<(i64, i64)> {
        let mut stmt = (store.conn)
            .prepare("SELECT length(columns), packed FROM candle_spans ORDER BY span")
            .expect("prepare");
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)));
        rows.expect("query").map(|r| r.expect("row")).collect()
    };
    let packed = sizes(&store);
    // Its spans as a Keel before packing wrote them: plain columns.
    let mut plain = Vec::new();
    for span in columns::spans(&candles[..69_990]) {
        columns::encode(span, &mut plain);
        (store.conn)
            .execute(
                "UPDATE candle_spans SET columns = ?1, packed = 0 WHERE span = ?2",
                params![plain, columns::span_of(span[0].time_ms)],
            )
            .expect("plain");
    }
    let was_plain = sizes(&store);
    assert_eq!(was_plain, [(65_536 * 48, 0), (4_454 * 48, 0)]);
    // A full-precision walk of 1% a bar packs to under three quarters of
    // its plain bytes.
    assert!(
        packed
            .iter()
            .zip(&was_plain)
            .all(|(p, w)| p.1 == 1 && p.0 * 4 < w.0 * 3),
        "{packed:?}"
    );
    let (loaded, digest) = (store.load_series("ETH/BTC", Timeframe::M1))
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles[..69_990]);
    assert_eq!(digest, columns::digest(&candles[..69_990]));
    // Ten more bars: the span they fall in is written again, packed; the
    // other stays as it was.
    import(&mut store, &candles);
    let now = sizes(&store);
    assert_eq!((now[0], now[1].1), (was_plain[0], 1));
    let (loaded, digest) = (store.load_series("ETH/BTC", Timeframe::M1))
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);
    assert_eq!(digest, columns::digest(&candles));
}

/// How the file at `db` is kept, from its header on disk: 1 with a
/// rollback journal, 2 with the write-ahead log.
fn kept_with(db: &Path) -> u8 {
    std::fs::read(db).expect("read the file")[18]
}

fn size_of(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}

/// Into a file no other connection has open, an import writes in place:
/// its bars go into the file once, none through the write-ahead log, and
/// the file goes back to its log after, whether the import commits or
/// fails. A process that opens the file meanwhile waits for the import,
/// then sees it whole. Beside another connection, an import goes through
/// the log, and the other reads on.
#[test]
fn an_import_writes_in_place_into_a_file_of_its_own_and_through_the_log_beside_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let wal = dir.path().join("keel.db-wal");
    let killed = dir.path().join("killed.db");
    let journal = dir.path().join("keel.db-journal");
    // About 3 MB packed: more than SQLite's page cache holds, so pages
    // reach the file before the commit.
    let candles = synth::random_walk(5, 200_000, 0, 60_000, 10.0, 0.01);
    let mut store = Store::open(&db).expect("open");
    assert_eq!(kept_with(&db), 2);
    let mut opener = None;
    store
        .import_with("ETH/BTC", Timeframe::M1, "a.csv", false, |import| {
            assert_eq!(kept_with(&db), 1, "in place");
            // It holds the file whole: a reader that took it would keep
            // the pages in memory. Readers wait.
            let reader = rusqlite::Connection::open(&db).expect("open");
            reader
                .busy_timeout(std::time::Duration::ZERO)
                .expect("no wait");
            let read = reader.query_row("SELECT COUNT(*) FROM candle_series", [], |_| Ok(()));
            assert!(read.is_err(), "a reader took the file");
            import.push(&candles[..150_000])?;
            assert!(size_of(&journal) > 0, "the rollback journal is on disk");
            // The file as a SIGKILL now would leave it: pages of the import
            // in it, and the journal hot.
            std::fs::copy(&db, &killed).expect("copy");
            std::fs::copy(&journal, dir.path().join("killed.db-journal")).expect("copy");
            let other = db.clone();
            let thread = std::thread::spawn(move || {
                let store = Store::open(&other)?;
                store.load_series("ETH/BTC", Timeframe::M1)
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(!thread.is_finished(), "an opener waits for the import");
            opener = Some(thread);
            import.push(&candles[150_000..])?;
            Ok::<_, StoreError>(file_digest_of(b"a"))
        })
        .expect("import");
    assert_eq!(kept_with(&db), 2, "back to the log");
    // A command reading the record waits for an import as a writer would.
    let record = crate::store::open_record(&db).expect("record");
    let waits: i64 = (record.query_row("PRAGMA busy_timeout", [], |r| r.get(0))).expect("wait");
    assert_eq!(waits, crate::store::LOCK_WAIT.as_millis() as i64);
    drop(record);
    // The file a kill left: the first connection, one that only reads,
    // rolls the import back, and the file goes back to its log.
    assert_eq!(kept_with(&killed), 1);
    let reader = crate::store::read_only(&killed).expect("read the killed file");
    let series: i64 =
        (reader.query_row("SELECT COUNT(*) FROM candle_spans", [], |r| r.get(0))).expect("count");
    assert_eq!(series, 0, "none of the import");
    assert_eq!(kept_with(&killed), 2);
    drop(reader);
    assert!(size_of(&wal) < 100_000, "{} bytes logged", size_of(&wal));
    let (seen, _) = (opener.expect("started").join())
        .expect("the opener")
        .expect("opened and read")
        .expect("stored");
    assert_eq!(seen, candles);

    // A failed import in place leaves nothing of itself, and the log.
    let listed = store.list_series().expect("list");
    let later = synth::random_walk(6, 150_000, 400 * columns::SPAN_MS, 60_000, 10.0, 0.01);
    let failed = store.import_with("ETH/BTC", Timeframe::M1, "b.csv", false, |import| {
        import.push(&later)?;
        Err::<String, _>(StoreError::Conflict("b.csv: row 150001: broken".into()))
    });
    assert!(failed.is_err());
    assert_eq!(kept_with(&db), 2);
    assert_eq!(store.list_series().expect("list"), listed);

    // Beside another connection: through the log, the other reading on.
    let reader = Store::open(&db).expect("open");
    store
        .import_with("ETH/BTC", Timeframe::M1, "b.csv", false, |import| {
            assert_eq!(kept_with(&db), 2, "through the log");
            import.push(&later)?;
            let listed = reader.list_series().expect("a reader reads meanwhile");
            assert_eq!(listed[0].bars, 200_000);
            Ok::<_, StoreError>(file_digest_of(b"b"))
        })
        .expect("import");
    assert!(size_of(&wal) > 1_000_000, "{} bytes logged", size_of(&wal));
    let (loaded, _) = (reader.load_series("ETH/BTC", Timeframe::M1))
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.len(), 350_000);
}
