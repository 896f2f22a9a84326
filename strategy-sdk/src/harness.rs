//! Run a strategy natively, without wasm: for unit tests of strategy logic.
//!
//! The harness resolves parameters exactly as the host does and runs the
//! strategy through the backtester's engine — the same loop, fills, stops and
//! risk checks a component gets from `keel backtest` and `keel strategy run`.
//! By default it charges no fees or slippage (see [`default_config`]), so
//! tests read prices straight off the candles.

use std::cell::RefCell;
use std::path::Path;

use keel_model::candles;
pub use keel_model::candles::Candle;
use keel_model::replay::Series;
use keel_model::{Fill, LogLevel, ParamValue, Params, RunningStrategy, Signal, Tick};

use crate::Strategy;

pub use keel_backtester::fills::FillModel;
pub use keel_backtester::kernel::RejectedBy;
pub use keel_backtester::{BacktestConfig, BacktestResult as Outcome, ExitReason, Trade};
pub use keel_model::candles::read_csv;

/// The harness's default: 10,000 cash, no fees, no slippage, the default
/// risk limits.
pub fn default_config() -> BacktestConfig {
    BacktestConfig {
        fills: FillModel {
            fee_bps: 0.0,
            slippage_bps: 0.0,
            ..FillModel::default()
        },
        ..BacktestConfig::default()
    }
}

thread_local! {
    static LOGS: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record_log(level: LogLevel, message: &str) {
    LOGS.with(|logs| logs.borrow_mut().push((level, message.to_owned())));
}

/// Every line logged on this thread since the last call.
pub fn take_logs() -> Vec<(LogLevel, String)> {
    LOGS.with(|logs| std::mem::take(&mut *logs.borrow_mut()))
}

/// A native strategy behind the same trait the host's sandbox implements.
#[derive(Debug)]
pub struct Native<S>(pub S);

impl<S: Strategy> RunningStrategy for Native<S> {
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        self.0.on_bar(tick)
    }
    fn on_fill(&mut self, fill: &Fill) -> Result<(), String> {
        self.0.on_fill(fill);
        Ok(())
    }
}

/// Builds `S` with its defaults overridden by `overrides`, checked as the host checks.
pub fn build<S: Strategy>(overrides: &[(&str, ParamValue)]) -> Result<S, String> {
    let info = S::describe();
    let overrides: Vec<(String, ParamValue)> = overrides
        .iter()
        .map(|(n, v)| ((*n).to_owned(), *v))
        .collect();
    let params = Params::resolve(&info.params, &overrides).map_err(|e| e.to_string())?;
    S::init(&params)
}

/// A replay over in-memory candle series.
#[derive(Debug, Clone)]
pub struct Harness {
    series: Vec<Series>,
    config: BacktestConfig,
}

impl Harness {
    /// One symbol from a candle CSV file.
    pub fn from_csv(path: impl AsRef<Path>, symbol: &str) -> Result<Harness, String> {
        let candles = candles::read_csv(path.as_ref()).map_err(|e| e.to_string())?;
        Ok(Harness::new().with_series(symbol, candles))
    }

    pub fn new() -> Harness {
        Harness {
            series: Vec::new(),
            config: default_config(),
        }
    }

    /// Adds a symbol; its bar length is the candles' most common spacing.
    pub fn with_series(mut self, symbol: &str, candles: Vec<Candle>) -> Harness {
        let bar_ms = candles::typical_spacing_ms(&candles).unwrap_or(60_000);
        self.series.push(Series {
            symbol: symbol.to_owned(),
            candles,
            bar_ms,
        });
        self
    }

    pub fn with_cash(mut self, cash: f64) -> Harness {
        self.config.cash = cash;
        self
    }

    /// Fees, slippage, lot size, risk limits: anything but the defaults.
    pub fn with_config(mut self, config: BacktestConfig) -> Harness {
        self.config = config;
        self
    }

    /// Runs every bar through `strategy` in the backtester's engine.
    pub fn run<S: Strategy>(&self, strategy: S) -> Outcome {
        keel_backtester::run(&mut Native(strategy), &self.series, &self.config)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}
