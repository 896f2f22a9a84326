//! blocks: the example strategies' building blocks, recombined by its
//! parameters — an entry (sma-cross's SMA cross, rsi-reversion's RSI leaving
//! oversold, atr-breakout's channel breakout) and an exit (the entry's own
//! opposite signal, an ATR stop with a target, or a fixed stop and target).
//! Every entry carries a stop-loss. Long only, one symbol: the first given.
//! The offline evolution recombines it by drawing `entry` and `exit`.

use keel_strategy_sdk::prelude::*;

#[derive(Debug)]
pub struct Blocks {
    entry: i64,
    exit: i64,
    fast: Sma,
    slow: Sma,
    above: Option<bool>,
    rsi: Rsi,
    last_rsi: Option<f64>,
    oversold: f64,
    overbought: f64,
    high: Highest,
    low: Lowest,
    channel: Option<(f64, f64)>,
    atr: Atr,
    stop_atr: f64,
    stop_pct: f64,
    target_pct: f64,
    size: f64,
    symbol: Option<Symbol>,
}

impl Strategy for Blocks {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "blocks".into(),
            version: "1.0.0".into(),
            description: "The examples' entries and exits, recombined by its parameters: an SMA \
                          cross, RSI leaving oversold or a channel breakout, closed by the \
                          opposite signal, an ATR stop with a target, or fixed percentages."
                .into(),
            symbols: vec!["BTC/USD".into()],
            timeframe: "1h".into(),
            warmup_bars: 30,
            params: vec![
                ParamSpec::int(
                    "entry",
                    0,
                    0,
                    2,
                    "0 SMA cross, 1 RSI leaves oversold, 2 channel breakout",
                ),
                ParamSpec::int(
                    "exit",
                    0,
                    0,
                    2,
                    "0 the entry's opposite, 1 ATR stop and target, 2 fixed stop and target",
                ),
                ParamSpec::int("fast", 10, 2, 200, "bars in the fast moving average"),
                ParamSpec::int("slow", 30, 3, 1000, "bars in the slow moving average"),
                ParamSpec::int("rsi_period", 14, 2, 100, "RSI length in bars"),
                ParamSpec::float("oversold", 30.0, 1.0, 49.0, "RSI below this is oversold"),
                ParamSpec::float(
                    "overbought",
                    70.0,
                    51.0,
                    99.0,
                    "RSI above this is overbought",
                ),
                ParamSpec::int("channel", 20, 2, 500, "bars in the breakout channel"),
                ParamSpec::int("atr_period", 14, 2, 200, "ATR length in bars"),
                ParamSpec::float("stop_atr", 2.0, 0.5, 10.0, "stop distance in ATRs"),
                ParamSpec::float(
                    "stop_pct",
                    0.03,
                    0.001,
                    0.5,
                    "fixed stop distance, a fraction of the entry",
                ),
                ParamSpec::float(
                    "target_pct",
                    0.06,
                    0.001,
                    2.0,
                    "target distance, a fraction of the entry",
                ),
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
        let channel = params.int("channel")? as usize;
        Ok(Blocks {
            entry: params.int("entry")?,
            exit: params.int("exit")?,
            fast: Sma::new(fast as usize),
            slow: Sma::new(slow as usize),
            above: None,
            rsi: Rsi::new(params.int("rsi_period")? as usize),
            last_rsi: None,
            oversold: params.float("oversold")?,
            overbought: params.float("overbought")?,
            high: Highest::new(channel),
            low: Lowest::new(channel),
            channel: None,
            atr: Atr::new(params.int("atr_period")? as usize),
            stop_atr: params.float("stop_atr")?,
            stop_pct: params.float("stop_pct")?,
            target_pct: params.float("target_pct")?,
            size: params.float("size")?,
            symbol: None,
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
        // Every block's indicator on every bar, so that switching blocks
        // never changes what has warmed up.
        let cross = match (self.fast.update(bar.close), self.slow.update(bar.close)) {
            (Some(fast), Some(slow)) => self
                .above
                .replace(fast > slow)
                .map(|was| (was, fast > slow)),
            _ => None,
        };
        let rsi = self.rsi.update(bar.close);
        let rsi_before = std::mem::replace(&mut self.last_rsi, rsi);
        let atr = self.atr.update(bar.high, bar.low, bar.close);
        let channel = self.channel;
        self.channel = self.high.update(bar.high).zip(self.low.update(bar.low));
        let holding = tick.portfolio.position(symbol, "").is_some();
        if holding {
            let out = self.exit == 0
                && match self.entry {
                    0 => cross == Some((true, false)),
                    1 => rsi.is_some_and(|r| r > self.overbought),
                    _ => channel.is_some_and(|(_, bottom)| bar.close < bottom),
                };
            return Ok(match out {
                true => vec![Signal::close(symbol).reason("the entry's signal turned")],
                false => vec![],
            });
        }
        let go = match self.entry {
            0 => cross == Some((false, true)),
            1 => {
                matches!((rsi_before, rsi), (Some(a), Some(b)) if a < self.oversold && b >= self.oversold)
            }
            _ => channel.is_some_and(|(top, _)| bar.close > top),
        };
        if !go {
            return Ok(vec![]);
        }
        let distance = match atr {
            Some(a) if self.exit != 2 && a > 0.0 => self.stop_atr * a,
            _ => self.stop_pct * bar.close,
        };
        let mut entry = Signal::open_long(symbol, Size::FractionOfEquity(self.size))
            .stop_loss((bar.close - distance).max(bar.close * 0.01))
            .reason(format!(
                "entry block {} at {}",
                self.entry,
                fixed(bar.close, 6)
            ));
        if self.exit != 0 {
            entry = entry.take_profit(bar.close * (1.0 + self.target_pct));
        }
        Ok(vec![entry])
    }
}

keel_strategy_sdk::export_strategy!(Blocks);

#[cfg(test)]
mod tests {
    use super::*;
    use keel_strategy_sdk::harness::{Harness, build};

    fn data(file: &str) -> String {
        format!("{}/../../../shared/data/{file}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn every_entry_and_exit_block_trades_real_data_with_a_stop_on_each_entry() {
        let harness = Harness::from_csv(data("UNITTEST_BTC-1m.csv"), "BTC").expect("data");
        let mut seen = Vec::new();
        for entry in 0..3 {
            for exit in 0..3 {
                let strategy: Blocks = build(&[
                    ("entry", ParamValue::Int(entry)),
                    ("exit", ParamValue::Int(exit)),
                ])
                .expect("params");
                let out = harness.run(strategy);
                assert!(out.errors.is_empty(), "{entry}/{exit}: {:?}", out.errors);
                let entries: Vec<_> = (out.signals.iter())
                    .filter(|(_, s)| s.action == Action::OpenLong)
                    .collect();
                assert!(!entries.is_empty(), "block {entry}/{exit} never entered");
                assert!(
                    entries.iter().all(|(_, s)| s.stop_loss.is_some()),
                    "{entry}/{exit}: an entry without a stop"
                );
                seen.push(out.trades.len());
            }
        }
        // The blocks trade differently from one another.
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() >= 4, "{seen:?}");
    }
}
