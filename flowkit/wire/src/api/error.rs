//! The body of every error response:
//!
//! ```json
//! {"error": {"code": "invalid_parameter", "message": "parameter `limit`: must be between 1 and 500, got 0"}}
//! ```
//!
//! ```
//! use flowkit_wire::api::error::{ErrorBody, ErrorCode};
//! let body: ErrorBody = serde_json::from_str(
//!     r#"{"error":{"code":"invalid_cursor","message":"parameter `cursor`: …"}}"#,
//! ).unwrap();
//! assert_eq!(body.error.code, ErrorCode::InvalidCursor);
//! assert_eq!(ErrorCode::InvalidCursor.as_str(), "invalid_cursor");
//! ```

use crate::api::deployments::FieldError;
use crate::state::StateType;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable code to match on and a message that names the offending input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable and machine-readable: match on this.
    pub code: ErrorCode,
    /// For humans; names the parameter or field at fault and what to send instead.
    pub message: String,
    /// Every error found, each at its JSON pointer (`invalid_parameters`, `invalid_body`):
    /// at most 100, then one last entry at the top that counts the rest. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
    /// The run the error is about (`idempotency_key_reused`: the run the key created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// The state of that run (`run_not_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateType>,
}

impl ErrorDetail {
    /// An error with a code and a message, and nothing else.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorDetail {
        ErrorDetail {
            code,
            message: message.into(),
            details: Vec::new(),
            run_id: None,
            state: None,
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The stable code of an error. A code this version does not know (from a newer server)
/// reads as [`ErrorCode::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body is not JSON at all.
    InvalidJson,
    /// 422: well-formed JSON of the wrong shape; the message names the field.
    InvalidBody,
    /// 400: a query parameter does not parse or is out of range; the message names it.
    InvalidParameter,
    /// 400: an id in the path is not a UUID.
    InvalidId,
    /// 400: a cursor that is not a `next_cursor` this server gave.
    InvalidCursor,
    /// In `rejected` of an ingestion answer: one event of the batch is invalid.
    InvalidEvent,
    /// 400: the request cannot be read.
    BadRequest,
    /// 401: no API key, or one the server does not know.
    Unauthorized,
    /// 403: a valid API key without the scope the route needs.
    Forbidden,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route does not support this method.
    MethodNotAllowed,
    /// 408: the request took too long to arrive.
    Timeout,
    /// 409: the request conflicts with what exists.
    Conflict,
    /// 422: parameters of a trigger that the deployment's schema refuses; `details` lists
    /// every error at its JSON pointer.
    InvalidParameters,
    /// 409: an idempotency key already used for this deployment with another body; `run_id`
    /// is the run it created.
    IdempotencyKeyReused,
    /// 409: another function already registered this `flow`/`name`.
    DeploymentConflict,
    /// 409: the fencing token sent is not the run's current lease: the lease expired and the
    /// server decided the run's fate, or another worker holds it now. Stop the run.
    StaleLease,
    /// 409: the run ended without a result (`Failed`, `Crashed`, `Cancelled`, `TimedOut`);
    /// `state` says which and `message` why.
    RunNotCompleted,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 413: a batch with more events than the server accepts.
    TooManyEvents,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: too many requests; try again later.
    TooManyRequests,
    /// 503: the server is shutting down or overloaded; try again.
    Unavailable,
    /// 500: something went wrong on the server's side (it logged the details).
    Internal,
    /// 403: a server without API keys refuses a `Host` that is neither a loopback name, its
    /// bind address nor an `--allowed-host` (a web page trying DNS rebinding).
    ForbiddenHost,
    /// 403: a state-changing request from a web page of another origin (its `Origin` does not
    /// match its `Host`) without a JSON body.
    ForbiddenOrigin,
    /// A `search` or `tag` filter took longer than the server's time budget for a listing:
    /// narrow it (add a state, a flow name, a `created_after`).
    FilterTooBroad,
    /// A code this version does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `"not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidParameters => "invalid_parameters",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::DeploymentConflict => "deployment_conflict",
            ErrorCode::StaleLease => "stale_lease",
            ErrorCode::RunNotCompleted => "run_not_completed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ForbiddenHost => "forbidden_host",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::FilterTooBroad => "filter_too_broad",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_wire_name() {
        let all = [
            ErrorCode::InvalidJson,
            ErrorCode::InvalidBody,
            ErrorCode::InvalidParameter,
            ErrorCode::InvalidId,
            ErrorCode::InvalidCursor,
            ErrorCode::InvalidEvent,
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Timeout,
            ErrorCode::Conflict,
            ErrorCode::InvalidParameters,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::DeploymentConflict,
            ErrorCode::StaleLease,
            ErrorCode::RunNotCompleted,
            ErrorCode::PayloadTooLarge,
            ErrorCode::TooManyEvents,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::TooManyRequests,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::ForbiddenHost,
            ErrorCode::ForbiddenOrigin,
            ErrorCode::FilterTooBroad,
        ];
        for code in all {
            let json = serde_json::to_value(code).expect("serialize");
            assert_eq!(json, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(json).ok(), Some(code));
        }
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"quota_exceeded","message":"m"}}"#)
                .expect("a newer server's code parses");
        assert_eq!(newer.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn optional_parts_are_absent_when_empty() {
        let plain = ErrorBody {
            error: ErrorDetail::new(ErrorCode::NotFound, "no such run"),
        };
        let json = serde_json::to_value(&plain).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not_found", "message": "no such run"}})
        );
        let mut detail = ErrorDetail::new(ErrorCode::InvalidParameters, "2 parameters are invalid");
        detail.details.push(FieldError {
            pointer: "/epochs".into(),
            message: "-1 is less than the minimum of 0".into(),
        });
        let json = serde_json::to_value(&detail).expect("serialize");
        assert_eq!(json["details"][0]["pointer"], "/epochs");
        let back: ErrorDetail = serde_json::from_value(json).expect("parse");
        assert_eq!(back, detail);
    }
}
