//! atr-breakout: a Donchian channel breakout on several symbols at once,
//! sized by ATR so each entry risks the same share of equity, with an ATR
//! stop. A position that moves one more ATR in its favour gets one add-on,
//! held under its own tag ("add") beside the entry ("breakout").

use std::collections::BTreeMap;

use keel_strategy_sdk::prelude::*;

#[derive(Debug)]
struct Market {
    atr: Atr,
    high: Highest,
    low: Lowest,
    exit_low: Lowest,
    exit_high: Highest,
    /// Channel of the bars *before* this one (a breakout is against the past).
    channel: Option<(f64, f64)>,
    exit: Option<(f64, f64)>,
}

#[derive(Debug)]
pub struct AtrBreakout {
    channel: usize,
    exit_channel: usize,
    atr_period: usize,
    risk: f64,
    stop_atr: f64,
    allow_short: bool,
    markets: BTreeMap<String, Market>,
}

impl AtrBreakout {
    fn market(&mut self, symbol: &str) -> &mut Market {
        let (channel, exit, atr) = (self.channel, self.exit_channel, self.atr_period);
        self.markets
            .entry(symbol.to_owned())
            .or_insert_with(|| Market {
                atr: Atr::new(atr),
                high: Highest::new(channel),
                low: Lowest::new(channel),
                exit_low: Lowest::new(exit),
                exit_high: Highest::new(exit),
                channel: None,
                exit: None,
            })
    }
}

impl Strategy for AtrBreakout {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "atr-breakout".into(),
            version: "1.0.0".into(),
            description: "Donchian channel breakout across several symbols; ATR-sized entries \
                          with an ATR stop, one add-on per position, exit on the opposite short \
                          channel."
                .into(),
            symbols: ["ETH/BTC", "LTC/BTC", "XMR/BTC"].map(String::from).to_vec(),
            timeframe: "5m".into(),
            warmup_bars: 21,
            params: vec![
                ParamSpec::int("channel", 20, 2, 500, "bars in the entry channel"),
                ParamSpec::int("exit_channel", 10, 2, 500, "bars in the exit channel"),
                ParamSpec::int("atr_period", 14, 2, 200, "ATR length in bars"),
                ParamSpec::float(
                    "risk",
                    0.01,
                    0.0001,
                    0.1,
                    "equity risked per entry at the stop",
                ),
                ParamSpec::float("stop_atr", 2.0, 0.5, 10.0, "stop distance in ATRs"),
                ParamSpec::flag("allow_short", true, "also trade downside breakouts"),
            ],
        }
    }

    fn init(params: &Params) -> Result<Self, String> {
        Ok(AtrBreakout {
            channel: params.int("channel")? as usize,
            exit_channel: params.int("exit_channel")? as usize,
            atr_period: params.int("atr_period")? as usize,
            risk: params.float("risk")?,
            stop_atr: params.float("stop_atr")?,
            allow_short: params.flag("allow_short")?,
            markets: BTreeMap::new(),
        })
    }

    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
        let mut signals = Vec::new();
        let equity = tick.portfolio.equity;
        let (risk, stop_atr, allow_short) = (self.risk, self.stop_atr, self.allow_short);
        for bar in &tick.bars {
            let m = self.market(&bar.symbol);
            let atr = m.atr.update(bar.high, bar.low, bar.close);
            let (channel, exit) = (m.channel, m.exit);
            m.channel = m.high.update(bar.high).zip(m.low.update(bar.low));
            m.exit = m.exit_high.update(bar.high).zip(m.exit_low.update(bar.low));
            let (Some(atr), Some((top, bottom)), Some((exit_top, exit_bottom))) =
                (atr, channel, exit)
            else {
                continue;
            };
            if atr <= 0.0 {
                continue;
            }
            let sym: &str = &bar.symbol;
            let entry = tick.portfolio.position(sym, "breakout");
            let add = tick.portfolio.position(sym, "add");
            // Risk-based size, kept inside the host's limits (which it would
            // otherwise reject): 90% of the smaller of trade and position caps.
            let limits = &tick.limits;
            let cap = 0.9 * limits.max_trade_fraction.min(limits.max_position_fraction) * equity
                / bar.close;
            let quantity = (risk * equity / (stop_atr * atr)).min(cap);
            let held: f64 = [entry, add]
                .iter()
                .flatten()
                .map(|p| p.size * bar.close)
                .sum();
            let room = (0.9 * limits.max_position_fraction * equity - held).max(0.0) / bar.close;
            let add_quantity = (quantity / 2.0).min(room);
            // An add-on never outlives its entry (a stop may have closed the entry).
            if entry.is_none() && add.is_some() {
                signals.push(
                    Signal::close(sym)
                        .tag("add")
                        .reason("its breakout entry is closed".to_owned()),
                );
                continue;
            }
            let exit_now = |side: Side| match side {
                Side::Long => bar.close < exit_bottom,
                Side::Short => bar.close > exit_top,
            };
            match entry.map(|p| (p.side, p.price_entry)) {
                None if bar.close > top => signals.push(
                    Signal::open_long(sym, Size::Base(quantity))
                        .tag("breakout")
                        .stop_loss(bar.close - stop_atr * atr)
                        .reason(format!(
                            "close {} broke the {}-bar high {top}",
                            bar.close, self.channel
                        )),
                ),
                None if allow_short && bar.close < bottom => signals.push(
                    Signal::open_short(sym, Size::Base(quantity))
                        .tag("breakout")
                        .stop_loss(bar.close + stop_atr * atr)
                        .reason(format!(
                            "close {} broke the {}-bar low {bottom}",
                            bar.close, self.channel
                        )),
                ),
                Some((side, _)) if exit_now(side) => {
                    let why = format!("close crossed the {}-bar exit channel", self.exit_channel);
                    signals.push(Signal::close(sym).tag("breakout").reason(why.clone()));
                    if add.is_some() {
                        signals.push(Signal::close(sym).tag("add").reason(why));
                    }
                }
                Some((Side::Long, price))
                    if add.is_none() && add_quantity > 0.0 && bar.close > price + atr =>
                {
                    signals.push(
                        Signal::open_long(sym, Size::Base(add_quantity))
                            .tag("add")
                            .stop_loss(bar.close - stop_atr * atr)
                            .reason("one ATR in favour: add up to half a unit".to_owned()),
                    )
                }
                Some((Side::Short, price))
                    if add.is_none() && add_quantity > 0.0 && bar.close < price - atr =>
                {
                    signals.push(
                        Signal::open_short(sym, Size::Base(add_quantity))
                            .tag("add")
                            .stop_loss(bar.close + stop_atr * atr)
                            .reason("one ATR in favour: add up to half a unit".to_owned()),
                    )
                }
                _ => {}
            }
        }
        Ok(signals)
    }
}

keel_strategy_sdk::export_strategy!(AtrBreakout);

#[cfg(test)]
mod tests {
    use super::*;
    use keel_strategy_sdk::harness::{Candle, Harness, build, read_csv};

    fn crypto(pair: &str) -> Vec<Candle> {
        let path = format!(
            "{}/../../../shared/data/crypto-5m/{pair}_BTC-5m.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        read_csv(std::path::Path::new(&path)).expect("data")
    }

    #[test]
    fn trades_several_symbols_with_tags_and_atr_sizes() {
        let harness = ["ETH", "LTC", "XMR"]
            .iter()
            .fold(Harness::new().with_cash(100.0), |h, pair| {
                h.with_series(&format!("{pair}/BTC"), crypto(pair))
            });
        let out = harness.run(build::<AtrBreakout>(&[]).expect("defaults"));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let symbols: std::collections::BTreeSet<&str> =
            out.signals.iter().map(|(_, s)| s.symbol.as_str()).collect();
        assert_eq!(symbols.len(), 3, "signals on every symbol: {symbols:?}");
        assert!(
            out.signals.iter().any(|(_, s)| s.tag == "add"),
            "at least one add-on"
        );
        for (_, s) in &out.signals {
            if matches!(s.action, Action::OpenLong | Action::OpenShort) {
                assert!(
                    matches!(s.size, Size::Base(q) if q > 0.0 && q.is_finite()),
                    "{s:?}"
                );
                assert!(s.stop_loss.is_some(), "every entry has a stop: {s:?}");
            }
        }
    }
}
