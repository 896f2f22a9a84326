//! Where paper trading's bars come from: a candle file replayed line by line
//! (a bad line stops the feed with `file:line: what`; the bars before it were
//! already traded), or the built-in seeded sample.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;

use keel_model::candles::{Candle, CandleError, CsvCandles};

type Candles = Box<dyn Iterator<Item = Result<Candle, CandleError>>>;

/// A stream of closed bars of one symbol.
pub struct Feed {
    candles: Candles,
    ahead: VecDeque<Result<Candle, CandleError>>,
    bar_ms: i64,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("bar_ms", &self.bar_ms)
            .finish()
    }
}

impl Feed {
    /// Replays a CSV candle file, read as it goes.
    pub fn replay(path: &Path) -> Result<Feed, CandleError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| CandleError::Io {
            path: name.clone(),
            source,
        })?;
        let lines = std::io::BufReader::new(file).lines();
        let candles = CsvCandles::new(lines, &name)?;
        Feed::start(Box::new(candles), &name)
    }

    /// The built-in sample: `bars` seeded random-walk 1-minute candles.
    pub fn sample(seed: u64, bars: usize) -> Feed {
        let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let candles = keel_model::synth::random_walk_iter(seed, bars, start, 60_000, 100.0, 0.004);
        Feed {
            candles: Box::new(candles.map(Ok)),
            ahead: VecDeque::new(),
            bar_ms: 60_000,
        }
    }

    /// Reads ahead to the second bar to learn the bar length.
    fn start(mut candles: Candles, name: &str) -> Result<Feed, CandleError> {
        let mut ahead = VecDeque::new();
        for _ in 0..2 {
            match candles.next() {
                Some(item) => ahead.push_back(item),
                None => break,
            }
        }
        let times: Vec<i64> = ahead
            .iter()
            .map_while(|c| c.as_ref().ok().map(|c| c.time_ms))
            .collect();
        let bar_ms = match times.as_slice() {
            [a, b] => b - a,
            _ if ahead.iter().any(Result::is_err) => 60_000,
            _ => {
                return Err(CandleError::Empty {
                    path: format!("{name} (a feed needs at least two bars)"),
                });
            }
        };
        Ok(Feed {
            candles,
            ahead,
            bar_ms,
        })
    }

    /// The spacing of the first two bars.
    pub fn bar_ms(&self) -> i64 {
        self.bar_ms
    }
}

impl Iterator for Feed {
    type Item = Result<Candle, CandleError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.ahead.pop_front().or_else(|| self.candles.next())
    }
}
