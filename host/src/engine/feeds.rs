//! Several symbols' feeds as one: bars aligned on close time, exactly as a
//! backtest merges its series (`keel_model::replay::Merge`). At each close
//! the step holds every symbol whose bar closes then; a symbol may miss a
//! bar (a gap, or a live feed that has nothing yet), and nothing is ever
//! invented for it.
//!
//! A live feed may not have its bar yet when the others have theirs: the
//! step waits for it up to a grace period, then goes without it (its bar,
//! if it comes later, is too late for that close and is dropped, said in a
//! warning).

use std::time::{Duration, Instant};

use keel_model::candles::{Candle, format_time};

use super::feed::{BarFeed, Next};
use crate::control::FeedHealth;

/// What the feeds have now.
#[derive(Debug)]
pub enum Step {
    /// The bars closing at `close_ms`, by symbol index, in symbol order.
    Bars {
        close_ms: i64,
        bars: Vec<(usize, Candle)>,
    },
    /// No step yet: ask again after this long.
    Wait(Duration),
    End,
    /// A feed cannot go on.
    Failed(String),
}

/// The feeds of a run's symbols, in the run's symbol order.
#[derive(Debug)]
pub struct Feeds {
    symbols: Vec<String>,
    feeds: Vec<BarFeed>,
    heads: Vec<Option<Candle>>,
    ended: Vec<bool>,
    /// The last close delivered.
    last_ms: Option<i64>,
    /// Since when a step has been ready but for a live feed still waiting.
    held_since: Option<Instant>,
    grace: Duration,
    warnings: Vec<String>,
}

impl Feeds {
    /// `feeds[i]` delivers `symbols[i]`; a live feed missing at a close
    /// the others reached is waited for `grace`.
    pub fn new(symbols: Vec<String>, feeds: Vec<BarFeed>, grace: Duration) -> Feeds {
        let n = feeds.len();
        Feeds {
            symbols,
            feeds,
            heads: vec![None; n],
            ended: vec![false; n],
            last_ms: None,
            held_since: None,
            grace,
            warnings: Vec::new(),
        }
    }

    /// The shortest bar length of the feeds.
    pub fn bar_ms(&self) -> i64 {
        self.feeds
            .iter()
            .map(BarFeed::bar_ms)
            .min()
            .unwrap_or(60_000)
    }

    fn close_of(&self, i: usize, candle: &Candle) -> i64 {
        candle.time_ms + self.feeds[i].bar_ms()
    }

    /// The next step, or how long to wait for one.
    pub fn next_step(&mut self) -> Step {
        let mut wait: Option<Duration> = None;
        for i in 0..self.feeds.len() {
            while self.heads[i].is_none() && !self.ended[i] {
                match self.feeds[i].next_bar() {
                    Next::Bar(candle) => {
                        let close = self.close_of(i, &candle);
                        if self.last_ms.is_some_and(|last| close <= last) {
                            self.warnings.push(format!(
                                "{}: the bar closing {} came after that close was booked without it; dropped",
                                self.symbols[i],
                                format_time(close)
                            ));
                            continue;
                        }
                        self.heads[i] = Some(candle);
                    }
                    Next::Wait(d) => {
                        wait = Some(wait.map_or(d, |w| w.min(d)));
                        break;
                    }
                    Next::End => self.ended[i] = true,
                    Next::Failed(msg) => {
                        return Step::Failed(if self.feeds.len() > 1 {
                            format!("{}: {msg}", self.symbols[i])
                        } else {
                            msg
                        });
                    }
                }
            }
        }
        let next = (0..self.feeds.len())
            .filter_map(|i| self.heads[i].map(|c| self.close_of(i, &c)))
            .min();
        let Some(close_ms) = next else {
            return match wait {
                Some(d) => Step::Wait(d),
                None => Step::End,
            };
        };
        // A live feed with nothing yet may still deliver this close.
        if let Some(d) = wait {
            let since = *self.held_since.get_or_insert_with(Instant::now);
            let left = self.grace.saturating_sub(since.elapsed());
            if !left.is_zero() {
                return Step::Wait(d.min(left));
            }
        }
        self.held_since = None;
        let mut bars = Vec::new();
        for i in 0..self.feeds.len() {
            if let Some(candle) = self.heads[i]
                && self.close_of(i, &candle) == close_ms
            {
                bars.push((i, candle));
                self.heads[i] = None;
            }
        }
        self.last_ms = Some(close_ms);
        Step::Bars { close_ms, bars }
    }

    /// Problems the feeds got over, since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut out = std::mem::take(&mut self.warnings);
        for feed in &mut self.feeds {
            out.extend(feed.take_warnings());
        }
        out
    }

    /// Reminders of trouble still going on, since the last call.
    pub fn take_reminders(&mut self) -> Vec<String> {
        self.feeds
            .iter_mut()
            .flat_map(BarFeed::take_reminders)
            .collect()
    }

    /// How the live feeds are doing: the one in the most trouble; `None`
    /// without a live feed.
    pub fn health(&self) -> Option<FeedHealth> {
        self.feeds
            .iter()
            .filter_map(BarFeed::health)
            .max_by_key(|h| h.consecutive_failures)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, rows: &[(i64, f64)]) -> BarFeed {
        let mut text = String::from("time,open,high,low,close,volume\n");
        for (minute, price) in rows {
            let time = format_time(1_767_225_600_000 + minute * 60_000);
            text += &format!("{time},{price},{price},{price},{price},1\n");
        }
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        BarFeed::replay(&path, &Default::default()).expect("feed")
    }

    #[test]
    fn steps_align_on_close_time_and_a_symbol_may_miss_a_bar() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = file(
            dir.path(),
            "a.csv",
            &[(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)],
        );
        // B has a gap: no bar at minute 2.
        let b = file(dir.path(), "b.csv", &[(0, 10.0), (1, 20.0), (3, 40.0)]);
        let mut feeds = Feeds::new(vec!["A".into(), "B".into()], vec![a, b], Duration::ZERO);
        let mut seen = Vec::new();
        loop {
            match feeds.next_step() {
                Step::Bars { close_ms, bars } => seen.push((
                    (close_ms - 1_767_225_600_000) / 60_000,
                    bars.iter().map(|(i, c)| (*i, c.close)).collect::<Vec<_>>(),
                )),
                Step::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                (1, vec![(0, 1.0), (1, 10.0)]),
                (2, vec![(0, 2.0), (1, 20.0)]),
                (3, vec![(0, 3.0)]),
                (4, vec![(0, 4.0), (1, 40.0)]),
            ]
        );
    }

    #[test]
    fn a_bad_line_in_one_feed_stops_the_step_naming_its_symbol() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = file(dir.path(), "a.csv", &[(0, 1.0), (1, 2.0)]);
        let path = dir.path().join("b.csv");
        let t0 = format_time(1_767_225_600_000);
        let t1 = format_time(1_767_225_660_000);
        std::fs::write(
            &path,
            format!("time,open,high,low,close,volume\n{t0},1,1,1,1,1\n{t1},1,1,1,oops,1\n"),
        )
        .expect("write");
        let b = BarFeed::replay(&path, &Default::default()).expect("feed");
        let mut feeds = Feeds::new(vec!["A".into(), "B".into()], vec![a, b], Duration::ZERO);
        assert!(matches!(feeds.next_step(), Step::Bars { .. }));
        match feeds.next_step() {
            Step::Failed(msg) => {
                assert!(msg.starts_with("B: ") && msg.contains("b.csv:3"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
}
