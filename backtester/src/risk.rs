//! Pre-trade risk checks: the basic limits of the contract, applied to every
//! signal before it becomes an order. Backtest, paper and live call the same
//! function. Closing and reducing are always allowed: they lower risk.

use std::collections::BTreeMap;

use keel_model::{Action, RiskLimits, Side, Signal, Size};

/// What the checks need to know about the book, including orders already
/// accepted this bar (so two signals cannot each take the whole limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposure {
    pub equity: f64,
    /// Absolute notional held (and pending) per symbol, in quote currency.
    pub notional: BTreeMap<String, f64>,
    /// (symbol, tag) of every open or pending position.
    pub open: Vec<(String, String)>,
    /// Side held under each (symbol, tag).
    pub sides: BTreeMap<(String, String), Side>,
}

/// An accepted opening order's estimated size at `price`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Approved {
    pub quantity: f64,
    pub notional: f64,
}

/// The quantity a size means at `price` for a book of `equity`.
pub fn quantity(size: Size, price: f64, equity: f64) -> f64 {
    match size {
        Size::FractionOfEquity(f) => f * equity / price,
        Size::Quote(q) => q / price,
        Size::Base(b) => b,
    }
}

/// Checks one signal against `limits` at the reference `price` (the last
/// close). `Ok(None)` for closes and reductions, which are never refused
/// here; `Ok(Some(_))` for an opening order within every limit.
pub fn check(
    signal: &Signal,
    price: f64,
    exposure: &Exposure,
    limits: &RiskLimits,
) -> Result<Option<Approved>, String> {
    let side = match signal.action {
        Action::Close | Action::Reduce => return Ok(None),
        Action::OpenLong => Side::Long,
        Action::OpenShort => Side::Short,
    };
    if !(price.is_finite() && price > 0.0) {
        return Err(format!("no price for {} yet", signal.symbol));
    }
    let equity = exposure.equity;
    if equity <= 0.0 {
        return Err(format!("equity {equity:.2} leaves nothing to trade"));
    }
    let key = (signal.symbol.clone(), signal.tag.clone());
    if let Some(held) = exposure.sides.get(&key)
        && *held != side
    {
        return Err(format!(
            "tag '{}' on {} holds a {} position; close it before opening the other side",
            signal.tag,
            signal.symbol,
            if *held == Side::Long { "long" } else { "short" }
        ));
    }
    let quantity = quantity(signal.size, price, equity);
    let notional = quantity * price;
    if notional < limits.min_order_quote {
        return Err(format!(
            "order of {notional:.2} is below the minimum order of {:.2}",
            limits.min_order_quote
        ));
    }
    let trade_fraction = notional / equity;
    if trade_fraction > limits.max_trade_fraction {
        return Err(format!(
            "order of {:.2}% of equity is over the {:.2}% trade limit",
            trade_fraction * 100.0,
            limits.max_trade_fraction * 100.0
        ));
    }
    let held = exposure
        .notional
        .get(&signal.symbol)
        .copied()
        .unwrap_or(0.0);
    let position_fraction = (held + notional) / equity;
    if position_fraction > limits.max_position_fraction {
        return Err(format!(
            "{} would be {:.2}% of equity, over the {:.2}% position limit",
            signal.symbol,
            position_fraction * 100.0,
            limits.max_position_fraction * 100.0
        ));
    }
    if !exposure.open.contains(&key) && exposure.open.len() >= limits.max_open_positions as usize {
        return Err(format!(
            "{} positions are open, the limit is {}",
            exposure.open.len(),
            limits.max_open_positions
        ));
    }
    Ok(Some(Approved { quantity, notional }))
}

impl Exposure {
    /// Records an accepted opening order so later signals see it.
    pub fn add(&mut self, signal: &Signal, approved: Approved) {
        *self.notional.entry(signal.symbol.clone()).or_default() += approved.notional;
        let key = (signal.symbol.clone(), signal.tag.clone());
        if !self.open.contains(&key) {
            self.open.push(key.clone());
        }
        let side = if signal.action == Action::OpenShort {
            Side::Short
        } else {
            Side::Long
        };
        self.sides.insert(key, side);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RiskLimits {
        RiskLimits {
            max_position_fraction: 0.25,
            max_open_positions: 2,
            max_trade_fraction: 0.10,
            min_order_quote: 10.0,
        }
    }

    fn book() -> Exposure {
        Exposure {
            equity: 1000.0,
            ..Exposure::default()
        }
    }

    #[test]
    fn each_limit_accepts_at_its_boundary_and_rejects_past_it() {
        struct Case {
            name: &'static str,
            signal: Signal,
            exposure: Exposure,
            expect: Result<(), &'static str>,
        }
        let long = |quote: f64| Signal::open_long("BTC", Size::Quote(quote));
        let mut held = book();
        held.notional.insert("BTC".into(), 160.0);
        let mut two_open = book();
        two_open.open = vec![("ETH".into(), "".into()), ("LTC".into(), "".into())];
        let mut other_side = book();
        other_side
            .sides
            .insert(("BTC".into(), "".into()), Side::Short);
        other_side.open.push(("BTC".into(), "".into()));
        let cases = [
            Case {
                name: "trade at 10%",
                signal: long(100.0),
                exposure: book(),
                expect: Ok(()),
            },
            Case {
                name: "trade over 10%",
                signal: long(100.5),
                exposure: book(),
                expect: Err("order of 10.05% of equity is over the 10.00% trade limit"),
            },
            Case {
                name: "minimum order",
                signal: long(10.0),
                exposure: book(),
                expect: Ok(()),
            },
            Case {
                name: "below minimum",
                signal: long(9.99),
                exposure: book(),
                expect: Err("order of 9.99 is below the minimum order of 10.00"),
            },
            Case {
                name: "position at 25%",
                signal: long(90.0),
                exposure: held.clone(),
                expect: Ok(()),
            },
            Case {
                name: "position over 25%",
                signal: long(90.1),
                exposure: held,
                expect: Err("BTC would be 25.01% of equity, over the 25.00% position limit"),
            },
            Case {
                name: "third position",
                signal: long(50.0),
                exposure: two_open.clone(),
                expect: Err("2 positions are open, the limit is 2"),
            },
            Case {
                name: "adding to an open one",
                signal: Signal::open_long("ETH", Size::Quote(50.0)),
                exposure: two_open,
                expect: Ok(()),
            },
            Case {
                name: "other side on a tag",
                signal: long(50.0),
                exposure: other_side,
                expect: Err(
                    "tag '' on BTC holds a short position; close it before opening the other side",
                ),
            },
            Case {
                name: "fraction of equity",
                signal: Signal::open_short("BTC", Size::FractionOfEquity(0.1)),
                exposure: book(),
                expect: Ok(()),
            },
            Case {
                name: "base size",
                signal: Signal::open_long("BTC", Size::Base(2.0)),
                exposure: book(),
                expect: Ok(()),
            },
            Case {
                name: "base size over",
                signal: Signal::open_long("BTC", Size::Base(2.1)),
                exposure: book(),
                expect: Err("order of 10.50% of equity is over the 10.00% trade limit"),
            },
        ];
        for case in cases {
            let got = check(&case.signal, 50.0, &case.exposure, &limits()).map(|_| ());
            assert_eq!(got, case.expect.map_err(str::to_owned), "{}", case.name);
        }
    }

    #[test]
    fn closing_is_never_refused_and_pending_orders_count() {
        let mut exposure = Exposure {
            equity: 0.0,
            ..Exposure::default()
        };
        assert_eq!(
            check(&Signal::close("BTC"), f64::NAN, &exposure, &limits()),
            Ok(None)
        );
        exposure.equity = 1000.0;
        let first = Signal::open_long("BTC", Size::Quote(100.0));
        let ok = check(&first, 50.0, &exposure, &limits())
            .expect("ok")
            .expect("approved");
        exposure.add(&first, ok);
        exposure.add(&first.clone().tag("b"), ok);
        let third = Signal::open_long("BTC", Size::Quote(60.0)).tag("c");
        assert!(
            check(&third, 50.0, &exposure, &limits()).is_err(),
            "pending orders take their share"
        );
    }
}
