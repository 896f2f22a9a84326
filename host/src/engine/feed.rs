//! Where a run's bars come from, one symbol each: a candle file replayed line by line
//! (a bad line stops the feed with `file:line: what`; the bars before it were
//! already traded), the built-in seeded sample, or live bars polled from
//! Kraken's public OHLC endpoint (a bad reply is reported and polled again; a
//! bad bar in a reply is skipped and reported). Every bar passes
//! `check_candle`, the rule import and backtests apply too.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_model::candles::{Candle, CandleError, Columns, CsvCandles, check_candle, format_time};

use crate::control::FeedHealth;
use crate::venues::body::read_body;

type Candles = Box<dyn Iterator<Item = Result<Candle, CandleError>>>;

/// What the feed has now.
#[derive(Debug)]
pub enum Next {
    Bar(Candle),
    /// No new bar yet: ask again after this long.
    Wait(Duration),
    End,
    /// The feed cannot go on.
    Failed(String),
}

/// A stream of closed bars of one symbol.
pub struct BarFeed {
    candles: Candles,
    ahead: VecDeque<Result<Candle, CandleError>>,
    bar_ms: i64,
    live: Option<Kraken>,
    /// Worth a log line and a risk event: an outage began or ended.
    warnings: Vec<String>,
    /// Worth a log line only: an outage still going on, at most once a
    /// `REMIND_EVERY`.
    reminders: Vec<String>,
}

impl std::fmt::Debug for BarFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarFeed")
            .field("bar_ms", &self.bar_ms)
            .finish()
    }
}

impl BarFeed {
    /// Replays a candle file of any format `keel data import` reads: CSV
    /// read as it goes, freqtrade JSON (`.json`), Parquet and Feather read
    /// whole first. `columns` names the columns of roles whose names Keel
    /// does not know (`--columns`).
    pub fn replay(path: &Path, columns: &Columns) -> Result<BarFeed, CandleError> {
        use keel_model::candles::{is_feather, is_json, is_parquet};
        let name = path.display().to_string();
        if is_json(path) || is_parquet(path) || is_feather(path) {
            let candles = keel_model::candles::read_file_columns(path, columns)?;
            return BarFeed::start(Box::new(candles.into_iter().map(Ok)), &name);
        }
        let file = keel_model::candles::open(path)?;
        let lines = std::io::BufReader::new(file).lines();
        let candles = CsvCandles::with_columns(lines, &name, columns)?;
        BarFeed::start(Box::new(candles), &name)
    }

    /// Live bars of `pair` from Kraken's public OHLC endpoint at `base_url`
    /// (`https://api.kraken.com` in production), polled every `poll`.
    pub fn kraken(
        base_url: &str,
        pair: &str,
        interval_min: u32,
        poll: Duration,
        first_bar_within: Duration,
    ) -> anyhow::Result<BarFeed> {
        let client = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(BarFeed {
            candles: Box::new(std::iter::empty()),
            ahead: VecDeque::new(),
            bar_ms: i64::from(interval_min) * 60_000,
            live: Some(Kraken {
                client,
                url: format!("{}/0/public/OHLC", base_url.trim_end_matches('/')),
                pair: pair.to_owned(),
                interval_min,
                poll,
                since: None,
                last_ms: None,
                polled: None,
                queue: VecDeque::new(),
                started: Instant::now(),
                first_bar_within,
                health: FeedHealth::default(),
                outage: None,
            }),
            warnings: Vec::new(),
            reminders: Vec::new(),
        })
    }

    /// The next bar, or how long to wait for one.
    pub fn next_bar(&mut self) -> Next {
        if let Some(live) = &mut self.live {
            return live.next(&mut self.warnings, &mut self.reminders);
        }
        match self.next() {
            Some(Ok(c)) => Next::Bar(c),
            Some(Err(e)) => Next::Failed(e.to_string()),
            None => Next::End,
        }
    }

    /// Problems the feed got over (a bad reply, the exchange unreachable),
    /// since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Reminders of trouble still going on, since the last call: logged,
    /// never recorded one by one.
    pub fn take_reminders(&mut self) -> Vec<String> {
        std::mem::take(&mut self.reminders)
    }

    /// How a live feed is doing; `None` for a replay or the sample.
    pub fn health(&self) -> Option<&FeedHealth> {
        self.live.as_ref().map(|k| &k.health)
    }

    /// The built-in sample: `bars` seeded random-walk 1-minute candles.
    pub fn sample(seed: u64, bars: usize) -> BarFeed {
        let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let candles = keel_model::synth::random_walk_iter(seed, bars, start, 60_000, 100.0, 0.004);
        BarFeed {
            candles: Box::new(candles.map(Ok)),
            ahead: VecDeque::new(),
            bar_ms: 60_000,
            live: None,
            warnings: Vec::new(),
            reminders: Vec::new(),
        }
    }

    /// Reads ahead to the second bar to learn the bar length.
    fn start(mut candles: Candles, name: &str) -> Result<BarFeed, CandleError> {
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
        Ok(BarFeed {
            candles,
            ahead,
            bar_ms,
            live: None,
            warnings: Vec::new(),
            reminders: Vec::new(),
        })
    }

    /// The spacing of the first two bars.
    pub fn bar_ms(&self) -> i64 {
        self.bar_ms
    }
}

impl Iterator for BarFeed {
    type Item = Result<Candle, CandleError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.ahead.pop_front().or_else(|| self.candles.next())
    }
}

/// Polls `GET /0/public/OHLC?pair=…&interval=…&since=…`, whose documented
/// reply is `{"error": [], "result": {"<PAIR>": [[time, "open", "high",
/// "low", "close", "vwap", "volume", count], …], "last": <id>}}`. The last
/// row is the bar still forming and is never used.
struct Kraken {
    client: reqwest::blocking::Client,
    url: String,
    pair: String,
    interval_min: u32,
    poll: Duration,
    since: Option<i64>,
    last_ms: Option<i64>,
    polled: Option<Instant>,
    queue: VecDeque<Candle>,
    started: Instant,
    /// A run whose feed has not delivered a bar by then ends.
    first_bar_within: Duration,
    health: FeedHealth,
    /// Since when polls fail, and when that was last said.
    outage: Option<(Instant, Instant)>,
}

/// The largest OHLC reply read: 720 rows, Kraken's most, take about 60 KB.
const MAX_REPLY_BYTES: u64 = 4 << 20;

/// The longest a poll may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an outage that goes on is said again.
const REMIND_EVERY: Duration = Duration::from_secs(60);

impl Kraken {
    fn next(&mut self, warnings: &mut Vec<String>, reminders: &mut Vec<String>) -> Next {
        if let Some(c) = self.queue.pop_front() {
            return self.deliver(c);
        }
        if self.health.last_bar_ms.is_none() && self.started.elapsed() >= self.first_bar_within {
            let why = self
                .health
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (last problem: {e})"));
            return Next::Failed(format!(
                "kraken OHLC {}: no closed bar within {} s of the start{why}",
                self.pair,
                self.first_bar_within.as_secs()
            ));
        }
        if let Some(at) = self.polled {
            let since = at.elapsed();
            if since < self.poll {
                return Next::Wait(self.poll - since);
            }
        }
        self.polled = Some(Instant::now());
        match self.fetch() {
            Ok(skipped) => {
                self.recovered(warnings);
                warnings.extend(skipped);
            }
            Err(Fatal(e)) => return Next::Failed(e),
            Err(Transient(e)) => self.failed(e, warnings, reminders),
        }
        match self.queue.pop_front() {
            Some(c) => self.deliver(c),
            None => Next::Wait(self.poll),
        }
    }

    fn deliver(&mut self, candle: Candle) -> Next {
        self.health.last_bar_ms = Some(candle.time_ms);
        Next::Bar(candle)
    }

    /// A failed poll: the first of an outage is a warning (logged and
    /// recorded), the rest a reminder at most once a `REMIND_EVERY`.
    fn failed(&mut self, error: String, warnings: &mut Vec<String>, reminders: &mut Vec<String>) {
        self.health.consecutive_failures += 1;
        let now = Instant::now();
        match &mut self.outage {
            None => {
                self.outage = Some((now, now));
                warnings.push(format!(
                    "{error} (polling again every {} ms)",
                    self.poll.as_millis()
                ));
            }
            Some((since, said)) if now.duration_since(*said) >= REMIND_EVERY => {
                *said = now;
                reminders.push(format!(
                    "{error} ({} polls in a row have failed, for {} s)",
                    self.health.consecutive_failures,
                    now.duration_since(*since).as_secs()
                ));
            }
            Some(_) => {}
        }
        self.health.last_error = Some(error);
    }

    fn recovered(&mut self, warnings: &mut Vec<String>) {
        if let Some((since, _)) = self.outage.take() {
            warnings.push(format!(
                "kraken OHLC {}: answering again after {} failed polls in {} s",
                self.pair,
                self.health.consecutive_failures,
                since.elapsed().as_secs()
            ));
        }
        self.health.consecutive_failures = 0;
        self.health.last_error = None;
    }

    /// Queues the new closed bars; returns what was wrong with the bars
    /// it skipped.
    fn fetch(&mut self) -> Result<Vec<String>, Problem> {
        let mut request = self.client.get(&self.url).query(&[
            ("pair", self.pair.clone()),
            ("interval", self.interval_min.to_string()),
        ]);
        if let Some(since) = self.since {
            request = request.query(&[("since", since.to_string())]);
        }
        if self.health.last_bar_ms.is_none() {
            // A server that never answers must not hold the run past its
            // first-bar deadline.
            let left = self.first_bar_within.saturating_sub(self.started.elapsed());
            request = request.timeout(left.clamp(Duration::from_millis(100), REQUEST_TIMEOUT));
        }
        let what = format!("kraken OHLC {}", self.pair);
        let response = request
            .send()
            .map_err(|e| Transient(format!("{what}: request failed: {}", one_line(&e))))?;
        let status = response.status();
        // A body that drips in is cut off, not waited on read by read.
        let body = read_body(response, MAX_REPLY_BYTES, Instant::now(), REQUEST_TIMEOUT)
            .map_err(|e| Transient(format!("{what}: {e}")))?;
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(Transient(format!("{what}: HTTP {status}")));
        }
        let reply = parse_ohlc(&body).map_err(|e| match e {
            Fatal(m) => Fatal(format!("{what}: {m}")),
            Transient(m) => Transient(format!("{what}: {m}")),
        })?;
        self.since = reply.last.or(self.since);
        for candle in reply.closed {
            if self.last_ms.is_some_and(|l| candle.time_ms <= l) {
                continue;
            }
            self.last_ms = Some(candle.time_ms);
            self.queue.push_back(candle);
        }
        Ok(reply
            .skipped
            .iter()
            .map(|m| format!("{what}: {m}"))
            .collect())
    }
}

use Problem::{Fatal, Transient};

/// A reply the feed cannot use: `Fatal` ends the run (the pair does not
/// exist), `Transient` is reported and polled again.
#[derive(Debug, PartialEq)]
pub enum Problem {
    Fatal(String),
    Transient(String),
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}

/// One OHLC reply: its closed bars, the rows skipped and why, and `last`.
#[derive(Debug, PartialEq)]
pub struct OhlcReply {
    /// Every row but the last (the bar still forming) that passed the
    /// candle rules, oldest first.
    pub closed: Vec<Candle>,
    /// A bad row is skipped, not the whole reply (the feed would ask for the
    /// same bar forever): one message each, naming the bar.
    pub skipped: Vec<String>,
    pub last: Option<i64>,
}

/// Parses one OHLC reply. A reply Kraken refused, or one that is not OHLC
/// rows at all, is a `Problem`.
pub fn parse_ohlc(body: &str) -> Result<OhlcReply, Problem> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| Transient(format!("malformed reply: {e}")))?;
    if let Some(errors) = v.get("error").and_then(|e| e.as_array())
        && !errors.is_empty()
    {
        let text: Vec<String> = errors
            .iter()
            .map(|e| e.as_str().unwrap_or("?").to_owned())
            .collect();
        let text = text.join("; ");
        // Kraken's query errors are about the request itself: asking again
        // will not help. Service errors and rate limits pass.
        return Err(
            if text.starts_with("EQuery") || text.starts_with("EGeneral:Invalid") {
                Fatal(format!("refused: {text}"))
            } else {
                Transient(format!("error: {text}"))
            },
        );
    }
    let result = v
        .get("result")
        .and_then(|r| r.as_object())
        .ok_or_else(|| Transient("malformed reply: no result object".into()))?;
    let last = result.get("last").and_then(serde_json::Value::as_i64);
    let rows = result
        .iter()
        .find(|(k, _)| *k != "last")
        .and_then(|(_, v)| v.as_array())
        .ok_or_else(|| Transient("malformed reply: no OHLC rows".into()))?;
    let mut reply = OhlcReply {
        closed: Vec::with_capacity(rows.len()),
        skipped: Vec::new(),
        last,
    };
    // The last row is the bar still forming.
    for (i, row) in rows.iter().enumerate().take(rows.len().saturating_sub(1)) {
        match ohlc_row(row, reply.closed.last()) {
            Ok(candle) => reply.closed.push(candle),
            Err((Some(time_ms), why)) => reply
                .skipped
                .push(format!("bar {} skipped: {why}", format_time(time_ms))),
            Err((None, why)) => reply.skipped.push(format!("row {i} skipped: {why}")),
        }
    }
    Ok(reply)
}

/// One OHLC row as a candle checked by the rules every candle obeys, coming
/// after `previous`; else what is wrong, with the bar's time when it has one.
fn ohlc_row(
    row: &serde_json::Value,
    previous: Option<&Candle>,
) -> Result<Candle, (Option<i64>, String)> {
    let row = row.as_array().ok_or((None, "not an array".to_owned()))?;
    if row.len() < 7 {
        return Err((None, format!("{} fields, expected 8", row.len())));
    }
    let time_ms = (row[0].as_i64())
        .and_then(|s| s.checked_mul(1000))
        .ok_or((None, format!("time {} is not whole epoch seconds", row[0])))?;
    let num = |k: usize, name: &str| -> Result<f64, (Option<i64>, String)> {
        row[k]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| row[k].as_f64())
            .filter(|x| x.is_finite())
            .ok_or((Some(time_ms), format!("{name} is not a number")))
    };
    let candle = Candle {
        time_ms,
        open: num(1, "open")?,
        high: num(2, "high")?,
        low: num(3, "low")?,
        close: num(4, "close")?,
        volume: num(6, "volume")?,
    };
    check_candle(&candle).map_err(|e| (Some(time_ms), e))?;
    if previous.is_some_and(|p| candle.time_ms <= p.time_ms) {
        return Err((Some(time_ms), "not after the bar before it".into()));
    }
    Ok(candle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kraken_replies_and_names_what_is_wrong() {
        let good = r#"{"error":[],"result":{"XXBTZUSD":[
            [1688671200,"30306.1","30306.2","30305.7","30305.7","30306.1","3.39243896",23],
            [1688671260,"30305.7","30310.0","30300.0","30309.9","30305.0","1.5",7]],"last":1688671200}}"#;
        let reply = parse_ohlc(good).expect("parses");
        assert_eq!(reply.last, Some(1688671200));
        assert_eq!(reply.closed.len(), 1, "the forming bar is left out");
        assert!(reply.skipped.is_empty());
        assert_eq!(reply.closed[0].time_ms, 1_688_671_200_000);
        assert_eq!(
            (reply.closed[0].high, reply.closed[0].volume),
            (30306.2, 3.39243896)
        );

        let cases = [
            (
                r#"{"error":["EQuery:Unknown asset pair"]}"#,
                Fatal("refused: EQuery:Unknown asset pair".into()),
            ),
            (
                r#"{"error":["EService:Unavailable"]}"#,
                Transient("error: EService:Unavailable".into()),
            ),
            (
                r#"{"error":[],"result":"#,
                Transient("malformed reply: EOF while parsing a value at line 1 column 21".into()),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_ohlc(body).expect_err(body), expected, "{body}");
        }
    }

    #[test]
    fn a_bad_row_is_skipped_by_name_and_the_rest_of_the_reply_kept() {
        let row = |t: i64, high: &str| format!(r#"[{t},"1","{high}","0.5","1","1","1",1]"#);
        let reply = |rows: &[String]| {
            format!(
                r#"{{"error":[],"result":{{"X":[{}],"last":9}}}}"#,
                rows.join(",")
            )
        };
        let body = reply(&[
            row(60, "2"),
            row(120, "0.1"),
            row(180, "1e30"),
            r#"[240,"a","1","1","1","1","1",1]"#.to_owned(),
            r#"[9223372036854775807,"1","2","0.5","1","1","1",1]"#.to_owned(),
            row(300, "2"),
            row(240, "2"),
            row(360, "1e30"),
        ]);
        let parsed = parse_ohlc(&body).expect("parses");
        let times: Vec<i64> = parsed.closed.iter().map(|c| c.time_ms).collect();
        assert_eq!(times, [60_000, 300_000], "the good closed bars");
        assert_eq!(
            parsed.skipped,
            [
                "bar 1970-01-01T00:02:00Z skipped: high 0.1 is below low 0.5",
                "bar 1970-01-01T00:03:00Z skipped: high 1e30 is outside the prices Keel books, 1e-8 to 100000000000000",
                "bar 1970-01-01T00:04:00Z skipped: open is not a number",
                "row 4 skipped: time 9223372036854775807 is not whole epoch seconds",
                "bar 1970-01-01T00:04:00Z skipped: not after the bar before it",
            ],
            "the forming bar is not judged"
        );
        assert_eq!(parsed.last, Some(9));
    }
}
