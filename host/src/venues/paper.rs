//! The paper exchange: a venue of its own in the run's database (its own
//! connection and tables, `paper_orders` and `paper_fills`), which fills
//! market orders at the next bar's open by the kernel's rule
//! ([`keel_backtester::kernel::execute`]) — the same prices, fees,
//! slippage, volume cap, lot rounding and collar as a backtest. It answers
//! by client order id, so an order sent twice (after a crash) is placed once.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use keel_backtester::fills::FillModel;
use keel_backtester::kernel::{
    Balances, ClientOrderId, Execution, Order, OrderState, Outcome, Venue, execute,
};
use keel_model::candles::Candle;
use keel_model::{Action, Signal, Size};

use crate::ledger::{dec, float};
use crate::store::{Cached, now_ms};

/// How an order's size is stored.
pub(crate) fn size_text(size: Size) -> String {
    match size {
        Size::FractionOfEquity(x) => format!("fraction:{x}"),
        Size::Quote(x) => format!("quote:{x}"),
        Size::Base(x) => format!("base:{x}"),
    }
}

pub(crate) fn size_parse(text: &str) -> Option<Size> {
    let (kind, x) = text.split_once(':')?;
    let x: f64 = x.parse().ok()?;
    match kind {
        "fraction" => Some(Size::FractionOfEquity(x)),
        "quote" => Some(Size::Quote(x)),
        "base" => Some(Size::Base(x)),
        _ => None,
    }
}

pub(crate) fn action_parse(text: &str) -> Option<Action> {
    [
        Action::OpenLong,
        Action::OpenShort,
        Action::Close,
        Action::Reduce,
    ]
    .into_iter()
    .find(|a| a.as_str() == text)
}

/// A stored amount: the decimal text of a float at exchange precision.
fn amount(text: &str) -> f64 {
    text.parse().map(float).unwrap_or(f64::NAN)
}

/// The paper exchange of one database.
#[derive(Debug)]
pub struct PaperVenue {
    conn: Connection,
    fills: FillModel,
}

impl PaperVenue {
    /// The exchange in the database at `path` (whose schema is in place).
    pub fn open(path: &Path, fills: FillModel) -> rusqlite::Result<PaperVenue> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(crate::store::LOCK_WAIT)?;
        conn.set_prepared_statement_cache_capacity(crate::store::STATEMENT_CACHE);
        Ok(PaperVenue { conn, fills })
    }

    /// The bars of one close time arrive: every open order of a symbol with
    /// a bar now is filled (or refused) at its open, in the order placed, in
    /// one transaction.
    pub fn on_step(&mut self, bars: &[(&str, Candle)]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let orders: Vec<(Order, usize)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT client_order_id, symbol, action, size, equity, max_quantity, reference_price, max_deviation, side
                 FROM paper_orders WHERE state = 'open' ORDER BY rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                let symbol: String = r.get(1)?;
                let action: String = r.get(2)?;
                let size: String = r.get(3)?;
                let max_quantity: Option<String> = r.get(5)?;
                Ok((
                    r.get::<_, String>(0)?,
                    symbol,
                    action,
                    size,
                    r.get::<_, f64>(4)?,
                    max_quantity,
                    r.get::<_, f64>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, symbol, action, size, equity, max_q, reference, deviation, side) = row?;
                let Some(bar) = bars.iter().position(|(s, _)| *s == symbol) else {
                    continue;
                };
                let action = action_parse(&action).unwrap_or(Action::Close);
                let order = Order {
                    id: ClientOrderId(id),
                    sym: 0,
                    signal: std::sync::Arc::new(Signal {
                        symbol,
                        action,
                        size: size_parse(&size).unwrap_or(Size::Base(0.0)),
                        tag: String::new(),
                        stop_loss: None,
                        take_profit: None,
                        reason: String::new(),
                        confidence: 0.0,
                    }),
                    buy: side == "buy",
                    equity,
                    max_quantity: max_q.as_deref().map(amount),
                    reference_price: reference,
                    max_deviation_pct: Some(deviation),
                    trigger: None,
                };
                out.push((order, bar));
            }
            out
        };
        for (order, bar) in orders {
            let (_, candle) = bars[bar];
            match execute(&self.fills, &order, &candle) {
                Outcome::Filled {
                    price,
                    quantity,
                    fee,
                    ..
                } => {
                    let text = |x: f64| dec(x).map(|d| d.to_string()).unwrap_or_default();
                    tx.run(
                        "INSERT OR IGNORE INTO paper_fills (fill_id, client_order_id, price, quantity, fee, time_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            format!("pf-{}", order.id),
                            order.id.0,
                            text(price),
                            text(quantity),
                            text(fee),
                            candle.time_ms
                        ],
                    )?;
                    tx.run(
                        "UPDATE paper_orders SET state = 'filled' WHERE client_order_id = ?1",
                        [&order.id.0],
                    )?;
                }
                Outcome::Rejected(reason) | Outcome::Cancelled(reason) | Outcome::Ended(reason) => {
                    tx.run(
                        "UPDATE paper_orders SET state = 'rejected', reason = ?2 WHERE client_order_id = ?1",
                        params![order.id.0, reason],
                    )?;
                }
                // The paper exchange fills an order whole.
                Outcome::Part { .. } => {}
            }
        }
        tx.commit()
    }
}

impl Venue for PaperVenue {
    type Error = rusqlite::Error;

    fn submit(&mut self, order: Order) -> rusqlite::Result<()> {
        self.conn.run(
            "INSERT OR IGNORE INTO paper_orders (client_order_id, symbol, action, side, size, equity,
                 max_quantity, reference_price, max_deviation, state, placed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'open', ?10)",
            params![
                order.id.0,
                order.signal.symbol,
                order.signal.action.as_str(),
                if order.buy { "buy" } else { "sell" },
                size_text(order.size()),
                order.equity,
                order.max_quantity.map(|q| q.to_string()),
                order.reference_price,
                order.max_deviation_pct.unwrap_or(f64::MAX),
                now_ms()
            ],
        )?;
        Ok(())
    }

    fn cancel(&mut self, id: &ClientOrderId) -> rusqlite::Result<bool> {
        let n = self.conn.run(
            "UPDATE paper_orders SET state = 'cancelled', reason = 'cancelled'
             WHERE client_order_id = ?1 AND state = 'open'",
            [&id.0],
        )?;
        Ok(n == 1)
    }

    fn cancel_all(&mut self) -> rusqlite::Result<Vec<ClientOrderId>> {
        let ids = self.open_orders()?;
        for id in &ids {
            self.cancel(id)?;
        }
        Ok(ids)
    }

    fn query(&mut self, id: &ClientOrderId) -> rusqlite::Result<Option<OrderState>> {
        type Fill = (String, String, String, i64);
        let row: Option<(String, Option<String>, Option<Fill>)> = self
            .conn
            .prepare_cached(
                "SELECT p.state, p.reason, f.price, f.quantity, f.fee, f.time_ms
                 FROM paper_orders p LEFT JOIN paper_fills f ON f.client_order_id = p.client_order_id
                 WHERE p.client_order_id = ?1",
            )?
            .query_row([&id.0], |r| {
                let fill = match r.get::<_, Option<String>>(2)? {
                    Some(price) => Some((price, r.get(3)?, r.get(4)?, r.get(5)?)),
                    None => None,
                };
                Ok((r.get(0)?, r.get(1)?, fill))
            })
            .optional()?;
        let Some((state, reason, fill)) = row else {
            return Ok(None);
        };
        let reason = reason.unwrap_or_default();
        let (time_ms, outcome) = match (state.as_str(), fill) {
            ("open", _) => return Ok(Some(OrderState::Open)),
            ("filled", Some((price, quantity, fee, time_ms))) => (
                time_ms,
                Outcome::Filled {
                    price: amount(&price),
                    quantity: amount(&quantity),
                    fee: amount(&fee),
                    capped: false,
                },
            ),
            ("cancelled", _) => (0, Outcome::Cancelled(reason)),
            _ => (0, Outcome::Rejected(reason)),
        };
        Ok(Some(OrderState::Done(Execution {
            id: id.clone(),
            time_ms,
            outcome,
        })))
    }

    fn open_orders(&mut self) -> rusqlite::Result<Vec<ClientOrderId>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT client_order_id FROM paper_orders WHERE state = 'open' ORDER BY rowid",
        )?;
        stmt.query_map([], |r| Ok(ClientOrderId(r.get(0)?)))?
            .collect()
    }

    fn fills_since(&mut self, cursor: u64, out: &mut Vec<Execution>) -> rusqlite::Result<u64> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, client_order_id, price, quantity, fee, time_ms FROM paper_fills
             WHERE rowid > ?1 ORDER BY rowid",
        )?;
        let mut last = cursor;
        let rows = stmt.query_map([cursor as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (rowid, id, price, quantity, fee, time_ms) = row?;
            last = rowid as u64;
            out.push(Execution {
                id: ClientOrderId(id),
                time_ms,
                outcome: Outcome::Filled {
                    price: amount(&price),
                    quantity: amount(&quantity),
                    fee: amount(&fee),
                    capped: false,
                },
            });
        }
        Ok(last)
    }

    fn balances(&mut self) -> rusqlite::Result<Balances> {
        // Paper money lives in the books: the exchange keeps no balances.
        Ok(Balances::default())
    }
}
