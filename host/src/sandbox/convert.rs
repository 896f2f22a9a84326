//! Between the generated bindings and the model types, at the sandbox edge.

use keel_model as m;

use super::bindings as b;

pub(super) fn log_level(level: b::LogLevel) -> m::LogLevel {
    match level {
        b::LogLevel::Trace => m::LogLevel::Trace,
        b::LogLevel::Debug => m::LogLevel::Debug,
        b::LogLevel::Info => m::LogLevel::Info,
        b::LogLevel::Warn => m::LogLevel::Warn,
        b::LogLevel::Error => m::LogLevel::Error,
    }
}

fn action_out(a: m::Action) -> b::Action {
    match a {
        m::Action::OpenLong => b::Action::OpenLong,
        m::Action::OpenShort => b::Action::OpenShort,
        m::Action::Close => b::Action::Close,
        m::Action::Reduce => b::Action::Reduce,
    }
}

pub(super) fn tick_out(t: &m::Tick) -> b::Tick {
    b::Tick {
        time_ms: t.time_ms,
        bars: t
            .bars
            .iter()
            .map(|bar| b::Bar {
                symbol: bar.symbol.clone(),
                time_ms: bar.time_ms,
                open: bar.open,
                high: bar.high,
                low: bar.low,
                close: bar.close,
                volume: bar.volume,
            })
            .collect(),
        portfolio: b::Portfolio {
            cash: t.portfolio.cash,
            equity: t.portfolio.equity,
            positions: t
                .portfolio
                .positions
                .iter()
                .map(|p| b::Position {
                    symbol: p.symbol.clone(),
                    tag: p.tag.clone(),
                    side: match p.side {
                        m::Side::Long => b::Side::Long,
                        m::Side::Short => b::Side::Short,
                    },
                    size: p.size,
                    price_entry: p.price_entry,
                    time_entry_ms: p.time_entry_ms,
                    pnl_unrealized: p.pnl_unrealized,
                    mae: p.mae,
                })
                .collect(),
        },
        limits: b::RiskLimits {
            max_position_fraction: t.limits.max_position_fraction,
            max_open_positions: t.limits.max_open_positions,
            max_trade_fraction: t.limits.max_trade_fraction,
            min_order_quote: t.limits.min_order_quote,
        },
    }
}

pub(super) fn fill_out(f: &m::Fill) -> b::Fill {
    b::Fill {
        symbol: f.symbol.clone(),
        tag: f.tag.clone(),
        action: action_out(f.action),
        price: f.price,
        quantity: f.quantity,
        fee: f.fee,
        time_ms: f.time_ms,
    }
}

pub(super) fn signal_in(s: b::Signal) -> m::Signal {
    m::Signal {
        symbol: s.symbol,
        action: match s.action {
            b::Action::OpenLong => m::Action::OpenLong,
            b::Action::OpenShort => m::Action::OpenShort,
            b::Action::Close => m::Action::Close,
            b::Action::Reduce => m::Action::Reduce,
        },
        size: match s.size {
            b::Size::FractionOfEquity(x) => m::Size::FractionOfEquity(x),
            b::Size::Quote(x) => m::Size::Quote(x),
            b::Size::Base(x) => m::Size::Base(x),
        },
        tag: s.tag,
        stop_loss: s.stop_loss,
        take_profit: s.take_profit,
        reason: s.reason,
        confidence: s.confidence,
    }
}

/// A refused signal with its strings cut to a printable length.
pub(super) fn shortened(mut s: m::Signal) -> m::Signal {
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

fn value_in(v: b::ParamValue) -> m::ParamValue {
    match v {
        b::ParamValue::Int(x) => m::ParamValue::Int(x),
        b::ParamValue::Float(x) => m::ParamValue::Float(x),
        b::ParamValue::Flag(x) => m::ParamValue::Flag(x),
    }
}

pub(super) fn params_out(p: &m::Params) -> Vec<b::Param> {
    p.values()
        .iter()
        .map(|(name, value)| b::Param {
            name: name.clone(),
            value: match *value {
                m::ParamValue::Int(x) => b::ParamValue::Int(x),
                m::ParamValue::Float(x) => b::ParamValue::Float(x),
                m::ParamValue::Flag(x) => b::ParamValue::Flag(x),
            },
        })
        .collect()
}

pub(super) fn info_in(i: b::StrategyInfo) -> m::StrategyInfo {
    m::StrategyInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        symbols: i.symbols,
        timeframe: i.timeframe,
        warmup_bars: i.warmup_bars,
        params: i
            .params
            .into_iter()
            .map(|p| m::ParamSpec {
                name: p.name,
                description: p.description,
                kind: match p.kind {
                    b::ParamKind::Int => m::ParamKind::Int,
                    b::ParamKind::Float => m::ParamKind::Float,
                    b::ParamKind::Flag => m::ParamKind::Flag,
                },
                default: value_in(p.default),
                min: p.min,
                max: p.max,
            })
            .collect(),
    }
}
