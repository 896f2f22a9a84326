use rust_decimal::Decimal;

use super::*;
use crate::venues::history::{HistoryError, Market, Trade, TradePage};

const T0: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const H: i64 = 3_600_000;

/// A trade history in memory, served `page` trades at a time; it can fail
/// on its `fail_on`-th call, or hand out a `next` that never moves.
struct Tape {
    trades: Vec<Trade>,
    page: usize,
    calls: usize,
    fail_on: Option<usize>,
    /// The call that answers with no trades, whatever it asked for.
    empty_on: Option<usize>,
    stuck: bool,
}

impl Tape {
    /// A trade every 7 minutes for 30 hours from `T0`, none in hours 10
    /// and 11.
    fn new() -> Tape {
        let trades = (0..(30 * 60 / 7))
            .map(|i| T0 + i * 7 * 60_000 + 1_000)
            .filter(|ms| !(T0 + 10 * H..T0 + 12 * H).contains(ms))
            .enumerate()
            .map(|(i, ms)| Trade {
                time_us: ms * 1000,
                price: 100.0 + (i % 13) as f64 * 0.5,
                volume: Decimal::new(10 + (i % 7) as i64, 2),
            })
            .collect();
        Tape {
            trades,
            page: 20,
            calls: 0,
            fail_on: None,
            empty_on: None,
            stuck: false,
        }
    }
}

impl TradeHistory for Tape {
    fn venue(&self) -> &'static str {
        "tape"
    }

    fn market(&mut self, pair: &str) -> Result<Market, HistoryError> {
        Ok(Market {
            pair: pair.to_owned(),
            symbol: "T/USD".into(),
        })
    }

    fn trades(&mut self, _pair: &str, start: &PageStart) -> Result<TradePage, HistoryError> {
        self.calls += 1;
        if self.fail_on == Some(self.calls) {
            return Err(HistoryError::GaveUp("tape: down".into()));
        }
        let from = match start {
            PageStart::At(ms) => self.trades.partition_point(|t| t.time_us < ms * 1000),
            PageStart::After(next) => next.parse().expect("an index"),
        };
        let to = match self.empty_on == Some(self.calls) {
            true => from,
            false => (from + self.page).min(self.trades.len()),
        };
        Ok(TradePage {
            trades: self.trades[from..to].to_vec(),
            next: if self.stuck { from } else { to }.to_string(),
        })
    }
}

/// The hourly bars of `trades` opening before `before_ms`, made here by a
/// plain grouping (not by `Bars`).
fn expected(trades: &[Trade], before_ms: i64) -> Vec<Candle> {
    let mut out: Vec<(Candle, Decimal)> = Vec::new();
    for t in trades {
        let open = t.time_us / 1000 / H * H;
        if open >= before_ms {
            break;
        }
        match out.last_mut() {
            Some((c, v)) if c.time_ms == open => {
                c.high = c.high.max(t.price);
                c.low = c.low.min(t.price);
                c.close = t.price;
                *v += t.volume;
            }
            _ => out.push((
                Candle {
                    time_ms: open,
                    open: t.price,
                    high: t.price,
                    low: t.price,
                    close: t.price,
                    volume: 0.0,
                },
                t.volume,
            )),
        }
    }
    out.into_iter()
        .map(|(c, v)| Candle {
            volume: v.to_string().parse().expect("f64"),
            ..c
        })
        .collect()
}

fn request(since_ms: i64, until_ms: Option<i64>) -> Request {
    Request {
        pair: "TAPE".into(),
        symbol: "T/USD".into(),
        timeframe: Timeframe::H1,
        since_ms,
        until_ms,
        replace: false,
        batch_bars: 5,
    }
}

fn run(
    tape: &mut Tape,
    store: &mut Store,
    request: &Request,
    now_ms: i64,
) -> (anyhow::Result<Summary>, Vec<Progress>) {
    let mut heard = Vec::new();
    let summary = download(tape, store, request, &|| now_ms, &mut |p| heard.push(p));
    (summary, heard)
}

fn stored(store: &Store) -> Vec<Candle> {
    store
        .load_candles("T/USD", Timeframe::H1, None, None)
        .expect("load")
}

fn cursor(store: &Store) -> Option<DownloadCursor> {
    let key = DownloadKey {
        venue: "tape",
        pair: "TAPE",
        timeframe: Timeframe::H1,
        symbol: "T/USD",
    };
    store.download_cursor(&key).expect("cursor")
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("keel.db")).expect("open");
    (dir, store)
}

/// Long after the last trade: every bar is over.
const LATER: i64 = T0 + 40 * H;

#[test]
fn a_download_stores_the_bars_its_trades_make_and_reports_the_gaps() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    let (summary, heard) = run(&mut tape, &mut store, &request(T0 + 1, None), LATER);
    let summary = summary.expect("downloaded");
    let all = expected(&tape.trades, i64::MAX);
    assert_eq!(all.len(), 28, "30 hours, two of them quiet");
    // The tape's trades end in hour 29: no later trade shows it over.
    assert_eq!(stored(&store), all[..27]);
    assert_eq!(
        (
            summary.bars,
            summary.inserted,
            summary.unchanged,
            summary.resumed
        ),
        (27, 27, 0, false)
    );
    assert_eq!(
        (summary.first_ms, summary.last_ms, summary.waiting_ms),
        (Some(T0), Some(T0 + 28 * H), Some(T0 + 29 * H))
    );
    assert_eq!(
        summary.gaps,
        [Gap {
            after_ms: T0 + 9 * H,
            missing: 2
        }]
    );
    // The next run asks from the bar still waiting: the clock alone
    // never passes a time no trade has shown over.
    let end = T0 + 29 * H;
    assert_eq!(summary.next_ms, end);
    assert_eq!(
        cursor(&store),
        Some(DownloadCursor {
            from_ms: T0,
            next_ms: end,
            last_bar_ms: Some(T0 + 28 * H),
        })
    );
    // A line a batch of five, then the rest; each up to the bar after its
    // last.
    let counts: Vec<usize> = heard
        .iter()
        .map(|p| match p {
            Progress::Batch { bars, .. } => *bars,
            Progress::Resuming { .. } => panic!("nothing to resume"),
        })
        .collect();
    assert_eq!(counts, [5, 10, 15, 20, 25, 27]);
    assert_eq!(
        heard[0],
        Progress::Batch {
            bars: 5,
            up_to_ms: T0 + 5 * H
        }
    );
    assert_eq!(
        heard[2],
        Progress::Batch {
            bars: 15,
            up_to_ms: T0 + 17 * H
        }
    );
    assert_eq!(
        heard.last(),
        Some(&Progress::Batch {
            bars: 27,
            up_to_ms: end
        })
    );
}

#[test]
fn the_bar_still_forming_is_never_stored() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    // Half past hour 29, whose trades have begun: 28 is the last bar over.
    let now = T0 + 29 * H + H / 2;
    let summary = run(&mut tape, &mut store, &request(T0, None), now)
        .0
        .expect("downloaded");
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 29 * H));
    assert_eq!(summary.next_ms, T0 + 29 * H);
    // Just after its close, still within the settling time: not yet.
    let just = T0 + 30 * H + SETTLE_MS - 1;
    let summary = run(&mut tape, &mut store, &request(T0, None), just)
        .0
        .expect("up to date");
    assert_eq!(
        (summary.bars, summary.resumed, summary.up_to_date),
        (0, true, true)
    );
    // Asked for a bar that is not over: nothing to do, and said so.
    let (_other, mut fresh) = self::store();
    let summary = run(&mut tape, &mut fresh, &request(just - 5_000, None), just)
        .0
        .expect("not over");
    assert_eq!(
        (summary.up_to_date, summary.start_ms, summary.next_ms),
        (true, T0 + 30 * H, T0 + 30 * H)
    );
    // Long after, with no trade since: the venue's history ending is no
    // proof its last trades are all published, so it still waits.
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("asked");
    assert_eq!(
        (summary.bars, summary.waiting_ms, summary.up_to_date),
        (0, Some(T0 + 29 * H), false)
    );
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 29 * H));
    // A trade of a later bar shows it over: the next run stores it, and
    // only it.
    let all = expected(&tape.trades, i64::MAX);
    tape.trades.push(Trade {
        time_us: (T0 + 31 * H + 1_000) * 1000,
        price: 100.0,
        volume: Decimal::ONE,
    });
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("downloaded");
    assert_eq!((summary.bars, summary.inserted), (1, 1));
    assert_eq!(
        (summary.waiting_ms, summary.next_ms),
        (Some(T0 + 31 * H), T0 + 31 * H)
    );
    assert_eq!(stored(&store), all);
}

/// A page that comes back empty in the middle of the history (a venue's
/// glitch, a page lost) ends the run where its trades ended: the bars
/// after are neither skipped nor stored half made, and the next run, the
/// same command, goes on from there.
#[test]
fn an_empty_page_midway_skips_nothing_and_stores_no_bar_half_made() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    tape.empty_on = Some(3);
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("stopped early");
    let waiting = summary.waiting_ms.expect("a bar waits");
    assert!(waiting < T0 + 9 * H, "{}", format_time(waiting));
    assert_eq!(summary.next_ms, waiting);
    assert_eq!(stored(&store), expected(&tape.trades, waiting));
    tape.empty_on = None;
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("downloaded");
    assert!(summary.resumed);
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 29 * H));
}

/// A trade stamped well past this machine's clock is a clock that is
/// wrong (the venue's or this one's): refused, not taken as the present.
#[test]
fn a_trade_from_the_future_stops_the_download_by_name() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    let now = T0 + 3 * H;
    // Amid the trades of the first hour, one stamped past the present.
    tape.trades.retain(|t| t.time_us < H * 1000 + T0 * 1000);
    for ms in [now + AHEAD_MS + 60_000, T0 + H + 1_000] {
        tape.trades.push(Trade {
            time_us: ms * 1000,
            price: 100.0,
            volume: Decimal::ONE,
        });
    }
    let error = run(&mut tape, &mut store, &request(T0, None), now)
        .0
        .expect_err("from the future");
    assert_eq!(
        error.to_string(),
        "tape TAPE: a trade at 2024-01-01T03:06:00Z is after the present \
         (2024-01-01T03:00:00Z here): the venue's clock or this machine's is wrong; nothing \
         from it on is stored"
    );
    assert!(stored(&store).is_empty());
    assert_eq!(cursor(&store), None);
}

#[test]
fn a_failure_midway_loses_at_most_a_batch_and_a_rerun_makes_the_same_series() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    tape.fail_on = Some(6);
    let (failed, heard) = run(&mut tape, &mut store, &request(T0, None), LATER);
    assert_eq!(failed.expect_err("down").to_string(), "tape: down");
    // Whole batches only: every bar before the cursor, none after.
    let at = cursor(&store).expect("a batch committed");
    let kept = stored(&store);
    assert!(!heard.is_empty() && !kept.is_empty());
    assert_eq!(kept, expected(&tape.trades, at.next_ms));
    assert_eq!(at.last_bar_ms, kept.last().map(|c| c.time_ms));

    tape.fail_on = None;
    let (summary, heard) = run(&mut tape, &mut store, &request(T0, None), LATER);
    let summary = summary.expect("finished");
    assert_eq!(
        heard[0],
        Progress::Resuming {
            from_ms: at.next_ms
        }
    );
    assert!(summary.resumed);
    // Nothing counted twice: the rest is new, none of it "unchanged".
    assert_eq!((summary.inserted, summary.unchanged), (27 - kept.len(), 0));
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 29 * H));
    // The quiet hours after the last bar stored are this run's gap: found
    // across the two runs.
    assert_eq!(kept.last().map(|c| c.time_ms), Some(T0 + 9 * H));
    assert_eq!(
        summary.gaps,
        [Gap {
            after_ms: T0 + 9 * H,
            missing: 2
        }]
    );
}

#[test]
fn a_second_run_is_up_to_date_without_asking_the_venue() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    run(
        &mut tape,
        &mut store,
        &request(T0, Some(T0 + 20 * H)),
        LATER,
    )
    .0
    .expect("downloaded");
    let calls = tape.calls;
    let (summary, heard) = run(
        &mut tape,
        &mut store,
        &request(T0, Some(T0 + 20 * H)),
        LATER,
    );
    let summary = summary.expect("up to date");
    assert_eq!((summary.bars, summary.resumed), (0, true));
    assert_eq!(tape.calls, calls, "no request");
    assert!(heard.is_empty());
}

#[test]
fn until_stops_before_its_bar_and_a_later_run_goes_on_from_there() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    let summary = run(
        &mut tape,
        &mut store,
        &request(T0, Some(T0 + 5 * H + H / 2)),
        LATER,
    )
    .0
    .expect("downloaded");
    assert_eq!((summary.bars, summary.next_ms), (5, T0 + 5 * H));
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 5 * H));
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("downloaded");
    assert_eq!(
        (summary.resumed, summary.start_ms, summary.bars),
        (true, T0 + 5 * H, 22)
    );
    assert_eq!(stored(&store), expected(&tape.trades, T0 + 29 * H));
}

#[test]
fn since_before_what_was_covered_starts_again_and_finds_stored_bars_unchanged() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    run(&mut tape, &mut store, &request(T0 + 3 * H, None), LATER)
        .0
        .expect("downloaded");
    let summary = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect("downloaded");
    assert_eq!(
        (summary.resumed, summary.inserted, summary.unchanged),
        (false, 3, 24)
    );
    assert_eq!(cursor(&store).map(|c| c.from_ms), Some(T0));
}

#[test]
fn a_bad_trade_stops_the_download_by_name_and_its_batch_is_not_stored() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    tape.trades.swap(3, 4);
    let error = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect_err("out of order");
    assert_eq!(
        error.to_string(),
        "tape TAPE: trade at 2024-01-01T00:21:01Z is before the one before it (2024-01-01T00:28:01Z)"
    );
    assert!(stored(&store).is_empty());
    assert_eq!(cursor(&store), None);
}

#[test]
fn a_page_that_does_not_move_on_ends_the_download_instead_of_looping() {
    let (_dir, mut store) = store();
    let mut tape = Tape::new();
    tape.stuck = true;
    let error = run(&mut tape, &mut store, &request(T0, None), LATER)
        .0
        .expect_err("stuck");
    assert_eq!(
        error.to_string(),
        "tape TAPE: the page after \"0\" starts where it did; not asking again"
    );
    assert_eq!(tape.calls, 2);
}

#[test]
fn requests_are_checked_naming_the_option() {
    let now = T0 + 100 * H;
    let cases: [(Timeframe, i64, Option<i64>, &str); 6] = [
        (Timeframe::H1, T0, None, ""),
        (Timeframe::H1, T0, Some(T0 + H), ""),
        (
            Timeframe::W1,
            T0,
            None,
            "--timeframe 1w: downloads make bars of 1m 5m 15m 1h 4h 1d (lengths that divide a day)",
        ),
        (
            Timeframe::H1,
            1_000_000_000_000,
            None,
            "--since 2001-09-09T01:46:40Z: before 2010-01-01T00:00:00Z, older than any venue's trades",
        ),
        (
            Timeframe::H1,
            now + 1000,
            None,
            "--since 2024-01-05T04:00:01Z: in the future (it is 2024-01-05T04:00:00Z now)",
        ),
        (
            Timeframe::H1,
            T0,
            Some(T0),
            "--until 2024-01-01T00:00:00Z is not after --since 2024-01-01T00:00:00Z",
        ),
    ];
    for (tf, since, until, error) in cases {
        let got = check_request(tf, since, until, now)
            .err()
            .unwrap_or_default();
        assert_eq!(got, error, "{tf} {since} {until:?}");
    }
}
