//! Glue between the generated component bindings and the SDK's plain types.
//! Only `export_strategy!` uses this module.

use std::any::Any;
use std::cell::RefCell;

use crate::Strategy;
use bindings as b;
use keel_model as m;
use keel_model::batch::{Packed, drive_closes};

pub use bindings::Guest;
pub use bindings::export;

#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/since_v0.3.0",
        world: "keel:strategy/strategy@0.3.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "keel_strategy_sdk::__private::bindings",
    });
    pub use self::keel::strategy::types::*;
}

thread_local! {
    /// The one strategy value of this instance, set by `init`.
    static STATE: RefCell<Option<Box<dyn Any>>> = RefCell::new(None);
    /// The symbols bound at `init`; a bar's index names one.
    static SYMBOLS: RefCell<Vec<m::Symbol>> = const { RefCell::new(Vec::new()) };
    /// The tick handed to `on_bar`, reused across batches.
    static SCRATCH: RefCell<m::Tick> = RefCell::new(m::Tick {
        time_ms: 0,
        bars: Vec::new(),
        portfolio: m::Portfolio::default(),
        limits: m::RiskLimits::default(),
    });
}

pub fn log(level: m::LogLevel, message: &str) {
    let level = match level {
        m::LogLevel::Trace => b::LogLevel::Trace,
        m::LogLevel::Debug => b::LogLevel::Debug,
        m::LogLevel::Info => b::LogLevel::Info,
        m::LogLevel::Warn => b::LogLevel::Warn,
        m::LogLevel::Error => b::LogLevel::Error,
    };
    bindings::keel::strategy::host::log(level, message);
}

pub fn describe<S: Strategy>() -> b::StrategyInfo {
    let info = S::describe();
    b::StrategyInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        symbols: info.symbols,
        timeframe: info.timeframe,
        warmup_bars: info.warmup_bars,
        params: info.params.into_iter().map(spec_out).collect(),
    }
}

pub fn init<S: Strategy>(params: Vec<b::Param>, symbols: Vec<String>) -> Result<(), String> {
    SYMBOLS.with(|table| {
        *table.borrow_mut() = symbols
            .iter()
            .map(|s| m::Symbol::from(s.as_str()))
            .collect()
    });
    let values = params
        .into_iter()
        .map(|p| (p.name, value_in(p.value)))
        .collect();
    let strategy = S::init(&m::Params::from_values(values))?;
    STATE.with(|state| *state.borrow_mut() = Some(Box::new(strategy)));
    Ok(())
}

pub fn on_bars<S: Strategy>(
    ticks: Vec<i64>,
    keys: Vec<i64>,
    prices: Vec<f64>,
    portfolio: b::Portfolio,
    limits: b::RiskLimits,
    fills: Vec<b::Fill>,
) -> Result<b::BatchResult, String> {
    let closes = Packed {
        ticks: &ticks,
        keys: &keys,
        prices: &prices,
    };
    let portfolio = portfolio_in(portfolio);
    let limits = m::RiskLimits {
        max_position_fraction: limits.max_position_fraction,
        max_open_positions: limits.max_open_positions,
        max_trade_fraction: limits.max_trade_fraction,
        min_order_quote: limits.min_order_quote,
    };
    let outcome = with_strategy::<S, _>(|s| {
        for fill in fills {
            s.on_fill(&fill_in(fill));
        }
        SYMBOLS.with(|symbols| {
            SCRATCH.with(|tick| {
                drive_closes(
                    &closes,
                    &symbols.borrow(),
                    &portfolio,
                    limits,
                    &mut tick.borrow_mut(),
                    |t| s.on_bar(t),
                )
            })
        })
    })?;
    Ok(b::BatchResult {
        consumed: outcome.consumed as u32,
        signals: outcome.signals.into_iter().map(signal_out).collect(),
        error: outcome.error,
    })
}

fn fill_in(fill: b::Fill) -> m::Fill {
    m::Fill {
        symbol: fill.symbol,
        tag: fill.tag,
        action: action_in(fill.action),
        price: fill.price,
        quantity: fill.quantity,
        fee: fill.fee,
        time_ms: fill.time_ms,
    }
}

fn with_strategy<S: Strategy, R>(f: impl FnOnce(&mut S) -> R) -> Result<R, String> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let strategy = state
            .as_mut()
            .and_then(|s| s.downcast_mut::<S>())
            .ok_or_else(|| "called before init".to_owned())?;
        Ok(f(strategy))
    })
}

fn portfolio_in(p: b::Portfolio) -> m::Portfolio {
    m::Portfolio {
        cash: p.cash,
        equity: p.equity,
        positions: p
            .positions
            .into_iter()
            .map(|p| m::Position {
                symbol: p.symbol,
                tag: p.tag,
                side: match p.side {
                    b::Side::Long => m::Side::Long,
                    b::Side::Short => m::Side::Short,
                },
                size: p.size,
                price_entry: p.price_entry,
                time_entry_ms: p.time_entry_ms,
                price_mark: p.price_mark,
                pnl_unrealized: p.pnl_unrealized,
                mae: p.mae,
            })
            .collect(),
    }
}

fn action_in(a: b::Action) -> m::Action {
    match a {
        b::Action::OpenLong => m::Action::OpenLong,
        b::Action::OpenShort => m::Action::OpenShort,
        b::Action::Close => m::Action::Close,
        b::Action::Reduce => m::Action::Reduce,
    }
}

fn signal_out(s: m::Signal) -> b::Signal {
    b::Signal {
        symbol: s.symbol,
        action: match s.action {
            m::Action::OpenLong => b::Action::OpenLong,
            m::Action::OpenShort => b::Action::OpenShort,
            m::Action::Close => b::Action::Close,
            m::Action::Reduce => b::Action::Reduce,
        },
        size: match s.size {
            m::Size::FractionOfEquity(x) => b::Size::FractionOfEquity(x),
            m::Size::Quote(x) => b::Size::Quote(x),
            m::Size::Base(x) => b::Size::Base(x),
        },
        tag: s.tag,
        stop_loss: s.stop_loss,
        take_profit: s.take_profit,
        reason: s.reason,
        confidence: s.confidence,
    }
}

fn value_in(v: b::ParamValue) -> m::ParamValue {
    match v {
        b::ParamValue::Int(x) => m::ParamValue::Int(x),
        b::ParamValue::Float(x) => m::ParamValue::Float(x),
        b::ParamValue::Flag(x) => m::ParamValue::Flag(x),
    }
}

fn spec_out(s: m::ParamSpec) -> b::ParamSpec {
    b::ParamSpec {
        name: s.name,
        description: s.description,
        kind: match s.kind {
            m::ParamKind::Int => b::ParamKind::Int,
            m::ParamKind::Float => b::ParamKind::Float,
            m::ParamKind::Flag => b::ParamKind::Flag,
        },
        default: match s.default {
            m::ParamValue::Int(x) => b::ParamValue::Int(x),
            m::ParamValue::Float(x) => b::ParamValue::Float(x),
            m::ParamValue::Flag(x) => b::ParamValue::Flag(x),
        },
        min: s.min,
        max: s.max,
    }
}
