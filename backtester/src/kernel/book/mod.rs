//! A book: one strategy's cash, positions and orders in flight, in floats
//! at exchange precision ([`super::exact`]). The kernel's only book: a
//! backtest keeps it in memory; a paper or live run keeps it beside a
//! decimal ledger (the journal's) that books the same fills, and rebuilds
//! it from that ledger's fills after a restart — the same operations in the
//! same order, so the same floats.

use std::borrow::Borrow;
use std::sync::Arc;

use keel_model::batch::Bars;
use keel_model::candles::Candle;
use keel_model::shown::quoted;
use keel_model::{Action, Fill, Portfolio, Position, Side, Signal};

use super::ExitReason;
use super::market::{Market, exact};
use super::order::{ClientOrderId, Decision, Execution, Order, Outcome, RejectedBy, Rejection};
use super::state::{TradingState, pre_trade};
use crate::fills::FillModel;
use crate::risk::{self, Exposure};

/// A signal handed to [`Book::decide`]: owned (moved into the order or the
/// refusal it becomes) or borrowed (cloned there; the caller keeps it).
pub trait SignalIn: Borrow<Signal> {
    fn into_signal(self) -> Signal;
}

impl SignalIn for Signal {
    fn into_signal(self) -> Signal {
        self
    }
}

impl SignalIn for &Signal {
    fn into_signal(self) -> Signal {
        self.clone()
    }
}

/// A closed (part of a) position, net of every fee.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Trade {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
    pub quantity: f64,
    pub price_entry: f64,
    pub price_exit: f64,
    pub time_entry_ms: i64,
    pub time_exit_ms: i64,
    /// Profit or loss after entry and exit fees, quote currency.
    pub pnl: f64,
    pub fees: f64,
    /// Worst and best unrealized P&L while open, quote currency.
    pub mae: f64,
    pub mfe: f64,
    pub exit_reason: ExitReason,
    /// The position's stop-loss and take-profit when it closed, where set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub take_profit: Option<f64>,
}

/// An open position.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// What the strategy sees; `size` is the quantity held, `price_mark` the
    /// last close.
    pub pos: Position,
    /// Index of the symbol in the run's [`Market`].
    pub sym: usize,
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
    /// Entry fees not yet charged to a trade.
    pub fees: f64,
    pub mfe: f64,
}

/// What made a fill.
#[derive(Debug, Clone, PartialEq)]
pub enum FillSource {
    Order(ClientOrderId),
    StopLoss,
    TakeProfit,
    /// The kill switch's flattening at the last close.
    Kill,
    /// A shadow book's flattening when its paper gate ends.
    ShadowEnd,
    EndOfData,
}

impl FillSource {
    /// How the ledger names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            FillSource::Order(_) => "signal",
            FillSource::StopLoss => "stop-loss",
            FillSource::TakeProfit => "take-profit",
            FillSource::Kill => "kill",
            FillSource::ShadowEnd => "shadow-end",
            FillSource::EndOfData => "end-of-data",
        }
    }

    /// What the ledger's stored `source` names.
    pub fn parse(text: &str, order: Option<ClientOrderId>) -> FillSource {
        match (text, order) {
            (_, Some(id)) => FillSource::Order(id),
            ("stop-loss", None) => FillSource::StopLoss,
            ("take-profit", None) => FillSource::TakeProfit,
            ("shadow-end", None) => FillSource::ShadowEnd,
            ("end-of-data", None) => FillSource::EndOfData,
            _ => FillSource::Kill,
        }
    }

    fn exit_reason(&self) -> ExitReason {
        match self {
            FillSource::Order(_) | FillSource::Kill | FillSource::ShadowEnd => ExitReason::Signal,
            FillSource::StopLoss => ExitReason::StopLoss,
            FillSource::TakeProfit => ExitReason::TakeProfit,
            FillSource::EndOfData => ExitReason::EndOfData,
        }
    }
}

/// A fill the book took, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Booked {
    pub fill: Fill,
    pub source: FillSource,
    /// The position's exits after an opening fill.
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
    /// The venue's id of the trade, for an order that trades in parts.
    pub trade: Option<String>,
}

/// One strategy's account.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub cash: f64,
    pub open: Vec<Open>,
    /// Orders decided and not yet reported on by the venue.
    pub pending: Vec<Order>,
    /// Closed trades, in order (a driver may drain them).
    pub trades: Vec<Trade>,
    /// Fills taken since the driver last drained them.
    pub fills: Vec<Booked>,
    /// Signals refused since the driver last drained them.
    pub rejected: Vec<Rejection>,
    pub fees: f64,
    /// Fills cut by the volume cap.
    pub capped: usize,
}

impl Book {
    pub fn new(cash: f64) -> Book {
        Book {
            cash,
            ..Book::default()
        }
    }

    /// Cash plus every position at its mark.
    pub fn equity(&self) -> f64 {
        self.cash + self.open.iter().map(|p| p.pos.value()).sum::<f64>()
    }

    /// Step 1: what the venue did with one of this book's orders. A report
    /// on an order the book is not waiting for is ignored (it was settled).
    pub fn settle(&mut self, report: Execution) {
        let Some(i) = self.pending.iter().position(|o| o.id == report.id) else {
            return;
        };
        let time_ms = report.time_ms;
        if let Outcome::Part {
            price,
            quantity,
            fee,
            trade,
        } = report.outcome
        {
            self.settle_part(i, (price, quantity, fee), trade, time_ms);
            return;
        }
        let order = self.pending.remove(i);
        let reason = match report.outcome {
            Outcome::Filled {
                price,
                quantity,
                fee,
                capped,
            } => {
                let fill = Fill {
                    symbol: order.signal.symbol.clone(),
                    tag: order.signal.tag.clone(),
                    action: order.signal.action,
                    price,
                    quantity,
                    fee,
                    time_ms,
                };
                let exits = (order.signal.stop_loss, order.signal.take_profit);
                match self.apply(order.sym, fill, exits, FillSource::Order(order.id)) {
                    Ok(()) => {
                        self.capped += usize::from(capped);
                        return;
                    }
                    Err(reason) => reason,
                }
            }
            Outcome::Rejected(reason) => reason,
            Outcome::Cancelled(_) | Outcome::Ended(_) | Outcome::Part { .. } => return,
        };
        self.rejected.push(Rejection {
            time_ms,
            signal: Arc::unwrap_or_clone(order.signal),
            reason,
            by: RejectedBy::Fill,
        });
    }

    /// One execution of pending order `i`, which stays in flight (a close
    /// or a reduction then has that much less to do). A part the book
    /// cannot take (nothing left to close) is a rejection on record.
    fn settle_part(
        &mut self,
        i: usize,
        (price, quantity, fee): (f64, f64, f64),
        trade: String,
        time_ms: i64,
    ) {
        let order = &mut self.pending[i];
        if let Some(left) = &mut order.max_quantity {
            *left = exact((*left - quantity).max(0.0));
        }
        let order = order.clone();
        let fill = Fill {
            symbol: order.signal.symbol.clone(),
            tag: order.signal.tag.clone(),
            action: order.signal.action,
            price,
            quantity,
            fee,
            time_ms,
        };
        let exits = (order.signal.stop_loss, order.signal.take_profit);
        match self.apply(order.sym, fill, exits, FillSource::Order(order.id)) {
            Ok(()) => {
                if let Some(last) = self.fills.last_mut() {
                    last.trade = Some(trade);
                }
            }
            Err(reason) => self.rejected.push(Rejection {
                time_ms,
                signal: Arc::unwrap_or_clone(order.signal),
                reason,
                by: RejectedBy::Fill,
            }),
        }
    }

    /// Books one fill: opens or adds to the (symbol, tag) position, or
    /// closes or reduces it (recording the trade). This is how every fill
    /// enters a book — from a venue, a stop, a kill, or the ledger when a
    /// book is rebuilt. `exits` are an opening fill's stop and target.
    pub fn apply(
        &mut self,
        sym: usize,
        fill: Fill,
        exits: (Option<f64>, Option<f64>),
        source: FillSource,
    ) -> Result<(), String> {
        let index = self
            .open
            .iter()
            .position(|p| p.pos.symbol == fill.symbol && p.pos.tag == fill.tag);
        let (price, quantity, fee) = (fill.price, fill.quantity, fill.fee);
        match fill.action {
            Action::OpenLong | Action::OpenShort => {
                let side = if fill.action == Action::OpenLong {
                    Side::Long
                } else {
                    Side::Short
                };
                if let Some(i) = index
                    && self.open[i].pos.side != side
                {
                    return Err(format!("tag {} holds the other side", quoted(&fill.tag)));
                }
                self.fees += fee;
                self.cash += match side {
                    Side::Long => -(quantity * price) - fee,
                    Side::Short => quantity * price - fee,
                };
                let (stop_loss, take_profit) = match index {
                    Some(i) => {
                        let p = &mut self.open[i];
                        let held = &mut p.pos;
                        held.price_entry = (held.price_entry * held.size + price * quantity)
                            / (held.size + quantity);
                        held.size += quantity;
                        held.pnl_unrealized = held.unrealized();
                        p.fees += fee;
                        p.stop_loss = exits.0.or(p.stop_loss);
                        p.take_profit = exits.1.or(p.take_profit);
                        (p.stop_loss, p.take_profit)
                    }
                    None => {
                        self.open.push(Open {
                            pos: Position {
                                symbol: fill.symbol.clone(),
                                tag: fill.tag.clone(),
                                side,
                                size: quantity,
                                price_entry: price,
                                time_entry_ms: fill.time_ms,
                                price_mark: price,
                                pnl_unrealized: 0.0,
                                mae: 0.0,
                            },
                            sym,
                            stop_loss: exits.0,
                            take_profit: exits.1,
                            fees: fee,
                            mfe: 0.0,
                        });
                        exits
                    }
                };
                self.fills.push(Booked {
                    fill,
                    source,
                    stop_loss,
                    take_profit,
                    trade: None,
                });
                Ok(())
            }
            Action::Close | Action::Reduce => {
                let Some(i) = index else {
                    return Err(format!(
                        "nothing open under {} {}",
                        quoted(&fill.symbol),
                        quoted(&fill.tag)
                    ));
                };
                let held = self.open[i].pos.size;
                let (quantity, fee) = if quantity > held {
                    (held, exact(fee * held / quantity))
                } else {
                    (quantity, fee)
                };
                self.exit_as(
                    i,
                    Fill {
                        quantity,
                        fee,
                        ..fill
                    },
                    source,
                );
                Ok(())
            }
        }
    }

    /// Step 2: the stops and targets of `bar`'s symbol inside its range.
    pub fn exits(&mut self, fills: &FillModel, (symbol, candle): (u32, Candle)) {
        let mut i = 0;
        while i < self.open.len() {
            match self.exit_in_bar(fills, i, (symbol, candle)) {
                Some((price, reason)) => {
                    let price = exact(price);
                    let p = &self.open[i].pos;
                    let quantity = p.size;
                    let fill = Fill {
                        symbol: p.symbol.clone(),
                        tag: p.tag.clone(),
                        action: Action::Close,
                        price,
                        quantity,
                        fee: exact(fills.fee(quantity, price)),
                        time_ms: candle.time_ms,
                    };
                    let source = match reason {
                        ExitReason::TakeProfit => FillSource::TakeProfit,
                        _ => FillSource::StopLoss,
                    };
                    self.exit_as(i, fill, source);
                }
                None => i += 1,
            }
        }
    }

    /// Where position `i` exits inside `bar` by its stop or target, if it does.
    fn exit_in_bar(
        &self,
        fills: &FillModel,
        i: usize,
        (symbol, candle): (u32, Candle),
    ) -> Option<(f64, ExitReason)> {
        let p = &self.open[i];
        if p.sym != symbol as usize || (p.stop_loss.is_none() && p.take_profit.is_none()) {
            return None;
        }
        fills.exit_in_bar(p.pos.side, p.stop_loss, p.take_profit, &candle)
    }

    /// The positions (by index) whose stop or target is inside `bar`,
    /// nothing booked: a live venue closes them with orders of its own.
    pub fn exits_due(&self, fills: &FillModel, bar: (u32, Candle)) -> Vec<(usize, ExitReason)> {
        (0..self.open.len())
            .filter_map(|i| self.exit_in_bar(fills, i, bar).map(|(_, why)| (i, why)))
            .collect()
    }

    /// Whether any open position has a stop or a target.
    pub fn has_exits(&self) -> bool {
        self.open
            .iter()
            .any(|p| p.stop_loss.is_some() || p.take_profit.is_some())
    }

    /// Whether any position's stop or target is inside one of `bars`.
    pub fn exit_within(&self, fills: &FillModel, bars: Bars<'_>) -> bool {
        (0..bars.len()).any(|b| {
            let bar = bars.get(b);
            (0..self.open.len()).any(|i| self.exit_in_bar(fills, i, bar).is_some())
        })
    }

    /// Step 3: marks every position at the closes of one step's bars
    /// (worst and best excursions from their ranges); returns equity.
    pub fn mark(&mut self, bars: Bars<'_>) -> f64 {
        if !self.open.is_empty() {
            for b in 0..bars.len() {
                let symbol = bars.symbol[b] as usize;
                for p in self.open.iter_mut().filter(|p| p.sym == symbol) {
                    let best = p.pos.mark_at(bars.low[b], bars.high[b], bars.close[b]);
                    p.mfe = p.mfe.max(best);
                }
            }
        }
        self.equity()
    }

    /// [`Book::mark`] at each of `bars` in turn (each closed at a time of
    /// its own): `each(b, equity)` after bar `b`. Flat, equity is the cash
    /// at every one.
    pub fn mark_each(&mut self, bars: Bars<'_>, mut each: impl FnMut(usize, f64)) {
        let n = bars.len();
        if self.open.is_empty() {
            let equity = self.equity();
            (0..n).for_each(|b| each(b, equity));
            return;
        }
        let (symbol, low, high, close) = (
            &bars.symbol[..n],
            &bars.low[..n],
            &bars.high[..n],
            &bars.close[..n],
        );
        for b in 0..n {
            let sym = symbol[b] as usize;
            for p in self.open.iter_mut().filter(|p| p.sym == sym) {
                let best = p.pos.mark_at(low[b], high[b], close[b]);
                p.mfe = p.mfe.max(best);
            }
            each(b, self.equity());
        }
    }

    /// What the strategy is shown.
    pub fn view(&self, equity: f64) -> Portfolio {
        Portfolio {
            cash: self.cash,
            equity,
            positions: self.open.iter().map(|p| p.pos.clone()).collect(),
        }
    }

    /// Held and pending exposure, for the risk checks.
    pub fn exposure(&self, equity: f64, market: &Market) -> Exposure {
        let mut e = Exposure {
            equity,
            ..Exposure::default()
        };
        for p in &self.open {
            let p = &p.pos;
            e.hold(&p.symbol, &p.tag, p.side, p.size * p.price_mark);
        }
        // Orders accepted earlier and not filled yet take their share.
        for order in self
            .pending
            .iter()
            .filter(|o| matches!(o.signal.action, Action::OpenLong | Action::OpenShort))
        {
            let price = market.price(Some(order.sym));
            let quantity = risk::quantity(order.signal.size, price, order.equity);
            let notional = quantity * price;
            if notional.is_finite() && notional > 0.0 {
                e.add(&order.signal, risk::Approved { quantity, notional });
            }
        }
        e
    }

    /// Step 5: the trading state and the risk checks decide each signal, in
    /// order; an accepted one becomes an order (waiting in `pending` from
    /// now), named by `id_of(seq)`. Refusals are also kept in `rejected`.
    /// Signals handed over owned are moved into their orders and refusals;
    /// borrowed ones are cloned there.
    pub fn decide(
        &mut self,
        market: &Market,
        time_ms: i64,
        signals: impl IntoIterator<Item = impl SignalIn>,
        state: TradingState,
        mut id_of: impl FnMut(usize) -> ClientOrderId,
    ) -> Vec<Decision> {
        let equity = self.equity();
        // What is held and pending, built at the first signal that opens: a
        // close or a reduction passes the risk checks whatever is held.
        let mut exposure: Option<Exposure> = None;
        let closing = Exposure {
            equity,
            ..Exposure::default()
        };
        let mut signals = signals.into_iter().enumerate().peekable();
        let mut decisions = Vec::with_capacity(signals.size_hint().0);
        while let Some((seq, signal)) = signals.next() {
            let given: &Signal = signal.borrow();
            let opens = matches!(given.action, Action::OpenLong | Action::OpenShort);
            let sym = market.index(&given.symbol);
            let seen = match opens {
                true => &*exposure.get_or_insert_with(|| self.exposure(equity, market)),
                false => &closing,
            };
            let checked = pre_trade(given, state, market.price(sym), seen, market.limits(sym));
            let verdict = match (checked, sym) {
                (Err(reason), _) => Err(reason),
                (Ok(_), None) if opens => Err(format!(
                    "symbol {} is not traded in this run",
                    quoted(&given.symbol)
                )),
                (Ok(approved), sym) => {
                    // Counted for the signals after it (if there are any).
                    if let (Some(a), Some(exposure), Some(_)) =
                        (approved, &mut exposure, signals.peek())
                    {
                        exposure.add(given, a);
                    }
                    let held = self
                        .open
                        .iter()
                        .find(|p| p.pos.symbol == given.symbol && p.pos.tag == given.tag);
                    Ok(match (sym, opens, held) {
                        (Some(sym), true, _) => Some((sym, given.action == Action::OpenLong, None)),
                        (_, false, Some(p)) => {
                            Some((p.sym, p.pos.side == Side::Short, Some(p.pos.size)))
                        }
                        // Nothing open under the tag: nothing to do.
                        _ => None,
                    })
                }
            };
            let decision = match verdict {
                Err(reason) => {
                    self.rejected.push(Rejection {
                        time_ms,
                        signal: signal.into_signal(),
                        reason: reason.clone(),
                        by: RejectedBy::Risk,
                    });
                    Decision::Rejected(reason)
                }
                Ok(order) => Decision::Accepted(order.map(|(sym, buy, max_quantity)| {
                    let order = Order {
                        id: id_of(seq),
                        sym,
                        signal: Arc::new(signal.into_signal()),
                        buy,
                        equity,
                        max_quantity,
                        reference_price: market.price(Some(sym)),
                        max_deviation_pct: market.max_deviation_pct,
                        trigger: None,
                    };
                    self.pending.push(order.clone());
                    order
                })),
            };
            decisions.push(decision);
        }
        decisions
    }

    /// Closes every position at its symbol's last close (plus slippage, with
    /// fees) as fills of `source` at `time_ms`; how many it closed.
    pub fn close_all(&mut self, market: &Market, time_ms: i64, source: FillSource) -> usize {
        let mut closed = 0;
        while let Some(p) = self.open.last() {
            let last = market.price(Some(p.sym));
            if !last.is_finite() {
                break;
            }
            let price = exact(market.fills.market_price(last, p.pos.side == Side::Short));
            let quantity = p.pos.size;
            let fill = Fill {
                symbol: p.pos.symbol.clone(),
                tag: p.pos.tag.clone(),
                action: Action::Close,
                price,
                quantity,
                fee: exact(market.fills.fee(quantity, price)),
                time_ms,
            };
            self.exit_as(self.open.len() - 1, fill, source.clone());
            closed += 1;
        }
        closed
    }

    /// Closes `fill.quantity` of position `i` at `fill.price`, recording the
    /// trade and the fill.
    fn exit_as(&mut self, i: usize, fill: Fill, source: FillSource) {
        let (quantity, price, fee) = (fill.quantity, fill.price, fill.fee);
        let o = &mut self.open[i];
        let p = &mut o.pos;
        let share = (quantity / p.size).min(1.0);
        let entry_fees = o.fees * share;
        let gross = match p.side {
            Side::Long => (price - p.price_entry) * quantity,
            Side::Short => (p.price_entry - price) * quantity,
        };
        self.cash += match p.side {
            Side::Long => quantity * price - fee,
            Side::Short => -(quantity * price) - fee,
        };
        self.fees += fee;
        self.trades.push(Trade {
            symbol: p.symbol.clone(),
            tag: p.tag.clone(),
            side: p.side,
            quantity,
            price_entry: p.price_entry,
            price_exit: price,
            time_entry_ms: p.time_entry_ms,
            time_exit_ms: fill.time_ms,
            pnl: gross - entry_fees - fee,
            fees: entry_fees + fee,
            mae: p.mae * share,
            mfe: o.mfe * share,
            exit_reason: source.exit_reason(),
            stop_loss: o.stop_loss,
            take_profit: o.take_profit,
        });
        if share >= 1.0 - 1e-12 {
            self.open.remove(i);
        } else {
            p.size -= quantity;
            p.mae *= 1.0 - share;
            p.pnl_unrealized = p.unrealized();
            o.fees -= entry_fees;
            o.mfe *= 1.0 - share;
        }
        self.fills.push(Booked {
            fill,
            source,
            stop_loss: None,
            take_profit: None,
            trade: None,
        });
    }
}

#[cfg(test)]
mod tests;
