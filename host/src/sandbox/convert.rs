//! Between the generated bindings and the model types, at the sandbox edge.
//! Each contract version has its own bindings; records whose shape did not
//! change between versions convert through one macro.

use keel_model as m;

/// Conversions of the records every contract version shares, for the
/// bindings module named `b` where the macro is used.
macro_rules! same_shape {
    () => {
        pub(in crate::sandbox) fn log_level(level: b::LogLevel) -> m::LogLevel {
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

        pub(in crate::sandbox) fn signal_in(s: b::Signal) -> m::Signal {
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

        pub(in crate::sandbox) fn params_out(p: &m::Params) -> Vec<b::Param> {
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

        pub(in crate::sandbox) fn info_in(i: b::StrategyInfo) -> m::StrategyInfo {
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

/// Conversions of the records that name their symbol and tag as strings
/// (up to 0.3.0), for the bindings module named `b` where the macro is used.
macro_rules! named_by_string {
    () => {
        pub(in crate::sandbox) fn fill_out(f: &m::Fill) -> b::Fill {
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

/// The portfolio of 0.2.0 and 0.3.0, whose positions name their symbol and
/// tag as strings, for the bindings module named `b` where the macro is used.
macro_rules! positions_by_string {
    () => {
        /// The portfolio in binding form, written over the one of an earlier
        /// call: its positions' strings are reused, so a call costs no
        /// allocation here.
        pub(in crate::sandbox) fn portfolio_into(p: &m::Portfolio, out: &mut b::Portfolio) {
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

/// Conversions of the records unchanged since 0.2.0, for the bindings module
/// named `b` where the macro is used.
macro_rules! since_v2 {
    () => {
        /// A portfolio to fill with [`portfolio_into`].
        pub(in crate::sandbox) fn empty_portfolio() -> b::Portfolio {
            b::Portfolio {
                cash: 0.0,
                equity: 0.0,
                positions: Vec::new(),
            }
        }

        pub(in crate::sandbox) fn limits_out(l: m::RiskLimits) -> b::RiskLimits {
            b::RiskLimits {
                max_position_fraction: l.max_position_fraction,
                max_open_positions: l.max_open_positions,
                max_trade_fraction: l.max_trade_fraction,
                min_order_quote: l.min_order_quote,
            }
        }
    };
}

/// `keel:strategy@0.4.0`: the batch goes out packed
/// ([`m::batch::PackedBuffers::pack`]); positions and fills name their
/// symbol by index among the bound symbols and their tag through the call's
/// [`Tags`].
pub(super) mod v4 {
    use super::m;
    use crate::sandbox::bindings_v4 as b;

    same_shape!();
    since_v2!();

    /// The tags of one call, each once, that its positions and fills name
    /// by index. The strings are kept after [`Tags::clear`] to be written
    /// over by the next call's.
    #[derive(Debug, Default)]
    pub(in crate::sandbox) struct Tags {
        names: Vec<String>,
        used: usize,
    }

    impl Tags {
        /// The index of `tag`, added if new; `None` for the empty tag.
        fn index(&mut self, tag: &str) -> Option<u32> {
            if tag.is_empty() {
                return None;
            }
            let known = self.names[..self.used].iter().position(|t| t == tag);
            let index = known.unwrap_or_else(|| {
                match self.names.get_mut(self.used) {
                    Some(reused) => tag.clone_into(reused),
                    None => self.names.push(tag.to_owned()),
                }
                self.used += 1;
                self.used - 1
            });
            Some(index as u32)
        }

        /// What the call hands over.
        pub(in crate::sandbox) fn list(&self) -> &[String] {
            &self.names[..self.used]
        }

        /// Empties the table (after the call that delivered it).
        pub(in crate::sandbox) fn clear(&mut self) {
            self.used = 0;
        }
    }

    /// `symbol`'s index among the `bound` symbols. A position or fill is
    /// always in a bound symbol (a signal for any other is refused); were
    /// one not, the index is out of range and the strategy reads the
    /// symbol as empty.
    fn symbol_index(symbol: &str, bound: &[String]) -> u32 {
        let index = bound.iter().position(|s| s == symbol);
        debug_assert!(index.is_some(), "{symbol} is not bound");
        index.map_or(u32::MAX, |i| i as u32)
    }

    pub(in crate::sandbox) fn fill_out(f: &m::Fill, bound: &[String], tags: &mut Tags) -> b::Fill {
        b::Fill {
            symbol: symbol_index(&f.symbol, bound),
            tag: tags.index(&f.tag),
            action: action_out(f.action),
            price: f.price,
            quantity: f.quantity,
            fee: f.fee,
            time_ms: f.time_ms,
        }
    }

    /// The portfolio in binding form, written over the one of an earlier
    /// call (no allocation once its list is long enough).
    pub(in crate::sandbox) fn portfolio_into(
        p: &m::Portfolio,
        bound: &[String],
        tags: &mut Tags,
        out: &mut b::Portfolio,
    ) {
        out.cash = p.cash;
        out.equity = p.equity;
        out.positions.clear();
        out.positions
            .extend(p.positions.iter().map(|p| b::Position {
                symbol: symbol_index(&p.symbol, bound),
                tag: tags.index(&p.tag),
                side: side_out(p.side),
                size: p.size,
                price_entry: p.price_entry,
                time_entry_ms: p.time_entry_ms,
                price_mark: p.price_mark,
                pnl_unrealized: p.pnl_unrealized,
                mae: p.mae,
            }));
    }
}

/// `keel:strategy@0.3.0`: the batch goes out packed
/// ([`m::batch::PackedBuffers::pack`]), the rest as in 0.2.0.
pub(super) mod v3 {
    use super::m;
    use crate::sandbox::bindings_v3 as b;

    same_shape!();
    named_by_string!();
    since_v2!();
    positions_by_string!();

    /// [`fill_out`] written over a fill of an earlier call, reusing its
    /// strings.
    pub(in crate::sandbox) fn fill_into(f: &m::Fill, out: &mut b::Fill) {
        out.symbol.clone_from(&f.symbol);
        out.tag.clone_from(&f.tag);
        out.action = action_out(f.action);
        out.price = f.price;
        out.quantity = f.quantity;
        out.fee = f.fee;
        out.time_ms = f.time_ms;
    }
}

/// `keel:strategy@0.2.0`.
pub(super) mod v2 {
    use super::m;
    use crate::sandbox::bindings_v2 as b;

    same_shape!();
    named_by_string!();
    since_v2!();
    positions_by_string!();

    /// The batch in binding form, each bar's symbol index renamed by
    /// `symbol` (the instance's, from `init`); bars it maps to `None` (of
    /// symbols it was not bound to) are left out.
    pub(in crate::sandbox) fn batch_out(
        batch: &m::batch::Batch<'_>,
        symbol: impl Fn(u32) -> Option<u32>,
        out: &mut b::Batch,
    ) {
        out.tick_times.clear();
        out.tick_bars.clear();
        let columns = &mut out.bars;
        for column in [
            &mut columns.open,
            &mut columns.high,
            &mut columns.low,
            &mut columns.close,
            &mut columns.volume,
        ] {
            column.clear();
        }
        columns.symbol.clear();
        columns.time_ms.clear();
        if batch.keeps_all(&symbol) {
            // Every bar is kept: the columns copy as they are.
            let bars = batch.bars.slice(0, batch.bars.len());
            out.tick_times.extend_from_slice(batch.tick_times);
            out.tick_bars.extend_from_slice(batch.tick_bars);
            columns
                .symbol
                .extend(bars.symbol.iter().filter_map(|&s| symbol(s)));
            columns.time_ms.extend_from_slice(bars.time_ms);
            columns.open.extend_from_slice(bars.open);
            columns.high.extend_from_slice(bars.high);
            columns.low.extend_from_slice(bars.low);
            columns.close.extend_from_slice(bars.close);
            columns.volume.extend_from_slice(bars.volume);
        } else {
            let (times, counts) = (&mut out.tick_times, &mut out.tick_bars);
            batch.for_each_kept(
                symbol,
                |index, c| {
                    columns.symbol.push(index);
                    columns.time_ms.push(c.time_ms);
                    columns.open.push(c.open);
                    columns.high.push(c.high);
                    columns.low.push(c.low);
                    columns.close.push(c.close);
                    columns.volume.push(c.volume);
                },
                |time_ms, kept| {
                    times.push(time_ms);
                    counts.push(kept);
                },
            );
        }
        portfolio_into(batch.portfolio, &mut out.portfolio);
        out.limits = limits_out(batch.limits);
    }

    /// An empty batch to fill with [`batch_out`].
    pub(in crate::sandbox) fn empty_batch() -> b::Batch {
        b::Batch {
            tick_times: Vec::new(),
            tick_bars: Vec::new(),
            bars: b::Bars {
                symbol: Vec::new(),
                time_ms: Vec::new(),
                open: Vec::new(),
                high: Vec::new(),
                low: Vec::new(),
                close: Vec::new(),
                volume: Vec::new(),
            },
            portfolio: empty_portfolio(),
            limits: b::RiskLimits {
                max_position_fraction: 0.0,
                max_open_positions: 0,
                max_trade_fraction: 0.0,
                min_order_quote: 0.0,
            },
        }
    }
}

/// `keel:strategy@0.1.0`: one tick per call.
pub(super) mod v1 {
    use super::m;
    use crate::sandbox::bindings_v1 as b;

    same_shape!();
    named_by_string!();

    /// The tick in binding form, with only the bars of `bound` symbols.
    pub(in crate::sandbox) fn tick_out(t: &m::Tick, bound: &[String]) -> b::Tick {
        b::Tick {
            time_ms: t.time_ms,
            bars: t
                .bars
                .iter()
                .filter(|bar| bound.iter().any(|s| **s == *bar.symbol))
                .map(|bar| b::Bar {
                    symbol: bar.symbol.to_string(),
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
                        side: side_out(p.side),
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
