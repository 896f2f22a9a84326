//! A finer series aggregated to a coarser bar length, as a strategy that
//! declares 1h wants from 1m candles: each bar of the new length (aligned
//! on whole multiples of it since the Unix epoch, so days start at 00:00
//! UTC) takes the open of its first candle, the highest high, the lowest
//! low, the close of its last and the volume summed. A bar nothing fell in
//! is not made up; one with a gap inside is kept and counted as partial.

use super::{Candle, Timeframe};

/// The bar lengths a series can be aggregated to: fixed lengths that
/// divide a day (weeks and months are calendar buckets, not these).
pub const TARGETS: [Timeframe; 5] = [
    Timeframe::M5,
    Timeframe::M15,
    Timeframe::H1,
    Timeframe::H4,
    Timeframe::D1,
];

/// What aggregation made.
#[derive(Debug, Clone, PartialEq)]
pub struct Resampled {
    pub candles: Vec<Candle>,
    /// How many of them hold fewer candles than a whole bar would (a gap
    /// inside, or the data starts or ends inside them).
    pub partial: usize,
}

/// `candles` (each `from_ms` long, in time order) as bars of `to`; else why
/// not, in words naming both lengths.
pub fn resample(candles: &[Candle], from_ms: i64, to: Timeframe) -> Result<Resampled, String> {
    let mut resampler = Resampler::new(from_ms, to)?;
    let mut out = Vec::with_capacity(candles.len() / resampler.whole + 1);
    resampler.push(candles, &mut out);
    let partial = resampler.finish(&mut out);
    Ok(Resampled {
        candles: out,
        partial,
    })
}

/// [`resample`] as the candles come, in pieces cut anywhere: each bar is
/// handed over once a candle of a later one comes (or at `finish`), so
/// memory holds one bar, not the series.
#[derive(Debug)]
pub struct Resampler {
    to_ms: i64,
    /// Candles in a whole bar.
    whole: usize,
    /// The bar being made and how many candles it holds.
    bar: Option<(Candle, usize)>,
    partial: usize,
}

impl Resampler {
    /// From candles `from_ms` long to bars of `to`; else why not.
    pub fn new(from_ms: i64, to: Timeframe) -> Result<Resampler, String> {
        let to_ms = to.duration_ms();
        if from_ms <= 0 || from_ms > to_ms || to_ms % from_ms != 0 {
            return Err(format!(
                "{} bars do not make whole {to} bars",
                spacing_name(from_ms)
            ));
        }
        if !TARGETS.contains(&to) {
            return Err(format!(
                "bars can be aggregated to {} only, not {to}",
                TARGETS.map(|t| t.as_str()).join(", ")
            ));
        }
        Ok(Resampler {
            to_ms,
            whole: (to_ms / from_ms) as usize,
            bar: None,
            partial: 0,
        })
    }

    /// The next candles (after every earlier piece): the bars they
    /// complete are appended to `out`.
    pub fn push(&mut self, candles: &[Candle], out: &mut Vec<Candle>) {
        for c in candles {
            let start = c.time_ms.div_euclid(self.to_ms) * self.to_ms;
            match &mut self.bar {
                Some((bar, n)) if bar.time_ms == start => {
                    bar.high = bar.high.max(c.high);
                    bar.low = bar.low.min(c.low);
                    bar.close = c.close;
                    bar.volume += c.volume;
                    *n += 1;
                }
                _ => {
                    let next = Candle {
                        time_ms: start,
                        ..*c
                    };
                    if let Some(done) = self.bar.replace((next, 1)) {
                        self.hand_over(done, out);
                    }
                }
            }
        }
    }

    /// Appends the last bar; how many of all the bars were partial.
    pub fn finish(mut self, out: &mut Vec<Candle>) -> usize {
        if let Some(done) = self.bar.take() {
            self.hand_over(done, out);
        }
        self.partial
    }

    fn hand_over(&mut self, (bar, n): (Candle, usize), out: &mut Vec<Candle>) {
        self.partial += usize::from(n < self.whole);
        out.push(bar);
    }
}

/// A bar length as its timeframe's name, else in seconds.
fn spacing_name(ms: i64) -> String {
    Timeframe::ALL
        .into_iter()
        .find(|t| t.matches_spacing(ms))
        .map_or_else(|| format!("{} s", ms / 1000), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn candle(minute: i64, open: f64, high: f64, low: f64, close: f64, volume: f64) -> Candle {
        Candle {
            time_ms: 1_700_000_000_000 / (60 * MIN) * (60 * MIN) + minute * MIN,
            open,
            high,
            low,
            close,
            volume,
        }
    }

    #[test]
    fn five_minutes_take_the_first_open_the_extremes_the_last_close_and_the_volume() {
        let mut candles: Vec<Candle> = (0..5)
            .map(|m| {
                let p = 100.0 + m as f64;
                candle(m, p, p + 2.0, p - 1.0, p + 0.5, 1.0 + m as f64)
            })
            .collect();
        // The next bar misses its minutes 6 and 8: kept, counted partial.
        candles.push(candle(5, 10.0, 11.0, 9.0, 10.5, 1.0));
        candles.push(candle(7, 10.5, 20.0, 10.0, 12.0, 2.0));
        candles.push(candle(9, 12.0, 13.0, 1.0, 12.5, 3.0));
        let r = resample(&candles, MIN, Timeframe::M5).expect("5m");
        assert_eq!(r.candles.len(), 2);
        assert_eq!(r.partial, 1);
        let first = r.candles[0];
        assert_eq!(first.time_ms, candles[0].time_ms);
        assert_eq!(
            (first.open, first.high, first.low, first.close, first.volume),
            (100.0, 106.0, 99.0, 104.5, 15.0)
        );
        let second = r.candles[1];
        assert_eq!(second.time_ms, candles[5].time_ms);
        assert_eq!(
            (
                second.open,
                second.high,
                second.low,
                second.close,
                second.volume
            ),
            (10.0, 20.0, 1.0, 12.5, 6.0)
        );
    }

    #[test]
    fn a_gap_of_whole_bars_makes_none_and_bars_start_on_the_clock() {
        // 00:58 .. 01:01, then nothing until 03:00.
        let candles = vec![
            candle(58, 1.0, 1.0, 1.0, 1.0, 1.0),
            candle(59, 1.0, 1.0, 1.0, 1.0, 1.0),
            candle(60, 2.0, 2.0, 2.0, 2.0, 1.0),
            candle(180, 3.0, 3.0, 3.0, 3.0, 1.0),
        ];
        let r = resample(&candles, MIN, Timeframe::H1).expect("1h");
        let hours: Vec<i64> = r
            .candles
            .iter()
            .map(|c| (c.time_ms - candles[0].time_ms + 58 * MIN) / (60 * MIN))
            .collect();
        assert_eq!(hours, [0, 1, 3], "no bar invented for hour 2");
        assert_eq!(r.partial, 3);
        assert!(r.candles.iter().all(|c| c.time_ms % (60 * MIN) == 0));
        assert_eq!(
            resample(&[], MIN, Timeframe::D1).expect("empty").candles,
            []
        );
    }

    #[test]
    fn only_whole_multiples_to_fixed_lengths_are_made() {
        let one = [candle(0, 1.0, 1.0, 1.0, 1.0, 1.0)];
        assert_eq!(
            resample(&one, 60 * MIN, Timeframe::M15).expect_err("finer"),
            "1h bars do not make whole 15m bars"
        );
        assert_eq!(
            resample(&one, 7 * MIN, Timeframe::H1).expect_err("not a divisor"),
            "420 s bars do not make whole 1h bars"
        );
        assert!(
            resample(&one, MIN, Timeframe::W1)
                .expect_err("calendar")
                .contains("5m, 15m, 1h, 4h, 1d only, not 1w")
        );
        let same = resample(&one, 60 * MIN, Timeframe::H1).expect("same length");
        assert_eq!((same.candles.len(), same.partial), (1, 0));
    }

    #[test]
    fn pieces_cut_anywhere_make_what_the_whole_makes() {
        let mut candles: Vec<Candle> = (0..500)
            .map(|m| {
                let p = 100.0 + (m % 17) as f64;
                candle(m, p, p + 2.0, p - 1.0, p + 0.5, 1.0 + m as f64)
            })
            .collect();
        candles.retain(|c| c.time_ms % (7 * MIN) != 0); // gaps
        let whole = resample(&candles, MIN, Timeframe::M15).expect("whole");
        assert!(whole.partial > 0);
        for cut in [1, 2, 14, 15, 16, 97] {
            let mut r = Resampler::new(MIN, Timeframe::M15).expect("valid");
            let mut out = Vec::new();
            for piece in candles.chunks(cut) {
                r.push(piece, &mut out);
                r.push(&[], &mut out);
            }
            let partial = r.finish(&mut out);
            assert_eq!(
                Resampled {
                    candles: out,
                    partial
                },
                whole,
                "pieces of {cut}"
            );
        }
    }
}
