//! `POST /api/reporter-drops`: a reporter says it had to drop events (its spool was full), so
//! the dashboard can warn that some runs are incomplete; `GET /api/reporter-drops` reads the
//! counts back (`read` scope): the total, and the workers that dropped most recently (at most
//! [`MAX_REPORTER_DROPS_LISTED`]).

use crate::AppState;
use crate::api::extract::ApiJson;
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::store::Backend;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowkit_wire::api::ingest::{
    MAX_NAME_CHARS, MAX_REPORTER_DROPS_LISTED, ReporterDrops, ReporterDropsSummary,
};

/// Records dropped events.
#[utoipa::path(
    post,
    path = "/api/v1/reporter-drops",
    tag = "events",
    request_body = ReporterDrops,
    responses(
        (status = 202, description = "Recorded"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `report` scope", body = ErrorBody),
        (status = 422, description = "Wrong shape; the message names the field", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn record(
    State(state): State<AppState>,
    ApiJson(drops): ApiJson<ReporterDrops>,
) -> Result<StatusCode, ApiError> {
    let chars = drops.worker.chars().count();
    if drops.dropped > i64::MAX as u64 {
        return Err(ApiError::invalid_body(format!(
            "field `dropped`: at most {}, got {}",
            i64::MAX,
            drops.dropped
        )));
    }
    if chars == 0 || chars > MAX_NAME_CHARS || drops.worker.contains('\0') {
        return Err(ApiError::invalid_body(format!(
            "field `worker`: expected 1 to {} characters without NUL, got {chars}",
            MAX_NAME_CHARS
        )));
    }
    state
        .store()
        .record_reporter_drops(&drops.worker, drops.dropped)
        .await?;
    state.metrics().reporter_drops(drops.dropped);
    Ok(StatusCode::ACCEPTED)
}

/// Lists what reporters dropped.
#[utoipa::path(
    get,
    path = "/api/v1/reporter-drops",
    tag = "events",
    responses(
        (status = 200, description = "Events dropped by reporters in all, and the 100 workers that reported drops most recently, newest first", body = ReporterDropsSummary),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ReporterDropsSummary>, ApiError> {
    Ok(Json(
        state
            .store()
            .reporter_drops(MAX_REPORTER_DROPS_LISTED)
            .await?,
    ))
}
