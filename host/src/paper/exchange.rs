//! The paper exchange: takes orders by client order id and fills them at the
//! next bar's open with the backtester's fill model — the same prices,
//! fees, slippage, volume cap and lot rounding as a backtest. It keeps its
//! own tables (`paper_orders`, `paper_fills`) and answers by client order
//! id, so an order sent twice (after a crash) is placed once.

use rusqlite::{Connection, OptionalExtension, params};

use keel_backtester::fills::FillModel;
use keel_backtester::risk;
use keel_model::candles::Candle;
use keel_model::{Action, Size};

use crate::ledger::dec;
use crate::risk::collar;

/// An order as the exchange receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperOrder {
    pub client_order_id: String,
    pub symbol: String,
    pub action: Action,
    /// Buying (opening long, closing short) or selling.
    pub buy: bool,
    pub size: Size,
    /// Equity when the order was made: what a fraction of equity means.
    pub equity: f64,
    /// For closes and reductions: at most this much (what was held).
    pub max_quantity: Option<f64>,
    /// The last price when the order was sized, and how far the fill may
    /// stray from it (percent).
    pub reference_price: f64,
    pub max_deviation_pct: f64,
}

/// What became of an order at a bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution {
    Filled {
        fill_id: String,
        price: f64,
        quantity: f64,
        fee: f64,
    },
    Rejected(String),
}

/// The exchange; stateless beyond its tables.
#[derive(Debug, Clone, Copy)]
pub struct PaperExchange {
    pub fills: FillModel,
}

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

impl PaperExchange {
    /// Places `order` unless an order with its client id is already here.
    pub fn submit(
        &self,
        conn: &Connection,
        order: &PaperOrder,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        conn.execute(
            "INSERT OR IGNORE INTO paper_orders (client_order_id, symbol, action, side, size, equity,
                 max_quantity, reference_price, max_deviation, state, placed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'open', ?10)",
            params![
                order.client_order_id,
                order.symbol,
                order.action.as_str(),
                if order.buy { "buy" } else { "sell" },
                size_text(order.size),
                order.equity,
                order.max_quantity.map(|q| q.to_string()),
                order.reference_price,
                order.max_deviation_pct,
                now_ms
            ],
        )?;
        Ok(())
    }

    /// Whether the exchange has an order with this client id.
    pub fn knows(&self, conn: &Connection, client_order_id: &str) -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT 1 FROM paper_orders WHERE client_order_id = ?1",
            [client_order_id],
            |_| Ok(()),
        )
        .optional()
        .map(|r| r.is_some())
    }

    /// Cancels an open order; `false` if it was not open.
    pub fn cancel(&self, conn: &Connection, client_order_id: &str) -> rusqlite::Result<bool> {
        let n = conn.execute(
            "UPDATE paper_orders SET state = 'cancelled', reason = 'cancelled'
             WHERE client_order_id = ?1 AND state = 'open'",
            [client_order_id],
        )?;
        Ok(n == 1)
    }

    /// Fills (or refuses) every open order of `symbol` at this bar's open,
    /// in one transaction.
    pub fn on_bar(
        &self,
        conn: &mut Connection,
        symbol: &str,
        bar: &Candle,
    ) -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let orders: Vec<PaperOrder> = {
            let mut stmt = tx.prepare(
                "SELECT client_order_id, action, size, equity, max_quantity, reference_price, max_deviation, side
                 FROM paper_orders WHERE symbol = ?1 AND state = 'open' ORDER BY placed_ms, client_order_id",
            )?;
            stmt.query_map([symbol], |r| {
                let action: String = r.get(1)?;
                let size: String = r.get(2)?;
                let max_quantity: Option<String> = r.get(4)?;
                Ok(PaperOrder {
                    client_order_id: r.get(0)?,
                    symbol: symbol.to_owned(),
                    action: action_parse(&action).unwrap_or(Action::Close),
                    buy: r.get::<_, String>(7)? == "buy",
                    size: size_parse(&size).unwrap_or(Size::Base(0.0)),
                    equity: r.get(3)?,
                    max_quantity: max_quantity.and_then(|q| q.parse().ok()),
                    reference_price: r.get(5)?,
                    max_deviation_pct: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        for order in orders {
            match self.execute(&order, bar) {
                Execution::Filled {
                    fill_id,
                    price,
                    quantity,
                    fee,
                } => {
                    // Exchange precision: what the ledger books exactly.
                    let exact = |x: f64| dec(x).map(|d| d.to_string()).unwrap_or_default();
                    tx.execute(
                        "INSERT OR IGNORE INTO paper_fills (fill_id, client_order_id, price, quantity, fee, time_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            fill_id,
                            order.client_order_id,
                            exact(price),
                            exact(quantity),
                            exact(fee),
                            bar.time_ms
                        ],
                    )?;
                    tx.execute(
                        "UPDATE paper_orders SET state = 'filled' WHERE client_order_id = ?1",
                        [&order.client_order_id],
                    )?;
                }
                Execution::Rejected(reason) => {
                    tx.execute(
                        "UPDATE paper_orders SET state = 'rejected', reason = ?2 WHERE client_order_id = ?1",
                        params![order.client_order_id, reason],
                    )?;
                }
            }
        }
        tx.commit()
    }

    /// How `order` executes at `bar`'s open: the backtester's rules.
    pub fn execute(&self, order: &PaperOrder, bar: &Candle) -> Execution {
        let fills = self.fills;
        let price = fills.market_price(bar.open, order.buy);
        if let Err(reason) = collar(order.reference_price, price, order.max_deviation_pct) {
            return Execution::Rejected(reason);
        }
        let quantity = match order.action {
            Action::OpenLong | Action::OpenShort => {
                let wanted = risk::quantity(order.size, price, order.equity);
                fills.fillable(wanted, bar.volume).0
            }
            Action::Close => order.max_quantity.unwrap_or(0.0),
            Action::Reduce => fills.round_lot(
                risk::quantity(order.size, price, order.equity)
                    .min(order.max_quantity.unwrap_or(0.0)),
            ),
        };
        if quantity.is_nan() || quantity <= 0.0 {
            return Execution::Rejected(format!(
                "quantity rounds to zero lots of {}",
                fills.lot_size
            ));
        }
        Execution::Filled {
            fill_id: format!("pf-{}", order.client_order_id),
            price,
            quantity,
            fee: fills.fee(quantity, price),
        }
    }
}
