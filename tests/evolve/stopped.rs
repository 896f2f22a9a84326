//! Model-written strategies that must not get through, in both API
//! shapes: one that peeks at later bars, one that never returns, one fit to
//! the window it was shown.

use std::path::Path;

use rusqlite::Connection;

use super::llm::{
    ACCEPT, GOOD, Shape, assert_ok, create, fenced, in_both_shapes, night, night_row, steps,
};
use crate::fakes::llm::FakeLlm;
use crate::paper::count;

/// A model's strategy that reads the later closes of its call before
/// deciding at the first (written against the SDK's own export, as a
/// model could): it builds, validates and is deterministic, and only the
/// look-ahead probe can tell.
const PEEKING: &str = r#"use std::cell::Cell;

use keel_strategy_sdk::prelude::*;

std::thread_local! {
    static AHEAD: Cell<Option<bool>> = const { Cell::new(None) };
}

pub struct Peek {
    holding: bool,
}

impl Strategy for Peek {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "peek".into(),
            version: "1.0.0".into(),
            description: "Buys before rises.".into(),
            symbols: vec![],
            timeframe: "1m".into(),
            warmup_bars: 0,
            params: vec![],
        }
    }

    fn init(_params: &Params) -> Result<Self, String> {
        Ok(Peek { holding: false })
    }

    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let Some(bar) = tick.bars.first() else {
            return Ok(vec![]);
        };
        Ok(match (AHEAD.with(Cell::take), self.holding) {
            (Some(true), false) => {
                self.holding = true;
                vec![Signal::open_long(&bar.symbol, Size::FractionOfEquity(0.5))
                    .stop_loss(bar.close * 0.95)
                    .reason("it rises")]
            }
            (Some(false), true) => {
                self.holding = false;
                vec![Signal::close(&bar.symbol).reason("it falls")]
            }
            _ => vec![],
        })
    }
}

#[cfg(target_arch = "wasm32")]
const _: () = {
    use keel_strategy_sdk::__private::{self, bindings};

    std::thread_local! {
        static SLOT: __private::Slot<Peek> = const { std::cell::RefCell::new(None) };
    }

    struct Guest;

    impl __private::Guest for Guest {
        fn describe() -> bindings::StrategyInfo {
            __private::describe::<Peek>()
        }

        fn init(params: Vec<bindings::Param>, symbols: Vec<String>) -> Result<(), String> {
            SLOT.with(|slot| __private::init(slot, params, symbols))
        }

        fn on_bars(
            lanes: Vec<i64>,
            prices: Vec<f64>,
            portfolio: bindings::Portfolio,
            limits: bindings::RiskLimits,
            fills: Vec<bindings::Fill>,
            tags: Vec<String>,
        ) -> Result<bindings::BatchResult, String> {
            let bars = prices.len() / 5;
            let close = |b: usize| prices[b * 5 + 3];
            AHEAD.with(|a| a.set((bars >= 2).then(|| close(bars - 1) > close(0))));
            SLOT.with(|slot| __private::on_bars(slot, lanes, prices, portfolio, limits, fills, tags))
        }
    }

    __private::export!(Guest with_types_in bindings);
};
"#;

/// The attempt's furthest gate, whether it passed, and its last step's output.
pub(super) fn reached(db: &Path) -> (String, bool, String) {
    let conn = Connection::open(db).expect("db");
    let (reached, passed): (String, bool) = conn
        .query_row("SELECT reached, passed FROM evolve_attempts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("an attempt");
    let output: String = conn
        .query_row(
            "SELECT output FROM evolve_steps WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
            [&reached],
            |r| r.get(0),
        )
        .unwrap_or_default();
    (reached, passed, output)
}

/// Through the SDK's own API a strategy sees one close at a time: a model
/// that wants the later closes of a call has to reach into the SDK's
/// private interface, which the static review refuses before anything is
/// built; the look-ahead probe behind it is proven on a component that
/// does it (`evolve::the_lookahead_probe_catches_…`).
#[test]
fn a_model_strategy_that_peeks_at_later_bars_is_refused_before_it_is_built() {
    in_both_shapes(a_model_strategy_that_peeks_at_later_bars_is_refused_before_it_is_built_in);
}

fn a_model_strategy_that_peeks_at_later_bars_is_refused_before_it_is_built_in(shape: Shape) {
    // Its own export is refused as no strategy; asked again, it names the
    // macro in a comment to get past that, and the review refuses the
    // private interface.
    let dodging = format!("// keel_strategy_sdk::export_strategy! is not needed here\n{PEEKING}");
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 200),
        shape.reply(&fenced(PEEKING), 2000, 900),
        shape.reply(&fenced(&dodging), 2000, 900),
    ]);
    let toml = shape.toml(&llm, "").replace("retries = 2", "retries = 1");
    let (_dir, db, out) = night(&toml);
    assert_ok(&out);
    let all = steps(&db);
    let said = |text: &str| all.iter().any(|s| s.4.contains(text));
    assert!(
        said("the code does not export a strategy (export_strategy!)"),
        "{all:?}"
    );
    assert!(said("the SDK's private interface (__private)"), "{all:?}");
    assert!(!all.iter().any(|s| s.0 == "build"), "never built: {all:?}");
    assert_eq!(llm.requests().len(), 3, "no reviewer call");
    let (gate, passed, _) = reached(&db);
    assert_eq!((gate.as_str(), passed), ("review", false), "on the record");
    let candidates = count(
        &Connection::open(&db).expect("db"),
        "SELECT COUNT(*) FROM candidates",
    );
    assert_eq!(candidates, 0, "never submitted");
}

#[test]
fn a_hostile_model_strategy_is_stopped_by_the_sandbox_and_never_submitted() {
    in_both_shapes(a_hostile_model_strategy_is_stopped_by_the_sandbox_and_never_submitted_in);
}

fn a_hostile_model_strategy_is_stopped_by_the_sandbox_and_never_submitted_in(shape: Shape) {
    let hostile = GOOD.replacen(
        "fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {",
        "fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {\n        let mut spin = tick.time_ms as u64;\n        loop {\n            spin = spin.wrapping_mul(6364136223846793005).wrapping_add(1);\n            if spin == 42 {\n                break;\n            }\n        }",
        1,
    );
    assert_ne!(hostile, GOOD, "the loop went in");
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 200),
        shape.reply(&fenced(&hostile), 2000, 900),
        shape.reply(ACCEPT, 1500, 40),
    ]);
    let toml = shape.toml(&llm, "").replace("retries = 2", "retries = 0");
    let (_dir, db, out) = night(&toml);
    assert_ok(&out);
    let (gate, passed, output) = reached(&db);
    assert!(!passed, "{gate}: {output}");
    assert_eq!(gate, "validate", "{output}");
    assert!(output.contains("fuel"), "the sandbox's reason: {output}");
    let (status, ..) = night_row(&db);
    assert_eq!(status, "finished", "the night itself carried on");
}

#[test]
fn a_model_strategy_fit_to_the_in_sample_window_is_stopped_by_the_locked_holdout() {
    in_both_shapes(
        a_model_strategy_fit_to_the_in_sample_window_is_stopped_by_the_locked_holdout_in,
    );
}

fn a_model_strategy_fit_to_the_in_sample_window_is_stopped_by_the_locked_holdout_in(shape: Shape) {
    // It trades only before the holdout begins (a date it was never shown,
    // but a model can fit to the data it saw): in sample it trades, on the
    // holdout it does nothing at all.
    let overfit = GOOD.replacen(
        "fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {",
        "fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {\n        if tick.time_ms >= 1_767_225_600_000 + 3_000 * 60_000 {\n            return Ok(vec![]);\n        }",
        1,
    );
    assert_ne!(overfit, GOOD);
    let llm = FakeLlm::start(vec![
        shape.reply(&create(), 1000, 200),
        shape.reply(&fenced(&overfit), 2000, 900),
        shape.reply(ACCEPT, 1500, 40),
    ]);
    let toml = shape
        .toml(&llm, "")
        .replace("min_holdout_sharpe = -1000000", "min_holdout_sharpe = 0");
    let (_dir, db, out) = night(&toml);
    assert_ok(&out);
    let (gate, passed, output) = reached(&db);
    assert_eq!((gate.as_str(), passed), ("holdout", false), "{output}");
    assert!(output.contains("\"trades\":0"), "{output}");
    let uses = count(
        &Connection::open(&db).expect("db"),
        "SELECT COUNT(*) FROM evolve_holdout_uses",
    );
    assert_eq!(uses, 1, "each look at the holdout is counted");
}
