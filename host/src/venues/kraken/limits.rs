//! Kraken's rate limits, modelled here so Keel waits instead of being
//! locked out. Two counters, each rising with calls and decaying with
//! time, by account tier:
//!
//! - the REST call counter (per key): private calls add 1, ledger and
//!   trade-history queries 2, placing and cancelling orders nothing; over
//!   the maximum, the API answers `EAPI:Rate limit exceeded`;
//! - the matching engine's counter (per pair): each order placed adds 1,
//!   each cancel a penalty that is larger the younger the order; over the
//!   maximum, orders are refused with `EOrder:Rate limit exceeded`.
//!
//! Times are given in milliseconds by the caller (no clock here).

use std::collections::HashMap;
use std::time::Duration;

/// The account's verification tier, which sets both counters' limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Starter,
    Intermediate,
    Pro,
    /// No limits modelled: for rehearsals against `keel __fake-kraken`,
    /// which keeps none; never for Kraken itself.
    Unlimited,
}

impl Tier {
    /// The REST counter's maximum and its decay per second.
    fn rest(self) -> (f64, f64) {
        match self {
            Tier::Starter => (15.0, 0.33),
            Tier::Intermediate => (20.0, 0.5),
            Tier::Pro => (20.0, 1.0),
            Tier::Unlimited => (1e12, 1e12),
        }
    }

    /// The matching engine counter's maximum and its decay per second.
    fn engine(self) -> (f64, f64) {
        match self {
            Tier::Starter => (60.0, 1.0),
            Tier::Intermediate => (125.0, 2.34),
            Tier::Pro => (180.0, 3.75),
            Tier::Unlimited => (1e12, 1e12),
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text {
            "starter" => Some(Tier::Starter),
            "intermediate" => Some(Tier::Intermediate),
            "pro" => Some(Tier::Pro),
            "unlimited" => Some(Tier::Unlimited),
            _ => None,
        }
    }
}

/// A counter that rises by costs and decays linearly to zero.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counter {
    value: f64,
    at_ms: i64,
    max: f64,
    decay_per_s: f64,
}

impl Counter {
    fn new((max, decay_per_s): (f64, f64)) -> Counter {
        Counter {
            value: 0.0,
            at_ms: i64::MIN,
            max,
            decay_per_s,
        }
    }

    fn at(&self, now_ms: i64) -> f64 {
        if self.at_ms == i64::MIN {
            return self.value;
        }
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        (self.value - elapsed * self.decay_per_s).max(0.0)
    }

    /// How long until `cost` more stays within the maximum.
    fn wait(&self, cost: f64, now_ms: i64) -> Duration {
        let over = self.at(now_ms) + cost - self.max;
        if over <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(over / self.decay_per_s)
        }
    }

    fn add(&mut self, cost: f64, now_ms: i64) {
        self.value = self.at(now_ms) + cost;
        self.at_ms = now_ms;
    }

    /// What is left before the maximum, as a share of it.
    fn headroom(&self, now_ms: i64) -> f64 {
        ((self.max - self.at(now_ms)) / self.max).clamp(0.0, 1.0)
    }
}

/// What a private REST method costs on the call counter.
pub fn rest_cost(method: &str) -> f64 {
    match method {
        "AddOrder"
        | "AddOrderBatch"
        | "CancelOrder"
        | "CancelAll"
        | "CancelAllOrdersAfter"
        | "EditOrder"
        | "AmendOrder" => 0.0,
        "Ledgers" | "QueryLedgers" | "TradesHistory" | "QueryTrades" => 2.0,
        _ => 1.0,
    }
}

/// The matching engine's penalty for cancelling an order `age` old.
pub fn cancel_penalty(age: Duration) -> f64 {
    match age.as_secs_f64() {
        a if a < 5.0 => 8.0,
        a if a < 10.0 => 6.0,
        a if a < 15.0 => 5.0,
        a if a < 45.0 => 4.0,
        a if a < 90.0 => 2.0,
        a if a < 300.0 => 1.0,
        _ => 0.0,
    }
}

/// Kraken's public endpoints, throttled per IP address at about one call a
/// second sustained: a counter of one call that decays at `per_s`, so calls
/// go out `1 / per_s` apart.
#[derive(Debug, Clone)]
pub struct PublicLimit {
    counter: Counter,
}

impl PublicLimit {
    pub fn new(per_s: f64) -> PublicLimit {
        PublicLimit {
            counter: Counter::new((1.0, per_s)),
        }
    }

    /// How long to wait before the next public call (then call `called`).
    pub fn wait(&self, now_ms: i64) -> Duration {
        self.counter.wait(1.0, now_ms)
    }

    pub fn called(&mut self, now_ms: i64) {
        self.counter.add(1.0, now_ms);
    }

    /// The spacing of calls when nothing goes wrong.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.counter.decay_per_s)
    }
}

/// Both counters of one key.
#[derive(Debug, Clone)]
pub struct RateLimits {
    tier: Tier,
    rest: Counter,
    pairs: HashMap<String, Counter>,
}

impl RateLimits {
    pub fn new(tier: Tier) -> RateLimits {
        RateLimits {
            tier,
            rest: Counter::new(tier.rest()),
            pairs: HashMap::new(),
        }
    }

    /// How long to wait before calling `method` (then call `called`).
    pub fn rest_wait(&self, method: &str, now_ms: i64) -> Duration {
        self.rest.wait(rest_cost(method), now_ms)
    }

    pub fn called(&mut self, method: &str, now_ms: i64) {
        self.rest.add(rest_cost(method), now_ms);
    }

    fn pair(&mut self, pair: &str) -> &mut Counter {
        let tier = self.tier;
        self.pairs
            .entry(pair.to_owned())
            .or_insert_with(|| Counter::new(tier.engine()))
    }

    /// How long to wait before placing an order on `pair`.
    pub fn order_wait(&mut self, pair: &str, now_ms: i64) -> Duration {
        self.pair(pair).wait(1.0, now_ms)
    }

    pub fn placed(&mut self, pair: &str, now_ms: i64) {
        self.pair(pair).add(1.0, now_ms);
    }

    /// How long to wait before cancelling an order `age` old on `pair`.
    pub fn cancel_wait(&mut self, pair: &str, age: Duration, now_ms: i64) -> Duration {
        self.pair(pair).wait(cancel_penalty(age), now_ms)
    }

    pub fn cancelled(&mut self, pair: &str, age: Duration, now_ms: i64) {
        self.pair(pair).add(cancel_penalty(age), now_ms);
    }

    /// What the venue answered `EAPI:Rate limit exceeded`: our model was
    /// behind; take the counter as full, so the next call waits a while.
    pub fn rest_refused(&mut self, now_ms: i64) {
        self.rest.value = self.rest.max;
        self.rest.at_ms = now_ms;
    }

    /// What the venue answered `EOrder:Rate limit exceeded` on `pair`.
    pub fn orders_refused(&mut self, pair: &str, now_ms: i64) {
        let c = self.pair(pair);
        c.value = c.max;
        c.at_ms = now_ms;
    }

    /// The REST counter's headroom, 0 (full) to 1 (idle), for `keel status`.
    pub fn rest_headroom(&self, now_ms: i64) -> f64 {
        self.rest.headroom(now_ms)
    }

    /// The tightest pair's headroom.
    pub fn engine_headroom(&self, now_ms: i64) -> f64 {
        self.pairs
            .values()
            .map(|c| c.headroom(now_ms))
            .fold(1.0, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_counter_fills_then_waits_for_its_decay() {
        let mut l = RateLimits::new(Tier::Starter);
        for _ in 0..15 {
            assert_eq!(l.rest_wait("Balance", 0), Duration::ZERO);
            l.called("Balance", 0);
        }
        // Full at 15: one more call waits for 1 / 0.33 s.
        let wait = l.rest_wait("Balance", 0);
        assert!((wait.as_secs_f64() - 1.0 / 0.33).abs() < 1e-9, "{wait:?}");
        // A trade-history query costs 2; orders cost the REST counter nothing.
        assert!(l.rest_wait("TradesHistory", 0) > wait);
        assert_eq!(l.rest_wait("AddOrder", 0), Duration::ZERO);
        // After the wait it fits.
        assert_eq!(l.rest_wait("Balance", 3031), Duration::ZERO);
        assert!(l.rest_headroom(0) < 1e-9 && l.rest_headroom(60_000) == 1.0);
    }

    #[test]
    fn cancelling_young_orders_costs_the_pair_more() {
        assert_eq!(cancel_penalty(Duration::from_secs(1)), 8.0);
        assert_eq!(cancel_penalty(Duration::from_secs(12)), 5.0);
        assert_eq!(cancel_penalty(Duration::from_secs(100)), 1.0);
        assert_eq!(cancel_penalty(Duration::from_secs(301)), 0.0);
        let mut l = RateLimits::new(Tier::Starter);
        // Place and cancel at once, over and over: 9 a round, 60 the limit.
        let mut rounds = 0;
        while l.order_wait("XBTUSD", 0).is_zero()
            && l.cancel_wait("XBTUSD", Duration::ZERO, 0).is_zero()
        {
            l.placed("XBTUSD", 0);
            l.cancelled("XBTUSD", Duration::ZERO, 0);
            rounds += 1;
        }
        assert_eq!(rounds, 6);
        // Another pair has its own counter.
        assert!(l.order_wait("ETHUSD", 0).is_zero());
        assert!(l.engine_headroom(0) < 0.2);
    }

    #[test]
    fn public_calls_are_spaced_by_the_rate() {
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round();
        let mut l = PublicLimit::new(2.0);
        assert_eq!(l.wait(0), Duration::ZERO, "the first goes at once");
        l.called(0);
        assert_eq!(ms(l.wait(0)), 500.0);
        assert_eq!(ms(l.wait(300)), 200.0);
        assert_eq!(l.wait(500), Duration::ZERO);
        l.called(500);
        assert_eq!(ms(l.wait(500)), 500.0);
        // Idle time is no credit for a burst.
        l.called(10_000);
        assert_eq!(ms(l.wait(10_000)), 500.0);
        assert_eq!(l.interval(), Duration::from_millis(500));
    }

    #[test]
    fn a_refusal_from_the_venue_fills_the_model() {
        let mut l = RateLimits::new(Tier::Pro);
        l.orders_refused("XBTUSD", 1000);
        assert!(!l.order_wait("XBTUSD", 1000).is_zero());
        l.rest_refused(1000);
        assert!(!l.rest_wait("Balance", 1000).is_zero());
        assert!(l.rest_wait("Balance", 3000).is_zero(), "pro decays 1/s");
        assert_eq!(Tier::parse("intermediate"), Some(Tier::Intermediate));
        assert_eq!(Tier::parse("gold"), None);
    }
}
