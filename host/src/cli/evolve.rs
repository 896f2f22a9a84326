//! `keel evolve`: run a night now (`--once`), and read the record of past
//! nights (`history`, `show NIGHT`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use keel_model::candles::format_time;
use keel_model::shown;

use crate::candidates;
use crate::evolve::config::EvolveConfig;
use crate::evolve::night::{self, NightSettings};
use crate::evolve::record;
use crate::sandbox::{CompileCache, Metering};
use crate::scaffold;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct EvolveArgs {
    /// Run one night now and exit (for cron or a systemd timer).
    #[arg(long)]
    pub once: bool,
    /// The night's settings; a missing file is the defaults (offline).
    #[arg(long, default_value = "evolve.toml", value_name = "FILE")]
    pub config: PathBuf,
    /// The candidate gates' data and thresholds (default: `candidates.toml`
    /// if there is one, else the built-in defaults); a file named must exist.
    #[arg(long, value_name = "FILE")]
    pub candidates: Option<PathBuf>,
    /// Keel's strategy-sdk crate, for the crates a night writes; default:
    /// the one this keel was built from.
    #[arg(long, value_name = "DIR")]
    pub sdk: Option<PathBuf>,
    /// Cargo target directory candidate crates build in; default:
    /// `CARGO_TARGET_DIR` when set, else `target` under the config's workdir.
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<EvolveCommand>,
}

#[derive(Debug, Subcommand)]
pub enum EvolveCommand {
    /// Past nights: decision, candidates and how far each got, predictions, cost.
    History {
        /// Nights to show, newest first.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Every step of one night, with what went in and came out.
    Show {
        /// The night's number (`keel evolve history` lists them).
        night: i64,
        /// As JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(args: &EvolveArgs, db: &Path, cache: &CompileCache) -> anyhow::Result<bool> {
    let mut store = Store::open(db)?;
    match &args.command {
        Some(EvolveCommand::History { last, json }) => {
            let nights = record::nights(store.conn(), (*last).clamp(1, 10_000))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&nights)?);
            } else if nights.is_empty() {
                println!("no night on record in {}", db.display());
            } else {
                for n in &nights {
                    print_night(n);
                }
            }
            Ok(true)
        }
        Some(EvolveCommand::Show { night, json }) => {
            let n = record::night(store.conn(), *night)
                .with_context(|| format!("night {night}: not on record in {}", db.display()))?;
            let steps = record::steps(store.conn(), *night)?;
            if *json {
                let out = serde_json::json!({ "night": n, "steps": steps });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_night(&n);
                for s in &steps {
                    println!(
                        "\n[{}] {} by {} — {} in {} ms{}",
                        s.seq,
                        s.kind,
                        s.actor,
                        if s.ok { "ok" } else { "NO" },
                        s.duration_ms,
                        s.attempt
                            .map_or(String::new(), |a| format!(" (attempt {a})"))
                    );
                    if s.input_tokens + s.output_tokens > 0 {
                        println!(
                            "  tokens {} in, {} out; ${:.4}",
                            s.input_tokens, s.output_tokens, s.usd
                        );
                    }
                    println!("  in:  {}", block(&s.input));
                    println!("  out: {}", block(&s.output));
                }
            }
            Ok(true)
        }
        None if !args.once => {
            anyhow::bail!("keel evolve: pass --once to run a night now, or history / show NIGHT")
        }
        None => {
            // Background work: it yields every core to trading.
            crate::sandbox::lowest_priority();
            let config = EvolveConfig::load(&args.config)?;
            let candidates_config = candidates::load_named_config(args.candidates.as_deref())?;
            let sdk = args.sdk.clone().or_else(scaffold::default_sdk).context(
                "the strategy-sdk this keel was built from is gone: pass --sdk <keel>/strategy-sdk",
            )?;
            let target_dir = args.target_dir.clone().unwrap_or_else(|| {
                night::default_target(&config.workdir, std::env::var_os("CARGO_TARGET_DIR"))
            });
            let sandbox = super::sandbox(Metering::Fuel, cache)?;
            let settings = NightSettings {
                config,
                candidates: candidates_config,
                db: db.to_owned(),
                sdk,
                target_dir,
            };
            let outcome = night::run(store.conn(), &sandbox, &settings)?;
            for id in &outcome.abandoned {
                println!("night {id} had not finished: closed as abandoned");
            }
            let n = record::night(store.conn(), outcome.night)?;
            print_night(&n);
            Ok(true)
        }
    }
}

/// A step's input or output as shown under its heading: what a model
/// wrote (or a strategy named) reaches the terminal escaped, line by line.
fn block(text: &str) -> String {
    text.lines()
        .map(|l| shown::whole(l).to_string())
        .collect::<Vec<_>>()
        .join("\n       ")
}

fn print_night(n: &record::Night) {
    println!(
        "night {} ({}) {}: {} — {}; ${:.4}, {} tokens; {}",
        n.id,
        format_time(n.started_ms),
        n.status,
        n.decision.as_deref().unwrap_or("no decision"),
        shown::line(&n.note),
        n.usd,
        n.tokens,
        n.providers
    );
    for a in &n.attempts {
        println!(
            "  {} ({}): {} at {}{}",
            shown::text(&a.slug),
            shown::line(&a.brief),
            if a.passed { "passed" } else { "stopped" },
            a.reached,
            a.candidate
                .map_or(String::new(), |c| format!(", candidate {c}"))
        );
    }
    for p in &n.predictions {
        let grade = match (p.hit, p.brier) {
            (Some(h), Some(b)) => format!("{} (Brier {b:.3})", if h { "held" } else { "failed" }),
            _ if p.outcome.is_none() && p.hit.is_none() => format!("due {}", format_time(p.due_ms)),
            _ => "void".into(),
        };
        println!(
            "  prediction: {} [{} {} {} at p={}] {grade}",
            shown::line(&p.claim),
            shown::text(&p.metric),
            p.comparator,
            p.threshold,
            p.probability
        );
    }
}
