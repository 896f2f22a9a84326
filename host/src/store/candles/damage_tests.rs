//! The candle store's tests of damage and of the grid: what is refused,
//! what `--replace` mends and says, and deleting a series whole.
use super::*;
use keel_model::candles::packed::Packer;
use keel_model::synth;

/// A whole stored one-minute series, as a load reads it.
fn stored_bars(store: &Store, symbol: &str) -> Vec<Candle> {
    let loaded = store.load_series(symbol, Timeframe::M1).expect("load");
    loaded.expect("some").0
}

#[test]
fn a_damaged_span_is_refused_by_name_not_handed_to_a_backtest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keel.db");
    let candles = synth::random_walk(9, 70_000, 0, 60_000, 10.0, 0.01);
    let fresh = || {
        let _ = std::fs::remove_file(&path);
        let mut store = Store::open(&path).expect("open");
        store
            .import_candles("ETH/BTC", Timeframe::M1, &candles, "a", b"a", false)
            .expect("import");
        store
    };
    let refused = |store: &Store, why: &str| {
        let err = store
            .load_series("ETH/BTC", Timeframe::M1)
            .expect_err(why)
            .to_string();
        assert!(
            err.contains("the stored ETH/BTC 1m bars of 1970-01-01T00:00:00Z .. ")
                && err.contains("are damaged")
                && err.contains(why)
                && err.ends_with("import them again with --replace"),
            "{why}: {err}"
        );
    };
    let mut bytes = Vec::new();
    let mut moved = candles[..65_536].to_vec();
    moved[7].close = moved[7].low;

    // Each damage done by `sql` to a fresh store, refused for `why`.
    let damaged = |sql: &str, params: &[&dyn rusqlite::ToSql], why: &str| {
        let store = fresh();
        store.conn.execute(sql, params).expect("damage");
        refused(&store, why);
    };
    // Written as plain columns, as a Keel before packing wrote them.
    let with_digest =
        "UPDATE candle_spans SET columns = ?1, digest = ?2, packed = 0 WHERE span = 0";

    // A value changed, its digest not: caught by the digest.
    columns::encode(&moved, &mut bytes);
    damaged(
        "UPDATE candle_spans SET columns = ?1, packed = 0 WHERE span = 0",
        &[&bytes],
        "its bars do not match their digest",
    );
    // Both changed, as a hand that knows the layout would: the bars
    // no longer make the catalogue's digest.
    let digest = columns::span_digest(&bytes).to_vec();
    damaged(
        with_digest,
        &[&bytes, &digest],
        "the catalogue and the bars disagree",
    );
    // … and a price no candle may have is refused even then.
    let mut negative = candles[..65_536].to_vec();
    negative[7].open = -1.0;
    columns::encode(&negative, &mut bytes);
    let digest = columns::span_digest(&bytes).to_vec();
    damaged(
        with_digest,
        &[&bytes, &digest],
        "open -1 is outside the prices Keel books",
    );
    // A span gone: the series would be shorter than the catalogue says.
    damaged(
        "DELETE FROM candle_spans WHERE span = 1",
        &[],
        "the catalogue and the bars disagree",
    );
    // The catalogue's row gone, the bars left.
    damaged(
        "DELETE FROM candle_series",
        &[],
        "the catalogue has no row for them",
    );
    // Not bytes at all, and a count no query can sum.
    damaged(
        "UPDATE candle_spans SET columns = 'hello' WHERE span = 0",
        &[],
        "its columns are not bytes",
    );
    damaged(
        "UPDATE candle_spans SET bars = 9223372036854775807 WHERE span = 0",
        &[],
        "its bar count is not its bars'",
    );
    // The figures the catalogue is made of, changed beside the bars.
    damaged(
        "UPDATE candle_spans SET first_ms = first_ms + 60000 WHERE span = 0",
        &[],
        "its first and last times are not its bars'",
    );
    damaged(
        "UPDATE candle_spans SET gaps = 3, missing = 7 WHERE span = 0",
        &[],
        "its gap counts are not its bars'",
    );
}

#[test]
fn replace_mends_damage_wherever_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let span = (columns::SPAN_MS / 60_000) as usize;
    let all = synth::random_walk(5, 3 * span + 1000, 0, 60_000, 10.0, 0.01);
    let import = |store: &mut Store, candles: &[Candle], replace: bool| {
        store.import_candles("A/B", Timeframe::M1, candles, "a.csv", b"a", replace)
    };
    import(&mut store, &all, false).expect("import");

    // A span moved under another's key: refused wherever it is read,
    // and an import without --replace will not make a catalogue of it.
    store
        .conn
        .execute("UPDATE candle_spans SET span = 999 WHERE span = 1", [])
        .expect("damage");
    let err = store.load_series("A/B", Timeframe::M1).expect_err("moved");
    assert!(err.to_string().contains("is outside it"), "{err}");
    let err = import(&mut store, &all, false).expect_err("not mended");
    assert!(
        err.to_string()
            .ends_with("are damaged (its first and last times are not of it); nothing imported (use --replace to drop them)"),
        "{err}"
    );
    assert!(
        store.load_series("A/B", Timeframe::M1).is_err(),
        "rolled back"
    );
    let mended = import(&mut store, &all, true).expect("mended");
    assert_eq!(mended.mended.len(), 1, "{:?}", mended.mended);
    assert!(
        mended.mended[0].starts_with("dropped damaged stored bars of ")
            && mended.mended[0].contains("is outside it"),
        "{:?}",
        mended.mended
    );
    let loaded = stored_bars(&store, "A/B");
    assert!(loaded == all, "{} bars, not {}", loaded.len(), all.len());

    // Damaged bars the file does not cover are dropped, and said to be;
    // whole bars with wrong figures are kept, their figures made again.
    let damage = |store: &Store, sql: &str| store.conn.execute(sql, []).expect("damage");
    damage(
        &store,
        "UPDATE candle_spans SET columns = zeroblob(length(columns)) WHERE span = 3",
    );
    damage(
        &store,
        "UPDATE candle_spans SET first_ms = first_ms + 60000 WHERE span = 0",
    );
    damage(
        &store,
        "UPDATE candle_spans SET gaps = 2, missing = 5 WHERE span = 2",
    );
    let mended = import(&mut store, &all[..1000], true).expect("mended");
    let said = &mended.mended;
    assert_eq!(said.len(), 4, "{said:?}");
    // The catalogue no longer agreed with the first span's changed figures.
    assert!(
        said[0].starts_with("made the catalogue of the stored A/B 1m bars of ")
            && said[0].ends_with("again (it and the spans' figures disagreed)"),
        "{said:?}"
    );
    let said = &said[1..];
    assert!(
        said[0].starts_with("made the figures of stored bars of 1970-01-01T00:00:00Z"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("made the figures of stored bars of ")
            && said[1].contains("gap counts"),
        "{said:?}"
    );
    assert!(
        said[2].starts_with("dropped damaged ") && said[2].contains("its columns are not its bars"),
        "{said:?}"
    );
    // How many bars went, and when they were, as the span's row lists them.
    let lost = &all[3 * span..];
    let listed = format!(
        "; its row lists 1000 bars, {} .. {})",
        format_time(lost[0].time_ms),
        format_time(lost[999].time_ms)
    );
    assert!(said[2].contains(&listed), "{said:?}");
    let kept = &all[..3 * span];
    let loaded = stored_bars(&store, "A/B");
    assert!(loaded == kept, "{} bars, not {}", loaded.len(), kept.len());

    // Damaged bars the file writes into: the span is the file's bars
    // alone, and that is said.
    damage(
        &store,
        "UPDATE candle_spans SET columns = zeroblob(length(columns)) WHERE span = 1",
    );
    let mended = import(&mut store, &all[span..span + 10], true).expect("mended");
    assert_eq!(mended.mended.len(), 1, "{:?}", mended.mended);
    assert!(
        mended.mended[0].contains("the span holds this file's bars alone"),
        "{:?}",
        mended.mended
    );
    let kept = [
        &all[..span],
        &all[span..span + 10],
        &all[2 * span..3 * span],
    ]
    .concat();
    let loaded = stored_bars(&store, "A/B");
    assert!(loaded == kept, "{} bars, not {}", loaded.len(), kept.len());
    let listed = store
        .series("A/B", Timeframe::M1)
        .expect("list")
        .expect("listed");
    assert_eq!(listed.bars as usize, kept.len());

    // A bar count that is not a number at all, the bars whole: refused as
    // damage, and kept by --replace, the count made again.
    for count in ["'abc'", "X'00'"] {
        damage(
            &store,
            &format!("UPDATE candle_spans SET bars = {count} WHERE span = 2"),
        );
        let err = store.load_series("A/B", Timeframe::M1).expect_err(count);
        assert!(
            err.to_string().contains("its bar count is not a number"),
            "{err}"
        );
        let mended = import(&mut store, &all[..10], true).expect("mended");
        let said = &mended.mended;
        assert!(
            said.iter()
                .any(|m| m.starts_with("made the figures of stored bars of ")
                    && m.ends_with("(its bar count is not a number)")),
            "{said:?}"
        );
        assert!(!said.iter().any(|m| m.starts_with("dropped")), "{said:?}");
        let loaded = stored_bars(&store, "A/B");
        assert!(
            loaded == kept,
            "{count}: {} bars, not {}",
            loaded.len(),
            kept.len()
        );
    }
}

#[test]
fn a_damaged_span_a_file_covers_whole_is_said_to_be_replaced_not_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let span = (columns::SPAN_MS / 60_000) as usize;
    let all = synth::random_walk(6, 2 * span, 0, 60_000, 10.0, 0.01);
    let import = |store: &mut Store, candles: &[Candle]| {
        store.import_candles("A/B", Timeframe::M1, candles, "a.csv", b"a", true)
    };
    import(&mut store, &all).expect("import");
    let damage = "UPDATE candle_spans SET columns = zeroblob(length(columns)) WHERE span = 1";
    store.conn.execute(damage, []).expect("damage");
    let mended = import(&mut store, &all[span..]).expect("mended");
    assert_eq!(mended.mended.len(), 1, "{:?}", mended.mended);
    assert!(
        mended.mended[0].ends_with("this file's bars, which cover all it listed, take their place"),
        "{:?}",
        mended.mended
    );
    let loaded = stored_bars(&store, "A/B");
    assert!(loaded == all, "{} bars, not {}", loaded.len(), all.len());
}

#[test]
fn dated_daily_bars_beside_ones_stored_at_their_instants_say_how_to_mend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    const DAY: i64 = 86_400_000;
    // New York's local midnights, stored before Keel dated them.
    let instants = synth::random_walk(2, 10, 5 * 3_600_000, DAY, 10.0, 0.01);
    store
        .import_candles("AAPL", Timeframe::D1, &instants, "old.csv", b"a", false)
        .expect("import");
    let dated: Vec<Candle> = instants
        .iter()
        .map(|c| Candle {
            time_ms: c.time_ms - 5 * 3_600_000,
            ..*c
        })
        .collect();
    let err = store
        .import_candles("AAPL", Timeframe::D1, &dated, "new.csv", b"b", false)
        .expect_err("off the grid");
    assert!(
        err.to_string().contains(
            "; daily bars written as local midnights are stored as their dates: remove the \
             series stored at their instants with keel data delete AAPL@1d and import it again"
        ),
        "{err}"
    );
    // Bars off the grid another way are not told so.
    let hourly: Vec<Candle> = instants
        .iter()
        .map(|c| Candle {
            time_ms: c.time_ms + 3_600_000,
            ..*c
        })
        .collect();
    let err = store
        .import_candles("AAPL", Timeframe::D1, &hourly, "odd.csv", b"c", false)
        .expect_err("off the grid");
    assert!(!err.to_string().contains("keel data delete"), "{err}");
}

/// A store in `dir` holding 1,000 one-minute ETH/BTC bars, and the bars.
fn thousand_bars(dir: &tempfile::TempDir) -> (Store, Vec<Candle>) {
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let candles = synth::random_walk(9, 1000, 0, 60_000, 10.0, 0.01);
    store
        .import_candles("ETH/BTC", Timeframe::M1, &candles, "a", b"a", false)
        .expect("import");
    (store, candles)
}

#[test]
fn an_import_never_writes_damaged_bars_back_under_a_new_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, candles) = thousand_bars(&dir);
    // A value changed behind Keel's back, its digest not.
    let mut moved = candles.clone();
    moved[7].close = moved[7].low;
    let mut bytes = Vec::new();
    columns::encode(&moved, &mut bytes);
    store
        .conn
        .execute("UPDATE candle_spans SET columns = ?1, packed = 0", [&bytes])
        .expect("damage");
    // More bars into the same span: refused, the damage named.
    let more = synth::random_walk(9, 10, 1000 * 60_000, 60_000, 10.0, 0.01);
    let err = store
        .import_candles("ETH/BTC", Timeframe::M1, &more, "b", b"b", false)
        .expect_err("damaged")
        .to_string();
    assert!(
        // Said by the span's own first and last bar, not its whole range.
        err.contains("the stored ETH/BTC 1m bars of 1970-01-01T00:00:00Z .. 1970-01-01T16:39:00Z are damaged (its bars do not match their digest); nothing imported (use --replace"),
        "{err}"
    );
    assert!(
        store.load_series("ETH/BTC", Timeframe::M1).is_err(),
        "still refused"
    );
    // With --replace the span is made of the bars imported.
    let report = store
        .import_candles("ETH/BTC", Timeframe::M1, &candles, "c", b"c", true)
        .expect("replace");
    assert_eq!(report.inserted, 1000);
    let (loaded, digest) = store
        .load_series("ETH/BTC", Timeframe::M1)
        .expect("load")
        .expect("stored");
    assert_eq!(loaded, candles);
    assert_eq!(digest, columns::digest(&candles));
}

#[test]
fn bars_off_the_series_grid_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let start = 1_704_067_200_000; // 2024-01-01T00:00:00Z
    let on_grid = synth::random_walk(1, 10, start, 60_000, 10.0, 0.01);
    store
        .import_candles("X/Y", Timeframe::M1, &on_grid, "a.csv", b"a", false)
        .expect("import");

    // The same minutes 30 s later: not this series' bars, with or
    // without --replace, and nothing of them is stored.
    let shifted: Vec<Candle> = on_grid
        .iter()
        .map(|c| Candle {
            time_ms: c.time_ms + 10 * 60_000 + 30_000,
            ..*c
        })
        .collect();
    for replace in [false, true] {
        let err = store
            .import_candles("X/Y", Timeframe::M1, &shifted, "b.csv", b"b", replace)
            .expect_err("off the grid");
        assert_eq!(
            err.to_string(),
            "b.csv: the X/Y 1m bar at 2024-01-01T00:10:30Z is off the grid of the series' \
             bars (whole 1m steps from the stored series' first bar, at 2024-01-01T00:00:00Z); \
             nothing imported"
        );
    }
    // One bar a millisecond off, deep in a file of a new series.
    let mut file = synth::random_walk(2, 3000, start, 60_000, 10.0, 0.01);
    file[2500].time_ms += 1;
    let err = store
        .import_candles("Z/Y", Timeframe::M1, &file, "c.csv", b"c", false)
        .expect_err("off the grid");
    assert!(
        err.to_string().contains(
            "bar at 2024-01-02T17:40:00.001Z is off the grid of the series' bars (whole 1m \
             steps from the first bar imported, at 2024-01-01T00:00:00Z)"
        ),
        "{err}"
    );
    let listed = store.list_series().expect("list");
    assert_eq!(listed.len(), 1, "only X/Y: {listed:?}");
    assert_eq!(
        store
            .load_candles("X/Y", Timeframe::M1, None, None)
            .expect("load"),
        on_grid
    );

    // A series may sit anywhere on the clock, as long as all of it does;
    // months have no grid (their bars are 28 to 31 days apart).
    let offset = synth::random_walk(3, 10, start + 30_000, 60_000, 10.0, 0.01);
    store
        .import_candles("W/Y", Timeframe::M1, &offset, "d.csv", b"d", false)
        .expect("a grid of its own");
    let months: Vec<Candle> = [31, 29, 31, 30]
        .iter()
        .scan(start, |t, days| {
            *t += days * 86_400_000;
            Some(*t)
        })
        .zip(synth::random_walk(4, 4, 0, 1, 10.0, 0.01))
        .map(|(time_ms, c)| Candle { time_ms, ..c })
        .collect();
    store
        .import_candles("M/Y", Timeframe::Month1, &months, "e.csv", b"e", false)
        .expect("months");
    // A month's bar a day after a stored one is not the next month's.
    let mut next_day = months[3];
    next_day.time_ms += 86_400_000;
    let err = store
        .import_candles("M/Y", Timeframe::Month1, &[next_day], "f.csv", b"f", false)
        .expect_err("a day apart");
    assert!(
        err.to_string().ends_with(
            "is 1 day from the bar at 2024-05-01T00:00:00Z (months are 28 to 31 days \
             apart); nothing imported"
        ),
        "{err}"
    );
}

#[test]
fn a_deleted_series_is_gone_whole_and_can_be_imported_on_another_grid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let start = 1_704_067_200_000;
    let on_the_minute = synth::random_walk(1, 70_000, start, 60_000, 10.0, 0.01);
    let import = |store: &mut Store, candles: &[Candle]| {
        store.import_candles("X/Y", Timeframe::M1, candles, "a.csv", b"a", false)
    };
    import(&mut store, &on_the_minute).expect("import");
    store
        .conn
        .execute(
            "INSERT INTO download_cursors VALUES ('kraken', 'XY', '1m', 'X/Y', 0, 60000, 0, 0)",
            [],
        )
        .expect("a cursor");
    // Damaged first: deleting does not read the bars.
    store
        .conn
        .execute("UPDATE candle_spans SET columns = x'00'", [])
        .expect("damage");
    let shifted: Vec<Candle> = on_the_minute[..10]
        .iter()
        .map(|c| Candle {
            time_ms: c.time_ms + 30_000,
            ..*c
        })
        .collect();
    assert!(import(&mut store, &shifted).is_err(), "another grid");

    assert_eq!(
        store.delete_series("X/Y", "1m").expect("delete"),
        Some(70_000)
    );
    assert_eq!(store.list_series().expect("list"), []);
    let count = |table: &str| -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        store.conn.query_row(&sql, [], |r| r.get(0)).expect("count")
    };
    assert_eq!((count("candle_spans"), count("download_cursors")), (0, 0));
    assert!(count("candle_imports") > 0, "the record of imports is kept");
    assert_eq!(store.delete_series("X/Y", "1m").expect("again"), None);
    import(&mut store, &shifted).expect("a grid of its own now");
}

#[test]
fn what_a_third_hostile_round_found_is_refused_or_mended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let exec = |store: &Store, sql: &str| store.conn.execute(sql, []).expect("damage");
    let start = 1_704_067_200_000;
    let minutes = synth::random_walk(1, 70_000, start, 60_000, 10.0, 0.01);
    let fives: Vec<Candle> = minutes.iter().step_by(5).copied().collect();
    store
        .import_candles("U", Timeframe::M1, &minutes, "m.csv", b"m", false)
        .expect("1m");
    store
        .import_candles("U", Timeframe::M5, &fives[..100], "f.csv", b"f", false)
        .expect("5m");

    // The 1m series' second span copied under the 5m series: whole bars,
    // but 1m apart, off its grid; refused, and dropped by --replace.
    exec(
        &store,
        "INSERT INTO candle_spans (symbol, timeframe, span, bars, first_ms, last_ms, gaps, missing, digest, columns, packed)
         SELECT symbol, '5m', span, bars, first_ms, last_ms, gaps, missing, digest, columns, packed
         FROM candle_spans WHERE timeframe = '1m' ORDER BY span LIMIT 1 OFFSET 1",
    );
    let err = store.load_series("U", Timeframe::M5).expect_err("refused");
    assert!(
        err.to_string().contains("is off the series' 5m grid"),
        "{err}"
    );
    let mended = store
        .import_candles("U", Timeframe::M5, &fives[..100], "f.csv", b"f", true)
        .expect("mended");
    assert!(
        mended
            .mended
            .iter()
            .any(|m| m.contains("is off the series' 5m grid")),
        "{:?}",
        mended.mended
    );
    let (loaded, _) = store
        .load_series("U", Timeframe::M5)
        .expect("load")
        .expect("some");
    assert!(loaded == fives[..100], "{} bars", loaded.len());

    // The catalogue's own figures damaged: a plain import refuses, and
    // --replace makes it again, the grid still counted from the bars.
    let mut store2 = Store::open(&dir.path().join("two.db")).expect("open");
    store2
        .import_candles("G", Timeframe::M1, &minutes[..1000], "g.csv", b"g", false)
        .expect("import");
    exec(
        &store2,
        "UPDATE candle_series SET first_ms = first_ms + 30000",
    );
    let err = store2
        .import_candles(
            "G",
            Timeframe::M1,
            &minutes[1000..1010],
            "h.csv",
            b"h",
            false,
        )
        .expect_err("catalogue");
    assert!(
        err.to_string()
            .contains("(the catalogue and the bars disagree); nothing imported"),
        "{err}"
    );
    let mended = store2
        .import_candles(
            "G",
            Timeframe::M1,
            &minutes[1000..1010],
            "h.csv",
            b"h",
            true,
        )
        .expect("mended");
    assert!(
        mended.mended[0].starts_with("made the catalogue of"),
        "{:?}",
        mended.mended
    );
    let loaded = stored_bars(&store2, "G");
    assert!(loaded == minutes[..1010], "{} bars", loaded.len());

    // Bars with no catalogue row: not taken in silently.
    exec(&store2, "DELETE FROM candle_series");
    let err = store2
        .import_candles(
            "G",
            Timeframe::M1,
            &minutes[1010..1011],
            "i.csv",
            b"i",
            false,
        )
        .expect_err("no row");
    assert!(
        err.to_string()
            .contains("the catalogue and the bars disagree"),
        "{err}"
    );

    // An empty span row (past the table's checks, as a hand could put
    // it): dropped by --replace, not left to refuse it.
    store2
        .conn
        .pragma_update(None, "ignore_check_constraints", true)
        .expect("pragma");
    exec(
        &store2,
        "UPDATE candle_spans SET bars = 0, columns = x'', digest = zeroblob(32)",
    );
    let mended = store2
        .import_candles(
            "G",
            Timeframe::M1,
            &minutes[50_000..50_010],
            "j.csv",
            b"j",
            true,
        )
        .expect("mended");
    assert!(
        mended
            .mended
            .iter()
            .any(|m| m.starts_with("dropped damaged")),
        "{:?}",
        mended.mended
    );

    // Months: a bar between two stored ones, less than 28 days from them.
    let day = 86_400_000;
    let months: Vec<Candle> = (0..12)
        .map(|m| Candle {
            time_ms: start + m * 31 * day,
            ..minutes[0]
        })
        .collect();
    store2
        .import_candles("M", Timeframe::Month1, &months, "k.csv", b"k", false)
        .expect("months");
    let between = Candle {
        time_ms: start + 5 * 31 * day + 15 * day,
        ..minutes[0]
    };
    let err = store2
        .import_candles("M", Timeframe::Month1, &[between], "l.csv", b"l", true)
        .expect_err("between");
    assert!(
        err.to_string().contains("days after the one at")
            && err.to_string().contains("(months are 28 to 31 days apart)"),
        "{err}"
    );
}

#[test]
fn packed_bars_are_checked_against_the_digest_of_their_plain_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, candles) = thousand_bars(&dir);
    let refused = |store: &Store, why: &str| match store.load_series("ETH/BTC", Timeframe::M1) {
        Err(err) => assert!(
            err.to_string().contains(&format!("are damaged ({why})")),
            "{err}"
        ),
        Ok(_) => panic!("read, not refused for {why}"),
    };
    // A value changed and packed again, as a hand that knows the packing
    // would: whole bars, but not the ones the span's digest is of.
    let mut moved = candles.clone();
    moved[7].close = moved[7].low;
    let (mut plain, mut bytes) = (Vec::new(), Vec::new());
    columns::encode(&moved, &mut plain);
    Packer::default().pack(&plain, &mut bytes);
    let set = |sql: &str, value: &dyn rusqlite::ToSql| {
        store.conn.execute(sql, [value]).expect("damage");
    };
    set("UPDATE candle_spans SET columns = ?1", &bytes);
    refused(&store, "its bars do not match their digest");
    // A packing no Keel wrote.
    columns::encode(&candles, &mut plain);
    Packer::default().pack(&plain, &mut bytes);
    set("UPDATE candle_spans SET columns = ?1", &bytes);
    assert_eq!(stored_bars(&store, "ETH/BTC"), candles);
    for packing in [&7 as &dyn rusqlite::ToSql, &"one", &1.5] {
        set("UPDATE candle_spans SET packed = ?1", packing);
        refused(&store, "its packing is neither 0 nor 1");
    }
    // Packed bytes read as plain columns, and plain ones as packed.
    set("UPDATE candle_spans SET packed = ?1", &0);
    refused(&store, "its bars do not match their digest");
    set("UPDATE candle_spans SET columns = ?1, packed = 1", &plain);
    refused(&store, "its columns are not its bars");
}
