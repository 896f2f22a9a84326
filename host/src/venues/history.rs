//! A venue's public trade history, as `keel data download` reads it: the
//! `TradeHistory` a venue implements (Kraken's is `kraken::history`), one
//! page of trades at a time, and `Bars`, which folds those trades, oldest
//! first, into the bars of one timeframe. Pacing and retries are the
//! venue's business: what a `TradeHistory` returns is final.

use keel_model::candles::{Candle, check_candle, format_time};
use rust_decimal::Decimal;

/// One trade, as a venue reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    /// When it happened, µs since the epoch.
    pub time_us: i64,
    pub price: f64,
    /// The amount of the base asset, exactly as the venue wrote it.
    pub volume: Decimal,
}

/// Where a page of trades starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStart {
    /// At the first trade at or after this time (ms since the epoch).
    At(i64),
    /// Right after the page whose `next` this is.
    After(String),
}

/// One page of trades.
#[derive(Debug, Clone, PartialEq)]
pub struct TradePage {
    /// Oldest first. None: the history is read to its end, for now.
    pub trades: Vec<Trade>,
    /// Where the page after this one starts (`PageStart::After`).
    pub next: String,
}

/// A pair as the venue knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// The venue's own name for it (Kraken: `XBTUSD`): what a download's
    /// cursor is kept under.
    pub pair: String,
    /// The symbol its bars are stored as unless told otherwise (`XBT/USD`).
    pub symbol: String,
}

/// Why a venue's history cannot be read. Each is one line naming the
/// venue, the request and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The venue refused the request, and will again (an unknown pair).
    #[error("{0}")]
    Refused(String),
    /// A reply that is not what the venue documents: asking again would
    /// not help, and going on could store wrong bars.
    #[error("{0}")]
    Malformed(String),
    /// The venue kept failing (rate limits, outages) after every retry.
    #[error("{0}")]
    GaveUp(String),
}

/// A venue's public trade history.
pub trait TradeHistory {
    /// The venue's name (`kraken`), as a download's cursor records it.
    fn venue(&self) -> &'static str;

    /// `pair` as the venue knows it; an unknown pair is `Refused`.
    fn market(&mut self, pair: &str) -> Result<Market, HistoryError>;

    /// One page of `pair`'s trades from `start`. A page that is not empty
    /// moves `next` on, so paging always ends.
    fn trades(&mut self, pair: &str, start: &PageStart) -> Result<TradePage, HistoryError>;
}

/// Folds trades, oldest first, into bars of `bar_ms` aligned on whole
/// multiples of it since the epoch: the open is the first trade's price,
/// high and low the extremes, the close the last trade's, the volume the
/// exact sum (so it matches a venue's own decimal sum). A bar is handed out
/// only once a trade of a later bar shows it is over, or `finish` says its
/// time has passed; a bar no trade fell in is never made.
#[derive(Debug, Clone)]
pub struct Bars {
    bar_ms: i64,
    forming: Option<Forming>,
    last_us: Option<i64>,
}

#[derive(Debug, Clone)]
struct Forming {
    open_ms: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: Decimal,
}

impl Forming {
    fn candle(&self) -> Result<Candle, String> {
        let at = format_time(self.open_ms);
        let volume = self
            .volume
            .to_string()
            .parse::<f64>()
            .map_err(|_| format!("bar {at}: volume {} is not a number", self.volume))?;
        let candle = Candle {
            time_ms: self.open_ms,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume,
        };
        check_candle(&candle).map_err(|e| format!("bar {at}: {e}"))?;
        Ok(candle)
    }
}

impl Bars {
    pub fn new(bar_ms: i64) -> Bars {
        Bars {
            bar_ms: bar_ms.max(1),
            forming: None,
            last_us: None,
        }
    }

    /// The open time of the bar `time_us` falls in.
    pub fn bar_of(&self, time_us: i64) -> i64 {
        time_us.div_euclid(1000).div_euclid(self.bar_ms) * self.bar_ms
    }

    /// Adds `trade`; returns the bar it showed to be over, if it is the
    /// first of a later bar. A trade before the one before it, a price that
    /// is not positive or a volume below zero is refused, naming the trade.
    pub fn push(&mut self, trade: &Trade) -> Result<Option<Candle>, String> {
        let at = || format_time(trade.time_us.div_euclid(1000));
        if let Some(last) = self.last_us
            && trade.time_us < last
        {
            return Err(format!(
                "trade at {} is before the one before it ({})",
                at(),
                format_time(last.div_euclid(1000))
            ));
        }
        if !(trade.price.is_finite() && trade.price > 0.0) {
            return Err(format!(
                "trade at {}: price {} is not a positive number",
                at(),
                trade.price
            ));
        }
        if trade.volume.is_sign_negative() && !trade.volume.is_zero() {
            return Err(format!(
                "trade at {}: volume {} is below zero",
                at(),
                trade.volume
            ));
        }
        self.last_us = Some(trade.time_us);
        let open_ms = self.bar_of(trade.time_us);
        if let Some(f) = &mut self.forming
            && f.open_ms == open_ms
        {
            f.high = f.high.max(trade.price);
            f.low = f.low.min(trade.price);
            f.close = trade.price;
            f.volume = f
                .volume
                .checked_add(trade.volume)
                .ok_or_else(|| format!("bar {}: the volume overflows", format_time(open_ms)))?;
            return Ok(None);
        }
        let closed = self.forming.take().map(|f| f.candle()).transpose()?;
        self.forming = Some(Forming {
            open_ms,
            open: trade.price,
            high: trade.price,
            low: trade.price,
            close: trade.price,
            volume: trade.volume,
        });
        Ok(closed)
    }

    /// The open time of the bar still forming, if a trade fell in one.
    pub fn forming_ms(&self) -> Option<i64> {
        self.forming.as_ref().map(|f| f.open_ms)
    }

    /// The bar still forming, ended: the caller knows its time is over.
    pub fn finish(&mut self) -> Result<Option<Candle>, String> {
        self.forming.take().map(|f| f.candle()).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn trade(s: f64, price: f64, volume: &str) -> Trade {
        Trade {
            time_us: (s * 1e6).round() as i64,
            price,
            volume: volume.parse().expect("decimal"),
        }
    }

    fn fold(bars: &mut Bars, trades: &[Trade]) -> Vec<Candle> {
        trades
            .iter()
            .filter_map(|t| bars.push(t).expect("in order"))
            .collect()
    }

    #[test]
    fn trades_fold_into_bars_handed_out_once_a_later_bar_begins() {
        let mut bars = Bars::new(H);
        let closed = fold(
            &mut bars,
            &[
                trade(10.0, 100.0, "0.1"),
                trade(20.0, 105.5, "0.2"),
                trade(30.0, 99.0, "0.00000001"),
                trade(3_599.999_999, 101.0, "1"),
            ],
        );
        assert!(closed.is_empty(), "the first hour is still forming");
        assert_eq!(bars.forming_ms(), Some(0));
        // The quiet second hour makes no bar; the third closes the first.
        let closed = fold(&mut bars, &[trade(7200.0, 102.0, "3")]);
        assert_eq!(
            closed,
            [Candle {
                time_ms: 0,
                open: 100.0,
                high: 105.5,
                low: 99.0,
                close: 101.0,
                // The exact decimal sum, not 0.1 + 0.2 + … in binary.
                volume: 1.30000001,
            }]
        );
        assert_eq!(bars.forming_ms(), Some(2 * H));
        let last = bars.finish().expect("valid").expect("a bar");
        assert_eq!(
            (last.time_ms, last.open, last.close, last.volume),
            (2 * H, 102.0, 102.0, 3.0)
        );
        assert_eq!(bars.finish().expect("nothing"), None);
        assert_eq!(bars.forming_ms(), None);
    }

    #[test]
    fn a_trade_on_the_boundary_opens_the_next_bar() {
        let mut bars = Bars::new(60_000);
        let closed = fold(
            &mut bars,
            &[trade(59.999_999, 1.0, "1"), trade(60.0, 2.0, "1")],
        );
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].time_ms, bars.forming_ms()), (0, Some(60_000)));
        assert_eq!(bars.bar_of(-1), -60_000, "before the epoch rounds down");
    }

    #[test]
    fn bad_trades_are_refused_by_time_and_reason() {
        struct Case {
            name: &'static str,
            trades: Vec<Trade>,
            error: &'static str,
        }
        let cases = [
            Case {
                name: "out of order",
                trades: vec![trade(120.0, 1.0, "1"), trade(60.0, 1.0, "1")],
                error: "trade at 1970-01-01T00:01:00Z is before the one before it (1970-01-01T00:02:00Z)",
            },
            Case {
                name: "NaN price",
                trades: vec![trade(60.0, f64::NAN, "1")],
                error: "trade at 1970-01-01T00:01:00Z: price NaN is not a positive number",
            },
            Case {
                name: "negative price",
                trades: vec![trade(60.0, -3.0, "1")],
                error: "trade at 1970-01-01T00:01:00Z: price -3 is not a positive number",
            },
            Case {
                name: "negative volume",
                trades: vec![trade(60.0, 3.0, "-0.5")],
                error: "trade at 1970-01-01T00:01:00Z: volume -0.5 is below zero",
            },
        ];
        for case in cases {
            let mut bars = Bars::new(60_000);
            let error = case
                .trades
                .iter()
                .find_map(|t| bars.push(t).err())
                .unwrap_or_else(|| panic!("{}: accepted", case.name));
            assert_eq!(error, case.error, "{}", case.name);
        }
        // A price outside what Keel books is refused when its bar closes.
        let mut bars = Bars::new(60_000);
        bars.push(&trade(0.0, 1e30, "1")).expect("pushed");
        let error = bars.finish().expect_err("too high");
        assert!(
            error.starts_with("bar 1970-01-01T00:00:00Z: open 1e30 is outside"),
            "{error}"
        );
    }
}
