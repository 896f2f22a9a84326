//! A bounded, seeded fuzz of what users hand Keel: 1,000 mutated candle
//! files (CSV and freqtrade JSON) driven through import, a backtest and a
//! paper replay, and 200 mutated TOML configs through their loaders and a
//! paper run. Each must succeed or fail with one short line; nothing may
//! panic or hang, and every paper ledger must add up.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use keel_backtester::engine::BacktestConfig;
use keel_host::backtest::{self, Job};
use keel_host::candidates::{self, CandidatesConfig};
use keel_host::engine::feed::BarFeed;
use keel_host::engine::feeds::Feeds;
use keel_host::engine::{Engine, RunSettings, StrategySpec};
use keel_host::risk_limits::RiskConfig;
use keel_host::sandbox::{LoadedStrategy, Metering, Sandbox};
use keel_host::store::{Ownership, Store};
use keel_model::Params;
use keel_model::candles::{self, Timeframe};

use crate::support::{data, example, sandbox};

/// SplitMix64: a seeded stream, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Values a hostile or broken export puts where a number belongs.
const ABSURD: &[&str] = &[
    "1e30",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "0",
    "-0",
    "1e-320",
    "999999999999999999999999",
    "18446744073709551615",
    "",
    "abc",
    "\u{202e}1",
    "\u{1b}[31m",
    "\0",
    "1,5",
];

/// Replaces the `n`th field (counting across lines) that looks numeric.
fn replace_number(text: &str, rng: &mut Rng) -> String {
    let spans: Vec<(usize, usize)> = {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                out.push((start, i));
            } else {
                i += 1;
            }
        }
        out
    };
    if spans.is_empty() {
        return text.to_owned();
    }
    let (a, b) = spans[rng.below(spans.len())];
    format!("{}{}{}", &text[..a], rng.pick(ABSURD), &text[b..])
}

fn mutate(text: &str, rng: &mut Rng) -> Vec<u8> {
    let mut text = text.to_owned();
    for _ in 0..1 + rng.below(3) {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let n = lines.len().max(1);
        text = match rng.below(10) {
            0..=2 => replace_number(&text, rng),
            3 if !lines.is_empty() => {
                lines.remove(rng.below(n));
                lines.join("\n")
            }
            4 if !lines.is_empty() => {
                let at = rng.below(n);
                let line = lines[at].clone();
                lines.insert(at, line);
                lines.join("\n")
            }
            5 if lines.len() > 1 => {
                let (a, b) = (rng.below(n), rng.below(n));
                lines.swap(a, b);
                lines.join("\n")
            }
            6 => {
                let at = rng.below(text.len());
                let at = (0..=at)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text[..at].to_owned()
            }
            7 => {
                let at = rng.below(n);
                lines.insert(at, "9".repeat(20_000));
                lines.join("\n")
            }
            8 => {
                let at = rng.below(n);
                lines.insert(at, rng.pick(ABSURD).to_owned());
                lines.join("\n")
            }
            _ => {
                let mut bytes = text.into_bytes();
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
                return bytes;
            }
        };
    }
    text.into_bytes()
}

/// One short, printable line.
fn assert_one_line(what: &str, error: &str) {
    assert!(
        !error.contains('\n'),
        "{what}: more than one line: {error:?}"
    );
    assert!(
        error.len() <= 400,
        "{what}: {} bytes: {error:.200}",
        error.len()
    );
    assert!(
        !error
            .chars()
            .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{what}: control or bidi characters reach the terminal: {error:?}"
    );
}

struct Bench<'a> {
    sandbox: &'a Sandbox,
    strategy: &'a LoadedStrategy,
    dir: &'a Path,
}

impl Bench<'_> {
    /// Import, backtest and (when `paper`) a paper replay of one file.
    fn drive(&self, file: &Path, paper: bool) {
        let what = file.display().to_string();
        let db = self.dir.join("import.db");
        match candles::read_file(file) {
            Err(e) => assert_one_line(&what, &e.to_string()),
            Ok(bars) => {
                let mut store = Store::open(&db).expect("store");
                if let Err(e) =
                    store.import_candles("FZ/USD", Timeframe::M1, &bars, &what, b"", true)
                {
                    assert_one_line(&what, &e.to_string());
                }
            }
        }
        let spec = format!("FZ/USD={what}");
        match backtest::load_data(&[spec], &Default::default(), &db) {
            Err(e) => assert_one_line(&what, &format!("{e:#}")),
            Ok(data) => {
                let job = Job {
                    strategy: self.strategy,
                    params: Params::resolve(&self.strategy.info.params, &[]).expect("params"),
                    window: None,
                };
                match backtest::run_job(self.sandbox, &job, &data, &BacktestConfig::default()) {
                    Err(e) => assert_one_line(&what, &format!("{e:#}")),
                    Ok(report) => {
                        let m = &report.metrics;
                        assert!(
                            m.total_return.is_finite(),
                            "{what}: return {}",
                            m.total_return
                        );
                    }
                }
            }
        }
        if paper {
            self.paper(file, None);
        }
    }

    /// A paper replay of `file` (under `risk`, when given); the ledger
    /// must add up whatever happened.
    fn paper(&self, file: &Path, risk: Option<RiskConfig>) {
        let what = file.display().to_string();
        let db = self.dir.join(format!("paper-{}.db", self.dir_entries()));
        let owner = Ownership::claim(&db, "fuzz").expect("owner");
        let mut store = Store::open(&db).expect("store");
        let settings = RunSettings {
            feed_name: format!("replay:{what}"),
            symbols: vec!["FZ/USD".into()],
            speed: None,
            cash: 10_000.0,
            risk: risk.unwrap_or_default(),
            fills: Default::default(),
            strategies: vec![StrategySpec::file(example("sma-cross").to_owned(), vec![])],
            max_bars: None,
            candidates: CandidatesConfig::default(),
        };
        let ran = BarFeed::replay(file, &Default::default())
            .map_err(anyhow::Error::from)
            .and_then(|feed| {
                let symbols = settings.symbols.clone();
                let mut feeds = Feeds::new(symbols, vec![feed], std::time::Duration::ZERO);
                let mut engine = Engine::open(&owner, store.conn(), self.sandbox, settings, None)?;
                engine.run(&mut feeds)
            });
        match ran {
            Err(e) => assert_one_line(&what, &format!("{e:#}")),
            Ok(summary) => {
                if let Some(e) = &summary.feed_error {
                    assert_one_line(&what, e);
                }
            }
        }
        keel_host::engine::audit_ledger(store.conn())
            .unwrap_or_else(|e| panic!("{what}: the ledger does not add up: {e:#}"));
    }

    fn dir_entries(&self) -> usize {
        std::fs::read_dir(self.dir).map_or(0, Iterator::count)
    }
}

fn base_files() -> (String, String) {
    let csv: String = std::fs::read_to_string(data("UNITTEST_BTC-1m.csv"))
        .expect("sample data")
        .lines()
        .take(120)
        .collect::<Vec<_>>()
        .join("\n");
    let bars = candles::parse_csv(&csv, "base").expect("base csv");
    let rows: Vec<String> = bars
        .iter()
        .map(|c| {
            format!(
                "[{},{},{},{},{},{}]",
                c.time_ms, c.open, c.high, c.low, c.close, c.volume
            )
        })
        .collect();
    (csv, format!("[{}]", rows.join(",")))
}

/// Runs `work` on a thread of its own; a hang fails the test instead of
/// holding it forever.
fn within(limit: Duration, work: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().expect("worker"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no answer within {limit:?}: a hang"),
    }
}

#[test]
fn mutated_candle_files_get_an_answer_or_one_line_and_the_ledger_adds_up() {
    within(Duration::from_secs(300), || {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = sandbox(Metering::Fuel);
        let strategy = sandbox.load_file(example("sma-cross")).expect("sma-cross");
        let bench = Bench {
            sandbox: &sandbox,
            strategy: &strategy,
            dir: dir.path(),
        };
        let (csv, json) = base_files();
        let mut rng = Rng(0x6b65_656c);
        for i in 0..1000 {
            let (base, ext) = if i % 4 == 3 {
                (&json, "json")
            } else {
                (&csv, "csv")
            };
            let file: PathBuf = dir.path().join(format!("fuzz-{i}.{ext}"));
            std::fs::write(&file, mutate(base, &mut rng)).expect("write");
            // A paper replay for one file in ten: each books every bar.
            bench.drive(&file, i % 10 == 0);
            std::fs::remove_file(&file).expect("remove");
        }
    });
}

const RISK_TOML: &str = "max_position_pct = 25
max_open_positions = 10
max_trade_pct = 25
daily_loss_halt_pct = 5
max_drawdown_halt_pct = 20
fat_finger_pct = 10
min_order_quote = 10
";

const CANDIDATES_TOML: &str = "[backtest]
min_trades = 10
min_sharpe = 0.0
max_drawdown_pct = 25
min_profit_factor = 1.0
walk_forward = 0
fee_bps = 10
slippage_bps = 5
[paper]
slots = 3
min_trades = 20
max_drawdown_pct = 20
required = true
[rollback]
daily_loss_pct = 15
";

#[test]
fn mutated_configs_load_or_are_refused_in_one_line() {
    within(Duration::from_secs(300), || {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandbox = sandbox(Metering::WallClock);
        let strategy = sandbox.load_file(example("sma-cross")).expect("sma-cross");
        let bench = Bench {
            sandbox: &sandbox,
            strategy: &strategy,
            dir: dir.path(),
        };
        let (csv, _) = base_files();
        let replay = dir.path().join("base.csv");
        std::fs::write(&replay, &csv).expect("write");
        let mut rng = Rng(0x746f_6d6c);
        for i in 0..200 {
            let risk_file = dir.path().join(format!("risk-{i}.toml"));
            std::fs::write(&risk_file, mutate(RISK_TOML, &mut rng)).expect("write");
            match RiskConfig::load(&risk_file) {
                Err(e) => assert_one_line(&risk_file.display().to_string(), &e),
                Ok(risk) => {
                    risk.check().expect("a loaded config passes its own checks");
                    if i % 10 == 0 {
                        bench.paper(&replay, Some(risk));
                    }
                }
            }
            let candidates_file = dir.path().join(format!("candidates-{i}.toml"));
            std::fs::write(&candidates_file, mutate(CANDIDATES_TOML, &mut rng)).expect("write");
            match candidates::load_config(&candidates_file) {
                Err(e) => {
                    assert_one_line(&candidates_file.display().to_string(), &format!("{e:#}"))
                }
                Ok(c) => {
                    let numbers = [
                        c.backtest.min_sharpe,
                        c.backtest.max_drawdown_pct,
                        c.backtest.min_profit_factor,
                        c.backtest.fee_bps,
                        c.backtest.slippage_bps,
                        c.paper.max_drawdown_pct,
                        c.rollback.daily_loss_pct,
                    ];
                    assert!(
                        numbers.iter().all(|v| v.is_finite()),
                        "{}: loaded {numbers:?}",
                        candidates_file.display()
                    );
                    assert!(
                        c.backtest.fee_bps >= 0.0 && c.backtest.slippage_bps >= 0.0,
                        "{}: negative costs loaded",
                        candidates_file.display()
                    );
                    assert!(
                        c.paper.slots >= 1,
                        "{}: no paper slot",
                        candidates_file.display()
                    );
                }
            }
        }
    });
}
