//! The engine: drives the kernel close by close for a paper (and, next, a
//! live) run — feeds in, the journal and the venue out — and answers the
//! control API in between.
//!
//! ```text
//!  feeds ──step──▶ kernel books ──batch──▶ strategies ──signals──▶ kernel decide
//!    ▲               (settle, exits, marks)                          │ intents
//!    │                     ▲ reports                                 ▼
//!  control ──commands──▶   └──────── venue ◀── sent after ── journal (one transaction)
//! ```
//!
//! Each close: the venue fills waiting orders at the open of the bars that
//! arrived; every book settles the venue's reports, takes the stops and
//! targets inside the bars and marks at the close (`keel_backtester::kernel`,
//! the same code a backtest runs); the journal books all of it, the bars
//! and the run's cursor in one transaction. Then each strategy is told its
//! fills and shown the closed bars and its portfolio, the kernel decides
//! its signals, the journal commits the intents, and only then are they
//! sent.
//!
//! Restart safety. An intent is committed (`new`) before it is sent, and
//! the venue answers by client order id, so at start-up the engine re-sends
//! intents the venue never saw and re-runs the strategies on a close whose
//! signals were not all sent — with the same ids, so nothing is placed
//! twice and no fill is lost. Before that, every book and strategy is
//! rebuilt by replaying the run's history (`history`), so it resumes in the
//! state it had, to the bit.

mod commands;
pub mod feed;
pub mod feeds;
mod history;
mod journal;
mod live;
mod orders;
pub mod record;
mod settings;
mod shadow;
mod slot;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use rusqlite::{Connection, OptionalExtension, params};

use keel_backtester::kernel::{ClientOrderId, Market, OrderState, TradingState, Venue};
use keel_model::batch::{BarColumns, Batch, BatchOutcome};
use keel_model::candles::Candle;
use keel_model::{Params, Portfolio, RiskLimits, Symbol};

use crate::candidates::Actor;
use crate::control::FeedHealth;
use crate::sandbox::{Sandbox, StrategyError, StrategyInstance};
use crate::store::Ownership;
use crate::store::audit;
use crate::venues::PaperVenue;
use crate::venues::kraken::KrakenVenue;
use feeds::{Feeds, Step};
use journal::{Journal, now_ms, risk_event};
use slot::{BookPlan, Slot, open_slot};

pub use journal::{audit_ledger, load_state, recent_trades};
pub use settings::{ControlLink, RunSettings, RunSummary, StrategySource, StrategySpec};

/// How often a waiting engine looks for the kill file.
const KILL_FILE_POLL: Duration = Duration::from_millis(50);

/// Crash-test hook: with `KEEL_FAILPOINT=<point>:<n>` set, the process
/// SIGKILLs itself the `n`th time it reaches `point` (the restart tests use
/// it to die between any two steps that must not be torn apart). Without the
/// variable it does nothing.
pub(crate) fn failpoint(point: &str) {
    use std::sync::atomic::AtomicUsize;
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("KEEL_FAILPOINT") else {
        return;
    };
    let Some((name, n)) = spec.split_once(':') else {
        return;
    };
    if name != point {
        return;
    }
    let seen = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse() == Ok(seen) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The engine of one run.
pub struct Engine<'c> {
    conn: &'c mut Connection,
    sandbox: &'c Sandbox,
    settings: RunSettings,
    run_id: i64,
    resumed: bool,
    market: Market,
    slots: Vec<Slot>,
    venue: PaperVenue,
    /// The live venue of the main books (a live run); shadows trade on
    /// paper beside them.
    live: Option<Box<KrakenVenue>>,
    /// A live run trades reduce-only until the venue and the ledger are
    /// found to agree, at start and after any gap.
    reconciled: bool,
    /// When reconciliation was last tried, and what it found wrong.
    reconcile_tried_ms: Option<i64>,
    reconcile_problems: Vec<String>,
    /// Resting stops asked to be cancelled, their end not yet reported.
    cancelling: std::collections::HashSet<ClientOrderId>,
    state: TradingState,
    killed: bool,
    stopping: bool,
    cursor_ms: Option<i64>,
    signalled_ms: Option<i64>,
    /// The close of the last step the strategies were shown: a strategy
    /// starting now is replayed through it (`history`).
    shown_ms: Option<i64>,
    bars: u64,
    /// How the (live) feed was doing at the last look.
    feed_health: FeedHealth,
    control: Option<ControlLink>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("run_id", &self.run_id)
            .field("state", &self.state)
            .finish()
    }
}

/// Shows `instance` one step's closed bars, closing at `close_ms`, with
/// `portfolio`: what a strategy is told at a close, live and when its
/// history is replayed.
fn show_step(
    instance: &mut StrategyInstance,
    symbols: &[Symbol],
    bars: &[(usize, Candle)],
    close_ms: i64,
    portfolio: &Portfolio,
    limits: RiskLimits,
) -> Result<BatchOutcome, StrategyError> {
    let mut columns = BarColumns::default();
    for (sym, candle) in bars {
        columns.push(*sym as u32, candle);
    }
    instance.on_bars(&Batch {
        symbols,
        tick_times: &[close_ms],
        tick_bars: &[bars.len() as u32],
        bars: columns.slice(0, bars.len()),
        portfolio,
        limits,
    })
}

impl<'c> Engine<'c> {
    /// Starts a new run, or resumes the unfinished one of the same feed and
    /// strategies; loads and binds every strategy and rebuilds every book.
    pub fn open(
        owner: &'c Ownership,
        conn: &'c mut Connection,
        sandbox: &'c Sandbox,
        settings: RunSettings,
        control: Option<ControlLink>,
    ) -> anyhow::Result<Engine<'c>> {
        Engine::open_on(owner, conn, sandbox, settings, control, None)
    }

    /// [`Engine::open`], the main books trading on `live` if given.
    pub fn open_on(
        _owner: &'c Ownership,
        conn: &'c mut Connection,
        sandbox: &'c Sandbox,
        settings: RunSettings,
        control: Option<ControlLink>,
        live: Option<KrakenVenue>,
    ) -> anyhow::Result<Engine<'c>> {
        if settings.symbols.is_empty() {
            anyhow::bail!("a run needs at least one symbol");
        }
        let mut loaded = Vec::new();
        for (i, spec) in settings.strategies.iter().enumerate() {
            let strategy = match &spec.source {
                StrategySource::File(path) => sandbox.load_file(path),
                StrategySource::Stored(artifact) => sandbox.load(artifact),
            }
            .with_context(|| format!("strategy {}", spec.origin()))?;
            let params = Params::resolve_text(&strategy.info.params, &spec.params)
                .map_err(|e| anyhow!("{}: {e}", spec.origin()))?;
            let slot = spec
                .slot
                .clone()
                .unwrap_or_else(|| format!("{}#{}", strategy.info.name, i + 1));
            let symbols = spec.binding(&settings.symbols)?;
            loaded.push((slot, symbols, strategy, params));
        }
        let mut settings_json = serde_json::json!({
            "cash": settings.cash,
            "risk": settings.risk,
            "fee_bps": settings.fills.fee_bps,
            "slippage_bps": settings.fills.slippage_bps,
            // Slots, not hashes: a run whose strategy was hot-swapped resumes.
            "strategies": loaded.iter().map(|(slot, ..)| slot.clone()).collect::<Vec<_>>(),
        });
        // A book bound to some of the run's symbols only: a run bound
        // otherwise does not resume it (runs that bind every book to every
        // symbol are stored as before, and resume across the upgrade).
        if loaded
            .iter()
            .any(|(_, symbols, ..)| *symbols != settings.symbols)
        {
            settings_json["bindings"] = loaded
                .iter()
                .map(|(_, symbols, ..)| symbols.clone())
                .collect::<Vec<_>>()
                .into();
        }
        // One symbol is stored as before several were possible, so such a
        // run resumes across the upgrade.
        settings_json["symbol"] = match settings.symbols.as_slice() {
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        };
        // A live run is never resumed as a paper one, nor the other way.
        if live.is_some() {
            settings_json["venue"] = "kraken".into();
        }
        let mode = if live.is_some() { "live" } else { "paper" };
        let settings_text = settings_json.to_string();
        let (state, _) = load_state(conn)?;
        let unfinished: Option<(i64, String, String)> = conn
            .query_row(
                "SELECT id, feed, settings FROM runs WHERE status IN ('running', 'interrupted')
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let resume = match unfinished {
            Some((id, feed, old)) if feed == settings.feed_name && old == settings_text => Some(id),
            Some((id, ..)) => {
                conn.execute(
                    "UPDATE runs SET status = 'abandoned', ended_ms = ?2 WHERE id = ?1",
                    params![id, now_ms()],
                )?;
                audit(
                    conn,
                    Actor::Keel.as_str(),
                    "abandon run",
                    &format!("run {id}: a run with other settings started"),
                )?;
                None
            }
            None => None,
        };
        let (run_id, cursor_ms, signalled_ms) = match resume {
            Some(id) => {
                conn.execute("UPDATE runs SET status = 'running' WHERE id = ?1", [id])?;
                let (c, s) = conn.query_row(
                    "SELECT cursor_ms, signalled_ms FROM runs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
                )?;
                (id, c, s)
            }
            None => {
                conn.execute(
                    "INSERT INTO runs (mode, feed, settings, started_ms, status) VALUES (?4, ?1, ?2, ?3, 'running')",
                    params![settings.feed_name, settings_text, now_ms(), mode],
                )?;
                let id = conn.last_insert_rowid();
                audit(
                    conn,
                    Actor::Operator.as_str(),
                    "start run",
                    &format!("run {id}: {mode} on {}", settings.feed_name),
                )?;
                (id, None, None)
            }
        };
        // The strategies have been shown every booked close, except the
        // last one if its signals were not all sent (it is signalled again).
        let shown_ms = match cursor_ms {
            Some(cursor) if signalled_ms == Some(cursor) => Some(cursor),
            Some(cursor) => history::bar_before(conn, run_id, cursor)?,
            None => None,
        };
        let stored_bars: i64 = conn.query_row(
            "SELECT COUNT(*) FROM run_bars WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        if cursor_ms.is_some() && stored_bars == 0 {
            tracing::warn!(
                run_id,
                "this run began before keel stored the bars it booked: its strategies resume without that history"
            );
        }
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .ok_or_else(|| anyhow!("a run needs a database file"))?;
        let venue = PaperVenue::open(&path, settings.fills)
            .with_context(|| format!("{}: the paper exchange", path.display()))?;
        let market = Market::new(
            settings
                .symbols
                .iter()
                .map(|s| Symbol::from(s.as_str()))
                .collect(),
            settings.risk.base_limits(),
            &settings.risk.min_orders(),
            settings.fills,
            Some(settings.risk.fat_finger_pct),
        );
        let mut engine = Engine {
            conn,
            sandbox,
            settings,
            run_id,
            resumed: resume.is_some(),
            market,
            slots: Vec::new(),
            venue,
            reconciled: live.is_none(),
            live: live.map(Box::new),
            reconcile_tried_ms: None,
            reconcile_problems: Vec::new(),
            cancelling: Default::default(),
            state,
            killed: false,
            stopping: false,
            cursor_ms,
            signalled_ms,
            shown_ms,
            bars: 0,
            feed_health: FeedHealth::default(),
            control,
        };
        for (slot, symbols, strategy, params) in loaded {
            let plan = BookPlan {
                slot,
                symbols,
                strategy: &strategy,
                params,
                candidate: None,
            };
            let slot = open_slot(engine.conn, sandbox, &engine.settings, run_id, plan)?;
            let slot = engine.warm(slot, None)?;
            engine.slots.push(slot);
        }
        // Candidates waiting for their paper gate, in shadow from the start
        // (and, in a resumed run, in the books they had).
        engine.admit_shadows()?;
        engine.reconcile()?;
        engine.reconcile_live()?;
        engine.publish();
        Ok(engine)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Brings an opened slot up to the run's present: its book and its
    /// strategy rebuilt from the history, its orders in flight.
    fn warm(&mut self, mut slot: Slot, main: Option<i64>) -> anyhow::Result<Slot> {
        shadow::seed_history(self.conn, &mut slot, main)?;
        let replayed = self.replay_into(&mut slot.instance, slot.id, &slot.sees, &slot.ledger)?;
        slot.book = replayed.book;
        slot.book.pending = self.orders_in_flight(&slot)?;
        for (last, seen) in self.market.last_close.iter_mut().zip(replayed.last_close) {
            if last.is_nan() {
                *last = seen;
            }
        }
        Ok(slot)
    }

    fn kill_requested(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(|c| c.kill_requested.load(Ordering::SeqCst))
    }

    fn stop_requested(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(|c| c.stop_requested.load(Ordering::SeqCst))
    }

    /// Drives every step of `feeds` after the run's cursor; stops cleanly
    /// at bad feed data (what was booked stays booked).
    pub fn run(&mut self, feeds: &mut Feeds) -> anyhow::Result<RunSummary> {
        self.resignal()?;
        let mut feed_error = None;
        let mut last_feed_ms: Option<i64> = None;
        self.publish();
        loop {
            if self.stopping
                || self.stop_requested()
                || self.settings.max_bars.is_some_and(|n| self.bars >= n)
            {
                break;
            }
            let next = feeds.next_step();
            for warning in feeds.take_warnings() {
                tracing::warn!(target: "keel::feed", "{warning}");
                risk_event(self.conn, "feed", None, &warning, None)?;
            }
            for reminder in feeds.take_reminders() {
                tracing::warn!(target: "keel::feed", "{reminder}");
            }
            if let Some(health) = feeds.health()
                && health != self.feed_health
            {
                self.feed_health = health;
                self.publish();
            }
            let (close_ms, bars) = match next {
                Step::Bars { close_ms, bars } => (close_ms, bars),
                Step::Wait(d) => {
                    self.wait(d)?;
                    continue;
                }
                Step::End => break,
                Step::Failed(msg) => {
                    tracing::error!("feed stopped: {msg}");
                    risk_event(self.conn, "feed", None, &msg, None)?;
                    feed_error = Some(msg);
                    break;
                }
            };
            if self.cursor_ms.is_some_and(|c| close_ms <= c) {
                continue;
            }
            if let Some(previous) = last_feed_ms
                && let Some(speed) = self.settings.speed
            {
                let wait =
                    Duration::from_secs_f64(((close_ms - previous).max(0) as f64 / 1000.0) / speed);
                self.wait(wait)?;
            } else {
                self.wait(Duration::ZERO)?;
            }
            last_feed_ms = Some(close_ms);
            self.book_step(close_ms, &bars)?;
            self.live_exits(close_ms, &bars)?;
            failpoint("after-bar");
            self.signal_step(close_ms, &bars)?;
            self.after_bar()?;
            self.publish();
        }
        let interrupted = self.stop_requested();
        // Nothing of ours rests at the venue after a run: the switch is off.
        if let Some(live) = self.live.as_mut() {
            live.disarm();
        }
        if !interrupted {
            self.judge_shadows(true)?;
        }
        let status = if interrupted {
            "interrupted"
        } else if feed_error.is_some() {
            "stopped"
        } else {
            "finished"
        };
        self.conn.execute(
            "UPDATE runs SET status = ?2, ended_ms = ?3, signalled_ms = ?4 WHERE id = ?1",
            params![self.run_id, status, now_ms(), self.signalled_ms],
        )?;
        self.publish();
        Ok(RunSummary {
            run_id: self.run_id,
            resumed: self.resumed,
            bars: self.bars,
            state: self.state,
            books: self.slots.iter().map(Slot::snapshot).collect(),
            feed_error,
            interrupted,
        })
    }

    /// Books one step: the venue's fills at the bars' open, then, for every
    /// book, the kernel settles them, takes stops and targets inside the
    /// bars and marks at the close; the journal writes it all, the bars and
    /// the cursor in one transaction.
    fn book_step(&mut self, close_ms: i64, bars: &[(usize, Candle)]) -> anyhow::Result<()> {
        let symbols: Vec<Symbol> = bars
            .iter()
            .map(|(sym, _)| self.market.symbols[*sym].clone())
            .collect();
        let named: Vec<(&str, Candle)> = (symbols.iter())
            .zip(bars)
            .map(|(symbol, (_, c))| (symbol.as_ref(), *c))
            .collect();
        self.venue.on_step(&named)?;
        let reports = self.live_reports();
        failpoint("after-exchange-fill");
        let mut columns = BarColumns::default();
        for (sym, candle) in bars {
            columns.push(*sym as u32, candle);
        }
        let step = columns.slice(0, bars.len());
        self.market.close(step);
        let live_on = self.live.is_some();
        let journal = Journal::begin(self.conn, self.run_id)?;
        let mut halts = Vec::new();
        for slot in &mut self.slots {
            let live = live_on && slot.candidate.is_none();
            if live {
                live::settle(&journal, slot, &reports)?;
            } else {
                let waiting: Vec<ClientOrderId> =
                    slot.book.pending.iter().map(|o| o.id.clone()).collect();
                for id in waiting {
                    if let Some(OrderState::Done(report)) = self.venue.query(&id)? {
                        journal.settled(slot.id, &report)?;
                        slot.book.settle(report);
                    }
                }
                // A live book's stops and targets are orders at the venue
                // (`live_exits`), never fills made up here.
                for b in 0..step.len() {
                    slot.book.exits(&self.market.fills, step.get(b));
                }
            }
            slot.book.mark(step);
            let booked = std::mem::take(&mut slot.book.fills);
            for b in &booked {
                if let Err(e) = slot.instance.on_fill(&b.fill) {
                    tracing::warn!(book = %slot.slot, "{e}");
                }
            }
            journal.fills(slot, &booked, close_ms, close_ms)?;
            slot.book.trades.clear();
            slot.book.rejected.clear();
            if let Some(why) = journal.close(slot, &named, close_ms, &self.settings.risk)? {
                halts.push((slot.id, why));
            }
        }
        if self.state != TradingState::Halted
            && let Some((book, why)) = halts.first()
        {
            journal.halt(*book, why)?;
            self.state = TradingState::Halted;
            tracing::warn!("trading halted: {why}");
        }
        journal.booked(&named, close_ms, self.signalled_ms)?;
        journal.commit()?;
        self.cursor_ms = Some(close_ms);
        self.bars += 1;
        Ok(())
    }

    /// Shows every strategy the closed bars and turns its signals into
    /// orders: the kernel decides, the journal commits the intents, then
    /// they are sent.
    fn signal_step(&mut self, close_ms: i64, bars: &[(usize, Candle)]) -> anyhow::Result<()> {
        self.shown_ms = Some(close_ms);
        if self.killed || self.kill_requested() {
            return Ok(());
        }
        let (mut orders, mut intents) = (Vec::new(), Vec::new());
        // A live book is reduce-only until the venue and the ledger agree.
        let live_state = match self.state {
            TradingState::Active if !self.reconciled => TradingState::ReduceOnly,
            state => state,
        };
        let live_on = self.live.is_some();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.sees_any(bars) {
                continue;
            }
            let state = if live_on && slot.candidate.is_none() {
                live_state
            } else {
                self.state
            };
            let equity = slot.book.equity();
            let view = slot.book.view(equity);
            let outcome = show_step(
                &mut slot.instance,
                &self.market.symbols,
                bars,
                close_ms,
                &view,
                self.market.shown_limits,
            );
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(book = %slot.slot, "{e}");
                    BatchOutcome::default()
                }
            };
            if let Some(e) = &outcome.error {
                tracing::warn!(book = %slot.slot, "{e}");
            }
            let (run, book) = (self.run_id, slot.id);
            let decisions =
                slot.book
                    .decide(&self.market, close_ms, &outcome.signals, state, |seq| {
                        ClientOrderId(format!(
                            "k{run}-{book}-{close_ms}-{}",
                            seq + outcome.refused.len()
                        ))
                    });
            // A close signalled again after a restart decides the same ids.
            let mut seen = std::collections::HashSet::new();
            slot.book.pending.retain(|o| seen.insert(o.id.clone()));
            if !outcome.signals.is_empty() || !outcome.refused.is_empty() {
                intents.push((i, outcome, decisions));
            }
        }
        // Every book's intents of this close in one transaction, begun only
        // when there is one to write.
        if !intents.is_empty() {
            failpoint("before-intent");
            let journal = Journal::begin(self.conn, self.run_id)?;
            for (i, outcome, decisions) in intents {
                let slot = &mut self.slots[i];
                let sent = journal.intents(
                    slot,
                    close_ms,
                    &outcome.refused,
                    &outcome.signals,
                    decisions,
                )?;
                orders.extend(sent);
            }
            journal.commit()?;
        }
        if !orders.is_empty() {
            failpoint("after-intent");
        }
        for order in orders {
            // Already sent before a crash? Then it is only marked open.
            let state: Option<String> = self
                .conn
                .query_row(
                    "SELECT state FROM orders WHERE client_order_id = ?1",
                    [&order.id.0],
                    |r| r.get(0),
                )
                .optional()?;
            if state.as_deref() == Some("new") {
                self.send(order)?;
            }
        }
        // Stored with the next close's cursor (or the run's end): until
        // then a restart signals this close again, which sends nothing twice.
        self.signalled_ms = Some(close_ms);
        Ok(())
    }

    /// After a restart whose last booked step's signals were not all sent:
    /// that step is signalled again (the same order ids, so nothing is
    /// placed twice). The strategies were replayed up to the step before.
    fn resignal(&mut self) -> anyhow::Result<()> {
        let Some(cursor) = self.cursor_ms else {
            return Ok(());
        };
        if self.signalled_ms == Some(cursor) {
            return Ok(());
        }
        let step = history::stored_step(self.conn, self.run_id, cursor, &self.market)?;
        if step.is_empty() {
            tracing::warn!(
                bar_ms = cursor,
                "the last booked bar is not stored: its signals are not given again"
            );
            return Ok(());
        }
        tracing::info!(bar_ms = cursor, "re-signalling the last booked bar");
        // The intents the crash left of that close are decided again, with
        // the same ids, from the book as it was before them.
        // Only the intents: the engine's own orders of that close (a stop
        // placed, an exit, a kill's close: `-s…`, `-x…`, `-kill…`) are not
        // decided again, and stay in flight.
        let run = self.run_id;
        for slot in &mut self.slots {
            let prefix = format!("k{run}-{}-{cursor}-", slot.id);
            slot.book.pending.retain(|o| {
                !o.id
                    .0
                    .strip_prefix(&prefix)
                    .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
            });
        }
        self.signal_step(cursor, &step)
    }

    /// Refreshes what the control API serves.
    fn publish(&self) {
        let Some(control) = &self.control else { return };
        let trades = recent_trades(self.conn, self.run_id, 50).unwrap_or_default();
        let books = self.slots.iter().map(Slot::snapshot).collect();
        if let Ok(mut snap) = control.snapshot.lock() {
            snap.run_id = self.run_id;
            snap.state = self.state.as_str().into();
            snap.killed = self.killed;
            snap.bars = self.bars;
            snap.cursor_ms = self.cursor_ms;
            snap.feed = self.settings.feed_name.clone();
            snap.mode = if self.live.is_some() { "live" } else { "paper" }.into();
            snap.feed_health = self.feed_health.clone();
            snap.books = books;
            snap.trades = trades;
            snap.venue = self.live.as_ref().map(|l| l.health.clone());
        }
    }

    /// Replays the run's history (`history`) into `instance`, the strategy
    /// of book `book_id` starting now: every step the strategies were shown,
    /// each with the fills booked at it and the portfolio the book held at
    /// its close, signals discarded. Returns the rebuilt book. A history
    /// that does not rebuild the stored `ledger` is reported (a run begun
    /// before the bars were stored).
    fn replay_into(
        &self,
        instance: &mut StrategyInstance,
        book_id: i64,
        sees: &[bool],
        ledger: &crate::ledger::Ledger,
    ) -> anyhow::Result<history::Replayed> {
        let started = Instant::now();
        let limits = self.market.shown_limits;
        let symbols = &self.market.symbols;
        let replayed = history::replay(
            self.conn,
            self.run_id,
            book_id,
            ledger.start_cash,
            &self.market,
            self.shown_ms,
            |step| {
                for fill in step.fills {
                    let _ = instance.on_fill(fill);
                }
                if !step.bars.iter().any(|(sym, _)| sees[*sym]) {
                    return;
                }
                let _ = show_step(
                    instance,
                    symbols,
                    step.bars,
                    step.close_ms,
                    step.portfolio,
                    limits,
                );
            },
        )?;
        for fill in &replayed.untold {
            let _ = instance.on_fill(fill);
        }
        if replayed.ledger != *ledger {
            let why = format!(
                "book {book_id}: the stored bars and fills do not rebuild the book (cash {} against {}); its strategy resumes on an incomplete history",
                replayed.ledger.cash, ledger.cash
            );
            tracing::warn!("{why}");
            risk_event(self.conn, "history", Some(book_id), &why, None)?;
        }
        tracing::info!(
            book = book_id,
            bars = replayed.shown,
            ms = started.elapsed().as_millis() as u64,
            "strategy replayed through the run's history"
        );
        Ok(replayed)
    }
}
