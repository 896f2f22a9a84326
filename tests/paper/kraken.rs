//! Live bars from Kraken's public OHLC endpoint, served by fakes on
//! loopback that speak its format, failures included.

use super::{Setup, open, text};

/// A loopback HTTP server: each request's line goes to `reply`, whose
/// answer is sent as a JSON body; one request per connection.
fn json_server(mut reply: impl FnMut(&str) -> String + Send + 'static) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
            }
            let body = reply(line.trim());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A loopback server answering Kraken's OHLC endpoint from a script, one
/// reply per request (the last one repeated); it records the requests.
pub(crate) fn kraken_server(
    replies: Vec<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let port = json_server(move |line| {
        let mut log = log.lock().expect("log");
        let i = log.len();
        log.push(line.to_owned());
        replies[i.min(replies.len() - 1)].clone()
    });
    (port, seen)
}

/// A loopback server answering Kraken's OHLC endpoint for several pairs,
/// each from its own script (one reply per request of that pair, the last
/// one repeated).
fn kraken_pairs_server(replies: Vec<(&'static str, Vec<String>)>) -> u16 {
    let mut asked = vec![0usize; replies.len()];
    json_server(move |line| {
        match replies
            .iter()
            .position(|(pair, _)| line.contains(&format!("pair={pair}&")))
        {
            Some(p) => {
                let script = &replies[p].1;
                let body = script[asked[p].min(script.len() - 1)].clone();
                asked[p] += 1;
                body
            }
            None => r#"{"error":["EQuery:Unknown asset pair"]}"#.to_owned(),
        }
    })
}

pub(crate) fn ohlc(rows: &[i64], last: i64) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|t| {
            let p = 100.0 + (*t % 7) as f64;
            format!(
                r#"[{t},"{p}","{}","{}","{p}","{p}","2.5",9]"#,
                p + 1.0,
                p - 1.0
            )
        })
        .collect();
    format!(
        r#"{{"error":[],"result":{{"XXBTZUSD":[{}],"last":{last}}}}}"#,
        rows.join(",")
    )
}

#[test]
fn live_bars_come_from_krakens_ohlc_endpoint_and_bad_replies_are_survived() {
    let s = Setup::new();
    let t = 1_767_225_600; // seconds, like Kraken
    let m = 60;
    let (port, seen) = kraken_server(vec![
        ohlc(&[t, t + m, t + 2 * m], t + m),
        r#"{"error":[],"result":"#.to_owned(),
        r#"{"error":["EService:Unavailable"]}"#.to_owned(),
        ohlc(&[t + m, t + 2 * m, t + 3 * m, t + 4 * m], t + 3 * m),
        ohlc(&[t + 4 * m, t + 5 * m, t + 6 * m], t + 5 * m),
    ]);
    let db = s.db("kraken.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:XBTUSD",
        &["--kraken-url", &url, "--poll-ms", "20", "--bars", "5"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("5 bars booked"), "{stdout}");
    let conn = open(&db);
    // The bars booked are the closed ones, each once, in order.
    let times: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT time_ms FROM equity_snapshots ORDER BY time_ms")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let expected: Vec<i64> = (1..=5).map(|k| (t + k * m) * 1000).collect();
    assert_eq!(times, expected);
    let warnings: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT detail FROM risk_events WHERE kind = 'feed' ORDER BY id")
            .expect("sql");
        stmt.query_map([], |r| r.get(0))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    // An outage is recorded when it begins and when it ends, not per poll.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "kraken OHLC XBTUSD: malformed reply: EOF while parsing a value at line 1 column 21 (polling again every 20 ms)"
    );
    assert!(
        warnings[1].starts_with("kraken OHLC XBTUSD: answering again after 2 failed polls in "),
        "{warnings:?}"
    );
    let requests = seen.lock().expect("requests").clone();
    assert!(
        requests[0].starts_with("GET /0/public/OHLC?pair=XBTUSD&interval=1 "),
        "{requests:?}"
    );
    assert!(
        requests[1].contains(&format!("since={}", t + m)),
        "the next poll asks from Kraken's `last`: {requests:?}"
    );
}

#[test]
fn an_unknown_kraken_pair_stops_the_run_with_krakens_reason() {
    let s = Setup::new();
    let (port, _) = kraken_server(vec![
        r#"{"error":["EQuery:Unknown asset pair"]}"#.to_owned(),
    ]);
    let db = s.db("kraken-bad.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:NOPE",
        &["--kraken-url", &url, "--poll-ms", "20"],
    );
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("feed stopped: kraken OHLC NOPE: refused: EQuery:Unknown asset pair"),
        "{stdout}"
    );
}

#[test]
fn several_kraken_pairs_are_aligned_on_close_time_and_a_late_pair_is_waited_for() {
    let s = Setup::new();
    let t = 1_767_225_600; // seconds, like Kraken
    let m = 60;
    let port = kraken_pairs_server(vec![
        (
            "XBTUSD",
            vec![ohlc(
                &[t, t + m, t + 2 * m, t + 3 * m, t + 4 * m],
                t + 3 * m,
            )],
        ),
        (
            "ETHUSD",
            vec![
                // Nothing closed yet at the first poll: the first close waits
                // for this pair (within the grace period) rather than going
                // without it.
                ohlc(&[t], t),
                // No bar at t + 2m: that close is booked without this pair.
                ohlc(&[t, t + m, t + 3 * m, t + 4 * m], t + 3 * m),
            ],
        ),
    ]);
    let db = s.db("pairs.db");
    let url = format!("http://127.0.0.1:{port}");
    let out = s.run_to_end(
        &db,
        "kraken:XBTUSD,ETHUSD",
        &["--kraken-url", &url, "--poll-ms", "20", "--bars", "4"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("4 bars booked"), "{stdout}");
    let conn = open(&db);
    let rows: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare("SELECT close_ms, symbol FROM run_bars ORDER BY close_ms, symbol")
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("sql")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let close = |k: i64| (t + k * m) * 1000;
    let expected: Vec<(i64, String)> = [
        (1, "ETHUSD"),
        (1, "XBTUSD"),
        (2, "ETHUSD"),
        (2, "XBTUSD"),
        (3, "XBTUSD"),
        (4, "ETHUSD"),
        (4, "XBTUSD"),
    ]
    .into_iter()
    .map(|(k, symbol)| (close(k), symbol.to_owned()))
    .collect();
    assert_eq!(rows, expected);
    let feed: String = conn
        .query_row("SELECT feed FROM runs", [], |r| r.get(0))
        .expect("run");
    assert_eq!(feed, "kraken:XBTUSD@1m + kraken:ETHUSD@1m");
}
