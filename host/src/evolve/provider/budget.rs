//! The night's spending limit, a hard stop. Before each call its worst case
//! (the input counted conservatively, plus every output token it may
//! produce, priced) is reserved; calls in flight count against the limit
//! until settled; settling replaces the reservation by what the server says
//! the call used, or keeps the worst case when it says nothing. A call whose
//! worst case does not fit is refused before anything is sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rust_decimal::Decimal;

use super::{Provider, ProviderError, Reply, Request, Usage};

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_usd_per_mtok: Decimal,
    pub output_usd_per_mtok: Decimal,
}

impl Price {
    /// A local model: tokens still count against the token limit.
    pub const FREE: Price = Price {
        input_usd_per_mtok: Decimal::ZERO,
        output_usd_per_mtok: Decimal::ZERO,
    };

    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> Decimal {
        let million = Decimal::from(1_000_000u32);
        (Decimal::from(input_tokens) * self.input_usd_per_mtok
            + Decimal::from(output_tokens) * self.output_usd_per_mtok)
            / million
    }
}

/// A call the budget cannot cover: the night stops here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "budget: {label} may cost up to ${need_usd} and {need_tokens} tokens, but ${committed_usd} of ${max_usd} and {committed_tokens} of {max_tokens} tokens are spent or reserved; not sent"
)]
pub struct BudgetExceeded {
    pub label: String,
    pub need_usd: Decimal,
    pub need_tokens: u64,
    pub committed_usd: Decimal,
    pub committed_tokens: u64,
    pub max_usd: Decimal,
    pub max_tokens: u64,
}

/// The worst case of one call, held against the budget until settled.
/// Dropping it unsettled leaves the worst case counted.
#[must_use = "settle or release a reservation, or its worst case stays counted"]
#[derive(Debug)]
pub struct Reservation {
    budget: u64,
    label: String,
    usd: Decimal,
    tokens: u64,
    price: Price,
}

impl Reservation {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The worst case reserved: (US dollars, tokens).
    pub fn worst_case(&self) -> (Decimal, u64) {
        (self.usd, self.tokens)
    }
}

/// A night's limit on money and tokens, shared by every call of the night.
#[derive(Debug)]
pub struct Budget {
    id: u64,
    max_usd: Decimal,
    max_tokens: u64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    spent_usd: Decimal,
    spent_tokens: u64,
    reserved_usd: Decimal,
    reserved_tokens: u64,
}

static NEXT_BUDGET: AtomicU64 = AtomicU64::new(0);

impl Budget {
    pub fn new(max_usd: Decimal, max_tokens: u64) -> Budget {
        Budget {
            id: NEXT_BUDGET.fetch_add(1, Ordering::Relaxed),
            max_usd,
            max_tokens,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger is only ever updated whole; a panic elsewhere cannot
        // leave it half-written.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the worst case of `request` at `price`, or refuses it if
    /// that, with everything spent and in flight, would pass either limit.
    pub fn reserve(
        &self,
        label: &str,
        request: &Request,
        price: &Price,
    ) -> Result<Reservation, BudgetExceeded> {
        let input = request.estimated_input_tokens();
        let output = u64::from(request.max_tokens);
        let need_usd = price.cost(input, output);
        let need_tokens = input + output;
        let mut ledger = self.ledger();
        let committed_usd = ledger.spent_usd + ledger.reserved_usd;
        let committed_tokens = ledger.spent_tokens + ledger.reserved_tokens;
        if committed_usd + need_usd > self.max_usd
            || committed_tokens.saturating_add(need_tokens) > self.max_tokens
        {
            return Err(BudgetExceeded {
                label: label.to_owned(),
                need_usd: need_usd.round_dp(6).normalize(),
                need_tokens,
                committed_usd: committed_usd.round_dp(6).normalize(),
                committed_tokens,
                max_usd: self.max_usd,
                max_tokens: self.max_tokens,
            });
        }
        ledger.reserved_usd += need_usd;
        ledger.reserved_tokens += need_tokens;
        Ok(Reservation {
            budget: self.id,
            label: label.to_owned(),
            usd: need_usd,
            tokens: need_tokens,
            price: *price,
        })
    }

    /// Replaces a reservation by what the call used: the reported usage,
    /// priced, or the worst case when the server reported none.
    pub fn settle(&self, reservation: Reservation, usage: &Usage) {
        let (usd, tokens) = if usage.reported {
            (
                reservation
                    .price
                    .cost(usage.input_tokens, usage.output_tokens),
                usage.total(),
            )
        } else {
            (reservation.usd, reservation.tokens)
        };
        self.close(reservation, usd, tokens);
    }

    /// Keeps a reservation's worst case as spent: the call failed in a way
    /// that may still have been billed (a timeout, a reply we could not read).
    pub fn settle_worst_case(&self, reservation: Reservation) {
        let (usd, tokens) = (reservation.usd, reservation.tokens);
        self.close(reservation, usd, tokens);
    }

    /// Drops a reservation unspent: the server refused the call.
    pub fn release(&self, reservation: Reservation) {
        self.close(reservation, Decimal::ZERO, 0);
    }

    fn close(&self, reservation: Reservation, usd: Decimal, tokens: u64) {
        debug_assert_eq!(
            reservation.budget, self.id,
            "a reservation settled against another budget"
        );
        let mut ledger = self.ledger();
        ledger.reserved_usd -= reservation.usd;
        ledger.reserved_tokens = ledger.reserved_tokens.saturating_sub(reservation.tokens);
        ledger.spent_usd += usd;
        ledger.spent_tokens += tokens;
    }

    /// What settled calls cost: (US dollars, tokens).
    pub fn spent(&self) -> (Decimal, u64) {
        let ledger = self.ledger();
        (ledger.spent_usd, ledger.spent_tokens)
    }

    /// The worst cases of calls in flight: (US dollars, tokens).
    pub fn reserved(&self) -> (Decimal, u64) {
        let ledger = self.ledger();
        (ledger.reserved_usd, ledger.reserved_tokens)
    }

    /// The limits: (US dollars, tokens).
    pub fn limits(&self) -> (Decimal, u64) {
        (self.max_usd, self.max_tokens)
    }
}

/// A provider whose every call is reserved, made and settled against a
/// budget, so no caller can forget a step.
#[derive(Debug)]
pub struct Metered<P> {
    inner: P,
    budget: Arc<Budget>,
    price: Price,
}

impl<P: Provider> Metered<P> {
    pub fn new(inner: P, budget: Arc<Budget>, price: Price) -> Metered<P> {
        Metered {
            inner,
            budget,
            price,
        }
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }
}

impl<P: Provider> Provider for Metered<P> {
    fn label(&self) -> String {
        self.inner.label()
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        let reservation = self.budget.reserve(&self.label(), request, &self.price)?;
        match self.inner.complete(request) {
            Ok(reply) => {
                self.budget.settle(reservation, &reply.usage);
                Ok(reply)
            }
            Err(error) if error.refused_by_server() => {
                self.budget.release(reservation);
                Err(error)
            }
            Err(error) => {
                self.budget.settle_worst_case(reservation);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_server::{Gate, Scripted, TestServer};
    use super::super::{Anthropic, Key, Turn};
    use super::*;

    fn usd(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn price() -> Price {
        Price {
            input_usd_per_mtok: usd("3"),
            output_usd_per_mtok: usd("15"),
        }
    }

    /// 300 bytes of input: 100 tokens + 2 × 8 framing = 116.
    fn request(max_tokens: u32) -> Request {
        Request {
            system: String::new(),
            turns: vec![Turn::user("x".repeat(300))],
            max_tokens,
            temperature: None,
        }
    }

    fn anthropic(server: &TestServer) -> Anthropic {
        Anthropic::new(
            &server.base_url(),
            "claude-test",
            Key::for_tests("sk-ant-budget"),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    const GOOD: &str = r#"{"type":"message","model":"claude-test","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":100,"output_tokens":50}}"#;

    #[test]
    fn the_worst_case_is_reserved_and_settled_to_the_actual() {
        let budget = Budget::new(usd("1"), 1_000_000);
        let reservation = budget
            .reserve("p:m", &request(1000), &price())
            .expect("fits");
        // 116 × $3/M + 1000 × $15/M
        assert_eq!(reservation.worst_case(), (usd("0.015348"), 1116));
        assert_eq!(budget.reserved(), (usd("0.015348"), 1116));
        budget.settle(
            reservation,
            &Usage {
                input_tokens: 100,
                output_tokens: 50,
                reported: true,
            },
        );
        assert_eq!(budget.reserved(), (Decimal::ZERO, 0));
        assert_eq!(budget.spent(), (usd("0.00105"), 150));
    }

    #[test]
    fn unreported_usage_keeps_the_worst_case() {
        let budget = Budget::new(usd("1"), 1_000_000);
        let reservation = budget
            .reserve("p:m", &request(1000), &price())
            .expect("fits");
        budget.settle(
            reservation,
            &Usage {
                input_tokens: 1,
                output_tokens: 1,
                reported: false,
            },
        );
        assert_eq!(budget.spent(), (usd("0.015348"), 1116));
    }

    #[test]
    fn either_limit_refuses_and_names_the_call() {
        let by_money = Budget::new(usd("0.015"), 1_000_000);
        let error = by_money
            .reserve("anthropic:claude-x", &request(1000), &price())
            .expect_err("$0.015348 > $0.015");
        assert!(
            error
                .to_string()
                .starts_with("budget: anthropic:claude-x may cost up to $0.015348"),
            "{error}"
        );
        let by_tokens = Budget::new(usd("100"), 1115);
        assert!(by_tokens.reserve("p:m", &request(1000), &price()).is_err());
        assert!(
            by_tokens.reserve("p:m", &request(999), &price()).is_ok(),
            "exactly at the limit fits"
        );
        // Free models still count tokens.
        let free = Budget::new(Decimal::ZERO, 2000);
        assert!(
            free.reserve("ollama:m", &request(1000), &Price::FREE)
                .is_ok()
        );
        assert!(
            free.reserve("ollama:m", &request(1000), &Price::FREE)
                .is_err()
        );
    }

    #[test]
    fn concurrent_reservations_all_count() {
        // Room for exactly five worst cases of 1116 tokens.
        let budget = Arc::new(Budget::new(usd("100"), 5 * 1116));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || budget.reserve("p:m", &request(1000), &price()).ok())
            })
            .collect();
        let held: Vec<Reservation> = threads
            .into_iter()
            .filter_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(held.len(), 5);
        assert_eq!(budget.reserved().1, 5 * 1116);
        for r in held {
            budget.release(r);
        }
        assert_eq!(budget.reserved(), (Decimal::ZERO, 0));
        assert_eq!(budget.spent(), (Decimal::ZERO, 0));
    }

    #[test]
    fn a_call_over_budget_never_reaches_the_server() {
        let server = TestServer::start(vec![Scripted::json(200, GOOD)]);
        let budget = Arc::new(Budget::new(usd("0.01"), 1_000_000));
        let metered = Metered::new(anthropic(&server), budget.clone(), price());
        let error = metered.complete(&request(1000)).expect_err("over budget");
        assert!(matches!(error, ProviderError::Budget(_)), "{error}");
        assert!(!error.is_retryable());
        assert!(server.requests().is_empty(), "nothing was sent");
        assert_eq!(budget.spent(), (Decimal::ZERO, 0));
    }

    #[test]
    fn a_call_in_flight_holds_its_worst_case() {
        let gate = Gate::default();
        let server = TestServer::start(vec![
            Scripted::json(200, GOOD).until(&gate),
            Scripted::json(200, GOOD),
        ]);
        // Room for one worst case (1116 tokens), not two.
        let budget = Arc::new(Budget::new(usd("1"), 2000));
        let metered = Arc::new(Metered::new(anthropic(&server), budget.clone(), price()));
        let first = {
            let metered = metered.clone();
            std::thread::spawn(move || metered.complete(&request(1000)))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server.requests().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(budget.reserved().1, 1116, "the first call is in flight");
        let second = metered.complete(&request(1000));
        assert!(matches!(second, Err(ProviderError::Budget(_))));
        gate.open();
        first.join().expect("thread").expect("first call");
        assert_eq!(server.requests().len(), 1);
        assert_eq!(budget.spent(), (usd("0.00105"), 150));
        // Settled to the actual, the budget has room again.
        metered.complete(&request(100)).expect("fits now");
    }

    #[test]
    fn a_refusal_is_released_and_a_timeout_kept() {
        let server = TestServer::start(vec![
            Scripted::json(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            Scripted::json(200, GOOD).delay(Duration::from_millis(600)),
        ]);
        let budget = Arc::new(Budget::new(usd("1"), 1_000_000));
        let slow = Anthropic::new(
            &server.base_url(),
            "claude-test",
            Key::for_tests("sk-ant-budget"),
            Duration::from_millis(200),
        )
        .expect("client");
        let metered = Metered::new(slow, budget.clone(), price());
        assert!(metered.complete(&request(1000)).is_err());
        assert_eq!(budget.spent(), (Decimal::ZERO, 0), "a 529 costs nothing");
        let error = metered.complete(&request(1000)).expect_err("times out");
        assert!(matches!(error, ProviderError::Transport { .. }), "{error}");
        assert_eq!(
            budget.spent(),
            (usd("0.015348"), 1116),
            "a timeout may have been billed"
        );
        assert_eq!(budget.reserved(), (Decimal::ZERO, 0));
    }

    #[test]
    fn guarded_counts_every_attempt() {
        use super::super::{RetryPolicy, guarded};
        let server = TestServer::start(vec![
            Scripted::json(200, GOOD).delay(Duration::from_millis(600)),
            Scripted::json(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            ),
            Scripted::json(200, GOOD),
        ]);
        let budget = Arc::new(Budget::new(usd("1"), 1_000_000));
        let slow = Anthropic::new(
            &server.base_url(),
            "claude-test",
            Key::for_tests("sk-ant-budget"),
            Duration::from_millis(200),
        )
        .expect("client");
        let policy = RetryPolicy {
            max_retries: 2,
            base_backoff: Duration::from_millis(1),
            max_wait: Duration::from_millis(10),
        };
        guarded(slow, budget.clone(), price(), policy)
            .complete(&request(1000))
            .expect("the third attempt answers");
        assert_eq!(server.requests().len(), 3);
        // The timed-out attempt's worst case, nothing for the 429, the
        // answer's reported usage.
        assert_eq!(
            budget.spent(),
            (usd("0.015348") + usd("0.00105"), 1116 + 150)
        );
        assert_eq!(budget.reserved(), (Decimal::ZERO, 0));
    }
}
