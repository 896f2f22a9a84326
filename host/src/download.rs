//! `keel data download`: a venue's public trade history, page by page,
//! made into bars (`venues::history::Bars`) and appended to the candle
//! store in batches. Each batch commits in one transaction with the
//! download's cursor (`store::DownloadCursor`: the first bar not yet
//! stored), so a kill loses one batch at most, never stores half of one,
//! and the next run — the same command again — goes on from the cursor.
//!
//! A bar is stored only once a trade of a later bar has been seen (or one
//! at `--until` or past the present, `SETTLE_MS` before now). The venue's
//! history running out says nothing of the bar its last trades fell in:
//! an empty page may be a venue that has not yet published the rest of
//! that bar's trades, or a page lost on the way, so that bar waits for the
//! next run, and the cursor never passes a time no trade has shown over.
//! A bar no trade fell in is a gap, reported and never made up. Memory
//! holds one page of trades and one batch of bars, whatever the span.

use std::time::{Duration, Instant};

use anyhow::bail;

use keel_model::Timeframe;
use keel_model::candles::{Candle, Gap, format_time, gaps, missing_between};
use keel_model::shown;

use crate::store::{DownloadCursor, DownloadKey, Store};
use crate::venues::history::{Bars, PageStart, TradeHistory};

/// How long after a bar's close its trades are taken as all published.
pub const SETTLE_MS: i64 = 15_000;

/// A batch is committed at least this often while bars close.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// How far past this machine's clock a trade may be stamped before the
/// venue's clock (or this one) is taken as wrong.
pub const AHEAD_MS: i64 = 5 * 60_000;

/// The earliest `--since`: older than any venue's trades.
const EARLIEST_MS: i64 = 1_262_304_000_000; // 2010-01-01T00:00:00Z

/// The bar lengths a download makes: one minute and every length a
/// series can be aggregated to (fixed lengths that divide a day; weeks and
/// months are calendar buckets), each one of Kraken's OHLC intervals too,
/// so its charts show the same bars.
pub fn makes(timeframe: Timeframe) -> bool {
    timeframe == Timeframe::M1 || keel_model::candles::resample::TARGETS.contains(&timeframe)
}

/// What to download.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The pair as the venue names it (`Market::pair`).
    pub pair: String,
    /// What the bars are stored as.
    pub symbol: String,
    pub timeframe: Timeframe,
    /// The first bar is the one open at this time.
    pub since_ms: i64,
    /// Bars that close by this time; `None`: up to the last closed bar.
    pub until_ms: Option<i64>,
    /// Overwrite stored bars whose values differ (otherwise refused).
    pub replace: bool,
    /// Bars a batch commits, at most (and at least every `FLUSH_EVERY`).
    pub batch_bars: usize,
}

/// Why `timeframe`, `since_ms` and `until_ms` make no download at `now_ms`;
/// one line naming the option.
pub fn check_request(
    timeframe: Timeframe,
    since_ms: i64,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), String> {
    if !makes(timeframe) {
        let made: Vec<&str> = Timeframe::ALL
            .into_iter()
            .filter(|&t| makes(t))
            .map(Timeframe::as_str)
            .collect();
        return Err(format!(
            "--timeframe {timeframe}: downloads make bars of {} (lengths that divide a day)",
            made.join(" ")
        ));
    }
    if since_ms < EARLIEST_MS {
        return Err(format!(
            "--since {}: before {}, older than any venue's trades",
            format_time(since_ms),
            format_time(EARLIEST_MS)
        ));
    }
    if since_ms > now_ms {
        return Err(format!(
            "--since {}: in the future (it is {} now)",
            format_time(since_ms),
            format_time(now_ms)
        ));
    }
    if let Some(until) = until_ms
        && until <= since_ms
    {
        return Err(format!(
            "--until {} is not after --since {}",
            format_time(until),
            format_time(since_ms)
        ));
    }
    Ok(())
}

/// What a download is doing, as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// An earlier run stored the bars before this time: going on from it.
    Resuming { from_ms: i64 },
    /// A batch committed: `bars` stored by this run so far; every bar
    /// before `up_to_ms` is in.
    Batch { bars: usize, up_to_ms: i64 },
}

/// What a download did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// It went on from an earlier run's cursor.
    pub resumed: bool,
    /// The first bar it asked for.
    pub start_ms: i64,
    /// Bars it stored, and of those, new, already stored alike, replaced.
    pub bars: usize,
    pub inserted: usize,
    pub unchanged: usize,
    pub replaced: usize,
    /// Its first and last bar stored.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Bars missing between those stored (counting from the last bar an
    /// earlier run stored), never filled.
    pub gaps: Vec<Gap>,
    /// The first bar not stored: where the next run begins.
    pub next_ms: i64,
    /// The bar the venue's last trades fell in, when the history ran out
    /// in it: stored once a trade of a later bar shows it over.
    pub waiting_ms: Option<i64>,
    /// Every bar over by the clock (or before `--until`) is stored: the
    /// cursor is at the first bar not yet over.
    pub up_to_date: bool,
}

fn floor(ms: i64, bar_ms: i64) -> i64 {
    ms.div_euclid(bar_ms) * bar_ms
}

/// Downloads `request` from `history` into `store`; `clock` is the time
/// in ms, `progress` hears of each batch.
pub fn download(
    history: &mut dyn TradeHistory,
    store: &mut Store,
    request: &Request,
    clock: &dyn Fn() -> i64,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Summary> {
    let bar_ms = request.timeframe.duration_ms();
    let venue = history.venue();
    let key = DownloadKey {
        venue,
        pair: &request.pair,
        timeframe: request.timeframe,
        symbol: &request.symbol,
    };
    let start_ms = floor(request.since_ms, bar_ms);
    let until_ms = request.until_ms.map(|u| floor(u, bar_ms));
    // The first bar not over at `now`: this run stops before it.
    let end_at = |now: i64| {
        let closed = floor(now - SETTLE_MS, bar_ms);
        until_ms.map_or(closed, |u| u.min(closed))
    };
    // An earlier run's cursor is gone on from when --since falls in what it
    // covered; otherwise this run starts at --since and covers from there.
    let (mut at, resumed) = match store.download_cursor(&key)? {
        Some(c) if (c.from_ms..=c.next_ms).contains(&start_ms) => (c, true),
        _ => (
            DownloadCursor {
                from_ms: start_ms,
                next_ms: start_ms,
                last_bar_ms: None,
            },
            false,
        ),
    };
    let mut summary = Summary {
        resumed,
        start_ms: at.next_ms,
        bars: 0,
        inserted: 0,
        unchanged: 0,
        replaced: 0,
        first_ms: None,
        last_ms: None,
        gaps: Vec::new(),
        next_ms: at.next_ms,
        waiting_ms: None,
        up_to_date: false,
    };
    if at.next_ms >= end_at(clock()) {
        summary.up_to_date = true;
        return Ok(summary);
    }
    if resumed {
        progress(Progress::Resuming {
            from_ms: at.next_ms,
        });
    }
    let first_ms = at.next_ms;
    let pair = shown::text(&request.pair);
    let mut bars = Bars::new(bar_ms);
    let mut batch: Vec<Candle> = Vec::new();
    // The last bar stored, for a gap across the edge of a batch.
    let mut last_ms: Option<i64> = at.last_bar_ms;
    let mut commit = |batch: &mut Vec<Candle>, at: &mut DownloadCursor| -> anyhow::Result<()> {
        if let Some(c) = batch.last() {
            at.last_bar_ms = Some(c.time_ms);
        }
        let report = store.commit_download(&key, batch, at, request.replace)?;
        if let (Some(after_ms), Some(first)) = (last_ms, batch.first())
            && let Some(missing) = missing_between(after_ms, first.time_ms, bar_ms)
        {
            summary.gaps.push(Gap { after_ms, missing });
        }
        summary.gaps.extend(gaps(batch, bar_ms));
        summary.bars += batch.len();
        summary.inserted += report.inserted;
        summary.unchanged += report.unchanged;
        summary.replaced += report.replaced;
        if let Some(c) = batch.first() {
            summary.first_ms.get_or_insert(c.time_ms);
        }
        if let Some(c) = batch.last() {
            summary.last_ms = Some(c.time_ms);
            last_ms = Some(c.time_ms);
        }
        summary.next_ms = at.next_ms;
        batch.clear();
        progress(Progress::Batch {
            bars: summary.bars,
            up_to_ms: at.next_ms,
        });
        Ok(())
    };
    let mut page_start = PageStart::At(first_ms);
    let mut flushed = Instant::now();
    loop {
        let page = history.trades(&request.pair, &page_start)?;
        if let PageStart::After(before) = &page_start
            && *before == page.next
            && !page.trades.is_empty()
        {
            bail!(
                "{venue} {pair}: the page after {} starts where it did; not asking again",
                shown::quoted(before)
            );
        }
        let now = clock();
        let end = end_at(now);
        // No trades: the history is read as far as the venue has it.
        let ran_out = page.trades.is_empty();
        let mut past_end = false;
        for trade in &page.trades {
            let ms = trade.time_us.div_euclid(1000);
            if ms < first_ms {
                continue;
            }
            if ms > now + AHEAD_MS {
                bail!(
                    "{venue} {pair}: a trade at {} is after the present ({} here): the venue's \
                     clock or this machine's is wrong; nothing from it on is stored",
                    format_time(ms),
                    format_time(now)
                );
            }
            if ms >= end {
                past_end = true;
                break;
            }
            if let Some(closed) = bars
                .push(trade)
                .map_err(|e| anyhow::anyhow!("{venue} {pair}: {e}"))?
            {
                batch.push(closed);
                if batch.len() >= request.batch_bars.max(1) {
                    // A bar closed only when this trade began a later one.
                    at.next_ms = bars.forming_ms().unwrap_or(at.next_ms);
                    commit(&mut batch, &mut at)?;
                    flushed = Instant::now();
                }
            }
        }
        if past_end {
            // A trade at or after `end`: every trade before it is in, so
            // the bar still forming (it opens before `end`) is over.
            if let Some(c) = bars
                .finish()
                .map_err(|e| anyhow::anyhow!("{venue} {pair}: {e}"))?
            {
                batch.push(c);
            }
            at.next_ms = at.next_ms.max(end);
            commit(&mut batch, &mut at)?;
            break;
        }
        if ran_out {
            // Nothing shows the bar still forming over: the next run asks
            // again from its open.
            let waiting = bars.forming_ms();
            at.next_ms = waiting.unwrap_or(at.next_ms).max(at.next_ms);
            commit(&mut batch, &mut at)?;
            summary.waiting_ms = waiting;
            break;
        }
        if !batch.is_empty() && flushed.elapsed() >= FLUSH_EVERY {
            at.next_ms = bars.forming_ms().unwrap_or(at.next_ms);
            commit(&mut batch, &mut at)?;
            flushed = Instant::now();
        }
        page_start = PageStart::After(page.next);
    }
    summary.up_to_date = summary.next_ms >= end_at(clock());
    Ok(summary)
}

#[cfg(test)]
mod tests;
