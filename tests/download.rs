//! `keel data download` as a user runs it, against a fake Kraken on
//! loopback serving a seeded synthetic trade history: the bars match ones
//! made here from the fake's own trades, gaps are reported, busy replies
//! are waited out, a SIGKILL midway and a rerun store exactly what one
//! uninterrupted run does, and bad input or a bad reply is one line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_host::store::{DownloadKey, Store};
use keel_host::venues::kraken::fake::{FakeKraken, Fault, MarketHistory};
use keel_model::Timeframe;
use keel_model::candles::Candle;
use rust_decimal::Decimal;

use crate::data::keel;
use crate::paper::text;

const KEY: &str = "download-test-key";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z
const HOUR_MS: i64 = 3_600_000;

/// A fake Kraken whose XBTUSD traded for 72 hours from 2024-01-01, with
/// no trade in hours 30 and 31.
fn fake() -> FakeKraken {
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake Kraken");
    fake.set_market(
        "XBTUSD",
        MarketHistory::synthetic(21, START, 72 * 3600, 30 * 3600..32 * 3600),
    );
    fake
}

/// `keel data download` of the fake's XBTUSD, 1h bars from 2024-01-01,
/// 100 requests a second unless `extra` says otherwise.
fn args<'a>(fake_url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "data",
        "download",
        "--venue",
        "kraken",
        "--pair",
        "XBTUSD",
        "--timeframe",
        "1h",
        "--since",
        "2024-01-01",
        "--base-url",
        fake_url,
    ];
    if !extra.contains(&"--rate") {
        args.extend(["--rate", "100"]);
    }
    args.extend_from_slice(extra);
    args
}

/// The hourly bars of the fake's XBTUSD trades, made here: grouped by the
/// hour of their ns time, volumes summed as decimals. Only bars closed by
/// `before_ms`.
fn reference(fake: &FakeKraken, before_ms: i64) -> Vec<Candle> {
    let mut out: Vec<(Candle, Decimal)> = Vec::new();
    for t in fake.market_trades("XBTUSD") {
        let open = t.time_ns.div_euclid(HOUR_MS * 1_000_000) * HOUR_MS;
        if open + HOUR_MS > before_ms {
            break;
        }
        let price: f64 = t.price.parse().expect("price");
        let volume: Decimal = t.volume.parse().expect("volume");
        match out.last_mut() {
            Some((c, v)) if c.time_ms == open => {
                c.high = c.high.max(price);
                c.low = c.low.min(price);
                c.close = price;
                *v += volume;
            }
            _ => out.push((
                Candle {
                    time_ms: open,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: 0.0,
                },
                volume,
            )),
        }
    }
    out.into_iter()
        .map(|(c, v)| Candle {
            volume: v.to_string().parse().expect("volume"),
            ..c
        })
        .collect()
}

/// The bars a download stores of the fake's history: every one but the
/// bar its trades end in, which no later trade shows over.
fn downloadable(fake: &FakeKraken) -> Vec<Candle> {
    let mut bars = reference(fake, i64::MAX);
    bars.pop();
    bars
}

fn stored(db: &Path) -> Vec<Candle> {
    Store::open(db)
        .expect("open")
        .load_candles("XBT/USD", Timeframe::H1, None, None)
        .expect("load")
}

#[test]
fn a_download_stores_the_bars_its_trades_make_reports_the_gap_and_then_is_up_to_date() {
    let fake = fake();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let url = fake.base_url();
    let out = keel(&db, &args(&url, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        "downloaded XBT/USD 1h from kraken XBTUSD 1h: 69 bars (69 new, 0 unchanged, 0 replaced), \
         2024-01-01T00:00:00Z .. 2024-01-03T22:00:00Z\n\
         1 gap, 2 missing bars (not filled); largest: 2 bars after 2024-01-02T05:00:00Z\n\
         the 2024-01-03T23:00:00Z bar is stored once a trade of a later bar shows it over (the \
         venue's trades end in it)\n"
    );
    let bars = stored(&db);
    assert_eq!(bars, downloadable(&fake));
    assert_eq!(bars.len(), 69);
    // A bar a batch: the gap lies across a batch's edge, and is the same.
    let one_by_one = dir.path().join("one.db");
    let out = keel(&one_by_one, &args(&url, &["--batch-bars", "1"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), stdout);
    // A progress line a batch, on stderr.
    assert!(
        text(&out.stderr).contains("kraken XBTUSD 1h: 69 bars so far, up to "),
        "{}",
        text(&out.stderr)
    );

    // The next run asks again from the bar still waiting, and from there
    // only: no later trade yet, so nothing more is stored.
    let calls = fake.public_calls().len();
    let out = keel(&db, &args(&url, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "XBT/USD 1h from kraken XBTUSD 1h: nothing new stored; every bar before \
             2024-01-03T23:00:00Z is stored, and the venue shows no later bar over yet\n"
        ),
        "{stdout}"
    );
    let asked = &fake.public_calls()[calls..];
    let trades: Vec<_> = asked.iter().filter(|c| c.method == "Trades").collect();
    assert!(
        trades[0].query.contains("since=1704322799999999999"),
        "{}",
        trades[0].query
    );
    assert_eq!(stored(&db), bars);
}

#[test]
fn a_download_beside_stored_bars_tells_of_the_series_whole() {
    let fake = fake();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let url = fake.base_url();
    let until = ["--until", "2024-01-01T05:00:00Z"];
    let out = keel(&db, &args(&url, &until));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("the stored series now"));
    let mut later = args(&url, &["--until", "2024-01-01T15:00:00Z"]);
    let since = later.iter().position(|a| *a == "--since").expect("--since");
    later[since + 1] = "2024-01-01T10:00:00Z";
    let out = keel(&db, &later);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "downloaded XBT/USD 1h from kraken XBTUSD 1h: 5 bars (5 new, 0 unchanged, 0 replaced), \
         2024-01-01T10:00:00Z .. 2024-01-01T14:00:00Z\n\
         no gaps\n\
         the stored series now: 10 bars, 2024-01-01T00:00:00Z .. 2024-01-01T14:00:00Z, \
         1 gap (5 bars missing)\n"
    );
}

#[test]
fn busy_replies_are_waited_out_and_the_download_completes() {
    let fake = fake();
    fake.script_method(
        "Trades",
        [
            Fault::Error("EGeneral:Too many requests".into()),
            Fault::Reply(429, "{\"error\":[\"EGeneral:Too many requests\"]}".into()),
            Fault::DoneThen502,
            Fault::Error("EService:Busy".into()),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let url = fake.base_url();
    let out = keel(&db, &args(&url, &["--rate", "50"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("trying again in").count(), 4, "{stderr}");
    assert!(
        stderr.contains("EGeneral:Too many requests; trying again"),
        "{stderr}"
    );
    assert_eq!(stored(&db), downloadable(&fake));
    // Backed off: at 50 a second, 40 ms, then twice as long each time.
    let calls = fake.public_calls();
    for (i, w) in calls[..5].windows(2).enumerate() {
        let pause = w[1].at.duration_since(w[0].at);
        assert!(
            pause >= Duration::from_millis(40 << i),
            "pause {i}: {pause:?}"
        );
    }
    // And paced after, 20 ms apart (give or take a request's travel).
    let paced = &calls[4..];
    let span = paced[paced.len() - 1].at.duration_since(paced[0].at);
    assert!(
        span + Duration::from_millis(10) >= Duration::from_millis(20) * (paced.len() as u32 - 1),
        "{} calls in {span:?}",
        paced.len()
    );
}

#[test]
fn a_sigkill_midway_and_a_rerun_store_exactly_what_an_uninterrupted_download_does() {
    let fake = fake();
    let url = fake.base_url();
    let dir = tempfile::tempdir().expect("tempdir");

    let whole = dir.path().join("whole.db");
    let out = keel(&whole, &args(&url, &["--batch-bars", "4"]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let db = dir.path().join("killed.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--db")
        .arg(&db)
        .args(args(&url, &["--batch-bars", "4", "--rate", "10"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !line.contains("bars so far") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0 && Instant::now() < deadline,
            "no batch line"
        );
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    // Whole batches only: every bar before the cursor, none after it.
    let key = DownloadKey {
        venue: "kraken",
        pair: "XBTUSD",
        timeframe: Timeframe::H1,
        symbol: "XBT/USD",
    };
    let cursor = Store::open(&db)
        .expect("open")
        .download_cursor(&key)
        .expect("read")
        .expect("a batch committed");
    let kept = stored(&db);
    let all = downloadable(&fake);
    assert!(
        kept.len() < all.len(),
        "killed midway ({} bars)",
        kept.len()
    );
    assert_eq!(kept, reference(&fake, cursor.next_ms));

    let out = keel(&db, &args(&url, &["--batch-bars", "4"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("going on from"),
        "{}",
        text(&out.stderr)
    );
    // Nothing counted twice: the rest is new, none of it "unchanged".
    let rest = all.len() - kept.len();
    assert!(
        text(&out.stdout).contains(&format!(
            "{rest} bars ({rest} new, 0 unchanged, 0 replaced)"
        )),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(stored(&db), stored(&whole));
    assert_eq!(stored(&db), all);
}

#[test]
fn the_bar_still_forming_is_never_stored() {
    // Not in an hour's first minute, so the hour now forming has trades.
    let into_hour = keel_host::store::now_ms() / 1000 % 3600;
    if into_hour < 60 {
        std::thread::sleep(Duration::from_secs(61 - into_hour as u64));
    }
    let now_s = keel_host::store::now_ms() / 1000;
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake Kraken");
    // Trading right up to now.
    fake.set_market(
        "XBTUSD",
        MarketHistory::synthetic(5, now_s - 20 * 3600, 20 * 3600, 0..0),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let url = fake.base_url();
    let since = (now_s - 20 * 3600).to_string();
    let before = keel_host::store::now_ms();
    let mut a = args(&url, &[]);
    a[9] = &since; // --since
    let out = keel(&db, &a);
    let after = keel_host::store::now_ms();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bars = stored(&db);
    let all = reference(&fake, i64::MAX);
    let forming = all.last().expect("bars").time_ms;
    assert!(
        forming + HOUR_MS > before,
        "the last trade's bar was forming"
    );
    // Every bar stored had closed; every bar closed before the run is stored.
    assert!(bars.iter().all(|c| c.time_ms + HOUR_MS <= after));
    assert!(
        !bars
            .iter()
            .any(|c| c.time_ms == forming && forming + HOUR_MS > after)
    );
    assert_eq!(bars[..], all[..bars.len()]);
    assert!(bars.len() >= reference(&fake, before - 20_000).len());
}

#[test]
fn an_unknown_pair_or_a_malformed_reply_is_one_line_and_stores_nothing() {
    let fake = fake();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let url = fake.base_url();
    let mut a = args(&url, &[]);
    a[5] = "DOGEXYZ"; // --pair
    let out = keel(&db, &a);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: kraken AssetPairs DOGEXYZ: Kraken lists no such pair\n"
    );

    fake.script_method(
        "Trades",
        [Fault::Reply(
            200,
            r#"{"error":[],"result":{"XXBTZUSD":[["NaN","1",1704067201.5,"b","l","",1]],"last":"1704067201500000000"}}"#
                .into(),
        )],
    );
    let out = keel(&db, &args(&url, &[]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: kraken Trades XBTUSD since 1704067199999999999: row 0: price \"NaN\" is not a positive number\n"
    );
    assert!(stored(&db).is_empty());
}

#[test]
fn an_address_nothing_answers_at_is_one_line_at_once_not_minutes_of_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    // A port nothing listens on: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // A user, a password and a query, which may be secrets: never shown.
    let url = format!("http://user:s3cretpw@127.0.0.1:{port}/?apikey=SECRET123");
    let started = std::time::Instant::now();
    let out = keel(&db, &args(&url, &[]));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: kraken AssetPairs XBTUSD: cannot connect to http://127.0.0.1:{port} (no reply: "
        )) && err.ends_with("); is --base-url right?\n")
            && err.lines().count() == 1
            && !err.contains("s3cret")
            && !err.contains("SECRET")
            && !err.contains("user"),
        "{err}"
    );
}

#[test]
fn an_address_that_is_not_kraken_s_api_is_one_line_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    let fake = fake();
    // The fake answers 404 under any other path.
    let url = format!("{}/nope", fake.base_url());
    let started = std::time::Instant::now();
    let out = keel(&db, &args(&url, &[]));
    let err = text(&out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error: kraken AssetPairs XBTUSD: HTTP 404, not an answer of Kraken's API; is --base-url right?\n"
    );
}

#[test]
fn bad_options_are_refused_in_one_line_before_anything_is_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keel.db");
    // Nothing listens here: a request would fail otherwise.
    let url = "http://127.0.0.1:9";
    let cases: [(&str, &str, &str); 10] = [
        (
            "--since",
            "2009-12-31",
            "error: --since 2009-12-31T00:00:00Z: before 2010-01-01T00:00:00Z, older than any venue's trades",
        ),
        (
            "--since",
            "2999-01-01",
            "error: --since 2999-01-01T00:00:00Z: in the future (it is ",
        ),
        (
            "--since",
            "soon",
            "error: --since \"soon\": time 'soon' is neither RFC 3339, a date and time, nor epoch time",
        ),
        (
            "--until",
            "2023-12-31",
            "error: --until 2023-12-31T00:00:00Z is not after --since 2024-01-01T00:00:00Z",
        ),
        (
            "--timeframe",
            "1w",
            "error: --timeframe 1w: downloads make bars of 1m 5m 15m 1h 4h 1d (lengths that divide a day)",
        ),
        (
            "--timeframe",
            "2h",
            "error: timeframe '2h' is not one of 1m 5m 15m 1h 4h 1d 1w 1M",
        ),
        (
            "--pair",
            "XBT USD",
            "error: --pair \"XBT USD\": a pair is letters and digits, e.g. XBTUSD",
        ),
        (
            "--venue",
            "binance",
            "error: invalid value 'binance' for '--venue <VENUE>': expected kraken",
        ),
        (
            "--base-url",
            "not a url",
            "error: --base-url: not an http(s) URL (relative URL without a base)",
        ),
        (
            "--base-url",
            "ftp://127.0.0.1:9",
            "error: --base-url: not an http(s) URL (its scheme is \"ftp\")",
        ),
    ];
    for (option, value, error) in cases {
        let mut a = args(url, &[]);
        match a.iter().position(|x| *x == option) {
            Some(i) => a[i + 1] = value,
            None => a.extend([option, value]),
        }
        let out = keel(&db, &a);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{option} {value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{option} {value}: {stderr}");
        assert!(stderr.starts_with(error), "{option} {value}: {stderr}");
    }
}
