//! The time axis every runner uses: candle series merged on close time, one
//! step per distinct close time holding only the symbols that have a bar then
//! (gaps stay gaps). The backtester's engine walks these steps.

use std::borrow::Cow;

use crate::candles::Candle;

/// Candles a feed hands over at a time when it makes them itself.
pub const FEED_CHUNK: usize = 4096;

/// One symbol's candles and its bar length.
#[derive(Debug, Clone)]
pub struct Series {
    pub symbol: String,
    pub candles: Vec<Candle>,
    pub bar_ms: i64,
}

impl Series {
    /// These candles as a feed, borrowed.
    pub fn feed(&self) -> Feed<'_> {
        Feed::slice(self.symbol.clone(), self.bar_ms, &self.candles)
    }
}

/// One symbol's candles as they come — from memory, a file, the store or a
/// generator — oldest first, in runs of consecutive candles (borrowed or
/// owned), never held whole by the merge.
pub struct Feed<'a> {
    pub symbol: String,
    pub bar_ms: i64,
    pub runs: Box<dyn Iterator<Item = Cow<'a, [Candle]>> + 'a>,
}

impl<'a> Feed<'a> {
    /// `candles`, borrowed a run at a time.
    pub fn slice(symbol: String, bar_ms: i64, candles: &'a [Candle]) -> Feed<'a> {
        Feed {
            symbol,
            bar_ms,
            runs: Box::new(candles.chunks(FEED_CHUNK).map(Cow::Borrowed)),
        }
    }

    /// Candles as an iterator makes them, gathered [`FEED_CHUNK`] at a time.
    pub fn gathered(
        symbol: String,
        bar_ms: i64,
        candles: impl Iterator<Item = Candle> + 'a,
    ) -> Feed<'a> {
        let mut candles = candles.peekable();
        let runs = std::iter::from_fn(move || {
            candles.peek()?;
            Some(Cow::Owned(candles.by_ref().take(FEED_CHUNK).collect()))
        });
        Feed {
            symbol,
            bar_ms,
            runs: Box::new(runs),
        }
    }
}

impl std::fmt::Debug for Feed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("symbol", &self.symbol)
            .field("bar_ms", &self.bar_ms)
            .finish()
    }
}

/// One feed's run being read: the run and where in it the next candle is.
struct Head<'a> {
    run: Cow<'a, [Candle]>,
    at: usize,
}

impl<'a> Head<'a> {
    /// The next candles of `feed` not yet taken (empty at its end).
    fn rest(&mut self, feed: &mut Feed<'a>) -> &[Candle] {
        while self.at >= self.run.len() {
            match feed.runs.next() {
                Some(run) => (self.run, self.at) = (run, 0),
                None => return &[],
            }
        }
        &self.run[self.at..]
    }
}

/// Feeds merged on close time (`open time + bar length`), one step at a time,
/// holding one run per feed: memory does not grow with the data.
pub struct Merge<'a> {
    feeds: Vec<Feed<'a>>,
    heads: Vec<Head<'a>>,
}

impl std::fmt::Debug for Merge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge").field("feeds", &self.feeds).finish()
    }
}

impl<'a> Merge<'a> {
    pub fn new(feeds: Vec<Feed<'a>>) -> Merge<'a> {
        let heads = feeds
            .iter()
            .map(|_| Head {
                run: Cow::Borrowed(&[]),
                at: 0,
            })
            .collect();
        Merge { feeds, heads }
    }

    pub fn feeds(&self) -> &[Feed<'a>] {
        &self.feeds
    }

    /// With a single feed, every candle is a step of its own: up to `most`
    /// of the next ones, consecutive, in one borrow (empty at the end), and
    /// taken. `None` with several feeds: step by step with
    /// [`Merge::next_step`].
    pub fn next_run(&mut self, most: usize) -> Option<&[Candle]> {
        let ([feed], [head]) = (self.feeds.as_mut_slice(), self.heads.as_mut_slice()) else {
            return None;
        };
        let n = head.rest(feed).len().min(most);
        let from = head.at;
        head.at += n;
        Some(&head.run[from..from + n])
    }

    /// The next close time and, in `out`, every (feed index, candle) closing
    /// then; a feed with no bar at that time is absent. `None` at the end.
    pub fn next_step(&mut self, out: &mut Vec<(usize, Candle)>) -> Option<i64> {
        out.clear();
        let time_ms = self
            .feeds
            .iter_mut()
            .zip(&mut self.heads)
            .filter_map(|(f, head)| Some(head.rest(f).first()?.time_ms + f.bar_ms))
            .min()?;
        for (i, (feed, head)) in self.feeds.iter_mut().zip(&mut self.heads).enumerate() {
            if let Some(&c) = head.rest(feed).first()
                && c.time_ms + feed.bar_ms == time_ms
            {
                out.push((i, c));
                head.at += 1;
            }
        }
        Some(time_ms)
    }
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
        let mut merge = Merge::new(vec![a.feed(), b.feed()]);
        let mut step = Vec::new();
        let mut seen = Vec::new();
        while let Some(time) = merge.next_step(&mut step) {
            seen.push((
                time,
                step.iter().map(|(i, c)| (*i, c.close)).collect::<Vec<_>>(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (60, vec![(0, 10.0), (1, 5.0)]),
                (120, vec![(0, 11.0)]), // B has no bar closing at 120
                (180, vec![(0, 12.0), (1, 6.0)]),
            ]
        );
    }

    /// `candles` as a feed cut into runs of the given lengths (zero-length
    /// ones included), the last run taking the rest.
    fn cut<'a>(symbol: &str, candles: &'a [Candle], lengths: &[usize]) -> Feed<'a> {
        let mut runs = Vec::new();
        let mut rest = candles;
        for &n in lengths {
            let (run, after) = rest.split_at(n.min(rest.len()));
            runs.push(Cow::Borrowed(run));
            rest = after;
        }
        runs.push(Cow::Owned(rest.to_vec()));
        Feed {
            symbol: symbol.into(),
            bar_ms: 60,
            runs: Box::new(runs.into_iter()),
        }
    }

    fn steps(mut merge: Merge<'_>) -> Vec<(i64, Vec<(usize, i64)>)> {
        let mut step = Vec::new();
        let mut seen = Vec::new();
        while let Some(time) = merge.next_step(&mut step) {
            seen.push((time, step.iter().map(|(i, c)| (*i, c.time_ms)).collect()));
        }
        seen
    }

    #[test]
    fn runs_of_any_length_give_the_same_steps() {
        let a: Vec<Candle> = (0..40).map(|i| candle(i * 60, i as f64)).collect();
        let b: Vec<Candle> = (0..40)
            .filter(|i| i % 3 != 1)
            .map(|i| candle(i * 60, i as f64))
            .collect();
        let whole = steps(Merge::new(vec![cut("A", &a, &[]), cut("B", &b, &[])]));
        assert_eq!(whole.len(), 40);
        let lengths = [0, 1, 0, 0, 3, 7, 1, 0, 2];
        let cut_up = steps(Merge::new(vec![
            cut("A", &a, &lengths),
            cut("B", &b, &lengths[3..]),
        ]));
        assert_eq!(cut_up, whole);

        // One feed: `next_run` hands over at most what is asked, across
        // runs of any length (empty ones skipped), then nothing.
        let mut merge = Merge::new(vec![cut("A", &a, &lengths)]);
        let mut taken = Vec::new();
        for most in [5, 1, 2, 100] {
            let run = merge.next_run(most).expect("one feed");
            assert!(!run.is_empty() && run.len() <= most);
            taken.extend(run.iter().map(|c| c.time_ms));
        }
        while let Some(run) = merge.next_run(4).filter(|r| !r.is_empty()) {
            taken.extend(run.iter().map(|c| c.time_ms));
        }
        let all: Vec<i64> = a.iter().map(|c| c.time_ms).collect();
        assert_eq!(taken, all);
        let mut two = Merge::new(vec![cut("A", &a, &[]), cut("B", &b, &[])]);
        assert!(two.next_run(4).is_none(), "several feeds go step by step");

        // A generator's candles, gathered, are all there in order.
        let many = crate::synth::random_walk(3, 2 * FEED_CHUNK + 5, 0, 60, 10.0, 0.01);
        let gathered = Feed::gathered("A".into(), 60, many.clone().into_iter());
        let runs: Vec<Cow<'_, [Candle]>> = gathered.runs.collect();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.concat(), many);
    }
}
