//! Extractors that answer bad input with [`ApiError`] (the JSON error shape) instead of
//! axum's plain-text rejections, and the parsers of query parameters, each naming the
//! parameter at fault.

use crate::error::ApiError;
use crate::store::PageRequest;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use flowkit_wire::api::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// `Json<T>` whose rejections are [`ApiError`]s: 400 for malformed JSON, 422 for the wrong
/// shape (naming the field), 415 without a JSON content type, 413 over the body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// `Query<T>` whose rejections are 400 `invalid_parameter`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The `{id}` of a run path: 400 `invalid_id` when it is not a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Uuid::parse_str(&raw).map(RunId).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                flowkit_wire::api::error::ErrorCode::InvalidId,
                format!("`{raw}` is not a run id (a UUID): {e}"),
            )
        })
    }
}

/// An optional parameter with empty values treated as absent (`?tag=` filters nothing, as a
/// form with an empty field sends it).
pub fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// A typed parameter (a time, a number, a UUID, a level): absent is `None`, but given empty
/// (`?created_before=`) is a 400, as the OpenAPI document's schema says, never silently
/// "absent". Free-text filters keep [`non_empty`].
pub fn given(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(ApiError::invalid_parameter(
            name,
            "is empty: give a value, or leave the parameter out",
        )),
        other => Ok(other),
    }
}

/// Parses an RFC 3339 instant. A `+` of the offset arrives as a space when the client did not
/// percent-encode it; that one is put back.
pub fn parse_time(name: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = given(name, value)? else {
        return Ok(None);
    };
    let text = raw.trim().replace(' ', "+");
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| {
            ApiError::invalid_parameter(
                name,
                format!(
                    "expected an RFC 3339 time such as 2026-11-28T12:00:00Z, got {raw:?} ({e})"
                ),
            )
        })
}

/// Parses an integer in `min..=max`.
pub fn parse_int(
    name: &str,
    value: Option<String>,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(raw) = given(name, value)? else {
        return Ok(None);
    };
    match raw.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid_parameter(
            name,
            format!("expected an integer between {min} and {max}, got {raw:?}"),
        )),
    }
}

/// Parses a UUID.
pub fn parse_uuid(name: &str, value: Option<String>) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = given(name, value)? else {
        return Ok(None);
    };
    Uuid::parse_str(raw.trim()).map(Some).map_err(|e| {
        ApiError::invalid_parameter(name, format!("expected a UUID, got {raw:?} ({e})"))
    })
}

/// `limit` (1..=500, default 50) and `cursor` as a page request.
pub fn page_request(
    limit: Option<String>,
    cursor: Option<String>,
) -> Result<PageRequest, ApiError> {
    page_request_or(limit, cursor, DEFAULT_PAGE_SIZE)
}

/// [`page_request`] with another page size when `limit` is absent.
pub fn page_request_or(
    limit: Option<String>,
    cursor: Option<String>,
    default_limit: u32,
) -> Result<PageRequest, ApiError> {
    let limit = parse_int("limit", limit, 1, MAX_PAGE_SIZE)?.unwrap_or(default_limit);
    let cursor = non_empty(cursor);
    if cursor
        .as_ref()
        .is_some_and(|c| c.len() > 1024 || c.contains('\0'))
    {
        return Err(ApiError::invalid_parameter(
            "cursor",
            "too long: pass back a `next_cursor` unchanged",
        ));
    }
    Ok(PageRequest { limit, cursor })
}

/// A free-text parameter, at most `max` characters.
pub fn bounded_text(
    name: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match non_empty(value) {
        Some(v) if v.chars().count() > max => Err(ApiError::invalid_parameter(
            name,
            format!("longer than {max} characters"),
        )),
        Some(v) if v.contains('\0') => Err(ApiError::invalid_parameter(
            name,
            "contains a NUL character",
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(
            parse_int("limit", Some("10".into()), 1, 500).ok(),
            Some(Some(10))
        );
        assert_eq!(parse_int("limit", None, 1, 500).ok(), Some(None));
        let err = parse_int("limit", Some("0".into()), 1, 500).expect_err("0");
        assert!(err.message().contains("`limit`"), "{}", err.message());
        assert!(parse_int("limit", Some("-1".into()), 1, 500).is_err());
        assert!(parse_time("since", Some("2026-01-01T00:00:00 01:00".into())).is_ok());
        assert!(parse_time("since", Some("yesterday".into())).is_err());
        assert!(parse_uuid("run_id", Some("nope".into())).is_err());
        for empty in ["", " "] {
            let err = parse_time("until", Some(empty.into())).expect_err("empty time");
            assert!(
                err.message().contains("`until`: is empty"),
                "{}",
                err.message()
            );
            assert!(parse_int("limit", Some(empty.into()), 1, 500).is_err());
            assert!(parse_uuid("run_id", Some(empty.into())).is_err());
        }
        assert_eq!(
            page_request(None, Some(String::new()))
                .ok()
                .map(|p| p.cursor),
            Some(None)
        );
    }
}
