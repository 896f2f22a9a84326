//! A finer series aggregated to a coarser bar length, as a strategy that
//! declares 1h wants from 1m candles: each bar of the new length (aligned
//! on whole multiples of it since the Unix epoch, so days start at 00:00
//! UTC) takes the open of its first candle, the highest high, the lowest
//! low, the close of its last and the volume summed. A bar nothing fell in
//! is not made up; one with a gap inside is kept and marked partial.

use super::{Candle, Timeframe, format_time};

/// The bar lengths a series can be aggregated to: fixed lengths that
/// divide a day (weeks and months are calendar buckets, not these).
pub const TARGETS: [Timeframe; 5] = [
    Timeframe::M5,
    Timeframe::M15,
    Timeframe::H1,
    Timeframe::H4,
    Timeframe::D1,
];

/// How many partial bars' times [`Partial`] keeps, to say where they are.
pub const FIRST_PARTIAL: usize = 3;

/// Which bars aggregation made partial: fewer candles than a whole bar
/// holds (a gap inside, or the data starts or ends inside them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial {
    /// How many.
    pub count: usize,
    /// The open times of the first of them, at most [`FIRST_PARTIAL`].
    pub first: Vec<i64>,
}

/// Partial bars opening at the times given, one after another.
impl Extend<i64> for Partial {
    fn extend<I: IntoIterator<Item = i64>>(&mut self, times: I) {
        times.into_iter().for_each(|t| self.add(t));
    }
}

impl Partial {
    /// One more partial bar, opening at `time_ms`.
    fn add(&mut self, time_ms: i64) {
        self.count += 1;
        if self.first.len() < FIRST_PARTIAL {
            self.first.push(time_ms);
        }
    }

    /// Where the first of them open: `at T`, or `at T1, T2, T3 and 5 more`.
    pub fn places(&self) -> String {
        let times: Vec<String> = self.first.iter().map(|&t| super::format_time(t)).collect();
        match self.count.checked_sub(times.len()) {
            Some(more @ 1..) => format!("at {} and {more} more", times.join(", ")),
            _ => format!("at {}", times.join(", ")),
        }
    }
}

/// What aggregation made.
#[derive(Debug, Clone, PartialEq)]
pub struct Resampled {
    pub candles: Vec<Candle>,
    pub partial: Partial,
}

/// `candles` (each `from_ms` long, in time order) as bars of `to`; else why
/// not, in words naming both lengths.
pub fn resample(candles: &[Candle], from_ms: i64, to: Timeframe) -> Result<Resampled, String> {
    resample_partial(candles, &[], from_ms, to)
}

/// [`resample`] of candles of which those opening at `partial` (in time
/// order) are partial themselves, as a file marks them: a bar any of them
/// falls in is partial too.
pub fn resample_partial(
    candles: &[Candle],
    partial: &[i64],
    from_ms: i64,
    to: Timeframe,
) -> Result<Resampled, String> {
    let mut resampler = Resampler::new(from_ms, to)?;
    let mut out = Vec::with_capacity(candles.len() / resampler.whole + 1);
    resampler.push_partial(candles, partial, &mut out)?;
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
    from_ms: i64,
    to_ms: i64,
    /// Candles in a whole bar.
    whole: usize,
    /// The bar being made, how many candles it holds, and whether one of
    /// them was partial itself.
    bar: Option<(Candle, usize, bool)>,
    partial: Partial,
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
            from_ms,
            to_ms,
            whole: (to_ms / from_ms) as usize,
            bar: None,
            partial: Partial::default(),
        })
    }

    /// The next candles (after every earlier piece): the bars they
    /// complete are appended to `out`. Refused, naming it, at a candle
    /// that runs past the start of a bar of the new length (1h candles
    /// opening at :30, aggregated to 4h): it would belong to two bars.
    pub fn push(&mut self, candles: &[Candle], out: &mut Vec<Candle>) -> Result<(), String> {
        self.feed(candles, &[], out, None)
    }

    /// [`push`](Self::push) of candles of which those opening at
    /// `partial` (in time order) are partial themselves: the bars they
    /// fall in are partial.
    pub fn push_partial(
        &mut self,
        candles: &[Candle],
        partial: &[i64],
        out: &mut Vec<Candle>,
    ) -> Result<(), String> {
        self.feed(candles, partial, out, None)
    }

    /// [`push`](Self::push), and whether each bar appended is partial
    /// appended to `marks`, for a file that marks them.
    pub fn push_marked(
        &mut self,
        candles: &[Candle],
        out: &mut Vec<Candle>,
        marks: &mut Vec<bool>,
    ) -> Result<(), String> {
        self.feed(candles, &[], out, Some(marks))
    }

    /// [`push_marked`](Self::push_marked) of candles of which those
    /// opening at `partial` (in time order) are partial themselves.
    pub fn push_partial_marked(
        &mut self,
        candles: &[Candle],
        partial: &[i64],
        out: &mut Vec<Candle>,
        marks: &mut Vec<bool>,
    ) -> Result<(), String> {
        self.feed(candles, partial, out, Some(marks))
    }

    fn feed(
        &mut self,
        candles: &[Candle],
        mut partial: &[i64],
        out: &mut Vec<Candle>,
        mut marks: Option<&mut Vec<bool>>,
    ) -> Result<(), String> {
        for c in candles {
            let start = c.time_ms.div_euclid(self.to_ms) * self.to_ms;
            if c.time_ms + self.from_ms > start + self.to_ms {
                return Err(self.runs_past(c.time_ms, start + self.to_ms));
            }
            // Marks of times before this candle's mark nothing read.
            while partial.first().is_some_and(|&t| t < c.time_ms) {
                partial = &partial[1..];
            }
            let given_partial = partial.first() == Some(&c.time_ms);
            match &mut self.bar {
                Some((bar, n, within)) if bar.time_ms == start => {
                    bar.high = bar.high.max(c.high);
                    bar.low = bar.low.min(c.low);
                    bar.close = c.close;
                    bar.volume += c.volume;
                    *n += 1;
                    *within |= given_partial;
                }
                _ => {
                    let next = Candle {
                        time_ms: start,
                        ..*c
                    };
                    if let Some(done) = self.bar.replace((next, 1, given_partial)) {
                        self.hand_over(done, out, marks.as_deref_mut());
                    }
                }
            }
        }
        Ok(())
    }

    /// Why the candle at `time_ms` cannot be aggregated: it runs past
    /// `next`, where the next bar of the new length starts.
    #[cold]
    fn runs_past(&self, time_ms: i64, next: i64) -> String {
        let from = spacing_name(self.from_ms);
        let to = spacing_name(self.to_ms);
        format!(
            "the {from} candle at {} runs past {}, where a {to} bar starts: candles that open \
             off the {to} bars' boundaries cannot be aggregated to {to}",
            format_time(time_ms),
            format_time(next)
        )
    }

    /// Appends the last bar; which of all the bars were partial.
    pub fn finish(self, out: &mut Vec<Candle>) -> Partial {
        self.end(out, None)
    }

    /// [`finish`](Self::finish), and whether the last bar is partial
    /// appended to `marks`.
    pub fn finish_marked(self, out: &mut Vec<Candle>, marks: &mut Vec<bool>) -> Partial {
        self.end(out, Some(marks))
    }

    fn end(mut self, out: &mut Vec<Candle>, marks: Option<&mut Vec<bool>>) -> Partial {
        if let Some(done) = self.bar.take() {
            self.hand_over(done, out, marks);
        }
        self.partial
    }

    fn hand_over(
        &mut self,
        (bar, n, within): (Candle, usize, bool),
        out: &mut Vec<Candle>,
        marks: Option<&mut Vec<bool>>,
    ) {
        let partial = n < self.whole || within;
        if partial {
            self.partial.add(bar.time_ms);
        }
        if let Some(marks) = marks {
            marks.push(partial);
        }
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
        // The next bar misses its minutes 6 and 8: kept, marked partial.
        candles.push(candle(5, 10.0, 11.0, 9.0, 10.5, 1.0));
        candles.push(candle(7, 10.5, 20.0, 10.0, 12.0, 2.0));
        candles.push(candle(9, 12.0, 13.0, 1.0, 12.5, 3.0));
        let r = resample(&candles, MIN, Timeframe::M5).expect("5m");
        assert_eq!(r.candles.len(), 2);
        assert_eq!(r.partial.count, 1);
        assert_eq!(r.partial.first, [candles[5].time_ms]);
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
        assert_eq!(r.partial.count, 3);
        let starts: Vec<i64> = r.candles.iter().map(|c| c.time_ms).collect();
        assert_eq!(r.partial.first, starts, "the first three kept to say where");
        assert!(r.candles.iter().all(|c| c.time_ms % (60 * MIN) == 0));
        assert_eq!(
            resample(&[], MIN, Timeframe::D1).expect("empty").candles,
            []
        );
    }

    /// A candle that runs past the start of a bar of the new length (1h
    /// candles opening at :30, aggregated to 4h: the one at 03:30 runs to
    /// 04:30) belongs to two bars: refused, naming it, never put in the
    /// first as though it ended there. Candles off the clock that stay
    /// inside their bars (1h at :45 to 1d, none at 23:45) are aggregated.
    #[test]
    fn a_candle_running_past_a_new_bars_start_is_refused() {
        let hour = 60 * MIN;
        let at = |minutes: i64| Candle {
            time_ms: minutes * MIN,
            ..candle(0, 1.0, 2.0, 0.5, 1.5, 1.0)
        };
        let halves: Vec<Candle> = (0..8).map(|h| at(h * 60 + 30)).collect();
        let err = resample(&halves, hour, Timeframe::H4).expect_err("off the 4h bars");
        assert_eq!(
            err,
            "the 1h candle at 1970-01-01T03:30:00Z runs past 1970-01-01T04:00:00Z, where a 4h \
             bar starts: candles that open off the 4h bars' boundaries cannot be aggregated to 4h"
        );
        // Fed in pieces, alike.
        let mut r = Resampler::new(hour, Timeframe::H4).expect("valid");
        let mut out = Vec::new();
        r.push(&halves[..3], &mut out).expect("inside their bars");
        assert!(r.push(&halves[3..], &mut out).is_err());
        // 1m candles opening at :30 s, to 5m.
        let seconds: Vec<Candle> = (0..10)
            .map(|m| Candle {
                time_ms: m * MIN + 30_000,
                ..at(0)
            })
            .collect();
        assert!(resample(&seconds, MIN, Timeframe::M5).is_err());
        // 1h candles at :45 from 03:45 to 09:45 stay inside their day.
        let session: Vec<Candle> = (3..10).map(|h| at(h * 60 + 45)).collect();
        let made = resample(&session, hour, Timeframe::D1).expect("inside the day");
        assert_eq!(made.candles.len(), 1);
        assert_eq!(made.candles[0].time_ms, 0);
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
        assert_eq!((same.candles.len(), same.partial.count), (1, 0));
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
        assert!(whole.partial.count > FIRST_PARTIAL);
        assert_eq!(whole.partial.first.len(), FIRST_PARTIAL);
        // Each bar is marked partial when fewer than 15 candles fell in it.
        let held = |bar: &Candle| {
            let end = bar.time_ms + 15 * MIN;
            candles
                .iter()
                .filter(|c| (bar.time_ms..end).contains(&c.time_ms))
                .count()
        };
        let expected: Vec<bool> = whole.candles.iter().map(|b| held(b) < 15).collect();
        assert_eq!(expected.iter().filter(|&&p| p).count(), whole.partial.count);
        for cut in [1, 2, 14, 15, 16, 97] {
            let mut r = Resampler::new(MIN, Timeframe::M15).expect("valid");
            let (mut out, mut marks) = (Vec::new(), Vec::new());
            for piece in candles.chunks(cut) {
                r.push_marked(piece, &mut out, &mut marks)
                    .expect("on the clock");
                r.push_marked(&[], &mut out, &mut marks).expect("none");
            }
            let partial = r.finish_marked(&mut out, &mut marks);
            assert_eq!(marks, expected, "pieces of {cut}");
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

    /// A bar that holds a candle the file marks partial (an earlier
    /// aggregation's bar with a gap inside) is partial, whole or not; the
    /// marks may come in any piece, and marks of times not read mark
    /// nothing.
    #[test]
    fn a_bar_holding_a_partial_candle_is_partial() {
        let hour = 3_600_000;
        let candles: Vec<Candle> = (0..12)
            .map(|i| Candle {
                time_ms: i * hour,
                open: 1.0,
                high: 2.0,
                low: 0.5,
                close: 1.5,
                volume: 1.0,
            })
            .collect();
        // Hours 5 and 9 were partial; 30 min past 2 is no bar's time.
        let marked = [2 * hour + 1_800_000, 5 * hour, 9 * hour];
        let whole = resample_partial(&candles, &marked, hour, Timeframe::H4).expect("4h");
        assert_eq!(whole.candles.len(), 3);
        assert_eq!(whole.partial.count, 2);
        assert_eq!(whole.partial.first, [4 * hour, 8 * hour]);

        let mut r = Resampler::new(hour, Timeframe::H4).expect("4h");
        let mut out = Vec::new();
        r.push_partial(&candles[..6], &marked[..2], &mut out)
            .expect("on the clock");
        r.push_partial(&candles[6..], &marked[2..], &mut out)
            .expect("on the clock");
        assert_eq!(r.finish(&mut out), whole.partial);
        assert_eq!(out, whole.candles);
        let unmarked = resample(&candles, hour, Timeframe::H4).expect("4h");
        assert_eq!(unmarked.partial.count, 0);
    }
}
