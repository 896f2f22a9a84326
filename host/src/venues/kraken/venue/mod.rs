//! Kraken spot as the kernel's [`Venue`]. Every order is written down
//! (`venue_orders`) before it leaves, and sent with a client order id
//! derived from the kernel's, so an order whose outcome is unknown — a
//! timeout, a 5xx, an `EService` reply, a crash mid-request — is looked up
//! at Kraken by that id before anything is sent again. Kraken enforces the
//! id's uniqueness among *open* orders only, so the lookup covers the
//! closed ones too: an order that filled at once is never placed twice.
//!
//! Executions come as Kraken's trades (`TradesHistory`), one report each
//! (`Outcome::Part`, named by the trade id the ledger books it under), and
//! an order Kraken is done with ends once all of them are reported: its
//! status is read before the trades, so every trade of an order seen
//! closed is in the trades read after.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use keel_backtester::kernel::{
    Balances, ClientOrderId, Execution, Order, OrderState, Outcome, Venue,
};
use keel_backtester::risk;
use keel_model::{Action, Symbol};

use super::client::Client;
use super::pairs::{self, Pair};
use super::reply::Failure;
use super::stream::Executions;

mod reports;

/// How long the dead man's switch waits for the next refresh: every open
/// order is cancelled this long after keel last showed it was healthy.
pub const SWITCH_SECS: u32 = 60;

/// How often the switch is refreshed while the engine is healthy.
const SWITCH_REFRESH_MS: i64 = 15_000;

/// How long an order whose outcome is unknown is waited for at Kraken
/// before, not found open or closed, it is sent again.
const UNKNOWN_GRACE_MS: i64 = 2_000;

/// How many times an order refused for a rate limit or a nonce is tried.
const MAX_TRIES: u32 = 5;

/// What Kraken says of one of our orders.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub txid: String,
    /// `pending`, `open`, `closed`, `canceled`, `expired`.
    pub status: String,
    pub executed: String,
    pub reason: Option<String>,
}

/// One trade of the account, as `TradesHistory` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub trade_id: String,
    pub txid: String,
    /// Each the nearest float to the decimal Kraken wrote (REST) or sent
    /// (the executions channel): the same trade gives the same floats
    /// whichever way it was heard.
    pub price: f64,
    pub volume: f64,
    pub fee: f64,
    pub time_ms: i64,
}

/// An order as written down before it left (`venue_orders`).
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    venue_id: String,
    pair: String,
    side: String,
    volume: String,
    /// A stop order's trigger price; `None`: a market order.
    trigger: Option<String>,
    /// Kraken's id for it, once Kraken said it holds it.
    txid: Option<String>,
    state: String,
    reason: Option<String>,
    updated_ms: i64,
    created_ms: i64,
}

/// How the live venue is doing, for `keel status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VenueHealth {
    pub venue: String,
    /// Whether the last reconciliation found the venue and the ledger in
    /// agreement (trading is reduce-only until it does).
    pub reconciled: bool,
    /// What the last reconciliation or call found wrong, if anything.
    pub problem: Option<String>,
    /// Share of the REST call counter still free (0 to 1).
    pub rest_headroom: f64,
    /// When the dead man's switch fires unless refreshed (ms since the epoch).
    pub switch_fires_ms: Option<i64>,
    /// Orders whose outcome is not known yet.
    pub unknown_orders: u64,
    /// The switch is off because stop-losses rest at Kraken: they must
    /// outlive keel, and the switch would cancel them with everything else.
    #[serde(default)]
    pub switch_off_for_stops: bool,
}

/// Kraken as a venue.
pub struct KrakenVenue {
    client: Client,
    /// Kraken's pair for each of the run's symbols.
    pairs: HashMap<String, Pair>,
    conn: Connection,
    clock: Box<dyn Fn() -> i64 + Send>,
    switch_refreshed_ms: Option<i64>,
    /// The executions channel, if one is used.
    stream: Option<Executions>,
    /// What the channel said of our orders not yet reported, by our id.
    heard: HashMap<String, Heard>,
    pub health: VenueHealth,
}

/// What the executions channel said of one order so far.
#[derive(Debug, Default)]
struct Heard {
    trades: Vec<Trade>,
    /// `filled`, `canceled` or `expired`, once it ends.
    done: Option<String>,
}

/// Most pages of one listing read at once (50 entries a page).
const MAX_PAGES: usize = 100;

/// Most orders whose channel events are kept unreported.
const MAX_HEARD: usize = 10_000;

impl std::fmt::Debug for KrakenVenue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KrakenVenue")
            .field("pairs", &self.pairs.keys())
            .finish()
    }
}

/// The client order id Kraken is sent for ours: a UUID made from its
/// SHA-256 (Kraken takes a UUID, or free text of at most 18 characters,
/// which ours exceed). The same id always gives the same UUID.
pub fn venue_order_id(id: &ClientOrderId) -> String {
    let digest = Sha256::digest(id.0.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The pair Kraken trades `symbol` as: by key (`XXBTZUSD`), altname
/// (`XBTUSD`) or WebSocket name (`XBT/USD`), BTC also as XBT.
pub fn pair_for<'p>(pairs: &'p BTreeMap<String, Pair>, symbol: &str) -> Option<&'p Pair> {
    let names = [symbol.to_owned(), symbol.replace("BTC", "XBT")];
    names.iter().find_map(|name| {
        pairs
            .values()
            .find(|p| p.name == *name || p.altname == *name || p.wsname == *name)
    })
}

/// A decimal Kraken writes as a string, as the nearest float (never through
/// a `Decimal`, whose conversion to a float can land one step off).
fn decimal(v: &serde_json::Value, field: &str) -> Result<f64, Failure> {
    v[field]
        .as_str()
        .filter(|t| t.parse::<Decimal>().is_ok())
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .ok_or_else(|| Failure::Malformed(format!("{field} is not a decimal string")))
}

impl KrakenVenue {
    /// Kraken for the run's `symbols`: reads `AssetPairs` and refuses a
    /// symbol Kraken does not trade, naming it.
    pub fn open(
        client: Client,
        symbols: &[String],
        db: &std::path::Path,
        clock: Box<dyn Fn() -> i64 + Send>,
    ) -> anyhow::Result<KrakenVenue> {
        let result = client
            .public("AssetPairs", &[])
            .map_err(|e| anyhow::anyhow!("AssetPairs: {e}"))?;
        let all = pairs::parse(&result).map_err(anyhow::Error::msg)?;
        let mut pairs = HashMap::new();
        for symbol in symbols {
            let pair = pair_for(&all, symbol)
                .ok_or_else(|| anyhow::anyhow!("{symbol}: Kraken has no such pair"))?;
            pairs.insert(symbol.clone(), pair.clone());
        }
        // A key Kraken refuses stops the run before it starts; a Kraken
        // that does not answer leaves it reduce-only until it does.
        let mut client = client;
        match client.private("Balance", &[]) {
            Err(e @ Failure::Auth(_)) => anyhow::bail!("{e}"),
            Err(e) => tracing::warn!(target: "keel::venue", "Kraken does not answer yet: {e}"),
            Ok(_) => {}
        }
        let conn = Connection::open(db)?;
        conn.busy_timeout(crate::store::LOCK_WAIT)?;
        Ok(KrakenVenue {
            client,
            pairs,
            conn,
            clock,
            switch_refreshed_ms: None,
            stream: None,
            heard: HashMap::new(),
            health: VenueHealth {
                venue: "kraken".into(),
                rest_headroom: 1.0,
                ..VenueHealth::default()
            },
        })
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Takes trades and order ends from Kraken's executions channel as
    /// well: an order the channel saw end, subscribed since before the
    /// order was written, is reported from what it heard, with no REST
    /// call; anything else (the channel down, or broken since) over REST.
    pub fn with_stream(mut self, stream: Executions) -> KrakenVenue {
        self.stream = Some(stream);
        self
    }

    fn set_state(&self, id: &str, state: &str, txid: Option<&str>, reason: Option<&str>) {
        let result = self.conn.execute(
            "UPDATE venue_orders SET state = ?2, txid = COALESCE(?3, txid), reason = COALESCE(?4, reason),
                 updated_ms = ?5 WHERE client_order_id = ?1",
            params![id, state, txid, reason, self.now()],
        );
        if let Err(e) = result {
            tracing::error!(target: "keel::venue", order = id, "venue_orders: {e}");
        }
    }

    /// Refreshes the dead man's switch if it is due: called at every close
    /// while the engine is healthy, so an engine gone quiet leaves no order
    /// working for longer than [`SWITCH_SECS`]. While `protecting` (stops
    /// rest at Kraken for open positions) the switch is off instead: it
    /// cancels every order, and a stop must outlive keel.
    pub fn keep_alive(&mut self, protecting: bool) {
        if let Some(stream) = &self.stream
            && stream.wants_token()
        {
            match self.client.private("GetWebSocketsToken", &[]) {
                Ok(result) => match result["token"].as_str() {
                    Some(token) => stream.give_token(token.to_owned()),
                    None => {
                        tracing::warn!(target: "keel::venue", "GetWebSocketsToken: no token in the reply")
                    }
                },
                Err(e) => tracing::warn!(target: "keel::venue", "GetWebSocketsToken: {e}"),
            }
        }
        let now = self.now();
        self.health.switch_off_for_stops = protecting;
        if protecting {
            if self.switch_refreshed_ms.is_some() {
                match self.client.dead_man(0) {
                    Ok(()) => {
                        self.switch_refreshed_ms = None;
                        self.health.switch_fires_ms = None;
                    }
                    Err(e) => {
                        tracing::warn!(target: "keel::venue", "the dead man's switch was not turned off: {e}")
                    }
                }
            }
            return;
        }
        if self
            .switch_refreshed_ms
            .is_some_and(|at| now - at < SWITCH_REFRESH_MS)
        {
            return;
        }
        match self.client.dead_man(SWITCH_SECS) {
            Ok(()) => {
                self.switch_refreshed_ms = Some(now);
                self.health.switch_fires_ms = Some(now + i64::from(SWITCH_SECS) * 1000);
            }
            Err(e) => {
                tracing::warn!(target: "keel::venue", "the dead man's switch was not refreshed: {e}");
                self.health.problem = Some(format!("dead man's switch: {e}"));
            }
        }
        self.health.rest_headroom = self.client.limits().rest_headroom(now);
    }

    /// Kraken's pair of each of the run's symbols.
    pub fn pairs(&self) -> &HashMap<String, Pair> {
        &self.pairs
    }

    /// What the account holds, by Kraken's asset names.
    pub fn balance(&mut self) -> Result<HashMap<String, Decimal>, Failure> {
        let result = self.client.private("Balance", &[])?;
        let map = result
            .as_object()
            .ok_or_else(|| Failure::Malformed("Balance: not an object".into()))?;
        map.iter()
            .map(|(asset, v)| {
                let amount = v
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| Failure::Malformed(format!("Balance {asset}: not a decimal")))?;
                Ok((asset.clone(), amount))
            })
            .collect()
    }

    /// Cancels every open order of the account (`CancelAll`); how many
    /// Kraken says it cancelled.
    pub fn cancel_everything(&mut self) -> Result<usize, Failure> {
        let result = self.client.private("CancelAll", &[])?;
        Ok(result["count"].as_u64().unwrap_or(0) as usize)
    }

    /// Disarms the dead man's switch (a run that ends cleanly).
    pub fn disarm(&mut self) {
        if let Err(e) = self.client.dead_man(0) {
            tracing::warn!(target: "keel::venue", "the dead man's switch was not disarmed: {e}");
        }
        self.health.switch_fires_ms = None;
    }

    /// The volume of `order` at Kraken, on its lot grid, or why it cannot
    /// be sent.
    fn volume(&self, order: &Order, pair: &Pair) -> Result<Decimal, String> {
        let action = order.signal.action;
        if action == Action::OpenShort {
            return Err("Kraken spot cannot sell short".into());
        }
        let price = order.reference_price;
        let wanted = match action {
            Action::Close => order.max_quantity.unwrap_or(0.0),
            Action::Reduce => {
                let q = risk::quantity(order.size(), price, order.equity);
                q.min(order.max_quantity.unwrap_or(0.0))
            }
            _ => risk::quantity(order.size(), price, order.equity),
        };
        let volume = Decimal::from_f64_retain(wanted)
            .filter(|v| *v > Decimal::ZERO)
            .ok_or_else(|| format!("no volume to send ({wanted})"))?;
        // An opening order never buys more than asked; a close sells what
        // is held, which is a whole number of lots however its float sum
        // came out (rounding it down would leave a lot behind, for good).
        let volume = match action {
            Action::Close | Action::Reduce => volume.round_dp(pair.lot_decimals),
            _ => pair.volume(volume),
        }
        .normalize();
        let price = Decimal::from_f64_retain(price).unwrap_or_default();
        let reducing = matches!(action, Action::Close | Action::Reduce);
        pair.check(volume, price, reducing)
            .map_err(|e| e.to_string())?;
        Ok(volume)
    }

    /// Sends one written-down order; what became of it is in its row.
    fn place(&mut self, sent: &Sent) {
        let (id, pair) = (sent.id.as_str(), sent.pair.as_str());
        let mut params = vec![
            ("pair", sent.pair.clone()),
            ("type", sent.side.clone()),
            ("volume", sent.volume.clone()),
            ("cl_ord_id", sent.venue_id.clone()),
        ];
        match &sent.trigger {
            Some(price) => {
                params.push(("ordertype", "stop-loss".to_owned()));
                params.push(("price", price.clone()));
            }
            None => params.push(("ordertype", "market".to_owned())),
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let now = self.now();
            let wait = self.client.limits().order_wait(pair, now);
            if !wait.is_zero() {
                std::thread::sleep(wait.min(Duration::from_secs(10)));
            }
            let now = self.now();
            self.client.limits().placed(pair, now);
            crate::engine::failpoint("venue-before-send");
            let reply = self.client.private("AddOrder", &params);
            crate::engine::failpoint("venue-after-send");
            match reply {
                Ok(result) => {
                    let txid = result["txid"][0].as_str().map(str::to_owned);
                    self.set_state(id, "placed", txid.as_deref(), None);
                    return;
                }
                Err(Failure::OrderRateLimit(e)) => {
                    let now = self.now();
                    self.client.limits().orders_refused(pair, now);
                    if tries >= MAX_TRIES {
                        self.set_state(id, "retry", None, Some(&e));
                        return;
                    }
                }
                Err(Failure::RestRateLimit(e) | Failure::Nonce(e)) => {
                    if tries >= MAX_TRIES {
                        self.set_state(id, "retry", None, Some(&e));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
                Err(Failure::Unknown(e) | Failure::Malformed(e)) => {
                    tracing::warn!(target: "keel::venue", order = id, "AddOrder: outcome unknown: {e}");
                    self.health.problem = Some(format!("order {id}: outcome unknown: {e}"));
                    self.set_state(id, "unknown", None, Some(&e));
                    return;
                }
                Err(e @ (Failure::Refused(_) | Failure::Auth(_))) => {
                    self.set_state(id, "refused", None, Some(&e.to_string()));
                    return;
                }
            }
        }
    }
}

impl Drop for KrakenVenue {
    fn drop(&mut self) {
        if let Some(stream) = &self.stream {
            stream.stop();
        }
    }
}

impl Venue for KrakenVenue {
    type Error = rusqlite::Error;

    /// Writes the order down, then sends it (once: an id written before is
    /// left to `reports`, which looks it up at Kraken first). Kraken's
    /// answer, whatever it is, is kept in the order's row; only the local
    /// database failing is an error.
    fn submit(&mut self, order: Order) -> rusqlite::Result<()> {
        let id = order.id.0.clone();
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM venue_orders WHERE client_order_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some() {
            return Ok(());
        }
        let symbol = order.signal.symbol.clone();
        let pair = self.pairs.get(&symbol).cloned();
        let side = if order.buy { "buy" } else { "sell" };
        let (pair_name, volume, refusal) = match &pair {
            None => (
                String::new(),
                String::new(),
                Some(format!("{symbol}: no Kraken pair")),
            ),
            Some(p) => match self.volume(&order, p) {
                Ok(v) => (p.name.clone(), v.normalize().to_string(), None),
                Err(why) => (p.name.clone(), String::new(), Some(why)),
            },
        };
        // A stop's trigger on the pair's price grid, rounded the safe way
        // (a sell stop up: it triggers no later than asked).
        let trigger = match (&pair, order.trigger) {
            (Some(p), Some(t)) => Decimal::from_f64_retain(t)
                .filter(|t| *t > Decimal::ZERO)
                .map(|t| p.price(t, !order.buy).to_string()),
            _ => None,
        };
        let venue_id = venue_order_id(&order.id);
        let now = self.now();
        let state = if refusal.is_some() {
            "refused"
        } else {
            "sending"
        };
        self.conn.execute(
            "INSERT INTO venue_orders (client_order_id, venue, venue_order_id, symbol, pair, side, volume,
                 trigger_price, state, reason, created_ms, updated_ms)
             VALUES (?1, 'kraken', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            params![id, venue_id, symbol, pair_name, side, volume, trigger, state, refusal, now],
        )?;
        if refusal.is_none() {
            self.place(&Sent {
                id,
                venue_id,
                pair: pair_name,
                side: side.to_owned(),
                volume,
                trigger,
                txid: None,
                state: state.to_owned(),
                reason: None,
                updated_ms: now,
                created_ms: now,
            });
        }
        Ok(())
    }

    fn cancel(&mut self, id: &ClientOrderId) -> rusqlite::Result<bool> {
        let venue_id = venue_order_id(id);
        match self
            .client
            .private("CancelOrder", &[("cl_ord_id", venue_id)])
        {
            Ok(result) => Ok(result["count"].as_u64().unwrap_or(0) > 0),
            Err(e) => {
                tracing::warn!(target: "keel::venue", order = %id, "CancelOrder: {e}");
                Ok(false)
            }
        }
    }

    fn cancel_all(&mut self) -> rusqlite::Result<Vec<ClientOrderId>> {
        let open = self.open_orders()?;
        match self.client.private("CancelAll", &[]) {
            Ok(_) => Ok(open),
            Err(e) => {
                tracing::error!(target: "keel::venue", "CancelAll: {e}");
                self.health.problem = Some(format!("CancelAll: {e}"));
                Ok(Vec::new())
            }
        }
    }

    fn query(&mut self, id: &ClientOrderId) -> rusqlite::Result<Option<OrderState>> {
        let state: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM venue_orders WHERE client_order_id = ?1",
                [&id.0],
                |r| r.get(0),
            )
            .optional()?;
        Ok(state.map(|s| match s.as_str() {
            "ended" | "refused" => OrderState::Done(Execution {
                id: id.clone(),
                time_ms: 0,
                outcome: Outcome::Ended(s),
            }),
            _ => OrderState::Open,
        }))
    }

    fn open_orders(&mut self) -> rusqlite::Result<Vec<ClientOrderId>> {
        match self.held(self.now()) {
            Ok(held) => Ok(held
                .into_iter()
                .filter(|(_, h)| ["open", "pending"].contains(&h.status.as_str()))
                .map(|(id, _)| ClientOrderId(id))
                .collect()),
            Err(e) => {
                tracing::warn!(target: "keel::venue", "OpenOrders: {e}");
                Ok(Vec::new())
            }
        }
    }

    fn fills_since(&mut self, cursor: u64, _out: &mut Vec<Execution>) -> rusqlite::Result<u64> {
        // Kraken's trades come through `reports`, for the orders in flight.
        Ok(cursor)
    }

    fn balances(&mut self) -> rusqlite::Result<Balances> {
        match self.client.private("Balance", &[]) {
            Ok(result) => Ok(Balances {
                assets: result
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(asset, v)| {
                                let amount: f64 = v.as_str()?.parse().ok()?;
                                Some((Symbol::from(asset.as_str()), amount))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Err(e) => {
                tracing::warn!(target: "keel::venue", "Balance: {e}");
                Ok(Balances::default())
            }
        }
    }
}

#[cfg(test)]
mod tests;
