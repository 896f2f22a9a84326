//! The ledger: a book's cash and positions in exact decimal money.
//!
//! Each position keeps its *cost basis* (Σ quantity × price of what is
//! held) rather than an average price, so every identity holds exactly after
//! any sequence of fills:
//!
//! - `cash = start + realized − fees − Σ long cost + Σ short cost`
//! - `equity = start + realized − fees + unrealized`
//! - `realized = Σ closed trades' gross P&L`
//!
//! Releasing part of a position releases the same share of its cost,
//! rounded once; what is released is what leaves the basis, so rounding
//! never leaks into the identities.

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

use keel_model::{Action, Portfolio, Position, Side};

/// Decimal places of prices, quantities and fees as they enter the ledger
/// (an exchange's usual precision). Products of two such numbers stay well
/// inside a decimal's 28 digits, so every sum and product is exact.
pub const SCALE: u32 = 8;

/// A float from outside (feed, kernel) as a decimal, rounded to [`SCALE`]
/// places — the decimal a float at exchange precision
/// (`keel_backtester::kernel::exact`) stands for, exactly. Non-finite
/// numbers are refused.
pub fn dec(x: f64) -> Result<Decimal, LedgerError> {
    if !x.is_finite() {
        return Err(LedgerError::NotANumber(x));
    }
    // Rust prints the float's exact value rounded to eight places.
    match format!("{x:.8}").parse::<Decimal>() {
        Ok(d) => Ok(d.normalize()),
        Err(_) => Decimal::from_f64(x)
            .map(|d| d.round_dp(SCALE))
            .ok_or(LedgerError::NotANumber(x)),
    }
}

/// A decimal as the nearest float, for strategies, the kernel's book and
/// reports: `float(dec(x)) == x` for every `x` at exchange precision.
pub fn float(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(f64::NAN)
}

/// Why a fill could not be booked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("{0} is not a finite number")]
    NotANumber(f64),
    #[error("fill of {0} units: the quantity must be above zero")]
    BadQuantity(Decimal),
    #[error("fill at {0}: the price must be above zero")]
    BadPrice(Decimal),
    #[error("fee {0} is negative")]
    BadFee(Decimal),
    #[error("{symbol} '{tag}' holds the other side")]
    OtherSide { symbol: String, tag: String },
    #[error("{symbol} '{tag}': nothing open to close")]
    NothingOpen { symbol: String, tag: String },
}

/// One execution, as the exchange reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerFill {
    pub symbol: String,
    pub tag: String,
    pub action: Action,
    pub price: Decimal,
    pub quantity: Decimal,
    pub fee: Decimal,
    pub time_ms: i64,
}

/// An open position.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
    pub quantity: Decimal,
    /// Σ quantity × price of what is held.
    pub cost: Decimal,
    /// Entry fees not yet charged to a closed trade.
    pub fees: Decimal,
    pub opened_ms: i64,
    /// Last price it was marked at.
    pub mark: Decimal,
    /// Worst unrealized P&L seen, quote currency (≤ 0).
    pub mae: Decimal,
}

impl Holding {
    /// Average entry price.
    pub fn entry(&self) -> Decimal {
        if self.quantity.is_zero() {
            Decimal::ZERO
        } else {
            (self.cost / self.quantity).round_dp(SCALE)
        }
    }

    /// Unrealized P&L at the mark.
    pub fn unrealized(&self) -> Decimal {
        let value = self.quantity.saturating_mul(self.mark);
        match self.side {
            Side::Long => value.saturating_sub(self.cost),
            Side::Short => self.cost.saturating_sub(value),
        }
    }
}

/// A closed (part of a) position.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedTrade {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
    pub quantity: Decimal,
    pub price_entry: Decimal,
    pub price_exit: Decimal,
    pub opened_ms: i64,
    pub closed_ms: i64,
    /// Gross P&L, before fees.
    pub pnl_gross: Decimal,
    /// Entry and exit fees charged to this trade.
    pub fees: Decimal,
    pub mae: Decimal,
}

impl ClosedTrade {
    pub fn pnl_net(&self) -> Decimal {
        self.pnl_gross - self.fees
    }
}

/// One book: its cash, positions and running totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    pub start_cash: Decimal,
    pub cash: Decimal,
    /// Σ gross P&L of closed trades.
    pub realized: Decimal,
    /// Σ fees paid.
    pub fees: Decimal,
    pub holdings: Vec<Holding>,
}

impl Ledger {
    pub fn new(start_cash: Decimal) -> Ledger {
        Ledger {
            start_cash,
            cash: start_cash,
            realized: Decimal::ZERO,
            fees: Decimal::ZERO,
            holdings: Vec::new(),
        }
    }

    fn find(&self, symbol: &str, tag: &str) -> Option<usize> {
        self.holdings
            .iter()
            .position(|h| h.symbol == symbol && h.tag == tag)
    }

    /// Books one fill. Opening adds to (or starts) the position under the
    /// fill's tag; closing or reducing releases part of it and returns the
    /// closed trade.
    pub fn apply(&mut self, fill: &LedgerFill) -> Result<Option<ClosedTrade>, LedgerError> {
        if fill.quantity <= Decimal::ZERO {
            return Err(LedgerError::BadQuantity(fill.quantity));
        }
        if fill.price <= Decimal::ZERO {
            return Err(LedgerError::BadPrice(fill.price));
        }
        if fill.fee < Decimal::ZERO {
            return Err(LedgerError::BadFee(fill.fee));
        }
        let at = self.find(&fill.symbol, &fill.tag);
        let notional = fill.quantity * fill.price;
        match fill.action {
            Action::OpenLong | Action::OpenShort => {
                let side = if fill.action == Action::OpenLong {
                    Side::Long
                } else {
                    Side::Short
                };
                if let Some(i) = at
                    && self.holdings[i].side != side
                {
                    return Err(LedgerError::OtherSide {
                        symbol: fill.symbol.clone(),
                        tag: fill.tag.clone(),
                    });
                }
                self.cash += match side {
                    Side::Long => -notional,
                    Side::Short => notional,
                } - fill.fee;
                self.fees += fill.fee;
                match at {
                    Some(i) => {
                        let h = &mut self.holdings[i];
                        h.quantity += fill.quantity;
                        h.cost += notional;
                        h.fees += fill.fee;
                    }
                    None => self.holdings.push(Holding {
                        symbol: fill.symbol.clone(),
                        tag: fill.tag.clone(),
                        side,
                        quantity: fill.quantity,
                        cost: notional,
                        fees: fill.fee,
                        opened_ms: fill.time_ms,
                        mark: fill.price,
                        mae: Decimal::ZERO,
                    }),
                }
                Ok(None)
            }
            Action::Close | Action::Reduce => {
                let Some(i) = at else {
                    return Err(LedgerError::NothingOpen {
                        symbol: fill.symbol.clone(),
                        tag: fill.tag.clone(),
                    });
                };
                let h = &mut self.holdings[i];
                let quantity = fill.quantity.min(h.quantity);
                let whole = quantity == h.quantity;
                let (cost, entry_fees, mae) = if whole {
                    (h.cost, h.fees, h.mae)
                } else {
                    let share = quantity / h.quantity;
                    (
                        (h.cost * share).round_dp(SCALE),
                        (h.fees * share).round_dp(SCALE),
                        (h.mae * share).round_dp(SCALE),
                    )
                };
                let proceeds = quantity * fill.price;
                let pnl_gross = match h.side {
                    Side::Long => proceeds - cost,
                    Side::Short => cost - proceeds,
                };
                let trade = ClosedTrade {
                    symbol: h.symbol.clone(),
                    tag: h.tag.clone(),
                    side: h.side,
                    quantity,
                    price_entry: (cost / quantity).round_dp(SCALE),
                    price_exit: fill.price,
                    opened_ms: h.opened_ms,
                    closed_ms: fill.time_ms,
                    pnl_gross,
                    fees: entry_fees + fill.fee,
                    mae,
                };
                self.cash += match h.side {
                    Side::Long => proceeds,
                    Side::Short => -proceeds,
                } - fill.fee;
                self.fees += fill.fee;
                self.realized += pnl_gross;
                if whole {
                    self.holdings.remove(i);
                } else {
                    h.quantity -= quantity;
                    h.cost -= cost;
                    h.fees -= entry_fees;
                    h.mae -= mae;
                }
                Ok(Some(trade))
            }
        }
    }

    /// Marks every position of `symbol` at a bar: MAE from its range, the
    /// mark at its close.
    pub fn mark(&mut self, symbol: &str, low: Decimal, high: Decimal, close: Decimal) {
        for h in self.holdings.iter_mut().filter(|h| h.symbol == symbol) {
            // Saturating: a mark must never panic, whatever the feed did.
            let worst = match h.side {
                Side::Long => h.quantity.saturating_mul(low).saturating_sub(h.cost),
                Side::Short => h.cost.saturating_sub(h.quantity.saturating_mul(high)),
            };
            h.mae = h.mae.min(worst);
            h.mark = close;
        }
    }

    pub fn unrealized(&self) -> Decimal {
        (self.holdings.iter().map(Holding::unrealized)).fold(Decimal::ZERO, Decimal::saturating_add)
    }

    /// Cash plus the marked value of every position.
    pub fn equity(&self) -> Decimal {
        self.holdings
            .iter()
            .map(|h| match h.side {
                Side::Long => h.quantity.saturating_mul(h.mark),
                Side::Short => -(h.quantity.saturating_mul(h.mark)),
            })
            .fold(self.cash, Decimal::saturating_add)
    }

    /// What the strategy sees.
    pub fn view(&self) -> Portfolio {
        Portfolio {
            cash: float(self.cash),
            equity: float(self.equity()),
            positions: self
                .holdings
                .iter()
                .map(|h| Position {
                    symbol: h.symbol.clone(),
                    tag: h.tag.clone(),
                    side: h.side,
                    size: float(h.quantity),
                    price_entry: float(h.entry()),
                    time_entry_ms: h.opened_ms,
                    price_mark: float(h.mark),
                    pnl_unrealized: float(h.unrealized()),
                    mae: float(h.mae),
                })
                .collect(),
        }
    }

    /// Checks the identities in the module docs; `Err` names the first
    /// that does not hold.
    pub fn check(&self) -> Result<(), String> {
        let basis: Decimal = self
            .holdings
            .iter()
            .map(|h| match h.side {
                Side::Long => -h.cost,
                Side::Short => h.cost,
            })
            .sum();
        let cash = self.start_cash + self.realized - self.fees + basis;
        if cash != self.cash {
            return Err(format!("cash {} but the fills say {cash}", self.cash));
        }
        let equity = self.start_cash + self.realized - self.fees + self.unrealized();
        if equity != self.equity() {
            return Err(format!(
                "equity {} but start + realized - fees + unrealized = {equity}",
                self.equity()
            ));
        }
        if let Some(h) = self.holdings.iter().find(|h| h.quantity <= Decimal::ZERO) {
            return Err(format!("{} '{}' holds {}", h.symbol, h.tag, h.quantity));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(x: &str) -> Decimal {
        x.parse().expect("decimal")
    }

    fn fill(action: Action, tag: &str, price: &str, quantity: &str, fee: &str) -> LedgerFill {
        LedgerFill {
            symbol: "BTC/USD".into(),
            tag: tag.into(),
            action,
            price: d(price),
            quantity: d(quantity),
            fee: d(fee),
            time_ms: 0,
        }
    }

    #[test]
    fn a_long_and_a_short_round_trip_by_hand() {
        let mut l = Ledger::new(d("1000"));
        l.apply(&fill(Action::OpenLong, "", "10", "3", "0.03"))
            .expect("open");
        l.apply(&fill(Action::OpenLong, "", "13", "1", "0.013"))
            .expect("add");
        assert_eq!(l.holdings[0].entry(), d("10.75"));
        let t = l
            .apply(&fill(Action::Reduce, "", "12", "2", "0.024"))
            .expect("reduce")
            .expect("trade");
        // Half the cost (43) leaves with half the position: 24 - 21.5.
        assert_eq!(t.pnl_gross, d("2.5"));
        assert_eq!(t.fees, d("0.0215") + d("0.024"));
        let t = l
            .apply(&fill(Action::Close, "", "9", "2", "0.018"))
            .expect("close")
            .expect("trade");
        assert_eq!(t.pnl_gross, d("-3.5"));
        assert!(l.holdings.is_empty());
        assert_eq!(l.cash, d("1000") - d("1") - d("0.085"));

        l.apply(&fill(Action::OpenShort, "s", "20", "5", "0.1"))
            .expect("short");
        l.mark("BTC/USD", d("17"), d("21"), d("18"));
        assert_eq!(l.unrealized(), d("10"));
        assert_eq!(l.holdings[0].mae, d("-5"));
        l.check().expect("identities");
    }

    #[test]
    fn a_mark_far_beyond_the_fill_price_does_not_panic() {
        let mut l = Ledger::new(d("1000000000000"));
        l.apply(&fill(
            Action::OpenLong,
            "",
            "0.00000001",
            "100000000000000000000",
            "0",
        ))
        .expect("open");
        l.apply(&fill(
            Action::OpenShort,
            "s",
            "0.00000001",
            "100000000000000000000",
            "0",
        ))
        .expect("short");
        let top = d("100000000000000");
        l.mark("BTC/USD", top, top, top);
        // Saturated, not wrapped and not a panic: the long gained more than
        // anything the ledger can count, the short lost as much.
        let huge = Decimal::from(10u64.pow(18)) * Decimal::from(10u64.pow(10));
        assert!(l.holdings[0].unrealized() > huge);
        assert!(l.holdings[1].unrealized() < -huge);
        let _ = (l.equity(), l.unrealized(), l.view());
    }

    #[test]
    fn bad_fills_are_refused_and_change_nothing() {
        let mut l = Ledger::new(d("100"));
        l.apply(&fill(Action::OpenLong, "", "10", "1", "0"))
            .expect("open");
        let before = l.clone();
        let cases = [
            fill(Action::OpenShort, "", "10", "1", "0"),
            fill(Action::Close, "other", "10", "1", "0"),
            fill(Action::OpenLong, "", "0", "1", "0"),
            fill(Action::OpenLong, "", "10", "-1", "0"),
            fill(Action::OpenLong, "", "10", "1", "-0.1"),
        ];
        for case in &cases {
            assert!(l.apply(case).is_err(), "{case:?}");
            assert_eq!(l, before);
        }
        assert_eq!(
            l.apply(&cases[0]).expect_err("other side").to_string(),
            "BTC/USD '' holds the other side"
        );
    }

    /// One step of a random history: an action on one of two tags.
    fn step() -> impl Strategy<Value = (u8, bool, u32, u32, u32, u32)> {
        (
            0u8..4,
            any::<bool>(),
            1u32..100_000,
            1u32..5_000,
            0u32..50,
            1u32..100_000,
        )
    }

    proptest! {
        #[test]
        fn the_identities_hold_after_any_sequence_of_fills(steps in prop::collection::vec(step(), 1..60)) {
            let mut l = Ledger::new(d("100000"));
            let mut closed = Decimal::ZERO;
            for (kind, tag_b, price, qty, fee_bp, mark) in steps {
                let tag = if tag_b { "b" } else { "" };
                let action = [Action::OpenLong, Action::OpenShort, Action::Reduce, Action::Close][kind as usize];
                let price = Decimal::new(i64::from(price), 2);
                let quantity = Decimal::new(i64::from(qty), 3);
                let fee = (price * quantity * Decimal::new(i64::from(fee_bp), 4)).round_dp(SCALE);
                let f = LedgerFill { symbol: "X".into(), tag: tag.into(), action, price, quantity, fee, time_ms: 0 };
                let before = l.clone();
                match l.apply(&f) {
                    Ok(Some(t)) => closed += t.pnl_gross,
                    Ok(None) => {}
                    Err(_) => prop_assert_eq!(&l, &before),
                }
                let m = Decimal::new(i64::from(mark), 2);
                l.mark("X", m, m, m);
                prop_assert!(l.check().is_ok(), "{:?}", l.check());
                prop_assert_eq!(l.realized, closed);
            }
        }
    }
}
