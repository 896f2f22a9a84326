//! The strategy contract (`wit/since_v0.4.0/strategy.wit`) as plain Rust.
//! Field meanings are documented once, in the WIT file.

use std::sync::Arc;

use crate::candles::Candle;

/// A market symbol, shared by every bar of it (cloning is a reference count,
/// not a copy).
pub type Symbol = Arc<str>;
use crate::params::{ParamSpec, ParamValue};

/// One closed OHLCV bar of one symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub symbol: Symbol,
    pub time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Bar {
    /// `candle` as a bar of `symbol`.
    pub fn from_candle(symbol: &Symbol, candle: &Candle) -> Bar {
        Bar {
            symbol: symbol.clone(),
            time_ms: candle.time_ms,
            open: candle.open,
            high: candle.high,
            low: candle.low,
            close: candle.close,
            volume: candle.volume,
        }
    }

    /// The bar's time and prices set to `candle`'s, its symbol kept.
    #[inline]
    pub fn set_candle(&mut self, candle: &Candle) {
        self.time_ms = candle.time_ms;
        self.open = candle.open;
        self.high = candle.high;
        self.low = candle.low;
        self.close = candle.close;
        self.volume = candle.volume;
    }
}

/// `a == b`, answered without comparing bytes when both are the same
/// string (a strategy holding a bar's [`Symbol`] looks it up this way).
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Direction of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Long,
    Short,
}

/// An open position, as the ledger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
    pub size: f64,
    pub price_entry: f64,
    pub time_entry_ms: i64,
    pub price_mark: f64,
    pub pnl_unrealized: f64,
    pub mae: f64,
}

impl Position {
    /// Marks the position at a closed bar of its symbol: the adverse
    /// excursion from the bar's range, then the mark and the unrealized P&L
    /// at its close. Returns the favourable excursion at the bar's best price
    /// (quote currency), for callers that track it.
    ///
    /// The host and the SDK both mark with this, so a strategy sees the same
    /// figures whether the host or the strategy did the marking.
    pub fn mark_at(&mut self, low: f64, high: f64, close: f64) -> f64 {
        let (worst, best) = match self.side {
            Side::Long => (low - self.price_entry, high - self.price_entry),
            Side::Short => (self.price_entry - high, self.price_entry - low),
        };
        // A comparison, not `f64::min`: on wasm32 that is a call to `fmin`
        // (wasm's own `f64.min` treats NaN differently), and prices are
        // never NaN here.
        let adverse = worst * self.size;
        if adverse < self.mae {
            self.mae = adverse;
        }
        self.price_mark = close;
        self.pnl_unrealized = self.unrealized();
        best * self.size
    }

    /// Unrealized P&L at the mark.
    pub fn unrealized(&self) -> f64 {
        match self.side {
            Side::Long => (self.price_mark - self.price_entry) * self.size,
            Side::Short => (self.price_entry - self.price_mark) * self.size,
        }
    }

    /// What the position adds to equity at the mark (negative for a short).
    #[inline]
    pub fn value(&self) -> f64 {
        match self.side {
            Side::Long => self.size * self.price_mark,
            Side::Short => -self.size * self.price_mark,
        }
    }
}

/// A strategy's own slice of the portfolio.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Portfolio {
    pub cash: f64,
    pub equity: f64,
    pub positions: Vec<Position>,
}

impl Portfolio {
    /// The open position under `symbol` and `tag`, if any.
    pub fn position(&self, symbol: &str, tag: &str) -> Option<&Position> {
        self.positions
            .iter()
            .find(|p| p.symbol == symbol && p.tag == tag)
    }

    /// Cash plus the value of every position at its mark.
    #[inline]
    pub fn equity_of(cash: f64, positions: &[Position]) -> f64 {
        cash + positions.iter().map(Position::value).sum::<f64>()
    }

    /// Marks the positions at `bars` (closed at one time) and updates equity.
    pub fn mark(&mut self, bars: &[Bar]) {
        for bar in bars {
            for p in self
                .positions
                .iter_mut()
                .filter(|p| same_text(&p.symbol, &bar.symbol))
            {
                p.mark_at(bar.low, bar.high, bar.close);
            }
        }
        self.equity = Portfolio::equity_of(self.cash, &self.positions);
    }
}

/// Risk limits in force (read-only for strategies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskLimits {
    pub max_position_fraction: f64,
    pub max_open_positions: u32,
    pub max_trade_fraction: f64,
    pub min_order_quote: f64,
}

impl Default for RiskLimits {
    fn default() -> Self {
        RiskLimits {
            max_position_fraction: 0.25,
            max_open_positions: 10,
            max_trade_fraction: 0.25,
            min_order_quote: 10.0,
        }
    }
}

/// What a strategy's `on_bar` receives at each bar close.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub time_ms: i64,
    pub bars: Vec<Bar>,
    pub portfolio: Portfolio,
    pub limits: RiskLimits,
}

impl Tick {
    /// This tick's bar of `symbol`, if that symbol has one now.
    #[inline] // per bar in most strategies; a wasm build called it
    pub fn bar(&self, symbol: &str) -> Option<&Bar> {
        self.bars.iter().find(|b| same_text(&b.symbol, symbol))
    }
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    OpenLong,
    OpenShort,
    Close,
    Reduce,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::OpenLong => "open-long",
            Action::OpenShort => "open-short",
            Action::Close => "close",
            Action::Reduce => "reduce",
        }
    }
}

/// How big an order is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    FractionOfEquity(f64),
    Quote(f64),
    Base(f64),
}

impl Size {
    /// The number inside, whatever the unit.
    pub fn amount(self) -> f64 {
        match self {
            Size::FractionOfEquity(x) | Size::Quote(x) | Size::Base(x) => x,
        }
    }
}

/// One trading intent.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub symbol: String,
    pub action: Action,
    pub size: Size,
    pub tag: String,
    pub stop_loss: Option<f64>,
    pub take_profit: Option<f64>,
    pub reason: String,
    pub confidence: f64,
}

impl Signal {
    fn new(symbol: &str, action: Action, size: Size) -> Signal {
        Signal {
            symbol: symbol.to_owned(),
            action,
            size,
            tag: String::new(),
            stop_loss: None,
            take_profit: None,
            reason: String::new(),
            confidence: 1.0,
        }
    }
    /// Open or add to a long position.
    pub fn open_long(symbol: &str, size: Size) -> Signal {
        Signal::new(symbol, Action::OpenLong, size)
    }
    /// Open or add to a short position.
    pub fn open_short(symbol: &str, size: Size) -> Signal {
        Signal::new(symbol, Action::OpenShort, size)
    }
    /// Close the whole position under the signal's tag.
    pub fn close(symbol: &str) -> Signal {
        Signal::new(symbol, Action::Close, Size::FractionOfEquity(1.0))
    }
    /// Shrink the position under the signal's tag.
    pub fn reduce(symbol: &str, size: Size) -> Signal {
        Signal::new(symbol, Action::Reduce, size)
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Signal {
        self.tag = tag.into();
        self
    }
    pub fn stop_loss(mut self, price: f64) -> Signal {
        self.stop_loss = Some(price);
        self
    }
    pub fn take_profit(mut self, price: f64) -> Signal {
        self.take_profit = Some(price);
        self
    }
    pub fn reason(mut self, reason: impl Into<String>) -> Signal {
        self.reason = reason.into();
        self
    }
    pub fn confidence(mut self, confidence: f64) -> Signal {
        self.confidence = confidence;
        self
    }
}

/// An execution of one of the strategy's orders.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub symbol: String,
    pub tag: String,
    pub action: Action,
    pub price: f64,
    pub quantity: f64,
    pub fee: f64,
    pub time_ms: i64,
}

/// Severity of a strategy's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What a strategy says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub symbols: Vec<String>,
    pub timeframe: String,
    pub warmup_bars: u32,
    pub params: Vec<ParamSpec>,
}

/// A parameter value the host resolved, by name.
pub type Param = (String, ParamValue);
