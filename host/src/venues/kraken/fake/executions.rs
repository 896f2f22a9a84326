//! The fake's executions channel (Kraken's WebSocket v2 `executions`),
//! served with tungstenite on a thread per socket.

use std::net::TcpStream;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::State;

/// One executions socket: the subscription (with the token
/// `GetWebSocketsToken` gave) is answered as Kraken answers it, then every
/// execution report is sent as an `update` with its sequence number, and a
/// heartbeat every second.
pub(super) fn serve_executions(stream: TcpStream, state: &Mutex<State>) {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(10)));
    let generation = lock().ws_generation;
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let mut sequence = 0u64;
    let mut beat = std::time::Instant::now();
    loop {
        if lock().ws_generation != generation {
            // Dropped without a close frame, as a broken network does.
            return;
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let request: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                if request["method"] != "subscribe" || request["params"]["channel"] != "executions"
                {
                    continue;
                }
                let mut s = lock();
                let reply = if request["params"]["token"] == s.ws_token.as_str() {
                    s.ws_clients.push(tx.clone());
                    serde_json::json!({ "method": "subscribe", "success": true,
                        "result": { "channel": "executions", "snap_orders": false, "snap_trades": false } })
                } else {
                    serde_json::json!({ "method": "subscribe", "success": false,
                        "error": "EAPI:Invalid token" })
                };
                drop(s);
                if ws
                    .send(tungstenite::Message::text(reply.to_string()))
                    .is_err()
                {
                    return;
                }
            }
            Ok(tungstenite::Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while let Ok(report) = rx.try_recv() {
            sequence += 1;
            let update = serde_json::json!({
                "channel": "executions", "type": "update", "data": [report], "sequence": sequence,
            });
            if ws
                .send(tungstenite::Message::text(update.to_string()))
                .is_err()
            {
                return;
            }
        }
        if beat.elapsed() >= Duration::from_secs(1) {
            beat = std::time::Instant::now();
            let heartbeat = serde_json::json!({ "channel": "heartbeat" }).to_string();
            if ws.send(tungstenite::Message::text(heartbeat)).is_err() {
                return;
            }
        }
    }
}
