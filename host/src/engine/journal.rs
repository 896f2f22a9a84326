//! The journal: every ledger write of a run. A bar's writes — the venue's
//! reports on orders, fills (with the trades they close), marks, equity,
//! halts, the bar itself and the run's cursor — go through one [`Journal`],
//! one transaction; so do a close's order intents, committed before any is
//! sent (the write-ahead rule lives here and nowhere else).

use anyhow::anyhow;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rust_decimal::Decimal;

use keel_backtester::kernel::{Booked, Decision, Execution, FillSource, Order, Outcome};
use keel_model::candles::Candle;
use keel_model::{Action, Side, Signal};

use crate::candidates::Actor;
use crate::control::SnapshotTrade;
use crate::ledger::{ClosedTrade, Ledger, LedgerFill, dec, float};
use crate::risk_limits::{RiskConfig, TradingState, halt_reason};
use crate::store::events::{self, Kind};
pub(super) use crate::store::now_ms;
use crate::store::{Cached, audit};
use crate::venues::paper::size_text;

use super::history;
use super::slot::Slot;

/// A stored decimal.
pub(super) fn d(text: &str) -> Decimal {
    text.parse().unwrap_or(Decimal::ZERO)
}

pub(super) fn side_text(side: Side) -> &'static str {
    match side {
        Side::Long => "long",
        Side::Short => "short",
    }
}

/// The account's trading state as stored.
pub fn load_state(conn: &Connection) -> rusqlite::Result<(TradingState, String)> {
    conn.query_row(
        "SELECT state, reason FROM trading_state WHERE id = 1",
        [],
        |r| {
            let state: String = r.get(0)?;
            Ok((
                TradingState::parse(&state).unwrap_or(TradingState::Halted),
                r.get(1)?,
            ))
        },
    )
}

pub(super) fn store_state(
    conn: &Connection,
    state: TradingState,
    reason: &str,
    actor: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE trading_state SET state = ?1, reason = ?2, changed_ms = ?3 WHERE id = 1",
        params![state.as_str(), reason, now_ms()],
    )?;
    let data = serde_json::json!({ "state": state.as_str(), "reason": reason, "actor": actor });
    events::emit(conn, Kind::State, data)?;
    audit(conn, actor, &format!("state {}", state.as_str()), reason)
}

pub(super) fn risk_event(
    conn: &Connection,
    kind: &str,
    book: Option<i64>,
    detail: &str,
    latency_us: Option<i64>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO risk_events (time_ms, kind, book_id, detail, latency_us) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), kind, book, detail, latency_us],
    )?;
    let data = serde_json::json!({
        "kind": kind, "book_id": book, "detail": detail, "latency_us": latency_us,
    });
    events::emit(conn, Kind::Risk, data)
}

/// The ledger's id of a fill a venue reported as trade `trade`.
pub(crate) fn venue_fill_id(trade: &str) -> String {
    format!("vf-{trade}")
}

/// Sets an order's state in the ledger (`new` → `open` → `filled` |
/// `rejected` | `cancelled`), if it is still in `from`.
pub(super) fn order_state(
    conn: &Connection,
    id: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE orders SET state = ?2, reason = COALESCE(?3, reason), updated_ms = ?4
         WHERE client_order_id = ?1 AND state IN (SELECT value FROM json_each(?5))",
        params![
            id,
            to,
            reason,
            now_ms(),
            serde_json::to_string(from).unwrap_or_default()
        ],
    )?;
    if n == 1 {
        let data = serde_json::json!({ "id": id, "state": to, "reason": reason });
        events::emit(conn, Kind::Order, data)?;
    }
    Ok(n == 1)
}

/// One transaction of ledger writes.
pub(super) struct Journal<'c> {
    tx: Transaction<'c>,
    run_id: i64,
}

impl<'c> Journal<'c> {
    pub fn begin(conn: &'c mut Connection, run_id: i64) -> rusqlite::Result<Journal<'c>> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(Journal { tx, run_id })
    }

    pub fn conn(&self) -> &Connection {
        &self.tx
    }

    pub fn commit(self) -> rusqlite::Result<()> {
        self.tx.commit()
    }

    /// The venue's report on one of `book_id`'s orders.
    pub fn settled(&self, book_id: i64, report: &Execution) -> rusqlite::Result<()> {
        let id = report.id.0.as_str();
        match &report.outcome {
            Outcome::Filled { .. } => {
                order_state(&self.tx, id, &["new", "open"], "filled", None)?;
            }
            Outcome::Rejected(why) => {
                risk_event(
                    &self.tx,
                    "order-rejected",
                    Some(book_id),
                    &format!("{id}: {why}"),
                    None,
                )?;
                order_state(&self.tx, id, &["new", "open"], "rejected", Some(why))?;
            }
            Outcome::Cancelled(why) => {
                order_state(&self.tx, id, &["new", "open"], "cancelled", Some(why))?;
            }
            Outcome::Part { .. } => {
                order_state(&self.tx, id, &["new"], "open", None)?;
            }
            Outcome::Ended(why) => self.ended(id, why, false)?,
        }
        Ok(())
    }

    /// Books the fills the kernel's book took into the slot's ledger and
    /// the ledger's tables (a fill id already booked is skipped). `close_ms`
    /// names fills not made by an order; `booked_ms` is the first close a
    /// strategy is shown after them (see `history`). A fill the ledger
    /// refuses (it never should: the book refused the same) is a risk event.
    pub fn fills(
        &self,
        slot: &mut Slot,
        booked: &[Booked],
        close_ms: i64,
        booked_ms: i64,
    ) -> anyhow::Result<()> {
        for b in booked {
            let f = &b.fill;
            let (fill_id, order) = match &b.source {
                // A venue's trade is booked under the venue's id for it.
                FillSource::Order(id) => match &b.trade {
                    Some(trade) => (venue_fill_id(trade), Some(id.0.as_str())),
                    None => (format!("pf-{id}"), Some(id.0.as_str())),
                },
                other => (
                    format!(
                        "{}-{}-{}-{}-{close_ms}",
                        other.as_str(),
                        slot.id,
                        f.symbol,
                        f.tag
                    ),
                    None,
                ),
            };
            let fill = LedgerFill {
                symbol: f.symbol.clone(),
                tag: f.tag.clone(),
                action: f.action,
                price: dec(f.price)?,
                quantity: dec(f.quantity)?,
                fee: dec(f.fee)?,
                time_ms: f.time_ms,
            };
            let source = b.source.as_str();
            if let Err(e) = self.book_fill(slot, &fill_id, order, &fill, source, booked_ms) {
                let why = format!("book {}: fill {fill_id} not booked: {e:#}", slot.slot);
                tracing::error!("{why}");
                risk_event(&self.tx, "ledger", Some(slot.id), &why, None)?;
            }
        }
        Ok(())
    }

    fn book_fill(
        &self,
        slot: &mut Slot,
        fill_id: &str,
        client_order_id: Option<&str>,
        fill: &LedgerFill,
        source: &str,
        booked_ms: i64,
    ) -> anyhow::Result<()> {
        let seen: Option<i64> = self
            .tx
            .query_row("SELECT 1 FROM fills WHERE fill_id = ?1", [fill_id], |r| {
                r.get(0)
            })
            .optional()?;
        if seen.is_some() {
            return Ok(());
        }
        let trade = slot.ledger.apply(fill).map_err(|e| anyhow!("{e}"))?;
        tracing::info!(
            book = %slot.slot, fill_id, symbol = %fill.symbol, tag = %fill.tag, action = fill.action.as_str(),
            price = %fill.price, quantity = %fill.quantity, fee = %fill.fee, source, "fill booked"
        );
        self.tx.run(
            "INSERT INTO fills (fill_id, client_order_id, book_id, symbol, tag, action, price, quantity, fee, time_ms, source,
                 booked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                fill_id, client_order_id, slot.id, fill.symbol, fill.tag, fill.action.as_str(), fill.price.to_string(),
                fill.quantity.to_string(), fill.fee.to_string(), fill.time_ms, source, booked_ms
            ],
        )?;
        let data = serde_json::json!({
            "book": slot.slot, "book_id": slot.id, "fill_id": fill_id, "order": client_order_id,
            "symbol": fill.symbol, "tag": fill.tag, "action": fill.action.as_str(),
            "price": fill.price.to_string(), "quantity": fill.quantity.to_string(),
            "fee": fill.fee.to_string(), "time_ms": fill.time_ms, "source": source,
        });
        events::emit(&self.tx, Kind::Fill, data)?;
        if let Some(t) = trade {
            record_trade(&self.tx, slot.id, fill_id, &t, source)?;
        }
        Ok(())
    }

    /// Marks the slot's ledger at the step's bars, stores its equity, rolls
    /// its day and peak, and stores its totals and positions. Returns why
    /// the account must halt, if it must (never for a shadow: its losses
    /// fail its paper gate, they never halt the account).
    pub fn close(
        &self,
        slot: &mut Slot,
        bars: &[(&str, Candle)],
        close_ms: i64,
        risk: &RiskConfig,
    ) -> anyhow::Result<Option<String>> {
        let before = slot.ledger.equity();
        for (symbol, candle) in bars {
            slot.ledger.mark(
                symbol,
                dec(candle.low)?,
                dec(candle.high)?,
                dec(candle.close)?,
            );
        }
        let equity = slot.ledger.equity();
        let day = close_ms.div_euclid(86_400_000);
        if day != slot.day {
            slot.day = day;
            slot.day_start = before;
        }
        slot.peak = slot.peak.max(equity);
        self.tx.run(
            "INSERT OR REPLACE INTO equity_snapshots (book_id, time_ms, cash, equity) VALUES (?1, ?2, ?3, ?4)",
            params![slot.id, close_ms, slot.ledger.cash.to_string(), equity.to_string()],
        )?;
        let mut halt = None;
        if let Err(e) = slot.ledger.check() {
            halt = Some(format!("book {}: ledger identity broken: {e}", slot.slot));
        }
        if halt.is_none()
            && slot.candidate.is_none()
            && let Some(why) =
                halt_reason(float(equity), float(slot.peak), float(slot.day_start), risk)
        {
            halt = Some(format!("book {}: {why}", slot.slot));
        }
        self.persist(slot)?;
        Ok(halt)
    }

    /// Halts the account for `why`, found at book `book_id`.
    pub fn halt(&self, book_id: i64, why: &str) -> rusqlite::Result<()> {
        store_state(
            &self.tx,
            TradingState::Halted,
            why,
            Actor::RiskManager.as_str(),
        )?;
        self.tx.run(
            "INSERT INTO risk_events (time_ms, kind, book_id, detail) VALUES (?1, 'halt', ?2, ?3)",
            params![now_ms(), book_id, why],
        )?;
        let data = serde_json::json!({ "book_id": book_id, "reason": why });
        events::emit(&self.tx, Kind::Halt, data)
    }

    /// The step's bars are stored and the run's cursor moves past them;
    /// `signalled_ms` is the last close whose orders were all sent (it rides
    /// along here, so a close without orders costs no commit of its own).
    pub fn booked(
        &self,
        bars: &[(&str, Candle)],
        close_ms: i64,
        signalled_ms: Option<i64>,
    ) -> rusqlite::Result<()> {
        for (symbol, candle) in bars {
            history::store_bar(&self.tx, self.run_id, symbol, candle, close_ms)?;
        }
        let bars: Vec<_> = bars
            .iter()
            .map(|(symbol, c)| {
                serde_json::json!({
                    "symbol": symbol, "time_ms": c.time_ms, "open": c.open, "high": c.high,
                    "low": c.low, "close": c.close, "volume": c.volume,
                })
            })
            .collect();
        let data = serde_json::json!({ "run_id": self.run_id, "close_ms": close_ms, "bars": bars });
        events::emit(&self.tx, Kind::Bar, data)?;
        self.tx
            .prepare_cached("UPDATE runs SET cursor_ms = ?2, signalled_ms = ?3 WHERE id = ?1")?
            .execute(params![self.run_id, close_ms, signalled_ms])?;
        Ok(())
    }

    /// A slot's totals and positions (with the kernel book's exits).
    pub fn persist(&self, slot: &Slot) -> rusqlite::Result<()> {
        let l = &slot.ledger;
        self.tx.run(
            "UPDATE books SET cash = ?2, realized = ?3, fees = ?4, peak_equity = ?5, day_ms = ?6, day_start_equity = ?7 WHERE id = ?1",
            params![
                slot.id, l.cash.to_string(), l.realized.to_string(), l.fees.to_string(), slot.peak.to_string(), slot.day,
                slot.day_start.to_string()
            ],
        )?;
        self.tx
            .run("DELETE FROM positions WHERE book_id = ?1", [slot.id])?;
        for h in &l.holdings {
            let exits = slot
                .book
                .open
                .iter()
                .find(|o| o.pos.symbol == h.symbol && o.pos.tag == h.tag)
                .map_or((None, None), |o| (o.stop_loss, o.take_profit));
            self.tx.run(
                "INSERT INTO positions (book_id, symbol, tag, side, quantity, cost, fees, opened_ms, mark, mae, stop_loss, take_profit)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    slot.id, h.symbol, h.tag, side_text(h.side), h.quantity.to_string(), h.cost.to_string(),
                    h.fees.to_string(), h.opened_ms, h.mark.to_string(), h.mae.to_string(), exits.0, exits.1
                ],
            )?;
        }
        Ok(())
    }

    /// A close's signals with their decisions, and the intents of the
    /// accepted ones as `new` orders: `refused` by the sandbox first, then
    /// `signals` with their kernel `decisions`, numbered in that order.
    /// Returns the orders to send once this is committed.
    pub fn intents(
        &self,
        slot: &mut Slot,
        close_ms: i64,
        refused: &[(Signal, String)],
        signals: &[Signal],
        decisions: Vec<Decision>,
    ) -> rusqlite::Result<Vec<Order>> {
        let decided = refused
            .iter()
            .map(|(s, why)| (s, Err(format!("sandbox: {why}"))))
            .chain(signals.iter().zip(decisions).map(|(s, d)| match d {
                Decision::Accepted(order) => (s, Ok(order)),
                Decision::Rejected(why) => (s, Err(why)),
            }));
        let mut orders = Vec::new();
        for (seq, (signal, decision)) in decided.enumerate() {
            let (text, reason) = match &decision {
                Ok(_) => ("accepted", None),
                Err(r) => ("rejected", Some(r.as_str())),
            };
            slot.signals += 1;
            if decision.is_err() {
                slot.rejected += 1;
            }
            tracing::info!(
                book = %slot.slot, time_ms = close_ms, seq, symbol = %signal.symbol, action = signal.action.as_str(),
                decision = text, reason = reason.unwrap_or(""), "signal"
            );
            let written = self.tx.run(
                "INSERT OR IGNORE INTO signals (book_id, time_ms, seq, artifact_hash, symbol, action, size, tag,
                     stop_loss, take_profit, reason, confidence, decision, reject_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    slot.id, close_ms, seq as i64, slot.hash.to_hex(), signal.symbol, signal.action.as_str(),
                    size_text(signal.size), signal.tag, signal.stop_loss, signal.take_profit, signal.reason,
                    signal.confidence, text, reason
                ],
            )?;
            if written == 1 {
                let data = serde_json::json!({
                    "book": slot.slot, "book_id": slot.id, "time_ms": close_ms, "seq": seq,
                    "symbol": signal.symbol, "action": signal.action.as_str(),
                    "size": size_text(signal.size), "tag": signal.tag, "reason": signal.reason,
                    "decision": text, "reject_reason": reason,
                });
                events::emit(&self.tx, Kind::Signal, data)?;
            }
            let Ok(Some(order)) = decision else { continue };
            let written = self.tx.run(
                "INSERT OR IGNORE INTO orders (client_order_id, book_id, signal_time_ms, signal_seq, symbol, tag, action,
                     size, equity, max_quantity, reference_price, max_deviation, stop_loss, take_profit, state,
                     created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'new', ?15, ?15)",
                params![
                    order.id.0, slot.id, close_ms, seq as i64, signal.symbol, signal.tag, signal.action.as_str(),
                    size_text(signal.size), order.equity, order.max_quantity.map(|q| q.to_string()),
                    order.reference_price, order.max_deviation_pct.unwrap_or(f64::MAX), signal.stop_loss,
                    signal.take_profit, now_ms()
                ],
            )?;
            if written == 1 {
                self.new_order(slot.id, &order)?;
            }
            orders.push(order);
        }
        slot.book.rejected.clear();
        Ok(orders)
    }
}

impl Journal<'_> {
    /// The event of an order written as `new`.
    fn new_order(&self, book_id: i64, order: &Order) -> rusqlite::Result<()> {
        let signal = &order.signal;
        let data = serde_json::json!({
            "id": order.id.0, "book_id": book_id, "state": "new", "symbol": signal.symbol,
            "action": signal.action.as_str(), "size": size_text(signal.size), "tag": signal.tag,
            "trigger": order.trigger,
        });
        events::emit(&self.tx, Kind::Order, data)
    }

    /// An order the engine makes itself (a live book's stop, target or
    /// kill close), committed as `new` before it is sent, like an intent.
    pub fn own_order(
        &self,
        book_id: i64,
        close_ms: i64,
        seq: i64,
        order: &Order,
    ) -> rusqlite::Result<()> {
        let signal = &order.signal;
        let written = self.tx.run(
            "INSERT OR IGNORE INTO orders (client_order_id, book_id, signal_time_ms, signal_seq, symbol, tag, action,
                 size, equity, max_quantity, reference_price, max_deviation, stop_loss, take_profit, state,
                 created_ms, updated_ms, trigger_price)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, NULL, NULL, 'new', ?13, ?13, ?14)",
            params![
                order.id.0, book_id, close_ms, seq, signal.symbol, signal.tag, signal.action.as_str(),
                size_text(signal.size), order.equity, order.max_quantity.map(|q| q.to_string()),
                order.reference_price, order.max_deviation_pct.unwrap_or(f64::MAX), now_ms(), order.trigger
            ],
        )?;
        if written == 1 {
            self.new_order(book_id, order)?;
        }
        Ok(())
    }

    /// A venue is done with an order that traded in parts: filled if any
    /// part of it was booked (or `traded` in the batch being booked), else
    /// cancelled; `why` is the venue's word for it.
    pub fn ended(&self, id: &str, why: &str, traded: bool) -> rusqlite::Result<()> {
        let booked: bool = self.tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM fills WHERE client_order_id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        let to = if traded || booked {
            "filled"
        } else {
            "cancelled"
        };
        order_state(&self.tx, id, &["new", "open"], to, Some(why))?;
        Ok(())
    }

    /// Whether the venue's trade `trade` is booked already.
    pub fn has_trade(&self, trade: &str) -> rusqlite::Result<bool> {
        self.tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM fills WHERE fill_id = ?1)",
            [venue_fill_id(trade)],
            |r| r.get(0),
        )
    }
}

fn record_trade(
    tx: &Transaction<'_>,
    book_id: i64,
    fill_id: &str,
    t: &ClosedTrade,
    reason: &str,
) -> rusqlite::Result<()> {
    tx.run(
        "INSERT INTO trades (book_id, fill_id, symbol, tag, side, quantity, price_entry, price_exit, opened_ms, closed_ms,
             pnl_gross, fees, mae, exit_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            book_id, fill_id, t.symbol, t.tag, side_text(t.side), t.quantity.to_string(), t.price_entry.to_string(),
            t.price_exit.to_string(), t.opened_ms, t.closed_ms, t.pnl_gross.to_string(), t.fees.to_string(),
            t.mae.to_string(), reason
        ],
    )?;
    Ok(())
}

/// The last `limit` closed trades of a run, newest first.
pub fn recent_trades(
    conn: &Connection,
    run_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<SnapshotTrade>> {
    let mut stmt = conn.prepare(
        "SELECT b.slot, t.symbol, t.tag, t.side, t.quantity, t.price_entry, t.price_exit, t.opened_ms, t.closed_ms,
                t.pnl_gross, t.fees, t.exit_reason
         FROM trades t JOIN books b ON b.id = t.book_id WHERE b.run_id = ?1 ORDER BY t.id DESC LIMIT ?2",
    )?;
    stmt.query_map(params![run_id, limit as i64], |r| {
        let pnl = d(&r.get::<_, String>(9)?) - d(&r.get::<_, String>(10)?);
        Ok(SnapshotTrade {
            slot: r.get(0)?,
            symbol: r.get(1)?,
            tag: r.get(2)?,
            side: r.get(3)?,
            quantity: float(d(&r.get::<_, String>(4)?)),
            entry: float(d(&r.get::<_, String>(5)?)),
            exit: float(d(&r.get::<_, String>(6)?)),
            opened_ms: r.get(7)?,
            closed_ms: r.get(8)?,
            pnl: float(pnl),
            exit_reason: r.get(11)?,
        })
    })?
    .collect()
}

/// Checks a database's ledger: every book's stored cash, positions and
/// totals add up (`Ledger::check`), and its fills replay to the same book.
pub fn audit_ledger(conn: &Connection) -> anyhow::Result<usize> {
    let books: Vec<(i64, String, String, String, String)> = {
        let mut stmt = conn.prepare("SELECT id, start_cash, cash, realized, fees FROM books")?;
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    for (id, start, cash, realized, fees) in &books {
        let mut replay = Ledger::new(d(start));
        let mut stmt = conn.prepare(history::FILLS_OF_BOOK)?;
        let fills = stmt.query_map([id], history::stored_fill)?;
        for fill in fills {
            replay
                .apply(&fill?.ledger)
                .map_err(|e| anyhow!("book {id}: a stored fill does not apply: {e}"))?;
        }
        if replay.cash != d(cash) || replay.realized != d(realized) || replay.fees != d(fees) {
            anyhow::bail!(
                "book {id}: stored cash {cash}, realized {realized}, fees {fees}; its fills give {}, {}, {}",
                replay.cash,
                replay.realized,
                replay.fees
            );
        }
        let held: i64 = conn.query_row(
            "SELECT COUNT(*) FROM positions WHERE book_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if held as usize != replay.holdings.len() {
            anyhow::bail!(
                "book {id}: {held} positions stored; its fills leave {}",
                replay.holdings.len()
            );
        }
        replay.check().map_err(|e| anyhow!("book {id}: {e}"))?;
    }
    Ok(books.len())
}

/// Whether an order of `action` on a position of `side` buys.
pub(super) fn buys(action: Action, held: Option<Side>) -> bool {
    match action {
        Action::OpenLong => true,
        Action::OpenShort => false,
        Action::Close | Action::Reduce => held == Some(Side::Short),
    }
}
