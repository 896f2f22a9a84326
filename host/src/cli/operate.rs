//! The commands that act on a running `keel run` through its control API:
//! `keel status`, `positions`, `trades`, `pause`, `resume` and `kill` (with
//! the kill file as the fallback when the API does not answer). The first
//! three read the database's record of its last run when no run is live,
//! and say so.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use keel_model::candles::format_time;
use keel_model::shown;

use crate::control::{self, Snapshot};

/// Output format of the read-only commands.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print the engine's JSON as it came.
    #[arg(long)]
    pub json: bool,
}

/// The reason given with a state change.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// Why, for the audit log.
    #[arg(long, default_value = "operator request")]
    pub reason: String,
}

/// `keel resume`'s arguments.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub reason: ReasonArgs,
    /// Also lift a halt the kill switch left: a plain resume refuses to,
    /// so a kill is never undone by habit.
    #[arg(long)]
    pub after_kill: bool,
}
fn call(db: &Path, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let (status, body) = control::request(db, method, path, body)?;
    if status != 200 {
        bail!("{} {path}: {}", status, shown::line(body.trim()));
    }
    Ok(body)
}

/// A 200 reply to `path` read as the engine's JSON; anything else (another
/// process on the port) is said as that, in one line.
fn engine_reply<T: serde::de::DeserializeOwned>(path: &str, body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body).map_err(|e| {
        anyhow::anyhow!(
            "200 {path}: not the engine's reply ({e}): {}",
            shown::text(body.trim())
        )
    })
}

/// What the read-only commands show: the live run's figures, or the
/// database's record of its last run when no run is live.
enum Source {
    Live(Snapshot),
    Record(crate::engine::record::Record),
}

impl Source {
    fn of(db: &Path) -> anyhow::Result<Source> {
        match control::request(db, "GET", "/status", "") {
            Ok((200, body)) => Ok(Source::Live(engine_reply("/status", &body)?)),
            Ok((status, body)) => bail!("{status} /status: {}", shown::line(body.trim())),
            Err(e) => match e.run_on(db) {
                control::RunOn::None => Source::record(db),
                control::RunOn::Starting(pid) => bail!(control::starting(pid, db)),
                control::RunOn::Unreached => Err(e.into()),
            },
        }
    }

    fn record(db: &Path) -> anyhow::Result<Source> {
        match crate::engine::record::last_run(db)? {
            Some(record) => Ok(Source::Record(record)),
            None => bail!(
                "{}: no run yet: start one with `keel run --paper`",
                db.display()
            ),
        }
    }

    fn snapshot(&self) -> &Snapshot {
        match self {
            Source::Live(s) => s,
            Source::Record(r) => &r.snapshot,
        }
    }

    /// One line saying the figures are a record, not live (none if live).
    fn note(&self, db: &Path) -> Option<String> {
        let Source::Record(r) = self else { return None };
        let ended = r
            .ended_ms
            .map_or(String::new(), |t| format!(" at {}", format_time(t)));
        let status = match r.status.as_str() {
            "running" => "ended without a word (killed or crashed); `keel run` with the same settings resumes it".to_owned(),
            "interrupted" => format!("interrupted{ended}; `keel run` with the same settings resumes it"),
            other => format!("{other}{ended}"),
        };
        Some(format!(
            "no run is live on {}: the record of {} run {}, {status}",
            db.display(),
            r.mode,
            r.snapshot.run_id
        ))
    }

    /// The JSON of the figures, marked with where they come from.
    fn json(&self) -> anyhow::Result<String> {
        let mut value = serde_json::to_value(self.snapshot())?;
        // As the live /status: the trades are `keel trades`'.
        value["trades"] = serde_json::json!([]);
        value["live"] = matches!(self, Source::Live(_)).into();
        if let Source::Record(r) = self {
            value["record"] = serde_json::json!({
                "mode": r.mode, "status": r.status, "ended_ms": r.ended_ms,
            });
        }
        Ok(value.to_string())
    }
}

/// A live venue's health in one line: reconciled or why not, the rate
/// limit's headroom, the dead man's switch, orders of unknown outcome.
fn venue_line(v: &crate::venues::kraken::VenueHealth) -> String {
    let reconciled = match (&v.problem, v.reconciled) {
        (_, true) => "reconciled".to_owned(),
        (Some(p), false) => format!("NOT reconciled ({p}): reduce-only"),
        (None, false) => "not reconciled yet: reduce-only".to_owned(),
    };
    let switch = match v.switch_fires_ms {
        Some(at) => format!(
            "dead man's switch fires {} unless refreshed",
            format_time(at)
        ),
        None if v.switch_off_for_stops => {
            "dead man's switch off while stop-losses rest at Kraken".to_owned()
        }
        None => "dead man's switch off".to_owned(),
    };
    format!(
        "venue {}: {reconciled}; REST headroom {:.0}%; {switch}; {} order(s) of unknown outcome",
        v.venue,
        v.rest_headroom * 100.0,
        v.unknown_orders
    )
}

/// `keel status`.
pub(super) fn status(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let source = Source::of(db)?;
    if args.json {
        println!("{}", source.json()?);
        return Ok(true);
    }
    if let Some(note) = source.note(db) {
        println!("{note}");
    }
    let s = source.snapshot();
    let at = s.cursor_ms.map_or("-".to_owned(), format_time);
    println!(
        "run {}  {}  state {}{}  bars {}  last bar {at}",
        s.run_id,
        s.feed,
        s.state,
        if s.killed { " (killed)" } else { "" },
        s.bars
    );
    let health = &s.feed_health;
    if health.consecutive_failures > 0 || s.feed.starts_with("kraken:") {
        println!(
            "feed: last bar {}, {} failed poll(s) in a row{}",
            health
                .last_bar_ms
                .map_or("none yet".to_owned(), format_time),
            health.consecutive_failures,
            health
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(" — {e}"))
        );
    }
    if let Some(v) = &s.venue {
        println!("{}", venue_line(v));
    }
    for b in &s.books {
        println!(
            "{:<20} equity {:>12.2}  cash {:>12.2}  drawdown {:>5.2}%  positions {}  signals {} ({} rejected)  calls {}  traps {}",
            b.slot,
            b.equity,
            b.cash,
            b.drawdown_pct,
            b.positions.len(),
            b.signals,
            b.rejected,
            b.calls,
            b.traps
        );
    }
    Ok(true)
}

/// `keel positions`.
pub(super) fn positions(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let source = Source::of(db)?;
    let s = source.snapshot();
    if args.json {
        match &source {
            Source::Live(_) => println!("{}", call(db, "GET", "/positions", "")?),
            Source::Record(_) => println!("{}", control::positions_json(s)),
        }
        return Ok(true);
    }
    if let Some(note) = source.note(db) {
        println!("{note}");
    }
    let mut any = false;
    for b in &s.books {
        for p in &b.positions {
            any = true;
            println!(
                "{:<20} {:<10} {:<8} {:<5} qty {:>14.8}  entry {:>12}  mark {:>12}  unrealized {:>+10.2}",
                b.slot,
                shown::text(&p.symbol),
                shown::text(if p.tag.is_empty() { "-" } else { &p.tag }),
                p.side,
                p.quantity,
                shown::price(p.entry),
                shown::price(p.mark),
                p.unrealized
            );
        }
    }
    if !any {
        println!("no open positions");
    }
    Ok(true)
}

/// `keel trades`.
pub(super) fn trades(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    let source = Source::of(db)?;
    let trades: Vec<control::SnapshotTrade> = match &source {
        Source::Live(_) => engine_reply("/trades", &call(db, "GET", "/trades", "")?)?,
        Source::Record(r) => r.snapshot.trades.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&trades)?);
        return Ok(true);
    }
    if let Some(note) = source.note(db) {
        println!("{note}");
    }
    if trades.is_empty() {
        println!("no closed trades yet");
    }
    for t in trades {
        println!(
            "{:<20} {:<10} {:<5} {} → {}  qty {:>12.8}  {:>10} → {:>10}  P&L {:>+10.2}  ({})",
            t.slot,
            shown::text(&t.symbol),
            t.side,
            format_time(t.opened_ms),
            format_time(t.closed_ms),
            t.quantity,
            shown::price(t.entry),
            shown::price(t.exit),
            t.pnl,
            t.exit_reason
        );
    }
    Ok(true)
}

/// `keel candidates`: every candidate with its gates' verdicts, and how
/// one in shadow is doing in the live run (or did in the last one).
pub(super) fn candidates(args: &ShowArgs, db: &Path) -> anyhow::Result<bool> {
    // Candidates may be submitted before any run.
    let source = match crate::engine::record::last_run(db)? {
        None => None,
        Some(_) => Some(Source::of(db)?),
    };
    let conn = crate::store::open_record(db)?;
    let run_id = source.as_ref().map_or(0, |s| s.snapshot().run_id);
    let listed = crate::api::v1::from_ledger("candidates", &conn, run_id)?.unwrap_or_default();
    let shadow = |id: i64| {
        source.as_ref().and_then(|s| {
            s.snapshot()
                .books
                .iter()
                .find(|b| b.slot == format!("candidate-{id}"))
                .map(|b| (b.equity, b.start_cash))
        })
    };
    let mut rows = Vec::new();
    for c in listed.as_array().into_iter().flatten() {
        let id = c["id"].as_i64().unwrap_or_default();
        let mut c = c.clone();
        if let Some((equity, start)) = shadow(id) {
            c["shadow"] = serde_json::json!({ "equity": equity, "start_cash": start });
        }
        rows.push(c);
    }
    if args.json {
        let value = serde_json::json!({
            "live": matches!(source, Some(Source::Live(_))),
            "run_id": source.as_ref().map(|s| s.snapshot().run_id),
            "candidates": rows,
        });
        println!("{value}");
        return Ok(true);
    }
    match &source {
        Some(Source::Live(s)) => println!("run {} is live on {}", s.run_id, db.display()),
        Some(record) => println!("{}", record.note(db).unwrap_or_default()),
        None => println!("no run has been booked on {} yet", db.display()),
    }
    if rows.is_empty() {
        println!("no candidates: submit one with `keel candidate submit FILE`");
    }
    for c in &rows {
        let text = |key: &str| shown::text(c[key].as_str().unwrap_or("?")).to_string();
        let gates: Vec<String> = c["gates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                format!(
                    "{} {}",
                    g["gate"].as_str().unwrap_or("?"),
                    g["verdict"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let shadow = match (
            c["shadow"]["equity"].as_f64(),
            c["shadow"]["start_cash"].as_f64(),
        ) {
            (Some(e), Some(s)) if s > 0.0 => {
                format!("; in shadow: equity {e:.2} ({:+.2}%)", (e - s) / s * 100.0)
            }
            _ => String::new(),
        };
        println!(
            "{:>4}  {:<10} {} {}  {}{shadow}",
            c["id"],
            text("state"),
            text("name"),
            text("version"),
            match gates.is_empty() {
                true => "not judged yet".to_owned(),
                false => gates.join(", "),
            },
        );
    }
    Ok(true)
}

/// `keel pause`, `keel resume` and `keel kill`.
pub(super) fn command(
    which: &str,
    args: &ReasonArgs,
    after_kill: bool,
    db: &Path,
) -> anyhow::Result<bool> {
    let path = match after_kill {
        true => format!("/{which}?after_kill=true"),
        false => format!("/{which}"),
    };
    let answer = control::request(db, "POST", &path, &args.reason);
    if which == "kill" {
        // Only the engine's own account of the kill is a kill; any other
        // answer (the engine refusing, or another process on a port a
        // crashed run left in its control file) goes by the kill file.
        let said = match &answer {
            Ok((200, body)) => match serde_json::from_str::<control::Reply>(body) {
                Ok(control::Reply::Killed { .. }) => None,
                _ => Some(format!(
                    "200 /kill: not a kill's reply: {}",
                    shown::text(body.trim())
                )),
            },
            Ok((status, body)) => Some(format!("{status} /kill: {}", shown::line(body.trim()))),
            Err(unreachable) => Some(unreachable.to_string()),
        };
        if let Some(said) = said {
            // The run holding the database's lock, which takes the file
            // (not a pid a control file names: it may have ended, and the
            // pid gone to another process).
            let engine = control::lock_holder(db);
            return kill_by_file(db, &args.reason, &said, engine);
        }
    }
    let body = match answer {
        Ok((200, body)) => body,
        Ok((status, body)) => bail!("{status} /{which}: {}", shown::line(body.trim())),
        Err(unreachable) => return Err(unreachable.into()),
    };
    let reply: control::Reply = engine_reply(&format!("/{which}"), &body)?;
    match reply {
        control::Reply::State { state } => println!("trading state {state}"),
        control::Reply::Killed {
            latency_us,
            positions_closed,
            orders_cancelled,
            venue,
        } => {
            println!(
                "killed in {:.3} ms: strategies stopped, orders blocked; {positions_closed} position(s) closed, {orders_cancelled} order(s) cancelled; trading HALTED",
                latency_us as f64 / 1000.0
            );
            if let Some(venue) = venue {
                println!("venue: {venue}");
            }
        }
        control::Reply::Swapped { .. } => println!("{body}"),
    }
    Ok(true)
}

/// How long `keel kill` waits for an engine to take its kill file.
const KILL_FILE_WAIT: Duration = Duration::from_secs(3);

/// The kill switch's fallback when the API does not answer: `<db>.kill`,
/// which the engine looks for before every bar, while it waits for one,
/// and at start.
fn kill_by_file(db: &Path, reason: &str, said: &str, engine: Option<u32>) -> anyhow::Result<bool> {
    eprintln!("{said}");
    let file = control::write_kill_file(db, reason).with_context(|| {
        format!(
            "the kill was not delivered: cannot write {}",
            control::kill_file(db).display()
        )
    })?;
    let Some(pid) = engine else {
        println!(
            "wrote {}: no engine is running on {}; the next keel run on it starts by killing (trading HALTED)",
            file.display(),
            db.display()
        );
        return Ok(true);
    };
    let asked = Instant::now();
    while file.exists() && asked.elapsed() < KILL_FILE_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    if file.exists() {
        println!(
            "wrote {}: keel run (pid {pid}) has not taken it within {} s; it halts before its next bar — if it never does, stop it with `kill -9 {pid}` (a restart resumes, then halts)",
            file.display(),
            KILL_FILE_WAIT.as_secs()
        );
        return Ok(false);
    }
    println!(
        "killed through {} in {:.0} ms: keel run (pid {pid}) took it; strategies stopped, positions closed, trading HALTED",
        file.display(),
        asked.elapsed().as_secs_f64() * 1e3
    );
    Ok(true)
}
