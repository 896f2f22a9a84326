//! Write Keel trading strategies in Rust.
//!
//! A strategy is a type that implements [`Strategy`], exported once with
//! [`export_strategy!`]. Built for `wasm32-wasip2` it becomes a component the
//! Keel host can load; built natively it runs in the [`harness`], so its logic
//! can be unit-tested without wasm. You never write bindings yourself.
//!
//! ```
//! use keel_strategy_sdk::prelude::*;
//!
//! /// Buys once the close is above its 3-bar average.
//! struct AboveAverage {
//!     sma: Sma,
//! }
//!
//! impl Strategy for AboveAverage {
//!     fn describe() -> StrategyInfo {
//!         StrategyInfo {
//!             name: "above-average".into(),
//!             version: "0.1.0".into(),
//!             description: "Buys when the close rises above its moving average.".into(),
//!             symbols: vec!["BTC/USD".into()],
//!             timeframe: "1h".into(),
//!             warmup_bars: 3,
//!             params: vec![ParamSpec::int("window", 3, 2, 50, "bars in the average")],
//!         }
//!     }
//!
//!     fn init(params: &Params) -> Result<Self, String> {
//!         Ok(AboveAverage { sma: Sma::new(params.int("window")? as usize) })
//!     }
//!
//!     fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String> {
//!         let Some(bar) = tick.bar("BTC/USD") else { return Ok(vec![]) };
//!         let average = self.sma.update(bar.close);
//!         let flat = tick.portfolio.positions.is_empty();
//!         Ok(match average {
//!             Some(avg) if flat && bar.close > avg => {
//!                 vec![Signal::open_long("BTC/USD", Size::FractionOfEquity(0.1)).reason("above average")]
//!             }
//!             _ => vec![],
//!         })
//!     }
//! }
//!
//! keel_strategy_sdk::export_strategy!(AboveAverage);
//!
//! // Natively, the harness runs it over candles without wasm:
//! use keel_strategy_sdk::harness::{Candle, Harness, build};
//! let candles: Vec<Candle> = [10.0, 11.0, 12.0, 13.0, 14.0]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, &p)| Candle { time_ms: i as i64 * 3_600_000, open: p, high: p, low: p, close: p, volume: 1.0 })
//!     .collect();
//! let outcome = Harness::new()
//!     .with_series("BTC/USD", candles)
//!     .run(build::<AboveAverage>(&[]).unwrap());
//! assert_eq!(outcome.signals.len(), 1);
//! // Signalled on the third bar (12 > 11), filled at the fourth bar's open.
//! assert_eq!(outcome.fills[0].price, 13.0);
//! ```

pub mod fixed;
pub mod indicators;
pub mod log;

#[cfg(not(target_arch = "wasm32"))]
pub mod harness;

pub use keel_model::{
    Action, Bar, Fill, LogLevel, ParamKind, ParamSpec, ParamValue, Params, Portfolio, Position,
    RiskLimits, Side, Signal, Size, StrategyInfo, Symbol, Tick,
};

/// Everything a strategy file usually needs.
pub mod prelude {
    pub use crate::fixed::fixed;
    pub use crate::indicators::*;
    pub use crate::{
        Action, Bar, Fill, ParamSpec, ParamValue, Params, Portfolio, Position, RiskLimits, Side,
        Signal, Size, Strategy, StrategyInfo, Symbol, Tick,
    };
}

/// A trading strategy. One value lives per loaded instance; the host calls
/// `describe` once, `init` once, then `on_bar` at every bar close and
/// `on_fill` when one of its orders executes. (Across the wasm boundary the
/// host hands over bar closes in batches, each with the fills since the one
/// before; the SDK unpacks them into these `on_fill` and `on_bar` calls, with
/// the portfolio marked at each close.)
pub trait Strategy: Sized + 'static {
    /// Name, version, default symbols, timeframe, warm-up and parameters.
    fn describe() -> StrategyInfo;

    /// Builds the strategy from its parameters (every declared one present,
    /// within bounds). `Err` refuses them.
    fn init(params: &Params) -> Result<Self, String>;

    /// One bar close: the newly closed bars, the strategy's portfolio and the
    /// risk limits. Returns this bar's signals; `Err` skips the bar.
    fn on_bar(&mut self, tick: &Tick) -> Result<Vec<Signal>, String>;

    /// One of its orders filled. The default ignores fills.
    fn on_fill(&mut self, fill: &Fill) {
        let _ = fill;
    }
}

/// Exports a [`Strategy`] type as the component's implementation of the
/// `keel:strategy` world. Use it once per strategy crate; it does nothing in a
/// native build.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static KEEL_INSTANCE: $crate::__private::Slot<$strategy> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct KeelGuest;
            impl $crate::__private::Guest for KeelGuest {
                fn describe() -> $crate::__private::bindings::StrategyInfo {
                    $crate::__private::describe::<$strategy>()
                }
                fn init(
                    params: ::std::vec::Vec<$crate::__private::bindings::Param>,
                    symbols: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    KEEL_INSTANCE.with(|slot| $crate::__private::init(slot, params, symbols))
                }
                fn on_bars(
                    lanes: ::std::vec::Vec<i64>,
                    prices: ::std::vec::Vec<f64>,
                    portfolio: $crate::__private::bindings::Portfolio,
                    limits: $crate::__private::bindings::RiskLimits,
                    fills: ::std::vec::Vec<$crate::__private::bindings::Fill>,
                    tags: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<
                    $crate::__private::bindings::BatchResult,
                    ::std::string::String,
                > {
                    KEEL_INSTANCE.with(|slot| {
                        $crate::__private::on_bars(
                            slot, lanes, prices, portfolio, limits, fills, tags,
                        )
                    })
                }
            }
    $crate::__private::export!(KeelGuest with_types_in $crate::__private::bindings);
        };
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

#[doc(hidden)]
pub mod heap;

/// Every strategy component allocates through [`heap::SizeClasses`].
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: heap::SizeClasses = heap::SizeClasses::new();
