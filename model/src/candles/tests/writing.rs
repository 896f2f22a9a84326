//! Tests of candle files written: whole, in pieces, marked, and by two
//! writers at once.
use super::super::*;

#[test]
fn written_csv_reads_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("synth.csv");
    let candles = crate::synth::random_walk(9, 200, 1_700_000_000_000, 60_000, 50.0, 0.02);
    write_csv(&path, &candles).expect("write");
    assert_eq!(read_csv(&path).expect("read"), candles);
    // Extremes stay exact and short; times keep their milliseconds.
    let mut odd = candles[..3].to_vec();
    odd[0].volume = 5e-324;
    odd[1].volume = 0.0;
    odd[1].time_ms += 1;
    odd[2].volume = 99_999_999_999_999.98;
    write_csv(&path, &odd).expect("write");
    let text = std::fs::read_to_string(&path).expect("text");
    assert!(text.lines().all(|l| l.len() < 120), "{text}");
    assert!(text.contains("T22:14:20.001Z,"), "{text}");
    assert_eq!(read_csv(&path).expect("read"), odd);
}

#[test]
fn a_file_written_in_pieces_is_the_file_written_whole_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let candles = crate::synth::random_walk(4, 70_000, 1_700_000_000_000, 60_000, 50.0, 0.02);
    let mut names = vec!["a.csv", "a.csv.gz"];
    if cfg!(feature = "formats") {
        names.push("a.parquet");
    }
    for name in names {
        let (whole, pieces) = (
            dir.path().join(format!("whole-{name}")),
            dir.path().join(name),
        );
        write_file(&whole, &candles).expect("whole");
        let io = |error| CandleError::Write {
            path: name.into(),
            error,
        };
        write_file_each(&pieces, false, |put| {
            for piece in candles.chunks(6_553) {
                put(piece, &[]).map_err(io)?;
                put(&[], &[]).map_err(io)?;
            }
            Ok::<_, CandleError>(())
        })
        .expect("pieces");
        assert_eq!(read_file(&pieces).expect("read"), candles, "{name}");
        if !name.ends_with(".gz") {
            assert_eq!(
                std::fs::read(&pieces).expect("bytes"),
                std::fs::read(&whole).expect("bytes"),
                "{name}"
            );
        }
        // A fill that fails leaves the file as it was.
        let failed = write_file_each(&pieces, false, |put| {
            put(&candles[..10], &[]).map_err(io)?;
            Err(CandleError::Empty {
                path: "the source".into(),
            })
        });
        assert_eq!(
            failed.expect_err("failed").to_string(),
            "the source: no candles"
        );
        assert_eq!(read_file(&pieces).expect("read"), candles, "{name}");
    }
}

/// A file that marks partial bars has a last column `partial` with a mark
/// for each bar, however the pieces came (Parquet's batches cut across
/// them); marks that do not fit the bars fail the writing, and leave
/// nothing.
#[test]
fn a_marked_file_has_a_mark_for_each_bar_in_its_last_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let candles = crate::synth::random_walk(6, 70_000, 1_700_000_000_000, 60_000, 50.0, 0.02);
    let marks: Vec<bool> = (0..candles.len())
        .map(|i| i % 3 == 0 || i > 65_530)
        .collect();
    let mut names = vec!["m.csv", "m.csv.gz"];
    if cfg!(feature = "formats") {
        names.push("m.parquet");
    }
    for name in names {
        let path = dir.path().join(name);
        let io = |error| CandleError::Write {
            path: name.into(),
            error,
        };
        write_file_each(&path, true, |put| {
            for (bars, marks) in candles.chunks(6_553).zip(marks.chunks(6_553)) {
                put(bars, marks).map_err(io)?;
                put(&[], &[]).map_err(io)?;
            }
            Ok::<_, CandleError>(())
        })
        .expect("written");
        assert_eq!(read_file(&path).expect("read"), candles, "{name}");
        assert_eq!(written_marks(&path), marks, "{name}");
        // Read back, the marks are the times of the bars marked, whole
        // or in pieces.
        let marked: Vec<i64> = (candles.iter().zip(&marks))
            .filter(|(_, m)| **m)
            .map(|(c, _)| c.time_ms)
            .collect();
        let read = read_file_marked(&path, &Columns::default()).expect("read marked");
        assert_eq!(read, (candles.clone(), marked.clone()), "{name}");
        let (mut bars, mut times) = (Vec::new(), Vec::new());
        read_file_each_marked(&path, &Columns::default(), |piece, marks| {
            assert!(marks.iter().all(|t| piece.iter().any(|c| c.time_ms == *t)));
            bars.extend(piece);
            times.extend(marks);
            Ok::<_, CandleError>(())
        })
        .expect("read in pieces");
        assert_eq!((bars, times), (candles.clone(), marked), "{name}");

        let wrong = dir.path().join(format!("wrong-{name}"));
        let failed = write_file_each(&wrong, true, |put| {
            put(&candles[..10], &marks[..1]).map_err(io)
        });
        assert!(
            failed
                .expect_err("too few marks")
                .to_string()
                .contains("1 marks of partial bars for 10 bars in a file that marks each"),
            "{name}"
        );
        let failed = write_file_each(&wrong, false, |put| {
            put(&candles[..10], &marks[..10]).map_err(io)
        });
        assert!(failed.is_err(), "marks in a file without them: {name}");
        assert!(!wrong.exists(), "{name}");
    }
}

/// The `partial` column of a marked file, as booleans.
fn written_marks(path: &std::path::Path) -> Vec<bool> {
    #[cfg(feature = "formats")]
    if is_parquet(path) {
        use arrow_array::cast::AsArray;
        let file = std::fs::File::open(path).expect("open");
        let reader = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let mut marks = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let column = batch.column_by_name("partial").expect("a partial column");
            marks.extend(column.as_boolean().iter().map(|m| m.expect("a mark")));
        }
        return marks;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open(path).expect("open"), &mut text).expect("text");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time,open,high,low,close,volume,partial")
    );
    lines
        .map(|line| match line.rsplit_once(',') {
            Some((_, "true")) => true,
            Some((_, "false")) => false,
            _ => panic!("no mark: {line}"),
        })
        .collect()
}

/// Two writers of one file at once (two exports to the same `--out`): each
/// writes a partial file of its own, so the file is one of theirs whole,
/// and neither fails for the other.
#[test]
fn two_writers_of_one_file_at_once_leave_one_of_their_files_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("same.csv");
    let series =
        |seed| crate::synth::random_walk(seed, 20_000, 1_700_000_000_000, 60_000, 50.0, 0.02);
    let (a, b) = (series(1), series(2));
    // What a writer killed mid-write left: removed by the next writer.
    let left_over = dir.path().join(".same.csv.999999999-0.partial");
    std::fs::write(&left_over, "half a file").expect("left over");
    let both_started = std::sync::Barrier::new(2);
    let write = |candles: &[Candle]| {
        write_file_each(&path, false, |put| {
            let io = |error| CandleError::Write {
                path: "same.csv".into(),
                error,
            };
            let (first, rest) = candles.split_at(1_000);
            put(first, &[]).map_err(io)?;
            // Both have begun writing before either goes on.
            both_started.wait();
            for piece in rest.chunks(1_000) {
                put(piece, &[]).map_err(io)?;
                std::thread::yield_now();
            }
            Ok::<_, CandleError>(())
        })
    };
    let (wrote_a, wrote_b) = std::thread::scope(|s| {
        let a = s.spawn(|| write(&a));
        let b = s.spawn(|| write(&b));
        (a.join().expect("a"), b.join().expect("b"))
    });
    wrote_a.expect("the first writer");
    wrote_b.expect("the second writer");
    let read = read_file(&path).expect("a whole file");
    assert!(read == a || read == b, "the file is neither writer's");
    // Nothing is left beside it, nor what an ended writer left.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["same.csv"]);

    // A name as long as a name may be: its partial file's is cut to fit.
    let long = dir.path().join(format!("{}.csv", "é".repeat(125)));
    assert_eq!(long.file_name().expect("name").len(), 254);
    write_file(&long, &a).expect("a long name");
    assert_eq!(read_file(&long).expect("read"), a);
}
