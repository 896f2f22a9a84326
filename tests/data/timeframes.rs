//! Aggregation to a coarser timeframe, against pandas' `resample`.

use super::*;

/// One line of a pandas-made expected file: the bar and how many candles
/// fell in it.
fn expected_bars(path: &Path) -> Vec<(keel_model::candles::Candle, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let number = |i: usize| {
                f[i].parse::<f64>()
                    .unwrap_or_else(|e| panic!("{line}: {e}"))
            };
            let candle = keel_model::candles::Candle {
                time_ms: keel_model::candles::parse_time(f[0]).expect("time"),
                open: number(1),
                high: number(2),
                low: number(3),
                close: number(4),
                volume: number(5),
            };
            (candle, f[6].parse().expect("bars"))
        })
        .collect()
}

/// What pandas' `resample` makes of the shared candles
/// (`tests/data/resample/make.py` wrote it) is what Keel's aggregation
/// makes: the same bars at the same times, the same prices to the bit, the
/// same volumes to rounding, and the same bars marked partial, in pieces
/// as in one.
#[test]
fn aggregation_makes_what_pandas_resample_makes_of_the_shared_data() {
    use keel_model::candles::resample::{FIRST_PARTIAL, Resampler, resample};
    use keel_model::candles::{Timeframe, read_file};
    let dir = crate::support::repo().join("tests/data/resample");
    let cases = [
        ("UNITTEST_BTC-1m.csv", 60_000, ["15m", "1h", "1d"]),
        ("crypto-5m/ETH_BTC-5m.csv", 300_000, ["1h", "4h", "1d"]),
    ];
    for (file, from_ms, targets) in cases {
        let source = read_file(&data(file)).expect(file);
        let stem = Path::new(file)
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("stem");
        for tf in targets {
            let to = Timeframe::parse(tf).expect("timeframe");
            let expected = expected_bars(&dir.join(format!("{stem}-to-{tf}.csv")));
            let made = resample(&source, from_ms, to).expect("resampled");
            assert_eq!(made.candles.len(), expected.len(), "{file} to {tf}");
            for (m, (e, _)) in made.candles.iter().zip(&expected) {
                assert_eq!(
                    (m.time_ms, m.open, m.high, m.low, m.close),
                    (e.time_ms, e.open, e.high, e.low, e.close),
                    "{file} to {tf}"
                );
                let scale = e.volume.abs().max(1.0);
                assert!(
                    (m.volume - e.volume).abs() <= 1e-9 * scale,
                    "{file} to {tf}: {m:?} {e:?}"
                );
            }
            let whole = (to.duration_ms() / from_ms) as usize;
            let short: Vec<bool> = expected.iter().map(|(_, n)| *n < whole).collect();
            let partial: Vec<i64> = (expected.iter().zip(&short))
                .filter(|(_, short)| **short)
                .map(|((bar, _), _)| bar.time_ms)
                .collect();
            assert_eq!(made.partial.count, partial.len(), "{file} to {tf}");
            assert!(
                !partial.is_empty(),
                "the shared data has gaps: bars are partial"
            );
            let first = &partial[..partial.len().min(FIRST_PARTIAL)];
            assert_eq!(made.partial.first, first, "{file} to {tf}");
            // Bar by bar, as an export marks them.
            let mut resampler = Resampler::new(from_ms, to).expect("valid");
            let (mut bars, mut marks) = (Vec::new(), Vec::new());
            for piece in source.chunks(1_000) {
                (resampler.push_marked(piece, &mut bars, &mut marks)).expect("on the clock");
            }
            resampler.finish_marked(&mut bars, &mut marks);
            assert_eq!(bars, made.candles, "{file} to {tf}");
            assert_eq!(marks, short, "{file} to {tf}");
        }
    }
}

/// An aggregated export marks each partial bar in a `partial` column, as
/// pandas counts them short: `true`/`false` in CSV, which pandas reads as
/// booleans, and a boolean column in Parquet; the summary says how many
/// and where the first are. An export as stored has no such column.
#[test]
fn an_aggregated_export_marks_the_bars_pandas_counts_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    let out = import_file(&db, path(&eth), "ETH/BTC", "5m");
    assert!(out.status.success(), "{}", stderr(&out));
    let expected =
        expected_bars(&crate::support::repo().join("tests/data/resample/ETH_BTC-5m-to-1h.csv"));
    let short: Vec<bool> = expected.iter().map(|(_, n)| *n < 12).collect();
    let count = short.iter().filter(|s| **s).count();
    assert!(count > 0 && count < short.len(), "{count}");

    let csv = dir.path().join("eth-1h.csv");
    let out = export_eth(&db, &csv, &["--timeframe", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = keel_model::candles::format_time(
        expected[short.iter().position(|s| *s).expect("a partial bar")]
            .0
            .time_ms,
    );
    assert!(
        stdout(&out).contains(&format!("({count} partial, marked in its partial column"))
            && stdout(&out).contains(&format!("; at {first}")),
        "{}",
        stdout(&out)
    );
    let text = std::fs::read_to_string(&csv).expect("csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time,open,high,low,close,volume,partial")
    );
    let marks: Vec<bool> = lines
        .map(|line| match line.rsplit_once(',') {
            Some((_, "true")) => true,
            Some((_, "false")) => false,
            _ => panic!("no mark: {line}"),
        })
        .collect();
    assert_eq!(marks, short);
    // Read as candles, the column is left aside: the bars aggregated.
    let read = keel_model::candles::read_file(&csv).expect("read");
    let bars: Vec<_> = expected.iter().map(|(bar, _)| bar.time_ms).collect();
    assert_eq!(read.iter().map(|c| c.time_ms).collect::<Vec<_>>(), bars);

    let parquet = dir.path().join("eth-1h.parquet");
    let out = export_eth(&db, &parquet, &["--timeframe", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = crate::files::pandas_reads(&parquet);
    let mut lines = said.lines();
    assert_eq!(
        lines.next(),
        Some(
            "date:datetime64[ms, UTC],open:float64,high:float64,low:float64,close:float64,volume:float64,partial:bool"
        )
    );
    let marks: Vec<bool> = lines.map(|line| line.ends_with(",1.0")).collect();
    assert_eq!(marks, short, "pandas reads the marks");
    assert_eq!(
        keel_model::candles::read_file(&parquet).expect("read"),
        read
    );

    // As stored: no marks, no column.
    let out = export_eth(&db, &csv, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert_eq!(text.lines().next(), Some("time,open,high,low,close,volume"));
}

/// `--timeframe` hands a strategy the bars it declares: sma-cross (1h) on
/// one-minute candles is warned and told how, and with `--timeframe 1h`
/// runs on hourly bars with a note of the partial ones; a finer or unknown
/// timeframe is refused in one line.
#[test]
fn a_backtest_aggregates_to_the_timeframe_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let sma = crate::support::example("sma-cross")
        .to_str()
        .expect("utf-8");
    let btc = data("UNITTEST_BTC-1m.csv");
    let btc = btc.to_str().expect("utf-8");
    let json = dir.path().join("r.json");
    let out = keel(&db, &["backtest", sma, "--data", btc]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("declares 1h bars") && said.contains("--timeframe 1h aggregates them"),
        "{said}"
    );
    let out = keel(
        &db,
        &[
            "backtest",
            sma,
            "--data",
            btc,
            "--timeframe",
            "1h",
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("declares 1h bars"), "{said}");
    assert!(
        said.contains("note: ")
            && said.contains("as 1h: ")
            && said.contains("of 240 bars are partial")
            && said.contains("inside them): at 2017-11-04T23:00:00Z, "),
        "{said}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["data"][0]["bars"], 240);
    assert_eq!(report["data"][0]["partial"], 118, "the report counts them");
    assert!(
        report["data"][0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(" as 1h"))
    );
    // From the store, aggregated as it is read: the same bars, the same
    // partial ones.
    let out = import_file(&db, btc, "BTC/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    let from_file = report;
    let json_text = json.to_str().expect("utf-8");
    let args = [
        "--data",
        "BTC/USD@1m",
        "--timeframe",
        "1h",
        "--json",
        json_text,
    ];
    let out = keel(&db, &[&["backtest", sma][..], &args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("store:BTC/USD@1m as 1h: 118 of 240 bars are partial"),
        "{}",
        stderr(&out)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    for same in ["digest", "bars", "partial"] {
        assert_eq!(
            report["data"][0][same], from_file["data"][0][same],
            "{same}"
        );
    }

    let eth = data("crypto-5m/ETH_BTC-5m.csv");
    for (tf, says) in [
        ("1m", "5m bars do not make whole 1m bars"),
        ("7m", "unknown timeframe"),
        ("1w", "5m, 15m, 1h, 4h, 1d only, not 1w"),
    ] {
        let out = keel(
            &db,
            &[
                "backtest",
                sma,
                "--data",
                eth.to_str().expect("utf-8"),
                "--timeframe",
                tf,
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tf}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{tf}: {err}");
    }
}

/// A file that marks its partial bars (an aggregated export) keeps them
/// partial when it is used again: a backtest of it notes and counts them,
/// streamed or loaded whole for a grid, CSV or Parquet; aggregated
/// further, a bar holding one is partial, so the file gives the bars and
/// the partial count the store's one-minute candles give. An import keeps
/// the marks beside the bars: the stored series says them as the file
/// did, in a backtest (streamed, whole, aggregated) and in its export; a
/// bar replaced by a file that does not mark it loses its mark, and a
/// deleted series its marks.
#[test]
fn a_files_marks_of_partial_bars_are_kept_by_a_backtest_an_import_and_an_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let sma = crate::support::example("sma-cross")
        .to_str()
        .expect("utf-8");
    let btc = data("UNITTEST_BTC-1m.csv");
    let out = import_file(&db, btc.to_str().expect("utf-8"), "BTC/USD", "1m");
    assert!(out.status.success(), "{}", stderr(&out));
    let json = dir.path().join("r.json");
    let json_text = json.to_str().expect("utf-8");
    let report = |args: &[&str]| -> (String, serde_json::Value) {
        let out = keel(
            &db,
            &[&["backtest", sma, "--json", json_text][..], args].concat(),
        );
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = std::fs::read_to_string(&json).expect("json");
        (stderr(&out), serde_json::from_str(&text).expect("json"))
    };
    let (_, from_store) = report(&["--data", "BTC/USD@1m", "--timeframe", "4h"]);
    assert_eq!(from_store["data"][0]["partial"], 38);

    for name in ["btc-1h.csv", "btc-1h.parquet"] {
        let file = dir.path().join(name);
        let file_text = file.to_str().expect("utf-8");
        let out = keel(
            &db,
            &[
                "data",
                "export",
                "BTC/USD@1m",
                "--timeframe",
                "1h",
                "--out",
                file_text,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let spec = format!("BTC/USD={file_text}");

        let (said, run) = report(&["--data", &spec]);
        assert!(
            said.contains(&format!(
                "{name}: 118 of 240 bars are marked partial by the file ("
            )) && said.contains("): at 2017-11-04T23:00:00Z, "),
            "{said}"
        );
        assert_eq!(run["data"][0]["partial"], 118, "{name}");
        let grid = ["--data", &spec, "--param", "fast=5..10:5"];
        let (said, runs) = report(&grid);
        assert!(
            said.contains("118 of 240 bars are marked partial"),
            "{said}"
        );
        assert_eq!(runs[1]["data"][0]["partial"], 118, "{name}: a grid's run");

        // Aggregated again: what the one-minute candles make.
        let (said, run) = report(&["--data", &spec, "--timeframe", "4h"]);
        assert!(
            said.contains(&format!("{name} as 4h: 38 of 61 bars are partial"))
                && said.contains("or a bar the file marks partial"),
            "{said}"
        );
        // (Volumes summed in another order may differ in their last digit.)
        for same in ["bars", "partial", "first", "last"] {
            assert_eq!(
                run["data"][0][same], from_store["data"][0][same],
                "{name}: {same}"
            );
        }

        let out = import_file(&db, file_text, "BTC/USD", "1h");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(
                "118 of its bars are marked partial by the file (at 2017-11-04T23:00:00Z, "
            ) && stdout(&out).contains("kept as marks beside them"),
            "{}",
            stdout(&out)
        );
    }

    // The stored hours say their marks as the file did: read as they
    // run, loaded whole for a grid, and aggregated.
    let (said, run) = report(&["--data", "BTC/USD@1h"]);
    assert!(
        said.contains(
            "store:BTC/USD@1h: 118 of 240 bars are marked partial by the file it was imported \
             from"
        ),
        "{said}"
    );
    assert_eq!(run["data"][0]["partial"], 118);
    let (said, runs) = report(&["--data", "BTC/USD@1h", "--param", "fast=5..10:5"]);
    assert!(
        said.contains("118 of 240 bars are marked partial"),
        "{said}"
    );
    assert_eq!(runs[1]["data"][0]["partial"], 118, "a grid's run");
    let (said, run) = report(&["--data", "BTC/USD@1h", "--timeframe", "4h"]);
    assert!(
        said.contains("store:BTC/USD@1h as 4h: 38 of 61 bars are partial"),
        "{said}"
    );
    for same in ["bars", "partial", "first", "last"] {
        assert_eq!(run["data"][0][same], from_store["data"][0][same], "{same}");
    }

    // Exported, the hours are marked again, as the file that brought them.
    let again = dir.path().join("again.csv");
    let again_text = again.to_str().expect("utf-8");
    let out = keel(&db, &["data", "export", "BTC/USD@1h", "--out", again_text]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("wrote 240 bars of BTC/USD 1h (118 partial"),
        "{}",
        stdout(&out)
    );
    let first = std::fs::read_to_string(dir.path().join("btc-1h.csv")).expect("csv");
    assert_eq!(std::fs::read_to_string(&again).expect("csv"), first);

    // The marked hour at 23:00 replaced by a file that does not mark it.
    let plain = dir.path().join("plain.csv");
    std::fs::write(
        &plain,
        "time,open,high,low,close,volume\n2017-11-04T23:00:00Z,1,2,1,2,5\n",
    )
    .expect("write");
    let plain_text = plain.to_str().expect("utf-8");
    let out = keel(
        &db,
        &[
            "data",
            "import",
            plain_text,
            "--symbol",
            "BTC/USD",
            "--timeframe",
            "1h",
            "--replace",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, run) = report(&["--data", "BTC/USD@1h"]);
    assert_eq!(run["data"][0]["partial"], 117);

    // Deleted, the series takes its marks: its hours again, unmarked.
    let out = keel(&db, &["data", "delete", "BTC/USD@1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unmarked: String = (first.lines())
        .map(|l| l.rsplit_once(',').map_or(l, |(row, _)| row).to_owned() + "\n")
        .collect();
    std::fs::write(&plain, unmarked).expect("write");
    let out = import_file(&db, plain_text, "BTC/USD", "1h");
    assert!(out.status.success(), "{}", stderr(&out));
    let (said, run) = report(&["--data", "BTC/USD@1h"]);
    assert!(!said.contains("marked partial"), "{said}");
    // (A report leaves out a count of none.)
    assert_eq!(run["data"][0]["partial"].as_u64().unwrap_or(0), 0);
    assert_eq!(run["data"][0]["bars"], 240);
}

/// A file of one bar does not tell its length: its name may (`-1d`),
/// else it is taken as a bar of the timeframe asked for, never called
/// partial or made into a bar of another length, as the same bar stored
/// with its timeframe is not; with its name's length it is aggregated as
/// that.
#[test]
fn a_file_of_one_bar_is_not_called_partial_for_a_length_it_does_not_tell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let sma = path(crate::support::example("sma-cross"));
    let bar = "time,open,high,low,close,volume\n2020-01-01T00:00:00Z,1,1,1,1,1\n";
    let json = dir.path().join("r.json");
    let run = |data: &str, tf: &str| {
        let args = ["backtest", sma, "--data", data, "--timeframe", tf];
        let out = keel(&db, &[&args[..], &["--json", path(&json)]].concat());
        assert!(out.status.success(), "{data} {tf}: {}", stderr(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
        (stderr(&out), report["data"][0].clone())
    };
    let one = dir.path().join("one.csv");
    std::fs::write(&one, bar).expect("write");
    for tf in ["1h", "1d"] {
        let (said, data) = run(&format!("ONE={}", path(&one)), tf);
        assert!(!said.contains("partial"), "{tf}: {said}");
        assert!(data["partial"].is_null(), "{tf}: {data}");
        assert_eq!(data["bars"], 1);
    }
    // Stored as a daily bar: the store knows its length.
    let out = import_file(&db, path(&one), "ONE", "1d");
    assert!(out.status.success(), "{}", stderr(&out));
    let (said, data) = run("ONE@1d", "1d");
    assert!(
        !said.contains("partial") && data["partial"].is_null(),
        "{said}"
    );
    // A name that says 5m: one of twelve in its hour.
    let named = dir.path().join("ONE_USD-5m.csv");
    std::fs::write(&named, bar).expect("write");
    let (said, data) = run(path(&named), "1h");
    assert!(said.contains("1 of 1 bar is partial"), "{said}");
    assert_eq!(data["partial"], 1);
}

/// Hourly bars opening at half past (a series stored on its own grid):
/// the one at 03:30 runs to 04:30, past the start of the 4h bar at 04:00,
/// so no 4h bar holds it whole. Aggregating them is refused, naming it,
/// by a backtest of the file, one of the stored series and an export —
/// never 4h bars labelled 00:00 that hold 00:30 to 04:30.
#[test]
fn bars_off_the_new_timeframes_boundaries_are_not_aggregated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let sma = path(crate::support::example("sma-cross"));
    let mut text = String::from("time,open,high,low,close,volume\n");
    for h in 0..8 {
        text.push_str(&format!("2020-01-01T{h:02}:30:00Z,1,2,1,2,{}\n", h + 1));
    }
    let file = dir.path().join("off.csv");
    std::fs::write(&file, text).expect("write");
    let why = "the 1h candle at 2020-01-01T03:30:00Z runs past 2020-01-01T04:00:00Z, where a 4h \
               bar starts: candles that open off the 4h bars' boundaries cannot be aggregated to 4h";

    let spec = format!("OFF={}", path(&file));
    let out = keel(
        &db,
        &["backtest", sma, "--data", &spec, "--timeframe", "4h"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains(why),
        "{}",
        stderr(&out)
    );

    let out = import_file(&db, path(&file), "OFF", "1h");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel(
        &db,
        &["backtest", sma, "--data", "OFF@1h", "--timeframe", "4h"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains(&format!("store:OFF@1h as 4h: {why}")),
        "{}",
        stderr(&out)
    );
    // A grid loads the series whole: alike.
    let grid = [
        "backtest",
        sma,
        "--data",
        "OFF@1h",
        "--timeframe",
        "4h",
        "--param",
        "fast=5..10:5",
    ];
    let out = keel(&db, &grid);
    assert!(
        !out.status.success() && stderr(&out).contains(why),
        "{}",
        stderr(&out)
    );
    let out_file = dir.path().join("off-4h.csv");
    let args = [
        "data",
        "export",
        "OFF@1h",
        "--timeframe",
        "4h",
        "--out",
        path(&out_file),
    ];
    let out = keel(&db, &args);
    assert!(
        !out.status.success() && stderr(&out).contains(&format!("OFF@1h: {why}")),
        "{}",
        stderr(&out)
    );
    assert!(!out_file.exists(), "a refused export leaves no file");
    // The hours themselves are what they were.
    let out = keel(&db, &["backtest", sma, "--data", "OFF@1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
