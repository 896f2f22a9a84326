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

impl Series {
    /// These candles as a feed.
    pub fn feed(&self) -> Feed<'_> {
        Feed {
            symbol: self.symbol.clone(),
            bar_ms: self.bar_ms,
            candles: Box::new(self.candles.iter().copied()),
        }
    }
}

/// One symbol's candles as they come — from memory, a file, the store or a
/// generator — oldest first, never held whole by the merge.
pub struct Feed<'a> {
    pub symbol: String,
    pub bar_ms: i64,
    pub candles: Box<dyn Iterator<Item = Candle> + 'a>,
}

impl std::fmt::Debug for Feed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("symbol", &self.symbol)
            .field("bar_ms", &self.bar_ms)
            .finish()
    }
}

/// Feeds merged on close time (`open time + bar length`), one step at a time,
/// holding one candle per feed: memory does not grow with the data.
#[derive(Debug)]
pub struct Merge<'a> {
    feeds: Vec<Feed<'a>>,
    heads: Vec<Option<Candle>>,
}

impl<'a> Merge<'a> {
    pub fn new(mut feeds: Vec<Feed<'a>>) -> Merge<'a> {
        let heads = feeds.iter_mut().map(|f| f.candles.next()).collect();
        Merge { feeds, heads }
    }

    pub fn feeds(&self) -> &[Feed<'a>] {
        &self.feeds
    }

    /// The next close time and, in `out`, every (feed index, candle) closing
    /// then; a feed with no bar at that time is absent. `None` at the end.
    pub fn next_step(&mut self, out: &mut Vec<(usize, Candle)>) -> Option<i64> {
        out.clear();
        // One feed: its next candle is the next step.
        if let ([feed], [head]) = (self.feeds.as_mut_slice(), self.heads.as_mut_slice()) {
            let c = (*head)?;
            out.push((0, c));
            *head = feed.candles.next();
            return Some(c.time_ms + feed.bar_ms);
        }
        let time_ms = self
            .feeds
            .iter()
            .zip(&self.heads)
            .filter_map(|(f, head)| head.map(|c| c.time_ms + f.bar_ms))
            .min()?;
        for (i, feed) in self.feeds.iter_mut().enumerate() {
            if let Some(c) = self.heads[i]
                && c.time_ms + feed.bar_ms == time_ms
            {
                out.push((i, c));
                self.heads[i] = feed.candles.next();
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
}
