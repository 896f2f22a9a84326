//! The host's risk limits: `risk_limits.toml` (`RiskConfig`), the limits
//! it gives each symbol, and the halt rule by its figures. The checks
//! themselves — the trading state, the contract's limits, the collar — are
//! the kernel's (`keel_backtester::kernel`), the same in every mode.

use std::collections::BTreeMap;
use std::path::Path;

use keel_backtester::kernel;
use keel_backtester::risk::MinOrders;
use keel_model::{RiskLimits, shown};

pub use keel_backtester::kernel::{TradingState, collar};

/// `risk_limits.toml`. Percentages are of the book's equity.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Largest position per symbol.
    pub max_position_pct: f64,
    /// Most positions open at once.
    pub max_open_positions: u32,
    /// Largest single order.
    pub max_trade_pct: f64,
    /// Halt once equity is this far below the day's starting equity (UTC day).
    pub daily_loss_halt_pct: f64,
    /// Halt once equity is this far below its peak.
    pub max_drawdown_halt_pct: f64,
    /// Refuse to fill an order at a price this far from the last price the
    /// order was sized at (a bad tick or a gap).
    pub fat_finger_pct: f64,
    /// Smallest order on a fiat or stablecoin quote (USD, EUR, USDT, …), or
    /// on a symbol whose quote cannot be told.
    pub min_order_quote: f64,
    /// Smallest order by quote currency (`BTC = 0.0001`) or by symbol
    /// (`"ETH/BTC" = 0.001`), over the built-in ones for BTC and ETH quotes.
    pub min_order: BTreeMap<String, f64>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            max_position_pct: 25.0,
            max_open_positions: 10,
            max_trade_pct: 25.0,
            daily_loss_halt_pct: 5.0,
            max_drawdown_halt_pct: 20.0,
            fat_finger_pct: 10.0,
            min_order_quote: 10.0,
            min_order: BTreeMap::new(),
        }
    }
}

impl RiskConfig {
    /// Reads and checks `path`; every error is one line naming the file.
    pub fn load(path: &Path) -> Result<RiskConfig, String> {
        let name = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
        let config: RiskConfig = toml::from_str(&text).map_err(|e| {
            let msg = shown::message(e.message().trim());
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{name}:{line}: {msg}")
                }
                None => format!("{name}: {msg}"),
            }
        })?;
        config.check().map_err(|e| format!("{name}: {e}"))?;
        Ok(config)
    }

    /// Every value within its range in [`crate::ranges`].
    pub fn check(&self) -> Result<(), String> {
        use crate::ranges::{MIN_ORDER_QUOTE, OPEN_POSITIONS, PERCENT};
        let pcts = [
            ("max_position_pct", self.max_position_pct),
            ("max_trade_pct", self.max_trade_pct),
            ("daily_loss_halt_pct", self.daily_loss_halt_pct),
            ("max_drawdown_halt_pct", self.max_drawdown_halt_pct),
            ("fat_finger_pct", self.fat_finger_pct),
        ];
        for (name, value) in pcts {
            PERCENT.check(name, value).map_err(|e| e.to_string())?;
        }
        (OPEN_POSITIONS.check("max_open_positions", self.max_open_positions))
            .map_err(|e| e.to_string())?;
        (MIN_ORDER_QUOTE.check("min_order_quote", self.min_order_quote))
            .map_err(|e| e.to_string())?;
        for (name, &minimum) in &self.min_order {
            if !(minimum >= 0.0 && minimum.is_finite()) {
                return Err(format!(
                    "min_order.{} = {} must be 0 or more",
                    shown::text(name),
                    shown::number(minimum)
                ));
            }
        }
        Ok(())
    }

    /// The limits for `symbol`, as the shared checks apply them and a
    /// strategy trading it sees them (the minimum order in its quote).
    pub fn limits_for(&self, symbol: &str) -> RiskLimits {
        self.min_orders().limits_for(symbol, &self.base_limits())
    }

    /// The limits with `min_order_quote` for fiat quotes: what a backtest
    /// starts from, beside `min_orders`.
    pub fn base_limits(&self) -> RiskLimits {
        RiskLimits {
            max_position_fraction: self.max_position_pct / 100.0,
            max_open_positions: self.max_open_positions,
            max_trade_fraction: self.max_trade_pct / 100.0,
            min_order_quote: self.min_order_quote,
        }
    }

    /// The `[min_order]` table.
    pub fn min_orders(&self) -> MinOrders {
        let mut orders = MinOrders::default();
        for (name, &minimum) in &self.min_order {
            orders.set(name, minimum);
        }
        orders
    }
}

/// Why a book must halt now, if it must: its equity against its peak and
/// against the day's starting equity, by `config`'s limits.
pub fn halt_reason(equity: f64, peak: f64, day_start: f64, config: &RiskConfig) -> Option<String> {
    kernel::halt_reason(
        equity,
        peak,
        day_start,
        config.max_drawdown_halt_pct,
        config.daily_loss_halt_pct,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_backtester::kernel::pre_trade as kernel_pre_trade;
    use keel_backtester::risk::{Approved, Exposure};
    use keel_model::{Signal, Size};

    /// The kernel's checks under `config`'s limits for the signal's symbol.
    fn pre_trade(
        signal: &Signal,
        state: TradingState,
        price: f64,
        exposure: &Exposure,
        config: &RiskConfig,
    ) -> Result<Option<Approved>, String> {
        kernel_pre_trade(
            signal,
            state,
            price,
            exposure,
            &config.limits_for(&signal.symbol),
        )
    }

    #[test]
    fn the_shipped_example_states_the_built_in_limits() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/risk_limits.toml");
        let example = RiskConfig::load(&path).expect("the example loads");
        let defaults = RiskConfig::default();
        assert_eq!(
            RiskConfig {
                min_order: BTreeMap::new(),
                ..example.clone()
            },
            defaults
        );
        for symbol in [
            "ETH/BTC", "XLM/BTC", "SOL/ETH", "XBT/USD", "GOOG", "ADA/XBT",
        ] {
            assert_eq!(
                example.limits_for(symbol),
                defaults.limits_for(symbol),
                "{symbol}"
            );
        }
    }

    fn config() -> RiskConfig {
        RiskConfig {
            max_position_pct: 20.0,
            max_open_positions: 2,
            max_trade_pct: 10.0,
            daily_loss_halt_pct: 5.0,
            max_drawdown_halt_pct: 15.0,
            fat_finger_pct: 10.0,
            min_order_quote: 50.0,
            min_order: BTreeMap::new(),
        }
    }

    fn exposure(equity: f64, held: &[(&str, &str, f64)]) -> Exposure {
        let mut e = Exposure {
            equity,
            ..Exposure::default()
        };
        for (symbol, tag, notional) in held {
            e.hold(symbol, tag, keel_model::Side::Long, *notional);
        }
        e
    }

    fn buy(quote: f64) -> Signal {
        Signal::open_long("BTC", Size::Quote(quote))
    }

    /// Each limit at its boundary: exactly at the limit passes, just over fails.
    #[test]
    fn every_limit_accepts_at_its_boundary_and_rejects_past_it() {
        let c = config();
        let flat = exposure(1000.0, &[]);
        let ok = |s: &Signal, e: &Exposure| pre_trade(s, TradingState::Active, 100.0, e, &c);
        // Trade size: 10% of 1000.
        assert!(ok(&buy(100.0), &flat).is_ok());
        assert_eq!(
            ok(&buy(100.01), &flat).expect_err("trade"),
            // (Told apart: not "10.00% ... over the 10.00%".)
            "order of 10.001% of equity is over the 10.000% trade limit"
        );
        // Minimum order: 50.
        assert!(ok(&buy(50.0), &flat).is_ok());
        assert_eq!(
            ok(&buy(49.99), &flat).expect_err("min"),
            "order of 49.99 is below the minimum order of 50.00"
        );
        // Position: 20% of 1000.
        let held = exposure(1000.0, &[("BTC", "", 140.0)]);
        assert!(ok(&buy(60.0), &held).is_ok());
        let more = exposure(1000.0, &[("BTC", "", 140.01)]);
        assert!(
            ok(&buy(60.0), &more)
                .expect_err("position")
                .ends_with("would be 20.001% of equity, over the 20.000% position limit")
        );
        // Open positions: 2.
        let one = exposure(1000.0, &[("ETH", "", 10.0)]);
        assert!(ok(&buy(60.0), &one).is_ok());
        let two = exposure(1000.0, &[("ETH", "", 10.0), ("LTC", "", 10.0)]);
        assert_eq!(
            ok(&buy(60.0), &two).expect_err("count"),
            "2 positions are open, the limit is 2"
        );
    }

    #[test]
    fn paper_refuses_exits_on_the_wrong_side_as_backtests_do() {
        let flat = exposure(1000.0, &[]);
        let long = buy(60.0).stop_loss(101.0);
        assert_eq!(
            pre_trade(&long, TradingState::Active, 100.0, &flat, &config()),
            Err("stop-loss 101 of a long is not below the price 100".into())
        );
        let short = Signal::open_short("BTC", Size::Quote(60.0)).stop_loss(99.0);
        assert_eq!(
            pre_trade(&short, TradingState::Active, 100.0, &flat, &config()),
            Err("stop-loss 99 of a short is not above the price 100".into())
        );
    }

    #[test]
    fn the_trading_state_gates_new_exposure() {
        let c = config();
        let flat = exposure(1000.0, &[]);
        let close = Signal::close("BTC");
        for (state, open_ok, close_ok) in [
            (TradingState::Active, true, true),
            (TradingState::ReduceOnly, false, true),
            // A halt never keeps a position from closing.
            (TradingState::Halted, false, true),
        ] {
            assert_eq!(
                pre_trade(&buy(60.0), state, 100.0, &flat, &c).is_ok(),
                open_ok,
                "{state}"
            );
            assert_eq!(
                pre_trade(&close, state, 100.0, &flat, &c).is_ok(),
                close_ok,
                "{state}"
            );
        }
    }

    #[test]
    fn halts_trigger_at_their_boundaries() {
        let c = config();
        // Drawdown 15% from a peak of 1000.
        assert_eq!(halt_reason(850.01, 1000.0, 850.01, &c), None);
        assert!(
            halt_reason(850.0, 1000.0, 850.0, &c)
                .expect("drawdown")
                .starts_with("drawdown 15.00%")
        );
        // Daily loss 5% from 900.
        assert_eq!(halt_reason(855.01, 900.0, 900.0, &c), None);
        assert!(
            halt_reason(855.0, 900.0, 900.0, &c)
                .expect("daily")
                .starts_with("daily loss 5.00%")
        );
    }

    #[test]
    fn the_fat_finger_collar_holds_at_its_boundary() {
        assert!(collar(100.0, 110.0, 10.0).is_ok());
        assert!(collar(100.0, 90.0, 10.0).is_ok());
        assert_eq!(
            collar(100.0, 110.5, 10.0).expect_err("collar"),
            "fat-finger: price 110.5 is 10.50% from the reference 100, over the 10% limit"
        );
    }

    #[test]
    fn config_files_are_checked_with_the_line_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |text: &str| {
            let path = dir.path().join("risk_limits.toml");
            std::fs::write(&path, text).expect("write");
            path
        };
        let good = write("max_trade_pct = 5\nmin_order_quote = 20\n");
        let c = RiskConfig::load(&good).expect("loads");
        assert_eq!((c.max_trade_pct, c.min_order_quote), (5.0, 20.0));
        assert_eq!(c.max_open_positions, 10, "defaults fill the rest");
        // The minimum order by quote currency or symbol, beside the old key.
        let quotes = write("min_order_quote = 20\n[min_order]\nbtc = 0.001\n\"ETH/BTC\" = 0.01\n");
        let c = RiskConfig::load(&quotes).expect("loads");
        let minimum = |symbol: &str| c.limits_for(symbol).min_order_quote;
        assert_eq!(
            [minimum("BTC/USD"), minimum("LTC/BTC"), minimum("ETH/BTC")],
            [20.0, 0.001, 0.01]
        );
        assert_eq!(
            RiskConfig::default().limits_for("LTC/BTC").min_order_quote,
            0.0001
        );
        let typo = write("max_trade_pct = 5\nmax_trade_pc = 3\n");
        let err = RiskConfig::load(&typo).expect_err("unknown key");
        assert!(
            err.contains("risk_limits.toml:2: unknown field `max_trade_pc`"),
            "{err}"
        );
        let bad = write("fat_finger_pct = 0\n");
        assert!(
            RiskConfig::load(&bad)
                .expect_err("range")
                .ends_with("fat_finger_pct 0 is outside (0, 100]")
        );
    }
}
