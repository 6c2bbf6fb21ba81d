//! `POST /schedules/{id}/pause` and `/resume`: stop and restart a deployment's schedule
//! without touching the worker's code. A pause survives the deployment's next registration;
//! instants passed while paused are never caught up.

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::store::Backend;
use axum::Extension;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use chrono::Utc;
use flowkit_wire::api::schedules::Schedule;
use flowkit_wire::schedule::Schedule as Compiled;
use uuid::Uuid;

/// The `{id}` of a schedule route.
pub struct ScheduleId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ScheduleId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Uuid::parse_str(&raw).map(ScheduleId).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                flowkit_wire::api::error::ErrorCode::InvalidId,
                format!("`{raw}` is not a schedule id (a UUID, see GET /deployments/{{flow}}/{{name}}): {e}"),
            )
        })
    }
}

/// Pauses a schedule: it creates no run until resumed. Pausing a paused schedule changes
/// nothing.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/pause",
    tag = "deployments",
    params(("id" = Uuid, Path, description = "The schedule's id (`schedules` of the deployment)")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Ignored: send `{}`. The JSON content type is what the server requires (415 without it, so that no web page of another site can change a schedule); the body itself may be empty"),
    responses(
        (status = 200, description = "The schedule, paused (`active`: false)", body = Schedule),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (the body may be empty); a web page of another site could send that", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ScheduleId(id): ScheduleId,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(&state, &caller, id, true).await
}

/// Resumes a schedule from now: the instants passed while it was paused get no run.
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{id}/resume",
    tag = "deployments",
    params(("id" = Uuid, Path, description = "The schedule's id (`schedules` of the deployment)")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Ignored: send `{}`. The JSON content type is what the server requires (415 without it, so that no web page of another site can change a schedule); the body itself may be empty"),
    responses(
        (status = 200, description = "The schedule, active again, with its next instant", body = Schedule),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (the body may be empty); a web page of another site could send that", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ScheduleId(id): ScheduleId,
) -> Result<Json<Schedule>, ApiError> {
    set_paused(&state, &caller, id, false).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    pause: bool,
) -> Result<Json<Schedule>, ApiError> {
    let store = state.store();
    let missing = || ApiError::not_found(format!("no schedule {id}"));
    let (flow, name, schedule) = store.schedule(id).await?.ok_or_else(missing)?;
    caller.check_deployment(Scope::Trigger, &format!("{flow}/{name}"))?;
    // Already as asked: nothing changes (a resume would otherwise skip the instants since).
    if schedule.active != pause {
        return Ok(Json(schedule));
    }
    let now = Utc::now();
    let next_at = if pause {
        None
    } else {
        Compiled::compile(&schedule.spec)
            .ok()
            .and_then(|compiled| compiled.next_after(now))
    };
    let paused_at = pause.then_some(now);
    if !store
        .set_schedule_paused(id, paused_at, now, next_at)
        .await?
    {
        return Err(missing());
    }
    let (_, _, schedule) = store.schedule(id).await?.ok_or_else(missing)?;
    Ok(Json(schedule))
}
