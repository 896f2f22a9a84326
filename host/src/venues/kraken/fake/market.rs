//! The fake's public market data: a seeded synthetic trade history per
//! pair, served as Kraken serves it. `Trades` answers the trades after
//! `since` (exclusive; ns, or s when it has 11 digits or fewer), at most
//! `count` (1 to 1000, default 1000), with `last` the last one's time in
//! ns (`since` again when there are none); without `since`, the most
//! recent `count`. `OHLC` answers the 720 most recent bars of an interval
//! up to the one forming at the history's "now", the last row that one;
//! an interval without trades is a flat row at the close before, count 0,
//! as Kraken sends them. Faults scripted for `Trades` or `OHLC`
//! (`FakeKraken::script_method`) answer instead.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use keel_model::synth::SplitMix64;
use rust_decimal::Decimal;

use super::{FakeKraken, Fault, State, error, ok, pair_key};

/// Kraken's OHLC intervals, minutes.
const INTERVALS: [i64; 9] = [1, 5, 15, 30, 60, 240, 1440, 10080, 21600];

/// One trade of the synthetic history.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeTrade {
    /// When, ns since the epoch (whole µs, so the float Kraken sends
    /// reads back to the same µs).
    pub time_ns: i64,
    /// As Kraken writes them: `"42000.10000"`, `"0.01234567"`.
    pub price: String,
    pub volume: String,
    pub id: u64,
    pub buy: bool,
}

/// A pair's trade history, standing at `now_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketHistory {
    trades: Vec<FakeTrade>,
    now_s: i64,
}

impl MarketHistory {
    /// `span_s` seconds of trades from `start_s`: one every 2 to 40 s,
    /// the price a random walk near 40,000 on a 0.1 tick, volumes of 8
    /// decimals; no trade in `quiet` (seconds after `start_s`). The same
    /// seed, the same trades. It stands at `start_s + span_s`.
    pub fn synthetic(seed: u64, start_s: i64, span_s: i64, quiet: Range<i64>) -> MarketHistory {
        let mut rng = SplitMix64::new(seed);
        let (start_us, end_us) = (start_s * 1_000_000, (start_s + span_s) * 1_000_000);
        let quiet_us = (start_us + quiet.start * 1_000_000)..(start_us + quiet.end * 1_000_000);
        let mut trades = Vec::new();
        let (mut t_us, mut price) = (start_us, 40_000.0_f64);
        loop {
            t_us += 2_000_000 + (rng.next_u64() % 38_000_000) as i64;
            if quiet_us.contains(&t_us) {
                t_us = quiet_us.end + (rng.next_u64() % 5_000_000) as i64;
            }
            if t_us >= end_us {
                break;
            }
            price = (price * (1.0 + 0.0005 * rng.next_normal())).max(1.0);
            let tick = (price * 10.0).round() / 10.0;
            let units = 1 + rng.next_u64() % 200_000_000;
            trades.push(FakeTrade {
                time_ns: t_us * 1000,
                price: format!("{tick:.5}"),
                volume: format!("{}.{:08}", units / 100_000_000, units % 100_000_000),
                id: 1_000_000 + trades.len() as u64,
                buy: rng.next_u64().is_multiple_of(2),
            });
        }
        MarketHistory {
            trades,
            now_s: start_s + span_s,
        }
    }

    pub fn trades(&self) -> &[FakeTrade] {
        &self.trades
    }

    /// The first trade after `since_ns`.
    fn after(&self, since_ns: i64) -> usize {
        self.trades.partition_point(|t| t.time_ns <= since_ns)
    }

    fn trades_json(&self, since: Option<i64>, count: usize) -> serde_json::Value {
        let range = match since {
            Some(since) => {
                let first = self.after(since);
                first..(first + count).min(self.trades.len())
            }
            None => self.trades.len().saturating_sub(count)..self.trades.len(),
        };
        let rows: Vec<serde_json::Value> = self.trades[range.clone()]
            .iter()
            .map(|t| {
                serde_json::json!([
                    t.price,
                    t.volume,
                    t.time_ns as f64 / 1e9,
                    if t.buy { "b" } else { "s" },
                    "l",
                    "",
                    t.id
                ])
            })
            .collect();
        let last = match range.end.checked_sub(1).filter(|_| !range.is_empty()) {
            Some(i) => self.trades[i].time_ns,
            None => since.unwrap_or(self.now_s * 1_000_000_000),
        };
        serde_json::json!({ "rows": rows, "last": last.to_string() })
    }

    /// OHLC rows of `interval_min`, as Kraken's: the 720 most recent up
    /// to the bar forming at `now_s`, those after `since` (s) only.
    fn ohlc_json(&self, interval_min: i64, since: Option<i64>) -> serde_json::Value {
        let bar_ns = interval_min * 60 * 1_000_000_000;
        let now_bar = (self.now_s * 1_000_000_000).div_euclid(bar_ns) * bar_ns;
        let first_bar = (now_bar - 719 * bar_ns).max(
            self.trades
                .first()
                .map_or(now_bar, |t| t.time_ns.div_euclid(bar_ns) * bar_ns),
        );
        let mut rows = Vec::new();
        let mut bar = first_bar;
        while bar <= now_bar {
            let (from, to) = (self.after(bar - 1), self.after(bar + bar_ns - 1));
            let time_s = bar / 1_000_000_000;
            if since.is_some_and(|s| time_s <= s) || (from == to && from == 0) {
                bar += bar_ns;
                continue;
            }
            let inside = &self.trades[from..to];
            let price = |t: &FakeTrade| t.price.parse::<f64>().unwrap_or(0.0);
            let row = if inside.is_empty() {
                let close = format!("{:.1}", price(&self.trades[from - 1]));
                serde_json::json!([time_s, close, close, close, close, "0.0", "0.00000000", 0])
            } else {
                let volume: Decimal = inside
                    .iter()
                    .map(|t| t.volume.parse::<Decimal>().unwrap_or_default())
                    .sum();
                let cost: f64 = inside
                    .iter()
                    .map(|t| price(t) * t.volume.parse::<f64>().unwrap_or(0.0))
                    .sum();
                let high = inside.iter().map(price).fold(f64::MIN, f64::max);
                let low = inside.iter().map(price).fold(f64::MAX, f64::min);
                let vwap = cost / volume.to_string().parse::<f64>().unwrap_or(1.0);
                serde_json::json!([
                    time_s,
                    format!("{:.1}", price(&inside[0])),
                    format!("{high:.1}"),
                    format!("{low:.1}"),
                    format!("{:.1}", price(&inside[inside.len() - 1])),
                    format!("{vwap:.1}"),
                    format!("{volume:.8}"),
                    inside.len()
                ])
            };
            rows.push(row);
            bar += bar_ns;
        }
        serde_json::json!({ "rows": rows, "last": (now_bar - bar_ns) / 1_000_000_000 })
    }
}

/// A public call the fake answered, or met with a scripted fault.
#[derive(Debug, Clone)]
pub struct PublicCall {
    /// `Trades`, `OHLC`.
    pub method: String,
    /// The query string as sent.
    pub query: String,
    pub at: Instant,
}

/// The fake's markets: histories by Kraken's pair key, and the calls made.
#[derive(Debug, Default)]
pub(super) struct Markets {
    histories: HashMap<String, MarketHistory>,
    calls: Vec<PublicCall>,
}

impl FakeKraken {
    /// `pair` (Kraken's key or altname) trades as `history` from now on.
    pub fn set_market(&self, pair: &str, history: MarketHistory) {
        self.state()
            .market
            .histories
            .insert(pair_key(pair), history);
    }

    /// The trades of `pair`'s history, oldest first.
    pub fn market_trades(&self, pair: &str) -> Vec<FakeTrade> {
        self.state()
            .market
            .histories
            .get(&pair_key(pair))
            .map(|h| h.trades.clone())
            .unwrap_or_default()
    }

    /// The `Trades` and `OHLC` calls so far, in order.
    pub fn public_calls(&self) -> Vec<PublicCall> {
        self.state().market.calls.clone()
    }
}

/// The reply to a public `Trades` or `OHLC` request for `target`.
pub(super) fn answer(state: &Mutex<State>, method: &str, target: &str) -> (u16, String) {
    let query_text = target.split_once('?').map_or("", |(_, q)| q);
    let query: HashMap<String, String> = form_urlencoded::parse(query_text.as_bytes())
        .into_owned()
        .collect();
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.market.calls.push(PublicCall {
        method: method.to_owned(),
        query: query_text.to_owned(),
        at: Instant::now(),
    });
    let fault = s
        .method_faults
        .get_mut(method)
        .and_then(std::collections::VecDeque::pop_front);
    match fault {
        Some(Fault::Error(e)) => return error(&e),
        Some(Fault::Reply(status, body)) => return (status, body),
        Some(Fault::DoneThen502) => return (502, "<html>502 Bad Gateway</html>".into()),
        Some(Fault::DoneThenSilent(quiet)) => {
            drop(s);
            std::thread::sleep(quiet);
            return (0, String::new());
        }
        None => {}
    }
    let pair = query.get("pair").cloned().unwrap_or_default();
    let key = pair_key(&pair);
    let known = ["XXBTZUSD", "XETHZUSD"].contains(&key.as_str());
    let none = MarketHistory {
        trades: Vec::new(),
        now_s: 0,
    };
    let history = match s.market.histories.get(&key) {
        Some(h) => h,
        None if known => &none,
        None => return error("EQuery:Unknown asset pair"),
    };
    let number = |k: &str| query.get(k).map(|v| v.parse::<i64>());
    let mut reply = match method {
        "Trades" => {
            let since = match number("since") {
                None => None,
                Some(Ok(s)) if s < 100_000_000_000 => Some(s.saturating_mul(1_000_000_000)),
                Some(Ok(ns)) => Some(ns),
                Some(Err(_)) => return error("EGeneral:Invalid arguments:since"),
            };
            let count = match number("count") {
                None => 1000,
                Some(Ok(c)) if (1..=1000).contains(&c) => c as usize,
                Some(_) => return error("EGeneral:Invalid arguments:count"),
            };
            history.trades_json(since, count)
        }
        _ => {
            let interval = match number("interval") {
                None => 1,
                Some(Ok(i)) if INTERVALS.contains(&i) => i,
                Some(_) => return error("EGeneral:Invalid arguments:interval"),
            };
            let since = match number("since") {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(_)) => return error("EGeneral:Invalid arguments:since"),
            };
            history.ohlc_json(interval, since)
        }
    };
    let mut result = serde_json::Map::new();
    result.insert(key, reply["rows"].take());
    result.insert("last".into(), reply["last"].take());
    ok(serde_json::Value::Object(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-api-key";
    const SECRET: &str =
        "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
    const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    fn get(fake: &FakeKraken, path_and_query: &str) -> (u16, serde_json::Value) {
        let reply =
            reqwest::blocking::get(format!("{}{path_and_query}", fake.base_url())).expect("reply");
        let status = reply.status().as_u16();
        let text = reply.text().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    fn fake() -> FakeKraken {
        let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
        fake.set_market(
            "XBTUSD",
            MarketHistory::synthetic(7, START, 13 * 3600, 3 * 3600..5 * 3600),
        );
        fake
    }

    #[test]
    fn the_synthetic_history_is_seeded_and_quiet_where_asked() {
        let a = MarketHistory::synthetic(7, START, 10 * 3600, 3 * 3600..5 * 3600);
        assert_eq!(
            a,
            MarketHistory::synthetic(7, START, 10 * 3600, 3 * 3600..5 * 3600)
        );
        assert_ne!(
            a,
            MarketHistory::synthetic(8, START, 10 * 3600, 3 * 3600..5 * 3600)
        );
        let hours: Vec<i64> = a
            .trades()
            .iter()
            .map(|t| (t.time_ns / 1_000_000_000 - START) / 3600)
            .collect();
        assert!(hours.windows(2).all(|w| w[0] <= w[1]));
        assert!(!hours.contains(&3) && !hours.contains(&4), "quiet");
        assert!(
            (0..10)
                .filter(|h| *h != 3 && *h != 4)
                .all(|h| hours.contains(&h))
        );
        assert!(a.trades().len() > 600, "{}", a.trades().len());
    }

    #[test]
    fn trades_honour_since_exclusive_and_count_as_kraken_does() {
        let fake = fake();
        let all = fake.market_trades("XBTUSD");
        let pick = &all[100];
        // `since` is exclusive: at a trade's own ns, the page starts after it.
        let (_, page) = get(
            &fake,
            &format!(
                "/0/public/Trades?pair=XBTUSD&since={}&count=3",
                pick.time_ns
            ),
        );
        let rows = page["result"]["XXBTZUSD"].as_array().expect("rows");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][6], all[101].id);
        assert_eq!(rows[0][0], all[101].price.as_str());
        assert_eq!(page["result"]["last"], all[103].time_ns.to_string());
        // Seconds are read as seconds.
        let (_, page) = get(
            &fake,
            &format!("/0/public/Trades?pair=XXBTZUSD&since={START}"),
        );
        let rows = page["result"]["XXBTZUSD"].as_array().expect("rows");
        assert_eq!((rows.len(), rows[0][6].as_u64()), (1000, Some(all[0].id)));
        // Past the end: nothing, and `last` stays.
        let end = all[all.len() - 1].time_ns.to_string();
        let (_, page) = get(&fake, &format!("/0/public/Trades?pair=XBTUSD&since={end}"));
        assert_eq!(page["result"]["XXBTZUSD"], serde_json::json!([]));
        assert_eq!(page["result"]["last"], end.as_str());
        // Without `since`, the most recent.
        let (_, page) = get(&fake, "/0/public/Trades?pair=XBTUSD&count=2");
        assert_eq!(page["result"]["XXBTZUSD"][1][6], all[all.len() - 1].id);
        for bad in ["count=0", "count=1001", "since=soon"] {
            let (_, reply) = get(&fake, &format!("/0/public/Trades?pair=XBTUSD&{bad}"));
            assert!(
                reply["error"][0]
                    .as_str()
                    .is_some_and(|e| e.starts_with("EGeneral:Invalid arguments")),
                "{bad}"
            );
        }
        let (_, reply) = get(&fake, "/0/public/Trades?pair=DOGEUSD");
        assert_eq!(reply["error"][0], "EQuery:Unknown asset pair");
        // A pair the fake knows without a history has no trades.
        let (_, reply) = get(&fake, "/0/public/Trades?pair=ETHUSD&since=0");
        assert_eq!(reply["result"]["XETHZUSD"], serde_json::json!([]));
    }

    #[test]
    fn ohlc_gives_the_720_most_recent_bars_the_last_forming_and_quiet_ones_flat() {
        let fake = fake();
        let (_, reply) = get(&fake, "/0/public/OHLC?pair=XBTUSD&interval=60");
        let rows = reply["result"]["XXBTZUSD"].as_array().expect("rows");
        // Thirteen hours from the first; the last is the bar forming at
        // "now" (the history's end, which opens an hour of its own).
        assert_eq!(rows.len(), 14);
        assert_eq!(rows[0][0], START);
        assert_eq!(reply["result"]["last"], START + 12 * 3600);
        for quiet in [3, 4] {
            let row = &rows[quiet];
            assert_eq!(
                (row[7].as_u64(), row[6].as_str()),
                (Some(0), Some("0.00000000"))
            );
            assert_eq!(row[1], rows[2][4], "flat at the close before");
        }
        let (_, reply) = get(&fake, "/0/public/OHLC?pair=XBTUSD&interval=1");
        let rows = reply["result"]["XXBTZUSD"].as_array().expect("rows");
        assert_eq!(rows.len(), 720, "no more than 720, whatever since says");
        assert_eq!(rows[719][0], START + 13 * 3600);
        let (_, reply) = get(
            &fake,
            &format!(
                "/0/public/OHLC?pair=XBTUSD&interval=60&since={}",
                START + 7 * 3600
            ),
        );
        assert_eq!(
            reply["result"]["XXBTZUSD"].as_array().map(Vec::len),
            Some(6)
        );
        let (_, reply) = get(&fake, "/0/public/OHLC?pair=XBTUSD&interval=7");
        assert_eq!(reply["error"][0], "EGeneral:Invalid arguments:interval");
    }

    #[test]
    fn scripted_faults_answer_the_next_calls_then_the_market_does() {
        let fake = fake();
        fake.script_method(
            "Trades",
            [
                Fault::Error("EGeneral:Too many requests".into()),
                Fault::Reply(429, "{\"error\":[\"EGeneral:Too many requests\"]}".into()),
                Fault::DoneThen502,
                Fault::Reply(200, "<html>maintenance</html>".into()),
            ],
        );
        let path = "/0/public/Trades?pair=XBTUSD&since=0&count=1";
        assert_eq!(get(&fake, path).1["error"][0], "EGeneral:Too many requests");
        assert_eq!(get(&fake, path).0, 429);
        assert_eq!(get(&fake, path).0, 502);
        assert_eq!(get(&fake, path).1, "<html>maintenance</html>");
        assert_eq!(
            get(&fake, path).1["result"]["XXBTZUSD"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let calls = fake.public_calls();
        assert_eq!(calls.len(), 5);
        assert!(
            calls
                .iter()
                .all(|c| c.method == "Trades" && c.query.contains("since=0"))
        );
    }
}
