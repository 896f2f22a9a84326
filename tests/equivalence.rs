//! One kernel for every mode, proven from the outside: each example
//! strategy on three real symbols trades the same through `keel backtest`
//! and through `keel run --paper` replaying the same files at full speed —
//! the same entries and exits, to the millisecond, the same quantities and
//! prices, the same fees — and still does when the paper run is SIGKILLed
//! at random moments and restarted. Books bound to some of the pairs only
//! trade as a backtest of those pairs.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::paper::{Setup, open, text};
use crate::support::{data, example};

/// Three pairs of the shared 5-minute data (each with its real gaps).
const PAIRS: [&str; 3] = ["ETH", "LTC", "XMR"];
/// Bars of each file used: enough for every strategy to trade.
const BARS: usize = 1500;
/// Bars by which ETH/BTC's window starts after the others'.
const ETH_LATER: usize = 300;

/// Limits both modes run under; paper's halts and collar set out of reach,
/// since a backtest has neither.
const RISK: &str = "max_position_pct = 50
max_open_positions = 6
max_trade_pct = 30
daily_loss_halt_pct = 100
max_drawdown_halt_pct = 100
fat_finger_pct = 100
min_order_quote = 0
";

/// A book of the paper run: an example strategy, the parameters it trades
/// often with, and the symbols it is bound to (none named: all three).
struct BookSpec {
    strategy: &'static str,
    params: Vec<&'static str>,
    symbols: Vec<&'static str>,
}

/// Each example strategy on every pair, and two of them again on some of
/// the pairs only: books with different symbol sets share one run.
fn strategies() -> Vec<BookSpec> {
    let sma = || vec!["fast=5", "slow=20"];
    let rsi = || vec!["oversold=45", "overbought=55", "allow_short=true"];
    let book = |strategy, params, symbols| BookSpec {
        strategy,
        params,
        symbols,
    };
    vec![
        book("sma-cross", sma(), vec![]),
        book("rsi-reversion", rsi(), vec![]),
        book("atr-breakout", vec![], vec![]),
        book("sma-cross", sma(), vec!["ETH/BTC"]),
        book("rsi-reversion", rsi(), vec!["LTC/BTC", "XMR/BTC"]),
    ]
}

/// A trade as both modes report it.
#[derive(Debug, Clone, PartialEq)]
struct Trade {
    symbol: String,
    tag: String,
    side: String,
    opened_ms: i64,
    closed_ms: i64,
    quantity: f64,
    entry: f64,
    exit: f64,
    fees: f64,
    reason: String,
}

struct Fixture {
    setup: Setup,
    dir: tempfile::TempDir,
    /// (symbol, file) per pair.
    files: Vec<(String, PathBuf)>,
    risk: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = PAIRS
            .iter()
            .map(|pair| {
                let text = std::fs::read_to_string(data(&format!("crypto-5m/{pair}_BTC-5m.csv")))
                    .expect("shared data");
                // ETH/BTC starts later: the pairs' closes differ, so the
                // merged run has closes where a symbol has no bar.
                let skip = if *pair == "ETH" { ETH_LATER } else { 0 };
                let head: Vec<&str> = (text.lines().take(1))
                    .chain(text.lines().skip(1 + skip).take(BARS))
                    .collect();
                let path = dir.path().join(format!("{pair}.csv"));
                std::fs::write(&path, head.join("\n") + "\n").expect("write");
                (format!("{pair}/BTC"), path)
            })
            .collect();
        let risk = dir.path().join("risk_limits.toml");
        std::fs::write(&risk, RISK).expect("write");
        Fixture {
            setup: Setup::new(),
            dir,
            files,
            risk,
        }
    }

    /// The trades of `keel backtest`, less those the end of the data closed
    /// (a paper run leaves them open).
    fn backtest(&self, book: &BookSpec) -> Vec<Trade> {
        let json = self.dir.path().join(format!("{}.json", book.strategy));
        let wasm = example(book.strategy).display().to_string();
        let mut args = vec!["backtest".to_owned(), wasm];
        for (symbol, file) in &self.files {
            if book.symbols.is_empty() || book.symbols.contains(&symbol.as_str()) {
                args.extend(["--data".into(), format!("{symbol}={}", file.display())]);
            }
        }
        for p in &book.params {
            args.extend(["--param".into(), (*p).to_owned()]);
        }
        args.extend([
            "--risk-limits".into(),
            self.risk.display().to_string(),
            "--json".into(),
            json.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let db = self.setup.db("backtest.db");
        let out = self.setup.keel(&db, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
        let trades = report["trades"].as_array().expect("trades");
        trades
            .iter()
            .filter(|t| t["exit_reason"] != "end-of-data")
            .map(|t| Trade {
                symbol: t["symbol"].as_str().expect("symbol").to_owned(),
                tag: t["tag"].as_str().expect("tag").to_owned(),
                side: t["side"].as_str().expect("side").to_lowercase(),
                opened_ms: t["time_entry_ms"].as_i64().expect("entry time"),
                closed_ms: t["time_exit_ms"].as_i64().expect("exit time"),
                quantity: t["quantity"].as_f64().expect("quantity"),
                entry: t["price_entry"].as_f64().expect("entry"),
                exit: t["price_exit"].as_f64().expect("exit"),
                fees: t["fees"].as_f64().expect("fees"),
                reason: t["exit_reason"].as_str().expect("reason").to_owned(),
            })
            .collect()
    }

    /// `keel run --paper` of every strategy (a book each) over the same
    /// files, at full speed, in the background.
    fn spawn_paper(&self, db: &Path) -> Child {
        let mut args = vec![
            "run".to_owned(),
            "--paper".into(),
            "--speed".into(),
            "max".into(),
            "--risk-limits".into(),
            self.risk.display().to_string(),
            // A busy test machine must not turn a slow call into a fault
            // (a fault is a difference, rightly: its signals are lost).
            "--call-deadline-ms".into(),
            "10000".into(),
        ];
        for (symbol, file) in &self.files {
            args.extend([
                "--feed".into(),
                format!("replay:{symbol}={}", file.display()),
            ]);
        }
        for book in strategies() {
            let mut spec = example(book.strategy).display().to_string();
            for p in book.params {
                spec = format!("{spec},{p}");
            }
            for symbol in book.symbols {
                spec = format!("{spec},@{symbol}");
            }
            args.extend(["--strategy".into(), spec]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.setup
            .command(db, &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn keel run")
    }
}

/// The closed trades of book `n` (1-based, in `--strategy` order) of the
/// paper run in `db`.
fn paper_trades(db: &Path, n: usize) -> Vec<Trade> {
    let conn = open(db);
    let mut stmt = conn
        .prepare(
            "SELECT t.symbol, t.tag, t.side, t.opened_ms, t.closed_ms, t.quantity, t.price_entry,
                    t.price_exit, t.fees, t.exit_reason
             FROM trades t JOIN books b ON b.id = t.book_id
             WHERE b.id = (SELECT id FROM books ORDER BY id LIMIT 1 OFFSET ?1) ORDER BY t.id",
        )
        .expect("query");
    let number = |s: String| s.parse::<f64>().expect("decimal");
    stmt.query_map([n as i64 - 1], |r| {
        Ok(Trade {
            symbol: r.get(0)?,
            tag: r.get(1)?,
            side: r.get(2)?,
            opened_ms: r.get(3)?,
            closed_ms: r.get(4)?,
            quantity: number(r.get(5)?),
            entry: number(r.get(6)?),
            exit: number(r.get(7)?),
            fees: number(r.get(8)?),
            reason: r.get(9)?,
        })
    })
    .expect("rows")
    .collect::<rusqlite::Result<_>>()
    .expect("trades")
}

/// The same trades: times, sides, tags, quantities and exit prices exactly;
/// the average entry and the fees to the ledger's eight decimals (a decimal
/// ledger keeps a cost basis, the backtest an average).
fn assert_same(strategy: &str, backtest: &[Trade], paper: &[Trade]) {
    assert!(
        backtest.len() >= 3,
        "{strategy}: only {} trades to compare; the data should make more",
        backtest.len()
    );
    for (i, (b, p)) in backtest.iter().zip(paper).enumerate() {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-8 * x.abs().max(1.0);
        let same = (
            &b.symbol,
            &b.tag,
            &b.side,
            b.opened_ms,
            b.closed_ms,
            &b.reason,
        ) == (
            &p.symbol,
            &p.tag,
            &p.side,
            p.opened_ms,
            p.closed_ms,
            &p.reason,
        ) && b.quantity == p.quantity
            && b.exit == p.exit
            && close(b.entry, p.entry)
            && close(b.fees, p.fees);
        assert!(
            same,
            "{strategy}: trade {i} differs\n backtest {b:?}\n paper    {p:?}"
        );
    }
    assert_eq!(
        backtest.len(),
        paper.len(),
        "{strategy}: {} trades in the backtest, {} in paper",
        backtest.len(),
        paper.len()
    );
}

/// Runs (or resumes) the paper run in `db` to its end; its summary.
fn finish(fixture: &Fixture, db: &Path) -> String {
    let out = fixture
        .spawn_paper(db)
        .wait_with_output()
        .expect("keel run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn backtest_and_paper_trade_the_same() {
    let fixture = Fixture::new();
    let db = fixture.setup.db("paper.db");
    let stdout = finish(&fixture, &db);
    // A book bound to ETH/BTC alone is called at ETH/BTC's closes only
    // (its file's bars), as its backtest is; a book of every pair at each
    // close of any of them.
    let calls = |book: &str| {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(book))
            .unwrap_or_else(|| panic!("no summary of {book}: {stdout}"));
        let (before, _) = line.split_once(" strategy calls on ").expect("calls");
        let n: u64 = before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("count");
        (
            n,
            line.rsplit(" strategy calls on ")
                .next()
                .unwrap_or("")
                .to_owned(),
        )
    };
    assert_eq!(calls("sma-cross#4"), (BARS as u64, "ETH/BTC".to_owned()));
    let (all, symbols) = calls("sma-cross#1");
    assert_eq!(all, (BARS + ETH_LATER) as u64, "every close of the run");
    assert_eq!(symbols, "ETH/BTC, LTC/BTC, XMR/BTC");
    for (n, book) in strategies().iter().enumerate() {
        let name = format!("{} {:?}", book.strategy, book.symbols);
        assert_same(&name, &fixture.backtest(book), &paper_trades(&db, n + 1));
    }
}

#[test]
fn paper_killed_at_random_moments_still_trades_as_the_backtest() {
    let fixture = Fixture::new();
    let db = fixture.setup.db("paper.db");
    // A seeded sequence of delays (a linear congruential generator), so a
    // failure can be replayed. Short (50 to 450 ms, the first 217 ms), so
    // that the first kill comes before a fast machine ends the whole run:
    // the fastest seen once ended it within the old first delay, 467 ms.
    let mut seed: u64 = 0x5eed_1234;
    let mut next_delay = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Duration::from_millis(50 + (seed >> 33) % 400)
    };
    let mut kills = 0;
    // A run resumed after the last kill may finish before its delay: it
    // is the run's end (another `keel run` would start a new run).
    let mut finished = false;
    while kills < 5 {
        let mut child = fixture.spawn_paper(&db);
        let delay = next_delay();
        let started = Instant::now();
        while started.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "a resumed run failed: {status}");
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if finished {
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
    }
    if !finished {
        finish(&fixture, &db);
    }
    let status: String = open(&db)
        .query_row(
            "SELECT status FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("run");
    assert_eq!(status, "finished");
    let runs: i64 = open(&db)
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("runs");
    assert_eq!(runs, 1, "every restart resumed the one run");
    assert!(kills > 0, "the run ended before any kill");
    keel_host::engine::audit_ledger(&open(&db)).expect("ledger adds up");
    for (n, book) in strategies().iter().enumerate() {
        let name = format!("{} {:?}", book.strategy, book.symbols);
        assert_same(&name, &fixture.backtest(book), &paper_trades(&db, n + 1));
    }
}
