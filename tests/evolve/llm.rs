//! Nights whose roles are played by a model: the real `keel evolve --once`
//! against the fake LLM server on loopback, in the Anthropic and the
//! OpenAI shapes, scripted answer by answer. The key is handed over in an
//! environment variable and must never reach the record.

use std::path::Path;
use std::process::{Command, Output};

use rusqlite::Connection;

use super::stopped::reached;
use super::{LENIENT_CANDIDATES, path, text};
use crate::fakes::llm::{FakeLlm, Received, Reply};
use crate::support::repo;

pub(super) const KEY_VAR: &str = "KEEL_TEST_LLM_KEY";
pub(super) const KEY: &str = "sk-test-never-in-the-record-7f3a9c";

/// sma-cross with other defaults and a stop-loss on every entry.
pub(super) const GOOD: &str = r#"use keel_strategy_sdk::prelude::*;

#[derive(Debug)]
pub struct Crossing {
    fast: Sma,
    slow: Sma,
    size: f64,
    symbol: Option<Symbol>,
    above: Option<bool>,
}

impl Strategy for Crossing {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "whatever-the-model-said".into(),
            version: "1.0.0".into(),
            description: "fast/slow SMA cross with a 5% stop".into(),
            symbols: vec!["BTC/USD".into()],
            timeframe: "1h".into(),
            warmup_bars: 25,
            params: vec![
                ParamSpec::int("fast", 7, 2, 200, "bars in the fast average"),
                ParamSpec::int("slow", 21, 3, 1000, "bars in the slow average"),
                ParamSpec::float("size", 0.2, 0.001, 0.25, "fraction of equity per entry"),
            ],
        }
    }

    fn init(params: &Params) -> Result<Self, String> {
        let fast = params.int("fast")?;
        let slow = params.int("slow")?;
        if fast >= slow {
            return Err(format!("fast ({fast}) must be shorter than slow ({slow})"));
        }
        Ok(Crossing {
            fast: Sma::new(fast as usize),
            slow: Sma::new(slow as usize),
            size: params.float("size")?,
            symbol: None,
            above: None,
        })
    }

    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let symbol = self.symbol.get_or_insert_with(|| {
            tick.bars.first().map(|b| b.symbol.clone()).unwrap_or_default()
        });
        let Some(bar) = tick.bar(symbol) else {
            return Ok(vec![]);
        };
        let (Some(fast), Some(slow)) = (self.fast.update(bar.close), self.slow.update(bar.close))
        else {
            return Ok(vec![]);
        };
        let above = fast > slow;
        let crossed = self.above.is_some_and(|was| was != above);
        self.above = Some(above);
        if !crossed {
            return Ok(vec![]);
        }
        let holding = tick.portfolio.position(symbol, "").is_some();
        Ok(match (above, holding) {
            (true, false) => vec![
                Signal::open_long(symbol, Size::FractionOfEquity(self.size))
                    .stop_loss(bar.close * 0.95)
                    .reason("fast crossed above slow"),
            ],
            (false, true) => vec![Signal::close(symbol).reason("fast crossed below slow")],
            _ => vec![],
        })
    }
}

keel_strategy_sdk::export_strategy!(Crossing);
"#;

pub(super) fn fenced(code: &str) -> String {
    format!("Here is the strategy.\n\n```rust\n{code}```\n")
}

pub(super) const PREDICTION: &str = r#"{"claim":"the active book keeps its drawdown under 5% this week","metric":"active_max_drawdown_pct","comparator":"<=","threshold":5,"horizon_days":7,"probability":0.8}"#;

pub(super) fn create() -> String {
    format!(
        "```json\n{{\"decision\":\"create\",\"reason\":\"no candidate is in its paper gate\",\"brief\":\"an SMA cross with faster averages and a 5% stop\",\"predictions\":[{PREDICTION}]}}\n```"
    )
}

pub(super) fn nothing() -> String {
    format!(
        r#"{{"decision":"nothing","reason":"the book is doing fine","predictions":[{PREDICTION}]}}"#
    )
}

pub(super) const ACCEPT: &str =
    r#"{"verdict":"accept","reasons":["stop-loss on the entry, no look-ahead"]}"#;

/// `evolve.toml` with every role played by `kind` at `url`, the key in
/// `KEY_VAR`, lenient gates and few mutations.
pub(super) fn evolve_toml(kind: &str, url: &str, extra: &str) -> String {
    format!(
        r#"mutations = 6
retries = 2
{extra}
[provider]
kind = "{kind}"
model = "test-model"
base_url = "{url}"
key_env = "{KEY_VAR}"
max_tokens = 4000

[prices."test-model"]
input_usd_per_mtok = 3
output_usd_per_mtok = 15

[gates]
min_dsr = 0
max_pbo = 1
min_holdout_sharpe = -1000000
min_return_pct = -100
min_fold_return_pct = -100
min_stress_return_pct = -100
"#
    )
}

/// The two API shapes a model may speak: every scripted scenario runs in
/// both, against the same fake server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Anthropic,
    OpenAi,
}

const SHAPES: [Shape; 2] = [Shape::Anthropic, Shape::OpenAi];

/// Runs `scenario` in each shape, saying which (shown when it fails).
pub(super) fn in_both_shapes(scenario: fn(Shape)) {
    for shape in SHAPES {
        eprintln!("in the {shape:?} shape");
        scenario(shape);
    }
}

impl Shape {
    /// An answer whose text is `text`, with its token counts.
    pub(super) fn reply(self, text: &str, input: u64, output: u64) -> Reply {
        match self {
            Shape::Anthropic => Reply::anthropic(text, input, output),
            Shape::OpenAi => Reply::openai(text, input, output),
        }
    }

    /// `evolve.toml` with every role played in this shape at `llm`.
    pub(super) fn toml(self, llm: &FakeLlm, extra: &str) -> String {
        match self {
            Shape::Anthropic => evolve_toml("anthropic", &llm.anthropic_url(), extra),
            Shape::OpenAi => evolve_toml("openai", &llm.openai_url(), extra),
        }
    }

    /// The path every request of this shape goes to.
    pub(super) fn path(self) -> &'static str {
        match self {
            Shape::Anthropic => "/v1/messages",
            Shape::OpenAi => "/v1/chat/completions",
        }
    }
}

/// One night in a fresh directory with `evolve`; returns the directory,
/// the database and keel's output.
pub(super) fn night(evolve: &str) -> (tempfile::TempDir, std::path::PathBuf, Output) {
    let (dir, db) = prepared(evolve, LENIENT_CANDIDATES);
    let out = night_in(dir.path(), &db);
    (dir, db, out)
}

/// A fresh directory with `evolve` and `candidates` as its files, and the
/// database path in it.
pub(super) fn prepared(evolve: &str, candidates: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("evolve.toml"), evolve).expect("write");
    std::fs::write(dir.path().join("candidates.toml"), candidates).expect("write");
    let db = dir.path().join("keel.db");
    (dir, db)
}

/// `keel evolve --once` in `dir` on `db`, the key in the environment.
pub(super) fn night_in(dir: &Path, db: &Path) -> Output {
    night_command(dir, db).output().expect("run keel")
}

/// The command of a night in `dir` on `db`, the key in the environment.
pub(super) fn night_command(dir: &Path, db: &Path) -> Command {
    let target = repo().join("target/keel-wasm");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .current_dir(dir)
        .arg("--db")
        .arg(db)
        .args(["evolve", "--once", "--target-dir", path(&target)])
        .env_remove("KEEL_LOG")
        .env(KEY_VAR, KEY);
    command
}

/// The night's row: status, decision, note, usd, tokens.
pub(super) fn night_row(db: &Path) -> (String, Option<String>, String, f64, i64) {
    Connection::open(db)
        .expect("db")
        .query_row(
            "SELECT status, decision, note, usd, tokens FROM evolve_nights ORDER BY id DESC",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("a night")
}

/// A model step: kind, actor, ok, input, output, tokens in and out, usd.
pub(super) type ModelStep = (String, String, bool, String, String, i64, i64, f64);

pub(super) fn steps(db: &Path) -> Vec<ModelStep> {
    Connection::open(db)
        .expect("db")
        .prepare(
            "SELECT kind, actor, ok, input, output, input_tokens, output_tokens, usd
             FROM evolve_steps ORDER BY night_id, seq",
        )
        .expect("prepare")
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("steps")
}

/// Every text column of the night's record; the key is in none of them,
/// nor in keel's output, though every request carried it.
pub(super) fn assert_key_kept(db: &Path, out: &Output, requests: &[Received]) {
    let conn = Connection::open(db).expect("db");
    for (table, columns) in [
        ("evolve_steps", "kind || actor || input || output"),
        (
            "evolve_nights",
            "status || providers || COALESCE(decision, '') || note || settings",
        ),
        (
            "evolve_attempts",
            "slug || dir || brief || source || reached || figures",
        ),
    ] {
        let rows: Vec<String> = conn
            .prepare(&format!("SELECT {columns} FROM {table}"))
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            rows.iter().all(|r| !r.contains(KEY)),
            "the key is in {table}"
        );
    }
    assert!(!text(&out.stdout).contains(KEY) && !text(&out.stderr).contains(KEY));
    for r in requests {
        let sent = r
            .header("x-api-key")
            .or_else(|| r.header("authorization"))
            .unwrap_or_default();
        assert!(sent.ends_with(KEY), "{:?}", r.headers);
        assert!(!r.text().contains(KEY), "the key is in a prompt");
    }
}

pub(super) fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_model_written_strategy_goes_through_the_gates_with_its_tokens_and_cost_recorded() {
    in_both_shapes(
        a_model_written_strategy_goes_through_the_gates_with_its_tokens_and_cost_recorded_in,
    );
}

fn a_model_written_strategy_goes_through_the_gates_with_its_tokens_and_cost_recorded_in(
    shape: Shape,
) {
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 200),
        shape.reply(&fenced(GOOD), 2000, 900),
        shape.reply(ACCEPT, 1500, 40),
    ]);
    let (_dir, db, out) = night(&shape.toml(&llm, ""));
    assert_ok(&out);
    let (status, decision, _, usd, tokens) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("create"))
    );
    let all = steps(&db);
    let models: Vec<&ModelStep> = all.iter().filter(|s| s.1 != "code").collect();
    let kinds: Vec<(&str, &str)> = models
        .iter()
        .map(|s| (s.0.as_str(), s.1.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("decide", "analyst"),
            ("generate", "author"),
            ("review", "reviewer"),
            ("review", "reviewer")
        ],
        "the static review runs first, then the model's"
    );
    let decide = models[0];
    assert_eq!((decide.5, decide.6), (1000, 200));
    // 1000 × $3/M + 200 × $15/M
    assert!((decide.7 - 0.006).abs() < 1e-12, "{}", decide.7);
    assert!(
        decide.3.contains("truth benchmarks"),
        "the prompt is recorded"
    );
    assert!(decide.4.contains("\"create\""), "the answer is recorded");
    let expected = (1000 * 3 + 200 * 15 + 2000 * 3 + 900 * 15 + 1500 * 3 + 40 * 15) as f64 / 1e6;
    assert!((usd - expected).abs() < 1e-9, "{usd} vs {expected}");
    assert_eq!(tokens, 1000 + 200 + 2000 + 900 + 1500 + 40);
    let attempt: (String, String) = Connection::open(&db)
        .expect("db")
        .query_row("SELECT reached, source FROM evolve_attempts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("attempt");
    assert_eq!(attempt.0, "submitted", "{all:?}");
    assert!(
        attempt.1.contains("name: \"sma-cross-e1a\""),
        "the name is the slug"
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests[1]
            .text()
            .contains("keel_strategy_sdk::export_strategy!(SmaCross)")
    );
    assert_key_kept(&db, &out, &requests);
}

#[test]
fn code_that_does_not_compile_is_fixed_on_the_retry_with_the_compilers_error() {
    in_both_shapes(code_that_does_not_compile_is_fixed_on_the_retry_with_the_compilers_error_in);
}

fn code_that_does_not_compile_is_fixed_on_the_retry_with_the_compilers_error_in(shape: Shape) {
    let broken = GOOD.replace("let above = fast > slow;", "let above: u32 = fast > slow;");
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 200),
        shape.reply(&fenced(&broken), 2000, 900),
        shape.reply(&fenced(GOOD), 2500, 900),
        shape.reply(ACCEPT, 1500, 40),
    ]);
    let (_dir, db, out) = night(&shape.toml(&llm, ""));
    assert_ok(&out);
    let requests = llm.requests();
    assert_eq!(requests.len(), 4, "{:?}", steps(&db));
    assert!(requests.iter().all(|r| r.path == shape.path()));
    match shape {
        Shape::Anthropic => assert!(requests[0].body["system"].is_string()),
        Shape::OpenAi => assert_eq!(requests[0].body["messages"][0]["role"], "system"),
    }
    let fix = requests[2].last();
    assert!(fix.contains("it does not build"), "{fix}");
    assert!(fix.contains("mismatched types"), "{fix}");
    let builds: Vec<bool> = steps(&db)
        .into_iter()
        .filter(|s| s.0 == "build")
        .map(|s| s.2)
        .collect();
    assert_eq!(builds, [false, true]);
    let reached: String = Connection::open(&db)
        .expect("db")
        .query_row("SELECT reached FROM evolve_attempts", [], |r| r.get(0))
        .expect("attempt");
    assert_eq!(reached, "submitted");
    assert_key_kept(&db, &out, &requests);
}

/// What a model writes reaches the operator's terminal escaped: a reason
/// carrying terminal control sequences is shown as text by `history` and
/// `show`, and kept as written in `--json`.
#[test]
fn a_models_control_characters_are_shown_escaped() {
    let hostile = r#"{"decision":"nothing","reason":"fine\u001b]0;pwned\u0007\u001b[2J","predictions":[PREDICTION]}"#
        .replace("PREDICTION", PREDICTION);
    let llm = FakeLlm::start(vec![Reply::openai(&hostile, 600, 50)]);
    let (dir, db, out) = night(&evolve_toml("openai", &llm.openai_url(), ""));
    assert_ok(&out);
    for args in [&["evolve", "history"][..], &["evolve", "show", "1"]] {
        let shown = super::keel_in(dir.path(), &db, args);
        assert_ok(&shown);
        let stdout = text(&shown.stdout);
        assert!(
            !stdout.contains('\u{1b}'),
            "{args:?}: a raw ESC: {stdout:?}"
        );
        assert!(!stdout.contains('\u{7}'), "{args:?}: a raw BEL: {stdout:?}");
        assert!(stdout.contains(r"fine\x1b]0;pwned"), "{args:?}: {stdout}");
    }
    let json = super::keel_in(dir.path(), &db, &["evolve", "history", "--json"]);
    assert!(text(&json.stdout).contains(r"fine\u001b]0;pwned"));
}

#[test]
fn a_malformed_decision_is_refused_and_asked_again_once() {
    in_both_shapes(a_malformed_decision_is_refused_and_asked_again_once_in);
}

fn a_malformed_decision_is_refused_and_asked_again_once_in(shape: Shape) {
    let llm = FakeLlm::start(vec![
        shape.reply("{\"decision\": \"nothing\", \"reason\": ", 500, 10),
        shape.reply(&nothing(), 600, 50),
    ]);
    let (_dir, db, out) = night(&shape.toml(&llm, ""));
    assert_ok(&out);
    let (status, decision, note, _, _) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("nothing"))
    );
    assert_eq!(note, "the book is doing fine");
    let decides: Vec<ModelStep> = steps(&db).into_iter().filter(|s| s.0 == "decide").collect();
    assert_eq!(
        decides.iter().map(|s| s.2).collect::<Vec<_>>(),
        [false, true]
    );
    assert!(
        decides[0]
            .4
            .contains("[refused] the answer holds no JSON object")
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].last().contains("Your answer was refused"));

    // Twice refused: the night decides nothing, without a prediction.
    let llm = FakeLlm::start(vec![
        shape.reply("I think we should buy.", 500, 10),
        shape.reply(
            r#"{"decision":"buy","reason":"r","predictions":[]}"#,
            500,
            10,
        ),
    ]);
    let (_dir, db, out) = night(&shape.toml(&llm, ""));
    assert_ok(&out);
    let (_, decision, note, _, _) = night_row(&db);
    assert_eq!(decision.as_deref(), Some("nothing"));
    assert!(note.contains("refused twice"), "{note}");
    assert_key_kept(&db, &out, &llm.requests());
}

#[test]
fn rate_limits_and_overload_are_waited_out() {
    let llm = FakeLlm::start(vec![
        Reply::anthropic_error(429, "rate_limit_error", "slow down").header("retry-after", "1"),
        Reply::anthropic_error(529, "overloaded_error", "Overloaded").header("retry-after", "0"),
        Reply::anthropic(&nothing(), 700, 60),
    ]);
    let (_dir, db, out) = night(&evolve_toml("anthropic", &llm.anthropic_url(), ""));
    assert_ok(&out);
    let (status, decision, _, _, tokens) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("nothing"))
    );
    assert_eq!(tokens, 760, "refused calls cost nothing");
    let decides: Vec<ModelStep> = steps(&db).into_iter().filter(|s| s.0 == "decide").collect();
    assert_eq!(decides.len(), 1, "one call, retried inside");
    assert!(decides[0].2);
    assert_eq!(llm.requests().len(), 3);
    assert_key_kept(&db, &out, &llm.requests());

    // The OpenAI shape: a 429 that asks for 200 ms.
    let llm = FakeLlm::start(vec![
        Reply::openai_error(429, "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after-ms", "200"),
        Reply::openai(&nothing(), 700, 60),
    ]);
    let (_dir, db, out) = night(&evolve_toml("openai", &llm.openai_url(), ""));
    assert_ok(&out);
    let (status, decision, _, _, _) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("nothing"))
    );
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn a_reply_that_would_pass_the_budget_stops_the_night_before_the_next_call() {
    in_both_shapes(a_reply_that_would_pass_the_budget_stops_the_night_before_the_next_call_in);
}

fn a_reply_that_would_pass_the_budget_stops_the_night_before_the_next_call_in(shape: Shape) {
    // The analyst's reply reports 30,000 output tokens ($0.45 of $0.50):
    // the author's worst case no longer fits.
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 30_000),
        shape.reply(&fenced(GOOD), 2000, 900),
    ]);
    let toml = shape
        .toml(&llm, "")
        .replace("[gates]", "[budget]\nusd = 0.5\n\n[gates]");
    let (_dir, db, out) = night(&toml);
    assert_ok(&out);
    let (status, _, note, usd, _) = night_row(&db);
    assert_eq!(status, "stopped", "{note}");
    assert!(note.contains("budget"), "{note}");
    assert!((usd - 0.453).abs() < 1e-9, "{usd}");
    assert_eq!(llm.requests().len(), 1, "nothing more was sent");
    let conn = Connection::open(&db).expect("db");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect("count") };
    assert_eq!(count("SELECT COUNT(*) FROM evolve_attempts"), 0);
    assert_eq!(count("SELECT COUNT(*) FROM candidates"), 0);
    let last = steps(&db).pop().expect("a step");
    assert_eq!((last.0.as_str(), last.2), ("generate", false));
    assert!(last.4.contains("budget"), "{}", last.4);
    assert!(
        text(&out.stdout).contains("stopped"),
        "{}",
        text(&out.stdout)
    );
    assert_key_kept(&db, &out, &llm.requests());
}

#[test]
fn a_reviewers_rejection_is_fed_back_to_the_author_once() {
    let reject = r#"{"verdict":"reject","reasons":["the brief asked for a 5% stop; say why 5%"]}"#;
    let llm = FakeLlm::start(vec![
        Reply::anthropic(&create(), 1000, 200),
        Reply::anthropic(&fenced(GOOD), 2000, 900),
        Reply::anthropic(reject, 1500, 40),
        Reply::anthropic(&fenced(GOOD), 2600, 900),
        Reply::anthropic(ACCEPT, 1500, 40),
    ]);
    let (_dir, db, out) = night(&evolve_toml("anthropic", &llm.anthropic_url(), ""));
    assert_ok(&out);
    let requests = llm.requests();
    assert_eq!(requests.len(), 5);
    let again = requests[3].last();
    assert!(again.contains("the reviewer rejected it"), "{again}");
    assert!(again.contains("say why 5%"), "{again}");
    let reached: String = Connection::open(&db)
        .expect("db")
        .query_row("SELECT reached FROM evolve_attempts", [], |r| r.get(0))
        .expect("attempt");
    assert_eq!(reached, "submitted");
    assert_key_kept(&db, &out, &requests);
}

#[test]
fn an_author_that_never_answers_with_code_leaves_its_attempt_on_the_record() {
    let llm = FakeLlm::start(vec![
        Reply::openai(&create(), 1000, 200),
        Reply::openai("I would rather not write code tonight.", 500, 20),
    ]);
    let toml = evolve_toml("openai", &llm.openai_url(), "").replace("retries = 2", "retries = 0");
    let (_dir, db, out) = night(&toml);
    assert_ok(&out);
    let (gate, passed, _) = reached(&db);
    assert_eq!((gate.as_str(), passed), ("generate", false));
    let (status, decision, ..) = night_row(&db);
    assert_eq!(
        (status.as_str(), decision.as_deref()),
        ("finished", Some("create"))
    );
}
