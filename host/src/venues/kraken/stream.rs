//! Kraken's WebSocket v2 `executions` channel: the account's trades and
//! order states as they happen, so the live venue knows of a fill without
//! asking (and spends none of its REST rate limit on it). The socket runs
//! on a thread of its own (tokio and tokio-tungstenite at the IO edge; the
//! engine stays synchronous): it connects, subscribes with a token the
//! engine fetched over REST (`GetWebSocketsToken`, signed there with the
//! nonce store), and queues what it hears. When it is down — never
//! connected, dropped, a token refused — it says since when it has been up
//! (`up_since_ms`), and the venue falls back to REST for anything that
//! happened while it was not.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// What the channel reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A trade of an order (`exec_type` `trade`).
    Trade {
        /// Kraken's id of the trade (`exec_id`), as `TradesHistory` names it.
        trade_id: String,
        txid: String,
        cl_ord_id: Option<String>,
        quantity: f64,
        price: f64,
        fee: f64,
        time_ms: i64,
    },
    /// An order is done: `filled`, `canceled` or `expired` (`exec_type`;
    /// a trade's own `order_status` may say `partially_filled` even when
    /// it filled the order, so only these end one).
    Done {
        txid: String,
        cl_ord_id: Option<String>,
        status: String,
    },
}

#[derive(Debug, Default)]
struct Shared {
    events: Vec<Event>,
    /// Since when the channel has been subscribed without a break.
    up_since_ms: Option<i64>,
    /// A token for the next connection, handed over by the engine.
    token: Option<String>,
    wants_token: bool,
    problem: Option<String>,
    stop: bool,
}

/// The executions channel of one account.
#[derive(Debug, Clone)]
pub struct Executions {
    shared: Arc<Mutex<Shared>>,
}

/// How long to wait before connecting again after a failure.
const RECONNECT: Duration = Duration::from_secs(2);

/// Longest message taken from the socket.
const MAX_MESSAGE: usize = 1 << 20;

/// Most events kept for the venue to read.
const MAX_QUEUED: usize = 100_000;

impl Executions {
    /// Starts the channel's thread on `url` (`wss://ws-auth.kraken.com/v2`);
    /// it waits for a token ([`Executions::give_token`]) before each
    /// connection.
    pub fn start(url: &str, clock: fn() -> i64) -> anyhow::Result<Executions> {
        let shared = Arc::new(Mutex::new(Shared {
            wants_token: true,
            ..Shared::default()
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (url, inner) = (url.to_owned(), shared.clone());
        std::thread::Builder::new()
            .name("kraken-executions".into())
            .spawn(move || runtime.block_on(serve(url, inner, clock)))?;
        Ok(Executions { shared })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the channel needs a token to (re)connect.
    pub fn wants_token(&self) -> bool {
        let s = self.lock();
        s.wants_token && s.token.is_none()
    }

    pub fn give_token(&self, token: String) {
        self.lock().token = Some(token);
    }

    /// Since when the channel has been up without a break, if it is up.
    pub fn up_since_ms(&self) -> Option<i64> {
        self.lock().up_since_ms
    }

    /// What is wrong with the channel, if anything.
    pub fn problem(&self) -> Option<String> {
        self.lock().problem.clone()
    }

    /// Everything heard since the last call, in order.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().events)
    }
}

impl Executions {
    /// Stops the channel's thread (at its next message or reconnect).
    pub fn stop(&self) {
        self.lock().stop = true;
    }
}

/// Connects, subscribes and listens, again after every break.
async fn serve(url: String, shared: Arc<Mutex<Shared>>, clock: fn() -> i64) {
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if lock().stop {
            return;
        }
        let token = {
            let mut s = lock();
            s.wants_token = true;
            s.token.take()
        };
        let Some(token) = token else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        lock().wants_token = false;
        if let Err(e) = listen(&url, &token, &shared, clock).await {
            let mut s = lock();
            s.up_since_ms = None;
            s.problem = Some(format!("executions channel: {e}"));
            tracing::warn!(target: "keel::venue", "Kraken executions channel: {e}; REST until it is back");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen(
    url: &str,
    token: &str,
    shared: &Arc<Mutex<Shared>>,
    clock: fn() -> i64,
) -> anyhow::Result<()> {
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| anyhow::anyhow!("no connection in 10 s"))??;
    let subscribe = serde_json::json!({
        "method": "subscribe",
        "params": {
            "channel": "executions",
            "token": token,
            "snap_orders": false,
            "snap_trades": false,
        }
    });
    socket.send(Message::text(subscribe.to_string())).await?;
    let mut last_sequence: Option<u64> = None;
    loop {
        // Kraken sends a heartbeat every second or so: silence is a break.
        let next = tokio::time::timeout(Duration::from_secs(15), socket.next()).await;
        let message = match next {
            Err(_) => anyhow::bail!("silent for 15 s"),
            Ok(None) => anyhow::bail!("closed by Kraken"),
            Ok(Some(m)) => m?,
        };
        if lock().stop {
            let _ = socket.close(None).await;
            return Ok(());
        }
        let text = match &message {
            Message::Text(t) => t.as_str(),
            Message::Ping(p) => {
                socket.send(Message::Pong(p.clone())).await?;
                continue;
            }
            Message::Close(_) => anyhow::bail!("closed by Kraken"),
            _ => continue,
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(target: "keel::venue", "executions channel: not JSON: {e}");
                continue;
            }
        };
        if value["method"] == "subscribe" {
            if value["success"] == true {
                let mut s = lock();
                s.up_since_ms = Some(clock());
                s.problem = None;
                continue;
            }
            let why = value["error"].as_str().unwrap_or("refused").to_owned();
            anyhow::bail!("subscription refused: {}", keel_model::shown::message(&why));
        }
        if value["channel"] != "executions" {
            continue;
        }
        // A message missed is a break: nothing before it is relied on.
        let sequence = value["sequence"].as_u64();
        if let (Some(last), Some(now)) = (last_sequence, sequence)
            && now != last + 1
        {
            tracing::warn!(target: "keel::venue", last, now, "executions channel: a message was missed");
            lock().up_since_ms = Some(clock());
        }
        last_sequence = sequence.or(last_sequence);
        let events = parse(&value);
        let mut s = lock();
        if s.events.len() + events.len() > MAX_QUEUED {
            // Nobody is reading: what is dropped is read over REST.
            s.events.clear();
            s.up_since_ms = Some(clock());
        }
        s.events.extend(events);
    }
}

/// The events of one `executions` message (snapshot or update); entries
/// that are not trades or ends, or miss a field, are left out.
pub fn parse(message: &serde_json::Value) -> Vec<Event> {
    let Some(data) = message["data"].as_array() else {
        return Vec::new();
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    data.iter()
        .filter_map(|d| {
            let txid = text(&d["order_id"])?;
            let cl_ord_id = text(&d["cl_ord_id"]);
            match d["exec_type"].as_str()? {
                "trade" => {
                    let time_ms = d["timestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map(|t| t.as_millisecond())?;
                    let fee = d["fees"]
                        .as_array()
                        .map(|fees| fees.iter().filter_map(|f| f["qty"].as_f64()).sum())
                        .unwrap_or(0.0);
                    Some(Event::Trade {
                        trade_id: text(&d["exec_id"])?,
                        txid,
                        cl_ord_id,
                        quantity: d["last_qty"].as_f64()?,
                        price: d["last_price"].as_f64()?,
                        fee,
                        time_ms,
                    })
                }
                status @ ("filled" | "canceled" | "expired") => Some(Event::Done {
                    txid,
                    cl_ord_id,
                    status: status.to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trade_that_fills_the_order_still_waits_for_the_filled_event() {
        // As Kraken documents it: the last trade may say partially_filled.
        let message = serde_json::json!({
            "channel": "executions",
            "type": "update",
            "data": [
                {
                    "order_id": "OK4GJX-KSTLS-7DZZO5", "exec_id": "TW6PMY-3BVB4-JPMFTM",
                    "exec_type": "trade", "order_status": "partially_filled",
                    "cl_ord_id": "6d1b345e-2821-40e2-ad83-4ecb18a06876",
                    "symbol": "BTC/USD", "side": "buy", "last_qty": 0.005, "last_price": 26500.0,
                    "liquidity_ind": "t", "cost": 132.5, "order_type": "market",
                    "timestamp": "2023-09-22T10:33:05.709993Z",
                    "fees": [{ "asset": "USD", "qty": 0.3445 }]
                },
                {
                    "order_id": "OK4GJX-KSTLS-7DZZO5", "exec_type": "filled", "order_status": "filled",
                    "cl_ord_id": "6d1b345e-2821-40e2-ad83-4ecb18a06876",
                    "timestamp": "2023-09-22T10:33:05.710000Z"
                },
                { "order_id": "OTHER", "exec_type": "new", "order_status": "new" },
                { "exec_type": "trade" }
            ],
            "sequence": 11
        });
        let events = parse(&message);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            Event::Trade {
                trade_id: "TW6PMY-3BVB4-JPMFTM".into(),
                txid: "OK4GJX-KSTLS-7DZZO5".into(),
                cl_ord_id: Some("6d1b345e-2821-40e2-ad83-4ecb18a06876".into()),
                quantity: 0.005,
                price: 26500.0,
                fee: 0.3445,
                time_ms: 1_695_378_785_709,
            }
        );
        assert!(matches!(&events[1], Event::Done { status, .. } if status == "filled"));
    }
}
