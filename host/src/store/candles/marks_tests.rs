//! The candle store's tests of the marks of partial bars under damage:
//! dropped with damaged bars, refused or found when damaged themselves,
//! mended by `--replace`.
use super::*;
use keel_model::synth;

/// Damaged bars dropped by a mending import take their marks of partial
/// bars with them: none is left to mark a bar imported there later.
#[test]
fn damaged_bars_dropped_take_their_marks_with_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let span = (columns::SPAN_MS / 60_000) as usize;
    let all = synth::random_walk(6, 2 * span + 100, 0, 60_000, 10.0, 0.01);
    let marks = [all[10].time_ms, all[2 * span + 5].time_ms];
    let import = |store: &mut Store, bars: &[Candle], marks: &[i64]| {
        store.import_with("A/B", Timeframe::M1, "m.csv", true, |import| {
            import.push_marked(bars, marks)?;
            Ok::<_, StoreError>("blake3:00".to_owned())
        })
    };
    import(&mut store, &all, &marks).expect("import");
    store
        .conn
        .execute(
            "UPDATE candle_spans SET columns = zeroblob(length(columns)) WHERE span = 2",
            [],
        )
        .expect("damage");
    // A file of the first bars alone (its mark at bar 10 again) mends it
    // by dropping the damaged span, whose mark goes with it.
    let mended = import(&mut store, &all[..100], &marks[..1]).expect("mended");
    assert!(
        mended
            .mended
            .iter()
            .any(|m| m.starts_with("dropped damaged")),
        "{:?}",
        mended.mended
    );
    assert_eq!(
        store.marks("A/B", Timeframe::M1).expect("marks"),
        marks[..1]
    );
    // The dropped bars brought back unmarked are unmarked.
    import(&mut store, &all[2 * span..], &[]).expect("again");
    assert_eq!(
        store.marks("A/B", Timeframe::M1).expect("marks"),
        marks[..1]
    );
}

/// Marks of partial bars damaged behind Keel's back (not whole times, out
/// of order, outside their span, for a span with no bars) are refused by
/// name where a backtest or an export reads them; a mark at no stored
/// bar's time, which a read passes over, is found by `check_series`; an
/// import of the file with `--replace` mends each.
#[test]
fn damaged_marks_are_refused_found_by_the_check_and_mended_by_replace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("keel.db")).expect("open");
    let span = (columns::SPAN_MS / 60_000) as usize;
    let all = synth::random_walk(7, span + 100, 0, 60_000, 10.0, 0.01);
    let marks = [all[10].time_ms, all[span + 5].time_ms];
    let import = |store: &mut Store, replace: bool| {
        store.import_with("A/B", Timeframe::M1, "m.csv", replace, |import| {
            import.push_marked(&all, &marks)?;
            Ok::<_, StoreError>("blake3:00".to_owned())
        })
    };
    import(&mut store, false).expect("import");
    let listed = |store: &Store| store.list_series().expect("list").remove(0);
    store.check_series(&listed(&store)).expect("whole");
    let stray = marks_bytes(&[all[10].time_ms + 1]);
    let orphan = marks_bytes(&[5 * columns::SPAN_MS]);
    let out_of_order = marks_bytes(&[all[10].time_ms, all[5].time_ms]);
    let outside = marks_bytes(&[1, all[span + 5].time_ms]);
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "UPDATE candle_marks SET times = ?1 WHERE span = 0",
            b"\xde\xad\xbe\xef",
            "its marks of partial bars are damaged",
        ),
        (
            "UPDATE candle_marks SET times = ?1 WHERE span = 0",
            &out_of_order,
            "its marks of partial bars are damaged",
        ),
        (
            "UPDATE candle_marks SET times = ?1 WHERE span = 1",
            &outside,
            "its marks of partial bars are damaged",
        ),
        (
            "UPDATE candle_marks SET times = CAST(?1 AS TEXT) WHERE span = 1",
            b"10, 20",
            "its marks of partial bars are damaged",
        ),
        (
            "INSERT INTO candle_marks (symbol, timeframe, span, times) VALUES ('A/B', '1m', 5, ?1)",
            &orphan,
            "marks of partial bars kept where no bars are",
        ),
        (
            "UPDATE candle_marks SET times = ?1 WHERE span = 0",
            &stray,
            "a mark of a partial bar at no stored bar's time",
        ),
    ];
    for (i, (damage, bytes, why)) in cases.into_iter().enumerate() {
        store.conn.execute(damage, [bytes]).expect("damage");
        let said = store
            .check_series(&listed(&store))
            .expect_err(why)
            .to_string();
        assert!(
            said.contains("the stored A/B 1m bars of ")
                && said.contains(&format!("are damaged ({why})"))
                && said.ends_with("import them again with --replace"),
            "{why}: {said}"
        );
        // Read as a backtest reads them: refused, but for the stray mark,
        // which says nothing there.
        match i {
            5 => assert_eq!(
                store.marks("A/B", Timeframe::M1).expect("marks")[1..],
                marks[1..]
            ),
            _ => assert!(store.marks("A/B", Timeframe::M1).is_err(), "{why}"),
        }
        import(&mut store, true).expect("mended");
        assert_eq!(store.marks("A/B", Timeframe::M1).expect("marks"), marks);
        store.check_series(&listed(&store)).expect("mended whole");
        let rows: i64 = (store.conn)
            .query_row("SELECT COUNT(*) FROM candle_marks", [], |r| r.get(0))
            .expect("rows");
        assert_eq!(rows, 2, "{why}");
    }
}
