//! `candidates.toml`: the gates' data and thresholds, the shadow slots and
//! the automatic rollback rule. Parsed from text (the host reads the file);
//! every number is checked against its range as it is read, so a bad value
//! is one line naming the file, the line, the key, its value and its range.

use keel_model::Bounds;
pub use keel_model::bounds::{BPS, PERCENT};

/// Counts of trades a gate requires.
pub const TRADES: Bounds<usize> = Bounds::new(0, 1_000_000);
/// Candidates in shadow at once.
pub const SHADOW_SLOTS: Bounds<usize> = Bounds::new(1, 64);
/// A gate's minimum Sharpe ratio (a large negative one waives the check).
pub const SHARPE: Bounds<f64> = Bounds::new(-1e6, 1e6);
/// A gate's minimum profit factor.
pub const PROFIT_FACTOR: Bounds<f64> = Bounds::new(0.0, 1000.0);
/// The backtest gate's walk-forward folds (0: none).
pub const GATE_FOLDS: Bounds<usize> = Bounds::new(0, 100);
/// A return in percent: from losing everything to a hundredfold.
pub const RETURN_PCT: Bounds<f64> = Bounds::new(-100.0, 10_000.0);

/// `candidates.toml`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidatesConfig {
    pub backtest: BacktestGate,
    pub paper: PaperGate,
    pub rollback: RollbackRule,
}

/// The backtest gate's data and thresholds.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacktestGate {
    /// `[SYMBOL=]FILE` (relative to `candidates.toml`) or
    /// `SYMBOL@TIMEFRAME` (candles in the store); empty: the built-in
    /// seeded sample.
    pub data: Vec<String>,
    #[serde(deserialize_with = "bounded::trades")]
    pub min_trades: usize,
    #[serde(deserialize_with = "bounded::sharpe")]
    pub min_sharpe: f64,
    #[serde(deserialize_with = "bounded::max_drawdown_pct")]
    pub max_drawdown_pct: f64,
    #[serde(deserialize_with = "bounded::profit_factor")]
    pub min_profit_factor: f64,
    /// Walk-forward folds (0: none); each fold's out-of-sample return must
    /// not be below `min_oos_return_pct`.
    #[serde(deserialize_with = "bounded::folds")]
    pub walk_forward: usize,
    #[serde(deserialize_with = "bounded::return_pct")]
    pub min_oos_return_pct: f64,
    #[serde(deserialize_with = "bounded::fee_bps")]
    pub fee_bps: f64,
    #[serde(deserialize_with = "bounded::slippage_bps")]
    pub slippage_bps: f64,
}

impl Default for BacktestGate {
    fn default() -> Self {
        BacktestGate {
            data: Vec::new(),
            min_trades: 10,
            min_sharpe: 0.0,
            max_drawdown_pct: 25.0,
            min_profit_factor: 1.0,
            walk_forward: 0,
            min_oos_return_pct: -100.0,
            fee_bps: 10.0,
            slippage_bps: 5.0,
        }
    }
}

/// The paper gate's criteria.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperGate {
    /// Candidates run in shadow at once.
    #[serde(deserialize_with = "bounded::slots")]
    pub slots: usize,
    #[serde(deserialize_with = "bounded::trades")]
    pub min_trades: usize,
    #[serde(deserialize_with = "bounded::max_drawdown_pct")]
    pub max_drawdown_pct: f64,
    /// Must promotion wait for this gate?
    pub required: bool,
}

impl Default for PaperGate {
    fn default() -> Self {
        PaperGate {
            slots: 3,
            min_trades: 20,
            max_drawdown_pct: 20.0,
            required: true,
        }
    }
}

/// When a new version is rolled back by itself (see
/// [`RollbackRule::first_day_loss`]).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackRule {
    /// Loss in a day since promotion, percent of equity at promotion.
    #[serde(deserialize_with = "bounded::daily_loss_pct")]
    pub daily_loss_pct: f64,
}

impl Default for RollbackRule {
    fn default() -> Self {
        RollbackRule {
            daily_loss_pct: 15.0,
        }
    }
}

/// A `candidates.toml` that does not parse: `origin:line: what`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}:{line}: {message}")]
pub struct ConfigError {
    /// Where the text came from (the file's path), as given.
    pub origin: String,
    pub line: usize,
    pub message: String,
}

impl CandidatesConfig {
    /// Parses `text`, the contents of `origin`. Data paths are kept as
    /// written (the host makes them relative to the file).
    pub fn parse(text: &str, origin: &str) -> Result<CandidatesConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_owned(),
            line: e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            }),
            message: keel_model::shown::message(e.message().trim()),
        })
    }
}

/// `candidates.toml`'s numbers, each checked against its range as it is
/// read (the error then names its line).
mod bounded {
    use super::{
        BPS, GATE_FOLDS, PERCENT, PROFIT_FACTOR, RETURN_PCT, SHADOW_SLOTS, SHARPE, TRADES,
    };
    use serde::Deserializer;

    pub(super) fn trades<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        TRADES.deserialize("min_trades", d)
    }
    pub(super) fn sharpe<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        SHARPE.deserialize("min_sharpe", d)
    }
    pub(super) fn max_drawdown_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        PERCENT.deserialize("max_drawdown_pct", d)
    }
    pub(super) fn daily_loss_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        PERCENT.deserialize("daily_loss_pct", d)
    }
    pub(super) fn profit_factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        PROFIT_FACTOR.deserialize("min_profit_factor", d)
    }
    pub(super) fn folds<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        GATE_FOLDS.deserialize("walk_forward", d)
    }
    pub(super) fn return_pct<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        RETURN_PCT.deserialize("min_oos_return_pct", d)
    }
    pub(super) fn fee_bps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        BPS.deserialize("fee_bps", d)
    }
    pub(super) fn slippage_bps<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        BPS.deserialize("slippage_bps", d)
    }
    pub(super) fn slots<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        SHADOW_SLOTS.deserialize("slots", d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_states_the_defaults_and_names_real_candles() {
        let text = include_str!("../../examples/candidates.toml");
        let config = CandidatesConfig::parse(text, "examples/candidates.toml").expect("parses");
        assert_eq!(
            config.backtest.data,
            ["../../shared/data/crypto-5m/XLM_BTC-5m.csv"]
        );
        let defaults = CandidatesConfig::default();
        assert_eq!(
            CandidatesConfig {
                backtest: BacktestGate {
                    data: Vec::new(),
                    ..config.backtest
                },
                ..config
            },
            defaults,
            "every other number in the example is the default it documents"
        );
    }

    #[test]
    fn an_empty_file_is_the_defaults_and_keys_override_them() {
        assert_eq!(
            CandidatesConfig::parse("", "c.toml"),
            Ok(CandidatesConfig::default())
        );
        let text = "[backtest]\ndata = [\"BTC=btc.csv\", \"ETH/USD@5m\"]\nmin_trades = 3\n\n[paper]\nslots = 1\nrequired = false\n\n[rollback]\ndaily_loss_pct = 2.5\n";
        let config = CandidatesConfig::parse(text, "c.toml").expect("parses");
        assert_eq!(config.backtest.data, ["BTC=btc.csv", "ETH/USD@5m"]);
        assert_eq!(config.backtest.min_trades, 3);
        assert_eq!(config.backtest.fee_bps, 10.0);
        assert_eq!((config.paper.slots, config.paper.required), (1, false));
        assert_eq!(config.rollback.daily_loss_pct, 2.5);
    }

    #[test]
    fn a_bad_value_is_one_line_naming_file_line_key_and_range() {
        let cases = [
            (
                "[paper]\nslots = 0\n",
                "c.toml:2: slots 0 is outside [1, 64]",
            ),
            (
                "[backtest]\nmin_trades = 3\nfee_bps = -1\n",
                "c.toml:3: fee_bps -1 is outside [0, 1000]",
            ),
            (
                "[rollback]\ndaily_loss_pct = 0\n",
                "c.toml:2: daily_loss_pct 0 is outside (0, 100]",
            ),
            (
                "[backtest]\nmax_drawdown_pct = nan\n",
                "c.toml:2: max_drawdown_pct NaN is outside (0, 100]",
            ),
            (
                "[backtest]\nwalk_forward = 101\n",
                "c.toml:2: walk_forward 101 is outside [0, 100]",
            ),
            (
                "[backtest]\nmin_oos_return_pct = -101\n",
                "c.toml:2: min_oos_return_pct -101 is outside [-100, 10000]",
            ),
        ];
        for (text, message) in cases {
            let err = CandidatesConfig::parse(text, "c.toml").expect_err(message);
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused_in_one_line() {
        for text in [
            "[paper]\nslot = 2\n",
            "[backtest\n",
            "[paper]\nrequired = 1\n",
        ] {
            let err = CandidatesConfig::parse(text, "c.toml").expect_err(text);
            let message = err.to_string();
            assert!(message.starts_with("c.toml:"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
