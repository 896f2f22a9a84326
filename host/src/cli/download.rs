//! `keel data download`: the options, and what the user is told. The
//! download itself is `crate::download`; the venue's side
//! `venues::kraken::history`.

use std::path::Path;

use anyhow::bail;
use clap::{Args, ValueEnum};

use keel_model::candles::{format_time, parse_time};
use keel_model::shown;

use super::data::gap_line;
use crate::download::{self, Progress, Request};
use crate::ranges;
use crate::store::{Store, now_ms};
use crate::venues::history::TradeHistory;
use crate::venues::kraken::history::{DEFAULT_URL, KrakenHistory};

/// The venues whose history Keel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryVenue {
    Kraken,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The venue whose public trade history is read.
    #[arg(long, value_enum)]
    venue: HistoryVenue,
    /// The pair as the venue names it, e.g. XBTUSD.
    #[arg(long)]
    pair: String,
    /// Bar length: 1m 5m 15m 1h 4h 1d.
    #[arg(long)]
    timeframe: String,
    /// The first bar: the one open at this time (RFC 3339, a date, or
    /// epoch time). Bars an earlier run stored are not fetched again.
    #[arg(long)]
    since: String,
    /// Bars that close by this time (default: up to the last closed bar).
    #[arg(long)]
    until: Option<String>,
    /// The symbol the bars are stored as (default: the venue's name for
    /// the pair, e.g. XBT/USD).
    #[arg(long)]
    symbol: Option<String>,
    /// The venue's REST API (default: its public one; a fake's, to
    /// rehearse).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Overwrite stored bars whose values differ (otherwise refused).
    #[arg(long)]
    replace: bool,
    /// Requests a second at most (Kraken allows about one).
    #[arg(long, hide = true, default_value_t = 1.0, value_parser = ranges::DOWNLOAD_RATE.parser())]
    rate: f64,
    /// Bars a batch commits (and at least every 30 s): a kill loses one
    /// batch at most.
    #[arg(long, hide = true, default_value_t = 720, value_parser = ranges::DOWNLOAD_BATCH.parser())]
    batch_bars: usize,
}

pub(super) fn run(args: DownloadArgs, db: &Path) -> anyhow::Result<bool> {
    let timeframe = super::data::timeframe(&args.timeframe)?;
    let time = |option: &str, text: &str| {
        parse_time(text).map_err(|e| anyhow::anyhow!("--{option} {}: {e}", shown::quoted(text)))
    };
    let since_ms = time("since", &args.since)?;
    let until_ms = args
        .until
        .as_deref()
        .map(|u| time("until", u))
        .transpose()?;
    download::check_request(timeframe, since_ms, until_ms, now_ms()).map_err(anyhow::Error::msg)?;
    let pair_chars = |c: char| c.is_ascii_alphanumeric() || "./_-".contains(c);
    if args.pair.is_empty() || args.pair.len() > 32 || !args.pair.chars().all(pair_chars) {
        bail!(
            "--pair {}: a pair is letters and digits, e.g. XBTUSD",
            shown::quoted(&args.pair)
        );
    }
    if let Some(symbol) = &args.symbol {
        super::data::check_symbol(symbol)?;
    }
    let mut history: Box<dyn TradeHistory> = match args.venue {
        HistoryVenue::Kraken => Box::new(KrakenHistory::new(
            args.base_url.as_deref().unwrap_or(DEFAULT_URL),
            args.rate,
            Box::new(|note| eprintln!("{note}")),
        )?),
    };
    let market = history.market(&args.pair)?;
    let request = Request {
        symbol: args.symbol.unwrap_or(market.symbol),
        pair: market.pair,
        timeframe,
        since_ms,
        until_ms,
        replace: args.replace,
        batch_bars: args.batch_bars,
    };
    let name = format!(
        "{} {} {timeframe}",
        history.venue(),
        shown::text(&request.pair)
    );
    let mut store = Store::open(db)?;
    let summary = download::download(
        history.as_mut(),
        &mut store,
        &request,
        &now_ms,
        &mut |progress| match progress {
            Progress::Resuming { from_ms } => eprintln!(
                "{name}: going on from {} (the bars before it are stored)",
                format_time(from_ms)
            ),
            Progress::Batch { bars, up_to_ms } => eprintln!(
                "{name}: {bars} bars so far, up to {}",
                format_time(up_to_ms)
            ),
        },
    )?;
    let symbol = shown::text(&request.symbol);
    match (summary.first_ms, summary.last_ms) {
        (Some(first), Some(last)) => {
            println!(
                "downloaded {symbol} {timeframe} from {name}: {} ({} new, {} unchanged, {} replaced), {} .. {}",
                shown::counted(summary.bars, "bar"),
                summary.inserted,
                summary.unchanged,
                summary.replaced,
                format_time(first),
                format_time(last),
            );
            println!("{}", gap_line(&summary.gaps));
            super::data::print_stored_series(&store, &request.symbol, timeframe, summary.bars)?;
        }
        _ if summary.up_to_date && summary.resumed => println!(
            "{symbol} {timeframe} from {name} is up to date: every bar before {} is stored",
            format_time(summary.next_ms)
        ),
        // Asked before the first bar is over.
        _ if summary.up_to_date && summary.next_ms == summary.start_ms => println!(
            "{symbol} {timeframe} from {name}: nothing to store yet: the {} bar is not over",
            format_time(summary.next_ms)
        ),
        _ if summary.resumed || summary.waiting_ms.is_some() => println!(
            "{symbol} {timeframe} from {name}: nothing new stored; every bar before {} is \
             stored, and the venue shows no later bar over yet",
            format_time(summary.next_ms)
        ),
        _ => println!(
            "{symbol} {timeframe} from {name}: no trades from {} to {}; nothing stored",
            format_time(summary.start_ms),
            format_time(summary.next_ms)
        ),
    }
    if let Some(waiting) = summary.waiting_ms {
        println!(
            "the {} bar is stored once a trade of a later bar shows it over (the venue's \
             trades end in it)",
            format_time(waiting)
        );
    }
    Ok(true)
}
