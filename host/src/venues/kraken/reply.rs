//! Kraken's replies: every REST answer is `{"error": [...], "result": ...}`.
//! An error is either a definite refusal (nothing happened), a sign to slow
//! down, a nonce problem, or — after an order was sent — an unknown
//! outcome: the order may have been placed, and is reconciled by its
//! client order id before anything is sent again.

use serde::de::DeserializeOwned;

/// What a Kraken error means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The request was refused; nothing happened (`EOrder:Insufficient
    /// funds`, `EGeneral:Invalid arguments`, an unknown pair, …).
    Refused(String),
    /// `EAPI:Rate limit exceeded` (the call counter).
    RestRateLimit(String),
    /// `EOrder:Rate limit exceeded` (the matching engine's, per pair).
    OrderRateLimit(String),
    /// `EAPI:Invalid nonce`: nothing happened; the nonce store is behind
    /// another user of the key.
    Nonce(String),
    /// `EService:*`, `EGeneral:Internal error`, a 5xx, a timeout: the
    /// request may or may not have been carried out.
    Unknown(String),
    /// The key is refused (`EAPI:Invalid key`, `EAPI:Invalid signature`,
    /// `EGeneral:Permission denied`): nothing will work until it is fixed.
    Auth(String),
    /// The reply is not Kraken's shape.
    Malformed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, text) = match self {
            Failure::Refused(t) => ("refused", t),
            Failure::RestRateLimit(t) => ("API rate limit", t),
            Failure::OrderRateLimit(t) => ("order rate limit", t),
            Failure::Nonce(t) => ("nonce refused", t),
            Failure::Unknown(t) => ("outcome unknown", t),
            Failure::Auth(t) => ("key refused", t),
            Failure::Malformed(t) => ("malformed reply", t),
        };
        write!(f, "Kraken: {what}: {text}")
    }
}

/// Classifies Kraken's error strings (the first one decides).
pub fn classify(errors: &[String]) -> Failure {
    let text = errors.join("; ");
    let text = keel_model::shown::message(&text);
    let first = errors.first().map(String::as_str).unwrap_or_default();
    match first {
        e if e.starts_with("EAPI:Rate limit exceeded") => Failure::RestRateLimit(text),
        e if e.starts_with("EOrder:Rate limit exceeded") => Failure::OrderRateLimit(text),
        e if e.starts_with("EAPI:Invalid nonce") => Failure::Nonce(text),
        e if e.starts_with("EAPI:Invalid key")
            || e.starts_with("EAPI:Invalid signature")
            || e.starts_with("EGeneral:Permission denied") =>
        {
            Failure::Auth(text)
        }
        e if e.starts_with("EService:") || e.starts_with("EGeneral:Internal error") => {
            Failure::Unknown(text)
        }
        _ => Failure::Refused(text),
    }
}

#[derive(serde::Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    error: Vec<String>,
    result: Option<T>,
}

/// The `result` of a reply with HTTP `status` and `body`; a 5xx is an
/// unknown outcome, whatever its body.
pub fn parse<T: DeserializeOwned>(status: u16, body: &str) -> Result<T, Failure> {
    if status >= 500 {
        return Err(Failure::Unknown(format!("HTTP {status}")));
    }
    let envelope: Envelope<T> = serde_json::from_str(body).map_err(|e| {
        Failure::Malformed(format!(
            "HTTP {status}: {}",
            keel_model::shown::message(&e.to_string())
        ))
    })?;
    if !envelope.error.is_empty() {
        return Err(classify(&envelope.error));
    }
    envelope
        .result
        .ok_or_else(|| Failure::Malformed(format!("HTTP {status}: no result and no error")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_they_mean_for_the_order() {
        let cases = [
            ("EOrder:Insufficient funds", "refused"),
            ("EGeneral:Invalid arguments", "refused"),
            ("EAPI:Rate limit exceeded", "API rate limit"),
            ("EOrder:Rate limit exceeded", "order rate limit"),
            ("EAPI:Invalid nonce", "nonce refused"),
            ("EService:Unavailable", "outcome unknown"),
            ("EService:Busy", "outcome unknown"),
            ("EGeneral:Internal error", "outcome unknown"),
            ("EAPI:Invalid key", "key refused"),
        ];
        for (error, what) in cases {
            let f = classify(&[error.to_owned()]);
            assert_eq!(f.to_string(), format!("Kraken: {what}: {error}"), "{error}");
        }
    }

    #[test]
    fn replies_parse_to_their_result_or_a_failure() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Txid {
            txid: Vec<String>,
        }
        let ok: Txid = parse(
            200,
            r#"{"error":[],"result":{"txid":["OABC-1"],"descr":{}}}"#,
        )
        .expect("ok");
        assert_eq!(ok.txid, ["OABC-1"]);
        assert_eq!(
            parse::<Txid>(200, r#"{"error":["EOrder:Insufficient funds"]}"#),
            Err(Failure::Refused("EOrder:Insufficient funds".into()))
        );
        assert_eq!(
            parse::<Txid>(502, "<html>Bad gateway</html>"),
            Err(Failure::Unknown("HTTP 502".into()))
        );
        assert!(matches!(
            parse::<Txid>(200, "{not json"),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            parse::<Txid>(200, r#"{"error":[]}"#),
            Err(Failure::Malformed(_))
        ));
        // A hostile error text stays one line.
        let f = parse::<Txid>(200, "{\"error\":[\"EOrder:x\\nINJECTED\"]}").expect_err("error");
        assert_eq!(f.to_string().lines().count(), 1);
    }
}
