//! Anthropic's Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`; body `{model, max_tokens, system?,
//! messages: [{role, content}], temperature?}`; reply `{content: [{type:
//! "text", text}, …], model, stop_reason, usage: {input_tokens,
//! output_tokens}}`; failures `{"type":"error","error":{"type","message"}}`.
//!
//! Failures, as documented: 400 `invalid_request_error` (also a spend limit
//! the organisation set: "You have reached your specified API usage
//! limits"), 401 `authentication_error`, 402 `billing_error`, 403
//! `permission_error`, 404, 413 `request_too_large`, 429 `rate_limit_error`
//! with `retry-after` (but `error.details.error_code:
//! "enforced_spend_limit_reached"` is the monthly cap, not a rate), 500
//! `api_error`, 529 `overloaded_error`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::http::{self, Answer, ErrorBody};
use super::{Key, Provider, ProviderError, Reply, Request, Speaker, Usage};

/// The API version this client speaks.
const VERSION: &str = "2023-06-01";

/// A client of one Anthropic model.
pub struct Anthropic {
    client: http::Http,
    url: String,
    model: String,
    key: Key,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("key", &self.key)
            .finish()
    }
}

impl Anthropic {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";

    /// A client of `model` at `base_url` (`DEFAULT_BASE_URL` in production),
    /// each call given at most `timeout`.
    pub fn new(
        base_url: &str,
        model: &str,
        key: Key,
        timeout: Duration,
    ) -> Result<Anthropic, ProviderError> {
        let label = format!("anthropic:{model}");
        Ok(Anthropic {
            client: http::client(&label, timeout)?,
            url: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            key,
        })
    }

    fn body(&self, request: &Request) -> Value {
        let messages: Vec<Value> = request
            .turns
            .iter()
            .map(|t| {
                let role = match t.speaker {
                    Speaker::User => "user",
                    Speaker::Assistant => "assistant",
                };
                json!({"role": role, "content": t.text})
            })
            .collect();
        let mut body = json!({
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        });
        if !request.system.is_empty() {
            body["system"] = json!(request.system);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = http::temperature(t);
        }
        body
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        let mut key =
            HeaderValue::from_str(self.key.expose()).map_err(|_| ProviderError::Setup {
                provider: self.label(),
                message: "the key cannot be sent as a header".into(),
            })?;
        key.set_sensitive(true);
        headers.insert("x-api-key", key);
        headers.insert("anthropic-version", HeaderValue::from_static(VERSION));
        Ok(headers)
    }

    fn failure(&self, answer: Answer) -> ProviderError {
        let error = ErrorBody::parse(&answer.body, Some(&self.key));
        let provider = self.label();
        let status = answer.status;
        let message = error.summary.clone();
        let spend_limit = status == 402
            || error.names_any(&["billing_error", "enforced_spend_limit_reached"])
            || (status == 400 && mentions_spending(&error.summary));
        if spend_limit {
            return ProviderError::SpendLimit {
                provider,
                status,
                message,
            };
        }
        http::failure_by_status(provider, &answer, message)
    }

    fn reply(&self, request: &Request, answer: &Answer) -> Result<Reply, ProviderError> {
        let label = self.label();
        let v = http::json_reply(&answer.body, &label)?;
        let Some(content) = v.get("content").and_then(Value::as_array) else {
            return Err(http::malformed(&label, "no `content` list"));
        };
        let text: String = content
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let usage = match v.get("usage") {
            Some(u) => {
                let n = |name: &str| u.get(name).and_then(Value::as_u64);
                match (n("input_tokens"), n("output_tokens")) {
                    (Some(input), Some(output)) => Usage {
                        // Cache writes and reads are input too (priced
                        // differently; counting them at the input price
                        // errs on the side of spending less).
                        input_tokens: input
                            + n("cache_creation_input_tokens").unwrap_or(0)
                            + n("cache_read_input_tokens").unwrap_or(0),
                        output_tokens: output,
                        reported: true,
                    },
                    _ => Usage::estimated(request, &text),
                }
            }
            None => Usage::estimated(request, &text),
        };
        Ok(Reply {
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(&self.model)
                .to_owned(),
            stop_reason: v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            text,
            usage,
        })
    }
}

/// Anthropic answers an organisation's or workspace's own spend limit with
/// a 400 `invalid_request_error` whose message says so, and a low credit
/// balance likewise.
fn mentions_spending(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("usage limit") || m.contains("spend limit") || m.contains("credit balance")
}

impl Provider for Anthropic {
    fn label(&self) -> String {
        format!("anthropic:{}", self.model)
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        let answer = http::post_json(
            &self.client,
            &self.url,
            self.headers()?,
            &self.body(request),
            &self.label(),
            Some(&self.key),
        )?;
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(answer));
        }
        self.reply(request, &answer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_server::{Scripted, TestServer};
    use super::super::{Budget, Price, RetryPolicy, Turn, guarded};
    use super::*;

    const SECRET: &str = "sk-ant-test-4f9a8b7c6d5e";

    fn client(server: &TestServer) -> Anthropic {
        Anthropic::new(
            &server.base_url(),
            "claude-test",
            Key::for_tests(SECRET),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    fn request() -> Request {
        Request {
            system: "You write trading strategies.".into(),
            turns: vec![
                Turn::user("Propose one."),
                Turn::assistant("Which market?"),
                Turn::user("BTC."),
            ],
            max_tokens: 512,
            temperature: Some(0.2),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_wait: Duration::from_millis(50),
        }
    }

    fn budget() -> Arc<Budget> {
        Arc::new(Budget::new("10".parse().expect("decimal"), 1_000_000))
    }

    fn price() -> Price {
        Price {
            input_usd_per_mtok: "3".parse().expect("decimal"),
            output_usd_per_mtok: "15".parse().expect("decimal"),
        }
    }

    const GOOD: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-test-20260101","content":[{"type":"text","text":"Hello"},{"type":"tool_use","id":"t","name":"x","input":{}},{"type":"text","text":", world"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":21,"output_tokens":7},"some_future_field":{"x":1}}"#;

    fn error(status: u16, kind: &str, message: &str) -> Scripted {
        Scripted::json(
            status,
            &format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}},"request_id":"req_1"}}"#
            ),
        )
    }

    #[test]
    fn a_good_reply_is_read_and_the_request_is_the_documented_one() {
        let server = TestServer::start(vec![Scripted::json(200, GOOD)]);
        let reply = client(&server).complete(&request()).expect("reply");
        assert_eq!(reply.text, "Hello, world");
        assert_eq!(reply.model, "claude-test-20260101");
        assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 21,
                output_tokens: 7,
                reported: true
            }
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key").as_deref(), Some(SECRET));
        assert_eq!(r.header("anthropic-version").as_deref(), Some("2023-06-01"));
        assert!(r.header("authorization").is_none());
        let body: Value = serde_json::from_str(&r.body).expect("json body");
        assert_eq!(
            body,
            json!({
                "model": "claude-test",
                "max_tokens": 512,
                "system": "You write trading strategies.",
                "temperature": 0.2,
                "messages": [
                    {"role": "user", "content": "Propose one."},
                    {"role": "assistant", "content": "Which market?"},
                    {"role": "user", "content": "BTC."}
                ]
            })
        );
    }

    #[test]
    fn a_reply_without_usage_is_estimated_and_marked() {
        let server = TestServer::start(vec![Scripted::json(
            200,
            r#"{"type":"message","content":[{"type":"text","text":"abcdef"}],"stop_reason":"max_tokens"}"#,
        )]);
        let reply = client(&server).complete(&request()).expect("reply");
        assert!(!reply.usage.reported);
        assert_eq!(reply.usage.output_tokens, 2);
        assert_eq!(reply.usage.input_tokens, request().estimated_input_tokens());
        assert_eq!(reply.model, "claude-test");
    }

    #[test]
    fn malformed_replies_are_malformed_and_not_retried() {
        for body in ["{not json", r#"{"type":"message","usage":{}}"#] {
            let server = TestServer::start(vec![Scripted::json(200, body)]);
            let provider = guarded(client(&server), budget(), price(), fast());
            let error = provider.complete(&request()).expect_err("malformed");
            assert!(matches!(error, ProviderError::Malformed { .. }), "{error}");
            assert_eq!(server.requests().len(), 1, "not retried");
        }
    }

    #[test]
    fn rate_limit_waits_retry_after_then_succeeds() {
        let server = TestServer::start(vec![
            error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            )
            .header("retry-after", "0.02"),
            Scripted::json(200, GOOD),
        ]);
        let policy = RetryPolicy {
            base_backoff: Duration::from_millis(0),
            ..fast()
        };
        let started = std::time::Instant::now();
        let reply = guarded(client(&server), budget(), price(), policy)
            .complete(&request())
            .expect("succeeds on the second try");
        assert_eq!(reply.text, "Hello, world");
        assert_eq!(server.requests().len(), 2);
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "waited what retry-after said"
        );
    }

    #[test]
    fn overloaded_529_is_retried() {
        let server = TestServer::start(vec![
            error(529, "overloaded_error", "Overloaded"),
            error(500, "api_error", "Internal server error"),
            Scripted::json(200, GOOD),
        ]);
        let reply = guarded(client(&server), budget(), price(), fast())
            .complete(&request())
            .expect("succeeds on the third try");
        assert_eq!(reply.text, "Hello, world");
        assert_eq!(server.requests().len(), 3);
    }

    #[test]
    fn retries_stop_after_the_policy_allows() {
        let server = TestServer::start(vec![error(529, "overloaded_error", "Overloaded"); 10]);
        let error = guarded(client(&server), budget(), price(), fast())
            .complete(&request())
            .expect_err("still overloaded");
        assert!(
            matches!(error, ProviderError::Unavailable { status: 529, .. }),
            "{error}"
        );
        assert_eq!(server.requests().len(), 4, "one try and three retries");
    }

    #[test]
    fn billing_and_spend_limits_are_never_retried() {
        let cases = [
            error(
                400,
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            ),
            error(
                400,
                "invalid_request_error",
                "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
            ),
            error(402, "billing_error", "There is an issue with your billing."),
            Scripted::json(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"monthly spend cap reached","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
            ),
        ];
        for case in cases {
            let server = TestServer::start(vec![case, Scripted::json(200, GOOD)]);
            let error = guarded(client(&server), budget(), price(), fast())
                .complete(&request())
                .expect_err("a billing problem is final");
            assert!(matches!(error, ProviderError::SpendLimit { .. }), "{error}");
            assert!(!error.is_retryable());
            assert_eq!(server.requests().len(), 1, "{error}");
        }
    }

    #[test]
    fn auth_and_bad_requests_are_never_retried() {
        for (case, auth) in [
            (
                error(401, "authentication_error", "invalid x-api-key"),
                true,
            ),
            (error(403, "permission_error", "no access to model"), true),
            (
                error(400, "invalid_request_error", "max_tokens: too large"),
                false,
            ),
            (error(404, "not_found_error", "model: claude-test"), false),
        ] {
            let server = TestServer::start(vec![case, Scripted::json(200, GOOD)]);
            let error = guarded(client(&server), budget(), price(), fast())
                .complete(&request())
                .expect_err("final");
            if auth {
                assert!(matches!(error, ProviderError::Auth { .. }), "{error}");
            } else {
                assert!(matches!(error, ProviderError::Rejected { .. }), "{error}");
            }
            assert_eq!(server.requests().len(), 1, "{error}");
        }
    }

    #[test]
    fn an_echoed_key_never_reaches_the_error() {
        let long = "x".repeat(1000);
        let server = TestServer::start(vec![error(
            401,
            "authentication_error",
            &format!("invalid x-api-key {SECRET} {long}"),
        )]);
        let error = client(&server).complete(&request()).expect_err("refused");
        let message = error.to_string();
        assert!(!message.contains(SECRET), "{message}");
        assert!(!format!("{error:?}").contains(SECRET));
        assert!(message.contains("[redacted]"), "{message}");
        assert!(
            message.starts_with("anthropic:claude-test: key refused (HTTP 401)"),
            "{message}"
        );
        assert!(message.chars().count() < 400, "cut to a line: {message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_dead_server_is_a_retryable_transport_error() {
        let dead = TestServer::unused_address();
        let provider = Anthropic::new(
            &format!("http://{dead}"),
            "claude-test",
            Key::for_tests(SECRET),
            Duration::from_secs(2),
        )
        .expect("client");
        let error = provider.complete(&request()).expect_err("no server");
        assert!(matches!(error, ProviderError::Transport { .. }), "{error}");
        assert!(error.is_retryable());
    }

    #[test]
    fn a_timeout_is_a_transport_error() {
        let server = TestServer::start(vec![
            Scripted::json(200, GOOD).delay(Duration::from_millis(800)),
        ]);
        let provider = Anthropic::new(
            &server.base_url(),
            "claude-test",
            Key::for_tests(SECRET),
            Duration::from_millis(200),
        )
        .expect("client");
        let error = provider.complete(&request()).expect_err("too slow");
        assert!(matches!(error, ProviderError::Transport { .. }), "{error}");
        assert!(error.to_string().contains("timed out"), "{error}");
    }
}
