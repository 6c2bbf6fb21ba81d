//! `/api/v1/workers` and the calls a worker makes under a lease (scope `worker`): claiming
//! runs (long-poll), heartbeats, finishing and releasing a run. The bodies and the lease rules
//! are [`flowkit_wire::api::workers`]'s; the store does the work in one transaction each (see
//! `store::leases`).
//!
//! A claim that finds nothing waits up to `wait_seconds` (at most 30), woken at once when a
//! run becomes claimable (see [`crate::wake`]); at most
//! [`MAX_WAITING_CLAIMS`](crate::wake::MAX_WAITING_CLAIMS) claims wait at once, and a claim
//! beyond that bound answers at once with no runs (the worker claims again).
//!
//! A result larger than [`MAX_RESULT_BYTES`] (up to the route's body limit, 1 MiB more) is not
//! stored: the run is stored `Failed`, saying so (as the wire contract says); a body beyond the
//! route's limit is 413.

use crate::AppState;
use crate::api::extract::{ApiJson, RunId};
use crate::api::flow_runs::flow_run;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody, ErrorCode, FieldError, StoreFailures};
use crate::store::{Backend, ClaimOrder, Finished, LeaseCall, WorkerSeen};
use crate::wake::CLAIM_POLL;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flowkit_wire::api::deployments::check_name;
use flowkit_wire::api::ingest::{MAX_MESSAGE_BYTES, MAX_NAME_CHARS};
use flowkit_wire::api::run_actions;
use flowkit_wire::api::runs::Run;
use flowkit_wire::api::workers::{
    ClaimRequest, ClaimResponse, FinishRequest, HeartbeatRequest, HeartbeatResponse,
    MAX_CLAIM_RUNS, MAX_CLAIM_WAIT_SECONDS, MAX_LEASES_PER_HEARTBEAT, MAX_RESULT_BYTES, MAX_SERVED,
    ReleaseRequest, Served,
};
use flowkit_wire::event::{EventBody, RunKind};
use flowkit_wire::state::StateType;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The body limit of `POST /flow-runs/{id}/finish`: the largest result and its event.
pub const FINISH_BODY_LIMIT: usize = MAX_RESULT_BYTES + 1024 * 1024;

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

/// A key limited to some deployments (`worker=FLOW/NAME`) may serve only those: 403 otherwise.
fn check_served(caller: &Caller, served: &[Served]) -> Result<(), ApiError> {
    for s in served {
        caller.check_deployment(Scope::Worker, &format!("{}/{}", s.flow, s.name))?;
    }
    Ok(())
}

/// Checks the worker's name and what it serves.
fn check_worker(name: &str, served: &[Served], found: &mut Vec<FieldError>) {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
        found.push(field(
            "/worker_name",
            format!("1 to {MAX_NAME_CHARS} characters, without NUL (`host:pid`)"),
        ));
    }
    if served.len() > MAX_SERVED {
        found.push(field(
            "/deployments",
            format!(
                "{} deployments; a worker serves at most {MAX_SERVED}",
                served.len()
            ),
        ));
        return;
    }
    for (i, s) in served.iter().enumerate() {
        if let Err(message) = check_name("flow", &s.flow) {
            found.push(field(&format!("/deployments/{i}/flow"), message));
        }
        if let Err(message) = check_name("deployment", &s.name) {
            found.push(field(&format!("/deployments/{i}/name"), message));
        }
        if s.version.trim().is_empty()
            || s.version.chars().count() > 1000
            || s.version.contains('\0')
        {
            found.push(field(
                &format!("/deployments/{i}/version"),
                "the version must be 1 to 1000 characters, without NUL",
            ));
        }
    }
}

/// A fencing token is at most `i64::MAX` (the OpenAPI `int64` of the document; the server
/// never issues a larger one): a larger one is a 422 at `pointer`.
fn check_token(pointer: &str, token: u64) -> Result<(), FieldError> {
    if token > i64::MAX as u64 {
        return Err(field(pointer, format!("at most {}, got {token}", i64::MAX)));
    }
    Ok(())
}

fn lease_seconds(state: &AppState) -> u32 {
    u32::try_from(state.settings().lease.as_secs()).unwrap_or(u32::MAX)
}

/// Claims runs to execute (long-poll).
#[utoipa::path(
    post,
    path = "/api/v1/workers/claim",
    tag = "workers",
    request_body(content = ClaimRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The runs now leased to the worker: none when the wait ended without one, or at once when too many claims wait already", body = ClaimResponse),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `worker` scope, or has it for other deployments only (`worker=FLOW/NAME`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: `max_runs` outside 1..=100, `wait_seconds` over 30, too many deployments, a bad name; every problem in `details`", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    // A key limited to some deployments (`worker=FLOW/NAME`) claims only those.
    check_served(&caller, &request.deployments)?;
    let mut problems = Vec::new();
    if request.max_runs == 0 || request.max_runs > MAX_CLAIM_RUNS {
        problems.push(field(
            "/max_runs",
            format!("from 1 to {MAX_CLAIM_RUNS}, got {}", request.max_runs),
        ));
    }
    if request.wait_seconds > MAX_CLAIM_WAIT_SECONDS {
        problems.push(field(
            "/wait_seconds",
            format!(
                "at most {MAX_CLAIM_WAIT_SECONDS}, got {}: claim again after an empty answer",
                request.wait_seconds
            ),
        ));
    }
    check_worker(&request.worker_name, &request.deployments, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    let order = ClaimOrder {
        worker: WorkerSeen {
            id: request.worker,
            name: request.worker_name,
            served: request.deployments,
        },
        max_runs: request.max_runs,
        lease: state.settings().lease,
    };
    let lease_seconds = lease_seconds(&state);
    let deadline = Instant::now() + Duration::from_secs(u64::from(request.wait_seconds));
    let mut shutdown = state.shutdown_signal();
    let mut slot = None;
    let mut first = true;
    loop {
        // Listening before looking: a run triggered in between still wakes this claim.
        let woken = state.wakeups().runs().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // The first look records the worker and claims; a woken (or polling) claim first reads
        // whether a run waits at all, so the claims a trigger wakes beside the one that takes
        // its run cost a read each, not a write.
        let look = first || state.store().claimable(&order.worker.served).await?;
        first = false;
        let runs = if look {
            state.store().claim(order.clone()).await?
        } else {
            Vec::new()
        };
        let now = Instant::now();
        if !runs.is_empty() || now >= deadline || *shutdown.borrow() {
            state.metrics().claimed(runs.len());
            return Ok(Json(ClaimResponse {
                runs,
                lease_seconds,
            }));
        }
        if slot.is_none() {
            slot = state.wakeups().claim_slot();
            if slot.is_none() {
                // Too many claims wait already: answer now; the worker asks again.
                return Ok(Json(ClaimResponse {
                    runs,
                    lease_seconds,
                }));
            }
            state.wakeups().listen(state.store());
        }
        let nap = CLAIM_POLL.min(deadline - now);
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A worker is alive: renews its leases, learns which runs to cancel and which it lost.
#[utoipa::path(
    post,
    path = "/api/v1/workers/heartbeat",
    tag = "workers",
    request_body(content = HeartbeatRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Leases renewed; runs to cancel; leases lost", body = HeartbeatResponse),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `worker` scope, or has it for other deployments only (`worker=FLOW/NAME`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: too many leases or deployments, a bad name", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    // A limited worker key is live only for its own deployments.
    check_served(&caller, &request.deployments)?;
    let mut problems = Vec::new();
    check_worker(&request.worker_name, &request.deployments, &mut problems);
    if request.leases.len() > MAX_LEASES_PER_HEARTBEAT {
        problems.push(field(
            "/leases",
            format!(
                "{} leases; at most {MAX_LEASES_PER_HEARTBEAT} per heartbeat",
                request.leases.len()
            ),
        ));
    }
    for (i, lease) in request.leases.iter().enumerate() {
        if let Err(problem) = check_token(&format!("/leases/{i}/token"), lease.token) {
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    let worker = WorkerSeen {
        id: request.worker,
        name: request.worker_name,
        served: request.deployments,
    };
    let leases = request.leases.iter().map(|l| (l.run_id, l.token)).collect();
    let outcome = state
        .store()
        .heartbeat(worker, leases, state.settings().lease)
        .await?;
    Ok(Json(HeartbeatResponse {
        lease_seconds: lease_seconds(&state),
        cancel: outcome.cancel,
        lost: outcome.lost,
    }))
}

/// 409 `stale_lease`.
fn stale(id: Uuid, token: u64, current: u64, held: bool, state: StateType) -> ApiError {
    let why = if !held {
        format!("no lease is held on it (it is {})", state.as_str())
    } else {
        format!("its current token is {current}")
    };
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::StaleLease,
        format!(
            "token {token} is not the current lease of run {id}: {why}; the server decided the \
             run's fate, stop it"
        ),
    )
    .with_run_id(id)
    .with_state(state)
}

/// A worker's run ended: stores its final state and result, ends the lease.
#[utoipa::path(
    post,
    path = "/api/v1/flow-runs/{id}/finish",
    tag = "workers",
    params(
        ("id" = Uuid, Path, description = "The flow run's id"),
        ("Prefer" = Option<String>, Header, description = "`return=minimal`: answer 204 without the run (what a worker does: it saves the server reading the run back)"),
    ),
    request_body(content = FinishRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The run, in its final state (a result over the limit makes it `Failed`, saying so)", body = Run),
        (status = 204, description = "With `Prefer: return=minimal`: the run was finished as for 200 (read it with `GET /api/v1/flow-runs/{id}`), without the run in the answer"),
        (status = 400, description = "Malformed JSON, or `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `worker` scope", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 409, description = "`stale_lease`: the token is not the run's current lease", body = ErrorBody),
        (status = 413, description = "Body too large (over the largest result and 1 MiB)", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: the event is not a final state event of this flow run", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn finish(
    State(state): State<AppState>,
    RunId(id): RunId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<FinishRequest>,
) -> Result<Response, ApiError> {
    check_token("/token", request.token).map_err(|e| ApiError::invalid_fields(vec![e]))?;
    let event = request.event;
    // The checks of ingestion (names, timestamps, sizes), then those of a finish.
    let value = serde_json::to_value(&event).map_err(ApiError::internal)?;
    let event = crate::api::events::parse_event(value, chrono::Utc::now())
        .map_err(|why| ApiError::invalid_fields(vec![field("/event", why)]))?;
    if event.run_id != id || event.run_kind != RunKind::Flow {
        return Err(ApiError::invalid_fields(vec![field(
            "/event/run_id",
            format!("the event must be of the flow run {id}"),
        )]));
    }
    let EventBody::State {
        state: run_state, ..
    } = &event.body
    else {
        return Err(ApiError::invalid_fields(vec![field(
            "/event/kind",
            "the event must be a state event",
        )]));
    };
    if !run_state.kind.is_final() {
        return Err(ApiError::invalid_fields(vec![field(
            "/event/state",
            format!(
                "{} is not a final state: finish with the run's final state event",
                run_state.kind.as_str()
            ),
        )]));
    }
    let (mut kind, mut message) = (run_state.kind, run_state.message.clone());
    let mut result = None;
    if kind == StateType::Completed {
        let json = serde_json::to_string(&request.result.unwrap_or(serde_json::Value::Null))
            .map_err(ApiError::internal)?;
        if json.len() > MAX_RESULT_BYTES {
            kind = StateType::Failed;
            message = Some(format!(
                "the flow's output is {} bytes of JSON; at most {MAX_RESULT_BYTES} are stored",
                json.len()
            ));
        } else {
            result = Some(json);
        }
    }
    let finished = Finished {
        run_id: id,
        token: request.token,
        event_id: event.id,
        state: kind,
        message,
        attempt: event.attempt,
        timestamp: event.timestamp,
        result,
    };
    match state.store().finish(finished).await? {
        LeaseCall::Done => {
            state.wakeups().run_ended();
            if prefers_minimal(&headers) {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Ok(Json(flow_run(&state, id).await?).into_response())
        }
        LeaseCall::Stale {
            current,
            held,
            state: run_state,
        } => Err(stale(id, request.token, current, held, run_state)),
        LeaseCall::NotFound => Err(ApiError::not_found(format!("no flow run {id}"))),
    }
}

/// Whether a `Prefer` header asks for `return=minimal` (RFC 7240): no body in the answer.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(run_actions::prefers_return_minimal)
}

/// A worker hands a run back: `Scheduled` again for another worker (`Cancelled` if it was
/// being cancelled).
#[utoipa::path(
    post,
    path = "/api/v1/flow-runs/{id}/release",
    tag = "workers",
    params(("id" = Uuid, Path, description = "The flow run's id")),
    request_body(content = ReleaseRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The run, `Scheduled` again with the same attempt (`Cancelled` if it was `Cancelling`)", body = Run),
        (status = 400, description = "Malformed JSON, or `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `worker` scope", body = ErrorBody),
        (status = 404, description = "No such flow run", body = ErrorBody),
        (status = 409, description = "`stale_lease`: the token is not the run's current lease", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: a reason over 64 KiB", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn release(
    State(state): State<AppState>,
    RunId(id): RunId,
    ApiJson(request): ApiJson<ReleaseRequest>,
) -> Result<Json<Run>, ApiError> {
    check_token("/token", request.token).map_err(|e| ApiError::invalid_fields(vec![e]))?;
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_MESSAGE_BYTES)
    {
        return Err(ApiError::invalid_fields(vec![field(
            "/reason",
            format!("at most {MAX_MESSAGE_BYTES} bytes"),
        )]));
    }
    match state
        .store()
        .release(id, request.token, request.reason)
        .await?
    {
        LeaseCall::Done => {
            state.wakeups().runs_changed();
            state.wakeups().run_ended();
            Ok(Json(flow_run(&state, id).await?))
        }
        LeaseCall::Stale {
            current,
            held,
            state: run_state,
        } => Err(stale(id, request.token, current, held, run_state)),
        LeaseCall::NotFound => Err(ApiError::not_found(format!("no flow run {id}"))),
    }
}
