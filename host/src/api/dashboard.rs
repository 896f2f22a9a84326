//! The web dashboard `keel run` serves at `/`: one page, its script and
//! its style sheet, built into the binary (no CDN, no network at
//! runtime). The page holds no data: it asks for the control token once
//! (kept in the browser's local storage for this origin) and reads
//! everything through API v1 and the event stream, as any script would.
//!
//! The headers keep the page to itself: scripts and styles from this
//! origin only (no inline script), no framing (the kill button cannot be
//! clicked through someone else's page), no referrer, no sniffing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/style.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard's file at `path`, if it is one.
pub fn page(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (PAGE, "text/html; charset=utf-8"),
        "/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script() {
        for asset in [PAGE, SCRIPT, STYLE] {
            // SVG's namespace is a name, not a place it loads from.
            let asset = asset.replace("http://www.w3.org/2000/svg", "");
            for outside in ["http://", "https://", "//cdn", "@import"] {
                assert!(!asset.contains(outside), "{outside} in an asset");
            }
        }
        assert!(
            !PAGE.contains("<script>"),
            "inline script is refused by the policy"
        );
        assert!(PAGE.contains(r#"<script src="/app.js""#));
        let served = page("/").expect("test");
        assert_eq!(served.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(page("/secrets").is_none());
    }
}
