//! What both clients share: the blocking HTTP client, one POST of JSON with
//! its answer read under a size cap, the `retry-after` headers, and the
//! error body every provider wraps in `{"error": {…}}`.

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::header::HeaderMap;

use super::ProviderError;
use super::key::{Key, scrub};
use crate::venues::body::{BodyError, read_body};

/// The longest server text kept in an error message.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// The largest reply read: a long completion is well under a megabyte.
const MAX_REPLY_BYTES: u64 = 16 << 20;

/// The blocking client and how long a call may take: its timeout bounds
/// the wait for the answer's headers and each read of its body, and the
/// body is read whole within it again (a reply that drips in is cut off).
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: Client,
    timeout: Duration,
}

/// A client that never follows redirects: a redirect would carry the key's
/// header (`x-api-key` is not one reqwest strips) to wherever it points.
pub(super) fn client(label: &str, timeout: Duration) -> Result<Http, ProviderError> {
    let client = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Setup {
            provider: label.to_owned(),
            message: scrub(&e.to_string(), None, MAX_MESSAGE_CHARS),
        })?;
    Ok(Http { client, timeout })
}

/// A server's answer, success or not.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<Duration>,
}

/// POSTs `body` as JSON to `url`. Only a failure to get an answer at all
/// is an error here; what the status means is the caller's to say.
pub(super) fn post_json(
    http: &Http,
    url: &str,
    headers: HeaderMap,
    body: &serde_json::Value,
    label: &str,
    key: Option<&Key>,
) -> Result<Answer, ProviderError> {
    let transport = |what: &str, e: &dyn std::fmt::Display| ProviderError::Transport {
        provider: label.to_owned(),
        message: scrub(&format!("{what}: {e}"), key, MAX_MESSAGE_CHARS),
    };
    let response = (http.client)
        .post(url)
        .headers(headers)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .map_err(|e| transport(describe(&e), &e))?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = match read_body(response, MAX_REPLY_BYTES, Instant::now(), http.timeout) {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge(_)) => {
            return Err(ProviderError::Malformed {
                provider: label.to_owned(),
                message: format!("{e}; not read"),
            });
        }
        Err(e) => return Err(transport("reading the reply failed", &e)),
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        retry_after,
    })
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

/// How long the server asks us to wait: `retry-after-ms` (milliseconds,
/// which OpenAI's SDKs read first) or `retry-after` (seconds). An HTTP date
/// in `retry-after` is not read; backoff applies then.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").map(Duration::from_secs_f64)
}

/// The `error` object both APIs send with a failure status:
/// Anthropic `{"type":"error","error":{"type","message","details"?}}`,
/// OpenAI `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Default)]
pub(super) struct ErrorBody {
    pub kind: Option<String>,
    pub code: Option<String>,
    /// Anthropic's `error.details.error_code` (e.g. `enforced_spend_limit_reached`).
    pub detail_code: Option<String>,
    /// `kind: message`, or the raw body when it is not the documented shape;
    /// scrubbed and cut.
    pub summary: String,
}

impl ErrorBody {
    pub fn parse(body: &str, key: Option<&Key>) -> ErrorBody {
        let value: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error = value.as_ref().and_then(|v| v.get("error"));
        let text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        // vLLM puts the fields at the top level (`{"object":"error",
        // "message",…}`); some servers send `{"error": "text"}`.
        let error = match (error, &value) {
            (Some(serde_json::Value::String(m)), _) => {
                return ErrorBody {
                    summary: scrub(m, key, MAX_MESSAGE_CHARS),
                    ..ErrorBody::default()
                };
            }
            (None, Some(top)) if top.get("message").is_some() => Some(top),
            (error, _) => error,
        };
        let Some(error) = error.filter(|e| e.is_object()) else {
            let raw = if body.trim().is_empty() {
                "(empty body)"
            } else {
                body
            };
            return ErrorBody {
                summary: scrub(raw, key, MAX_MESSAGE_CHARS),
                ..ErrorBody::default()
            };
        };
        let kind = text(error.get("type"));
        let message = text(error.get("message")).unwrap_or_default();
        let summary = match &kind {
            Some(kind) => format!("{kind}: {message}"),
            None => message,
        };
        ErrorBody {
            code: text(error.get("code")),
            detail_code: text(error.get("details").and_then(|d| d.get("error_code"))),
            kind,
            summary: scrub(&summary, key, MAX_MESSAGE_CHARS),
        }
    }

    /// Whether any of type, code or detail code is one of `names`.
    pub fn names_any(&self, names: &[&str]) -> bool {
        [&self.kind, &self.code, &self.detail_code]
            .into_iter()
            .flatten()
            .any(|n| names.contains(&n.as_str()))
    }
}

/// Reads a success body as JSON, or says it is not.
pub(super) fn json_reply(body: &str, label: &str) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_str(body).map_err(|e| ProviderError::Malformed {
        provider: label.to_owned(),
        message: format!("not JSON ({e})"),
    })
}

/// A temperature as the JSON number it was written as (`0.2`, not the
/// `0.20000000298023224` an `f32` widens to).
pub(super) fn temperature(t: f32) -> serde_json::Value {
    t.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// What an error `answer` means by its status alone, once a provider has
/// ruled out its own ways of saying "spend limit": a refused key, a rate
/// limit, an outage (each with its `retry-after`), or a refused request.
pub(super) fn failure_by_status(
    provider: String,
    answer: &Answer,
    message: String,
) -> ProviderError {
    let status = answer.status;
    match status {
        401 | 403 => ProviderError::Auth {
            provider,
            status,
            message,
        },
        429 => ProviderError::RateLimited {
            provider,
            status,
            message,
            retry_after: answer.retry_after,
        },
        408 | 500.. => ProviderError::Unavailable {
            provider,
            status,
            message,
            retry_after: answer.retry_after,
        },
        _ => ProviderError::Rejected {
            provider,
            status,
            message,
        },
    }
}

pub(super) fn malformed(label: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        provider: label.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            HeaderValue::from_static("Fri, 31 Dec 1999 23:59:59 GMT"),
        );
        assert_eq!(retry_after(&dated), None);
        let mut negative = HeaderMap::new();
        negative.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&negative), None);
    }

    #[test]
    fn error_bodies_of_both_apis_are_read() {
        let anthropic = ErrorBody::parse(
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down","details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_1"}"#,
            None,
        );
        assert_eq!(anthropic.kind.as_deref(), Some("rate_limit_error"));
        assert_eq!(
            anthropic.detail_code.as_deref(),
            Some("enforced_spend_limit_reached")
        );
        assert_eq!(anthropic.summary, "rate_limit_error: slow down");
        let openai = ErrorBody::parse(
            r#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            None,
        );
        assert!(openai.names_any(&["insufficient_quota"]));
        let html = ErrorBody::parse("<html>\n<b>bad gateway</b></html>", None);
        assert_eq!(html.summary, "<html> <b>bad gateway</b></html>");
        assert_eq!(ErrorBody::parse("", None).summary, "(empty body)");
        let vllm = ErrorBody::parse(
            r#"{"object":"error","message":"maximum context length is 4096 tokens","type":"BadRequestError","param":null,"code":400}"#,
            None,
        );
        assert_eq!(
            vllm.summary,
            "BadRequestError: maximum context length is 4096 tokens"
        );
        assert_eq!(vllm.code.as_deref(), Some("400"));
        let plain = ErrorBody::parse(r#"{"error":"model 'llama9' not found"}"#, None);
        assert_eq!(plain.summary, "model 'llama9' not found");
    }
}
