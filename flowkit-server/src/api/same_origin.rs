//! State-changing requests (every `POST`, `PUT`, `PATCH`, `DELETE` of the API: ingestion,
//! cancel, retry, trigger, bulk cancel, the workers' routes) must carry a JSON content type or
//! come from this server's own origin.
//!
//! A web page may send another site a "simple" cross-origin request without asking first: a
//! form post or a `fetch` with a body of type `text/plain`, `application/x-www-form-urlencoded`
//! or `multipart/form-data`, or with no body at all. It cannot read the answer, but on a server
//! without keys on loopback it could still cancel or retry runs. A JSON content type is not
//! "simple": the browser asks first (CORS preflight), and this server grants no cross-origin
//! request. So a state-changing request passes when it says `Content-Type: application/json`
//! (or any `…/json`, `…+json`), or when its `Origin` names the same host and port as its
//! `Host` (the dashboard's own page). Otherwise: 403 `forbidden_origin` when an `Origin` of
//! another site is given, 415 `unsupported_media_type` when there is none.
//!
//! Every flowkit client sends JSON: the reporter, the worker, the `Client` and CLI (an empty
//! body still carries the content type), the dashboard.

use crate::error::{ApiError, ErrorCode};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether the request's `Content-Type` is JSON (`application/json`, `…/json`, `…+json`), which
/// a browser never sends cross-origin without a preflight.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence.ends_with("/json") || essence.ends_with("+json")
        })
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as `host`.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalize = |authority: &str| {
        let authority = authority.trim().trim_end_matches('/').to_ascii_lowercase();
        match authority.strip_suffix(default_port) {
            Some(bare) => bare.to_string(),
            None => authority,
        }
    };
    !authority.contains('/') && normalize(authority) == normalize(host)
}

/// Middleware of the state-changing routes: see the module documentation.
pub async fn require_json_or_same_origin(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || is_json(request.headers())
    {
        return next.run(request).await;
    }
    let headers = request.headers();
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    let error = match (origin, host) {
        (Some(origin), Some(host)) if same_origin(&origin, &host) => {
            return next.run(request).await;
        }
        (Some(origin), _) => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::ForbiddenOrigin,
            format!(
                "a request from the web page of another site (`Origin: {}`) cannot change \
                 anything here without a JSON body: send `Content-Type: application/json`",
                origin.chars().take(100).collect::<String>()
            ),
        ),
        (None, _) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json` on a request that changes something \
             (an empty body may keep it); without it a web page of any site could send it",
        ),
    };
    error.closing_connection().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("text/plain; x=json", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:4200", "127.0.0.1:4200"));
        assert!(same_origin("http://LOCALHOST:4200", "localhost:4200"));
        assert!(same_origin(
            "http://flowkit.internal",
            "flowkit.internal:80"
        ));
        assert!(same_origin("https://flowkit.internal", "flowkit.internal"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:4200"));
        assert!(!same_origin("http://127.0.0.1:4201", "127.0.0.1:4200"));
        assert!(!same_origin("null", "127.0.0.1:4200"));
        assert!(!same_origin(
            "https://flowkit.internal",
            "flowkit.internal:80"
        ));
        assert!(!same_origin("http://a/b", "a"));
    }
}
