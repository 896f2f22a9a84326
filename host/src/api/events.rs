//! `GET /v1/events`: the activity log as a WebSocket stream, one text
//! frame per event, `{id, time, time_ms, kind, data}`, in the order they
//! were committed. It follows the `events` table (`store::events`), so it
//! carries what every process writing the database did (the engine,
//! `keel candidate`, the nightly evolution), says nothing the ledger does
//! not hold, and a client that reconnects with `?since=ID` (the last id it
//! saw) misses nothing. `?kinds=fill,halt` keeps only those kinds.
//!
//! A browser cannot set `Authorization` on a WebSocket, so the token may
//! also come as the subprotocol `bearer.<token>` beside `keel`; the answer
//! names `keel`. Each stream reads its own pages (at most `PAGE` events at
//! a time) and waits for each frame to be sent, so a slow client holds at
//! most a page in memory and slows no one else; at most `Limits::streams`
//! are open at once.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::store::events::{self, Event, Kind};

/// Events read from the database at a time.
const PAGE: usize = 256;
/// How often a stream looks for new events.
const POLL: Duration = Duration::from_millis(200);
/// A client that does not take a frame within this is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle stream pings, so a dead peer is noticed.
const PING: Duration = Duration::from_secs(20);

/// What a client asked for in the query string.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Events after this id; `None`: from now on.
    pub since: Option<i64>,
    /// Only these kinds; `None`: all.
    pub kinds: Option<Vec<Kind>>,
}

impl Subscription {
    /// `since=ID&kinds=a,b`; anything else is a one-line refusal.
    pub fn parse(query: Option<&str>) -> Result<Subscription, String> {
        let mut out = Subscription {
            since: None,
            kinds: None,
        };
        let mut seen = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if seen.contains(&key) {
                return Err(format!(
                    "{} is given twice",
                    keel_model::shown::quoted(&key)
                ));
            }
            seen.push(key.clone());
            match key.as_ref() {
                "since" => {
                    let id = value
                        .parse::<i64>()
                        .ok()
                        .filter(|id| *id >= 0)
                        .ok_or_else(|| {
                            format!(
                                "since={}: expected an event id (0 or more)",
                                keel_model::shown::quoted(&value)
                            )
                        })?;
                    out.since = Some(id);
                }
                "kinds" => {
                    let kinds = value
                        .split(',')
                        .map(|k| {
                            Kind::parse(k.trim()).ok_or_else(|| {
                                format!(
                                    "kinds: {} is not a kind of event ({})",
                                    keel_model::shown::quoted(k),
                                    Kind::ALL.map(Kind::as_str).join(", ")
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    out.kinds = Some(kinds);
                }
                other => {
                    return Err(format!(
                        "{}: unknown parameter (since, kinds)",
                        keel_model::shown::quoted(other)
                    ));
                }
            }
        }
        Ok(out)
    }

    fn wants(&self, event: &Event) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k.as_str() == event.kind))
    }
}

/// An event as it is served, on the stream and by `/v1/activity`.
pub fn served(event: &Event) -> serde_json::Value {
    let time = jiff::Timestamp::from_millisecond(event.time_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    serde_json::json!({
        "id": event.id,
        "time": time,
        "time_ms": event.time_ms,
        "kind": event.kind,
        "data": event.data,
    })
}

/// An event as a frame's text.
pub fn frame(event: &Event) -> String {
    served(event).to_string()
}

/// Whether a WebSocket request offers the token as a subprotocol.
pub fn offered_token(protocols: &str) -> Option<&str> {
    protocols
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer."))
}

/// Serves one upgraded connection until the client leaves, stops
/// reading, or the database cannot be read.
pub async fn stream(upgraded: Upgraded, db: PathBuf, subscription: Subscription) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let opened = tokio::task::spawn_blocking(move || {
        let conn = crate::store::read_only(&db)?;
        let last = events::last_id(&conn)?;
        Ok::<_, rusqlite::Error>((conn, last))
    })
    .await;
    let (mut conn, last) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            let _ = ws.close(None).await;
            tracing::warn!("event stream: the ledger cannot be read: {e}");
            return;
        }
        Err(_) => return,
    };
    // A stale id (a database made anew since) would wait for ever: said, and closed.
    if let Some(since) = subscription.since.filter(|since| *since > last) {
        let close = tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Policy,
            reason: format!("since={since} is past the newest event ({last})").into(),
        };
        let _ = ws.close(Some(close)).await;
        return;
    }
    let mut cursor = subscription.since.unwrap_or(last);
    let mut idle = tokio::time::interval(PING);
    idle.reset();
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let page = events::after(&conn, cursor, PAGE);
            (conn, page)
        })
        .await;
        let page = match read {
            Ok((back, Ok(page))) => {
                conn = back;
                page
            }
            Ok((_, Err(e))) => {
                tracing::warn!("event stream: the ledger cannot be read: {e}");
                let _ = ws.close(None).await;
                return;
            }
            Err(_) => return,
        };
        let full = page.len() == PAGE;
        for event in &page {
            cursor = event.id;
            if !subscription.wants(event) {
                continue;
            }
            let sent = tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::text(frame(event))));
            if !matches!(sent.await, Ok(Ok(()))) {
                return;
            }
            idle.reset();
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = idle.tick() => {
                let ping = tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Ping(Vec::new().into())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    return;
                }
            }
            incoming = ws.next() => match incoming {
                // Pings are answered by the protocol; a client says nothing else.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_is_read_from_the_query_or_refused_in_one_line() {
        assert_eq!(
            Subscription::parse(None).expect("test"),
            Subscription {
                since: None,
                kinds: None
            }
        );
        let s = Subscription::parse(Some("since=42&kinds=fill,%20halt")).expect("test");
        assert_eq!(s.since, Some(42));
        assert_eq!(s.kinds, Some(vec![Kind::Fill, Kind::Halt]));
        for (query, says) in [
            ("since=-1", "since=\"-1\""),
            ("since=99999999999999999999", "expected an event id"),
            ("kinds=fill,nope", "\"nope\" is not a kind"),
            ("token=abc", "unknown parameter"),
            ("since=1&since=50", "\"since\" is given twice"),
        ] {
            let e = Subscription::parse(Some(query)).expect_err("refused");
            assert!(e.contains(says), "{query}: {e}");
            assert!(!e.contains('\n'));
        }
        let event = Event {
            id: 7,
            time_ms: 0,
            kind: "fill".into(),
            data: serde_json::json!({}),
        };
        assert!(s.wants(&event));
        let bars = Subscription::parse(Some("kinds=bar")).expect("test");
        assert!(!bars.wants(&event));
        let framed: serde_json::Value = serde_json::from_str(&frame(&event)).expect("test");
        assert_eq!(framed["time"], "1970-01-01T00:00:00Z");
        assert_eq!(framed["id"], 7);
    }

    #[test]
    fn the_token_is_found_among_the_offered_subprotocols() {
        assert_eq!(offered_token("keel, bearer.abc"), Some("abc"));
        assert_eq!(offered_token("keel"), None);
    }
}
