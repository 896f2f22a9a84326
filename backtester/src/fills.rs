//! How orders fill: market orders at a reference price plus slippage, fees in
//! basis points of notional, quantities rounded down to the lot size and
//! optionally capped by a share of the bar's volume, and stop-loss /
//! take-profit exits inside a bar. The paper exchange uses the same model.
//!
//! Inside one bar the path from open to close is unknown, so the rule is
//! conservative: a stop is checked before a target, and a bar that touches
//! both exits at the stop. A bar that opens beyond the stop (a gap) exits at
//! the open, not at the better stop price. Stops are stop-market orders and
//! pay slippage; targets are limit orders and fill at their price (or at a
//! better open).

use keel_model::Side;
use keel_model::candles::Candle;

/// Why a trade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    Signal,
    StopLoss,
    TakeProfit,
    EndOfData,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::StopLoss => "stop-loss",
            ExitReason::TakeProfit => "take-profit",
            ExitReason::EndOfData => "end-of-data",
        }
    }
}

/// Fees, slippage, lot size and volume cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillModel {
    /// Fee per fill, in basis points of notional.
    pub fee_bps: f64,
    /// Adverse price move per market fill, in basis points.
    pub slippage_bps: f64,
    /// Largest share of a bar's volume one fill may take (`None`: no cap).
    pub max_volume_share: Option<f64>,
    /// Quantities are rounded down to a multiple of this.
    pub lot_size: f64,
}

impl Default for FillModel {
    fn default() -> Self {
        FillModel {
            fee_bps: 10.0,
            slippage_bps: 5.0,
            max_volume_share: None,
            lot_size: 1e-8,
        }
    }
}

impl FillModel {
    /// The price a market order gets at `reference`: worse by the slippage.
    pub fn market_price(&self, reference: f64, buy: bool) -> f64 {
        let slip = self.slippage_bps / 10_000.0;
        if buy {
            reference * (1.0 + slip)
        } else {
            reference * (1.0 - slip)
        }
    }

    /// The fee on `quantity` at `price`.
    pub fn fee(&self, quantity: f64, price: f64) -> f64 {
        quantity * price * self.fee_bps / 10_000.0
    }

    /// `wanted` rounded down to lots and capped by the bar's volume; the
    /// second value says whether the cap cut it.
    pub fn fillable(&self, wanted: f64, bar_volume: f64) -> (f64, bool) {
        let mut quantity = wanted;
        let mut capped = false;
        if let Some(share) = self.max_volume_share {
            let cap = share * bar_volume;
            if quantity > cap {
                quantity = cap;
                capped = true;
            }
        }
        (self.round_lot(quantity), capped)
    }

    /// Rounds down to a whole number of lots (tolerating float noise).
    pub fn round_lot(&self, quantity: f64) -> f64 {
        if self.lot_size <= 0.0 || !quantity.is_finite() || quantity <= 0.0 {
            return quantity.max(0.0);
        }
        (quantity / self.lot_size + 1e-9).floor() * self.lot_size
    }

    /// Whether and where a position exits inside `bar` by its stop or target.
    pub fn exit_in_bar(
        &self,
        side: Side,
        stop_loss: Option<f64>,
        take_profit: Option<f64>,
        bar: &Candle,
    ) -> Option<(f64, ExitReason)> {
        match side {
            Side::Long => {
                if let Some(stop) = stop_loss.filter(|s| bar.low <= *s) {
                    return Some((
                        self.market_price(bar.open.min(stop), false),
                        ExitReason::StopLoss,
                    ));
                }
                take_profit
                    .filter(|t| bar.high >= *t)
                    .map(|t| (bar.open.max(t), ExitReason::TakeProfit))
            }
            Side::Short => {
                if let Some(stop) = stop_loss.filter(|s| bar.high >= *s) {
                    return Some((
                        self.market_price(bar.open.max(stop), true),
                        ExitReason::StopLoss,
                    ));
                }
                take_profit
                    .filter(|t| bar.low <= *t)
                    .map(|t| (bar.open.min(t), ExitReason::TakeProfit))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(open: f64, high: f64, low: f64, close: f64) -> Candle {
        Candle {
            time_ms: 0,
            open,
            high,
            low,
            close,
            volume: 100.0,
        }
    }

    #[test]
    fn slippage_fees_and_lots_by_hand() {
        let m = FillModel {
            fee_bps: 10.0,
            slippage_bps: 50.0,
            max_volume_share: Some(0.1),
            lot_size: 0.01,
        };
        assert!((m.market_price(100.0, true) - 100.5).abs() < 1e-12);
        assert!((m.market_price(100.0, false) - 99.5).abs() < 1e-12);
        assert!((m.fee(2.0, 100.0) - 0.2).abs() < 1e-12);
        assert_eq!(m.fillable(3.456, 1000.0), (3.45, false));
        assert_eq!(
            m.fillable(50.0, 100.0),
            (10.0, true),
            "10% of a 100-unit bar"
        );
        assert_eq!(m.round_lot(0.3), 0.3, "float noise does not lose a lot");
    }

    #[test]
    fn stops_and_targets_inside_a_bar() {
        let m = FillModel {
            slippage_bps: 0.0,
            ..FillModel::default()
        };
        struct Case {
            name: &'static str,
            side: Side,
            bar: Candle,
            expect: Option<(f64, ExitReason)>,
        }
        let cases = [
            Case {
                name: "long stop",
                side: Side::Long,
                bar: bar(100.0, 101.0, 94.0, 96.0),
                expect: Some((95.0, ExitReason::StopLoss)),
            },
            Case {
                name: "long target",
                side: Side::Long,
                bar: bar(100.0, 111.0, 99.0, 108.0),
                expect: Some((110.0, ExitReason::TakeProfit)),
            },
            Case {
                name: "long both: stop first",
                side: Side::Long,
                bar: bar(100.0, 111.0, 94.0, 108.0),
                expect: Some((95.0, ExitReason::StopLoss)),
            },
            Case {
                name: "long gap through stop",
                side: Side::Long,
                bar: bar(90.0, 92.0, 88.0, 91.0),
                expect: Some((90.0, ExitReason::StopLoss)),
            },
            Case {
                name: "long gap through target",
                side: Side::Long,
                bar: bar(112.0, 113.0, 111.0, 112.0),
                expect: Some((112.0, ExitReason::TakeProfit)),
            },
            Case {
                name: "long untouched",
                side: Side::Long,
                bar: bar(100.0, 109.0, 96.0, 101.0),
                expect: None,
            },
            Case {
                name: "short stop",
                side: Side::Short,
                bar: bar(100.0, 106.0, 99.0, 101.0),
                expect: Some((105.0, ExitReason::StopLoss)),
            },
            Case {
                name: "short target",
                side: Side::Short,
                bar: bar(100.0, 101.0, 89.0, 92.0),
                expect: Some((90.0, ExitReason::TakeProfit)),
            },
            Case {
                name: "short both: stop first",
                side: Side::Short,
                bar: bar(100.0, 106.0, 89.0, 92.0),
                expect: Some((105.0, ExitReason::StopLoss)),
            },
        ];
        for case in cases {
            let (stop, target) = match case.side {
                Side::Long => (Some(95.0), Some(110.0)),
                Side::Short => (Some(105.0), Some(90.0)),
            };
            assert_eq!(
                m.exit_in_bar(case.side, stop, target, &case.bar),
                case.expect,
                "{}",
                case.name
            );
        }
        let slipped = FillModel {
            slippage_bps: 100.0,
            ..FillModel::default()
        };
        assert_eq!(
            slipped.exit_in_bar(Side::Long, Some(95.0), None, &bar(100.0, 101.0, 94.0, 96.0)),
            Some((95.0 * 0.99, ExitReason::StopLoss)),
            "a stop is a market order and slips"
        );
    }
}
