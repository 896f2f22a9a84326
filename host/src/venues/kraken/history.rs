//! Kraken's public trade history as a `TradeHistory`: `AssetPairs` names
//! the pair, `GET /0/public/Trades?pair=…&since=<ns>&count=1000` pages
//! through every trade since the market opened (`since` is exclusive;
//! `last`, the last trade's time in ns, starts the next page). Calls are
//! spaced by Kraken's public limit (`limits::PublicLimit`, about one a
//! second); a rate-limit reply (`EGeneral:Too many requests`, HTTP 429), a
//! 5xx, `EService:*`, no reply in time or a body that is not JSON is tried
//! again after a doubling wait, a bounded number of times; any other error
//! (`EQuery:Unknown asset pair`, a 4xx that is not Kraken's) ends the
//! download at once.
//!
//! Why bars are made from trades throughout, even for the 720 most recent
//! bars Kraken's `OHLC` would give in one request: OHLC fills an interval
//! without trades with a flat bar at the last close (count 0) — a bar Keel
//! would then store as if it had traded — and Kraken's support names the
//! trades as its official data: OHLC of a closed interval has been seen to
//! change between calls (ccxt issue 6742). Made from trades, a bar is the
//! same on every run, which resuming after a kill relies on, and the same
//! as OHLC's wherever OHLC has a bar with trades (a test holds the fake's
//! two to that). The price is requests: a page is 1,000 trades, so a busy
//! pair's month takes some hundreds of seconds.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::Value;

use keel_model::candles::format_time;
use keel_model::shown;

use super::client::{Client, REQUEST_TIMEOUT};
use super::limits::PublicLimit;
use super::pairs;
use super::reply::{self, Failure};
use crate::venues::body::{BodyError, REPLY_WITHIN, read_body};
use crate::venues::history::{HistoryError, Market, PageStart, Trade, TradeHistory, TradePage};

/// Kraken's REST API.
pub const DEFAULT_URL: &str = "https://api.kraken.com";

/// Kraken's most trades a page.
const PAGE_TRADES: &str = "1000";

/// How often one request is tried before the download gives up.
const TRIES: u32 = 8;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest a reply body may be (a page of 1,000 trades is about 80 KB).
const MAX_REPLY: u64 = 4 << 20;

/// Kraken's trade history, read over HTTP.
pub struct KrakenHistory {
    base: String,
    /// `base` as messages show it: no user, password or query.
    shown: String,
    http: reqwest::blocking::Client,
    pace: PublicLimit,
    started: Instant,
    /// Where a retry is announced (stderr, for `keel data download`).
    say: Box<dyn FnMut(&str)>,
    /// The id of the last trade handed out, where Kraken gives ids.
    last_id: Option<u64>,
    /// The last trade handed out.
    last_trade: Option<Trade>,
    /// Whether the server has answered once in this run.
    answered: bool,
    /// The longest a request may take, to its body's last byte.
    reply_within: Duration,
    /// The names a `Trades` result may list a pair's trades under (its
    /// name and altname, from `AssetPairs`), by the pair as asked for.
    keys: std::collections::HashMap<String, [String; 2]>,
}

impl std::fmt::Debug for KrakenHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KrakenHistory")
            .field("base", &self.shown)
            .finish()
    }
}

/// What one reply means for the download.
#[derive(Debug, PartialEq)]
enum Outcome {
    Answer(Value),
    /// Worth asking again after a wait: why not this time.
    Retry(String),
    /// No connection could be made: worth asking again only if the server
    /// has answered before (a wrong address is not waited on for minutes).
    Unreachable(String),
    /// Asking again will not help.
    Fatal(String),
}

impl KrakenHistory {
    /// The same, with requests cut off after `within` instead of
    /// [`REPLY_WITHIN`].
    pub fn with_reply_within(mut self, within: Duration) -> KrakenHistory {
        self.reply_within = within;
        self
    }

    /// Reads from `base` (`DEFAULT_URL`), at most `per_s` requests a
    /// second; retries are announced to `say`.
    pub fn new(base: &str, per_s: f64, say: Box<dyn FnMut(&str)>) -> anyhow::Result<KrakenHistory> {
        let shown =
            crate::venues::base_url(base).map_err(|e| anyhow::anyhow!("--base-url: {e}"))?;
        Ok(KrakenHistory {
            base: base.trim_end_matches('/').to_owned(),
            shown,
            http: Client::http_client(REQUEST_TIMEOUT)?,
            pace: PublicLimit::new(per_s),
            started: Instant::now(),
            say,
            last_id: None,
            last_trade: None,
            answered: false,
            reply_within: REPLY_WITHIN,
            keys: Default::default(),
        })
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// The wait before try `attempt + 1`: twice the pace, doubling.
    fn backoff(&self, attempt: u32) -> Duration {
        (self.pace.interval() * 2)
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF)
    }

    /// The `result` of public `method`, paced and tried again while Kraken
    /// is busy or away; `what` names the request in every message.
    fn get(
        &mut self,
        what: &str,
        method: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, HistoryError> {
        let url = format!("{}/0/public/{method}", self.base);
        let mut problem = String::new();
        for attempt in 1..=TRIES {
            let wait = self.pace.wait(self.now_ms());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            self.pace.called(self.now_ms());
            let sent = Instant::now();
            let reply = self.http.get(&url).query(query).send();
            match read(reply, sent, self.reply_within) {
                Outcome::Answer(result) => {
                    self.answered = true;
                    return Ok(result);
                }
                Outcome::Fatal(e) => return Err(HistoryError::Refused(format!("{what}: {e}"))),
                Outcome::Unreachable(e) if !self.answered => {
                    return Err(HistoryError::GaveUp(format!(
                        "{what}: cannot connect to {} ({e}); is --base-url right?",
                        shown::text(&self.shown)
                    )));
                }
                Outcome::Retry(e) | Outcome::Unreachable(e) => problem = e,
            }
            if attempt < TRIES {
                let wait = self.backoff(attempt);
                (self.say)(&format!(
                    "{what}: {problem}; trying again in {:.1} s (try {} of {TRIES})",
                    wait.as_secs_f64(),
                    attempt + 1
                ));
                std::thread::sleep(wait);
            }
        }
        Err(HistoryError::GaveUp(format!(
            "{what}: no answer after {TRIES} tries; the last: {problem}"
        )))
    }
}

impl TradeHistory for KrakenHistory {
    fn venue(&self) -> &'static str {
        "kraken"
    }

    fn market(&mut self, pair: &str) -> Result<Market, HistoryError> {
        let what = format!("kraken AssetPairs {}", shown::text(pair));
        let result = self.get(&what, "AssetPairs", &[("pair", pair)])?;
        let pairs =
            pairs::parse(&result).map_err(|e| HistoryError::Malformed(format!("{what}: {e}")))?;
        let found = pairs
            .values()
            .find(|p| p.name.eq_ignore_ascii_case(pair) || p.altname.eq_ignore_ascii_case(pair))
            .ok_or_else(|| HistoryError::Refused(format!("{what}: Kraken lists no such pair")))?;
        for asked in [pair, &found.altname] {
            let names = [found.name.clone(), found.altname.clone()];
            self.keys.insert(asked.to_ascii_uppercase(), names);
        }
        Ok(Market {
            pair: found.altname.clone(),
            symbol: found.wsname.clone(),
        })
    }

    fn trades(&mut self, pair: &str, start: &PageStart) -> Result<TradePage, HistoryError> {
        let since: i128 = match start {
            // `since` is exclusive: one ns before, so a trade at the very
            // start is in.
            PageStart::At(ms) => i128::from(*ms) * 1_000_000 - 1,
            PageStart::After(last) => last.parse().map_err(|_| {
                HistoryError::Malformed(format!(
                    "kraken Trades {}: the page before ended at {}, not a time in ns",
                    shown::text(pair),
                    shown::quoted(last)
                ))
            })?,
        };
        // The names its trades may come under, from `AssetPairs`.
        if !self.keys.contains_key(&pair.to_ascii_uppercase()) {
            self.market(pair)?;
        }
        let keys = (self.keys.get(&pair.to_ascii_uppercase()).cloned())
            .unwrap_or_else(|| [pair.to_owned(), pair.to_owned()]);
        let what = format!("kraken Trades {} since {since}", shown::text(pair));
        let since_text = since.to_string();
        let query = [
            ("pair", pair),
            ("since", &since_text),
            ("count", PAGE_TRADES),
        ];
        let result = self.get(&what, "Trades", &query)?;
        let after = (self.last_id, self.last_trade.as_ref());
        let page = parse_trades(&result, &keys, since, after)
            .map_err(|e| HistoryError::Malformed(format!("{what}: {e}")))?;
        self.last_id = page.last_id.or(self.last_id);
        if let Some(t) = page.trades.last() {
            self.last_trade = Some(t.clone());
        }
        Ok(TradePage {
            trades: page.trades,
            next: page.last.to_string(),
        })
    }
}

/// A reply to a request sent at `sent`, read whole within `within`, or
/// what went wrong getting it.
fn read(
    reply: reqwest::Result<reqwest::blocking::Response>,
    sent: Instant,
    within: Duration,
) -> Outcome {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.is_timeout() => return Outcome::Retry("no reply in time".into()),
        Err(e) => {
            let connect = e.is_connect();
            let e = format!("no reply: {}", shown::message(&e.without_url().to_string()));
            return if connect {
                Outcome::Unreachable(e)
            } else {
                Outcome::Retry(e)
            };
        }
    };
    let status = reply.status().as_u16();
    let body = match read_body(reply, MAX_REPLY, sent, within) {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge(_)) => return Outcome::Fatal(format!("HTTP {status}: {e}")),
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    classify(status, &String::from_utf8_lossy(&body))
}

/// What a reply with HTTP `status` and `body` means: Kraken's envelope
/// read by `reply::parse`, then sorted into worth another try or not.
fn classify(status: u16, body: &str) -> Outcome {
    if status == 429 {
        return Outcome::Retry("HTTP 429 (too many requests)".into());
    }
    match reply::parse::<Value>(status, body) {
        Ok(result) => Outcome::Answer(result),
        // Refused by what answered, and not in Kraken's words: asking
        // again gets the same (a wrong address, a proxy that forbids it).
        Err(Failure::Malformed(_)) if (400..500).contains(&status) && status != 408 => {
            Outcome::Fatal(format!(
                "HTTP {status}, not an answer of Kraken's API; is --base-url right?"
            ))
        }
        // 5xx, `EService:*`, `EGeneral:Internal error`; a body that is not
        // Kraken's (a proxy's error page).
        Err(Failure::Unknown(e) | Failure::Malformed(e) | Failure::RestRateLimit(e)) => {
            Outcome::Retry(e)
        }
        Err(Failure::Refused(e)) if e.starts_with("EGeneral:Too many requests") => {
            Outcome::Retry(e)
        }
        Err(
            Failure::Refused(e) | Failure::Auth(e) | Failure::Nonce(e) | Failure::OrderRateLimit(e),
        ) => Outcome::Fatal(e),
    }
}

/// One `Trades` result, checked.
#[derive(Debug, PartialEq)]
struct Page {
    trades: Vec<Trade>,
    /// `last`, in ns: the next page's `since`.
    last: i128,
    /// The last trade's id, where Kraken gives one.
    last_id: Option<u64>,
}

/// Reads a `Trades` result asked for with `since` (ns), after the trade
/// `after` (its id, where Kraken gives one, and the trade): `{"<PAIR>":
/// [["price", "volume", time_s, "b"|"s", "m"|"l", "misc", id], …],
/// "last": "<ns>"}`. A row that is not a trade, a trade before `since`, an
/// id that does not rise, a trade without an id that is the one before
/// it again (the page before's last: `since` taken as inclusive), a
/// `last` that does not move past the page (the next page would repeat
/// it, or never end), or one past the page's last trade (the next page
/// would skip the trades between) is an error naming the row.
fn parse_trades(
    result: &Value,
    keys: &[String],
    since: i128,
    after: (Option<u64>, Option<&Trade>),
) -> Result<Page, String> {
    let (after_id, after_trade) = after;
    let fields = result.as_object().ok_or("the result is not an object")?;
    let last = match fields.get("last") {
        Some(Value::String(text)) => text.parse::<i128>().ok(),
        Some(Value::Number(n)) => n.as_i64().map(i128::from),
        _ => None,
    }
    .ok_or("no \"last\" time in ns")?;
    // The pair's own trades: another pair's, under its name, are not.
    let rows = keys.iter().find_map(|k| fields.get(k)).ok_or_else(|| {
        let held: Vec<String> = (fields.keys())
            .filter(|k| *k != "last")
            .map(|k| shown::quoted(k).to_string())
            .collect();
        format!(
            "no trades under {} (the result holds {})",
            shown::quoted(&keys[0]),
            match held.is_empty() {
                true => "nothing else".to_owned(),
                false => held.join(", "),
            }
        )
    })?;
    let rows = rows.as_array().ok_or("no array of trades")?;
    let mut page = Page {
        trades: Vec::with_capacity(rows.len()),
        last,
        last_id: None,
    };
    for (i, row) in rows.iter().enumerate() {
        let row = row
            .as_array()
            .filter(|r| r.len() >= 3)
            .ok_or_else(|| format!("row {i} is not a trade (price, volume, time, …)"))?;
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let price = text(&row[0])
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && *p > 0.0)
            .ok_or_else(|| {
                format!(
                    "row {i}: price {} is not a positive number",
                    shown::quoted(&text(&row[0]))
                )
            })?;
        let volume = text(&row[1])
            .parse::<Decimal>()
            .ok()
            .filter(|v| !v.is_sign_negative() || v.is_zero())
            .ok_or_else(|| {
                format!(
                    "row {i}: volume {} is not a number from 0 up",
                    shown::quoted(&text(&row[1]))
                )
            })?;
        let time_s = row[2]
            .as_f64()
            .filter(|t| t.is_finite() && (0.0..1e11).contains(t))
            .ok_or_else(|| format!("row {i}: time {} is not seconds since the epoch", row[2]))?;
        let time_us = (time_s * 1e6).round() as i64;
        // The float has a few hundred ns of play; a µs is plenty.
        if i128::from(time_us + 1) * 1000 < since {
            return Err(format!(
                "row {i}: a trade at {}, before since",
                format_time(time_us.div_euclid(1000))
            ));
        }
        let id = row.get(6).and_then(Value::as_u64);
        if let Some(id) = id {
            if let Some(before) = page.last_id.or(after_id)
                && id <= before
            {
                return Err(format!("row {i}: trade id {id} does not follow {before}"));
            }
            page.last_id = Some(id);
        }
        let trade = Trade {
            time_us,
            price,
            volume,
        };
        // Without ids a repeat cannot be told from a new trade but by its
        // figures: refused rather than counted twice.
        if id.is_none() && after_trade == Some(&trade) {
            return Err(format!(
                "row {i}: the page before's last trade again ({} at {}, volume {}), and no \
                 trade ids to tell them apart: a repeat would be counted twice",
                format_time(time_us.div_euclid(1000)),
                trade.price,
                trade.volume
            ));
        }
        page.trades.push(trade);
    }
    if let Some(t) = page.trades.last() {
        if last <= since {
            return Err(format!("\"last\" {last} does not move past since"));
        }
        if last < i128::from(t.time_us - 1) * 1000 {
            return Err(format!(
                "\"last\" {last} is before the page's last trade at {}",
                format_time(t.time_us.div_euclid(1000))
            ));
        }
        // Kraken's `last` is its last trade's time in ns, finer than the
        // 4 decimals its seconds are printed with: a ms past it is not.
        if last > i128::from(t.time_us) * 1000 + 1_000_000 {
            let to = i64::try_from(last / 1_000_000).map_or_else(|_| last.to_string(), format_time);
            return Err(format!(
                "\"last\" {last} is past the page's last trade at {} (it would skip the \
                 trades up to {to})",
                format_time(t.time_us.div_euclid(1000))
            ));
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests;
