//! The `keel` command line: the only module that knows clap. Each command
//! group's options and printing live in a file of their own; the modules
//! below them take plain settings.

mod backtest;
mod candidate;
mod data;
mod dev;
mod download;
mod evolve;
mod operate;
mod quickstart;
mod report;
mod run;
mod strategy;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::ranges;
use crate::sandbox::{CompileCache, Metering, Sandbox, SandboxConfig};

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Hot-reloadable host for sandboxed WebAssembly trading strategies"
)]
pub struct Cli {
    /// Where compiled components are cached (default: $KEEL_CACHE_DIR, else ~/.cache/keel).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may take on disk; the least recently used
    /// code goes first.
    #[arg(
        long,
        global = true,
        env = "KEEL_CACHE_MAX_MB",
        default_value_t = crate::sandbox::DEFAULT_DISK_CACHE_BYTES >> 20,
        value_name = "MB",
        value_parser = ranges::CACHE_MAX_MB.parser()
    )]
    pub cache_max_mb: u64,
    /// The SQLite database (candles and the ledger).
    #[arg(
        long,
        global = true,
        env = "KEEL_DB",
        default_value = "keel.db",
        value_name = "FILE"
    )]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Build, inspect, validate and run strategy components.
    #[command(subcommand)]
    Strategy(strategy::StrategyCommand),
    /// Import, generate and list candle data.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Backtest strategies (× a parameter grid) on candle files or stored series.
    Backtest(backtest::BacktestArgs),
    /// Build the example strategies, validate them and run each over the
    /// sample data: the whole path from source to signals, on built-in defaults.
    Quickstart(quickstart::QuickstartArgs),
    /// Trade strategies on a feed: `--paper` books every order and fill in
    /// the ledger through a paper exchange. Serves a control API on loopback.
    Run(Box<run::RunArgs>),
    /// Show a running `keel run`: state, equity, positions per book.
    Status(operate::ShowArgs),
    /// Show the open positions of a running `keel run`.
    Positions(operate::ShowArgs),
    /// Show the latest closed trades of a running `keel run`.
    Trades(operate::ShowArgs),
    /// Show every candidate with its gates' verdicts, and how those in
    /// shadow are doing (live, or as the last run left them).
    Candidates(operate::ShowArgs),
    /// Reduce-only: no new exposure until `keel resume`.
    Pause(operate::ReasonArgs),
    /// Back to ACTIVE trading (a halt the kill switch left only with
    /// --after-kill).
    Resume(operate::ResumeArgs),
    /// Kill switch: stop every strategy, block and cancel orders, close all
    /// positions and halt.
    Kill(operate::ReasonArgs),
    /// Submit, judge, promote and roll back candidate strategies.
    Candidate(candidate::CandidateArgs),
    /// Reports of paper and live runs, from the ledger.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Hot reload while writing a strategy: rebuild, validate and swap on
    /// every save, over a candle file or into a paper engine.
    Dev(dev::DevArgs),
    /// The nightly evolution: run a night (`--once`), or read past ones.
    Evolve(evolve::EvolveArgs),
    /// Internal: the worker a host starts for a background optimising
    /// compile (component on stdin, compiled code on stdout).
    #[command(name = "__optimize", hide = true)]
    Optimize {
        /// `fuel` or `wall-clock`, as the host's sandbox.
        #[arg(long, value_parser = parse_metering)]
        metering: Metering,
        #[arg(long)]
        max_stack_bytes: usize,
    },
    /// A fake Kraken on 127.0.0.1 to rehearse against: it checks
    /// signatures and nonces as Kraken does. The key pair it accepts is
    /// read from KEEL_KRAKEN_KEY and KEEL_KRAKEN_SECRET (base64).
    #[command(name = "__fake-kraken", hide = true)]
    FakeKraken {
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// `PAIR=PRICE`: market orders of the pair trade at once at that
        /// price (repeatable); others wait.
        #[arg(long = "price", value_name = "PAIR=PRICE")]
        prices: Vec<String>,
        /// How many trades a market order fills in.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        parts: u32,
        /// XBTUSD traded these many days up to now: a seeded synthetic
        /// history, to rehearse `keel data download` against.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(i64).range(1..=31))]
        history_days: Option<i64>,
    },
}

fn parse_metering(text: &str) -> Result<Metering, String> {
    match text {
        "fuel" => Ok(Metering::Fuel),
        "wall-clock" => Ok(Metering::WallClock),
        other => Err(format!("{other:?} is not fuel or wall-clock")),
    }
}

/// Parses the command line. A bad value — outside its range, or not one of
/// the allowed ones — is one line (option, value, what is allowed) and
/// exit 1, like every other bad input; anything else clap reports (and
/// exits) as it does.
pub fn parse() -> Cli {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    // A negative number is an option's value (`--seed -1`), said out of
    // its range by its parser, never taken for an unknown option.
    fn negative_numbers(command: clap::Command) -> clap::Command {
        command
            .allow_negative_numbers(true)
            .mut_subcommands(negative_numbers)
    }
    let parsed = negative_numbers(Cli::command())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ValueValidation | ErrorKind::InvalidValue
            ) =>
        {
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or_default();
            match lines.find_map(|l| l.trim().strip_prefix("[possible values: ")) {
                Some(allowed) => eprintln!("{first}: expected {}", allowed.trim_end_matches(']')),
                None => eprintln!("{first}"),
            }
            std::process::exit(1);
        }
        Err(e) => e.exit(),
    }
}

/// What a command's error says, its causes after it (`anyhow`'s `{:#}`),
/// but for SQLite's bare code beneath a message of its own, which says it
/// again ("database is locked: Error code 5: database is locked").
pub fn error_text(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        if cause.downcast_ref::<rusqlite::ffi::Error>().is_some() && !parts.is_empty() {
            continue;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

/// Runs a parsed command; `Ok(false)` means "ran, but the verdict is no" (exit 1).
pub fn run(cli: Cli) -> anyhow::Result<bool> {
    let cache = &CompileCache {
        dir: cli.cache_dir.or_else(default_cache_dir),
        max_bytes: cli.cache_max_mb.saturating_mul(1 << 20),
    };
    let db = &cli.db;
    match cli.command {
        Verb::Optimize {
            metering,
            max_stack_bytes,
        } => {
            crate::sandbox::serve_optimizer(
                metering,
                max_stack_bytes,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
            )?;
            Ok(true)
        }
        Verb::FakeKraken {
            port,
            prices,
            parts,
            history_days,
        } => {
            let key = std::env::var("KEEL_KRAKEN_KEY").context("KEEL_KRAKEN_KEY is not set")?;
            let secret =
                std::env::var("KEEL_KRAKEN_SECRET").context("KEEL_KRAKEN_SECRET is not set")?;
            let fake = crate::venues::kraken::fake::FakeKraken::start(port, &key, &secret)?;
            for spec in &prices {
                let price = spec
                    .split_once('=')
                    .and_then(|(pair, p)| Some((pair, p.parse::<f64>().ok()?)))
                    .filter(|(_, p)| p.is_finite() && *p > 0.0);
                let Some((pair, price)) = price else {
                    anyhow::bail!(
                        "--price {}: expected PAIR=PRICE, e.g. XBTUSD=40000",
                        keel_model::shown::quoted(spec)
                    );
                };
                fake.set_price(pair, price, parts);
            }
            if let Some(days) = history_days {
                use crate::venues::kraken::fake::MarketHistory;
                let span_s = days * 86_400;
                let start_s = crate::store::now_ms() / 1000 - span_s;
                fake.set_market("XBTUSD", MarketHistory::synthetic(1, start_s, span_s, 0..0));
            }
            println!(
                "fake Kraken on {} and its executions channel on {} (Ctrl-C stops it)",
                fake.base_url(),
                fake.ws_url()
            );
            loop {
                std::thread::park();
            }
        }
        Verb::Strategy(command) => strategy::run(command, db, cache),
        Verb::Data(command) => data::run(command, db),
        Verb::Backtest(args) => backtest::run(&args, db, cache),
        Verb::Quickstart(args) => quickstart::run(&args, db, cache),
        Verb::Run(args) => run::run(&args, db, cache),
        Verb::Status(args) => operate::status(&args, db),
        Verb::Positions(args) => operate::positions(&args, db),
        Verb::Trades(args) => operate::trades(&args, db),
        Verb::Candidates(args) => operate::candidates(&args, db),
        Verb::Pause(args) => operate::command("pause", &args, false, db),
        Verb::Resume(args) => operate::command("resume", &args.reason, args.after_kill, db),
        Verb::Kill(args) => operate::command("kill", &args, false, db),
        Verb::Candidate(args) => candidate::run(&args, db, cache),
        Verb::Report(command) => report::run(&command, db),
        Verb::Dev(args) => dev::run(args, db, cache),
        Verb::Evolve(args) => evolve::run(&args, db, cache),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KEEL_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("keel"))
}

fn sandbox(metering: Metering, cache: &CompileCache) -> anyhow::Result<Sandbox> {
    Sandbox::new(cache.sandbox_config(SandboxConfig {
        metering,
        ..SandboxConfig::default()
    }))
    .context("failed to set up the wasm sandbox")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn an_error_says_sqlite_s_failure_once() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        let failed = conn
            .execute("SELECT * FROM runs", [])
            .expect_err("no table");
        let error = anyhow::Error::new(failed).context("keel.db: cannot read the last run");
        assert_eq!(
            format!("{error:#}"),
            "keel.db: cannot read the last run: no such table: runs: Error code 1: SQL logic error"
        );
        assert_eq!(
            super::error_text(&error),
            "keel.db: cannot read the last run: no such table: runs"
        );
        // An error of anything else keeps every cause.
        let io = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(io).context("writing");
        assert_eq!(super::error_text(&error), "writing: disk on fire");
    }

    /// Every option and argument a user can see, by command, that has no
    /// help text.
    fn unexplained(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !arg.is_hide_set() && !builtin && arg.get_help().is_none() {
                out.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            unexplained(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_and_argument_has_help_text() {
        let mut missing = Vec::new();
        unexplained(&super::Cli::command(), "keel", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
