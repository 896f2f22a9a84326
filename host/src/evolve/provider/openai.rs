//! Any OpenAI-compatible chat-completions endpoint: OpenAI itself, Ollama
//! (`http://localhost:11434/v1`), llama.cpp's server and vLLM.
//! `POST {base}/chat/completions`, the base including the version path;
//! `Authorization: Bearer KEY` only when there is a key (local servers need
//! none); body `{model, messages: [{role, content}], max_tokens,
//! temperature?}`; reply `{choices: [{message: {content}, finish_reason}],
//! model, usage: {prompt_tokens, completion_tokens}}`; failures
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! A 429 is a rate limit unless its type or code says the money ran out
//! (`insufficient_quota`, `credit_balance_exhausted`,
//! `organization_spend_limit_exceeded`, `project_spend_limit_exceeded`,
//! `organization_usage_limit_exceeded`): retrying those cannot help.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::http::{self, Answer, ErrorBody};
use super::{Key, Provider, ProviderError, Reply, Request, Speaker, Usage};

/// Error types and codes that mean no money is left.
const SPEND_CODES: &[&str] = &[
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    "billing_hard_limit_reached",
];

/// A client of one model behind an OpenAI-compatible endpoint.
pub struct OpenAiCompatible {
    client: http::Http,
    url: String,
    name: String,
    model: String,
    key: Option<Key>,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("model", &self.model)
            .field("key", &self.key)
            .finish()
    }
}

impl OpenAiCompatible {
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";
    pub const OLLAMA_BASE_URL: &'static str = "http://localhost:11434/v1";

    /// A client of `model` at `base_url` (with its version path, e.g.
    /// `OPENAI_BASE_URL`), labelled `name:model` (`openai`, `ollama`, …);
    /// `key` is sent as a bearer token when given.
    pub fn new(
        name: &str,
        base_url: &str,
        model: &str,
        key: Option<Key>,
        timeout: Duration,
    ) -> Result<OpenAiCompatible, ProviderError> {
        let label = format!("{name}:{model}");
        Ok(OpenAiCompatible {
            client: http::client(&label, timeout)?,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            name: name.to_owned(),
            model: model.to_owned(),
            key,
        })
    }

    fn body(&self, request: &Request) -> Value {
        let mut messages = Vec::with_capacity(request.turns.len() + 1);
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        messages.extend(request.turns.iter().map(|t| {
            let role = match t.speaker {
                Speaker::User => "user",
                Speaker::Assistant => "assistant",
            };
            json!({"role": role, "content": t.text})
        }));
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
        });
        if let Some(t) = request.temperature {
            body["temperature"] = http::temperature(t);
        }
        body
    }

    fn headers(&self) -> Result<HeaderMap, ProviderError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    ProviderError::Setup {
                        provider: self.label(),
                        message: "the key cannot be sent as a header".into(),
                    }
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }

    fn failure(&self, answer: Answer) -> ProviderError {
        let error = ErrorBody::parse(&answer.body, self.key.as_ref());
        let provider = self.label();
        let status = answer.status;
        let message = error.summary.clone();
        if status == 402 || error.names_any(SPEND_CODES) {
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
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Err(http::malformed(&label, "no `choices[0]`"));
        };
        let stop_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(text) = choice
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
        else {
            return Err(http::malformed(
                &label,
                format!(
                    "no text in `choices[0].message.content` (finish_reason {})",
                    stop_reason.as_deref().unwrap_or("not given")
                ),
            ));
        };
        let usage = v
            .get("usage")
            .and_then(|u| {
                Some(Usage {
                    input_tokens: u.get("prompt_tokens")?.as_u64()?,
                    output_tokens: u.get("completion_tokens")?.as_u64()?,
                    reported: true,
                })
            })
            .unwrap_or_else(|| Usage::estimated(request, text));
        Ok(Reply {
            text: text.to_owned(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(&self.model)
                .to_owned(),
            usage,
            stop_reason,
        })
    }
}

impl Provider for OpenAiCompatible {
    fn label(&self) -> String {
        format!("{}:{}", self.name, self.model)
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        let answer = http::post_json(
            &self.client,
            &self.url,
            self.headers()?,
            &self.body(request),
            &self.label(),
            self.key.as_ref(),
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

    const SECRET: &str = "sk-proj-test-9c8b7a6f5e4d";

    fn openai(server: &TestServer) -> OpenAiCompatible {
        OpenAiCompatible::new(
            "openai",
            &format!("{}/v1", server.base_url()),
            "gpt-test",
            Some(Key::for_tests(SECRET)),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    fn request() -> Request {
        Request {
            system: "You review strategies.".into(),
            turns: vec![
                Turn::user("Review this."),
                Turn::assistant("Send it."),
                Turn::user("fn x() {}"),
            ],
            max_tokens: 256,
            temperature: Some(0.7),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(1),
            max_wait: Duration::from_millis(50),
        }
    }

    fn guarded_openai(server: &TestServer) -> impl Provider {
        let budget = Arc::new(Budget::new("10".parse().expect("decimal"), 1_000_000));
        let price = Price {
            input_usd_per_mtok: "2.5".parse().expect("decimal"),
            output_usd_per_mtok: "10".parse().expect("decimal"),
        };
        guarded(openai(server), budget, price, fast())
    }

    const GOOD: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1764547200,"model":"gpt-test-2026","choices":[{"index":0,"message":{"role":"assistant","content":"Looks fine.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":4,"total_tokens":35},"system_fingerprint":"fp_1"}"#;

    fn error(status: u16, kind: &str, code: &str, message: &str) -> Scripted {
        Scripted::json(
            status,
            &format!(
                r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":"{code}"}}}}"#
            ),
        )
    }

    #[test]
    fn a_good_reply_is_read_and_the_request_is_the_documented_one() {
        let server = TestServer::start(vec![Scripted::json(200, GOOD)]);
        let reply = openai(&server).complete(&request()).expect("reply");
        assert_eq!(reply.text, "Looks fine.");
        assert_eq!(reply.model, "gpt-test-2026");
        assert_eq!(reply.stop_reason.as_deref(), Some("stop"));
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 31,
                output_tokens: 4,
                reported: true
            }
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {SECRET}"))
        );
        let body: Value = serde_json::from_str(&seen[0].body).expect("json body");
        assert_eq!(
            body,
            json!({
                "model": "gpt-test",
                "max_tokens": 256,
                "temperature": 0.7,
                "messages": [
                    {"role": "system", "content": "You review strategies."},
                    {"role": "user", "content": "Review this."},
                    {"role": "assistant", "content": "Send it."},
                    {"role": "user", "content": "fn x() {}"}
                ]
            })
        );
    }

    #[test]
    fn a_local_server_gets_no_authorization_and_may_omit_usage() {
        let server = TestServer::start(vec![Scripted::json(
            200,
            r#"{"model":"llama3","choices":[{"message":{"role":"assistant","content":"abcdefg"},"finish_reason":"length"}]}"#,
        )]);
        let ollama = OpenAiCompatible::new(
            "ollama",
            &format!("{}/v1/", server.base_url()),
            "llama3",
            None,
            Duration::from_secs(5),
        )
        .expect("client");
        assert_eq!(ollama.label(), "ollama:llama3");
        let reply = ollama.complete(&request()).expect("reply");
        assert_eq!(reply.text, "abcdefg");
        assert!(!reply.usage.reported);
        assert_eq!(reply.usage.output_tokens, 3);
        assert_eq!(reply.stop_reason.as_deref(), Some("length"));
        let seen = server.requests();
        assert!(seen[0].header("authorization").is_none());
        assert_eq!(seen[0].path, "/v1/chat/completions");
    }

    #[test]
    fn malformed_replies_are_malformed_and_not_retried() {
        for body in [
            "<html>gateway</html>",
            r#"{"choices":[]}"#,
            r#"{"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"tool_calls"}]}"#,
        ] {
            let server =
                TestServer::start(vec![Scripted::json(200, body), Scripted::json(200, GOOD)]);
            let error = guarded_openai(&server)
                .complete(&request())
                .expect_err("malformed");
            assert!(matches!(error, ProviderError::Malformed { .. }), "{error}");
            assert_eq!(server.requests().len(), 1);
        }
    }

    #[test]
    fn insufficient_quota_is_final_after_one_request() {
        let server = TestServer::start(vec![
            error(
                429,
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            )
            .header("retry-after", "0"),
            Scripted::json(200, GOOD),
        ]);
        let error = guarded_openai(&server)
            .complete(&request())
            .expect_err("no quota");
        assert!(
            matches!(error, ProviderError::SpendLimit { status: 429, .. }),
            "{error}"
        );
        assert_eq!(server.requests().len(), 1, "never retried");
        assert!(
            error
                .to_string()
                .contains("You exceeded your current quota"),
            "{error}"
        );
    }

    #[test]
    fn spend_limit_codes_are_final_too() {
        for code in [
            "credit_balance_exhausted",
            "organization_spend_limit_exceeded",
            "project_spend_limit_exceeded",
        ] {
            let server = TestServer::start(vec![
                error(429, "insufficient_quota", code, "limit"),
                Scripted::json(200, GOOD),
            ]);
            let error = guarded_openai(&server)
                .complete(&request())
                .expect_err("final");
            assert!(
                matches!(error, ProviderError::SpendLimit { .. }),
                "{code}: {error}"
            );
            assert_eq!(server.requests().len(), 1, "{code}");
        }
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried_honouring_retry_after_ms() {
        let server = TestServer::start(vec![
            error(
                429,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            )
            .header("retry-after-ms", "30")
            .header("retry-after", "100"),
            error(500, "server_error", "", "The server had an error"),
            error(502, "server_error", "", "Bad gateway"),
            error(503, "server_error", "", "Slow down"),
            Scripted::json(200, GOOD),
        ]);
        let provider = {
            let budget = Arc::new(Budget::new("10".parse().expect("decimal"), 1_000_000));
            let policy = RetryPolicy {
                max_retries: 4,
                base_backoff: Duration::ZERO,
                max_wait: Duration::from_secs(5),
            };
            guarded(openai(&server), budget, Price::FREE, policy)
        };
        let started = std::time::Instant::now();
        let reply = provider.complete(&request()).expect("fifth try");
        let took = started.elapsed();
        assert_eq!(reply.text, "Looks fine.");
        assert_eq!(server.requests().len(), 5);
        assert!(
            took >= Duration::from_millis(30),
            "waited retry-after-ms: {took:?}"
        );
        assert!(
            took < Duration::from_secs(4),
            "not retry-after's 100 s (capped to 5 s): {took:?}"
        );
    }

    #[test]
    fn a_bad_key_is_final_and_an_echoed_key_is_scrubbed() {
        let server = TestServer::start(vec![
            error(
                401,
                "invalid_request_error",
                "invalid_api_key",
                &format!(
                    "Incorrect API key provided: {SECRET}. You can find your API key at https://platform.openai.com/account/api-keys."
                ),
            ),
            Scripted::json(200, GOOD),
        ]);
        let error = guarded_openai(&server)
            .complete(&request())
            .expect_err("bad key");
        assert!(
            matches!(error, ProviderError::Auth { status: 401, .. }),
            "{error}"
        );
        assert_eq!(server.requests().len(), 1);
        let message = error.to_string();
        assert!(!message.contains(SECRET), "{message}");
        assert!(
            message.contains("Incorrect API key provided: [redacted]"),
            "{message}"
        );
    }

    #[test]
    fn a_key_echoed_in_a_non_json_body_is_scrubbed() {
        let server = TestServer::start(vec![Scripted::json(
            400,
            &format!(
                "bad header Authorization: Bearer {SECRET}\n{}",
                "y".repeat(2000)
            ),
        )]);
        let error = openai(&server).complete(&request()).expect_err("refused");
        let message = error.to_string();
        assert!(
            matches!(error, ProviderError::Rejected { status: 400, .. }),
            "{message}"
        );
        assert!(!message.contains(SECRET), "{message}");
        assert!(message.chars().count() < 400, "{message}");
    }
}
