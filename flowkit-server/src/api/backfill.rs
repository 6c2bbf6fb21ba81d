//! `POST /deployments/{flow}/{name}/backfill`: the runs of a past range of a deployment's
//! schedules, created now under the scheduler's permanent keys (see [`crate::backfill`]).

use crate::AppState;
use crate::api::deployments::DeploymentPath;
use crate::api::extract::ApiJson;
use crate::auth::{Caller, Scope};
use crate::backfill;
use crate::error::{ApiError, ErrorBody, FieldError, StoreFailures};
use crate::scheduler::{SlotRun, create_slot_runs, slot_run, target};
use crate::store::{Backend, ScheduleSlot};
use axum::http::HeaderMap;
use axum::{Extension, Json, extract::State};
use chrono::{Duration, SecondsFormat, Utc};
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::schedules::{
    BackfillRequest, Backfilled, MAX_BACKFILL_RUNS, Schedule, ScheduleSpec,
};
use flowkit_wire::schedule::Schedule as Compiled;
use uuid::Uuid;

/// The largest `max_parallel`.
const MAX_PARALLEL: u32 = 10_000;

fn field(pointer: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_fields(vec![FieldError {
        pointer: pointer.to_string(),
        message: message.into(),
    }])
}

/// Creates the runs of a past range of a deployment's schedules.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{flow}/{name}/backfill",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
    ),
    request_body(content = BackfillRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The runs of the range were created, except for the instants that had one already (`existing`)", body = Backfilled),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: `to` before `from` or after now, more than 1000 instants in the range, a `max_parallel` of 0, a `schedule` of another deployment, no schedule to backfill, or parameters the version refuses; `details` names the field", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn backfill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: DeploymentPath,
    headers: HeaderMap,
    ApiJson(request): ApiJson<BackfillRequest>,
) -> Result<Json<Backfilled>, ApiError> {
    caller.check_deployment(Scope::Trigger, &path.key())?;
    let now = Utc::now();
    if request.to < request.from {
        return Err(field("/to", "`to` is before `from`"));
    }
    if request.to > now {
        return Err(field(
            "/to",
            format!(
                "`to` is after now ({}): the instants to come are the scheduler's; give a past \
                 range, e.g. \"to\": \"{}\"",
                now.to_rfc3339_opts(SecondsFormat::Secs, true),
                (now - Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        ));
    }
    if let Some(n) = request.max_parallel
        && !(1..=MAX_PARALLEL).contains(&n)
    {
        return Err(field(
            "/max_parallel",
            format!("1 to {MAX_PARALLEL} runs at once (or leave it out for no limit)"),
        ));
    }
    let store = state.store();
    if store
        .deployment_version(&path.flow, &path.name, None)
        .await?
        .is_none()
    {
        return Err(path.not_found());
    }
    let schedules: Vec<Schedule> = match request.schedule {
        Some(id) => match store.schedule(id).await? {
            Some((flow, name, schedule)) if flow == path.flow && name == path.name => {
                vec![schedule]
            }
            _ => {
                return Err(field(
                    "/schedule",
                    format!(
                        "{} has no schedule {id}: see GET {PREFIX}/deployments/{}/schedules",
                        path.key(),
                        path.key()
                    ),
                ));
            }
        },
        None => store.schedules_of(&path.flow, &path.name).await?,
    };
    if schedules.is_empty() {
        return Err(field(
            "/schedule",
            format!(
                "{} has no schedule to backfill: declare one in code or create one (POST \
                 {PREFIX}/deployments/{}/schedules)",
                path.key(),
                path.key()
            ),
        ));
    }
    // Every instant first, so that a range too long creates nothing.
    let mut slots: Vec<(&Schedule, Vec<chrono::DateTime<Utc>>)> = Vec::new();
    let mut total = 0;
    for schedule in &schedules {
        let compiled = Compiled::compile(&schedule.spec).map_err(|e| {
            ApiError::internal(anyhow::anyhow!("stored schedule {}: {e}", schedule.id))
        })?;
        let (instants, more) = compiled.between(
            request.from - Duration::nanoseconds(1),
            request.to,
            MAX_BACKFILL_RUNS - total,
        );
        total += instants.len();
        if more {
            return Err(field(
                "/from",
                format!(
                    "more than {MAX_BACKFILL_RUNS} instants from `from` to `to`: a backfill \
                     creates at most {MAX_BACKFILL_RUNS} runs; split the range"
                ),
            ));
        }
        slots.push((schedule, instants));
    }
    let id = Uuid::now_v7();
    let created_by = format!("{}:{}", backfill::TAG, caller.created_by(&headers));
    let tags = vec![
        backfill::TAG.to_string(),
        backfill::tag(id, request.max_parallel),
    ];
    let mut outcome = Backfilled {
        id,
        instants: total as u64,
        created: 0,
        existing: 0,
    };
    // Every run of the backfill in one transaction.
    let mut runs = Vec::with_capacity(total);
    for (schedule, instants) in slots {
        if instants.is_empty() {
            continue;
        }
        let Some(target) = target(
            &state,
            &path.flow,
            &path.name,
            schedule.id,
            &schedule.spec.parameters,
        )
        .await?
        else {
            return Err(refused(&path, schedule.id, &schedule.spec));
        };
        for instant in instants {
            let origin = SlotRun {
                created_by: created_by.clone(),
                message: format!(
                    "created by backfill {id} of schedule {} for {}",
                    schedule.id,
                    instant.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                tags: tags.clone(),
                slot: ScheduleSlot {
                    schedule_id: schedule.id,
                    instant,
                    skipped: 0,
                    late_at: None,
                    expires_at: None,
                },
            };
            runs.push(slot_run(&schedule.spec, &target, origin));
        }
    }
    let created = create_slot_runs(&state, runs, Vec::new()).await?;
    outcome.created = created.created;
    outcome.existing = created.existing;
    Ok(Json(outcome))
}

fn refused(path: &DeploymentPath, id: Uuid, spec: &ScheduleSpec) -> ApiError {
    field(
        "/schedule",
        format!(
            "the parameters of schedule {id} ({}) do not fit the version of {} that would run \
             them: fix the schedule, or register a version that accepts them",
            serde_json::Value::Object(spec.parameters.clone()),
            path.key()
        ),
    )
}
