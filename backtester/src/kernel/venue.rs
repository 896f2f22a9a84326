//! Where orders go. A [`Venue`] takes orders by client order id and reports
//! what became of them; the kernel is the same whichever venue is behind
//! it. [`execute`] is how a simulated market fills a market order at a bar's
//! open — the rule the in-memory [`SimulatedVenue`] of a backtest and the
//! host's durable paper venue share.

use keel_model::batch::Bars;
use keel_model::candles::Candle;
use keel_model::shown::number;
use keel_model::{Action, Symbol};

use super::market::exact;
use super::order::{ClientOrderId, Execution, Order, Outcome};
use super::state::collar;
use crate::fills::FillModel;
use crate::risk;

/// What a venue holds for the account, where it keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Balances {
    /// By asset or quote currency.
    pub assets: Vec<(Symbol, f64)>,
}

/// Where an order stands at a venue.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderState {
    Open,
    /// Filled, rejected or cancelled.
    Done(Execution),
}

/// An execution venue: a simulated market, the paper exchange, a real one.
///
/// Every order carries a client order id chosen by the kernel; submitting
/// an id the venue already has places nothing (so an order resent after a
/// crash is placed once). Reports come back in the order they happened,
/// each once past the caller's cursor.
pub trait Venue {
    type Error: std::fmt::Display;

    /// Places `order` unless the venue already has its id.
    fn submit(&mut self, order: Order) -> Result<(), Self::Error>;
    /// Cancels an open order; `false` if it was not open.
    fn cancel(&mut self, id: &ClientOrderId) -> Result<bool, Self::Error>;
    /// Cancels every open order; their ids.
    fn cancel_all(&mut self) -> Result<Vec<ClientOrderId>, Self::Error>;
    /// Where an order stands, if the venue has it.
    fn query(&mut self, id: &ClientOrderId) -> Result<Option<OrderState>, Self::Error>;
    /// The ids of the orders still open.
    fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, Self::Error>;
    /// Reports after `cursor` into `out`; the cursor to pass next time.
    fn fills_since(&mut self, cursor: u64, out: &mut Vec<Execution>) -> Result<u64, Self::Error>;
    /// What the account holds at the venue.
    fn balances(&mut self) -> Result<Balances, Self::Error>;
}

/// How a market `order` executes at `bar`'s open under `fills`: sized there
/// (a fraction of equity means the equity it was decided at), cut by the
/// volume cap and rounded down to lots, collared if it says so; every
/// figure at exchange precision.
pub fn execute(fills: &FillModel, order: &Order, bar: &Candle) -> Outcome {
    let price = exact(fills.market_price(bar.open, order.buy));
    if let Some(limit) = order.max_deviation_pct
        && let Err(reason) = collar(order.reference_price, price, limit)
    {
        return Outcome::Rejected(reason);
    }
    let (quantity, capped) = match order.signal.action {
        Action::OpenLong | Action::OpenShort => {
            let wanted = risk::quantity(order.size(), price, order.equity);
            let (quantity, capped) = fills.fillable(wanted, bar.volume);
            if quantity.is_nan() || quantity <= 0.0 {
                let (wanted, lot) = (number(wanted), number(fills.lot_size));
                // Cut by the volume cap first: that is why.
                if let (true, Some(share)) = (capped, fills.max_volume_share) {
                    let (share, volume) = (number(share), number(bar.volume));
                    return Outcome::Rejected(format!(
                        "{wanted} cut to a {share} share of the bar's volume {volume}, which rounds to zero lots of {lot}"
                    ));
                }
                return Outcome::Rejected(format!("{wanted} rounds to zero lots of {lot}"));
            }
            (quantity, capped)
        }
        Action::Close => (order.max_quantity.unwrap_or(0.0), false),
        Action::Reduce => {
            let wanted = risk::quantity(order.size(), price, order.equity);
            let held = order.max_quantity.unwrap_or(0.0);
            (fills.round_lot(wanted.min(held)), false)
        }
    };
    let quantity = exact(quantity);
    if quantity.is_nan() || quantity <= 0.0 {
        let lot = number(fills.lot_size);
        return Outcome::Rejected(format!("quantity rounds to zero lots of {lot}"));
    }
    Outcome::Filled {
        price,
        quantity,
        fee: exact(fills.fee(quantity, price)),
        capped,
    }
}

/// The market of a backtest: orders wait in memory and fill at their
/// symbol's next open. No IO, no clock. Its reports are handed over once
/// (`fills_since` moves them out), as a backtest reads each once.
#[derive(Debug, Clone, Default)]
pub struct SimulatedVenue {
    fills: FillModel,
    open: Vec<Order>,
    /// Reports not yet taken, and the cursor of the first.
    reports: Vec<Execution>,
    first: u64,
}

impl SimulatedVenue {
    pub fn new(fills: FillModel) -> SimulatedVenue {
        SimulatedVenue {
            fills,
            ..SimulatedVenue::default()
        }
    }

    /// The bars of one close time arrive: every open order whose symbol has
    /// a bar now fills (or is refused) at its open, in the order placed; the
    /// others keep waiting (a gap is never filled).
    pub fn on_step(&mut self, bars: Bars<'_>) {
        if self.open.is_empty() {
            return;
        }
        let fills = self.fills;
        let mut i = 0;
        while i < self.open.len() {
            let sym = self.open[i].sym as u32;
            match (0..bars.len()).find(|&b| bars.symbol[b] == sym) {
                Some(b) => {
                    let order = self.open.remove(i);
                    let bar = bars.get(b).1;
                    let outcome = execute(&fills, &order, &bar);
                    self.reports.push(Execution {
                        id: order.id,
                        time_ms: bar.time_ms,
                        outcome,
                    });
                }
                None => i += 1,
            }
        }
    }

    /// Whether any order is waiting.
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }
}

impl Venue for SimulatedVenue {
    type Error = std::convert::Infallible;

    fn submit(&mut self, order: Order) -> Result<(), Self::Error> {
        if !self.open.iter().any(|o| o.id == order.id) {
            self.open.push(order);
        }
        Ok(())
    }

    fn cancel(&mut self, id: &ClientOrderId) -> Result<bool, Self::Error> {
        let Some(i) = self.open.iter().position(|o| o.id == *id) else {
            return Ok(false);
        };
        self.open.remove(i);
        self.reports.push(Execution {
            id: id.clone(),
            time_ms: 0,
            outcome: Outcome::Cancelled("cancelled".into()),
        });
        Ok(true)
    }

    fn cancel_all(&mut self) -> Result<Vec<ClientOrderId>, Self::Error> {
        let ids: Vec<ClientOrderId> = self.open.iter().map(|o| o.id.clone()).collect();
        for id in &ids {
            self.cancel(id)?;
        }
        Ok(ids)
    }

    fn query(&mut self, id: &ClientOrderId) -> Result<Option<OrderState>, Self::Error> {
        if self.open.iter().any(|o| o.id == *id) {
            return Ok(Some(OrderState::Open));
        }
        Ok(self
            .reports
            .iter()
            .find(|r| r.id == *id)
            .map(|r| OrderState::Done(r.clone())))
    }

    fn open_orders(&mut self) -> Result<Vec<ClientOrderId>, Self::Error> {
        Ok(self.open.iter().map(|o| o.id.clone()).collect())
    }

    fn fills_since(&mut self, cursor: u64, out: &mut Vec<Execution>) -> Result<u64, Self::Error> {
        // In memory, a report is handed over once: the next cursor is past
        // it whatever the caller passes, so memory does not grow with the
        // run.
        let _ = cursor;
        self.first += self.reports.len() as u64;
        out.append(&mut self.reports);
        Ok(self.first)
    }

    fn balances(&mut self) -> Result<Balances, Self::Error> {
        // The book is the account: a simulated venue keeps no balances.
        Ok(Balances::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::batch::BarColumns;
    use keel_model::{Signal, Size};

    fn order(id: &str, sym: usize, action: Action, size: Size) -> Order {
        Order {
            id: ClientOrderId(id.into()),
            sym,
            signal: std::sync::Arc::new(Signal {
                symbol: format!("S{sym}"),
                action,
                size,
                tag: String::new(),
                stop_loss: None,
                take_profit: None,
                reason: String::new(),
                confidence: 1.0,
            }),
            buy: action == Action::OpenLong,
            equity: 1000.0,
            max_quantity: Some(2.0),
            reference_price: 100.0,
            max_deviation_pct: Some(5.0),
            trigger: None,
        }
    }

    fn bar(open: f64) -> Candle {
        Candle {
            time_ms: 60_000,
            open,
            high: open,
            low: open,
            close: open,
            volume: 1e6,
        }
    }

    #[test]
    fn orders_fill_at_their_symbols_open_once_in_order_and_reports_are_taken_once() {
        let mut venue = SimulatedVenue::new(FillModel::default());
        let a = order("a", 1, Action::OpenLong, Size::FractionOfEquity(0.5));
        let b = order("b", 0, Action::OpenLong, Size::Quote(100.0));
        venue.submit(a.clone()).unwrap();
        venue.submit(a.clone()).unwrap();
        venue.submit(b.clone()).unwrap();
        let mut columns = BarColumns::default();
        columns.push(0, &bar(100.0));
        venue.on_step(columns.slice(0, 1));
        assert_eq!(venue.open_orders().unwrap(), vec![a.id.clone()]);
        let mut out = Vec::new();
        let cursor = venue.fills_since(0, &mut out).unwrap();
        assert_eq!((cursor, out.len()), (1, 1));
        let Outcome::Filled {
            price, quantity, ..
        } = out[0].outcome
        else {
            panic!("{out:?}");
        };
        assert_eq!((price, exact(quantity)), (exact(100.05), quantity));
        assert!((price * quantity - 100.0).abs() < 1e-6, "{quantity}");
        out.clear();
        assert_eq!(venue.fills_since(cursor, &mut out).unwrap(), 1);
        assert!(out.is_empty(), "a report is handed over once");
        assert!(venue.cancel(&a.id).unwrap());
        assert!(!venue.cancel(&a.id).unwrap());
        assert_eq!(venue.fills_since(cursor, &mut out).unwrap(), 2);
        assert_eq!(out[0].outcome, Outcome::Cancelled("cancelled".into()));
    }

    #[test]
    fn execution_rules() {
        let fills = FillModel::default();
        let cases = [
            // The collar refuses a fill 10% away from the reference.
            (
                order("c", 0, Action::OpenLong, Size::Quote(100.0)),
                110.0,
                None,
            ),
            (
                order("r", 0, Action::Reduce, Size::Base(5.0)),
                100.0,
                Some(2.0),
            ),
            (
                order("x", 0, Action::Close, Size::Base(0.0)),
                100.0,
                Some(2.0),
            ),
            (
                order("z", 0, Action::OpenLong, Size::Base(1e-12)),
                100.0,
                None,
            ),
        ];
        for (order, open, want) in cases {
            let got = match execute(&fills, &order, &bar(open)) {
                Outcome::Filled { quantity, .. } => Some(quantity),
                _ => None,
            };
            assert_eq!(got, want, "{}", order.id);
        }
    }
}
