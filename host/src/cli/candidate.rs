//! `keel candidate …`: submit, list, show, promote, reject and roll back
//! candidates, and the hot swap into a running `keel run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::TypedValueParser;

use keel_model::candles::format_time;
use keel_model::shown;

use crate::build_strategy;
use crate::candidates::{self, Actor, CandidateState, Gate};
use crate::control;
use crate::sandbox::{CompileCache, Metering, Sandbox, SandboxConfig, StrategyArtifact};
use crate::store::Store;

/// `keel candidate …`.
#[derive(Debug, Args)]
pub struct CandidateArgs {
    /// The gates' data and thresholds (default: `candidates.toml` if there
    /// is one, else the built-in defaults); a file named must exist.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CandidateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CandidateCommand {
    /// Store a component (or build a crate) as a candidate and run its
    /// validate and backtest gates.
    Submit {
        /// A `.wasm` component or a strategy crate directory.
        source: PathBuf,
        /// What it is, or why it was written (kept with it).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        by: Decider,
        /// The strategy or candidate it was derived from (hash or id).
        #[arg(long)]
        parent: Option<String>,
        /// Cargo's target directory, when a crate is built.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// Every candidate and its state.
    List {
        /// As JSON: `{"active": <sha256 or null>, "candidates": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// One candidate: lineage, every gate's figures, its history.
    Show {
        /// The candidate's id (`keel candidate list` names them).
        id: i64,
        /// All of it as one JSON object (for scripts and the evolution job).
        #[arg(long)]
        json: bool,
    },
    /// Make it the active strategy (hot-swapped into a running `keel run`).
    Promote {
        /// The candidate's id.
        id: i64,
        /// Promote although a gate has not passed (needs --reason; audited).
        #[arg(long)]
        force: bool,
        /// Why, for the audit log (needed with --force).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        by: Decider,
    },
    /// Refuse it for good.
    Reject {
        /// The candidate's id.
        id: i64,
        /// Why, for the audit log and the candidate's record.
        #[arg(long, default_value = "rejected by an operator")]
        reason: String,
        #[command(flatten)]
        by: Decider,
    },
    /// Restore the previous active strategy.
    Rollback {
        /// Why, for the audit log.
        #[arg(long, default_value = "operator rollback")]
        reason: String,
        #[command(flatten)]
        by: Decider,
    },
}

/// Who submits or decides, as the candidates, the audit log and the
/// deployments record it: one vocabulary for every `--by`.
#[derive(Debug, Args)]
pub struct Decider {
    /// `operator` (a person) or `evolution` (the nightly job).
    #[arg(
        long = "by",
        default_value = "operator",
        value_parser = clap::builder::PossibleValuesParser::new(["operator", "evolution"])
            .try_map(|by| Actor::parse(&by))
    )]
    pub actor: Actor,
}

fn gate_line(g: &candidates::GateResult) -> String {
    format!(
        "{:<9} {}  {}",
        g.gate,
        if g.passed() { "PASS" } else { "FAIL" },
        g.detail
    )
}

/// A gate's figures for a reader: each check of validation; the backtest's
/// metrics beside the active strategy's on the same data; the paper run's.
/// Figures of another shape are shown as they were stored.
fn figure_lines(g: &candidates::GateResult) -> Vec<String> {
    let f = &g.figures;
    let number = |v: &serde_json::Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.digits$}"))
    };
    match g.gate {
        Gate::Validate if f["checks"].is_array() => f["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mark = if c["ok"].as_bool() == Some(true) {
                    "ok  "
                } else {
                    "FAIL"
                };
                format!(
                    "{mark} {}: {}",
                    c["check"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                )
            })
            .collect(),
        Gate::Backtest if f["candidate"].is_object() => {
            let data: Vec<&str> = f["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            let (c, a) = (&f["candidate"], &f["active"]);
            let mut lines = vec![
                format!("on {}", data.join(", ")),
                format!(
                    "{:<16} {:>12} {:>12}",
                    "",
                    "candidate",
                    if a.is_object() {
                        "active"
                    } else {
                        "(no active)"
                    }
                ),
            ];
            // Label, key, digits, unit, scale.
            let rows: [(&str, &str, usize, &str, f64); 6] = [
                ("trades", "trades", 0, "", 1.0),
                ("total return", "total_return_pct", 2, "%", 1.0),
                ("Sharpe", "sharpe", 2, "", 1.0),
                ("max drawdown", "max_drawdown_pct", 2, "%", 1.0),
                ("profit factor", "profit_factor", 2, "", 1.0),
                ("win rate", "win_rate", 1, "%", 100.0),
            ];
            for (label, key, digits, unit, scale) in rows {
                let cell = |side: &serde_json::Value| match side[key].as_f64() {
                    Some(x) => format!("{:.digits$}{unit}", x * scale),
                    None if side.is_object() => "-".to_owned(),
                    None => String::new(),
                };
                let line = format!("{label:<16} {:>12} {:>12}", cell(c), cell(a));
                lines.push(line.trim_end().to_owned());
            }
            let oos: Vec<String> = f["out_of_sample_return_pct"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{}%", number(r, 2)))
                .collect();
            if !oos.is_empty() {
                lines.push(format!(
                    "walk-forward out-of-sample returns: {}",
                    oos.join(", ")
                ));
            }
            lines
        }
        Gate::Paper if f["trades"].is_number() => {
            let mut parts = Vec::new();
            if f["bars"].is_number() {
                parts.push(format!("{} bars", f["bars"]));
            }
            parts.push(format!("{} trades", f["trades"]));
            parts.push(format!("P&L {}", number(&f["pnl"], 2)));
            // Earlier runs stored the drawdown at the verdict.
            if let Some(d) = f["max_drawdown_pct"]
                .as_f64()
                .or(f["drawdown_pct"].as_f64())
            {
                parts.push(format!("max drawdown {d:.2}%"));
            }
            parts.push(format!(
                "Sharpe per bar {} (active strategy, same bars: {})",
                number(&f["sharpe_per_bar"], 4),
                number(&f["active_sharpe_per_bar"], 4)
            ));
            vec![format!("run {}: {}", f["run"], parts.join(", "))]
        }
        _ => vec![f.to_string()],
    }
}

/// How long a hot swap may take: a cold compile and a warm-up.
const SWAP_TIMEOUT: Duration = Duration::from_secs(40);

/// Tells a running engine (if any) to swap to `hash`.
fn hot_swap(db: &Path, hash: &str, actor: &str, reason: &str) -> anyhow::Result<()> {
    let not_swapped = || {
        format!(
            "recorded, but the running keel run did not swap to {} (the next run starts with it)",
            &hash[..12.min(hash.len())]
        )
    };
    let body = format!("{hash} {actor} {reason}");
    let body = match control::request_within(db, "POST", "/swap", &body, SWAP_TIMEOUT) {
        Ok((200, body)) => body,
        Ok((status, body)) => bail!("{}: {status} /swap: {}", not_swapped(), body.trim()),
        Err(e) => match e.run_on(db) {
            control::RunOn::None => {
                println!(
                    "no keel run is trading on {}; the next one starts with it",
                    db.display()
                );
                return Ok(());
            }
            control::RunOn::Starting(pid) => {
                bail!("{}: {}", not_swapped(), control::starting(pid, db))
            }
            control::RunOn::Unreached => return Err(anyhow::Error::from(e).context(not_swapped())),
        },
    };
    let reply: control::Reply = serde_json::from_str(&body)?;
    if let control::Reply::Swapped {
        slot,
        warmed_bars,
        after_ms,
        ..
    } = reply
    {
        println!(
            "hot-swapped into the running engine: book {slot}, warmed on {warmed_bars} bars, trading from the bar after {}",
            after_ms.map_or("-".into(), format_time)
        );
    }
    Ok(())
}

/// `keel candidate …`.
pub(super) fn run(args: &CandidateArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    let config = candidates::load_named_config(args.config.as_deref())?;
    let mut store = Store::open(db)?;
    match &args.command {
        CandidateCommand::Submit {
            source,
            note,
            by,
            parent,
            target_dir,
        } => {
            let by = by.actor;
            let file = if source.is_dir() {
                build_strategy::build(source, target_dir.as_deref())?
                    .into_iter()
                    .next()
                    .context("no component built")?
            } else {
                source.clone()
            };
            let parent = parent
                .as_deref()
                .map(|p| candidates::resolve_parent(store.conn(), p))
                .transpose()?;
            let sandbox = Sandbox::new(cache.sandbox_config(SandboxConfig {
                metering: Metering::Fuel,
                ..SandboxConfig::default()
            }))?;
            let artifact = StrategyArtifact::read(&file, sandbox.limits().max_wasm_bytes)?;
            let submission = candidates::Submission {
                note: note.clone(),
                submitted_by: by,
                parent,
                source: source.display().to_string(),
            };
            let (id, existed, gates) =
                candidates::submit(store.conn(), &sandbox, &config, &artifact, &submission)?;
            if existed {
                println!(
                    "already submitted as candidate {id} ({})",
                    artifact.hash.short()
                );
                return Ok(true);
            }
            let c = candidates::get(store.conn(), id)?;
            println!(
                "candidate {id}: {} {} ({}) — {}",
                c.name,
                shown::text(&c.version),
                artifact.hash.short(),
                c.state
            );
            for g in &gates {
                println!("  {}", gate_line(g));
                if g.gate == Gate::Backtest {
                    for line in figure_lines(g) {
                        println!("            {line}");
                    }
                }
            }
            let backtest_failed = gates
                .iter()
                .any(|g| g.gate == Gate::Backtest && !g.passed());
            if backtest_failed && config.backtest.data.is_empty() {
                println!(
                    "  hint      that was the built-in sample, a seeded random walk on which no strategy is expected to earn: give the gate real candles with [backtest] data in a candidates file (see examples/candidates.toml)"
                );
            }
            if c.state == CandidateState::Gated && control::serving_pid(db).is_some() {
                println!("  paper     next: the running keel run shadows it once a slot is free");
            }
            Ok(gates.iter().all(candidates::GateResult::passed))
        }
        CandidateCommand::List { json } => {
            let all = candidates::list(store.conn())?;
            let active = candidates::active(store.conn())?;
            if *json {
                let value = serde_json::json!({
                    "active": active,
                    "candidates": all.iter().map(|c| serde_json::json!({
                        "id": c.id, "state": c.state, "name": c.name, "version": c.version,
                        "sha256": c.hash, "parent": c.parent, "submitted_by": c.submitted_by,
                        "note": c.note, "created": format_time(c.created_ms),
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(true);
            }
            if all.is_empty() {
                println!("no candidates");
            }
            // Columns as wide as their longest entry: names come from
            // strategies, of any length.
            let width = |field: fn(&candidates::Candidate) -> &str| {
                all.iter()
                    .map(|c| shown::text(field(c)).to_string().chars().count())
                    .max()
                    .unwrap_or(0)
            };
            let (name_width, version_width) = (width(|c| &c.name), width(|c| &c.version));
            for c in &all {
                let mark = if active.as_deref() == Some(c.hash.as_str()) {
                    " (active)"
                } else {
                    ""
                };
                println!(
                    "{:>4}  {:<10} {:<name_width$}  {:<version_width$}  {}  {}  {}{mark}",
                    c.id,
                    c.state,
                    c.name,
                    shown::text(&c.version),
                    &c.hash[..12],
                    format_time(c.created_ms),
                    shown::line(&c.note)
                );
            }
            if let Some(hash) = active.filter(|a| !all.iter().any(|c| c.hash == *a)) {
                println!(
                    "active: {}, deployed without being a candidate",
                    candidates::describe_hash(store.conn(), &hash)?
                );
            }
            Ok(true)
        }
        CandidateCommand::Show { id, json } => {
            let conn = store.conn();
            let c = candidates::get(conn, *id)?;
            let lineage = candidates::lineage(conn, c.id)?;
            let gates = candidates::gates(conn, *id)?;
            let history = candidates::history(conn, *id, &c.hash)?;
            if *json {
                let value = serde_json::json!({
                    "id": c.id, "sha256": c.hash, "name": c.name, "version": c.version,
                    "state": c.state, "source": c.source, "submitted_by": c.submitted_by,
                    "note": c.note, "lineage": lineage,
                    "gates": gates.iter().map(|(g, at)| serde_json::json!({
                        "gate": g.gate, "passed": g.passed(), "detail": g.detail,
                        "figures": g.figures, "time": format_time(*at),
                    })).collect::<Vec<_>>(),
                    "history": history.iter().map(|(at, actor, action, detail)| serde_json::json!({
                        "time": format_time(*at), "actor": actor, "action": action, "detail": detail,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(true);
            }
            println!(
                "candidate {}  {} {}  state {}",
                c.id,
                c.name,
                shown::text(&c.version),
                c.state
            );
            println!("sha256     {}", c.hash);
            println!("source     {}", c.source);
            println!("by         {}", c.submitted_by);
            let ancestors = lineage
                .iter()
                .map(|hash| candidates::describe_hash(conn, hash))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            match ancestors.split_first() {
                None => println!("parent     -"),
                Some((parent, older)) => {
                    println!("parent     {parent}");
                    for ancestor in older {
                        println!("           <- {ancestor}");
                    }
                }
            }
            println!("note       {}", shown::line(&c.note));
            println!("gates");
            for (g, at) in &gates {
                println!("  {}  {}", format_time(*at), gate_line(g));
                for line in figure_lines(g) {
                    println!("             {line}");
                }
            }
            println!("history");
            for (at, actor, action, detail) in history {
                println!("  {}  {actor:<13} {action}: {detail}", format_time(at));
            }
            Ok(true)
        }
        CandidateCommand::Promote {
            id,
            force,
            reason,
            by,
        } => {
            let force_reason = match (force, reason) {
                (true, Some(r)) => Some(r.as_str()),
                (true, None) => bail!("--force needs --reason"),
                (false, _) => None,
            };
            let c = candidates::promote(store.conn(), &config, *id, by.actor, force_reason)?;
            println!(
                "candidate {} ({} {}) is the active strategy",
                c.id,
                c.name,
                shown::text(&c.version)
            );
            let why = reason
                .clone()
                .unwrap_or_else(|| format!("promote candidate {id}"));
            hot_swap(db, &c.hash, by.actor.as_str(), &why)?;
            Ok(true)
        }
        CandidateCommand::Reject { id, reason, by } => {
            candidates::reject(store.conn(), *id, by.actor, reason)?;
            println!("candidate {id} rejected");
            Ok(true)
        }
        CandidateCommand::Rollback { reason, by } => {
            let previous = candidates::rollback(store.conn(), by.actor, reason)?;
            println!("rolled back to {}", &previous[..12]);
            hot_swap(db, &previous, by.actor.as_str(), reason)?;
            Ok(true)
        }
    }
}
