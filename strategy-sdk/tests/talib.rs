//! Every indicator against TA-Lib on real daily data (GOOG-1d, 2,148 bars).
//! Reference values: `reference/talib_goog_1d.csv`, made by
//! `reference/make_talib_reference.py`. A value matches when it is within 1e-9
//! of TA-Lib's, relative to the larger of |TA-Lib's value| and 1; a warm-up
//! bar matches when both sides have no value yet.

use std::path::PathBuf;

use keel_model::candles;
use keel_strategy_sdk::indicators::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Reference {
    columns: Vec<String>,
    rows: Vec<Vec<Option<f64>>>,
}

fn reference() -> Reference {
    let path = repo().join("strategy-sdk/tests/reference/talib_goog_1d.csv");
    let text = std::fs::read_to_string(&path).expect("reference file");
    let mut lines = text.lines();
    let columns: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .skip(1)
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| {
            l.split(',')
                .skip(1)
                .map(|v| (!v.is_empty()).then(|| v.parse::<f64>().expect("number")))
                .collect()
        })
        .collect();
    Reference { columns, rows }
}

#[test]
fn indicators_match_talib_on_goog_daily() {
    let candles = candles::read_csv(&repo().join("../shared/data/GOOG-1d.csv")).expect("GOOG data");
    let reference = reference();
    assert_eq!(reference.rows.len(), candles.len());

    let mut sma = Sma::new(20);
    let mut ema = Ema::new(20);
    let mut rsi = Rsi::new(14);
    let mut atr = Atr::new(14);
    let mut bb = Bollinger::new(20, 2.0);
    let mut macd = Macd::new(12, 26, 9);
    let mut stoch = Stochastic::new(14, 3, 3);
    let mut obv = Obv::new();

    let mut compared = 0usize;
    for (i, c) in candles.iter().enumerate() {
        let bands = bb.update(c.close);
        let m = macd.update(c.close);
        let s = stoch.update(c.high, c.low, c.close);
        let ours: Vec<Option<f64>> = vec![
            sma.update(c.close),
            ema.update(c.close),
            rsi.update(c.close),
            atr.update(c.high, c.low, c.close),
            bands.map(|b| b.upper),
            bands.map(|b| b.middle),
            bands.map(|b| b.lower),
            m.map(|m| m.macd),
            m.map(|m| m.signal),
            m.map(|m| m.histogram),
            s.map(|s| s.k),
            s.map(|s| s.d),
            Some(obv.update(c.close, c.volume)),
        ];
        assert_eq!(ours.len(), reference.columns.len());
        for (k, (got, want)) in ours.iter().zip(&reference.rows[i]).enumerate() {
            let column = &reference.columns[k];
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    let tolerance = 1e-9 * w.abs().max(1.0);
                    assert!(
                        (g - w).abs() <= tolerance,
                        "{column} at bar {i}: ours {g}, TA-Lib {w}"
                    );
                    compared += 1;
                }
                _ => panic!("{column} at bar {i}: ours {got:?}, TA-Lib {want:?} (warm-up differs)"),
            }
        }
    }
    // Every column has values for all but its warm-up bars.
    assert!(
        compared > 13 * (candles.len() - 40),
        "compared only {compared} values"
    );
}
