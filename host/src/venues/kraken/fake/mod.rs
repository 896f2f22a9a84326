//! A fake Kraken on loopback, for tests and for rehearsing: it speaks
//! Kraken's REST formats, verifies every private call's signature and nonce
//! as Kraken does (`EAPI:Invalid signature`, `EAPI:Invalid nonce`), keeps
//! the orders it was sent (by `txid` and `cl_ord_id`), and can be scripted
//! to fail the next calls: an error reply, a 502 after placing the order,
//! or no reply at all after placing it. Its public market data (`market`)
//! is a seeded synthetic trade history served as `Trades` and `OHLC`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::sign::SigningKey;

mod executions;
mod market;
use executions::serve_executions;
pub use market::{FakeTrade, MarketHistory, PublicCall};

/// What the next private call meets (or, scripted with `script_method`,
/// the next public `Trades` or `OHLC` call).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An error reply, e.g. `EOrder:Insufficient funds`; nothing happens.
    Error(String),
    /// The call is carried out, then answered with a 502.
    DoneThen502,
    /// The call is carried out, then no answer for this long.
    DoneThenSilent(Duration),
    /// This HTTP status and body instead of an answer; nothing happens
    /// (a 429, a proxy's error page, a body that is not JSON).
    Reply(u16, String),
}

/// An order the fake holds.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeOrder {
    pub txid: String,
    pub cl_ord_id: Option<String>,
    pub pair: String,
    pub side: String,
    pub ordertype: String,
    pub volume: String,
    pub price: Option<String>,
    pub status: String,
    /// Volume executed so far.
    pub executed: f64,
    /// When it was placed, seconds since the epoch (`opentm`).
    pub opened_s: f64,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, SigningKey>,
    last_nonce: HashMap<String, u64>,
    orders: Vec<FakeOrder>,
    faults: VecDeque<Fault>,
    /// Faults for the next calls of one method only.
    method_faults: HashMap<String, VecDeque<Fault>>,
    /// Every private call that passed the checks, by method.
    calls: Vec<String>,
    balances: BTreeMap<String, String>,
    /// Trades, in the order they happened: (trade id, order txid, price,
    /// volume, fee, time in seconds).
    trades: Vec<(String, String, String, String, String, f64)>,
    /// The dead man's switch: when every open order is cancelled unless
    /// `CancelAllOrdersAfter` is called again first.
    switch: Option<std::time::Instant>,
    /// Where a market order of a pair (by Kraken's key or altname) trades
    /// at once; a pair without one leaves market orders open until
    /// [`FakeKraken::fill`] trades them.
    prices: HashMap<String, f64>,
    /// How many trades a market order fills in.
    parts: u32,
    /// The executions channel: the token `GetWebSocketsToken` hands out,
    /// the subscribed sockets' queues, and a count that, raised, drops
    /// every socket.
    ws_token: String,
    ws_clients: Vec<std::sync::mpsc::Sender<serde_json::Value>>,
    ws_generation: u64,
    /// The public market data: trade histories, and the calls made.
    market: market::Markets,
}

impl State {
    /// Order `i` trades `volume` at `price`, `at_s` seconds after the
    /// epoch (a fee of 0.26% of the cost); it closes once wholly executed,
    /// and the balances move. Returns the trade id.
    fn trade(&mut self, i: usize, volume: f64, price: f64, at_s: f64) -> Option<String> {
        let n = self.trades.len();
        let order = &mut self.orders[i];
        let ordered: f64 = order.volume.parse().ok()?;
        let executed = order.executed + volume;
        order.executed = executed.min(ordered);
        if executed >= ordered - 1e-12 {
            order.status = "closed".into();
        }
        let (txid, buy, pair) = (order.txid.clone(), order.side == "buy", order.pair.clone());
        let (cl_ord_id, closed) = (order.cl_ord_id.clone(), order.status == "closed");
        let id = format!("T{:05}-FAKE", n + 1);
        // The balances move by the figures as reported.
        let (price_text, volume_text) = (format!("{price:.1}"), format!("{volume:.8}"));
        let (price, volume): (f64, f64) = (price_text.parse().ok()?, volume_text.parse().ok()?);
        let cost = volume * price;
        let fee_text = format!("{:.5}", cost * 0.0026);
        let fee: f64 = fee_text.parse().ok()?;
        self.trades.push((
            id.clone(),
            txid.clone(),
            price_text,
            volume_text,
            fee_text,
            at_s,
        ));
        // As Kraken documents it: a trade says partially_filled even when
        // it fills the order; a separate `filled` event ends it.
        let timestamp = jiff::Timestamp::from_microsecond((at_s * 1e6) as i64)
            .map(|t| t.to_string())
            .unwrap_or_default();
        self.publish(serde_json::json!({
            "order_id": txid, "exec_id": id, "exec_type": "trade", "order_status": "partially_filled",
            "cl_ord_id": cl_ord_id, "symbol": pair, "side": if buy { "buy" } else { "sell" },
            "last_qty": volume, "last_price": price, "cost": cost, "liquidity_ind": "t",
            "order_type": "market", "timestamp": timestamp,
            "fees": [{ "asset": "USD", "qty": fee }],
        }));
        if closed {
            self.publish(serde_json::json!({
                "order_id": txid, "exec_type": "filled", "order_status": "filled",
                "cl_ord_id": cl_ord_id, "timestamp": timestamp,
            }));
        }
        let (base, quote) = if pair.contains("XBT") {
            ("XXBT", "ZUSD")
        } else {
            ("XETH", "ZUSD")
        };
        let mut add = |asset: &str, x: f64| {
            let held: f64 = self
                .balances
                .get(asset)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            self.balances
                .insert(asset.to_owned(), format!("{:.10}", held + x));
        };
        if buy {
            add(base, volume);
            add(quote, -cost - fee);
        } else {
            add(base, -volume);
            add(quote, cost - fee);
        }
        Some(id)
    }

    /// Sends one execution report to every subscribed socket.
    fn publish(&mut self, report: serde_json::Value) {
        self.ws_clients.retain(|c| c.send(report.clone()).is_ok());
    }

    /// An order was cancelled: the sockets hear of it.
    fn cancelled(&mut self, i: usize) {
        let o = &self.orders[i];
        let report = serde_json::json!({
            "order_id": o.txid, "exec_type": "canceled", "order_status": "canceled",
            "cl_ord_id": o.cl_ord_id,
        });
        self.publish(report);
    }

    /// Fires the dead man's switch if its time has come.
    fn tick(&mut self) {
        if self
            .switch
            .is_some_and(|at| std::time::Instant::now() >= at)
        {
            self.switch = None;
            for i in 0..self.orders.len() {
                if self.orders[i].status == "open" {
                    self.orders[i].status = "canceled".into();
                    self.cancelled(i);
                }
            }
        }
    }
}

/// A running fake; it stops with the process.
#[derive(Debug, Clone)]
pub struct FakeKraken {
    pub port: u16,
    /// The executions channel's port.
    pub ws_port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeKraken {
    /// Serves on 127.0.0.1 (`port` 0: any free one), knowing the key pair
    /// `api_key` / `private_key` (base64).
    pub fn start(port: u16, api_key: &str, private_key: &str) -> anyhow::Result<FakeKraken> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let mut state = State::default();
        state.keys.insert(
            api_key.to_owned(),
            SigningKey::from_base64(private_key).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        state.balances.insert("ZUSD".into(), "10000.0000".into());
        state.balances.insert("XXBT".into(), "0.0000000000".into());
        state.ws_token = format!("fake-ws-token-{port}");
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        let ws = TcpListener::bind(("127.0.0.1", 0))?;
        let ws_port = ws.local_addr()?.port();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in ws.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve_executions(stream, &state));
            }
        });
        Ok(FakeKraken {
            port,
            ws_port,
            state,
        })
    }

    /// The executions channel's URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v2", self.ws_port)
    }

    /// Drops every executions socket, as a network break would.
    pub fn drop_sockets(&self) {
        let mut s = self.state();
        s.ws_generation += 1;
        s.ws_clients.clear();
    }

    /// How many sockets are subscribed now.
    pub fn subscribers(&self) -> usize {
        self.state().ws_clients.len()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next private calls meet these faults, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state().faults.extend(faults);
    }

    /// The next calls of `method` (e.g. `AddOrder`) meet these faults, in
    /// order; other methods are answered as usual.
    pub fn script_method(&self, method: &str, faults: impl IntoIterator<Item = Fault>) {
        self.state()
            .method_faults
            .entry(method.to_owned())
            .or_default()
            .extend(faults);
    }

    pub fn orders(&self) -> Vec<FakeOrder> {
        let mut s = self.state();
        s.tick();
        s.orders.clone()
    }

    /// The order with client id `cl_ord_id` trades `volume` at `price`
    /// (a fee of 0.26% of the cost), `at_s` seconds after the epoch; the
    /// order closes once wholly executed. Returns the trade id.
    pub fn fill(&self, cl_ord_id: &str, volume: f64, price: f64, at_s: f64) -> Option<String> {
        let mut s = self.state();
        let i = s
            .orders
            .iter()
            .position(|o| o.cl_ord_id.as_deref() == Some(cl_ord_id) && o.status == "open")?;
        s.trade(i, volume, price, at_s)
    }

    /// Market orders of `pair` (Kraken's key or altname) trade at once at
    /// `price`, in `parts` trades.
    pub fn set_price(&self, pair: &str, price: f64, parts: u32) {
        let mut s = self.state();
        s.prices.insert(pair_key(pair), price);
        s.parts = parts.max(1);
        // Stop orders the move crosses trigger, and trade at the price.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for i in 0..s.orders.len() {
            let o = &s.orders[i];
            let trigger = o.price.as_deref().and_then(|p| p.parse::<f64>().ok());
            let crossed = match (o.ordertype.as_str(), o.side.as_str(), trigger) {
                ("stop-loss", "sell", Some(t)) => price <= t,
                ("stop-loss", "buy", Some(t)) => price >= t,
                _ => false,
            };
            if o.status == "open" && crossed && pair_key(&o.pair) == pair_key(pair) {
                let left = o.volume.parse::<f64>().unwrap_or(0.0) - o.executed;
                s.trade(i, left, price, now);
            }
        }
    }

    /// What the account holds, by Kraken's asset names.
    pub fn balances(&self) -> BTreeMap<String, String> {
        self.state().balances.clone()
    }

    /// Sets what the account holds of `asset` (a deposit, a withdrawal, a
    /// trade made by hand).
    pub fn set_balance(&self, asset: &str, amount: &str) {
        self.state()
            .balances
            .insert(asset.to_owned(), amount.to_owned());
    }

    /// Every trade, oldest first: (trade id, order txid, price, volume).
    pub fn trades(&self) -> Vec<(String, String, String, String)> {
        (self.state().trades.iter())
            .map(|t| (t.0.clone(), t.1.clone(), t.2.clone(), t.3.clone()))
            .collect()
    }

    /// The private calls that passed the signature and nonce checks.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, reply) = answer(state, &target, &headers, &body);
    if status == 0 {
        return;
    }
    let _ = write!(
        writer,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

fn error(e: &str) -> (u16, String) {
    (200, serde_json::json!({ "error": [e] }).to_string())
}

fn ok(result: serde_json::Value) -> (u16, String) {
    (
        200,
        serde_json::json!({ "error": [], "result": result }).to_string(),
    )
}

/// The reply to one request (status 0: none at all).
fn answer(
    state: &Mutex<State>,
    target: &str,
    headers: &HashMap<String, String>,
    body: &str,
) -> (u16, String) {
    let path = target.split('?').next().unwrap_or(target);
    if let Some(method) = path.strip_prefix("/0/public/") {
        return match method {
            "AssetPairs" => ok(serde_json::json!({
                "XXBTZUSD": {
                    "altname": "XBTUSD", "wsname": "XBT/USD", "base": "XXBT", "quote": "ZUSD",
                    "pair_decimals": 1, "lot_decimals": 8, "cost_decimals": 5,
                    "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1", "status": "online"
                },
                "XETHZUSD": {
                    "altname": "ETHUSD", "wsname": "ETH/USD", "base": "XETH", "quote": "ZUSD",
                    "pair_decimals": 2, "lot_decimals": 8, "cost_decimals": 5,
                    "ordermin": "0.002", "costmin": "0.5", "tick_size": "0.01", "status": "online"
                }
            })),
            "Time" => ok(serde_json::json!({ "unixtime": 0, "rfc1123": "" })),
            "Trades" | "OHLC" => market::answer(state, method, target),
            _ => error("EGeneral:Unknown method"),
        };
    }
    let Some(method) = path.strip_prefix("/0/private/") else {
        return (404, "{}".into());
    };
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.tick();
    // Kraken's checks: the key, the signature, then the nonce.
    let key = headers.get("api-key").cloned().unwrap_or_default();
    let Some(signing) = s.keys.get(&key).cloned() else {
        return error("EAPI:Invalid key");
    };
    let Some(nonce) = form.get("nonce").and_then(|n| n.parse::<u64>().ok()) else {
        return error("EAPI:Invalid nonce");
    };
    if headers.get("api-sign") != Some(&signing.sign(path, nonce, body)) {
        return error("EAPI:Invalid signature");
    }
    if s.last_nonce.get(&key).is_some_and(|last| nonce <= *last) {
        return error("EAPI:Invalid nonce");
    }
    s.last_nonce.insert(key, nonce);
    let fault = match s
        .method_faults
        .get_mut(method)
        .and_then(VecDeque::pop_front)
    {
        Some(fault) => Some(fault),
        None => s.faults.pop_front(),
    };
    match &fault {
        Some(Fault::Error(e)) => return error(e),
        Some(Fault::Reply(status, body)) => return (*status, body.clone()),
        _ => {}
    }
    s.calls.push(method.to_owned());
    let reply = match method {
        "Balance" => ok(serde_json::to_value(&s.balances).unwrap_or_default()),
        "GetWebSocketsToken" => ok(serde_json::json!({ "token": s.ws_token, "expires": 900 })),
        "AddOrder" => add_order(&mut s, &form),
        "OpenOrders" => {
            let open: serde_json::Map<String, serde_json::Value> = (s.orders.iter())
                .filter(|o| o.status == "open")
                .map(|o| (o.txid.clone(), order_json(o)))
                .collect();
            ok(serde_json::json!({ "open": open }))
        }
        "CancelOrder" => {
            let id = form
                .get("txid")
                .or(form.get("cl_ord_id"))
                .cloned()
                .unwrap_or_default();
            let mut count = 0;
            for i in 0..s.orders.len() {
                let o = &mut s.orders[i];
                if o.status == "open" && (o.txid == id || o.cl_ord_id.as_deref() == Some(&id)) {
                    o.status = "canceled".into();
                    count += 1;
                    s.cancelled(i);
                }
            }
            if count == 0 {
                error("EOrder:Unknown order")
            } else {
                ok(serde_json::json!({ "count": count }))
            }
        }
        "QueryOrders" => {
            let wanted: Vec<&str> = form
                .get("txid")
                .map(|t| t.split(',').map(str::trim).collect())
                .unwrap_or_default();
            let found: serde_json::Map<String, serde_json::Value> = (s.orders.iter())
                .filter(|o| wanted.contains(&o.txid.as_str()))
                .map(|o| (o.txid.clone(), order_json(o)))
                .collect();
            if found.is_empty() {
                error("EOrder:Invalid order")
            } else {
                ok(serde_json::Value::Object(found))
            }
        }
        "ClosedOrders" => {
            // As Kraken: opened after `start` (a unix time), 50 a page from
            // `ofs`, the newest first; `count` is all that match.
            let start = form.get("start").and_then(|t| t.parse::<f64>().ok());
            let ofs: usize = form.get("ofs").and_then(|o| o.parse().ok()).unwrap_or(0);
            let matching: Vec<&FakeOrder> = (s.orders.iter())
                .filter(|o| o.status != "open" && start.is_none_or(|t| o.opened_s > t))
                .collect();
            let count = matching.len();
            let closed: serde_json::Map<String, serde_json::Value> = matching
                .into_iter()
                .rev()
                .skip(ofs)
                .take(50)
                .map(|o| (o.txid.clone(), order_json(o)))
                .collect();
            ok(serde_json::json!({ "closed": closed, "count": count }))
        }
        "TradesHistory" => {
            // `start`: a unix time or a trade id (exclusive), as Kraken
            // takes either; newest first, 50 a page from `ofs`.
            let start = form.get("start");
            let after_time = start.and_then(|t| t.parse::<f64>().ok());
            let after_id = start
                .filter(|_| after_time.is_none())
                .and_then(|id| s.trades.iter().position(|t| t.0 == *id));
            let ofs: usize = form.get("ofs").and_then(|o| o.parse().ok()).unwrap_or(0);
            let chosen: Vec<_> = s
                .trades
                .iter()
                .enumerate()
                .filter(|(i, t)| {
                    after_id.is_none_or(|a| *i > a) && after_time.is_none_or(|a| t.5 > a)
                })
                .map(|(_, t)| t)
                .collect();
            let count = chosen.len();
            let trades: serde_json::Map<String, serde_json::Value> = chosen
                .into_iter()
                .rev()
                .skip(ofs)
                .take(50)
                .map(|(id, txid, price, vol, fee, time)| {
                    let order = s.orders.iter().find(|o| o.txid == *txid);
                    (
                        id.clone(),
                        serde_json::json!({
                            "ordertxid": txid, "pair": order.map(|o| o.pair.clone()),
                            "time": time, "type": order.map(|o| o.side.clone()),
                            "ordertype": order.map(|o| o.ordertype.clone()),
                            "price": price, "vol": vol, "fee": fee,
                            "cost": format!("{:.5}", price.parse::<f64>().unwrap_or(0.0) * vol.parse::<f64>().unwrap_or(0.0)),
                        }),
                    )
                })
                .collect();
            ok(serde_json::json!({ "trades": trades, "count": count }))
        }
        "CancelAllOrdersAfter" => match form.get("timeout").and_then(|t| t.parse::<u64>().ok()) {
            Some(0) => {
                s.switch = None;
                ok(serde_json::json!({ "currentTime": "now", "triggerTime": "0" }))
            }
            Some(t) if t <= 86_400 => {
                s.switch = Some(std::time::Instant::now() + Duration::from_secs(t));
                ok(serde_json::json!({ "currentTime": "now", "triggerTime": format!("+{t}s") }))
            }
            _ => error("EGeneral:Invalid arguments"),
        },
        "CancelAll" => {
            let mut count = 0;
            for i in 0..s.orders.len() {
                if s.orders[i].status == "open" {
                    s.orders[i].status = "canceled".into();
                    count += 1;
                    s.cancelled(i);
                }
            }
            ok(serde_json::json!({ "count": count }))
        }
        _ => error("EGeneral:Unknown method"),
    };
    drop(s);
    match fault {
        Some(Fault::DoneThen502) => (502, "<html>502 Bad Gateway</html>".into()),
        Some(Fault::DoneThenSilent(quiet)) => {
            std::thread::sleep(quiet);
            (0, String::new())
        }
        _ => reply,
    }
}

fn add_order(s: &mut State, form: &HashMap<String, String>) -> (u16, String) {
    let field = |k: &str| form.get(k).cloned();
    let (Some(pair), Some(side), Some(ordertype), Some(volume)) = (
        field("pair"),
        field("type"),
        field("ordertype"),
        field("volume"),
    ) else {
        return error("EGeneral:Invalid arguments");
    };
    if !["buy", "sell"].contains(&side.as_str()) || volume.parse::<f64>().is_err() {
        return error("EGeneral:Invalid arguments");
    }
    let cl_ord_id = field("cl_ord_id");
    if let Some(id) = &cl_ord_id
        && s.orders
            .iter()
            .any(|o| o.cl_ord_id.as_ref() == Some(id) && o.status == "open")
    {
        return error("EOrder:Duplicate order");
    }
    let txid = format!(
        "O{:05}-FAKE-{:06}",
        s.orders.len() + 1,
        s.orders.len() * 7919 % 1_000_000
    );
    let order = FakeOrder {
        txid: txid.clone(),
        cl_ord_id,
        pair,
        side: side.clone(),
        ordertype: ordertype.clone(),
        volume: volume.clone(),
        price: field("price"),
        status: "open".into(),
        executed: 0.0,
        opened_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    s.orders.push(order);
    let price = s
        .prices
        .get(&pair_key(&s.orders[s.orders.len() - 1].pair))
        .copied();
    if ordertype == "market"
        && let Some(price) = price
        && let Ok(total) = volume.parse::<f64>()
    {
        let i = s.orders.len() - 1;
        let parts = s.parts.max(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut left = total;
        for k in 0..parts {
            let part = if k + 1 == parts {
                left
            } else {
                (total / f64::from(parts) * 1e8).floor() / 1e8
            };
            left -= part;
            s.trade(i, part, price, now);
        }
    }
    ok(serde_json::json!({
        "descr": { "order": format!("{side} {volume} {ordertype}") },
        "txid": [txid],
    }))
}

/// Kraken's key of a pair named by its altname (the pairs the fake knows).
fn pair_key(pair: &str) -> String {
    match pair {
        "XBTUSD" => "XXBTZUSD".into(),
        "ETHUSD" => "XETHZUSD".into(),
        other => other.to_owned(),
    }
}

fn order_json(o: &FakeOrder) -> serde_json::Value {
    serde_json::json!({
        "cl_ord_id": o.cl_ord_id,
        "status": o.status,
        "vol": o.volume,
        "vol_exec": format!("{:.8}", o.executed),
        "opentm": o.opened_s,
        "descr": { "pair": o.pair, "type": o.side, "ordertype": o.ordertype, "price": o.price.clone().unwrap_or_else(|| "0".into()) },
    })
}

#[cfg(test)]
mod tests;
