//! CORS for browsers (`--cors-origin`): tower-http's layer around the protocol
//! dispatch, answering preflights itself and exposing the gRPC, gRPC-Web and
//! Connect response headers browsers must be allowed to read. Off (no layer,
//! nothing on the request path) unless origins are given.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

/// Response headers a browser client reads (statuses, trailers-in-headers,
/// encodings, Connect's unary metadata is plain headers).
const EXPOSED: [&str; 6] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "connect-content-encoding",
    "content-encoding",
];

/// How long a browser may cache a preflight answer.
const MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// The layer for `origins` (`*` allows any); `None` when there are none.
pub(crate) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // The CLI checks origins as it parses them; library callers learn here.
        AllowOrigin::list(origins.iter().filter_map(|o| match parse_origin(o) {
            Ok(_) => HeaderValue::from_str(o).ok(),
            Err(e) => {
                tracing::warn!("CORS origin left out: {e}");
                None
            }
        }))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::list(EXPOSED.map(HeaderName::from_static)))
            .max_age(MAX_AGE),
    )
}

/// Checks one `--cors-origin` value: `*`, or `scheme://host[:port]` with no path.
pub(crate) fn parse_origin(s: &str) -> Result<String, String> {
    if s == "*" {
        return Ok(s.to_owned());
    }
    let (scheme, rest) =
        s.split_once("://").ok_or_else(|| format!("{s:?} is not an origin like https://app.example.com or *"))?;
    let host_ok = !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '*']);
    let scheme_ok = !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !host_ok || !scheme_ok || HeaderValue::from_str(s).is_err() {
        return Err(format!(
            "{s:?} is not an origin like https://app.example.com (scheme://host[:port], no path) or *"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_scheme_and_host_or_a_star() {
        for ok in ["*", "https://app.example.com", "http://localhost:3000"] {
            assert_eq!(parse_origin(ok).as_deref(), Ok(ok));
        }
        for bad in
            ["", "app.example.com", "https://", "https://a.com/path", "https://*.a.com", "://a", "https://a\u{7f}"]
        {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }
}
