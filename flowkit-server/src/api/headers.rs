//! Security headers on every response (API, dashboard, errors): the pages may not be framed by
//! another site (`X-Frame-Options: DENY`, and `frame-ancestors 'none'` added to whatever
//! `Content-Security-Policy` the response carries, for browsers that only read CSP), and no
//! browser may guess a content type other than the declared one (`X-Content-Type-Options:
//! nosniff`), so a JSON answer echoing user text is never run as HTML or script.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The CSP directive forbidding framing.
const FRAME_ANCESTORS: &str = "frame-ancestors 'none'";

/// Middleware, outermost: adds the headers to every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    add(response.headers_mut());
    response
}

/// Adds the headers; an existing CSP keeps its directives and gains `frame-ancestors 'none'`
/// unless it already says something about framing.
pub fn add(headers: &mut HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let csp = match headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
    {
        Some(existing) if existing.to_ascii_lowercase().contains("frame-ancestors") => return,
        Some(existing) if !existing.trim().is_empty() => HeaderValue::from_str(&format!(
            "{}; {FRAME_ANCESTORS}",
            existing.trim().trim_end_matches(';')
        ))
        .unwrap_or(HeaderValue::from_static(FRAME_ANCESTORS)),
        _ => HeaderValue::from_static(FRAME_ANCESTORS),
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_with_an_existing_policy() {
        let mut headers = HeaderMap::new();
        add(&mut headers);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], FRAME_ANCESTORS);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self';"),
        );
        add(&mut headers);
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; frame-ancestors 'none'"
        );

        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'self'"),
        );
        add(&mut headers);
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'self'"
        );
    }
}
