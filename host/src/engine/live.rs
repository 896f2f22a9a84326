//! A live run's venue around the kernel: the main books' orders go to it
//! (shadows stay on paper), its trades are booked as they come, each once;
//! stops and targets become orders at the venue; the venue and the ledger
//! are reconciled at start and after any gap, and a mismatch nothing
//! explains makes the account reduce-only with a risk event naming it —
//! the ledger is never "fixed" to agree.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use rust_decimal::Decimal;

use keel_backtester::kernel::{ClientOrderId, Execution, Market, Order, Outcome, TradingState};
use keel_model::candles::Candle;
use keel_model::{Action, Side, Signal, Size};

use super::Engine;
use super::journal::{Journal, d, now_ms, risk_event, store_state, venue_fill_id};
use super::slot::Slot;
use crate::candidates::Actor;

/// How long a kill waits for the venue to fill its closing orders.
const KILL_FILL_WAIT: Duration = Duration::from_secs(5);

/// How often a live run that is not reconciled tries again.
const RECONCILE_RETRY_MS: i64 = 30_000;

/// Books a live book's reports: each trade once (one booked before a
/// restart is skipped), then the orders the venue ended.
pub(super) fn settle(
    journal: &Journal<'_>,
    slot: &mut Slot,
    reports: &[Execution],
) -> anyhow::Result<()> {
    // Orders that traded in this batch: their fills are written after it.
    let mut traded = HashSet::new();
    for report in reports {
        if !slot.book.pending.iter().any(|o| o.id == report.id) {
            continue;
        }
        match &report.outcome {
            Outcome::Part { trade, .. } => {
                traded.insert(report.id.clone());
                if journal.has_trade(trade)? {
                    continue;
                }
            }
            Outcome::Ended(why) if traded.contains(&report.id) => {
                journal.ended(&report.id.0, why, true)?;
                slot.book.settle(report.clone());
                continue;
            }
            _ => {}
        }
        journal.settled(slot.id, report)?;
        slot.book.settle(report.clone());
    }
    Ok(())
}

/// Whether `order` is for the position `p` (its symbol and tag).
fn same_position(order: &Order, p: &keel_model::Position) -> bool {
    order.signal.symbol == p.symbol && order.signal.tag == p.tag
}

/// A market order closing position `i` of `slot`, as the engine makes it.
fn close_order(slot: &Slot, i: usize, id: String, market: &Market, why: &str) -> Order {
    let p = &slot.book.open[i];
    Order {
        id: ClientOrderId(id),
        sym: p.sym,
        signal: Arc::new(Signal {
            symbol: p.pos.symbol.clone(),
            action: Action::Close,
            size: Size::Base(p.pos.size),
            tag: p.pos.tag.clone(),
            stop_loss: None,
            take_profit: None,
            reason: why.to_owned(),
            confidence: 1.0,
        }),
        buy: p.pos.side == Side::Short,
        equity: slot.book.equity(),
        max_quantity: Some(p.pos.size),
        reference_price: market.last_close[p.sym],
        max_deviation_pct: None,
        trigger: None,
    }
}

impl Engine<'_> {
    /// Cancels a stop resting at the venue (once: its end is reported
    /// with the next look).
    pub(super) fn cancel_resting(&mut self, id: &ClientOrderId) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        tracing::info!(target: "keel::venue", order = %id, "cancelling a resting stop");
        let _ = keel_backtester::kernel::Venue::cancel(live.as_mut(), id);
        self.cancelling.insert(id.clone());
    }

    /// Before a market order closes or reduces a live position, the stop
    /// resting for it is cancelled (it would sell what the order sells).
    pub(super) fn cancel_resting_for(&mut self, order: &Order) {
        if order.trigger.is_some() || !matches!(order.signal.action, Action::Close | Action::Reduce)
        {
            return;
        }
        let resting: Vec<ClientOrderId> = self
            .slots
            .iter()
            .filter(|s| s.candidate.is_none())
            .flat_map(|s| s.book.pending.iter())
            .filter(|o| {
                o.trigger.is_some()
                    && o.signal.symbol == order.signal.symbol
                    && o.signal.tag == order.signal.tag
                    && !self.cancelling.contains(&o.id)
            })
            .map(|o| o.id.clone())
            .collect();
        for id in resting {
            self.cancel_resting(&id);
        }
    }

    /// Refreshes the dead man's switch, or keeps it off while stops rest.
    fn keep_switch(&mut self) {
        let protecting = self
            .slots
            .iter()
            .filter(|s| s.candidate.is_none())
            .flat_map(|s| s.book.pending.iter())
            .any(|o| o.trigger.is_some() && !self.cancelling.contains(&o.id));
        if let Some(live) = self.live.as_mut() {
            live.keep_alive(protecting);
        }
    }

    /// The ids of the live books' orders in flight.
    fn live_pending(&self) -> Vec<ClientOrderId> {
        self.slots
            .iter()
            .filter(|s| s.candidate.is_none())
            .flat_map(|s| s.book.pending.iter().map(|o| o.id.clone()))
            .collect()
    }

    /// The live venue's reports on the orders in flight (none in a paper
    /// run); refreshes the dead man's switch. A venue that cannot be read
    /// is a gap: trading is reduce-only until it is reconciled again.
    pub(super) fn live_reports(&mut self) -> Vec<Execution> {
        let pending = self.live_pending();
        self.keep_switch();
        let Some(live) = self.live.as_mut() else {
            return Vec::new();
        };
        match live.reports(&pending) {
            Ok(reports) => reports,
            Err(e) => {
                tracing::warn!(target: "keel::venue", "{e}: reduce-only until the venue and the ledger are reconciled");
                live.health.problem = Some(e.to_string());
                live.health.reconciled = false;
                self.reconciled = false;
                Vec::new()
            }
        }
    }

    /// Books the live venue's reports now, between closes (a kill).
    fn settle_live_now(&mut self) -> anyhow::Result<()> {
        let reports = self.live_reports();
        let time_ms = self.cursor_ms.unwrap_or(0);
        let journal = Journal::begin(self.conn, self.run_id)?;
        for slot in self.slots.iter_mut().filter(|s| s.candidate.is_none()) {
            settle(&journal, slot, &reports)?;
            let booked = std::mem::take(&mut slot.book.fills);
            for b in &booked {
                if let Err(e) = slot.instance.on_fill(&b.fill) {
                    tracing::warn!(target: "keel::venue", book = %slot.slot, "{e}");
                }
            }
            slot.book.trades.clear();
            slot.book.rejected.clear();
            journal.fills(slot, &booked, time_ms, time_ms + 1)?;
            journal.persist(slot)?;
        }
        journal.commit()?;
        Ok(())
    }

    /// After a close is booked: a live run not yet reconciled tries again
    /// (at most every 30 s), and every live position whose stop or target
    /// is inside the close's bars is closed at the venue by a market order
    /// — committed, then sent, like any intent.
    pub(super) fn live_exits(
        &mut self,
        close_ms: i64,
        bars: &[(usize, Candle)],
    ) -> anyhow::Result<()> {
        if self.live.is_none() {
            return Ok(());
        }
        if !self.reconciled
            && self
                .reconcile_tried_ms
                .is_none_or(|at| now_ms() - at >= RECONCILE_RETRY_MS)
        {
            self.reconcile_live()?;
        }
        if self.killed {
            return Ok(());
        }
        let (run, fills) = (self.run_id, self.market.fills);
        let mut orders = Vec::new();
        let mut cancels = Vec::new();
        let journal = Journal::begin(self.conn, self.run_id)?;
        for slot in self.slots.iter_mut().filter(|s| s.candidate.is_none()) {
            // Each position with a stop-loss has one resting at the venue,
            // for its whole size at its price; any other is cancelled.
            let mut kept: HashSet<ClientOrderId> = HashSet::new();
            for i in 0..slot.book.open.len() {
                let p = &slot.book.open[i];
                let wanted = p.stop_loss.filter(|s| s.is_finite() && *s > 0.0);
                let fits = slot.book.pending.iter().find(|o| {
                    o.trigger.is_some()
                        && o.trigger == wanted
                        && o.max_quantity == Some(p.pos.size)
                        && same_position(o, &p.pos)
                        && !self.cancelling.contains(&o.id)
                });
                match (fits, wanted) {
                    (Some(o), _) => {
                        kept.insert(o.id.clone());
                    }
                    (None, Some(stop)) => {
                        let id = format!("k{run}-{}-{close_ms}-s{i}", slot.id);
                        let mut order = close_order(
                            slot,
                            i,
                            id,
                            &self.market,
                            "stop-loss resting at the venue",
                        );
                        order.trigger = Some(stop);
                        journal.own_order(slot.id, close_ms, 3_000 + i as i64, &order)?;
                        kept.insert(order.id.clone());
                        slot.book.pending.push(order.clone());
                        orders.push(order);
                    }
                    (None, None) => {}
                }
            }
            for o in slot.book.pending.iter().filter(|o| o.trigger.is_some()) {
                if !kept.contains(&o.id) && !self.cancelling.contains(&o.id) {
                    cancels.push(o.id.clone());
                }
            }
            let mut due: Vec<(usize, keel_backtester::kernel::ExitReason)> = Vec::new();
            for (sym, candle) in bars {
                for (i, why) in slot.book.exits_due(&fills, (*sym as u32, *candle)) {
                    if !due.iter().any(|(j, _)| *j == i) {
                        due.push((i, why));
                    }
                }
            }
            for (n, (i, why)) in due.into_iter().enumerate() {
                let p = &slot.book.open[i].pos;
                // A stop resting at the venue is the venue's to trigger, at
                // its price: no second order races it.
                let resting =
                    slot.book.pending.iter().any(|o| {
                        o.trigger.is_some() && kept.contains(&o.id) && same_position(o, p)
                    });
                if why == keel_backtester::kernel::ExitReason::StopLoss && resting {
                    continue;
                }
                let closing = slot.book.pending.iter().any(|o| {
                    o.trigger.is_none() && same_position(o, p) && o.signal.action == Action::Close
                });
                if closing {
                    continue;
                }
                let id = format!("k{run}-{}-{close_ms}-x{n}", slot.id);
                let why = format!("{} inside the bar", why.as_str());
                let order = close_order(slot, i, id, &self.market, &why);
                tracing::info!(target: "keel::venue", book = %slot.slot, order = %order.id, "{why}: closing at the venue");
                journal.own_order(slot.id, close_ms, 1_000 + n as i64, &order)?;
                slot.book.pending.push(order.clone());
                orders.push(order);
            }
        }
        journal.commit()?;
        // The switch goes off before a stop is placed: a crash in between
        // leaves no switch to cancel it.
        if orders.iter().any(|o| o.trigger.is_some())
            && let Some(live) = self.live.as_mut()
        {
            live.keep_alive(true);
        }
        for id in cancels {
            self.cancel_resting(&id);
        }
        let placed_stop = orders.iter().any(|o| o.trigger.is_some());
        for order in orders {
            self.send_now(order)?;
        }
        if placed_stop {
            super::failpoint("after-stop");
        }
        Ok(())
    }

    /// Compares the venue with the ledger: orders open at the venue the
    /// ledger is not waiting for, trades of our orders it has not booked
    /// (of orders it is not waiting for), and — when nothing is in flight —
    /// the balances against what the account held when the run first
    /// reconciled plus every fill booked since. Agreement lifts the
    /// reduce-only start; a mismatch is a risk event and makes the account
    /// reduce-only until the operator resumes it.
    pub(super) fn reconcile_live(&mut self) -> anyhow::Result<()> {
        self.reconcile_tried_ms = Some(now_ms());
        let pending = self.live_pending();
        let in_flight: HashSet<&str> = pending.iter().map(|id| id.0.as_str()).collect();
        // From the last trade booked (every one before it was, or a
        // reconciliation then would have said so), or the oldest order
        // still in flight if older, or the run's start: a minute earlier,
        // as clocks differ.
        let (started, last_booked, oldest_open): (i64, Option<i64>, Option<i64>) =
            self.conn.query_row(
                "SELECT r.started_ms,
                    (SELECT MAX(f.time_ms) FROM fills f JOIN books b ON b.id = f.book_id
                     WHERE b.run_id = r.id AND f.fill_id LIKE 'vf-%'),
                    (SELECT MIN(created_ms) FROM venue_orders WHERE state NOT IN ('ended', 'refused'))
                 FROM runs r WHERE r.id = ?1",
                [self.run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let since = last_booked
            .unwrap_or(started)
            .min(oldest_open.unwrap_or(i64::MAX))
            .max(started)
            - 60_000;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let read = live
            .settle_unknowns(&pending)
            .and_then(|()| live.held(since))
            .and_then(|held| Ok((held.clone(), live.trades_since(since)?)))
            .and_then(|(held, trades)| Ok((held, trades, live.balance()?)));
        let (held, trades, balances) = match read {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(target: "keel::venue", "reconciliation: {e}");
                live.health.problem = Some(format!("reconciliation: {e}"));
                self.reconciled = false;
                return Ok(());
            }
        };
        let pairs = live.pairs().clone();
        let mut problems = Vec::new();
        let mut open_ids: Vec<&String> = held
            .iter()
            .filter(|(id, h)| {
                ["open", "pending"].contains(&h.status.as_str()) && !in_flight.contains(id.as_str())
            })
            .map(|(id, _)| id)
            .collect();
        open_ids.sort();
        for id in open_ids {
            problems.push(format!(
                "order {id} ({}) is open at Kraken but the ledger is not waiting for it",
                held[id].txid
            ));
        }
        let by_txid: HashMap<&str, &str> = held
            .iter()
            .map(|(id, h)| (h.txid.as_str(), id.as_str()))
            .collect();
        for t in &trades {
            let Some(id) = by_txid.get(t.txid.as_str()) else {
                continue;
            };
            if in_flight.contains(id) {
                continue;
            }
            let booked: bool = self.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM fills WHERE fill_id = ?1)",
                [venue_fill_id(&t.trade_id)],
                |r| r.get(0),
            )?;
            if !booked {
                problems.push(format!(
                    "trade {} of order {id} ({} at {}) is not in the ledger",
                    t.trade_id, t.volume, t.price
                ));
            }
        }
        // Balances are compared once nothing in flight can have traded
        // unbooked (a stop resting untouched cannot).
        let moving = pending.iter().any(|id| match held.get(&id.0) {
            Some(h) => h.executed.parse::<f64>().map_or(true, |x| x > 0.0),
            None => true,
        });
        if !moving {
            problems.extend(self.balance_problems(&pairs, &balances)?);
        }
        let live = self.live.as_mut().expect("a live run");
        if problems.is_empty() {
            if !self.reconciled {
                tracing::info!(target: "keel::venue",
                    "the venue and the ledger agree: trading as the account's state allows"
                );
            }
            self.reconciled = true;
            live.health.reconciled = true;
            live.health.problem = None;
            self.reconcile_problems.clear();
            return Ok(());
        }
        self.reconciled = false;
        live.health.reconciled = false;
        live.health.problem = Some(problems[0].clone());
        let new: Vec<String> = problems
            .iter()
            .filter(|p| !self.reconcile_problems.contains(p))
            .cloned()
            .collect();
        // The risk event and the state it causes in one transaction: no
        // reader sees the one without the other.
        let tx = self.conn.transaction()?;
        for p in &new {
            tracing::error!(target: "keel::venue", "reconciliation: {p}");
            risk_event(&tx, "reconcile", None, p, None)?;
        }
        let reduce = self.state == TradingState::Active;
        if reduce {
            let why = format!("reconciliation: {}", problems.join("; "));
            store_state(&tx, TradingState::ReduceOnly, &why, Actor::Keel.as_str())?;
        }
        tx.commit()?;
        if reduce {
            self.state = TradingState::ReduceOnly;
        }
        self.reconcile_problems = problems.clone();
        Ok(())
    }

    /// The assets of the run's pairs whose balance at the venue is not what
    /// the account held when the run first reconciled plus the fills
    /// booked since (the first reconciliation records that baseline).
    fn balance_problems(
        &mut self,
        pairs: &HashMap<String, crate::venues::kraken::pairs::Pair>,
        balances: &HashMap<String, Decimal>,
    ) -> anyhow::Result<Vec<String>> {
        let mut assets: Vec<&str> = pairs
            .values()
            .flat_map(|p| [p.base.as_str(), p.quote.as_str()])
            .filter(|a| !a.is_empty())
            .collect();
        assets.sort();
        assets.dedup();
        let held = |asset: &str| balances.get(asset).copied().unwrap_or(Decimal::ZERO);
        let baseline: HashMap<String, Decimal> = {
            let mut stmt = self
                .conn
                .prepare("SELECT asset, amount FROM venue_baselines WHERE run_id = ?1")?;
            stmt.query_map([self.run_id], |r| {
                Ok((r.get::<_, String>(0)?, d(&r.get::<_, String>(1)?)))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        if baseline.is_empty() {
            for asset in &assets {
                self.conn.execute(
                    "INSERT OR IGNORE INTO venue_baselines (run_id, asset, amount) VALUES (?1, ?2, ?3)",
                    params![self.run_id, asset, held(asset).to_string()],
                )?;
            }
            return Ok(Vec::new());
        }
        let mut expected = baseline.clone();
        let fills: Vec<(String, String, String, String, String)> = {
            let mut stmt = self.conn.prepare(
                "SELECT f.symbol, f.action, f.price, f.quantity, f.fee FROM fills f JOIN books b ON b.id = f.book_id
                 WHERE b.run_id = ?1 AND f.fill_id LIKE 'vf-%'",
            )?;
            stmt.query_map([self.run_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        for (symbol, action, price, quantity, fee) in fills {
            let Some(pair) = pairs.get(&symbol) else {
                continue;
            };
            let (q, cost, fee) = (d(&quantity), d(&price) * d(&quantity), d(&fee));
            let buy = action == Action::OpenLong.as_str();
            let (base, quote) = if buy {
                (q, -cost - fee)
            } else {
                (-q, cost - fee)
            };
            *expected.entry(pair.base.clone()).or_default() += base;
            *expected.entry(pair.quote.clone()).or_default() += quote;
        }
        let mut out = Vec::new();
        for asset in assets {
            let want = expected.get(asset).copied().unwrap_or_default();
            let have = held(asset);
            // Kraken shows some balances to 4 decimals.
            let tolerance = Decimal::new(1, 4) + want.abs() * Decimal::new(1, 6);
            if (have - want).abs() > tolerance {
                out.push(format!(
                    "{asset}: Kraken holds {have}, the ledger expects {} (what the account held at the start and the fills booked since)",
                    want.round_dp(10).normalize()
                ));
            }
        }
        Ok(out)
    }

    /// The kill switch at a live venue: every order there is cancelled
    /// (`CancelAll`; the time from the command to Kraken's confirmation is
    /// stored with a risk event), what traded before is booked, and every
    /// live position is closed by a market order whose fills are waited
    /// for. Returns the orders cancelled, the positions closed, and what
    /// the venue confirmed, in words.
    pub(super) fn kill_live(
        &mut self,
        received: Instant,
    ) -> anyhow::Result<(usize, usize, String)> {
        let Some(live) = self.live.as_mut() else {
            return Ok((0, 0, String::new()));
        };
        let cancel = live.cancel_everything();
        let latency = received.elapsed();
        let mut words = Vec::new();
        let cancelled = match cancel {
            Ok(n) => {
                let text = format!("Kraken cancelled {n} open orders (CancelAll)");
                risk_event(
                    self.conn,
                    "kill-venue",
                    None,
                    &text,
                    Some(latency.as_micros() as i64),
                )?;
                words.push(text);
                n
            }
            Err(e) => {
                let text = format!("CancelAll failed: {e}");
                risk_event(self.conn, "kill-venue", None, &text, None)?;
                words.push(text);
                0
            }
        };
        self.settle_live_now()?;
        let (run, time_ms) = (self.run_id, now_ms());
        let mut orders = Vec::new();
        let journal = Journal::begin(self.conn, self.run_id)?;
        for slot in self.slots.iter_mut().filter(|s| s.candidate.is_none()) {
            for i in 0..slot.book.open.len() {
                let id = format!("k{run}-{}-{time_ms}-kill{i}", slot.id);
                let order = close_order(slot, i, id, &self.market, "kill switch");
                journal.own_order(
                    slot.id,
                    self.cursor_ms.unwrap_or(0),
                    2_000 + i as i64,
                    &order,
                )?;
                slot.book.pending.push(order.clone());
                orders.push(order);
            }
        }
        journal.commit()?;
        let sent = orders.len();
        for order in orders {
            self.send_now(order)?;
        }
        let deadline = Instant::now() + KILL_FILL_WAIT;
        loop {
            self.settle_live_now()?;
            let waiting = self.live_pending().len();
            if waiting == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: usize = self
            .slots
            .iter()
            .filter(|s| s.candidate.is_none())
            .map(|s| s.book.open.len())
            .sum();
        let closed = sent.saturating_sub(left);
        words.push(format!(
            "{closed} of {sent} positions closed by market orders"
        ));
        if left > 0 {
            words.push(format!("{left} still open at Kraken: look at once"));
        }
        Ok((cancelled, closed, words.join("; ")))
    }
}
