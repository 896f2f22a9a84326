//! Kraken's pairs (`AssetPairs`): the decimals, minimums and state that
//! round every order Keel sends, so an order is never refused for a
//! precision or a size the venue told us about.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::RoundingStrategy;

/// What Kraken says a pair is traded in.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Kraken's key for it, e.g. `XXBTZUSD`.
    pub name: String,
    /// e.g. `XBTUSD`.
    pub altname: String,
    /// e.g. `XBT/USD`: the name the WebSocket API and Keel's symbols use.
    pub wsname: String,
    /// The assets it trades, as `Balance` names them (`XXBT`, `ZUSD`).
    pub base: String,
    pub quote: String,
    pub pair_decimals: u32,
    pub lot_decimals: u32,
    pub cost_decimals: u32,
    /// The smallest order, in the base asset.
    pub ordermin: Decimal,
    /// The smallest order cost, in the quote asset.
    pub costmin: Option<Decimal>,
    /// The price step, where Kraken gives one finer than the decimals.
    pub tick_size: Option<Decimal>,
    /// `online`, `cancel_only`, `post_only`, `limit_only`, `reduce_only`.
    pub status: String,
}

#[derive(serde::Deserialize)]
struct Raw {
    altname: String,
    #[serde(default)]
    wsname: Option<String>,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    quote: Option<String>,
    pair_decimals: u32,
    lot_decimals: u32,
    #[serde(default)]
    cost_decimals: Option<u32>,
    #[serde(default)]
    ordermin: Option<String>,
    #[serde(default)]
    costmin: Option<String>,
    #[serde(default)]
    tick_size: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Why an order cannot go to the venue as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{pair}: volume {volume} is below Kraken's minimum {min}")]
    BelowMinimum {
        pair: String,
        volume: Decimal,
        min: Decimal,
    },
    #[error("{pair}: cost {cost} is below Kraken's minimum {min}")]
    BelowCostMinimum {
        pair: String,
        cost: Decimal,
        min: Decimal,
    },
    #[error("{pair}: Kraken has it {status}; no new order")]
    NotTrading { pair: String, status: String },
}

/// The pairs of an `AssetPairs` `result`, by Kraken's key. Unknown fields
/// are ignored; a pair whose numbers do not parse is an error naming it.
pub fn parse(result: &serde_json::Value) -> Result<BTreeMap<String, Pair>, String> {
    let map = result
        .as_object()
        .ok_or("AssetPairs: the result is not an object")?;
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let raw: Raw =
            serde_json::from_value(value.clone()).map_err(|e| format!("AssetPairs {name}: {e}"))?;
        let decimal = |field: &str, text: &Option<String>| -> Result<Option<Decimal>, String> {
            text.as_deref()
                .map(|t| {
                    t.parse::<Decimal>()
                        .map_err(|_| format!("AssetPairs {name}: {field} {t:?} is not a number"))
                })
                .transpose()
        };
        if raw.pair_decimals > 20 || raw.lot_decimals > 20 {
            return Err(format!("AssetPairs {name}: decimals over 20"));
        }
        out.insert(
            name.clone(),
            Pair {
                name: name.clone(),
                wsname: raw.wsname.clone().unwrap_or_else(|| raw.altname.clone()),
                base: raw.base.unwrap_or_default(),
                quote: raw.quote.unwrap_or_default(),
                altname: raw.altname,
                pair_decimals: raw.pair_decimals,
                lot_decimals: raw.lot_decimals,
                cost_decimals: raw.cost_decimals.unwrap_or(raw.pair_decimals).min(20),
                ordermin: decimal("ordermin", &raw.ordermin)?.unwrap_or(Decimal::ZERO),
                costmin: decimal("costmin", &raw.costmin)?,
                tick_size: decimal("tick_size", &raw.tick_size)?.filter(|t| *t > Decimal::ZERO),
                status: raw.status.unwrap_or_else(|| "online".into()),
            },
        );
    }
    Ok(out)
}

impl Pair {
    /// `volume` cut down to the lot's decimals (never up: never more than
    /// the strategy's size).
    pub fn volume(&self, volume: Decimal) -> Decimal {
        volume.round_dp_with_strategy(self.lot_decimals, RoundingStrategy::ToZero)
    }

    /// A limit `price` on the pair's grid: down for a buy, up for a sell,
    /// so rounding never pays more or sells for less than asked.
    pub fn price(&self, price: Decimal, buy: bool) -> Decimal {
        let rounding = if buy {
            RoundingStrategy::ToNegativeInfinity
        } else {
            RoundingStrategy::ToPositiveInfinity
        };
        match self.tick_size {
            Some(tick) => (price / tick).round_dp_with_strategy(0, rounding) * tick,
            None => price.round_dp_with_strategy(self.pair_decimals, rounding),
        }
        .normalize()
    }

    /// Whether an order of `volume` at about `price` may be sent.
    pub fn check(&self, volume: Decimal, price: Decimal, reducing: bool) -> Result<(), Refusal> {
        let open = match self.status.as_str() {
            "online" | "limit_only" | "post_only" => true,
            "reduce_only" => reducing,
            _ => false,
        };
        if !open {
            return Err(Refusal::NotTrading {
                pair: self.wsname.clone(),
                status: self.status.clone(),
            });
        }
        if volume < self.ordermin {
            return Err(Refusal::BelowMinimum {
                pair: self.wsname.clone(),
                volume,
                min: self.ordermin,
            });
        }
        if let Some(min) = self.costmin
            && volume * price < min
        {
            return Err(Refusal::BelowCostMinimum {
                pair: self.wsname.clone(),
                cost: (volume * price).round_dp(self.cost_decimals).normalize(),
                min,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AssetPairs` as Kraken answers it (one pair; fields Keel does not
    /// use included, to show they are ignored).
    const XBTUSD: &str = r#"{
      "XXBTZUSD": {
        "altname": "XBTUSD", "wsname": "XBT/USD", "aclass_base": "currency", "base": "XXBT",
        "aclass_quote": "currency", "quote": "ZUSD", "lot": "unit", "cost_decimals": 5,
        "pair_decimals": 1, "lot_decimals": 8, "lot_multiplier": 1,
        "leverage_buy": [2, 3, 4, 5], "leverage_sell": [2, 3, 4, 5],
        "fees": [[0, 0.26], [50000, 0.24]], "fees_maker": [[0, 0.16], [50000, 0.14]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
        "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1", "status": "online"
      }
    }"#;

    fn xbt() -> Pair {
        let pairs = parse(&serde_json::from_str(XBTUSD).expect("json")).expect("parse");
        pairs["XXBTZUSD"].clone()
    }

    fn d(text: &str) -> Decimal {
        text.parse().expect("decimal")
    }

    #[test]
    fn a_pair_parses_and_rounds_orders_onto_its_grid() {
        let p = xbt();
        assert_eq!(
            (p.wsname.as_str(), p.lot_decimals, p.ordermin),
            ("XBT/USD", 8, d("0.0001"))
        );
        assert_eq!(p.volume(d("0.123456789")), d("0.12345678"));
        assert_eq!(p.price(d("37500.07"), true), d("37500"));
        assert_eq!(p.price(d("37500.01"), false), d("37500.1"));
        assert_eq!(p.price(d("37500.1"), true), d("37500.1"));
    }

    #[test]
    fn minimums_and_the_pairs_state_refuse_an_order_before_it_is_sent() {
        let mut p = xbt();
        assert_eq!(p.check(d("0.001"), d("37500"), false), Ok(()));
        assert_eq!(
            p.check(d("0.00005"), d("37500"), false)
                .expect_err("min")
                .to_string(),
            "XBT/USD: volume 0.00005 is below Kraken's minimum 0.0001"
        );
        p.ordermin = Decimal::ZERO;
        assert_eq!(
            p.check(d("0.00001"), d("37500"), false)
                .expect_err("cost")
                .to_string(),
            "XBT/USD: cost 0.375 is below Kraken's minimum 0.5"
        );
        p.status = "reduce_only".into();
        assert!(p.check(d("0.001"), d("37500"), true).is_ok());
        assert!(p.check(d("0.001"), d("37500"), false).is_err());
        p.status = "cancel_only".into();
        assert_eq!(
            p.check(d("0.001"), d("37500"), true)
                .expect_err("closed")
                .to_string(),
            "XBT/USD: Kraken has it cancel_only; no new order"
        );
    }

    #[test]
    fn a_bad_pair_is_named() {
        let bad = serde_json::json!({"X": {"altname": "X", "pair_decimals": 1, "lot_decimals": 8, "ordermin": "lots"}});
        assert_eq!(
            parse(&bad).expect_err("bad"),
            "AssetPairs X: ordermin \"lots\" is not a number"
        );
        assert!(parse(&serde_json::json!([])).is_err());
    }
}
