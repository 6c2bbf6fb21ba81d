//! The one error type of the HTTP API, and how every failure becomes the same JSON shape:
//!
//! ```json
//! {"error": {"code": "invalid_parameter", "message": "parameter `limit`: must be between 1 and 500, got 0"}}
//! ```
//!
//! Handlers return [`ApiError`]; axum's own rejections (bad JSON, bad query strings, bad
//! paths, bodies over the limit) are mapped into it by the extractors of [`crate::api::extract`];
//! and [`json_errors`] rewrites whatever error response still slips through without a JSON
//! body (a 405 from the router, a panic caught by the panic layer) into the same shape.

use crate::store::StoreError;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use flowkit_wire::api::deployments::FieldError;
pub use flowkit_wire::api::error::{ErrorBody, ErrorCode, ErrorDetail};
use uuid::Uuid;

/// An error answered to a client: an HTTP status, a stable machine-readable `code` and a
/// message for humans.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Every error found, each at its JSON pointer (`invalid_parameters`, `invalid_body`).
    details: Vec<FieldError>,
    /// The run the error is about (`idempotency_key_reused`).
    run_id: Option<Uuid>,
    /// The state of that run (`run_not_completed`, `conflict` of a run action).
    state: Option<flowkit_wire::state::StateType>,
    /// Seconds to wait before trying again, sent as `Retry-After` (503s).
    retry_after: Option<u64>,
    /// Answered before the request's body was read whole: sent with `Connection: close`, so
    /// the client does not reuse a connection the server is about to close.
    close_connection: bool,
    /// The cause of an internal error: logged, never sent.
    source: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            run_id: None,
            state: None,
            retry_after: None,
            close_connection: false,
            source: None,
        }
    }

    /// The same error telling the client to wait `seconds` before trying again
    /// (`Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The same error sent with `Connection: close`: for answers given before the request's
    /// body was read whole. Without it the client may send its next request on the connection
    /// the server closes after the answer (it cannot tell where the unread body ends) and get
    /// a connection error instead of an answer.
    pub fn closing_connection(mut self) -> ApiError {
        self.close_connection = true;
        self
    }

    /// 503 `unavailable` with `Retry-After: seconds`: the server cannot take the request now
    /// (overloaded, its database unreachable, shutting down); the same request may succeed
    /// later.
    pub fn unavailable(message: impl Into<String>, seconds: u64) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
        .with_retry_after(seconds)
    }

    /// The same error listing `details`, each at its JSON pointer.
    pub fn with_details(mut self, details: Vec<FieldError>) -> ApiError {
        self.details = details;
        self
    }

    /// The same error about the run `run_id`.
    pub fn with_run_id(mut self, run_id: Uuid) -> ApiError {
        self.run_id = Some(run_id);
        self
    }

    /// The same error about a run in `state`.
    pub fn with_state(mut self, state: flowkit_wire::state::StateType) -> ApiError {
        self.state = Some(state);
        self
    }

    /// 422 `invalid_body` listing every field at fault; the message sums them up.
    pub fn invalid_fields(details: Vec<FieldError>) -> ApiError {
        let message = match details.as_slice() {
            [one] => format!("`{}`: {}", one.pointer, one.message),
            many => format!(
                "{} fields are invalid: see `details`, one entry per field",
                many.len()
            ),
        };
        ApiError::invalid_body(message).with_details(details)
    }

    /// 400 `invalid_parameter`: a query parameter that does not parse or is out of range.
    pub fn invalid_parameter(name: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
            format!("parameter `{name}`: {problem}"),
        )
    }

    /// 400 `invalid_json`: the body is not JSON at all.
    pub fn invalid_json(problem: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("malformed JSON: {problem}"),
        )
    }

    /// 422 `invalid_body`: well-formed JSON of the wrong shape.
    pub fn invalid_body(problem: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            problem,
        )
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }

    /// 401 `unauthorized`: no API key, or one the server does not know.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403 `forbidden`: a valid API key without the scope the route needs.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 413 with `code` (`payload_too_large` or `too_many_events`).
    pub fn too_large(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// 500 `internal`: the cause is logged when the response is built, the client only
    /// learns that something went wrong on our side.
    pub fn internal(source: impl Into<anyhow::Error>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Internal,
            message: "internal error".to_string(),
            details: Vec::new(),
            run_id: None,
            state: None,
            retry_after: None,
            close_connection: false,
            source: Some(source.into()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The errors listed at their JSON pointers.
    pub fn details(&self) -> &[FieldError] {
        &self.details
    }

    /// The `{ "error": { ... } }` body of this error.
    pub fn body(&self) -> ErrorBody {
        let mut error = ErrorDetail::new(self.code, self.message.clone());
        error.details.clone_from(&self.details);
        error.run_id = self.run_id;
        error.state = self.state;
        ErrorBody { error }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = format!("{source:#}"), "internal error");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// What every route that reads or writes the store may answer besides its own statuses (see
/// `From<StoreError> for ApiError`): listed in each such route's OpenAPI `responses`.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only its OpenAPI description is used")]
pub(crate) enum StoreFailures {
    /// `internal`: the database failed in a way the client cannot fix; the server logged it.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `unavailable` (with `Retry-After`): the server is shutting down, or its database is
    /// unreachable (an outage, or no pooled connection free within a few seconds); retry, on
    /// this server or another replica.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
    Unavailable(ErrorBody),
}

/// `Retry-After` of a 503 caused by the database being unreachable.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::InvalidCursor(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCursor,
                format!("parameter `cursor`: {why} (pass back a `next_cursor` unchanged)"),
            ),
            StoreError::Closed => ApiError::unavailable("the server is shutting down", 1),
            StoreError::OverBudget(budget) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::FilterTooBroad,
                format!(
                    "this `search`/`tag` filter scans too many runs: it was stopped after {} ms. \
                     Narrow it: add a `state`, a `flow_name`, a `deployment` or a \
                     `created_after`",
                    budget.as_millis()
                ),
            ),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database unavailable");
                ApiError::unavailable(
                    "the database is unavailable (unreachable, or no connection free in time): \
                     retry later",
                    UNAVAILABLE_RETRY_AFTER_SECS,
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let text = rejection.body_text();
        match &rejection {
            JsonRejection::JsonDataError(_) => ApiError::invalid_body(text),
            JsonRejection::JsonSyntaxError(_) => ApiError::invalid_json(text),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected `Content-Type: application/json`",
            ),
            _ => from_status(rejection.status(), text),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidParameter,
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        let status = rejection.status();
        if status.is_server_error() {
            return ApiError::internal(anyhow::anyhow!(rejection.body_text()));
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidId,
            rejection.body_text(),
        )
    }
}

/// An error for a bare status, e.g. a body-limit rejection (413) or anything the router
/// answers by itself.
pub fn from_status(status: StatusCode, message: impl Into<String>) -> ApiError {
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::TooManyRequests,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => {
            return ApiError::new(status, ErrorCode::Internal, "internal error");
        }
        _ => ErrorCode::BadRequest,
    };
    let mut message = message.into();
    if message.trim().is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string();
    }
    ApiError::new(status, code, message)
}

/// Answers unknown routes: 404 in the JSON shape.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// Answers a known route with a method it does not support: 405 in the JSON shape.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{method} is not supported on {}", uri.path()),
    )
}

/// Middleware, outermost: an error response (4xx/5xx) whose body is not JSON gets the JSON
/// error shape, so clients never have to handle a second format. Error bodies built by
/// [`ApiError`] pass untouched.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Plain-text bodies of axum's and tower-http's rejections are short and say what went
    // wrong; keep them as the message. Server errors say nothing beyond "internal error".
    let message = if status.is_server_error() {
        String::new()
    } else {
        match axum::body::to_bytes(body, 4096).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
            Err(_) => String::new(),
        }
    };
    let error = from_status(status, message);
    let json = match serde_json::to_vec(&error.body()) {
        Ok(json) => json,
        Err(_) => b"{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}".to_vec(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(json))
}

/// The panic layer's answer: the panic is logged, the client gets the plain 500.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic payload)");
    tracing::error!(panic = what, "handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error",
    )
    .into_response()
}
