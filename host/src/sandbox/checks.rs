//! What the host checks in everything a strategy hands back.

use keel_model::shown::{number, quoted};
use keel_model::{Action, Signal, Size, StrategyInfo, Timeframe, params::check_specs};

use super::SandboxLimits;

const MAX_WARMUP_BARS: u32 = 100_000;
const MAX_PARAMS: usize = 64;
const MAX_SYMBOLS: usize = 256;

/// Whether a strategy can be bound to `symbol` (a feed's or a data set's):
/// one it could never trade (the same rule as `check_signal`'s) is refused
/// before a run, not signal by signal. Whatever else it holds is shown
/// escaped wherever it is shown.
pub fn bindable(symbol: &str) -> Result<(), String> {
    let max = SandboxLimits::default().max_symbol_bytes;
    if symbol.is_empty() || symbol.len() > max {
        return Err(format!(
            "symbol {} is not one a strategy can trade (1 to {max} bytes)",
            quoted(symbol)
        ));
    }
    Ok(())
}

/// Checks `describe()`'s answer; `Err` says which field is wrong and why.
pub fn check_info(info: &StrategyInfo, limits: &SandboxLimits) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(format!(
            "name {} is not 1 to 64 of [a-z0-9-]",
            quoted(&info.name)
        ));
    }
    if info.version.is_empty() || info.version.len() > 32 {
        return Err(format!(
            "version {} is not 1 to 32 bytes",
            quoted(&info.version)
        ));
    }
    if info.description.len() > 4096 {
        return Err(format!(
            "description is {} bytes, over 4096",
            info.description.len()
        ));
    }
    if Timeframe::parse(&info.timeframe).is_none() {
        return Err(format!(
            "timeframe {} is not one of 1m 5m 15m 1h 4h 1d 1w 1M",
            quoted(&info.timeframe)
        ));
    }
    if info.warmup_bars > MAX_WARMUP_BARS {
        return Err(format!(
            "warmup-bars {} is over {MAX_WARMUP_BARS}",
            info.warmup_bars
        ));
    }
    if info.symbols.len() > MAX_SYMBOLS {
        return Err(format!(
            "{} symbols, over {MAX_SYMBOLS}",
            info.symbols.len()
        ));
    }
    if let Some(s) = info
        .symbols
        .iter()
        .find(|s| s.is_empty() || s.len() > limits.max_symbol_bytes)
    {
        return Err(format!(
            "symbol {} is not 1 to {} bytes",
            quoted(s),
            limits.max_symbol_bytes
        ));
    }
    if info.params.len() > MAX_PARAMS {
        return Err(format!(
            "{} parameters, over {MAX_PARAMS}",
            info.params.len()
        ));
    }
    check_specs(&info.params).map_err(|e| e.to_string())
}

/// Checks one returned signal against the bound symbols and the caps.
pub fn check_signal(
    s: &keel_model::Signal,
    symbols: &[String],
    limits: &SandboxLimits,
) -> Result<(), String> {
    if s.symbol.len() > limits.max_symbol_bytes || !symbols.contains(&s.symbol) {
        return Err(format!(
            "unknown symbol {} (bound: {})",
            quoted(&s.symbol),
            keel_model::shown::line(&symbols.join(", "))
        ));
    }
    if s.tag.len() > limits.max_tag_bytes {
        return Err(format!(
            "tag is {} bytes, over {}",
            s.tag.len(),
            limits.max_tag_bytes
        ));
    }
    if s.reason.len() > limits.max_reason_bytes {
        return Err(format!(
            "reason is {} bytes, over {}",
            s.reason.len(),
            limits.max_reason_bytes
        ));
    }
    if !(s.confidence.is_finite() && (0.0..=1.0).contains(&s.confidence)) {
        return Err(format!(
            "confidence {} is outside [0, 1]",
            number(s.confidence)
        ));
    }
    if s.action != Action::Close {
        let amount = s.size.amount();
        if !(amount.is_finite() && amount > 0.0) {
            return Err(format!("size {} is not a positive number", number(amount)));
        }
        if let Size::FractionOfEquity(f) = s.size
            && f > 1.0
        {
            return Err(format!("size {} of equity is over 1", number(f)));
        }
    }
    for (name, price) in [("stop-loss", s.stop_loss), ("take-profit", s.take_profit)] {
        if let Some(p) = price
            && !(p.is_finite() && p > 0.0)
        {
            return Err(format!("{name} {} is not a positive price", number(p)));
        }
    }
    Ok(())
}

/// A refused signal with its strings cut to a printable length.
pub(super) fn shortened(mut s: Signal) -> Signal {
    for text in [&mut s.symbol, &mut s.tag, &mut s.reason] {
        if text.len() > 80 {
            let mut end = 80;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            *text = format!("{}…", &text[..end]);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_model::Signal;

    #[test]
    fn signals_are_checked_field_by_field() {
        let symbols = vec!["BTC/USD".to_owned()];
        let limits = SandboxLimits::default();
        let ok = Signal::open_long("BTC/USD", Size::FractionOfEquity(0.5));
        assert_eq!(check_signal(&ok, &symbols, &limits), Ok(()));
        struct Case {
            signal: Signal,
            expect: &'static str,
        }
        let cases = [
            Case {
                signal: Signal::open_long("ETH/USD", Size::Quote(10.0)),
                expect: "unknown symbol \"ETH/USD\" (bound: BTC/USD)",
            },
            Case {
                signal: Signal::open_long("BTC/USD", Size::Quote(f64::NAN)),
                expect: "size NaN is not a positive number",
            },
            Case {
                signal: Signal::open_long("BTC/USD", Size::Base(-1.0)),
                expect: "size -1 is not a positive number",
            },
            Case {
                signal: Signal::open_long("BTC/USD", Size::FractionOfEquity(1.5)),
                expect: "size 1.5 of equity is over 1",
            },
            Case {
                signal: ok.clone().tag("x".repeat(65)),
                expect: "tag is 65 bytes, over 64",
            },
            Case {
                signal: ok.clone().reason("y".repeat(300)),
                expect: "reason is 300 bytes, over 256",
            },
            Case {
                signal: ok.clone().confidence(1.5),
                expect: "confidence 1.5 is outside [0, 1]",
            },
            Case {
                signal: ok.clone().stop_loss(f64::INFINITY),
                expect: "stop-loss inf is not a positive price",
            },
            Case {
                signal: ok.clone().take_profit(-3.0),
                expect: "take-profit -3 is not a positive price",
            },
        ];
        for case in cases {
            assert_eq!(
                check_signal(&case.signal, &symbols, &limits),
                Err(case.expect.to_owned())
            );
        }
        // A close ignores its size.
        let close = Signal {
            size: Size::Base(f64::NAN),
            ..Signal::close("BTC/USD")
        };
        assert_eq!(check_signal(&close, &symbols, &limits), Ok(()));
    }

    #[test]
    fn describe_answers_are_checked() {
        let limits = SandboxLimits::default();
        let good = StrategyInfo {
            name: "ok-name".into(),
            version: "1.0.0".into(),
            description: String::new(),
            symbols: vec!["BTC/USD".into()],
            timeframe: "5m".into(),
            warmup_bars: 10,
            params: vec![],
        };
        assert_eq!(check_info(&good, &limits), Ok(()));
        let bad_name = StrategyInfo {
            name: "Bad Name".into(),
            ..good.clone()
        };
        assert_eq!(
            check_info(&bad_name, &limits),
            Err("name \"Bad Name\" is not 1 to 64 of [a-z0-9-]".into())
        );
        let bad_tf = StrategyInfo {
            timeframe: "7m".into(),
            ..good.clone()
        };
        assert!(check_info(&bad_tf, &limits).is_err_and(|e| e.starts_with("timeframe \"7m\"")));
        let huge_warmup = StrategyInfo {
            warmup_bars: u32::MAX,
            ..good
        };
        assert!(check_info(&huge_warmup, &limits).is_err());
    }
}
