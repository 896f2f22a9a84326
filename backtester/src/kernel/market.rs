//! What every book of a run shares: the symbols, their last closes, the
//! limits per symbol and the fill model.

use std::collections::BTreeMap;

use keel_model::batch::Bars;
use keel_model::{RiskLimits, Symbol};

use crate::fills::FillModel;
use crate::risk::MinOrders;

/// Decimal places money and quantities are kept to once they leave the
/// venue (an exchange's usual precision, and the ledger's).
pub const PLACES: u32 = 8;

/// `x` at exchange precision: the nearest float to `x` rounded to
/// [`PLACES`] decimals (fewer for large numbers: seven from a million, six
/// from ten million, …, none from 1e13 up, so the rounding stays exact in
/// floats). Every price, quantity and fee the kernel books passes through
/// here, so a decimal ledger holds the same number (`{:.8}`) and a book
/// rebuilt from the ledger's decimals, parsed with a correctly rounding
/// parser, is the same to the last bit. Idempotent; NaN stays NaN.
pub fn exact(x: f64) -> f64 {
    let magnitude = x.abs();
    let (mut limit, mut scale) = (1e6, 1e8);
    while scale >= 1.0 {
        if magnitude < limit {
            // `x * scale` is below 2^48, so it rounds to the right whole
            // number, and dividing two exact floats rounds correctly.
            return (x * scale).round() / scale;
        }
        limit *= 10.0;
        scale /= 10.0;
    }
    x
}

/// The symbols of a run and what is known of them.
#[derive(Debug, Clone)]
pub struct Market {
    pub symbols: Vec<Symbol>,
    index: BTreeMap<Symbol, usize>,
    /// The last close of each symbol (NaN before its first bar).
    pub last_close: Vec<f64>,
    /// The limits per symbol (minimum orders differ by quote currency).
    limits: Vec<RiskLimits>,
    base_limits: RiskLimits,
    /// What strategies are shown: the base limits with the smallest minimum.
    pub shown_limits: RiskLimits,
    pub fills: FillModel,
    /// How far a market fill may stray from the price it was sized at,
    /// percent (`None`: no collar, as in a backtest).
    pub max_deviation_pct: Option<f64>,
}

impl Market {
    pub fn new(
        symbols: Vec<Symbol>,
        limits: RiskLimits,
        min_orders: &MinOrders,
        fills: FillModel,
        max_deviation_pct: Option<f64>,
    ) -> Market {
        let index = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        let per: Vec<RiskLimits> = symbols
            .iter()
            .map(|s| min_orders.limits_for(s, &limits))
            .collect();
        let shown_limits = RiskLimits {
            min_order_quote: (per.iter().map(|l| l.min_order_quote))
                .reduce(f64::min)
                .unwrap_or(limits.min_order_quote),
            ..limits
        };
        Market {
            last_close: vec![f64::NAN; symbols.len()],
            symbols,
            index,
            limits: per,
            base_limits: limits,
            shown_limits,
            fills,
            max_deviation_pct,
        }
    }

    /// The index of `symbol`, if the run has it.
    pub fn index(&self, symbol: &str) -> Option<usize> {
        self.index.get(symbol).copied()
    }

    /// The limits for symbol `sym`, or the base limits for one the run
    /// does not have.
    pub fn limits(&self, sym: Option<usize>) -> &RiskLimits {
        sym.and_then(|s| self.limits.get(s))
            .unwrap_or(&self.base_limits)
    }

    /// The last close of `sym` (NaN for none).
    pub fn price(&self, sym: Option<usize>) -> f64 {
        sym.and_then(|s| self.last_close.get(s).copied())
            .unwrap_or(f64::NAN)
    }

    /// Takes the closes of one step's bars.
    pub fn close(&mut self, bars: Bars<'_>) {
        for b in 0..bars.len() {
            if let Some(last) = self.last_close.get_mut(bars.symbol[b] as usize) {
                *last = bars.close[b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_is_idempotent_and_survives_a_decimal_round_trip() {
        let mut x = 0.1234567891234_f64;
        for i in 0..200_000 {
            x = x * 1.618_033_988_7 + i as f64 * 0.000_137;
            if x > 1e15 {
                x /= 1e14;
            }
            for x in [x, -x] {
                let e = exact(x);
                assert_eq!(exact(e), e, "{x}");
                // The decimal a ledger keeps, parsed back, is the same float.
                let text = format!("{e:.8}");
                assert_eq!(text.parse::<f64>().expect("a number"), e, "{x} -> {text}");
                let grid = f64::max(5e-9, x.abs() * 5e-14);
                assert!((e - x).abs() <= grid + x.abs() * 1e-15, "{x} -> {e}");
            }
        }
        assert_eq!(exact(1e15), 1e15);
        assert_eq!(exact(0.1 + 0.2), 0.3);
        assert!(exact(f64::NAN).is_nan());
    }
}
