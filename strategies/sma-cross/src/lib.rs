//! sma-cross: long when the fast simple moving average crosses above the slow
//! one, flat when it crosses back below. One symbol: the first one it is given.

use keel_strategy_sdk::prelude::*;

#[derive(Debug)]
pub struct SmaCross {
    fast: Sma,
    slow: Sma,
    size: f64,
    /// The symbol it trades (shared with the bars, so lookups are cheap).
    symbol: Option<Symbol>,
    /// Was fast above slow on the previous bar?
    above: Option<bool>,
}

impl Strategy for SmaCross {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "sma-cross".into(),
            version: "1.0.0".into(),
            description:
                "Goes long when the fast SMA crosses above the slow SMA and exits when it \
                          crosses back below."
                    .into(),
            symbols: vec!["BTC/USD".into()],
            timeframe: "1h".into(),
            warmup_bars: 30,
            params: vec![
                ParamSpec::int("fast", 10, 2, 200, "bars in the fast moving average"),
                ParamSpec::int("slow", 30, 3, 1000, "bars in the slow moving average"),
                ParamSpec::float("size", 0.2, 0.001, 1.0, "fraction of equity per entry"),
            ],
        }
    }

    fn init(params: &Params) -> Result<Self, String> {
        let fast = params.int("fast")?;
        let slow = params.int("slow")?;
        if fast >= slow {
            return Err(format!("fast ({fast}) must be shorter than slow ({slow})"));
        }
        Ok(SmaCross {
            fast: Sma::new(fast as usize),
            slow: Sma::new(slow as usize),
            size: params.float("size")?,
            symbol: None,
            above: None,
        })
    }

    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let symbol = self.symbol.get_or_insert_with(|| {
            tick.bars
                .first()
                .map(|b| b.symbol.clone())
                .unwrap_or_default()
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
                Signal::open_long(symbol, Size::FractionOfEquity(self.size)).reason(format!(
                    "fast SMA {} crossed above slow {}",
                    fixed(fast, 6),
                    fixed(slow, 6)
                )),
            ],
            (false, true) => vec![Signal::close(symbol).reason(format!(
                "fast SMA {} crossed below slow {}",
                fixed(fast, 6),
                fixed(slow, 6)
            ))],
            _ => vec![],
        })
    }
}

keel_strategy_sdk::export_strategy!(SmaCross);

#[cfg(test)]
mod tests {
    use super::*;
    use keel_strategy_sdk::harness::{ExitReason, Harness, build};

    fn data(file: &str) -> String {
        format!("{}/../../../shared/data/{file}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn alternates_entries_and_exits_on_real_data() {
        let harness = Harness::from_csv(data("UNITTEST_BTC-1m.csv"), "BTC").expect("data");
        let strategy: SmaCross =
            build(&[("fast", ParamValue::Int(5)), ("slow", ParamValue::Int(20))]).expect("params");
        let out = harness.run(strategy);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert!(out.signals.len() > 20, "only {} signals", out.signals.len());
        for (i, (_, s)) in out.signals.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Action::OpenLong
            } else {
                Action::Close
            };
            assert_eq!(s.action, expected, "signal {i}");
        }
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        // One trade per entry; each ends at its exit signal, the last one maybe at the end of data.
        let entries = out
            .signals
            .iter()
            .filter(|(_, s)| s.action == Action::OpenLong)
            .count();
        assert_eq!(out.trades.len(), entries);
        let (last, rest) = out.trades.split_last().expect("trades");
        assert!(rest.iter().all(|t| t.exit_reason == ExitReason::Signal));
        assert!(matches!(
            last.exit_reason,
            ExitReason::Signal | ExitReason::EndOfData
        ));
    }

    #[test]
    fn refuses_fast_not_shorter_than_slow() {
        let err =
            build::<SmaCross>(&[("fast", ParamValue::Int(40)), ("slow", ParamValue::Int(30))])
                .expect_err("fast >= slow");
        assert_eq!(err, "fast (40) must be shorter than slow (30)");
        let err = build::<SmaCross>(&[("fast", ParamValue::Int(1))]).expect_err("below min");
        assert_eq!(err, "parameter 'fast' = 1 is outside [2, 200]");
    }
}
