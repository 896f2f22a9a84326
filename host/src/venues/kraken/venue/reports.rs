//! What became of the orders in flight: Kraken's order listings and trades
//! over REST, and what the executions channel heard, turned into the
//! kernel's reports.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use keel_backtester::kernel::{ClientOrderId, Execution, Outcome};

use super::super::reply::Failure;
use super::super::stream::{Event, Executions};
use super::{Held, KrakenVenue, MAX_HEARD, MAX_PAGES, Sent, Trade, UNKNOWN_GRACE_MS, decimal};

impl KrakenVenue {
    /// Moves what the channel heard into `heard`, by our order id.
    pub(super) fn hear(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        for event in stream.take() {
            let (txid, cl_ord_id) = match &event {
                Event::Trade {
                    txid, cl_ord_id, ..
                }
                | Event::Done {
                    txid, cl_ord_id, ..
                } => (txid.clone(), cl_ord_id.clone().unwrap_or_default()),
            };
            let ours: Option<String> = self
                .conn
                .query_row(
                    "SELECT client_order_id FROM venue_orders WHERE venue_order_id = ?1 OR txid = ?2",
                    params![cl_ord_id, txid],
                    |r| r.get(0),
                )
                .optional()
                .unwrap_or(None);
            let Some(id) = ours else { continue };
            if self.heard.len() >= MAX_HEARD && !self.heard.contains_key(&id) {
                continue;
            }
            let heard = self.heard.entry(id).or_default();
            match event {
                Event::Trade {
                    trade_id,
                    txid,
                    quantity,
                    price,
                    fee,
                    time_ms,
                    ..
                } => {
                    if heard.trades.iter().all(|t| t.trade_id != trade_id) {
                        heard.trades.push(Trade {
                            trade_id,
                            txid,
                            price,
                            volume: quantity,
                            fee,
                            time_ms,
                        });
                    }
                }
                Event::Done { status, .. } => heard.done = Some(status),
            }
        }
    }

    /// Every order of ours Kraken holds open, and those it closed that
    /// were opened since `since_ms` (every page: Kraken gives 50 a page,
    /// the newest first), by our client order id (Kraken's `cl_ord_id`
    /// mapped back through `venue_orders`).
    pub fn held(&mut self, since_ms: i64) -> Result<HashMap<String, Held>, Failure> {
        let mut lists = vec![(self.client.private("OpenOrders", &[])?, "open")];
        let start = format!("{:.3}", (since_ms.max(0) as f64) / 1000.0);
        let mut offset = 0;
        for _ in 0..MAX_PAGES {
            let page = self.client.private(
                "ClosedOrders",
                &[("start", start.clone()), ("ofs", offset.to_string())],
            )?;
            let got = page["closed"].as_object().map_or(0, |m| m.len());
            let count = page["count"].as_u64().unwrap_or(0) as usize;
            lists.push((page, "closed"));
            offset += got;
            if got == 0 || offset >= count {
                break;
            }
        }
        let mut out = HashMap::new();
        let mut ours = self
            .conn
            .prepare_cached("SELECT client_order_id FROM venue_orders WHERE venue_order_id = ?1")
            .map_err(|e| Failure::Unknown(format!("venue_orders: {e}")))?;
        // Closed pages first: an order seen open and then closed between
        // the calls is taken as closed.
        lists.rotate_left(1);
        for (list, key) in &lists {
            let Some(orders) = list[*key].as_object() else {
                return Err(Failure::Malformed(format!("no \"{key}\" object")));
            };
            for (txid, o) in orders {
                let Some(venue_id) = o["cl_ord_id"].as_str() else {
                    continue;
                };
                let id: Option<String> = ours
                    .query_row([venue_id], |r| r.get(0))
                    .optional()
                    .map_err(|e| Failure::Unknown(format!("venue_orders: {e}")))?;
                let Some(id) = id else { continue };
                let held = Held {
                    txid: txid.clone(),
                    status: o["status"].as_str().unwrap_or_default().to_owned(),
                    executed: o["vol_exec"].as_str().unwrap_or("0").to_owned(),
                    reason: o["reason"].as_str().map(str::to_owned),
                };
                out.entry(id).or_insert(held);
            }
        }
        Ok(out)
    }

    /// What Kraken says of `rows`, each named by its txid (`QueryOrders`,
    /// 50 a call), by our client order id.
    fn query_orders(&mut self, rows: &[&Sent]) -> Result<HashMap<String, Held>, Failure> {
        let mut out = HashMap::new();
        for chunk in rows.chunks(50) {
            let txids: Vec<&str> = chunk.iter().filter_map(|r| r.txid.as_deref()).collect();
            let result = self
                .client
                .private("QueryOrders", &[("txid", txids.join(","))])?;
            let orders = result
                .as_object()
                .ok_or_else(|| Failure::Malformed("QueryOrders: not an object".into()))?;
            for row in chunk {
                let Some(o) = row.txid.as_deref().and_then(|t| orders.get(t)) else {
                    continue;
                };
                out.insert(
                    row.id.clone(),
                    Held {
                        txid: row.txid.clone().unwrap_or_default(),
                        status: o["status"].as_str().unwrap_or_default().to_owned(),
                        executed: o["vol_exec"].as_str().unwrap_or("0").to_owned(),
                        reason: o["reason"].as_str().map(str::to_owned),
                    },
                );
            }
        }
        Ok(out)
    }

    /// The account's trades since `start_ms`, oldest first (every page).
    pub fn trades_since(&mut self, start_ms: i64) -> Result<Vec<Trade>, Failure> {
        let start = format!("{:.3}", (start_ms.max(0) as f64) / 1000.0);
        let mut out: Vec<Trade> = Vec::new();
        for page in 0..MAX_PAGES {
            let result = self.client.private(
                "TradesHistory",
                &[("start", start.clone()), ("ofs", (page * 50).to_string())],
            )?;
            let Some(trades) = result["trades"].as_object() else {
                return Err(Failure::Malformed(
                    "TradesHistory: no \"trades\" object".into(),
                ));
            };
            for (id, t) in trades {
                out.push(Trade {
                    trade_id: id.clone(),
                    txid: t["ordertxid"].as_str().unwrap_or_default().to_owned(),
                    price: decimal(t, "price")?,
                    volume: decimal(t, "vol")?,
                    fee: decimal(t, "fee")?,
                    time_ms: (t["time"].as_f64().unwrap_or(0.0) * 1000.0).floor() as i64,
                });
            }
            let count = result["count"].as_u64().unwrap_or(0) as usize;
            if trades.is_empty() || out.len() >= count {
                break;
            }
        }
        out.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.trade_id.cmp(&b.trade_id)));
        out.dedup_by(|a, b| a.trade_id == b.trade_id);
        Ok(out)
    }

    /// Orders in `pending` whose outcome is unknown (a request unanswered,
    /// or a process that died mid-request): their grace is waited out, then
    /// they are looked up, and those Kraken never got are sent again — at
    /// start, before the first close, so a restart trades as an
    /// uninterrupted run would. Their reports come at the next look.
    pub fn settle_unknowns(&mut self, pending: &[ClientOrderId]) -> Result<(), Failure> {
        let ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        let latest: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(updated_ms) FROM venue_orders WHERE state IN ('sending', 'unknown')
                 AND client_order_id IN (SELECT value FROM json_each(?1))",
                [serde_json::to_string(&ids).unwrap_or_default()],
                |r| r.get(0),
            )
            .map_err(|e| Failure::Unknown(format!("venue_orders: {e}")))?;
        let Some(at) = latest else {
            return Ok(());
        };
        let wait = (at + UNKNOWN_GRACE_MS - self.now()).clamp(0, UNKNOWN_GRACE_MS);
        std::thread::sleep(Duration::from_millis(wait as u64));
        self.reports(pending).map(|_| ())
    }

    /// What became of the orders `pending` since the last look, as reports:
    /// orders whose outcome was unknown are looked up and, not found, sent
    /// again; each trade of a pending order is a `Part`; an order Kraken is
    /// done with ends after its trades; one Kraken refused is rejected.
    pub fn reports(&mut self, pending: &[ClientOrderId]) -> Result<Vec<Execution>, Failure> {
        let mut out = Vec::new();
        self.hear();
        if pending.is_empty() {
            return Ok(out);
        }
        let rows: Vec<Sent> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_order_id, venue_order_id, pair, side, volume, trigger_price, state, reason,
                         updated_ms, created_ms, txid
                     FROM venue_orders WHERE client_order_id = ?1",
                )
                .map_err(|e| Failure::Unknown(format!("venue_orders: {e}")))?;
            let mut rows = Vec::new();
            for id in pending {
                if let Some(row) = stmt
                    .query_row([&id.0], |r| {
                        Ok(Sent {
                            id: r.get(0)?,
                            venue_id: r.get(1)?,
                            pair: r.get(2)?,
                            side: r.get(3)?,
                            volume: r.get(4)?,
                            trigger: r.get(5)?,
                            state: r.get(6)?,
                            reason: r.get(7)?,
                            updated_ms: r.get(8)?,
                            created_ms: r.get(9)?,
                            txid: r.get(10)?,
                        })
                    })
                    .optional()
                    .map_err(|e| Failure::Unknown(format!("venue_orders: {e}")))?
                {
                    rows.push(row);
                }
            }
            rows
        };
        let now = self.now();
        // Refused: reported while the ledger waits for it.
        for row in rows.iter().filter(|r| r.state == "refused") {
            out.push(Execution {
                id: ClientOrderId(row.id.clone()),
                time_ms: now,
                outcome: Outcome::Rejected(row.reason.clone().unwrap_or_default()),
            });
        }
        let mut live: Vec<&Sent> = rows.iter().filter(|r| r.state != "refused").collect();
        // Orders the channel saw end, heard whole: reported from it.
        let up_since = self.stream.as_ref().and_then(Executions::up_since_ms);
        let mut heard_whole = Vec::new();
        live.retain(|row| {
            let whole = up_since.is_some_and(|up| up <= row.created_ms)
                && self.heard.get(&row.id).is_some_and(|h| h.done.is_some());
            if whole {
                heard_whole.push(row.id.clone());
            }
            !whole
        });
        for id in heard_whole {
            let Some(heard) = self.heard.remove(&id) else {
                continue;
            };
            let mut trades = heard.trades;
            trades.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then(a.trade_id.cmp(&b.trade_id)));
            for trade in trades {
                out.push(part(&id, trade));
            }
            out.push(Execution {
                id: ClientOrderId(id.clone()),
                time_ms: now,
                outcome: Outcome::Ended(heard.done.unwrap_or_default()),
            });
            self.set_state(&id, "ended", None, None);
        }
        if live.is_empty() {
            return Ok(out);
        }
        let over_rest: std::collections::HashSet<String> =
            live.iter().map(|r| r.id.clone()).collect();
        // Statuses first: every trade of an order seen done is then in the
        // trades read after.
        let since = live.iter().map(|r| r.created_ms).min().unwrap_or(now) - 60_000;
        // Orders Kraken named are asked for by name (`QueryOrders`); one it
        // never named is looked for in the listings, by client order id.
        let held = if live.iter().all(|r| r.txid.is_some()) {
            self.query_orders(&live)?
        } else {
            self.held(since)?
        };
        let mut unknown = 0;
        for row in live.iter().copied() {
            let id = row.id.as_str();
            if let Some(h) = held.get(id) {
                if !["placed", "ended"].contains(&row.state.as_str()) {
                    self.set_state(id, "placed", Some(&h.txid), None);
                }
                continue;
            }
            match row.state.as_str() {
                "retry" => self.place(row),
                "sending" | "unknown" if now - row.updated_ms >= UNKNOWN_GRACE_MS => {
                    tracing::info!(target: "keel::venue", order = %id, "not at Kraken, open or closed: sent again");
                    self.place(row);
                }
                "sending" | "unknown" => unknown += 1,
                _ => {}
            }
        }
        self.health.unknown_orders = unknown;
        let txids: HashMap<String, String> = held
            .iter()
            .filter(|(id, _)| over_rest.contains(id.as_str()))
            .map(|(id, h)| (h.txid.clone(), id.clone()))
            .collect();
        if txids.is_empty() {
            return Ok(out);
        }
        // From a minute before the oldest was written (clocks differ).
        for trade in self.trades_since(since)? {
            let Some(id) = txids.get(&trade.txid) else {
                continue;
            };
            out.push(part(id, trade));
        }
        for (id, h) in &held {
            if !over_rest.contains(id.as_str()) {
                continue;
            }
            if ["closed", "canceled", "expired"].contains(&h.status.as_str()) {
                let why = match &h.reason {
                    Some(r) => format!("{}: {r}", h.status),
                    None => h.status.clone(),
                };
                out.push(Execution {
                    id: ClientOrderId(id.clone()),
                    time_ms: now,
                    outcome: Outcome::Ended(why),
                });
                self.set_state(id, "ended", None, None);
                self.heard.remove(id);
            }
        }
        Ok(out)
    }
}

/// One trade of order `id`, as the kernel takes it.
fn part(id: &str, trade: Trade) -> Execution {
    Execution {
        id: ClientOrderId(id.to_owned()),
        time_ms: trade.time_ms,
        outcome: Outcome::Part {
            price: trade.price,
            quantity: trade.volume,
            fee: trade.fee,
            trade: trade.trade_id,
        },
    }
}
