//! rsi-reversion: buys a dip when RSI falls below the oversold line, with a
//! stop-loss and a take-profit set from the entry close; exits when RSI
//! recovers past the overbought line. Optionally mirrors it for shorts.

use keel_strategy_sdk::prelude::*;

#[derive(Debug)]
pub struct RsiReversion {
    rsi: Rsi,
    oversold: f64,
    overbought: f64,
    stop: f64,
    target: f64,
    size: f64,
    allow_short: bool,
    symbol: Option<String>,
    prev: Option<f64>,
}

impl Strategy for RsiReversion {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "rsi-reversion".into(),
            version: "1.0.0".into(),
            description: "Mean reversion on Wilder's RSI: enters when RSI crosses into the oversold \
                          (or overbought) zone with a fixed stop-loss and take-profit, exits when RSI \
                          crosses the opposite line."
                .into(),
            symbols: vec!["BTC/USD".into()],
            timeframe: "1h".into(),
            warmup_bars: 15,
            params: vec![
                ParamSpec::int("period", 14, 2, 100, "RSI length in bars"),
                ParamSpec::float("oversold", 30.0, 1.0, 49.0, "RSI below this is oversold"),
                ParamSpec::float("overbought", 70.0, 51.0, 99.0, "RSI above this is overbought"),
                ParamSpec::float("stop_loss", 0.03, 0.001, 0.5, "stop distance below entry, as a fraction"),
                ParamSpec::float("take_profit", 0.06, 0.001, 2.0, "target distance above entry, as a fraction"),
                ParamSpec::float("size", 0.1, 0.001, 1.0, "fraction of equity per entry"),
                ParamSpec::flag("allow_short", false, "also short when RSI crosses into overbought"),
            ],
        }
    }

    fn init(params: &Params) -> Result<Self, String> {
        Ok(RsiReversion {
            rsi: Rsi::new(params.int("period")? as usize),
            oversold: params.float("oversold")?,
            overbought: params.float("overbought")?,
            stop: params.float("stop_loss")?,
            target: params.float("take_profit")?,
            size: params.float("size")?,
            allow_short: params.flag("allow_short")?,
            symbol: None,
            prev: None,
        })
    }

    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let symbol = self.symbol.get_or_insert_with(|| {
            tick.bars
                .first()
                .map(|b| b.symbol.to_string())
                .unwrap_or_default()
        });
        let Some(bar) = tick.bar(symbol) else {
            return Ok(vec![]);
        };
        let Some(rsi) = self.rsi.update(bar.close) else {
            return Ok(vec![]);
        };
        let Some(prev) = self.prev.replace(rsi) else {
            return Ok(vec![]);
        };
        let position = tick.portfolio.position(symbol, "");
        let close = bar.close;
        let signal = match position.map(|p| p.side) {
            None if prev >= self.oversold && rsi < self.oversold => Some(
                Signal::open_long(symbol, Size::FractionOfEquity(self.size))
                    .stop_loss(close * (1.0 - self.stop))
                    .take_profit(close * (1.0 + self.target))
                    .reason(format!(
                        "RSI {} fell below {}",
                        fixed(rsi, 2),
                        self.oversold
                    ))
                    .confidence(((self.oversold - rsi) / self.oversold).clamp(0.0, 1.0)),
            ),
            None if self.allow_short && prev <= self.overbought && rsi > self.overbought => Some(
                Signal::open_short(symbol, Size::FractionOfEquity(self.size))
                    .stop_loss(close * (1.0 + self.stop))
                    .take_profit(close * (1.0 - self.target))
                    .reason(format!(
                        "RSI {} rose above {}",
                        fixed(rsi, 2),
                        self.overbought
                    ))
                    .confidence(
                        ((rsi - self.overbought) / (100.0 - self.overbought)).clamp(0.0, 1.0),
                    ),
            ),
            Some(Side::Long) if rsi > self.overbought => Some(
                Signal::close(symbol)
                    .reason(format!("RSI {rsi:.2} recovered above {}", self.overbought)),
            ),
            Some(Side::Short) if rsi < self.oversold => Some(
                Signal::close(symbol)
                    .reason(format!("RSI {rsi:.2} fell back below {}", self.oversold)),
            ),
            _ => None,
        };
        Ok(signal.into_iter().collect())
    }
}

keel_strategy_sdk::export_strategy!(RsiReversion);

#[cfg(test)]
mod tests {
    use super::*;
    use keel_strategy_sdk::harness::{Harness, build};

    fn harness() -> Harness {
        let path = format!(
            "{}/../../../shared/data/UNITTEST_BTC-1m.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        Harness::from_csv(path, "BTC").expect("data")
    }

    #[test]
    fn every_entry_carries_its_stop_and_target() {
        let out = harness().run(build::<RsiReversion>(&[]).expect("defaults"));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let entries: Vec<&Signal> = out
            .signals
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.action == Action::OpenLong)
            .collect();
        assert!(entries.len() >= 5, "only {} entries", entries.len());
        assert!(
            out.signals
                .iter()
                .all(|(_, s)| s.action != Action::OpenShort),
            "shorts are off by default"
        );
        for s in entries {
            let (sl, tp) = (s.stop_loss.expect("stop"), s.take_profit.expect("target"));
            // Stop 3% below and target 6% above the same entry close.
            let close = sl / 0.97;
            assert!((tp - close * 1.06).abs() < 1e-12 * close, "sl {sl} tp {tp}");
            assert!((0.0..=1.0).contains(&s.confidence));
        }
    }

    #[test]
    fn shorts_when_allowed() {
        let strategy =
            build::<RsiReversion>(&[("allow_short", ParamValue::Flag(true))]).expect("params");
        let out = harness().run(strategy);
        let short = out
            .signals
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.action == Action::OpenShort)
            .expect("at least one short");
        assert!(
            short.stop_loss > short.take_profit,
            "a short's stop is above its target"
        );
    }
}
