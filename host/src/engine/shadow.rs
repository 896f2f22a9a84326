//! The paper gate: gated candidates run in shadow books beside the active
//! strategy, on the same bars, each with a virtual portfolio of its own.
//! A running engine fills a free slot with the next waiting candidate after
//! any bar (so a candidate submitted overnight starts its paper run at the
//! next bar, not at the next restart), judges every shadow after every
//! bar, and ends a shadow once its verdict is in, or once its candidate was
//! promoted or rejected meanwhile: its orders cancelled, its positions
//! closed at the last price, its slot free for the next one.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use keel_candidates::judge::{self, PaperFigures};
use keel_model::Params;

use keel_backtester::kernel::FillSource;

use super::Engine;
use super::journal::Journal;
use super::slot::{BookPlan, Slot, open_slot};
use crate::candidates::{self, Actor, CandidateState, Gate, GateResult, Verdict};
use crate::ledger::float;
use crate::store::audit;

impl Engine<'_> {
    /// This bar's return of every book, and of the main book into the
    /// yardstick of each shadow that had a return of its own on it.
    pub(super) fn record_returns(&mut self) {
        // The first book that is no shadow is the main one.
        let mut main: Option<Option<f64>> = None;
        let mut returned = Vec::new();
        for (i, book) in self.slots.iter_mut().enumerate() {
            let r = book.record_equity(float(book.ledger.equity()));
            if book.candidate.is_none() {
                main.get_or_insert(r);
            } else if r.is_some() {
                returned.push(i);
            }
        }
        if let Some(Some(r)) = main {
            for i in returned {
                self.slots[i].active_returns.push(r);
            }
        }
    }

    /// Judges each shadow against the paper gate. It passes once it has
    /// enough trades, a profit, a deepest drawdown under the limit and a
    /// Sharpe not worse than the main book's over the same bars; it fails
    /// as soon as its drawdown reaches the limit or its strategy is
    /// quarantined (nothing can undo either), or at the end of the run when
    /// it traded enough but did not pass. A verdict ends the shadow.
    pub(super) fn judge_shadows(&mut self, at_end: bool) -> anyhow::Result<()> {
        let gate = self.settings.candidates.paper.clone();
        let mut ended = Vec::new();
        for (i, book) in self.slots.iter_mut().enumerate() {
            let Some(candidate) = book.candidate else {
                continue;
            };
            let (trades, state): (i64, String) = self.conn.query_row(
                "SELECT (SELECT COUNT(*) FROM trades WHERE book_id = ?1), state FROM candidates WHERE id = ?2",
                params![book.id, candidate],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let state = CandidateState::parse(&state)?;
            if state != CandidateState::Gated {
                // Promoted or rejected meanwhile: its trial is moot.
                ended.push((
                    i,
                    format!("candidate {candidate} is {state}; shadow withdrawn"),
                ));
                continue;
            }
            book.trades = trades as u64;
            let figures = PaperFigures {
                trades: book.trades,
                pnl: float(book.ledger.equity() - book.ledger.start_cash),
                max_drawdown_pct: book.max_drawdown_pct,
                sharpe: book.returns.sharpe(),
                active_sharpe: book.active_returns.sharpe(),
                // A quarantined strategy trades no more: its trial is over.
                quarantined: book.instance.is_quarantined(),
            };
            let Some(judgement) = judge::paper(&gate, &figures, at_end) else {
                continue;
            };
            let result = GateResult::judged(
                &judgement,
                serde_json::json!({
                    "run": self.run_id, "bars": book.returns.n + 1, "trades": book.trades,
                    "pnl": figures.pnl, "max_drawdown_pct": figures.max_drawdown_pct,
                    "sharpe_per_bar": figures.sharpe,
                    "active_sharpe_per_bar": figures.active_sharpe,
                }),
            );
            candidates::record_paper_gate(self.conn, candidate, &result)?;
            let passed = result.passed();
            tracing::info!(candidate, passed, "paper gate");
            ended.push((i, "paper gate judged".to_owned()));
        }
        for (i, why) in ended.into_iter().rev() {
            self.end_shadow(i, &why)?;
        }
        Ok(())
    }

    /// Ends shadow book `i`: its open orders cancelled, its positions
    /// closed at the last price, the book out of the run.
    fn end_shadow(&mut self, i: usize, why: &str) -> anyhow::Result<()> {
        let (id, slot) = (self.slots[i].id, self.slots[i].slot.clone());
        let cancelled = self.cancel_open_orders(Some(id), "shadow ended")?;
        let closed = self.flatten(i, FillSource::ShadowEnd)?;
        let journal = Journal::begin(self.conn, self.run_id)?;
        audit(
            journal.conn(),
            Actor::Keel.as_str(),
            "shadow ended",
            &format!(
                "book {slot}: {why}; {} order(s) cancelled, {closed} position(s) closed at the last price",
                cancelled.len()
            ),
        )?;
        journal.commit()?;
        self.slots.remove(i);
        Ok(())
    }

    /// Fills free shadow slots with the candidates waiting for their paper
    /// gate, oldest first, each replayed through the run's history. One that cannot
    /// start fails its paper gate, saying why.
    pub(super) fn admit_shadows(&mut self) -> anyhow::Result<()> {
        let slots = self.settings.candidates.paper.slots;
        let running: Vec<i64> = self.slots.iter().filter_map(|b| b.candidate).collect();
        if self.killed || self.stopping || running.len() >= slots {
            return Ok(());
        }
        let waiting: Vec<(i64, String)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, hash FROM candidates WHERE state = 'gated' ORDER BY id LIMIT ?1",
            )?;
            stmt.query_map([slots as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .filter(|row| row.as_ref().map_or(true, |(id, _)| !running.contains(id)))
                .take(slots - running.len())
                .collect::<rusqlite::Result<_>>()?
        };
        for (candidate, hash) in waiting {
            match self.start_shadow(candidate, &hash) {
                Ok(book) => {
                    audit(
                        self.conn,
                        Actor::Keel.as_str(),
                        "shadow started",
                        &format!(
                            "book {}: candidate {candidate} ({}) in shadow from the bar after {}",
                            book.slot,
                            book.hash.short(),
                            self.cursor_ms
                                .map_or("-".into(), keel_model::candles::format_time)
                        ),
                    )?;
                    tracing::info!(candidate, book = %book.slot, "shadow started");
                    self.slots.push(book);
                }
                Err(e) => {
                    let result = GateResult {
                        gate: Gate::Paper,
                        verdict: Verdict::Fail,
                        figures: serde_json::json!({ "run": self.run_id }),
                        detail: format!("could not start in shadow: {e:#}"),
                    };
                    candidates::record_paper_gate(self.conn, candidate, &result)?;
                    tracing::warn!(candidate, "could not start in shadow: {e:#}");
                }
            }
        }
        Ok(())
    }

    /// Candidate `candidate`'s shadow book, its strategy replayed through
    /// the run's history as a hot swap's is.
    fn start_shadow(&mut self, candidate: i64, hash: &str) -> anyhow::Result<Slot> {
        let artifact = candidates::load_blob(self.conn, hash)?;
        let loaded = self.sandbox.load(&artifact)?;
        let params = Params::resolve(&loaded.info.params, &[])?;
        // The candidate would replace the main book's strategy: it is bound
        // to the same symbols.
        let main = self.slots.iter().find(|b| b.candidate.is_none());
        let symbols = main.map_or_else(|| self.settings.symbols.clone(), |b| b.symbols.clone());
        let main = main.map(|b| b.id);
        let plan = BookPlan {
            slot: format!("candidate-{candidate}"),
            symbols,
            strategy: &loaded,
            params,
            candidate: Some(candidate),
        };
        let slot = open_slot(self.conn, self.sandbox, &self.settings, self.run_id, plan)?;
        self.warm(slot, main)
    }
}

/// What a book of a resumed run had booked before the restart: its last
/// equity and, for a shadow, its returns and deepest drawdown, with the
/// main book's (`main`) returns over the same bars, replayed from the
/// stored equity snapshots. A new book has none.
pub(super) fn seed_history(
    conn: &Connection,
    book: &mut Slot,
    main: Option<i64>,
) -> rusqlite::Result<()> {
    if book.candidate.is_none() {
        book.last_equity = conn
            .query_row(
                "SELECT equity FROM equity_snapshots WHERE book_id = ?1 ORDER BY time_ms DESC LIMIT 1",
                [book.id],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .and_then(|e| e.parse().ok());
        return Ok(());
    }
    let own = stored_equity(conn, book.id, i64::MIN)?;
    let Some(&(since, _)) = own.first() else {
        return Ok(());
    };
    let mut main_returns = HashMap::new();
    if let Some(main) = main {
        let series = stored_equity(conn, main, since)?;
        for pair in series.windows(2) {
            let ((_, before), (time, after)) = (pair[0], pair[1]);
            if before > 0.0 {
                main_returns.insert(time, after / before - 1.0);
            }
        }
    }
    for (time, equity) in own {
        if book.record_equity(equity).is_some()
            && let Some(r) = main_returns.get(&time)
        {
            book.active_returns.push(*r);
        }
    }
    Ok(())
}

/// A book's closing equity per bar from `since_ms` on, oldest first.
fn stored_equity(conn: &Connection, book: i64, since_ms: i64) -> rusqlite::Result<Vec<(i64, f64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT time_ms, equity FROM equity_snapshots WHERE book_id = ?1 AND time_ms >= ?2 ORDER BY time_ms",
    )?;
    stmt.query_map(params![book, since_ms], |r| {
        let equity: String = r.get(1)?;
        let equity = equity.parse::<f64>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok((r.get::<_, i64>(0)?, equity))
    })?
    .collect()
}
