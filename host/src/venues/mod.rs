//! Implementations of the kernel's `Venue`: the durable paper exchange
//! here; the backtest's in-memory one is `keel_backtester::kernel::SimulatedVenue`;
//! `kraken` is being built (signature and nonces so far). `history` is a
//! venue's public trade history, which `keel data download` reads.

pub mod body;
pub mod history;
pub mod kraken;
pub mod paper;

pub use paper::PaperVenue;

/// A service's base URL as given (`--base-url`): what messages may show
/// of it — scheme, host, port and path, without a user, a password, a
/// query or a fragment, which may hold a secret — or why it is not an
/// http(s) URL (the text itself is not repeated: it may be a secret).
pub fn base_url(text: &str) -> Result<String, String> {
    let mut url = reqwest::Url::parse(text).map_err(|e| format!("not an http(s) URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "not an http(s) URL (its scheme is {})",
            keel_model::shown::quoted(url.scheme())
        ));
    }
    // Setting these cannot fail on an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::base_url;

    #[test]
    fn a_base_url_is_shown_without_what_may_be_a_secret_and_refused_unless_http() {
        let shown = base_url("http://user:s3cret@127.0.0.1:9/api/?apikey=SECRET#frag");
        assert_eq!(shown.as_deref(), Ok("http://127.0.0.1:9/api"));
        assert_eq!(
            base_url("https://api.kraken.com").as_deref(),
            Ok("https://api.kraken.com")
        );
        for (bad, why) in [
            (
                "not a url",
                "not an http(s) URL (relative URL without a base)",
            ),
            (
                "user:s3cret@host",
                "not an http(s) URL (its scheme is \"user\")",
            ),
            ("ftp://x", "not an http(s) URL (its scheme is \"ftp\")"),
            (
                "file:///etc/passwd",
                "not an http(s) URL (its scheme is \"file\")",
            ),
            ("", "not an http(s) URL (relative URL without a base)"),
        ] {
            assert_eq!(base_url(bad), Err(why.to_owned()), "{bad}");
        }
    }
}
