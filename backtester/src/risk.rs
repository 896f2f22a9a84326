//! Pre-trade risk checks: the basic limits of the contract, applied to every
//! signal before it becomes an order. Backtest, paper and live call the same
//! function. Closing and reducing are always allowed: they lower risk.

use std::collections::BTreeMap;

use keel_model::candles::MAX_ORDER_QUANTITY;
use keel_model::shown::{amount, apart, fixed, number, quoted, text};
use keel_model::{Action, RiskLimits, Side, Signal, Size};

/// What the checks need to know about the book, including orders already
/// accepted this bar (so two signals cannot each take the whole limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposure {
    pub equity: f64,
    /// Absolute notional held (and pending) per symbol, in quote currency.
    pub notional: BTreeMap<String, f64>,
    /// Every open or pending position's (symbol, tag), in the order first
    /// seen, with the side last held under it. A book holds a few: a scan
    /// finds one without building a key.
    pub held: Vec<Held>,
}

/// One open or pending position of an [`Exposure`].
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub symbol: String,
    pub tag: String,
    pub side: Side,
}

/// An accepted opening order's estimated size at `price`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Approved {
    pub quantity: f64,
    pub notional: f64,
}

/// Quote currencies a dollar-like minimum (`RiskLimits::min_order_quote`)
/// fits: fiat money and stablecoins.
const FIAT_QUOTES: [&str; 16] = [
    "USD", "USDT", "USDC", "DAI", "BUSD", "TUSD", "FDUSD", "PYUSD", "EUR", "EURT", "GBP", "CHF",
    "CAD", "AUD", "ZUSD", "ZEUR",
];

/// Built-in minimums (about ten dollars' worth) for crypto quote currencies.
const CRYPTO_QUOTES: [(&str, f64); 4] = [
    ("BTC", 0.0001),
    ("XBT", 0.0001),
    ("XXBT", 0.0001),
    ("ETH", 0.003),
];

/// The smallest order per symbol, in the symbol's quote currency: entries by
/// symbol (`ETH/BTC`) or by quote currency (`BTC`), over built-in defaults
/// for BTC and ETH quotes. A fiat or stablecoin quote, or a symbol whose
/// quote cannot be told (`BTC`, a file name), takes `min_order_quote`; any
/// other quote has no minimum unless one is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinOrders(BTreeMap<String, f64>);

impl MinOrders {
    /// Sets the minimum for a symbol or a quote currency (any case).
    pub fn set(&mut self, name: &str, minimum: f64) {
        self.0.insert(name.to_ascii_uppercase(), minimum);
    }

    /// Every entry set, by upper-case name.
    pub fn entries(&self) -> &BTreeMap<String, f64> {
        &self.0
    }

    /// The minimum order on `symbol`, `fiat` being `min_order_quote`.
    pub fn for_symbol(&self, symbol: &str, fiat: f64) -> f64 {
        let symbol = symbol.to_ascii_uppercase();
        if let Some(&m) = self.0.get(&symbol) {
            return m;
        }
        let Some(quote) = quote_of(&symbol) else {
            return fiat;
        };
        if let Some(&m) = self.0.get(quote) {
            m
        } else if let Some(&(_, m)) = CRYPTO_QUOTES.iter().find(|(q, _)| *q == quote) {
            m
        } else if FIAT_QUOTES.contains(&quote) {
            fiat
        } else {
            0.0
        }
    }

    /// `limits` with the minimum order of `symbol`.
    pub fn limits_for(&self, symbol: &str, limits: &RiskLimits) -> RiskLimits {
        RiskLimits {
            min_order_quote: self.for_symbol(symbol, limits.min_order_quote),
            ..*limits
        }
    }
}

/// The quote currency of an upper-case symbol: after its `/`, else a known
/// quote it ends with (`XBTUSD`); none for a bare name (`BTC`).
fn quote_of(symbol: &str) -> Option<&str> {
    if let Some((_, quote)) = symbol.rsplit_once('/') {
        return Some(quote);
    }
    let known = FIAT_QUOTES
        .iter()
        .chain(CRYPTO_QUOTES.iter().map(|(q, _)| q));
    known
        .filter(|q| symbol.len() > q.len() && symbol.ends_with(**q))
        .max_by_key(|q| q.len())
        .map(|q| &symbol[symbol.len() - q.len()..])
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
        return Err(format!("no price for {} yet", text(&signal.symbol)));
    }
    let size = signal.size.amount();
    if !(size.is_finite() && size > 0.0) {
        return Err(format!("size {} is not a positive number", number(size)));
    }
    exits_beyond(signal, side, price)?;
    let equity = exposure.equity;
    if equity <= 0.0 {
        return Err(format!("equity {} leaves nothing to trade", amount(equity)));
    }
    let position = exposure.position(&signal.symbol, &signal.tag);
    if let Some(held) = position.map(|p| p.side)
        && held != side
    {
        return Err(format!(
            "tag {} on {} holds a {} position; close it before opening the other side",
            quoted(&signal.tag),
            text(&signal.symbol),
            if held == Side::Long { "long" } else { "short" }
        ));
    }
    let quantity = quantity(signal.size, price, equity);
    if quantity.is_nan() || quantity > MAX_ORDER_QUANTITY {
        return Err(format!(
            "quantity {} is over the largest one order may carry, {}",
            number(quantity),
            number(MAX_ORDER_QUANTITY)
        ));
    }
    let notional = quantity * price;
    if notional < limits.min_order_quote {
        let (order, least) = apart(amount(notional), amount(limits.min_order_quote));
        return Err(format!(
            "order of {order} is below the minimum order of {least}"
        ));
    }
    let trade_fraction = notional / equity;
    if trade_fraction > limits.max_trade_fraction {
        let (order, most) = apart(
            fixed(trade_fraction * 100.0, 2),
            fixed(limits.max_trade_fraction * 100.0, 2),
        );
        return Err(format!(
            "order of {order}% of equity is over the {most}% trade limit"
        ));
    }
    let held = exposure
        .notional
        .get(&signal.symbol)
        .copied()
        .unwrap_or(0.0);
    let position_fraction = (held + notional) / equity;
    if position_fraction > limits.max_position_fraction {
        let (would, most) = apart(
            fixed(position_fraction * 100.0, 2),
            fixed(limits.max_position_fraction * 100.0, 2),
        );
        return Err(format!(
            "{} would be {would}% of equity, over the {most}% position limit",
            text(&signal.symbol),
        ));
    }
    if position.is_none() && exposure.held.len() >= limits.max_open_positions as usize {
        return Err(format!(
            "{} positions are open, the limit is {}",
            exposure.held.len(),
            limits.max_open_positions
        ));
    }
    Ok(Some(Approved { quantity, notional }))
}

/// A stop-loss must be on the losing side of the reference `price` (below
/// it for a long), a take-profit on the winning side: one on the wrong side
/// would close the position at its first bar.
fn exits_beyond(signal: &Signal, side: Side, price: f64) -> Result<(), String> {
    let (name, below, above) = match side {
        Side::Long => ("long", "stop-loss", "take-profit"),
        Side::Short => ("short", "take-profit", "stop-loss"),
    };
    let (stop, target) = (signal.stop_loss, signal.take_profit);
    let (lower, upper) = match side {
        Side::Long => (stop, target),
        Side::Short => (target, stop),
    };
    if let Some(p) = lower
        && p.partial_cmp(&price) != Some(std::cmp::Ordering::Less)
    {
        return Err(format!(
            "{below} {} of a {name} is not below the price {}",
            number(p),
            number(price)
        ));
    }
    if let Some(p) = upper
        && p.partial_cmp(&price) != Some(std::cmp::Ordering::Greater)
    {
        return Err(format!(
            "{above} {} of a {name} is not above the price {}",
            number(p),
            number(price)
        ));
    }
    Ok(())
}

impl Exposure {
    /// Records an accepted opening order so later signals see it.
    pub fn add(&mut self, signal: &Signal, approved: Approved) {
        let side = if signal.action == Action::OpenShort {
            Side::Short
        } else {
            Side::Long
        };
        self.hold(&signal.symbol, &signal.tag, side, approved.notional);
    }

    /// Counts `notional` more of `symbol`, held as `side` under `tag`.
    pub fn hold(&mut self, symbol: &str, tag: &str, side: Side, notional: f64) {
        match self.notional.get_mut(symbol) {
            Some(n) => *n += notional,
            None => {
                self.notional.insert(symbol.to_owned(), notional);
            }
        }
        match self
            .held
            .iter_mut()
            .find(|h| h.symbol == symbol && h.tag == tag)
        {
            Some(held) => held.side = side,
            None => self.held.push(Held {
                symbol: symbol.to_owned(),
                tag: tag.to_owned(),
                side,
            }),
        }
    }

    /// The position held or pending under (`symbol`, `tag`).
    pub fn position(&self, symbol: &str, tag: &str) -> Option<&Held> {
        self.held
            .iter()
            .find(|h| h.symbol == symbol && h.tag == tag)
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
        two_open.hold("ETH", "", Side::Long, 0.0);
        two_open.hold("LTC", "", Side::Long, 0.0);
        let mut other_side = book();
        other_side.hold("BTC", "", Side::Short, 0.0);
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
                name: "trade over 10% by less than a hundredth of a point",
                signal: long(100.00004),
                exposure: book(),
                expect: Err("order of 10.000004% of equity is over the 10.000000% trade limit"),
            },
            Case {
                // Not "of 10.00 ... of 10.00": as many decimals as tell
                // the two apart.
                name: "below minimum by less than a cent",
                signal: long(9.9961),
                exposure: book(),
                expect: Err("order of 9.996 is below the minimum order of 10.000"),
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
                    "tag \"\" on BTC holds a short position; close it before opening the other side",
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
        // A minimum in BTC shows its digits.
        let btc = MinOrders::default().limits_for("ETH/BTC", &limits());
        let tiny = Signal::open_long("ETH/BTC", Size::Quote(0.00005));
        assert_eq!(
            check(&tiny, 50.0, &book(), &btc),
            Err("order of 0.0000500 is below the minimum order of 0.000100".into())
        );
    }

    #[test]
    fn an_order_too_large_for_the_ledger_is_refused() {
        let exposure = Exposure {
            equity: 1e12,
            ..Exposure::default()
        };
        let limits = RiskLimits {
            max_position_fraction: 1.0,
            max_trade_fraction: 1.0,
            ..RiskLimits::default()
        };
        let buy = Signal::open_long("DUST/USD", Size::FractionOfEquity(0.5));
        assert_eq!(
            check(&buy, 1e-8, &exposure, &limits),
            Err("quantity 5e19 is over the largest one order may carry, 1000000000000".into())
        );
        assert!(check(&buy, 1.0, &exposure, &limits).is_ok());
    }

    #[test]
    fn stops_and_targets_must_be_on_the_right_side_of_the_price() {
        struct Case {
            name: &'static str,
            signal: Signal,
            expect: Result<(), &'static str>,
        }
        let long = || Signal::open_long("BTC", Size::Quote(50.0));
        let short = || Signal::open_short("BTC", Size::Quote(50.0));
        let cases = [
            Case {
                name: "long, stop below",
                signal: long().stop_loss(49.0).take_profit(51.0),
                expect: Ok(()),
            },
            Case {
                name: "long, stop above",
                signal: long().stop_loss(51.0),
                expect: Err("stop-loss 51 of a long is not below the price 50"),
            },
            Case {
                name: "long, stop at the price",
                signal: long().stop_loss(50.0),
                expect: Err("stop-loss 50 of a long is not below the price 50"),
            },
            Case {
                name: "long, target below",
                signal: long().take_profit(49.5),
                expect: Err("take-profit 49.5 of a long is not above the price 50"),
            },
            Case {
                name: "short, stop above",
                signal: short().stop_loss(51.0).take_profit(49.0),
                expect: Ok(()),
            },
            Case {
                name: "short, stop below",
                signal: short().stop_loss(49.0),
                expect: Err("stop-loss 49 of a short is not above the price 50"),
            },
            Case {
                name: "short, target above",
                signal: short().take_profit(1e300),
                expect: Err("take-profit 1e300 of a short is not below the price 50"),
            },
        ];
        for case in cases {
            let got = check(&case.signal, 50.0, &book(), &limits()).map(|_| ());
            assert_eq!(got, case.expect.map_err(str::to_owned), "{}", case.name);
        }
        // A close carries no stop that matters.
        let close = Signal::close("BTC").stop_loss(1e9);
        assert_eq!(check(&close, 50.0, &book(), &limits()), Ok(None));
    }

    #[test]
    fn sizes_that_are_not_positive_numbers_are_refused() {
        for size in [
            Size::Quote(f64::NAN),
            Size::Base(-1.0),
            Size::FractionOfEquity(0.0),
        ] {
            let signal = Signal::open_long("BTC", size);
            assert!(
                check(&signal, 50.0, &book(), &limits())
                    .is_err_and(|e| e.ends_with("is not a positive number")),
                "{size:?}"
            );
        }
    }

    #[test]
    fn the_minimum_order_goes_by_symbol_then_quote_currency() {
        let mut orders = MinOrders::default();
        orders.set("LTC/BTC", 0.5);
        orders.set("eur", 20.0);
        let fiat = 10.0;
        let cases = [
            ("BTC/USD", 10.0),
            ("ETH/USDT", 10.0),
            ("XBTUSD", 10.0),
            ("BTC/EUR", 20.0),
            ("ETH/BTC", 0.0001),
            ("ETHBTC", 0.0001),
            ("XMR/XBT", 0.0001),
            ("LTC/BTC", 0.5),
            ("LINK/ETH", 0.003),
            ("BTC", 10.0),
            ("UNITTEST_BTC-1m", 10.0),
            ("ADA/BNB", 0.0),
        ];
        for (symbol, expect) in cases {
            assert_eq!(orders.for_symbol(symbol, fiat), expect, "{symbol}");
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
