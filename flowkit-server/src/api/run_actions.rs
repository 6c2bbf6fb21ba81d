//! What other teams do to a flow run besides reading it (scope `trigger`, the result `read`):
//! cancel it (one or in bulk), retry it from its failure, and read its result, waiting for it
//! if asked. The bodies are [`flowkit_wire::api::run_actions`]'s.
//!
//! Waiting (`?wait=N` here, `Prefer: wait=N` on a trigger) is bounded: at most
//! [`MAX_WAIT_SECONDS`] seconds, and at most
//! [`MAX_WAITING_RESULTS`](crate::wake::MAX_WAITING_RESULTS) requests wait at once on a server;
//! a request beyond that bound answers at once with the run as it stands. A wait is woken when
//! the run ends on this server, and looks again every
//! [`RESULT_POLL`](crate::wake::RESULT_POLL) for runs ended elsewhere (another replica, or the
//! reporter's events).

use crate::AppState;
use crate::api::extract::{ApiJson, ApiQuery, RunId};
use crate::api::flow_runs::flow_run;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody, ErrorCode, FieldError, StoreFailures};
use crate::store::{Backend, BulkCancelFilter, RunAction};
use crate::wake::RESULT_POLL;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::ingest::MAX_MESSAGE_BYTES;
use flowkit_wire::api::run_actions::{
    BulkCancel, BulkCancelled, CancelRequest, MAX_BULK_CANCEL, MAX_INLINE_RESULT_BYTES,
    MAX_WAIT_SECONDS,
};
use flowkit_wire::api::runs::Run;
use flowkit_wire::state::StateType;
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;
use utoipa::IntoParams;
use uuid::Uuid;

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

fn conflict(id: Uuid, state: StateType, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        format!("run {id} is {}: {what}", state.as_str()),
    )
    .with_run_id(id)
    .with_state(state)
}

fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    if reason.as_ref().is_some_and(|r| r.len() > MAX_MESSAGE_BYTES) {
        return Err(ApiError::invalid_fields(vec![field(
            "/reason",
            format!("at most {MAX_MESSAGE_BYTES} bytes"),
        )]));
    }
    Ok(())
}

/// Cancels a flow run.
#[utoipa::path(
    post,
    path = "/api/v1/flow-runs/{id}/cancel",
    tag = "flow-runs",
    params(("id" = Uuid, Path, description = "The flow run's id")),
    request_body(content = CancelRequest, content_type = "application/json", description = "`{}`, or `{\"reason\": …}` shown as the state's message. The JSON content type is what the server requires (415 without it, so that no web page of another site can cancel); the body itself may be empty"),
    responses(
        (status = 200, description = "The run: `Cancelled` (it had not started), or `Cancelling` while its worker stops it (also when it already was)", body = Run),
        (status = 400, description = "Malformed JSON, or `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 409, description = "`conflict`: the run already ended; `state` says how", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (an empty body may keep it); a web page of another site could send that", body = ErrorBody),
        (status = 422, description = "`invalid_body`: an unknown field or a reason over 64 KiB", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RunId(id): RunId,
    body: Bytes,
) -> Result<Json<Run>, ApiError> {
    caller.check_run_action(&state, id).await?;
    let request: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        // `null` is no reason, as no body is.
        serde_json::from_slice::<Option<CancelRequest>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                if e.is_syntax() || e.is_eof() {
                    ApiError::invalid_json(e)
                } else {
                    ApiError::invalid_body(e.to_string())
                }
            })?
    };
    check_reason(&request.reason)?;
    match state.store().cancel(id, request.reason).await? {
        RunAction::Done(_) | RunAction::Unchanged(_) => {
            state.wakeups().run_ended();
            Ok(Json(flow_run(&state, id).await?))
        }
        RunAction::Conflict(now) => Err(conflict(id, now, "a run that ended cannot be cancelled")),
        RunAction::NotFound => Err(ApiError::not_found(format!("no flow run {id}"))),
    }
}

/// Cancels every non-final flow run matching a filter, oldest first, a page at a time.
#[utoipa::path(
    post,
    path = "/api/v1/flow-runs/cancel",
    tag = "flow-runs",
    request_body(content = BulkCancel, content_type = "application/json"),
    responses(
        (status = 200, description = "What was cancelled; `more` says to call again", body = BulkCancelled),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON (required on every state-changing route: a web page of another site cannot send it)", body = ErrorBody),
        (status = 422, description = "`invalid_body`: no filter, a final state among `states`, `limit` outside 1..=1000", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn bulk_cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<BulkCancel>,
) -> Result<Json<BulkCancelled>, ApiError> {
    if caller.trigger_limit.is_some() {
        // A key limited to some deployments cancels runs of one of them at a time.
        caller.check_deployment(
            Scope::Trigger,
            request.deployment.as_deref().unwrap_or("(any)"),
        )?;
    }
    let mut problems = Vec::new();
    if request.deployment.is_none()
        && request.flow_name.is_none()
        && request.states.is_empty()
        && request.tag.is_none()
        && request.created_before.is_none()
    {
        problems.push(field(
            "",
            "give at least one filter (deployment, flow_name, states, tag, created_before)",
        ));
    }
    let limit = request.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_BULK_CANCEL {
        problems.push(field(
            "/limit",
            format!("from 1 to {MAX_BULK_CANCEL}, got {limit}"),
        ));
    }
    for (i, s) in request.states.iter().enumerate() {
        if s.is_final() || *s == StateType::Unknown {
            problems.push(field(
                &format!("/states/{i}"),
                format!("{} is not a state a run can be cancelled from", s.as_str()),
            ));
        }
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_MESSAGE_BYTES)
    {
        problems.push(field(
            "/reason",
            format!("at most {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    let states = if request.states.is_empty() {
        StateType::ALL
            .into_iter()
            .filter(|s| !s.is_final() && *s != StateType::Cancelling)
            .collect()
    } else {
        request.states
    };
    let filter = BulkCancelFilter {
        deployment: request.deployment,
        flow_name: request.flow_name,
        states,
        tag: request.tag,
        created_before: request.created_before,
        reason: request.reason,
        limit,
    };
    let answer = state.store().bulk_cancel(filter).await?;
    state.wakeups().run_ended();
    Ok(Json(answer))
}

/// Retries a deployed flow run from its failure: the same run, as its next attempt.
#[utoipa::path(
    post,
    path = "/api/v1/flow-runs/{id}/retry",
    tag = "flow-runs",
    params(("id" = Uuid, Path, description = "The flow run's id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Ignored: send `{}`. The JSON content type is what the server requires (415 without it, so that no web page of another site can retry); the body itself may be empty"),
    responses(
        (status = 200, description = "The run, `Scheduled` as attempt n+1 of the version it ran", body = Run),
        (status = 400, description = "`id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`); `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (the body may be empty); a web page of another site could send that", body = ErrorBody),
        (status = 409, description = "`conflict`: not a deployed run that ended `Failed`, `Crashed`, `Cancelled` or `TimedOut`; `state` says what it is", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RunId(id): RunId,
) -> Result<Json<Run>, ApiError> {
    caller.check_run_action(&state, id).await?;
    match state.store().retry(id).await? {
        RunAction::Done(_) | RunAction::Unchanged(_) => {
            state.wakeups().runs_changed();
            Ok(Json(flow_run(&state, id).await?))
        }
        RunAction::Conflict(now) => Err(conflict(
            id,
            now,
            "only a deployed run that ended Failed, Crashed, Cancelled or TimedOut can be retried",
        )),
        RunAction::NotFound => Err(ApiError::not_found(format!("no flow run {id}"))),
    }
}

/// `?wait=N` of a result read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds for the run to end (0 to 60; default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 60)]
    pub wait: Option<String>,
}

/// Waits up to `seconds` for a flow run to be final; the run as it then stands.
pub(crate) async fn wait_for_final(
    state: &AppState,
    id: Uuid,
    seconds: u32,
) -> Result<Run, ApiError> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds.min(MAX_WAIT_SECONDS)));
    let mut shutdown = state.shutdown_signal();
    let mut slot = None;
    loop {
        let woken = state.wakeups().ended().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let run = flow_run(state, id).await?;
        let now = Instant::now();
        if run.state.is_final() || now >= deadline || *shutdown.borrow() {
            return Ok(run);
        }
        if slot.is_none() {
            slot = state.wakeups().result_slot();
            if slot.is_none() {
                return Ok(run);
            }
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(RESULT_POLL.min(deadline - now)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The stored output of a `Completed` run as JSON, if any and at most `max` bytes.
pub(crate) async fn inline_result(
    state: &AppState,
    id: Uuid,
    max: usize,
) -> Result<Option<serde_json::Value>, ApiError> {
    match state.store().run_result(id).await? {
        Some(bytes) if bytes.len() <= max => Ok(Some(
            serde_json::from_slice(&bytes).map_err(ApiError::internal)?,
        )),
        _ => Ok(None),
    }
}

/// A run's result: the output JSON of a `Completed` run.
#[utoipa::path(
    get,
    path = "/api/v1/flow-runs/{id}/result",
    tag = "flow-runs",
    params(("id" = Uuid, Path, description = "The flow run's id"), WaitQuery),
    responses(
        (status = 200, description = "The flow's output, as JSON (`null` for a run completed without a stored output)", body = Object),
        (status = 202, description = "The run has not ended (after the wait): the run as it stands; `Location` is this URL", body = Run,
            headers(("Location" = String, description = "`/api/v1/flow-runs/{id}/result`"))),
        (status = 400, description = "`id` is not a UUID, or `wait` is not a whole number of seconds from 0 to 60", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 409, description = "`run_not_completed`: the run ended without a result; `state` says how, `message` why", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn result(
    State(state): State<AppState>,
    RunId(id): RunId,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let wait = match query.wait.as_deref().map(str::trim) {
        None => 0,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if n <= MAX_WAIT_SECONDS => n,
            _ => {
                return Err(ApiError::invalid_parameter(
                    "wait",
                    format!("a whole number of seconds from 0 to {MAX_WAIT_SECONDS}, got {raw:?}"),
                ));
            }
        },
    };
    let run = wait_for_final(&state, id, wait).await?;
    if !run.state.is_final() {
        return Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("{PREFIX}/flow-runs/{id}/result"))],
            Json(run),
        )
            .into_response());
    }
    if matches!(run.state, StateType::Completed | StateType::Cached) {
        let body = state
            .store()
            .run_result(id)
            .await?
            .unwrap_or_else(|| b"null".to_vec());
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::RunNotCompleted,
        run.state_message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("the run ended {} without a result", run.state.as_str())),
    )
    .with_run_id(id)
    .with_state(run.state))
}

/// The largest result a waiting trigger shows inline.
pub(crate) const INLINE: usize = MAX_INLINE_RESULT_BYTES;
