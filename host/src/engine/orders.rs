//! Orders in flight between the journal and the venue: rebuilt from the
//! ledger at start-up, reconciled (an intent committed but never
//! acknowledged is sent now, or cancelled if trading halted since), and
//! sent — never before their intent is committed, never after a kill.

use keel_backtester::kernel::{ClientOrderId, Order, TradingState, Venue};
use keel_model::{Action, Signal};

use super::journal::{self, order_state};
use super::slot::Slot;
use super::{Engine, failpoint};
use crate::venues::paper::{action_parse, size_parse};

impl Engine<'_> {
    /// A book's orders committed and not yet settled, as the kernel keeps them.
    pub(super) fn orders_in_flight(&self, slot: &Slot) -> anyhow::Result<Vec<Order>> {
        let book_id = slot.id;
        let mut stmt = self.conn.prepare(
            "SELECT client_order_id, symbol, tag, action, size, equity, max_quantity, reference_price,
                    max_deviation, stop_loss, take_profit, trigger_price
             FROM orders WHERE book_id = ?1 AND state IN ('new', 'open') ORDER BY created_ms, rowid",
        )?;
        let rows = stmt.query_map([book_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, f64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, f64>(7)?,
                r.get::<_, f64>(8)?,
                r.get::<_, Option<f64>>(9)?,
                r.get::<_, Option<f64>>(10)?,
                r.get::<_, Option<f64>>(11)?,
            ))
        })?;
        let mut orders = Vec::new();
        for row in rows {
            let (
                id,
                symbol,
                tag,
                action,
                size,
                equity,
                max_q,
                reference,
                deviation,
                stop,
                target,
                trigger,
            ) = row?;
            let Some(sym) = self.market.index(&symbol) else {
                continue;
            };
            let action = action_parse(&action).unwrap_or(keel_model::Action::Close);
            let held = (slot.book.open.iter())
                .find(|o| o.pos.symbol == symbol && o.pos.tag == tag)
                .map(|o| o.pos.side);
            // What parts of it were booked already (a live venue's trades)
            // need not be closed again.
            let done: f64 = self.conn.query_row(
                "SELECT COALESCE(SUM(CAST(quantity AS REAL)), 0) FROM fills WHERE client_order_id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            let max_quantity = max_q
                .and_then(|q| q.parse::<f64>().ok())
                .map(|q| keel_backtester::kernel::exact((q - done).max(0.0)));
            orders.push(Order {
                id: ClientOrderId(id),
                sym,
                buy: journal::buys(action, held),
                signal: std::sync::Arc::new(Signal {
                    symbol,
                    action,
                    size: size_parse(&size).unwrap_or(keel_model::Size::Base(0.0)),
                    tag,
                    stop_loss: stop,
                    take_profit: target,
                    reason: String::new(),
                    confidence: 0.0,
                }),
                equity,
                max_quantity,
                reference_price: reference,
                max_deviation_pct: Some(deviation),
                trigger,
            });
        }
        Ok(orders)
    }

    /// Intents committed but never acknowledged: sent now (the venue
    /// ignores ones it already has), or cancelled if trading halted since.
    pub(super) fn reconcile(&mut self) -> anyhow::Result<()> {
        let mut unsent = Vec::new();
        for slot in &self.slots {
            let ids: Vec<String> = {
                let mut stmt = self.conn.prepare(
                    "SELECT client_order_id FROM orders WHERE book_id = ?1 AND state = 'new'
                     ORDER BY created_ms, rowid",
                )?;
                stmt.query_map([slot.id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for id in ids {
                if let Some(order) = slot.book.pending.iter().find(|o| o.id.0 == id) {
                    unsent.push(order.clone());
                }
            }
        }
        for order in unsent {
            let known = self.venue.query(&order.id)?.is_some();
            tracing::info!(order = %order.id, known, "reconciling an unacknowledged order");
            self.send(order)?;
        }
        Ok(())
    }

    /// Sends a committed order to the venue and marks it open, unless a
    /// kill arrived, or trading halted and it would open (a close or a
    /// reduce still goes: a halt must not keep a position from closing),
    /// in which case it is cancelled unsent.
    pub(super) fn send(&mut self, order: Order) -> anyhow::Result<()> {
        let killed = self.killed || self.kill_requested();
        let opens = matches!(order.signal.action, Action::OpenLong | Action::OpenShort);
        if killed || (self.state == TradingState::Halted && opens) {
            order_state(
                self.conn,
                &order.id.0,
                &["new"],
                "cancelled",
                Some("trading halted before it was sent"),
            )?;
            for slot in &mut self.slots {
                slot.book.pending.retain(|o| o.id != order.id);
            }
            return Ok(());
        }
        self.send_now(order)
    }

    /// Sends a committed order to its book's venue — the live one for a
    /// main book of a live run, else paper — and marks it open.
    pub(super) fn send_now(&mut self, order: Order) -> anyhow::Result<()> {
        let id = order.id.0.clone();
        let shadow = self
            .slots
            .iter()
            .find(|s| s.book.pending.iter().any(|o| o.id == order.id))
            .is_some_and(|s| s.candidate.is_some());
        if self.live.is_some() && !shadow {
            self.cancel_resting_for(&order);
        }
        match &mut self.live {
            Some(live) if !shadow => live.submit(order)?,
            _ => self.venue.submit(order)?,
        }
        failpoint("after-send");
        order_state(self.conn, &id, &["new"], "open", None)?;
        Ok(())
    }
}
