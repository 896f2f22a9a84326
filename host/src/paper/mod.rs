//! Paper trading: strategies driven bar by bar from a feed, through the same
//! signal → risk → order → fill path as a backtest (the shared risk checks,
//! the backtester's fill model inside [`exchange::PaperExchange`]), with
//! every step written to the ledger.
//!
//! Restart safety. Each bar is booked in one transaction (exchange fills,
//! stops, marks, halts, the run's cursor). An order intent is committed
//! (`new`) before it is sent, and the exchange answers by client order id,
//! so at start-up the engine books whatever the exchange filled, re-sends
//! intents the exchange never saw, and re-runs the strategies on a bar whose
//! signals were not all sent — with the same deterministic order ids, so
//! nothing is placed twice and no fill is lost. Before that, every strategy
//! is replayed through the run's history (`history`), so it resumes in the
//! state it had.

pub mod exchange;
pub mod feed;
mod history;
mod shadow;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use rust_decimal::Decimal;

use keel_backtester::fills::FillModel;
use keel_backtester::risk::Exposure;
use keel_model::batch::{BarColumns, Batch, BatchOutcome};
use keel_model::candles::Candle;
use keel_model::{Action, Params, Side, Signal, Symbol};

use crate::candidates::{self, CandidatesConfig};
use crate::control::{
    self, Command, FeedHealth, Reply, Snapshot, SnapshotBook, SnapshotPosition, SnapshotTrade,
};
use crate::ledger::{ClosedTrade, Holding, Ledger, LedgerFill, dec, float};
use crate::risk::{self, RiskConfig, TradingState};
use crate::sandbox::{
    Binding, LoadedStrategy, Sandbox, StrategyArtifact, StrategyError, StrategyHash,
    StrategyInstance,
};
use crate::store::Ownership;
use exchange::{PaperExchange, PaperOrder, action_parse, size_parse, size_text};
use feed::{Feed, Next};

/// Where a strategy's component comes from.
#[derive(Debug, Clone)]
pub enum StrategySource {
    File(PathBuf),
    /// Bytes already in hand (a stored candidate or deployment).
    Stored(StrategyArtifact),
}

/// One strategy to run: its component, parameter overrides and book.
#[derive(Debug, Clone)]
pub struct StrategySpec {
    pub source: StrategySource,
    pub params: Vec<String>,
    /// The book's name; default `<name>#<n>`.
    pub slot: Option<String>,
}

impl StrategySpec {
    pub fn file(path: PathBuf, params: Vec<String>) -> StrategySpec {
        StrategySpec {
            source: StrategySource::File(path),
            params,
            slot: None,
        }
    }

    fn origin(&self) -> String {
        match &self.source {
            StrategySource::File(p) => p.display().to_string(),
            StrategySource::Stored(a) => a.origin.display().to_string(),
        }
    }
}

/// Everything a paper run is set up with.
#[derive(Debug, Clone)]
pub struct PaperSettings {
    /// How the feed is named in the ledger (`replay:<file>`, `synth:…`).
    pub feed_name: String,
    pub symbol: String,
    /// Bars per second of feed time: `None` runs as fast as it can.
    pub speed: Option<f64>,
    pub cash: f64,
    pub risk: RiskConfig,
    pub fills: FillModel,
    pub strategies: Vec<StrategySpec>,
    /// Stop after booking this many bars (a live feed never ends).
    pub max_bars: Option<u64>,
    /// Paper-gate criteria and the automatic rollback rule.
    pub candidates: CandidatesConfig,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperSummary {
    pub run_id: i64,
    pub resumed: bool,
    pub bars: u64,
    pub state: TradingState,
    pub books: Vec<SnapshotBook>,
    /// The feed stopped on bad data (already booked bars are kept).
    pub feed_error: Option<String>,
    /// Stopped by a signal: the next start with the same settings resumes.
    pub interrupted: bool,
}

/// The control side: commands from the API and the snapshot it serves.
#[derive(Debug)]
pub struct ControlLink {
    pub commands: Receiver<Command>,
    pub snapshot: Arc<std::sync::Mutex<Snapshot>>,
    /// Set by the API the moment a kill arrives: no order leaves after it.
    pub kill_requested: Arc<AtomicBool>,
    /// Set by SIGINT or SIGTERM: the run stops after the current bar and
    /// stays resumable.
    pub stop_requested: Arc<AtomicBool>,
    /// `<db>.kill`, checked at start, before every bar and while waiting.
    pub kill_file: PathBuf,
}

struct Book {
    id: i64,
    slot: String,
    hash: StrategyHash,
    instance: StrategyInstance,
    ledger: Ledger,
    /// Stop-loss and take-profit per (symbol, tag).
    exits: BTreeMap<(String, String), (Option<f64>, Option<f64>)>,
    peak: Decimal,
    day: i64,
    day_start: Decimal,
    signals: u64,
    rejected: u64,
    /// The candidate this book runs in shadow (its paper gate), until the
    /// gate's verdict ends the shadow.
    candidate: Option<i64>,
    /// Per-bar equity returns, for Sharpe.
    returns: Returns,
    /// A shadow's yardstick: the main book's returns over the same bars.
    active_returns: Returns,
    /// The highest closing equity and the deepest fall below it so far,
    /// percent.
    equity_peak: f64,
    max_drawdown_pct: f64,
    last_equity: Option<f64>,
    trades: u64,
    /// Equity and feed time (ms) when the current version took over (main
    /// book), for the automatic rollback.
    promoted_at: Option<(f64, i64)>,
}

impl Book {
    /// Books this bar's closing equity: its return (none on the first bar)
    /// and the drawdown.
    fn record_equity(&mut self, equity: f64) -> Option<f64> {
        let r = self
            .last_equity
            .filter(|last| *last > 0.0)
            .map(|last| equity / last - 1.0);
        if let Some(r) = r {
            self.returns.push(r);
        }
        self.last_equity = Some(equity);
        self.equity_peak = self.equity_peak.max(equity);
        if self.equity_peak > 0.0 {
            let drawdown = (self.equity_peak - equity) / self.equity_peak * 100.0;
            self.max_drawdown_pct = self.max_drawdown_pct.max(drawdown);
        }
        r
    }
}

/// Per-bar returns as count, mean and sum of squared deviations (Welford),
/// so a Sharpe ratio costs no memory however long a run goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Returns {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Returns {
    fn push(&mut self, r: f64) {
        self.n += 1;
        let delta = r - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (r - self.mean);
    }

    /// Mean over standard deviation, per bar: 0 for a book that stayed
    /// flat; none before two returns, or for a constant non-zero return.
    fn sharpe(&self) -> Option<f64> {
        let sd = (self.m2 / self.n.saturating_sub(1).max(1) as f64).sqrt();
        match (self.n > 1, sd > 0.0, self.mean == 0.0) {
            (false, ..) => None,
            (true, true, _) => Some(self.mean / sd),
            (true, false, flat) => flat.then_some(0.0),
        }
    }
}

/// The engine of one run.
pub struct PaperEngine<'c> {
    conn: &'c mut Connection,
    sandbox: &'c Sandbox,
    settings: PaperSettings,
    run_id: i64,
    resumed: bool,
    symbols: Vec<Symbol>,
    books: Vec<Book>,
    exchange: PaperExchange,
    state: TradingState,
    killed: bool,
    stopping: bool,
    cursor_ms: Option<i64>,
    signalled_ms: Option<i64>,
    /// The close of the last bar the strategies were shown: a strategy
    /// starting now is replayed through it (`history`).
    shown_ms: Option<i64>,
    last_close: f64,
    bars: u64,
    /// How the (live) feed was doing at the last look.
    feed_health: FeedHealth,
    control: Option<ControlLink>,
}

impl std::fmt::Debug for PaperEngine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaperEngine")
            .field("run_id", &self.run_id)
            .field("state", &self.state)
            .finish()
    }
}

/// How often a waiting engine looks for the kill file.
const KILL_FILE_POLL: Duration = Duration::from_millis(50);

/// Crash-test hook: with `KEEL_FAILPOINT=<point>:<n>` set, the process
/// SIGKILLs itself the `n`th time it reaches `point` (the restart tests use
/// it to die between any two steps that must not be torn apart). Without the
/// variable it does nothing.
fn failpoint(point: &str) {
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap_or(Decimal::ZERO)
}

fn side_text(side: Side) -> &'static str {
    match side {
        Side::Long => "long",
        Side::Short => "short",
    }
}

/// Writes one audit line (append-only table).
pub(crate) fn audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (time_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms(), actor, action, detail],
    )?;
    Ok(())
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

fn store_state(
    conn: &Connection,
    state: TradingState,
    reason: &str,
    actor: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE trading_state SET state = ?1, reason = ?2, changed_ms = ?3 WHERE id = 1",
        params![state.as_str(), reason, now_ms()],
    )?;
    audit(conn, actor, &format!("state {}", state.as_str()), reason)
}

impl<'c> PaperEngine<'c> {
    /// Starts a new run, or resumes the unfinished one of the same feed and
    /// strategies; loads and binds every strategy.
    pub fn open(
        _owner: &'c Ownership,
        conn: &'c mut Connection,
        sandbox: &'c Sandbox,
        settings: PaperSettings,
        control: Option<ControlLink>,
    ) -> anyhow::Result<PaperEngine<'c>> {
        let symbols: Vec<Symbol> = vec![Symbol::from(settings.symbol.as_str())];
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
            loaded.push((slot, strategy, params));
        }
        let settings_text = serde_json::json!({
            "symbol": settings.symbol,
            "cash": settings.cash,
            "risk": settings.risk,
            "fee_bps": settings.fills.fee_bps,
            "slippage_bps": settings.fills.slippage_bps,
            // Slots, not hashes: a run whose strategy was hot-swapped resumes.
            "strategies": loaded.iter().map(|(slot, ..)| slot.clone()).collect::<Vec<_>>(),
        })
        .to_string();
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
                    "keel",
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
                    "INSERT INTO runs (mode, feed, settings, started_ms, status) VALUES ('paper', ?1, ?2, ?3, 'running')",
                    params![settings.feed_name, settings_text, now_ms()],
                )?;
                let id = conn.last_insert_rowid();
                audit(
                    conn,
                    "operator",
                    "start run",
                    &format!("run {id}: paper on {}", settings.feed_name),
                )?;
                (id, None, None)
            }
        };
        // The strategies have been shown every booked bar, except the last
        // one if its signals were not all sent (it is signalled again).
        let shown_ms = match cursor_ms {
            Some(cursor) if signalled_ms == Some(cursor) => Some(cursor),
            Some(cursor) => history::bar_before(conn, run_id, cursor)?,
            None => None,
        };
        let last_bar = match cursor_ms {
            Some(cursor) => history::stored_bar(conn, run_id, cursor)?,
            None => None,
        };
        if cursor_ms.is_some() && last_bar.is_none() {
            tracing::warn!(
                run_id,
                "this run began before keel stored the bars it booked: its strategies resume without that history"
            );
        }
        let exchange = PaperExchange {
            fills: settings.fills,
        };
        let mut engine = PaperEngine {
            conn,
            sandbox,
            settings,
            run_id,
            resumed: resume.is_some(),
            symbols,
            books: Vec::new(),
            exchange,
            state,
            killed: false,
            stopping: false,
            cursor_ms,
            signalled_ms,
            shown_ms,
            last_close: last_bar.map_or(f64::NAN, |c| c.close),
            bars: 0,
            feed_health: FeedHealth::default(),
            control,
        };
        for (slot, strategy, params) in loaded {
            let plan = BookPlan {
                slot,
                strategy: &strategy,
                params,
                candidate: None,
            };
            let mut book = open_book(engine.conn, sandbox, &engine.settings, run_id, plan)?;
            shadow::seed_history(engine.conn, &mut book, None)?;
            engine.replay_into(&mut book.instance, book.id, &book.ledger)?;
            engine.books.push(book);
        }
        // Candidates waiting for their paper gate, in shadow from the start
        // (and, in a resumed run, in the books they had).
        engine.admit_shadows()?;
        engine.reconcile()?;
        engine.publish();
        Ok(engine)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Intents committed but never acknowledged: sent now (the exchange
    /// ignores ones it already has), or cancelled if trading halted since.
    fn reconcile(&mut self) -> anyhow::Result<()> {
        let pending: Vec<(String, PaperOrder)> = {
            let mut stmt = self.conn.prepare(
                "SELECT o.client_order_id, o.symbol, o.action, o.size, o.equity, o.max_quantity, o.reference_price,
                        o.max_deviation, o.tag, o.book_id
                 FROM orders o JOIN books b ON b.id = o.book_id
                 WHERE b.run_id = ?1 AND o.state = 'new' ORDER BY o.created_ms, o.client_order_id",
            )?;
            let rows = stmt.query_map([self.run_id], |r| {
                let action: String = r.get(2)?;
                let size: String = r.get(3)?;
                let max_quantity: Option<String> = r.get(5)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    action,
                    size,
                    r.get::<_, f64>(4)?,
                    max_quantity,
                    r.get::<_, f64>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, symbol, action, size, equity, max_q, reference, deviation, tag, book_id) =
                    row?;
                let action = action_parse(&action).unwrap_or(Action::Close);
                let buy = self.buys(book_id, &symbol, &tag, action);
                out.push((
                    id.clone(),
                    PaperOrder {
                        client_order_id: id,
                        symbol,
                        action,
                        buy,
                        size: size_parse(&size).unwrap_or(keel_model::Size::Base(0.0)),
                        equity,
                        max_quantity: max_q.and_then(|q| q.parse().ok()),
                        reference_price: reference,
                        max_deviation_pct: deviation,
                    },
                ));
            }
            out
        };
        for (id, order) in pending {
            let known = self.exchange.knows(self.conn, &id)?;
            tracing::info!(order = %id, known, "reconciling an unacknowledged order");
            self.send(order)?;
        }
        Ok(())
    }

    /// Whether an order of `action` on (symbol, tag) buys.
    fn buys(&self, book_id: i64, symbol: &str, tag: &str, action: Action) -> bool {
        match action {
            Action::OpenLong => true,
            Action::OpenShort => false,
            Action::Close | Action::Reduce => self
                .books
                .iter()
                .find(|b| b.id == book_id)
                .and_then(|b| {
                    b.ledger
                        .holdings
                        .iter()
                        .find(|h| h.symbol == symbol && h.tag == tag)
                })
                .is_some_and(|h| h.side == Side::Short),
        }
    }

    /// Sends a committed order to the exchange and marks it open, unless a
    /// kill arrived, in which case it is cancelled unsent.
    fn send(&mut self, order: PaperOrder) -> anyhow::Result<()> {
        let killed = self.killed
            || self
                .control
                .as_ref()
                .is_some_and(|c| c.kill_requested.load(Ordering::SeqCst));
        if killed || self.state == TradingState::Halted {
            self.conn.execute(
                "UPDATE orders SET state = 'cancelled', reason = 'trading halted before it was sent', updated_ms = ?2
                 WHERE client_order_id = ?1 AND state = 'new'",
                params![order.client_order_id, now_ms()],
            )?;
            return Ok(());
        }
        self.exchange.submit(self.conn, &order, now_ms())?;
        failpoint("after-send");
        self.conn.execute(
            "UPDATE orders SET state = 'open', updated_ms = ?2 WHERE client_order_id = ?1 AND state = 'new'",
            params![order.client_order_id, now_ms()],
        )?;
        Ok(())
    }

    /// Drives every bar of `feed` after the run's cursor; stops cleanly at
    /// bad feed data (what was booked stays booked).
    pub fn run(&mut self, feed: &mut Feed) -> anyhow::Result<PaperSummary> {
        let bar_ms = feed.bar_ms();
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
            let next = feed.next_bar();
            for warning in feed.take_warnings() {
                tracing::warn!(target: "keel::feed", "{warning}");
                self.risk_event("feed", None, &warning, None)?;
            }
            for reminder in feed.take_reminders() {
                tracing::warn!(target: "keel::feed", "{reminder}");
            }
            if let Some(health) = feed.health()
                && *health != self.feed_health
            {
                self.feed_health = health.clone();
                self.publish();
            }
            let candle = match next {
                Next::Bar(c) => c,
                Next::Wait(d) => {
                    self.wait(d)?;
                    continue;
                }
                Next::End => break,
                Next::Failed(msg) => {
                    tracing::error!("feed stopped: {msg}");
                    self.risk_event("feed", None, &msg, None)?;
                    feed_error = Some(msg);
                    break;
                }
            };
            let close_ms = candle.time_ms + bar_ms;
            if self.cursor_ms.is_some_and(|c| close_ms <= c) {
                continue;
            }
            if let Some(previous) = last_feed_ms
                && let Some(speed) = self.settings.speed
            {
                let wait = Duration::from_secs_f64(
                    ((candle.time_ms - previous).max(0) as f64 / 1000.0) / speed,
                );
                self.wait(wait)?;
            } else {
                self.wait(Duration::ZERO)?;
            }
            last_feed_ms = Some(candle.time_ms);
            self.bar(&candle, close_ms)?;
            failpoint("after-bar");
            self.signal_step(&candle, close_ms)?;
            self.after_bar()?;
            self.publish();
        }
        let interrupted = self.stop_requested();
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
            "UPDATE runs SET status = ?2, ended_ms = ?3 WHERE id = ?1",
            params![self.run_id, status, now_ms()],
        )?;
        self.publish();
        Ok(PaperSummary {
            run_id: self.run_id,
            resumed: self.resumed,
            bars: self.bars,
            state: self.state,
            books: self.snapshot_books(),
            feed_error,
            interrupted,
        })
    }

    fn stop_requested(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(|c| c.stop_requested.load(Ordering::SeqCst))
    }

    /// A kill asked for through the kill file is applied like one from
    /// the API.
    fn poll_kill_file(&mut self) -> anyhow::Result<()> {
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

    /// After a restart whose last booked bar's signals were not all sent:
    /// that bar is signalled again (the same order ids, so nothing is placed
    /// twice). The strategies were replayed up to the bar before it.
    fn resignal(&mut self) -> anyhow::Result<()> {
        let Some(cursor) = self.cursor_ms else {
            return Ok(());
        };
        if self.signalled_ms == Some(cursor) {
            return Ok(());
        }
        match history::stored_bar(self.conn, self.run_id, cursor)? {
            Some(candle) => {
                tracing::info!(bar_ms = cursor, "re-signalling the last booked bar");
                self.signal_step(&candle, cursor)
            }
            None => {
                tracing::warn!(
                    bar_ms = cursor,
                    "the last booked bar is not stored: its signals are not given again"
                );
                Ok(())
            }
        }
    }

    /// Waits up to `wait` for the next bar, answering control commands.
    fn wait(&mut self, wait: Duration) -> anyhow::Result<()> {
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
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
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

    fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Pause { reason, reply } => {
                let answer = self.set_state(TradingState::ReduceOnly, &reason, "operator");
                let _ = reply.send(answer.map(|()| Reply::State {
                    state: self.state.as_str().into(),
                }));
            }
            Command::Resume { reason, reply } => {
                if self.killed {
                    let _ = reply.send(Err("this run was killed; start a new one".into()));
                } else {
                    let answer = self.set_state(TradingState::Active, &reason, "operator");
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

    fn set_state(&mut self, state: TradingState, reason: &str, actor: &str) -> Result<(), String> {
        store_state(self.conn, state, reason, actor).map_err(|e| e.to_string())?;
        self.state = state;
        Ok(())
    }

    /// The kill switch: strategies stop, new orders are blocked, open orders
    /// are cancelled, every position is closed at the last price, and the
    /// account halts. The latency from command to "stopped and blocked" is
    /// stored with the risk event.
    fn kill(&mut self, reason: &str, received: Instant) -> anyhow::Result<Reply> {
        self.killed = true;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        store_state(
            &tx,
            TradingState::Halted,
            &format!("kill switch: {reason}"),
            "operator",
        )?;
        tx.commit()?;
        self.state = TradingState::Halted;
        let latency = received.elapsed();
        tracing::warn!(
            latency_us = latency.as_micros() as u64,
            reason,
            "kill switch: strategies stopped, trading halted"
        );
        self.risk_event(
            "kill",
            None,
            &format!("kill switch: {reason}"),
            Some(latency.as_micros() as i64),
        )?;
        // Everything still open at the exchange is cancelled.
        let open = self.cancel_open_orders(None, "kill switch")?;
        // Flatten every book at the last price.
        let mut closed = 0;
        if self.last_close.is_finite() {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for book in &mut self.books {
                closed += flatten(
                    &tx,
                    &self.settings.fills,
                    book,
                    self.last_close,
                    self.cursor_ms,
                    "kill",
                )?;
            }
            tx.commit()?;
        }
        Ok(Reply::Killed {
            latency_us: latency.as_micros() as u64,
            positions_closed: closed,
            orders_cancelled: open.len(),
        })
    }

    /// Cancels the orders still open at the exchange, of one book or of the
    /// whole run; their ids.
    fn cancel_open_orders(
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
        for id in &open {
            self.exchange.cancel(self.conn, id)?;
            self.conn.execute(
                "UPDATE orders SET state = 'cancelled', reason = ?3, updated_ms = ?2 WHERE client_order_id = ?1",
                params![id, now_ms(), reason],
            )?;
        }
        Ok(open)
    }

    /// Replays the run's history (`history`) into `instance`, the strategy
    /// of book `book_id` starting now: every bar the strategies were shown,
    /// each with the portfolio the book held at it, signals discarded.
    /// Returns how many bars it saw. A history that does not rebuild the
    /// book's `ledger` is reported (a run begun before the bars were stored).
    fn replay_into(
        &self,
        instance: &mut StrategyInstance,
        book_id: i64,
        ledger: &Ledger,
    ) -> anyhow::Result<usize> {
        let limits = self.settings.risk.limits_for(&self.settings.symbol);
        let started = Instant::now();
        let replayed = history::replay(
            self.conn,
            self.run_id,
            book_id,
            ledger.start_cash,
            self.shown_ms,
            |candle, close_ms, portfolio| {
                let _ = show_bar(instance, &self.symbols, candle, close_ms, portfolio, limits);
            },
        )?;
        if replayed.ledger != *ledger {
            let why = format!(
                "book {book_id}: the stored bars and fills do not rebuild the book (cash {} against {}); its strategy resumes on an incomplete history",
                replayed.ledger.cash, ledger.cash
            );
            tracing::warn!("{why}");
            self.risk_event("history", Some(book_id), &why, None)?;
        }
        tracing::info!(
            book = book_id,
            bars = replayed.shown,
            ms = started.elapsed().as_millis() as u64,
            "strategy replayed through the run's history"
        );
        Ok(replayed.shown)
    }

    /// Hot swap: the main book (the first that is not a shadow) gets the
    /// stored artifact `hash`. The new version is loaded and replayed through
    /// the run's history now, between two bars, and handles the next one;
    /// the book and its positions stay.
    fn swap(&mut self, hash: &str, actor: &str, reason: &str) -> anyhow::Result<Reply> {
        if self.killed {
            bail!("this run was killed; start a new one");
        }
        let artifact = candidates::load_blob(self.conn, hash)?;
        let loaded = self.sandbox.load(&artifact)?;
        let params = Params::resolve(&loaded.info.params, &[])?;
        let Some(book) = self.books.iter().position(|b| b.candidate.is_none()) else {
            bail!("this run has no main book to swap");
        };
        let binding = Binding {
            symbols: vec![self.settings.symbol.clone()],
            params,
            simulated_clock: false,
            seed: self.books[book].id as u64,
        };
        let mut instance = self
            .sandbox
            .instantiate(&loaded, binding)
            .map_err(|e| anyhow!("{e}"))?;
        let (id, ledger) = (self.books[book].id, &self.books[book].ledger);
        let warmed = self.replay_into(&mut instance, id, ledger)?;
        let b = &mut self.books[book];
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

    /// After each bar: returns for the paper gate, shadow verdicts (a
    /// judged shadow ends, and a waiting candidate takes its slot), and the
    /// automatic rollback of a new version losing too much in its first day.
    fn after_bar(&mut self) -> anyhow::Result<()> {
        self.record_returns();
        self.judge_shadows(false)?;
        self.admit_shadows()?;
        let rule = &self.settings.candidates.rollback;
        let now = self.cursor_ms.unwrap_or(0);
        let losing = self.books.iter().find_map(|b| {
            let (at, since) = b.promoted_at?;
            rule.first_day_loss(at, since, float(b.ledger.equity()), now)
        });
        if let Some(loss) = losing {
            let reason = format!(
                "the new version lost {loss:.2}% in its first day, over the {}% limit",
                rule.daily_loss_pct
            );
            let actor = candidates::Actor::RiskManager;
            let previous = candidates::rollback(self.conn, actor, &reason)?;
            self.swap(&previous, actor.as_str(), &reason)?;
            for b in &mut self.books {
                b.promoted_at = None;
            }
            self.risk_event("rollback", None, &reason, None)?;
        }
        Ok(())
    }

    fn risk_event(
        &self,
        kind: &str,
        book: Option<i64>,
        detail: &str,
        latency_us: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO risk_events (time_ms, kind, book_id, detail, latency_us) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ms(), kind, book, detail, latency_us],
        )?;
        Ok(())
    }

    /// Books one bar: the exchange's fills at its open, stops and targets
    /// inside it, marks at its close, halts, the cursor. One transaction.
    fn bar(&mut self, candle: &Candle, close_ms: i64) -> anyhow::Result<()> {
        let symbol = self.settings.symbol.clone();
        self.exchange.on_bar(self.conn, &symbol, candle)?;
        failpoint("after-exchange-fill");
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let fills = self.settings.fills;
        let mut halts = Vec::new();
        for book in &mut self.books {
            let before = book.ledger.equity();
            book_exchange(&tx, book)?;
            // Stops and targets inside the bar.
            let mut i = 0;
            while i < book.ledger.holdings.len() {
                let h = book.ledger.holdings[i].clone();
                let (stop, target) = book
                    .exits
                    .get(&(h.symbol.clone(), h.tag.clone()))
                    .copied()
                    .unwrap_or((None, None));
                let exit = (h.symbol == symbol)
                    .then(|| fills.exit_in_bar(h.side, stop, target, candle))
                    .flatten();
                let Some((price, reason)) = exit else {
                    i += 1;
                    continue;
                };
                let fill = closing_fill(&h, price, &fills, candle.time_ms)?;
                let source = match reason {
                    keel_backtester::ExitReason::StopLoss => "stop-loss",
                    keel_backtester::ExitReason::TakeProfit => "take-profit",
                    _ => "signal",
                };
                let fill_id = format!("{source}-{}-{}-{}-{close_ms}", book.id, h.symbol, h.tag);
                book_fill(&tx, book, &fill_id, None, &fill, source)?;
            }
            book.ledger.mark(
                &symbol,
                dec(candle.low)?,
                dec(candle.high)?,
                dec(candle.close)?,
            );
            let equity = book.ledger.equity();
            let day = close_ms.div_euclid(86_400_000);
            if day != book.day {
                book.day = day;
                book.day_start = before;
            }
            book.peak = book.peak.max(equity);
            tx.execute(
                "INSERT OR REPLACE INTO equity_snapshots (book_id, time_ms, cash, equity) VALUES (?1, ?2, ?3, ?4)",
                params![book.id, close_ms, book.ledger.cash.to_string(), equity.to_string()],
            )?;
            if let Err(e) = book.ledger.check() {
                halts.push((
                    book.id,
                    format!("book {}: ledger identity broken: {e}", book.slot),
                ));
            }
            // A shadow's portfolio is virtual: its losses fail its paper
            // gate, they never halt the account.
            if book.candidate.is_none()
                && let Some(why) = risk::halt_reason(
                    float(equity),
                    float(book.peak),
                    float(book.day_start),
                    &self.settings.risk,
                )
            {
                halts.push((book.id, format!("book {}: {why}", book.slot)));
            }
            persist_book(&tx, book)?;
        }
        if self.state != TradingState::Halted
            && let Some((book, why)) = halts.first()
        {
            store_state(&tx, TradingState::Halted, why, "risk-manager")?;
            tx.execute(
                "INSERT INTO risk_events (time_ms, kind, book_id, detail) VALUES (?1, 'halt', ?2, ?3)",
                params![now_ms(), book, why],
            )?;
            self.state = TradingState::Halted;
            tracing::warn!("trading halted: {why}");
        }
        history::store_bar(&tx, self.run_id, &symbol, candle, close_ms)?;
        tx.execute(
            "UPDATE runs SET cursor_ms = ?2 WHERE id = ?1",
            params![self.run_id, close_ms],
        )?;
        tx.commit()?;
        self.cursor_ms = Some(close_ms);
        self.last_close = candle.close;
        self.bars += 1;
        Ok(())
    }

    /// Shows every strategy the closed bar and turns its signals into
    /// orders: risk decision and intent committed, then sent.
    fn signal_step(&mut self, candle: &Candle, close_ms: i64) -> anyhow::Result<()> {
        self.shown_ms = Some(close_ms);
        let kill_requested = self
            .control
            .as_ref()
            .is_some_and(|c| c.kill_requested.load(Ordering::SeqCst));
        if self.killed || kill_requested {
            return Ok(());
        }
        let limits = self.settings.risk.limits_for(&self.settings.symbol);
        let mut orders = Vec::new();
        for b in 0..self.books.len() {
            let view = self.books[b].ledger.view();
            let book = &mut self.books[b];
            let outcome = show_bar(
                &mut book.instance,
                &self.symbols,
                candle,
                close_ms,
                &view,
                limits,
            );
            let mut decided: Vec<(Signal, Result<(), String>)> = Vec::new();
            match outcome {
                Ok(outcome) => {
                    decided.extend(
                        (outcome.refused.into_iter())
                            .map(|(signal, why)| (signal, Err(format!("sandbox: {why}")))),
                    );
                    if let Some(e) = outcome.error {
                        tracing::warn!(book = %book.slot, "{e}");
                    }
                    let mut exposure = exposure_of(&book.ledger);
                    for signal in outcome.signals {
                        let decision = risk::pre_trade(
                            &signal,
                            self.state,
                            self.last_close,
                            &exposure,
                            &self.settings.risk,
                        )
                        .map(|approved| {
                            if let Some(a) = approved {
                                exposure.add(&signal, a);
                            }
                        });
                        decided.push((signal, decision));
                    }
                }
                Err(e) => tracing::warn!(book = %book.slot, "{e}"),
            }
            if !decided.is_empty() {
                failpoint("before-intent");
            }
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (seq, (signal, decision)) in decided.iter().enumerate() {
                let (text, reason) = match decision {
                    Ok(()) => ("accepted", None),
                    Err(r) => ("rejected", Some(r.as_str())),
                };
                book.signals += 1;
                if decision.is_err() {
                    book.rejected += 1;
                }
                tracing::info!(
                    book = %book.slot, time_ms = close_ms, seq, symbol = %signal.symbol, action = signal.action.as_str(),
                    decision = text, reason = reason.unwrap_or(""), "signal"
                );
                tx.execute(
                    "INSERT OR IGNORE INTO signals (book_id, time_ms, seq, artifact_hash, symbol, action, size, tag,
                         stop_loss, take_profit, reason, confidence, decision, reject_reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    params![
                        book.id, close_ms, seq as i64, book.hash.to_hex(), signal.symbol, signal.action.as_str(),
                        size_text(signal.size), signal.tag, signal.stop_loss, signal.take_profit, signal.reason,
                        signal.confidence, text, reason
                    ],
                )?;
                if decision.is_err() {
                    continue;
                }
                let held = book
                    .ledger
                    .holdings
                    .iter()
                    .find(|h| h.symbol == signal.symbol && h.tag == signal.tag);
                let max_quantity = match signal.action {
                    Action::Close | Action::Reduce => match held {
                        Some(h) => Some(float(h.quantity)),
                        None => continue,
                    },
                    _ => None,
                };
                let buy = match signal.action {
                    Action::OpenLong => true,
                    Action::OpenShort => false,
                    _ => held.is_some_and(|h| h.side == Side::Short),
                };
                let id = format!("k{}-{}-{close_ms}-{seq}", self.run_id, book.id);
                let equity = float(book.ledger.equity());
                tx.execute(
                    "INSERT OR IGNORE INTO orders (client_order_id, book_id, signal_time_ms, signal_seq, symbol, tag, action,
                         size, equity, max_quantity, reference_price, max_deviation, stop_loss, take_profit, state,
                         created_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'new', ?15, ?15)",
                    params![
                        id, book.id, close_ms, seq as i64, signal.symbol, signal.tag, signal.action.as_str(),
                        size_text(signal.size), equity, max_quantity.map(|q| q.to_string()), self.last_close,
                        self.settings.risk.fat_finger_pct, signal.stop_loss, signal.take_profit, now_ms()
                    ],
                )?;
                orders.push(PaperOrder {
                    client_order_id: id,
                    symbol: signal.symbol.clone(),
                    action: signal.action,
                    buy,
                    size: signal.size,
                    equity,
                    max_quantity,
                    reference_price: self.last_close,
                    max_deviation_pct: self.settings.risk.fat_finger_pct,
                });
            }
            tx.commit()?;
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
                    [&order.client_order_id],
                    |r| r.get(0),
                )
                .optional()?;
            if state.as_deref() == Some("new") {
                self.send(order)?;
            }
        }
        self.conn.execute(
            "UPDATE runs SET signalled_ms = ?2 WHERE id = ?1",
            params![self.run_id, close_ms],
        )?;
        self.signalled_ms = Some(close_ms);
        Ok(())
    }

    fn snapshot_books(&self) -> Vec<SnapshotBook> {
        self.books
            .iter()
            .map(|b| {
                let equity = b.ledger.equity();
                SnapshotBook {
                    slot: b.slot.clone(),
                    strategy: b.instance.label().to_owned(),
                    cash: float(b.ledger.cash),
                    equity: float(equity),
                    start_cash: float(b.ledger.start_cash),
                    realized: float(b.ledger.realized),
                    fees: float(b.ledger.fees),
                    drawdown_pct: if b.peak > Decimal::ZERO {
                        float((b.peak - equity) / b.peak) * 100.0
                    } else {
                        0.0
                    },
                    positions: b
                        .ledger
                        .holdings
                        .iter()
                        .map(|h| SnapshotPosition {
                            symbol: h.symbol.clone(),
                            tag: h.tag.clone(),
                            side: side_text(h.side).into(),
                            quantity: float(h.quantity),
                            entry: float(h.entry()),
                            mark: float(h.mark),
                            unrealized: float(h.unrealized()),
                        })
                        .collect(),
                    signals: b.signals,
                    rejected: b.rejected,
                    calls: b.instance.stats().calls,
                    traps: b.instance.stats().traps,
                }
            })
            .collect()
    }

    /// Refreshes what the control API serves.
    fn publish(&self) {
        let Some(control) = &self.control else { return };
        let trades = recent_trades(self.conn, self.run_id, 50).unwrap_or_default();
        let books = self.snapshot_books();
        if let Ok(mut snap) = control.snapshot.lock() {
            snap.run_id = self.run_id;
            snap.state = self.state.as_str().into();
            snap.killed = self.killed;
            snap.bars = self.bars;
            snap.cursor_ms = self.cursor_ms;
            snap.feed = self.settings.feed_name.clone();
            snap.feed_health = self.feed_health.clone();
            snap.books = books;
            snap.trades = trades;
        }
    }
}
/// A book to open: its slot, the strategy for it, its parameters, and the
/// candidate it shadows.
struct BookPlan<'a> {
    slot: String,
    strategy: &'a LoadedStrategy,
    params: Params,
    candidate: Option<i64>,
}

/// Opens the book of `plan` in run `run_id` — created, or as stored when the
/// run resumes — with its strategy bound and initialised.
fn open_book(
    conn: &Connection,
    sandbox: &Sandbox,
    settings: &PaperSettings,
    run_id: i64,
    plan: BookPlan<'_>,
) -> anyhow::Result<Book> {
    let BookPlan {
        slot,
        strategy,
        params,
        candidate,
    } = plan;
    conn.execute(
        "INSERT OR IGNORE INTO artifacts (hash, name, version, contract, size, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![strategy.hash.to_hex(), strategy.info.name, strategy.info.version, strategy.contract, strategy.size as i64, now_ms()],
    )?;
    let start = dec(settings.cash)?;
    conn.execute(
        "INSERT OR IGNORE INTO books (run_id, slot, artifact_hash, params, start_cash, cash, realized, fees, peak_equity, day_ms, day_start_equity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, '0', '0', ?5, -1, ?5)",
        params![run_id, slot, strategy.hash.to_hex(), format!("{params:?}"), start.to_string()],
    )?;
    conn.execute(
        "UPDATE books SET artifact_hash = ?3 WHERE run_id = ?1 AND slot = ?2",
        params![run_id, slot, strategy.hash.to_hex()],
    )?;
    let (id, start_cash, cash, realized, fees, peak, day, day_start): (i64, String, String, String, String, String, i64, String) = conn.query_row(
        "SELECT id, start_cash, cash, realized, fees, peak_equity, day_ms, day_start_equity FROM books WHERE run_id = ?1 AND slot = ?2",
        params![run_id, slot],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
    )?;
    let mut ledger = Ledger::new(d(&start_cash));
    ledger.cash = d(&cash);
    ledger.realized = d(&realized);
    ledger.fees = d(&fees);
    let mut exits = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT symbol, tag, side, quantity, cost, fees, opened_ms, mark, mae, stop_loss, take_profit
             FROM positions WHERE book_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([id], |r| {
            let side: String = r.get(2)?;
            Ok((
                Holding {
                    symbol: r.get(0)?,
                    tag: r.get(1)?,
                    side: if side == "short" {
                        Side::Short
                    } else {
                        Side::Long
                    },
                    quantity: d(&r.get::<_, String>(3)?),
                    cost: d(&r.get::<_, String>(4)?),
                    fees: d(&r.get::<_, String>(5)?),
                    opened_ms: r.get(6)?,
                    mark: d(&r.get::<_, String>(7)?),
                    mae: d(&r.get::<_, String>(8)?),
                },
                r.get::<_, Option<f64>>(9)?,
                r.get::<_, Option<f64>>(10)?,
            ))
        })?;
        for row in rows {
            let (h, stop, target) = row?;
            exits.insert((h.symbol.clone(), h.tag.clone()), (stop, target));
            ledger.holdings.push(h);
        }
    }
    ledger
        .check()
        .map_err(|e| anyhow!("book {slot}: the stored ledger does not add up: {e}"))?;
    let binding = Binding {
        symbols: vec![settings.symbol.clone()],
        params,
        simulated_clock: false,
        seed: id as u64,
    };
    let instance = sandbox
        .instantiate(strategy, binding)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Book {
        id,
        slot,
        hash: strategy.hash,
        instance,
        ledger,
        exits,
        peak: d(&peak),
        day,
        day_start: d(&day_start),
        signals: 0,
        rejected: 0,
        candidate,
        returns: Returns::default(),
        active_returns: Returns::default(),
        equity_peak: float(d(&start_cash)),
        max_drawdown_pct: 0.0,
        last_equity: None,
        trades: 0,
        promoted_at: None,
    })
}

/// Shows `instance` one closed bar, closing at `close_ms`, with `portfolio`:
/// what a strategy is told at a bar, live and when its history is replayed.
fn show_bar(
    instance: &mut StrategyInstance,
    symbols: &[Symbol],
    candle: &Candle,
    close_ms: i64,
    portfolio: &keel_model::Portfolio,
    limits: keel_model::RiskLimits,
) -> Result<BatchOutcome, StrategyError> {
    let columns = one_bar(candle);
    instance.on_bars(&Batch {
        symbols,
        tick_times: &[close_ms],
        tick_bars: &[1],
        bars: columns.slice(0, 1),
        portfolio,
        limits,
    })
}

/// One candle as bar columns of symbol 0.
fn one_bar(candle: &Candle) -> BarColumns {
    let mut columns = BarColumns::default();
    columns.push(0, candle);
    columns
}

/// Held exposure of a book, for the shared checks.
fn exposure_of(ledger: &Ledger) -> Exposure {
    let mut e = Exposure {
        equity: float(ledger.equity()),
        ..Exposure::default()
    };
    for h in &ledger.holdings {
        *e.notional.entry(h.symbol.clone()).or_default() += float(h.quantity * h.mark);
        let key = (h.symbol.clone(), h.tag.clone());
        if !e.open.contains(&key) {
            e.open.push(key.clone());
        }
        e.sides.insert(key, h.side);
    }
    e
}

/// Books what the exchange did with this book's open orders.
fn book_exchange(tx: &Transaction<'_>, book: &mut Book) -> anyhow::Result<()> {
    type Row = (
        String,
        String,
        String,
        String,
        Option<f64>,
        Option<f64>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = {
        let mut stmt = tx.prepare(
            "SELECT o.client_order_id, o.symbol, o.tag, o.action, o.stop_loss, o.take_profit, p.state, p.reason,
                    f.fill_id, f.price, f.quantity, f.fee, f.time_ms
             FROM orders o JOIN paper_orders p ON p.client_order_id = o.client_order_id
             LEFT JOIN paper_fills f ON f.client_order_id = o.client_order_id
             WHERE o.book_id = ?1 AND o.state = 'open' AND p.state <> 'open'
             ORDER BY o.created_ms, o.client_order_id",
        )?;
        stmt.query_map([book.id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    for (
        id,
        symbol,
        tag,
        action,
        stop,
        target,
        state,
        reason,
        fill_id,
        price,
        quantity,
        fee,
        time_ms,
    ) in rows
    {
        let (new_state, why) = match (state.as_str(), fill_id) {
            ("filled", Some(fill_id)) => {
                let action = action_parse(&action).unwrap_or(Action::Close);
                let fill = LedgerFill {
                    symbol: symbol.clone(),
                    tag: tag.clone(),
                    action,
                    price: d(price.as_deref().unwrap_or("0")),
                    quantity: d(quantity.as_deref().unwrap_or("0")),
                    fee: d(fee.as_deref().unwrap_or("0")),
                    time_ms: time_ms.unwrap_or(0),
                };
                match book_fill(tx, book, &fill_id, Some(&id), &fill, "signal") {
                    Ok(()) => {
                        if matches!(action, Action::OpenLong | Action::OpenShort) {
                            let entry = book.exits.entry((symbol, tag)).or_insert((None, None));
                            entry.0 = stop.or(entry.0);
                            entry.1 = target.or(entry.1);
                        }
                        ("filled", None)
                    }
                    Err(e) => ("rejected", Some(e.to_string())),
                }
            }
            ("rejected", _) => {
                let why = reason.unwrap_or_default();
                tx.execute(
                    "INSERT INTO risk_events (time_ms, kind, book_id, detail) VALUES (?1, 'order-rejected', ?2, ?3)",
                    params![now_ms(), book.id, format!("{id}: {why}")],
                )?;
                ("rejected", Some(why))
            }
            (other, _) => (
                if other == "cancelled" {
                    "cancelled"
                } else {
                    "rejected"
                },
                reason,
            ),
        };
        tx.execute(
            "UPDATE orders SET state = ?2, reason = ?3, updated_ms = ?4 WHERE client_order_id = ?1",
            params![id, new_state, why, now_ms()],
        )?;
    }
    Ok(())
}

/// The fill closing all of `h` at `price`, with its fee.
fn closing_fill(
    h: &Holding,
    price: f64,
    fills: &FillModel,
    time_ms: i64,
) -> anyhow::Result<LedgerFill> {
    Ok(LedgerFill {
        symbol: h.symbol.clone(),
        tag: h.tag.clone(),
        action: Action::Close,
        price: dec(price)?,
        quantity: h.quantity,
        fee: dec(fills.fee(float(h.quantity), price))?,
        time_ms,
    })
}

/// Closes every position of `book` at `price_ref` (plus slippage, with
/// fees), as fills of `source` at the last booked bar; how many it closed.
fn flatten(
    tx: &Transaction<'_>,
    fills: &FillModel,
    book: &mut Book,
    price_ref: f64,
    cursor_ms: Option<i64>,
    source: &str,
) -> anyhow::Result<usize> {
    let time_ms = cursor_ms.unwrap_or(0);
    let mut closed = 0;
    while let Some(h) = book.ledger.holdings.first().cloned() {
        let price = fills.market_price(price_ref, h.side == Side::Short);
        let fill = closing_fill(&h, price, fills, time_ms)?;
        let fill_id = format!("{source}-{}-{}-{}-{time_ms}", book.id, h.symbol, h.tag);
        book_fill(tx, book, &fill_id, None, &fill, source)?;
        closed += 1;
    }
    persist_book(tx, book)?;
    Ok(closed)
}

/// Applies one fill to a book's ledger and records it (and the closed
/// trade, if any). A fill id already booked is skipped.
fn book_fill(
    tx: &Transaction<'_>,
    book: &mut Book,
    fill_id: &str,
    client_order_id: Option<&str>,
    fill: &LedgerFill,
    source: &str,
) -> anyhow::Result<()> {
    let seen: Option<i64> = tx
        .query_row("SELECT 1 FROM fills WHERE fill_id = ?1", [fill_id], |r| {
            r.get(0)
        })
        .optional()?;
    if seen.is_some() {
        return Ok(());
    }
    let trade = book.ledger.apply(fill).map_err(|e| anyhow!("{e}"))?;
    tracing::info!(
        book = %book.slot, fill_id, symbol = %fill.symbol, tag = %fill.tag, action = fill.action.as_str(),
        price = %fill.price, quantity = %fill.quantity, fee = %fill.fee, source, "fill booked"
    );
    tx.execute(
        "INSERT INTO fills (fill_id, client_order_id, book_id, symbol, tag, action, price, quantity, fee, time_ms, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            fill_id, client_order_id, book.id, fill.symbol, fill.tag, fill.action.as_str(), fill.price.to_string(),
            fill.quantity.to_string(), fill.fee.to_string(), fill.time_ms, source
        ],
    )?;
    if let Some(t) = trade {
        record_trade(tx, book.id, fill_id, &t, source)?;
        if !book
            .ledger
            .holdings
            .iter()
            .any(|h| h.symbol == t.symbol && h.tag == t.tag)
        {
            book.exits.remove(&(t.symbol.clone(), t.tag.clone()));
        }
    }
    Ok(())
}

fn record_trade(
    tx: &Transaction<'_>,
    book_id: i64,
    fill_id: &str,
    t: &ClosedTrade,
    reason: &str,
) -> rusqlite::Result<()> {
    tx.execute(
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

/// Writes a book's totals and positions.
fn persist_book(tx: &Transaction<'_>, book: &Book) -> rusqlite::Result<()> {
    let l = &book.ledger;
    tx.execute(
        "UPDATE books SET cash = ?2, realized = ?3, fees = ?4, peak_equity = ?5, day_ms = ?6, day_start_equity = ?7 WHERE id = ?1",
        params![
            book.id, l.cash.to_string(), l.realized.to_string(), l.fees.to_string(), book.peak.to_string(), book.day,
            book.day_start.to_string()
        ],
    )?;
    tx.execute("DELETE FROM positions WHERE book_id = ?1", [book.id])?;
    for h in &l.holdings {
        let (stop, target) = book
            .exits
            .get(&(h.symbol.clone(), h.tag.clone()))
            .copied()
            .unwrap_or((None, None));
        tx.execute(
            "INSERT INTO positions (book_id, symbol, tag, side, quantity, cost, fees, opened_ms, mark, mae, stop_loss, take_profit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                book.id, h.symbol, h.tag, side_text(h.side), h.quantity.to_string(), h.cost.to_string(),
                h.fees.to_string(), h.opened_ms, h.mark.to_string(), h.mae.to_string(), stop, target
            ],
        )?;
    }
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
                .apply(&fill?)
                .map_err(|e| anyhow!("book {id}: a stored fill does not apply: {e}"))?;
        }
        if replay.cash != d(cash) || replay.realized != d(realized) || replay.fees != d(fees) {
            bail!(
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
            bail!(
                "book {id}: {held} positions stored; its fills leave {}",
                replay.holdings.len()
            );
        }
        replay.check().map_err(|e| anyhow!("book {id}: {e}"))?;
    }
    Ok(books.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharpe_of_per_bar_returns() {
        struct Case {
            name: &'static str,
            returns: &'static [f64],
            sharpe: Option<f64>,
        }
        let cases = [
            Case {
                name: "no return yet",
                returns: &[],
                sharpe: None,
            },
            Case {
                name: "one return",
                returns: &[0.01],
                sharpe: None,
            },
            Case {
                name: "flat: zero, not unknown",
                returns: &[0.0, 0.0, 0.0],
                sharpe: Some(0.0),
            },
            Case {
                name: "a constant gain has no deviation to divide by",
                returns: &[0.01, 0.01],
                sharpe: None,
            },
            Case {
                name: "mean over sample standard deviation",
                returns: &[0.01, 0.03],
                sharpe: Some(0.02 / 0.0002_f64.sqrt()),
            },
            Case {
                name: "gains and losses that cancel",
                returns: &[0.01, -0.01, 0.03, -0.03],
                sharpe: Some(0.0),
            },
        ];
        for case in cases {
            let mut returns = Returns::default();
            for r in case.returns {
                returns.push(*r);
            }
            match (returns.sharpe(), case.sharpe) {
                (Some(got), Some(want)) => {
                    assert!((got - want).abs() < 1e-12, "{}: {got}", case.name)
                }
                (got, want) => assert_eq!(got, want, "{}", case.name),
            }
        }
    }
}
