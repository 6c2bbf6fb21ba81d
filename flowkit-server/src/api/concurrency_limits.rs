//! `/concurrency-limits`: tag concurrency limits of deployed runs (`admin` to set and delete,
//! `read` to look). A claim leases a run carrying a limited tag only while fewer than the
//! limit's runs carrying it are leased, across every deployment, worker and replica; how the
//! claim counts and locks is [`crate::store::tag_limits`]'s.

use crate::AppState;
use crate::error::{ApiError, ErrorBody, StoreFailures};
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{SubsecRound, Utc};
use flowkit_wire::api::concurrency_limits::{
    ConcurrencyLimit, ConcurrencyLimits, MAX_LIMITS, SetLimit, check_limit, check_tag,
};
use flowkit_wire::api::deployments::FieldError;
use flowkit_wire::api::error::ErrorCode;

use super::extract::ApiJson;

/// The `{tag}` of a limit route (percent-decoded): 400 `invalid_parameter` when blank or too
/// long.
pub struct Tag(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tag {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(tag) = Path::<String>::from_request_parts(parts, state).await?;
        check_tag(&tag).map_err(|why| ApiError::invalid_parameter("tag", &why))?;
        Ok(Tag(tag))
    }
}

fn no_limit(tag: &str) -> ApiError {
    ApiError::not_found(format!(
        "tag `{tag}` has no concurrency limit (see GET /api/v1/concurrency-limits)"
    ))
}

/// Sets a tag's limit, creating it or replacing the one it has. Runs leased already keep
/// their slots; a lower limit only holds back the next claims.
#[utoipa::path(
    put,
    path = "/api/v1/concurrency-limits/{tag}",
    tag = "concurrency-limits",
    params(("tag" = String, Path, description = "The tag (percent-encoded), as runs carry it: 1 to 1000 characters, not blank")),
    request_body(content = SetLimit, content_type = "application/json"),
    responses(
        (status = 200, description = "The limit as set, with the runs carrying the tag leased now", body = ConcurrencyLimit),
        (status = 400, description = "`invalid_json`: malformed JSON; `invalid_parameter`: a blank or too long tag", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope; `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 409, description = "`conflict`: the server already keeps the most limits it keeps (1000) and this tag has none", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: `limit` missing, not a whole number from 1 to 1000000, or an unknown field; in `details` at its JSON pointer", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn set(
    State(state): State<AppState>,
    Tag(tag): Tag,
    ApiJson(body): ApiJson<SetLimit>,
) -> Result<Json<ConcurrencyLimit>, ApiError> {
    if let Err(why) = check_limit(body.limit) {
        return Err(ApiError::invalid_fields(vec![FieldError {
            pointer: "/limit".to_string(),
            message: why,
        }]));
    }
    // As stored (microseconds): the answer is what a later GET shows.
    let now = Utc::now().trunc_subsecs(6);
    if !state
        .store()
        .set_concurrency_limit(&tag, body.limit, now)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "the server keeps at most {MAX_LIMITS} concurrency limits: delete one first \
                 (DELETE /api/v1/concurrency-limits/{{tag}})"
            ),
        ));
    }
    let limit = state.store().concurrency_limit(&tag).await?;
    // Deleted by another request in between: the answer still says what was set.
    Ok(Json(limit.unwrap_or(ConcurrencyLimit {
        tag,
        limit: body.limit,
        leased: 0,
        updated: now,
    })))
}

/// Every limit, by tag, each with the runs carrying its tag leased now: at most 1000 (the
/// most the server keeps), in one answer.
#[utoipa::path(
    get,
    path = "/api/v1/concurrency-limits",
    tag = "concurrency-limits",
    responses(
        (status = 200, description = "Every limit (at most 1000), by tag", body = ConcurrencyLimits),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ConcurrencyLimits>, ApiError> {
    let items = state.store().concurrency_limits().await?;
    Ok(Json(ConcurrencyLimits { items }))
}

/// One tag's limit, with the runs carrying the tag leased now.
#[utoipa::path(
    get,
    path = "/api/v1/concurrency-limits/{tag}",
    tag = "concurrency-limits",
    params(("tag" = String, Path, description = "The tag (percent-encoded)")),
    responses(
        (status = 200, description = "The limit", body = ConcurrencyLimit),
        (status = 400, description = "`invalid_parameter`: a blank or too long tag", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "The tag has no limit", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Tag(tag): Tag,
) -> Result<Json<ConcurrencyLimit>, ApiError> {
    let limit = state.store().concurrency_limit(&tag).await?;
    limit.map(Json).ok_or_else(|| no_limit(&tag))
}

/// Lifts a tag's limit: its runs are claimed as their deployments' limits allow.
#[utoipa::path(
    delete,
    path = "/api/v1/concurrency-limits/{tag}",
    tag = "concurrency-limits",
    params(("tag" = String, Path, description = "The tag (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_parameter`: a blank or too long tag", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "The tag has no limit", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn delete(State(state): State<AppState>, Tag(tag): Tag) -> Result<StatusCode, ApiError> {
    if state.store().delete_concurrency_limit(&tag).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_limit(&tag))
    }
}
