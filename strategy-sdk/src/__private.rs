//! Glue between the generated component bindings and the SDK's plain types.
//! Only `export_strategy!` uses this module.

use std::cell::RefCell;

use crate::Strategy;
use bindings as b;
use keel_model as m;
use keel_model::batch::{PRICE_LANES, Packed, drive_packed};

pub use bindings::Guest;
pub use bindings::export;

#[allow(unsafe_code, missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/since_v0.4.0",
        world: "keel:strategy/strategy@0.4.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "keel_strategy_sdk::__private::bindings",
    });
    pub use self::keel::strategy::types::*;
}

/// Everything one instance keeps between calls, set up by `init`. It lives
/// in a thread-local that `export_strategy!` declares with the strategy's
/// own type, so a call reaches it without a type check.
#[allow(missing_debug_implementations)]
pub struct Instance<S> {
    strategy: S,
    /// The symbols bound at `init`; a bar's index names one.
    symbols: Vec<m::Symbol>,
    /// The tick handed to `on_bar` and the fill handed to `on_fill`, reused
    /// across batches (their strings too).
    tick: m::Tick,
    fill: m::Fill,
}

/// Where `export_strategy!` keeps the instance.
pub type Slot<S> = RefCell<Option<Instance<S>>>;

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

pub fn init<S: Strategy>(
    slot: &Slot<S>,
    params: Vec<b::Param>,
    symbols: Vec<String>,
) -> Result<(), String> {
    let values = params
        .into_iter()
        .map(|p| (p.name, value_in(p.value)))
        .collect();
    let strategy = S::init(&m::Params::from_values(values))?;
    *slot.borrow_mut() = Some(Instance {
        strategy,
        symbols: symbols
            .iter()
            .map(|s| m::Symbol::from(s.as_str()))
            .collect(),
        tick: m::Tick {
            time_ms: 0,
            bars: Vec::new(),
            portfolio: m::Portfolio::default(),
            limits: m::RiskLimits::default(),
        },
        fill: m::Fill {
            symbol: String::new(),
            tag: String::new(),
            action: m::Action::Close,
            price: 0.0,
            quantity: 0.0,
            fee: 0.0,
            time_ms: 0,
        },
    });
    Ok(())
}

pub fn on_bars<S: Strategy>(
    slot: &Slot<S>,
    lanes: Vec<i64>,
    prices: Vec<f64>,
    portfolio: b::Portfolio,
    limits: b::RiskLimits,
    fills: Vec<b::Fill>,
    tags: Vec<String>,
) -> Result<b::BatchResult, String> {
    let packed = Packed::from_lanes(&lanes, &prices).ok_or_else(|| {
        format!(
            "{} lanes do not hold the closes of {} bars",
            lanes.len(),
            prices.len() / PRICE_LANES
        )
    })?;
    let mut slot = slot.borrow_mut();
    let Instance {
        strategy,
        symbols,
        tick,
        fill,
    } = slot.as_mut().ok_or("called before init")?;
    let names = Names {
        symbols,
        tags: &tags,
    };
    for f in &fills {
        fill_into(f, &names, fill);
        strategy.on_fill(fill);
    }
    portfolio_into(&portfolio, &names, &mut tick.portfolio);
    tick.limits = m::RiskLimits {
        max_position_fraction: limits.max_position_fraction,
        max_open_positions: limits.max_open_positions,
        max_trade_fraction: limits.max_trade_fraction,
        min_order_quote: limits.min_order_quote,
    };
    let outcome = drive_packed(&packed, symbols, tick, |t| strategy.on_bar(t));
    Ok(b::BatchResult {
        consumed: outcome.consumed as u32,
        signals: outcome.signals.into_iter().map(signal_out).collect(),
        error: outcome.error,
    })
}

/// What positions and fills name by index: the bound symbols and the call's
/// tags.
struct Names<'a> {
    symbols: &'a [m::Symbol],
    tags: &'a [String],
}

impl Names<'_> {
    /// Writes symbol `index` into `out` (empty for an index out of range,
    /// which the host never sends).
    fn symbol_into(&self, index: u32, out: &mut String) {
        out.clear();
        if let Some(symbol) = self.symbols.get(index as usize) {
            out.push_str(symbol);
        }
    }

    /// Writes tag `index` into `out` (`None`: the empty tag).
    fn tag_into(&self, index: Option<u32>, out: &mut String) {
        out.clear();
        if let Some(tag) = index.and_then(|i| self.tags.get(i as usize)) {
            out.push_str(tag);
        }
    }
}

fn fill_into(f: &b::Fill, names: &Names<'_>, out: &mut m::Fill) {
    names.symbol_into(f.symbol, &mut out.symbol);
    names.tag_into(f.tag, &mut out.tag);
    out.action = action_in(f.action);
    out.price = f.price;
    out.quantity = f.quantity;
    out.fee = f.fee;
    out.time_ms = f.time_ms;
}

/// The portfolio written over `out`, reusing its positions' strings.
fn portfolio_into(p: &b::Portfolio, names: &Names<'_>, out: &mut m::Portfolio) {
    out.cash = p.cash;
    out.equity = p.equity;
    out.positions.truncate(p.positions.len());
    let missing = p.positions.len() - out.positions.len();
    out.positions.extend((0..missing).map(|_| m::Position {
        symbol: String::new(),
        tag: String::new(),
        side: m::Side::Long,
        size: 0.0,
        price_entry: 0.0,
        time_entry_ms: 0,
        price_mark: 0.0,
        pnl_unrealized: 0.0,
        mae: 0.0,
    }));
    for (from, to) in p.positions.iter().zip(&mut out.positions) {
        names.symbol_into(from.symbol, &mut to.symbol);
        names.tag_into(from.tag, &mut to.tag);
        to.side = match from.side {
            b::Side::Long => m::Side::Long,
            b::Side::Short => m::Side::Short,
        };
        to.size = from.size;
        to.price_entry = from.price_entry;
        to.time_entry_ms = from.time_entry_ms;
        to.price_mark = from.price_mark;
        to.pnl_unrealized = from.pnl_unrealized;
        to.mae = from.mae;
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
