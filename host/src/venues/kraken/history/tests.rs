use std::sync::{Arc, Mutex};

use keel_model::candles::Candle;

use super::*;
use crate::engine::feed::parse_ohlc;
use crate::venues::history::Bars;
use crate::venues::kraken::fake::{FakeKraken, Fault, MarketHistory};

const KEY: &str = "test-api-key";
const SECRET: &str =
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

#[test]
fn replies_are_sorted_into_answers_retries_and_refusals() {
    let retry = |text: &str| Outcome::Retry(text.to_owned());
    let cases = [
        (
            200,
            r#"{"error":[],"result":{"a":1}}"#,
            Outcome::Answer(serde_json::json!({"a":1})),
        ),
        (
            200,
            r#"{"error":["EGeneral:Too many requests"]}"#,
            retry("EGeneral:Too many requests"),
        ),
        (429, "slow down", retry("HTTP 429 (too many requests)")),
        (
            200,
            r#"{"error":["EService:Unavailable"]}"#,
            retry("EService:Unavailable"),
        ),
        (
            200,
            r#"{"error":["EService:Busy"]}"#,
            retry("EService:Busy"),
        ),
        (503, "<html>", retry("HTTP 503")),
        // A wrong address, a proxy that forbids: not Kraken's refusal.
        (
            404,
            "{}",
            Outcome::Fatal("HTTP 404, not an answer of Kraken's API; is --base-url right?".into()),
        ),
        (
            403,
            "<html>Forbidden</html>",
            Outcome::Fatal("HTTP 403, not an answer of Kraken's API; is --base-url right?".into()),
        ),
        (
            408,
            "",
            retry("HTTP 408: EOF while parsing a value at line 1 column 0"),
        ),
        (
            400,
            r#"{"error":["EGeneral:Invalid arguments"]}"#,
            Outcome::Fatal("EGeneral:Invalid arguments".into()),
        ),
        (
            200,
            "<html>maintenance</html>",
            retry("HTTP 200: expected value at line 1 column 1"),
        ),
        (
            200,
            r#"{"error":["EQuery:Unknown asset pair"]}"#,
            Outcome::Fatal("EQuery:Unknown asset pair".into()),
        ),
        (
            200,
            r#"{"error":["EGeneral:Invalid arguments"]}"#,
            Outcome::Fatal("EGeneral:Invalid arguments".into()),
        ),
    ];
    for (status, body, outcome) in cases {
        assert_eq!(classify(status, body), outcome, "{status} {body}");
    }
}

#[test]
fn a_trades_result_is_read_and_every_bad_shape_named() {
    let since = 1_688_669_597_000_000_000_i128;
    let good = serde_json::json!({
        "XXBTZUSD": [
            ["30243.40000", "0.34507674", 1688669597.8277369, "b", "m", "", 61044952],
            ["30243.30000", "0.00376960", 1688669598.2804112, "s", "l", "", 61044953]
        ],
        "last": "1688669598280411234"
    });
    let xbt = ["XXBTZUSD".to_owned(), "XBTUSD".to_owned()];
    let page = parse_trades(&good, &xbt, since, (None, None)).expect("good");
    assert_eq!(page.last, 1_688_669_598_280_411_234);
    assert_eq!(page.last_id, Some(61044953));
    assert_eq!(
        page.trades[0],
        Trade {
            time_us: 1_688_669_597_827_737,
            price: 30243.4,
            volume: "0.34507674".parse().expect("decimal"),
        }
    );
    // Nothing new: an empty page, whatever `last` says.
    let empty = serde_json::json!({ "XXBTZUSD": [], "last": since.to_string() });
    assert_eq!(
        parse_trades(&empty, &xbt, since, (None, None))
            .expect("empty")
            .trades,
        []
    );
    // Another pair's trades are not this one's.
    let other = serde_json::json!({ "XETHZUSD": [], "last": since.to_string() });
    assert_eq!(
        parse_trades(&other, &xbt, since, (None, None)).expect_err("another pair"),
        "no trades under \"XXBTZUSD\" (the result holds \"XETHZUSD\")"
    );
    let x = ["X".to_owned(), "X".to_owned()];

    let with = |rows: serde_json::Value, last: &str| serde_json::json!({ "X": rows, "last": last });
    let row = |price: &str, volume: &str, time: f64, id: u64| {
        serde_json::json!([price, volume, time, "b", "l", "", id])
    };
    let t = 1688669600.5;
    let last = "1688669600500000000";
    let cases = [
        (serde_json::json!([1, 2]), "the result is not an object"),
        (serde_json::json!({ "X": [] }), "no \"last\" time in ns"),
        (
            serde_json::json!({ "last": "5" }),
            "no trades under \"X\" (the result holds nothing else)",
        ),
        (
            serde_json::json!({ "X": 5, "last": "5" }),
            "no array of trades",
        ),
        (
            with(serde_json::json!([["1", "2"]]), last),
            "row 0 is not a trade (price, volume, time, …)",
        ),
        (
            with(serde_json::json!([row("NaN", "1", t, 1)]), last),
            "row 0: price \"NaN\" is not a positive number",
        ),
        (
            with(serde_json::json!([row("-5", "1", t, 1)]), last),
            "row 0: price \"-5\" is not a positive number",
        ),
        (
            with(serde_json::json!([row("5", "-1", t, 1)]), last),
            "row 0: volume \"-1\" is not a number from 0 up",
        ),
        (
            with(serde_json::json!([row("5", "x", t, 1)]), last),
            "row 0: volume \"x\" is not a number from 0 up",
        ),
        (
            with(
                serde_json::json!([["5", "1", "soon", "b", "l", "", 1]]),
                last,
            ),
            "row 0: time \"soon\" is not seconds since the epoch",
        ),
        (
            with(serde_json::json!([row("5", "1", 1688669000.0, 1)]), last),
            "row 0: a trade at 2023-07-06T18:43:20Z, before since",
        ),
        (
            with(
                serde_json::json!([row("5", "1", t, 7), row("5", "1", t, 7)]),
                last,
            ),
            "row 1: trade id 7 does not follow 7",
        ),
        (
            with(serde_json::json!([row("5", "1", t, 1)]), &since.to_string()),
            "\"last\" 1688669597000000000 does not move past since",
        ),
        (
            with(
                serde_json::json!([row("5", "1", t, 1)]),
                "1688669599000000000",
            ),
            "\"last\" 1688669599000000000 is before the page's last trade at 2023-07-06T18:53:20.500Z",
        ),
        // Past the page's last trade: the trades between would be skipped
        // and the bars they fall in stored short as if whole.
        (
            with(
                serde_json::json!([row("5", "1", t, 1)]),
                "1688680400500000000",
            ),
            "\"last\" 1688680400500000000 is past the page's last trade at 2023-07-06T18:53:20.500Z \
             (it would skip the trades up to 2023-07-06T21:53:20.500Z)",
        ),
    ];
    for (result, error) in cases {
        assert_eq!(
            parse_trades(&result, &x, since, (None, None)).expect_err(error),
            error
        );
    }
    // A `last` a little past the trade's printed time (Kraken's ns are
    // finer than the 4 decimals of its seconds) is the same trade.
    let finer = with(
        serde_json::json!([row("5", "1", t, 1)]),
        "1688669600500099999",
    );
    assert_eq!(
        parse_trades(&finer, &x, since, (None, None))
            .expect("finer")
            .last,
        1688669600500099999
    );
    // Ids go on rising across pages.
    let again = with(serde_json::json!([row("5", "1", t, 61044953)]), last);
    assert_eq!(
        parse_trades(&again, &x, since, (Some(61044953), None)).expect_err("repeat"),
        "row 0: trade id 61044953 does not follow 61044953"
    );
    // Without ids, the page before's last trade again (`since` taken as
    // inclusive) is refused; a trade after it, or another at its time
    // with other figures, is a new one.
    let no_ids = |rows: serde_json::Value| {
        let rows: Vec<serde_json::Value> = (rows.as_array().expect("rows").iter())
            .map(|r| serde_json::json!(r.as_array().expect("row")[..6]))
            .collect();
        with(serde_json::json!(rows), "1688669601000000000")
    };
    let before = Trade {
        time_us: (t * 1e6).round() as i64,
        price: 5.0,
        volume: "1".parse().expect("volume"),
    };
    let repeat = no_ids(serde_json::json!([
        row("5", "1", t, 0),
        row("6", "1", t + 0.5, 0)
    ]));
    let err = parse_trades(&repeat, &x, since, (None, Some(&before))).expect_err("repeat");
    assert!(
        err.starts_with("row 0: the page before's last trade again (") && err.ends_with(" at 5, volume 1), and no trade ids to tell them apart: a repeat would be counted twice"),
        "{err}"
    );
    let other = no_ids(serde_json::json!([
        row("5", "2", t, 0),
        row("6", "1", t + 0.5, 0)
    ]));
    let page = parse_trades(&other, &x, since, (None, Some(&before))).expect("another trade");
    assert_eq!(page.trades.len(), 2);
}

/// A fake Kraken trading XBTUSD for 13 hours from `START`, quiet in hours
/// 3 and 4, and a history reading it fast, its retry notes kept.
fn setup() -> (FakeKraken, KrakenHistory, Arc<Mutex<Vec<String>>>) {
    let fake = FakeKraken::start(0, KEY, SECRET).expect("fake");
    fake.set_market(
        "XBTUSD",
        MarketHistory::synthetic(11, START, 13 * 3600, 3 * 3600..5 * 3600),
    );
    let notes = Arc::new(Mutex::new(Vec::new()));
    let heard = notes.clone();
    let history = KrakenHistory::new(
        &fake.base_url(),
        200.0,
        Box::new(move |n| heard.lock().expect("notes").push(n.to_owned())),
    )
    .expect("history");
    (fake, history, notes)
}

/// Every trade from `start_ms` on, page by page.
fn all_trades(history: &mut KrakenHistory, start_ms: i64) -> Vec<Trade> {
    let mut start = PageStart::At(start_ms);
    let mut out = Vec::new();
    loop {
        let page = history.trades("XBTUSD", &start).expect("page");
        if page.trades.is_empty() {
            return out;
        }
        out.extend(page.trades);
        start = PageStart::After(page.next);
    }
}

#[test]
fn the_whole_history_pages_through_once_in_order() {
    let (fake, mut history, notes) = setup();
    let market = history.market("xbtusd").expect("known");
    assert_eq!(
        (market.pair.as_str(), market.symbol.as_str()),
        ("XBTUSD", "XBT/USD")
    );
    let expected = fake.market_trades("XBTUSD");
    let trades = all_trades(&mut history, START * 1000);
    assert_eq!(trades.len(), expected.len());
    for (got, want) in trades.iter().zip(&expected) {
        assert_eq!(got.time_us * 1000, want.time_ns);
        assert_eq!(Some(got.price), want.price.parse().ok());
        assert_eq!(got.volume.to_string(), want.volume);
    }
    // From a trade's own time, that trade is the first (`since` exclusive).
    let mid = &expected[1500];
    let mut fresh = KrakenHistory::new(&fake.base_url(), 200.0, Box::new(|_| {})).expect("history");
    let page = fresh
        .trades("XBTUSD", &PageStart::At(mid.time_ns / 1_000_000))
        .expect("page");
    let first_us = page.trades[0].time_us;
    assert!(first_us <= mid.time_ns / 1000 && first_us > expected[1498].time_ns / 1000);
    assert!(notes.lock().expect("notes").is_empty());
}

#[test]
fn busy_replies_are_waited_out_with_growing_pauses() {
    let (fake, mut history, notes) = setup();
    fake.script_method(
        "Trades",
        [
            Fault::Error("EGeneral:Too many requests".into()),
            Fault::Reply(429, "{\"error\":[\"EGeneral:Too many requests\"]}".into()),
            Fault::DoneThen502,
            Fault::Error("EService:Unavailable".into()),
            Fault::Reply(200, "<html>maintenance</html>".into()),
        ],
    );
    let page = history
        .trades("XBTUSD", &PageStart::At(START * 1000))
        .expect("in the end");
    assert_eq!(page.trades.len(), 1000);
    let notes = notes.lock().expect("notes").clone();
    assert_eq!(notes.len(), 5, "{notes:?}");
    assert!(
        notes[0].starts_with("kraken Trades XBTUSD since 1704067199999999999: EGeneral:Too many requests; trying again in 0.0 s (try 2 of 8)"),
        "{}",
        notes[0]
    );
    assert!(notes[2].contains("HTTP 502"), "{}", notes[2]);
    // Each pause twice the one before: 10, 20, 40, 80, 160 ms at 200/s.
    let calls = fake.public_calls();
    assert_eq!(calls.len(), 6);
    for (i, w) in calls.windows(2).enumerate() {
        let pause = w[1].at.duration_since(w[0].at);
        assert!(
            pause >= Duration::from_millis(10 << i),
            "pause {i}: {pause:?}"
        );
    }
}

#[test]
fn a_venue_that_stays_away_is_given_up_on_in_one_line() {
    let (fake, mut history, _) = setup();
    fake.script_method("Trades", (0..TRIES).map(|_| Fault::DoneThen502));
    let error = history
        .trades("XBTUSD", &PageStart::At(START * 1000))
        .expect_err("gives up");
    assert_eq!(
        error,
        HistoryError::GaveUp(
            "kraken Trades XBTUSD since 1704067199999999999: no answer after 8 tries; the last: HTTP 502"
                .into()
        )
    );
    assert_eq!(fake.public_calls().len(), TRIES as usize);
}

#[test]
fn an_unknown_pair_is_refused_at_once_naming_it() {
    let (fake, mut history, notes) = setup();
    let error = history.market("DOGEXYZ").expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "kraken AssetPairs DOGEXYZ: Kraken lists no such pair"
    );
    // Trades of a pair never named first are asked for under the names
    // AssetPairs gives it: an unknown one is refused there.
    let error = history
        .trades("DOGEXYZ", &PageStart::At(START * 1000))
        .expect_err("unknown");
    assert_eq!(
        error,
        HistoryError::Refused("kraken AssetPairs DOGEXYZ: Kraken lists no such pair".into())
    );
    assert!(fake.public_calls().is_empty(), "no Trades asked");
    assert!(notes.lock().expect("notes").is_empty());
}

#[test]
fn bars_from_trades_are_krakens_ohlc_bars_wherever_those_have_trades() {
    let (fake, mut history, _) = setup();
    let mut bars = Bars::new(3_600_000);
    let mut made: Vec<_> = all_trades(&mut history, START * 1000)
        .iter()
        .filter_map(|t| bars.push(t).expect("in order"))
        .collect();
    made.extend(bars.finish().expect("valid"));
    let body = reqwest::blocking::get(format!(
        "{}/0/public/OHLC?pair=XBTUSD&interval=60",
        fake.base_url()
    ))
    .and_then(|r| r.text())
    .expect("OHLC");
    let ohlc = parse_ohlc(&body).expect("parses");
    assert!(ohlc.skipped.is_empty(), "{:?}", ohlc.skipped);
    // OHLC's quiet hours are flat rows of no volume; trades make no bar.
    let (traded, flat): (Vec<&Candle>, Vec<&Candle>) =
        ohlc.closed.iter().partition(|c| c.volume > 0.0);
    assert_eq!(
        flat.iter()
            .map(|c| (c.time_ms / 1000 - START) / 3600)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(traded.into_iter().copied().collect::<Vec<_>>(), made);
    assert_eq!(made.len(), 11);
}

/// A server that sends its reply a byte at a time is cut off once the
/// request has taken its time, and asked again (the client's own timeout
/// bounds each read, not the body: it waited for weeks).
#[test]
fn a_reply_that_drips_in_is_cut_off_and_asked_again() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let mut trades = 0;
        for stream in listener.incoming().take(3) {
            let mut stream = stream.expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut request, mut line) = (String::new(), String::new());
            reader.read_line(&mut request).expect("request line");
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            if request.contains("AssetPairs") {
                let body = r#"{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT","quote":"ZUSD","pair_decimals":1,"lot_decimals":8,"cost_decimals":5,"ordermin":"0.0001","costmin":"0.5","tick_size":"0.1","status":"online"}}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            trades += 1;
            if trades == 1 {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until && stream.write_all(b" ").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            } else {
                let body = r#"{"error":[],"result":{"XXBTZUSD":[],"last":"1704067199999999999"}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    let notes = Arc::new(Mutex::new(Vec::new()));
    let heard = notes.clone();
    let mut history = KrakenHistory::new(
        &url,
        100.0,
        Box::new(move |n| heard.lock().expect("notes").push(n.to_owned())),
    )
    .expect("history")
    .with_reply_within(Duration::from_millis(400));
    let started = Instant::now();
    let page = history
        .trades("XBTUSD", &PageStart::At(START * 1000))
        .expect("the second try answers");
    assert!(page.trades.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let notes = notes.lock().expect("notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("the reply was still coming after 0.4 s; cut off; trying again"),
        "{notes:?}"
    );
    server.join().expect("server");
}
