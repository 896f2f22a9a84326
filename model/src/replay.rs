//! The time axis every runner uses: candle series merged on close time, one
//! step per distinct close time holding only the symbols that have a bar then
//! (gaps stay gaps). The backtester's engine walks these steps.

use crate::candles::Candle;

/// One symbol's candles and its bar length.
#[derive(Debug, Clone)]
pub struct Series {
    pub symbol: String,
    pub candles: Vec<Candle>,
    pub bar_ms: i64,
}

/// One point of the merged time axis: the close time, and for each series
/// that has a bar closing then, (series index, candle index).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub time_ms: i64,
    pub bars: Vec<(usize, usize)>,
}

/// Merges the series on close time (`open time + bar length`).
pub fn align(series: &[Series]) -> Vec<Step> {
    let mut cursor = vec![0usize; series.len()];
    let mut steps = Vec::with_capacity(series.iter().map(|s| s.candles.len()).max().unwrap_or(0));
    loop {
        let next = series
            .iter()
            .zip(&cursor)
            .filter_map(|(s, &c)| s.candles.get(c).map(|k| k.time_ms + s.bar_ms))
            .min();
        let Some(time_ms) = next else { break };
        let mut bars = Vec::with_capacity(series.len());
        for (i, s) in series.iter().enumerate() {
            if let Some(k) = s.candles.get(cursor[i])
                && k.time_ms + s.bar_ms == time_ms
            {
                bars.push((i, cursor[i]));
                cursor[i] += 1;
            }
        }
        steps.push(Step { time_ms, bars });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(t: i64, price: f64) -> Candle {
        Candle {
            time_ms: t,
            open: price,
            high: price + 1.0,
            low: price - 1.0,
            close: price,
            volume: 1.0,
        }
    }

    #[test]
    fn align_keeps_gaps_as_gaps() {
        let a = Series {
            symbol: "A".into(),
            candles: vec![candle(0, 10.0), candle(60, 11.0), candle(120, 12.0)],
            bar_ms: 60,
        };
        let b = Series {
            symbol: "B".into(),
            candles: vec![candle(0, 5.0), candle(120, 6.0)],
            bar_ms: 60,
        };
        let steps = align(&[a, b]);
        let times: Vec<i64> = steps.iter().map(|s| s.time_ms).collect();
        assert_eq!(times, vec![60, 120, 180]);
        assert_eq!(steps[1].bars, vec![(0, 1)], "B has no bar closing at 120");
        assert_eq!(steps[2].bars, vec![(0, 2), (1, 1)]);
    }
}
