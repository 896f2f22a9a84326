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
/// same volumes to rounding, and the same bars counted partial.
#[test]
fn aggregation_makes_what_pandas_resample_makes_of_the_shared_data() {
    use keel_model::candles::{Timeframe, read_file, resample::resample};
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
            let partial = expected.iter().filter(|(_, n)| *n < whole).count();
            assert_eq!(made.partial, partial, "{file} to {tf}");
            assert!(partial > 0, "the shared data has gaps: some bar is partial");
        }
    }
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
            && said.contains("of 240 bars are partial"),
        "{said}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    assert_eq!(report["data"][0]["bars"], 240);
    assert!(
        report["data"][0]["source"]
            .as_str()
            .is_some_and(|s| s.ends_with(" as 1h"))
    );

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
