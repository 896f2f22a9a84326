//! What the engine does between closes when told: pause, resume, kill,
//! stop, hot swap; the waits between closes, where commands and the kill
//! file are taken; and after each close: the automatic rollback.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rusqlite::params;

use keel_backtester::kernel::{Execution, FillSource, Outcome, TradingState, Venue};
use keel_model::Params;

use super::journal::{Journal, load_state, now_ms, order_state, risk_event, store_state};
use super::{Engine, KILL_FILE_POLL, history};
use crate::candidates::{self, Actor};
use crate::control::{self, Command, Reply};
use crate::ledger::float;
use crate::sandbox::{Binding, StrategyInstance};
use crate::store::audit;

impl Engine<'_> {
    pub(super) fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Pause { reason, reply } => {
                let answer =
                    self.set_state(TradingState::ReduceOnly, &reason, Actor::Operator.as_str());
                let _ = reply.send(answer.map(|()| Reply::State {
                    state: self.state.as_str().into(),
                }));
            }
            Command::Resume {
                reason,
                after_kill,
                reply,
            } => {
                if self.killed {
                    let _ = reply.send(Err("this run was killed; start a new one".into()));
                } else if let Some(kill) = self.kill_halt().filter(|_| !after_kill) {
                    let _ = reply.send(Err(format!(
                        "the account was halted by the kill switch ({kill}); `keel resume --after-kill` lifts it"
                    )));
                } else {
                    let answer =
                        self.set_state(TradingState::Active, &reason, Actor::Operator.as_str());
                    let _ = reply.send(answer.map(|()| Reply::State {
                        state: self.state.as_str().into(),
                    }));
                }
            }
            Command::Kill {
                reason,
                received,
                reply,
            } => {
                let answer = self.kill(&reason, received);
                if let (Err(e), Some(control)) = (&answer, &self.control) {
                    // Orders are blocked already; the kill itself waits in
                    // the kill file until the ledger can take it (at the
                    // latest at the next start).
                    let kept = control::write_kill_request(&control.kill_file, &reason);
                    tracing::error!(
                        "kill switch: could not be stored ({e:#}); {}",
                        match kept {
                            Ok(()) => format!(
                                "kept in {} and applied once the ledger can be written",
                                control.kill_file.display()
                            ),
                            Err(io) =>
                                format!("and the kill file could not be written either: {io}"),
                        }
                    );
                }
                let _ = reply.send(answer.map_err(|e| e.to_string()));
            }
            Command::Stop { reply } => {
                self.stopping = true;
                let _ = reply.send(Ok(Reply::State {
                    state: "stopping".into(),
                }));
            }
            Command::Swap {
                hash,
                actor,
                reason,
                reply,
            } => {
                let answer = self.swap(&hash, &actor, &reason);
                let _ = reply.send(answer.map_err(|e| format!("{e:#}")));
            }
        }
        self.publish();
        Ok(())
    }

    /// The reason of a halt the kill switch left, if the account is in one.
    fn kill_halt(&self) -> Option<String> {
        match load_state(self.conn) {
            Ok((TradingState::Halted, reason)) if reason.starts_with("kill switch") => Some(reason),
            _ => None,
        }
    }

    fn set_state(&mut self, state: TradingState, reason: &str, actor: &str) -> Result<(), String> {
        store_state(self.conn, state, reason, actor).map_err(|e| e.to_string())?;
        self.state = state;
        Ok(())
    }

    /// The kill switch: strategies stop, new orders are blocked, open orders
    /// are cancelled, every position is closed at the last price, and the
    /// account halts. The latency from command to "stopped and blocked" is
    /// stored with the risk event.
    pub(super) fn kill(&mut self, reason: &str, received: Instant) -> anyhow::Result<Reply> {
        self.killed = true;
        let journal = Journal::begin(self.conn, self.run_id)?;
        store_state(
            journal.conn(),
            TradingState::Halted,
            &format!("kill switch: {reason}"),
            Actor::Operator.as_str(),
        )?;
        journal.commit()?;
        self.state = TradingState::Halted;
        let latency = received.elapsed();
        tracing::warn!(
            latency_us = latency.as_micros() as u64,
            reason,
            "kill switch: strategies stopped, trading halted"
        );
        risk_event(
            self.conn,
            "kill",
            None,
            &format!("kill switch: {reason}"),
            Some(latency.as_micros() as i64),
        )?;
        // A live venue: everything there cancelled, live positions closed
        // by market orders (`live`).
        let (venue_cancelled, venue_closed, venue) = match self.live {
            Some(_) => {
                let (cancelled, closed, words) = self.kill_live(received)?;
                (cancelled, closed, Some(words))
            }
            None => (0, 0, None),
        };
        // Everything still open on paper is cancelled.
        let open = self.cancel_open_orders(None, "kill switch")?;
        // Flatten every paper book at the last prices.
        let mut closed = venue_closed;
        for i in 0..self.slots.len() {
            if self.live.is_some() && self.slots[i].candidate.is_none() {
                continue;
            }
            closed += self.flatten(i, FillSource::Kill)?;
        }
        Ok(Reply::Killed {
            latency_us: latency.as_micros() as u64,
            positions_closed: closed,
            orders_cancelled: open.len() + venue_cancelled,
            venue,
        })
    }

    /// Closes every position of slot `i` at its symbol's last close (plus
    /// slippage, with fees), booked after the last close was shown; how
    /// many it closed.
    pub(super) fn flatten(&mut self, i: usize, source: FillSource) -> anyhow::Result<usize> {
        let time_ms = self.cursor_ms.unwrap_or(0);
        let slot = &mut self.slots[i];
        let closed = slot.book.close_all(&self.market, time_ms, source);
        let booked = std::mem::take(&mut slot.book.fills);
        for b in &booked {
            if let Err(e) = slot.instance.on_fill(&b.fill) {
                tracing::warn!(book = %slot.slot, "{e}");
            }
        }
        slot.book.trades.clear();
        let journal = Journal::begin(self.conn, self.run_id)?;
        journal.fills(slot, &booked, time_ms, time_ms + 1)?;
        journal.persist(slot)?;
        journal.commit()?;
        Ok(closed)
    }

    /// Cancels the orders still open, of one book or of the whole run;
    /// their ids.
    pub(super) fn cancel_open_orders(
        &mut self,
        book: Option<i64>,
        reason: &str,
    ) -> anyhow::Result<Vec<String>> {
        let open: Vec<String> = {
            let mut stmt = self.conn.prepare(
                "SELECT o.client_order_id FROM orders o JOIN books b ON b.id = o.book_id
                 WHERE b.run_id = ?1 AND (?2 IS NULL OR b.id = ?2) AND o.state IN ('new', 'open')",
            )?;
            stmt.query_map(params![self.run_id, book], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        // A live book's orders are the live venue's to end.
        let live_ids: std::collections::HashSet<String> = match self.live {
            Some(_) => (self.slots.iter())
                .filter(|s| s.candidate.is_none())
                .flat_map(|s| s.book.pending.iter().map(|o| o.id.0.clone()))
                .collect(),
            None => Default::default(),
        };
        let open: Vec<String> = open
            .into_iter()
            .filter(|id| !live_ids.contains(id))
            .collect();
        for id in &open {
            let id = keel_backtester::kernel::ClientOrderId(id.clone());
            self.venue.cancel(&id)?;
            order_state(
                self.conn,
                &id.0,
                &["new", "open"],
                "cancelled",
                Some(reason),
            )?;
            for slot in &mut self.slots {
                slot.book.settle(Execution {
                    id: id.clone(),
                    time_ms: now_ms(),
                    outcome: Outcome::Cancelled(reason.to_owned()),
                });
            }
        }
        Ok(open)
    }

    /// Hot swap: the main book (the first that is not a shadow) gets the
    /// stored artifact `hash`. The new version is loaded and replayed through
    /// the run's history now, between two closes, and handles the next one;
    /// the book and its positions stay.
    pub(super) fn swap(&mut self, hash: &str, actor: &str, reason: &str) -> anyhow::Result<Reply> {
        if self.killed {
            bail!("this run was killed; start a new one");
        }
        let artifact = candidates::load_blob(self.conn, hash)?;
        let loaded = self.sandbox.load(&artifact)?;
        let params = Params::resolve(&loaded.info.params, &[])?;
        let Some(main) = self.slots.iter().position(|b| b.candidate.is_none()) else {
            bail!("this run has no main book to swap");
        };
        let binding = Binding {
            symbols: self.slots[main].symbols.clone(),
            params,
            simulated_clock: false,
            seed: self.slots[main].id as u64,
        };
        let mut instance: StrategyInstance = self
            .sandbox
            .instantiate(&loaded, binding)
            .map_err(|e| anyhow!("{e}"))?;
        let b = &self.slots[main];
        let replayed = self.replay_into(&mut instance, b.id, &b.sees, &b.ledger)?;
        let warmed = replayed.shown;
        self.check_rebuilt(main, &replayed)?;
        let b = &mut self.slots[main];
        let old = b.hash;
        b.instance = instance;
        b.hash = loaded.hash;
        b.promoted_at = Some((float(b.ledger.equity()), self.cursor_ms.unwrap_or(0)));
        self.conn.execute(
            "INSERT OR IGNORE INTO artifacts (hash, name, version, contract, size, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![loaded.hash.to_hex(), loaded.info.name, loaded.info.version, loaded.contract, loaded.size as i64, now_ms()],
        )?;
        self.conn.execute(
            "UPDATE books SET artifact_hash = ?2 WHERE id = ?1",
            params![b.id, loaded.hash.to_hex()],
        )?;
        let after = self
            .cursor_ms
            .map_or("-".into(), keel_model::candles::format_time);
        audit(
            self.conn,
            actor,
            "hot swap",
            &format!(
                "book {}: {} -> {} ({}), warmed on {warmed} bars, takes over after bar {after}: {reason}",
                b.slot,
                old.short(),
                loaded.hash.short(),
                loaded.info.name
            ),
        )?;
        tracing::info!(book = %b.slot, from = %old.short(), to = %loaded.hash.short(), warmed, tier = ?loaded.tier, "hot swap");
        Ok(Reply::Swapped {
            slot: b.slot.clone(),
            from: old.to_hex(),
            to: loaded.hash.to_hex(),
            warmed_bars: warmed,
            after_ms: self.cursor_ms,
        })
    }

    /// The self-check of a replay mid-run: the book rebuilt from the ledger
    /// is the live one. A difference is a risk event (the live book stays).
    fn check_rebuilt(&self, i: usize, replayed: &history::Replayed) -> anyhow::Result<()> {
        let live = &self.slots[i].book;
        let (a, b) = (&replayed.book, live);
        if a.cash != b.cash || a.open != b.open {
            let why = format!(
                "book {}: the book rebuilt from the ledger differs from the live one (cash {} against {})",
                self.slots[i].slot, a.cash, b.cash
            );
            tracing::warn!("{why}");
            risk_event(self.conn, "history", Some(self.slots[i].id), &why, None)?;
        }
        Ok(())
    }

    /// After each close: returns for the paper gate, shadow verdicts (a
    /// judged shadow ends, and a waiting candidate takes its slot), and the
    /// automatic rollback of a new version losing too much in its first day.
    pub(super) fn after_bar(&mut self) -> anyhow::Result<()> {
        self.record_returns();
        self.judge_shadows(false)?;
        self.admit_shadows()?;
        let rule = &self.settings.candidates.rollback;
        let now = self.cursor_ms.unwrap_or(0);
        let losing = self.slots.iter().find_map(|b| {
            let (at, since) = b.promoted_at?;
            rule.first_day_loss(at, since, float(b.ledger.equity()), now)
        });
        if let Some(loss) = losing {
            let reason = format!(
                "the new version lost {loss:.2}% in its first day, over the {}% limit",
                rule.daily_loss_pct
            );
            let actor = Actor::RiskManager;
            let previous = candidates::rollback(self.conn, actor, &reason)?;
            self.swap(&previous, actor.as_str(), &reason)?;
            for b in &mut self.slots {
                b.promoted_at = None;
            }
            risk_event(self.conn, "rollback", None, &reason, None)?;
        }
        Ok(())
    }

    /// Waits up to `wait` for the next bar, answering control commands.
    pub(super) fn wait(&mut self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            self.poll_kill_file()?;
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(control) = &self.control else {
                std::thread::sleep(left);
                return Ok(());
            };
            if control.stop_requested.load(Ordering::SeqCst) {
                return Ok(());
            }
            // The kill file is looked at again at least this often.
            let left = left.min(KILL_FILE_POLL);
            let command = match control.commands.recv_timeout(left) {
                Ok(c) => c,
                Err(_) => {
                    if left.is_zero() || Instant::now() >= deadline {
                        return Ok(());
                    }
                    std::thread::sleep(left.min(Duration::from_millis(5)));
                    continue;
                }
            };
            self.command(command)?;
        }
    }

    /// A kill asked for through the kill file is applied like one from
    /// the API.
    pub(super) fn poll_kill_file(&mut self) -> anyhow::Result<()> {
        let Some(control) = &self.control else {
            return Ok(());
        };
        let Some(reason) = control::read_kill_file(&control.kill_file) else {
            return Ok(());
        };
        control.kill_requested.store(true, Ordering::SeqCst);
        let file = control.kill_file.clone();
        let reply = self.kill(&reason, Instant::now())?;
        // Removed once the kill is stored: what `keel kill` waits for.
        std::fs::remove_file(&file).with_context(|| {
            format!(
                "{}: the kill is applied, but the file stays",
                file.display()
            )
        })?;
        tracing::warn!(?reply, "kill file: applied");
        self.publish();
        Ok(())
    }
}
