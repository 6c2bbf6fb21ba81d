//! Schedules created over the API (`source` = `api`): `POST` and `GET
//! /deployments/{flow}/{name}/schedules`, `GET` and `DELETE /schedules/{id}`.
//!
//! A schedule created here is checked like one declared in code (timing, time zone, interval,
//! lateness, and its parameters over the deployment's defaults against the newest version's
//! schema: 422 at the field, with a valid example), is kept across the deployment's
//! registrations (which replace only the schedules declared in code), and lives until deleted.
//! A deployment has at most [`MAX_SCHEDULES_PER_DEPLOYMENT`] of them.

use crate::AppState;
use crate::api::deployments::{DeploymentPath, check_schedule, validator_of};
use crate::api::extract::ApiJson;
use crate::api::schedules::ScheduleId;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody, ErrorCode, StoreFailures};
use crate::store::Backend;
use crate::store::schedules::{Inserted, ScheduleRow};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, extract::State};
use chrono::Utc;
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::schedules::{
    MAX_SCHEDULES_PER_DEPLOYMENT, Schedule, ScheduleSource, ScheduleSpec,
};
use flowkit_wire::schedule::Schedule as Compiled;
use uuid::Uuid;

/// Creates a schedule of a deployment over the API.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{flow}/{name}/schedules",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
    ),
    request_body(content = ScheduleSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (`source`: `api`), active; `Location` is the schedule", body = Schedule,
            headers(("Location" = String, description = "`/api/v1/schedules/{id}`"))),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "`conflict`: the deployment already has the most schedules created over the API (32): delete one first", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: a bad cron expression, time zone, interval or lateness, or parameters the newest version's schema refuses, every one in `details` at its JSON pointer with a valid example", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: DeploymentPath,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> Result<Response, ApiError> {
    caller.check_deployment(Scope::Trigger, &path.key())?;
    let store = state.store();
    let version = store
        .deployment_version(&path.flow, &path.name, None)
        .await?
        .ok_or_else(|| path.not_found())?;
    let validator = validator_of(&state, &version)?;
    let problems = check_schedule("", &spec, &version.default_parameters, Some(&validator));
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    let compiled = Compiled::compile(&spec).map_err(|e| ApiError::invalid_body(e.message))?;
    let id = Uuid::now_v7();
    let row = ScheduleRow {
        id,
        next_at: compiled.next_after(Utc::now()),
        spec,
    };
    match store
        .insert_api_schedule(&path.flow, &path.name, row)
        .await?
    {
        Inserted::Created => {}
        Inserted::Full(n) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!(
                    "{} has {n} schedules created over the API, the most a deployment may \
                     have ({MAX_SCHEDULES_PER_DEPLOYMENT}): delete one first (DELETE \
                     {PREFIX}/schedules/{{id}})",
                    path.key()
                ),
            ));
        }
    }
    let (_, _, schedule) = store
        .schedule(id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("schedule {id} stored but not found")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("{PREFIX}/schedules/{id}"))],
        Json(schedule),
    )
        .into_response())
}

/// A deployment's schedules: those declared in code first, then those created over the API,
/// each in creation order; at most [`MAX_SCHEDULES_PER_DEPLOYMENT`] of each (so at most 64).
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{flow}/{name}/schedules",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
    ),
    responses(
        (status = 200, description = "The schedules (at most 32 declared in code and 32 created over the API)", body = Vec<Schedule>),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    path: DeploymentPath,
) -> Result<Json<Vec<Schedule>>, ApiError> {
    let store = state.store();
    if store
        .deployment_version(&path.flow, &path.name, None)
        .await?
        .is_none()
    {
        return Err(path.not_found());
    }
    Ok(Json(store.schedules_of(&path.flow, &path.name).await?))
}

/// One schedule.
#[utoipa::path(
    get,
    path = "/api/v1/schedules/{id}",
    tag = "deployments",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    ScheduleId(id): ScheduleId,
) -> Result<Json<Schedule>, ApiError> {
    let (_, _, schedule) = state
        .store()
        .schedule(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))?;
    Ok(Json(schedule))
}

/// Deletes a schedule created over the API. The runs it created stay, and so do their keys.
#[utoipa::path(
    delete,
    path = "/api/v1/schedules/{id}",
    tag = "deployments",
    params(("id" = Uuid, Path, description = "The schedule's id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Ignored: the body may be empty. The JSON content type is what the server requires (415 without it, so that no web page of another site can delete a schedule)"),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such schedule", body = ErrorBody),
        (status = 409, description = "`conflict`: the schedule is declared in code; the deployment's next registration replaces it (remove it from the code, or pause it)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (the body may be empty)", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ScheduleId(id): ScheduleId,
) -> Result<StatusCode, ApiError> {
    let store = state.store();
    let missing = || ApiError::not_found(format!("no schedule {id}"));
    let (flow, name, schedule) = store.schedule(id).await?.ok_or_else(missing)?;
    caller.check_deployment(Scope::Trigger, &format!("{flow}/{name}"))?;
    if schedule.source == ScheduleSource::Code {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "schedule {id} comes from the code of {flow}/{name}: the deployment's next \
                 registration replaces it; remove it from the code, or pause it (POST \
                 {PREFIX}/schedules/{id}/pause)"
            ),
        ));
    }
    if !store.delete_api_schedule(id).await? {
        return Err(missing());
    }
    Ok(StatusCode::NO_CONTENT)
}
