//! Whether an account may trade, and the two guards around an order that
//! are not limits of the contract: the halt rule and the price collar.

use std::fmt;

use keel_model::{Action, RiskLimits, Signal};

use crate::risk::{self, Approved, Exposure};

/// Whether the account may trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradingState {
    Active,
    /// Closing and reducing only (`keel pause`).
    ReduceOnly,
    /// A risk limit was breached, or `keel kill`: nothing new until an
    /// operator resumes. A strategy may still close and reduce what it
    /// holds — a halt that kept an open position from being closed would
    /// leave its loss unbounded. (A kill has closed everything and stopped
    /// the strategies already.)
    Halted,
}

impl TradingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "ACTIVE",
            TradingState::ReduceOnly => "REDUCE_ONLY",
            TradingState::Halted => "HALTED",
        }
    }

    pub fn parse(text: &str) -> Option<TradingState> {
        match text {
            "ACTIVE" => Some(TradingState::Active),
            "REDUCE_ONLY" => Some(TradingState::ReduceOnly),
            "HALTED" => Some(TradingState::Halted),
            _ => None,
        }
    }

    /// Why a signal that opens (or not) is refused in this state.
    pub fn refuses(self, opens: bool) -> Option<&'static str> {
        match self {
            TradingState::Halted if opens => Some("trading is halted"),
            TradingState::ReduceOnly if opens => Some("trading is reduce-only: no new exposure"),
            _ => None,
        }
    }
}

impl fmt::Display for TradingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a book must halt now, if it must: its equity against its peak and
/// against the day's starting equity, each limit in percent.
pub fn halt_reason(
    equity: f64,
    peak: f64,
    day_start: f64,
    max_drawdown_pct: f64,
    daily_loss_pct: f64,
) -> Option<String> {
    let drawdown = if peak > 0.0 {
        (peak - equity) / peak * 100.0
    } else {
        0.0
    };
    if drawdown >= max_drawdown_pct {
        return Some(format!(
            "drawdown {drawdown:.2}% from the peak {peak:.2} reached the {max_drawdown_pct}% limit"
        ));
    }
    let daily = if day_start > 0.0 {
        (day_start - equity) / day_start * 100.0
    } else {
        0.0
    };
    if daily >= daily_loss_pct {
        return Some(format!(
            "daily loss {daily:.2}% from the day's start {day_start:.2} reached the {daily_loss_pct}% limit"
        ));
    }
    None
}

/// The fat-finger check at fill time: `price` within `max_deviation_pct` of
/// the `reference` the order was sized at.
pub fn collar(reference: f64, price: f64, max_deviation_pct: f64) -> Result<(), String> {
    let deviation = (price - reference).abs() / reference * 100.0;
    if deviation > max_deviation_pct + 1e-9 {
        return Err(format!(
            "fat-finger: price {price} is {deviation:.2}% from the reference {reference}, over the {max_deviation_pct}% limit"
        ));
    }
    Ok(())
}

/// Every check before a signal becomes an order: the trading state, then
/// the contract's limits at the reference `price` (`risk::check`).
pub fn pre_trade(
    signal: &Signal,
    state: TradingState,
    price: f64,
    exposure: &Exposure,
    limits: &RiskLimits,
) -> Result<Option<Approved>, String> {
    let opens = matches!(signal.action, Action::OpenLong | Action::OpenShort);
    if let Some(why) = state.refuses(opens) {
        return Err(why.to_owned());
    }
    risk::check(signal, price, exposure, limits)
}
