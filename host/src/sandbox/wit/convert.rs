//! Conversions between the generated bindings and the model types that
//! several contract versions share, as macros: each version's bindings are
//! types of their own, so each version file expands the ones whose records
//! kept their shape, with its bindings module named `b` and `keel_model`
//! named `m`.

/// Conversions of the records every contract version shares, for the
/// bindings module named `b` where the macro is used.
macro_rules! same_shape {
    () => {
        fn log_level(level: b::LogLevel) -> m::LogLevel {
            match level {
                b::LogLevel::Trace => m::LogLevel::Trace,
                b::LogLevel::Debug => m::LogLevel::Debug,
                b::LogLevel::Info => m::LogLevel::Info,
                b::LogLevel::Warn => m::LogLevel::Warn,
                b::LogLevel::Error => m::LogLevel::Error,
            }
        }

        fn side_out(s: m::Side) -> b::Side {
            match s {
                m::Side::Long => b::Side::Long,
                m::Side::Short => b::Side::Short,
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

        fn signal_in(s: b::Signal) -> m::Signal {
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

        fn value_in(v: b::ParamValue) -> m::ParamValue {
            match v {
                b::ParamValue::Int(x) => m::ParamValue::Int(x),
                b::ParamValue::Float(x) => m::ParamValue::Float(x),
                b::ParamValue::Flag(x) => m::ParamValue::Flag(x),
            }
        }

        fn params_out(p: &m::Params) -> Vec<b::Param> {
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

        fn info_in(i: b::StrategyInfo) -> m::StrategyInfo {
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
    };
}

pub(super) use same_shape;

/// Conversions of the records that name their symbol and tag as strings
/// (up to 0.3.0), for the bindings module named `b` where the macro is used.
macro_rules! named_by_string {
    () => {
        fn fill_out(f: &m::Fill) -> b::Fill {
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
    };
}

pub(super) use named_by_string;

/// The portfolio of 0.2.0 and 0.3.0, whose positions name their symbol and
/// tag as strings, for the bindings module named `b` where the macro is used.
macro_rules! positions_by_string {
    () => {
        /// The portfolio in binding form, written over the one of an earlier
        /// call: its positions' strings are reused, so a call costs no
        /// allocation here.
        fn portfolio_into(p: &m::Portfolio, out: &mut b::Portfolio) {
            out.cash = p.cash;
            out.equity = p.equity;
            out.positions.truncate(p.positions.len());
            let reused = out.positions.len();
            for (from, to) in p.positions.iter().zip(&mut out.positions) {
                position_into(from, to);
            }
            out.positions
                .extend(p.positions[reused..].iter().map(|from| {
                    let mut to = b::Position {
                        symbol: String::new(),
                        tag: String::new(),
                        side: b::Side::Long,
                        size: 0.0,
                        price_entry: 0.0,
                        time_entry_ms: 0,
                        price_mark: 0.0,
                        pnl_unrealized: 0.0,
                        mae: 0.0,
                    };
                    position_into(from, &mut to);
                    to
                }));
        }

        fn position_into(p: &m::Position, out: &mut b::Position) {
            out.symbol.clone_from(&p.symbol);
            out.tag.clone_from(&p.tag);
            out.side = side_out(p.side);
            out.size = p.size;
            out.price_entry = p.price_entry;
            out.time_entry_ms = p.time_entry_ms;
            out.price_mark = p.price_mark;
            out.pnl_unrealized = p.pnl_unrealized;
            out.mae = p.mae;
        }
    };
}

pub(super) use positions_by_string;

/// Conversions of the records unchanged since 0.2.0, for the bindings module
/// named `b` where the macro is used.
macro_rules! since_v2 {
    () => {
        /// A portfolio to fill with [`portfolio_into`].
        fn empty_portfolio() -> b::Portfolio {
            b::Portfolio {
                cash: 0.0,
                equity: 0.0,
                positions: Vec::new(),
            }
        }

        fn limits_out(l: m::RiskLimits) -> b::RiskLimits {
            b::RiskLimits {
                max_position_fraction: l.max_position_fraction,
                max_open_positions: l.max_open_positions,
                max_trade_fraction: l.max_trade_fraction,
                min_order_quote: l.min_order_quote,
            }
        }
    };
}

pub(super) use since_v2;
