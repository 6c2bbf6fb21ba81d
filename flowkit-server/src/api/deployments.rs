//! `/api/v1/deployments`: registering deployment versions (scope `worker`), reading them
//! (`read`), and triggering runs of them (`trigger`).
//!
//! A trigger is checked in this order, so the answer names the first thing to fix: the
//! idempotency key (400), the body's own fields (422 `invalid_body`), the deployment (404) and
//! pinned version (422 `invalid_body` at `/version`: the path names an existing resource, the
//! body a version it does not have), a known idempotency key (200 with its run, or 409), then
//! the parameters against the version's schema (422 `invalid_parameters`, every error listed).
//! A run created by a trigger is a flow run like any other: `Scheduled` until a worker claims
//! it (its state message says whether a live worker serves its version), listed by
//! `GET /flow-runs` and announced on the live stream; the waiting claims are woken at once.
//! Without `version`, a trigger runs the newest version a live worker (seen within one lease)
//! serves, else the newest registered; with it, only a worker of that version may claim it.
//! The run records who created it (`created_by`) and how many attempts it may have (the
//! version's `retries` + 1). `Prefer: wait=N` waits up to N s for the run to end.

use crate::AppState;
use crate::api::extract::{ApiJson, ApiQuery, page_request};
use crate::api::run_actions as run_actions_api;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody, ErrorCode, FieldError, StoreFailures};
use crate::params;
use crate::store::schedules::{ScheduleRow, code_schedule_id};
use crate::store::{
    Backend, IdempotencyClaim, NewRun, PageRequest, Registration, RunFilter, Triggered,
};
use crate::stream::changes_of;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use flowkit_wire::api::PREFIX;
use flowkit_wire::api::deployments::{
    DeploymentDetail, DeploymentSpec, DeploymentSummary, DeploymentVersion, IDEMPOTENCY_KEY_HEADER,
    MAX_IDEMPOTENCY_KEY_LEN, TriggerRequest, check_name,
};
use flowkit_wire::api::ingest::{
    MAX_MESSAGE_BYTES, MAX_NAME_CHARS, MAX_PARAMETERS_BYTES, MAX_TAGS,
};
use flowkit_wire::api::page::Page;
use flowkit_wire::api::run_actions;
use flowkit_wire::api::runs::Run;
use flowkit_wire::api::schedules::MAX_SCHEDULES_PER_DEPLOYMENT;
use flowkit_wire::event::{Event, EventBody, RunDetails, RunKind};
use flowkit_wire::schedule::Schedule;
use flowkit_wire::state::{State as RunState, StateType};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use uuid::Uuid;

/// Recent runs in a deployment's detail.
const RECENT_RUNS: u32 = 10;
/// Longest `flow_key` or `version`, in characters.
const MAX_IDENTITY_CHARS: usize = 1000;

/// The `{flow}/{name}` of a deployment path. Names that break the naming rules cannot exist,
/// so they are simply not found.
pub struct DeploymentPath {
    /// The flow's name.
    pub flow: String,
    /// The deployment's name.
    pub name: String,
}

impl DeploymentPath {
    /// `flow/name`, as runs record their deployment.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.flow, self.name)
    }

    pub(crate) fn not_found(&self) -> ApiError {
        ApiError::not_found(format!(
            "no deployment {}: register it first (POST {PREFIX}/deployments)",
            self.key()
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DeploymentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((flow, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::not_found(format!("no such deployment: {}", e.body_text())))?;
        Ok(DeploymentPath { flow, name })
    }
}

/// `limit` and `cursor` of a deployments list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    fn page(self) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor)
    }
}

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

/// Checks a list of tags, adding an error per bad one.
fn check_tags(pointer: &str, tags: &[String], found: &mut Vec<FieldError>) {
    if tags.len() > MAX_TAGS {
        found.push(field(
            pointer,
            format!("{} tags; at most {MAX_TAGS} are allowed", tags.len()),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.trim().is_empty() || tag.chars().count() > MAX_NAME_CHARS || tag.contains('\0') {
            found.push(field(
                &format!("{pointer}/{i}"),
                format!("a tag is 1 to {MAX_NAME_CHARS} characters, without NUL"),
            ));
        }
    }
}

/// Checks a text field that identifies something: not empty, bounded, no NUL.
fn check_identity(pointer: &str, what: &str, text: &str, found: &mut Vec<FieldError>) {
    if text.trim().is_empty() || text.chars().count() > MAX_IDENTITY_CHARS || text.contains('\0') {
        found.push(field(
            pointer,
            format!("the {what} must be 1 to {MAX_IDENTITY_CHARS} characters, without NUL"),
        ));
    }
}

/// Every problem of a registration, each at its pointer into the body.
fn check_spec(spec: &DeploymentSpec) -> Vec<FieldError> {
    let mut found = Vec::new();
    if let Err(message) = check_name("flow", &spec.flow) {
        found.push(field("/flow", message));
    }
    if let Err(message) = check_name("deployment", &spec.name) {
        found.push(field("/name", message));
    }
    check_identity("/flow_key", "flow key", &spec.flow_key, &mut found);
    check_identity("/version", "version", &spec.version, &mut found);
    if let Some(description) = &spec.description
        && (description.len() > MAX_MESSAGE_BYTES || description.contains('\0'))
    {
        found.push(field(
            "/description",
            format!("at most {MAX_MESSAGE_BYTES} bytes, without NUL"),
        ));
    }
    check_tags("/tags", &spec.tags, &mut found);
    // `int32` in the OpenAPI document: no flow needs more.
    for (pointer, value) in [
        ("/retries", Some(spec.retries)),
        ("/concurrency_limit", spec.concurrency_limit),
    ] {
        if value.is_some_and(|v| v > i32::MAX as u32) {
            found.push(field(pointer, format!("at most {}", i32::MAX)));
        }
    }
    if spec.concurrency_limit == Some(0) {
        found.push(field(
            "/concurrency_limit",
            "a limit of 0 would never run anything: give at least 1, or leave it out for no limit",
        ));
    }
    let validator = match params::compile(&spec.parameter_schema) {
        Ok(validator) => {
            found.extend(params::errors(
                &validator,
                &Value::Object(spec.default_parameters.clone()),
                "/default_parameters",
                true,
            ));
            Some(validator)
        }
        Err(why) => {
            found.push(field(
                "/parameter_schema",
                format!("not a valid JSON Schema: {why}"),
            ));
            None
        }
    };
    if let Err(why) = params::compile(&spec.output_schema) {
        found.push(field(
            "/output_schema",
            format!("not a valid JSON Schema: {why}"),
        ));
    }
    found.extend(check_schedules(spec, validator.as_ref()));
    found
}

/// The schedules of a registration: at most [`MAX_SCHEDULES_PER_DEPLOYMENT`], each one valid
/// (cron, time zone, interval, lateness) with parameters that, over the defaults, the
/// parameter schema accepts, and no two with the same timing.
fn check_schedules(
    spec: &DeploymentSpec,
    validator: Option<&jsonschema::Validator>,
) -> Vec<FieldError> {
    let mut found = Vec::new();
    if spec.schedules.len() > MAX_SCHEDULES_PER_DEPLOYMENT {
        found.push(field(
            "/schedules",
            format!(
                "{} schedules; at most {MAX_SCHEDULES_PER_DEPLOYMENT} per deployment",
                spec.schedules.len()
            ),
        ));
        return found;
    }
    let mut ids = Vec::new();
    for (i, schedule) in spec.schedules.iter().enumerate() {
        let at = format!("/schedules/{i}");
        found.extend(check_schedule(
            &at,
            schedule,
            &spec.default_parameters,
            validator,
        ));
        let id = code_schedule_id(&spec.flow, &spec.name, schedule);
        if let Some(first) = ids.iter().position(|known| *known == id) {
            found.push(field(
                &at,
                format!(
                    "the same timing as /schedules/{first} (cron or interval, time zone and                      anchor): merge them, or give one different timing"
                ),
            ));
        }
        ids.push(id);
    }
    found
}

/// Every problem of one schedule, at pointers under `at`: its timing (cron, time zone,
/// interval, lateness; each message shows a valid example) and, when the schema compiled, its
/// parameters over `defaults`.
pub(crate) fn check_schedule(
    at: &str,
    schedule: &flowkit_wire::api::schedules::ScheduleSpec,
    defaults: &serde_json::Map<String, Value>,
    validator: Option<&jsonschema::Validator>,
) -> Vec<FieldError> {
    let mut found = Vec::new();
    if let Err(e) = Schedule::compile(schedule) {
        found.push(field(&format!("{at}/{}", e.field), e.message));
    }
    if let Some(validator) = validator {
        let parameters = Value::Object(params::merge(defaults, &schedule.parameters));
        found.extend(params::errors(
            validator,
            &parameters,
            &format!("{at}/parameters"),
            false,
        ));
    }
    found
}

/// The query of `POST /deployments`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// Only check: answer 204 when registering would succeed (a new version or a repeat), or
    /// the error it would give, and write nothing. A worker checks every deployment it serves
    /// this way before registering any, so that one refused leaves none registered.
    pub dry_run: Option<bool>,
}

/// Registers a version of a deployment.
#[utoipa::path(
    post,
    path = "/api/v1/deployments",
    tag = "deployments",
    params(RegisterQuery),
    request_body(content = DeploymentSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "A new version, now the newest; `Location` is the deployment", body = DeploymentVersion),
        (status = 200, description = "This version was registered before with the same spec: nothing changed", body = DeploymentVersion),
        (status = 204, description = "`dry_run=true`: registering would succeed; nothing was written"),
        (status = 400, description = "Malformed JSON (`invalid_json`), or an unknown or malformed query parameter (`invalid_parameter`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `worker` scope, or has it for other deployments only (`worker=FLOW/NAME`)", body = ErrorBody),
        (status = 409, description = "`deployment_conflict`: another function (`flow_key`) registered this flow/name; `conflict`: this version was registered with another spec", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: a bad name, schema or default, every one listed in `details` at its JSON pointer", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<RegisterQuery>,
    ApiJson(spec): ApiJson<DeploymentSpec>,
) -> Result<Response, ApiError> {
    let problems = check_spec(&spec);
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    caller.check_deployment(Scope::Worker, &format!("{}/{}", spec.flow, spec.name))?;
    // The version is the flow; its schedules are the deployment's and may change freely.
    let versioned = DeploymentSpec {
        schedules: Vec::new(),
        ..spec.clone()
    };
    let fingerprint =
        params::fingerprint(&serde_json::to_value(&versioned).map_err(ApiError::internal)?);
    if query.dry_run == Some(true) {
        let checked = state
            .store()
            .check_registration(&versioned, &fingerprint)
            .await?;
        return match checked {
            Registration::WouldCreate | Registration::Unchanged(_) => {
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            refused => Err(refusal(&spec, refused)),
        };
    }
    let location = format!("{PREFIX}/deployments/{}/{}", spec.flow, spec.name);
    let registration = state
        .store()
        .register_deployment(&versioned, &fingerprint)
        .await?;
    if matches!(
        registration,
        Registration::Created(_) | Registration::Unchanged(_)
    ) {
        let now = Utc::now();
        let rows = spec
            .schedules
            .iter()
            .filter_map(|schedule| {
                // Every schedule compiled in check_spec.
                let compiled = Schedule::compile(schedule).ok()?;
                Some(ScheduleRow {
                    id: code_schedule_id(&spec.flow, &spec.name, schedule),
                    spec: schedule.clone(),
                    next_at: compiled.next_after(now),
                })
            })
            .collect();
        state
            .store()
            .replace_code_schedules(&spec.flow, &spec.name, rows)
            .await?;
    }
    match registration {
        Registration::Created(version) => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(version),
        )
            .into_response()),
        Registration::Unchanged(version) => Ok((StatusCode::OK, Json(version)).into_response()),
        refused => Err(refusal(&spec, refused)),
    }
}

/// The 409 of a registration the store refused.
fn refusal(spec: &DeploymentSpec, registration: Registration) -> ApiError {
    match registration {
        Registration::VersionConflict(existing) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!(
                "version {:?} of {}/{} was registered on {} with another spec; a version never \
                 changes once registered: register the change under a new version",
                existing.version,
                existing.flow,
                existing.name,
                existing.registered.to_rfc3339()
            ),
        ),
        Registration::OwnedByAnother { flow_key } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::DeploymentConflict,
            format!(
                "{}/{} is registered by the function `{flow_key}`, not `{}`: two functions \
                 cannot share a deployment; give this one another flow or deployment name",
                spec.flow, spec.name, spec.flow_key
            ),
        ),
        Registration::Created(_) | Registration::Unchanged(_) | Registration::WouldCreate => {
            ApiError::internal(anyhow::anyhow!(
                "a registration that succeeded was taken for a refusal"
            ))
        }
    }
}

/// Lists deployments, most recently updated first.
#[utoipa::path(
    get,
    path = "/api/v1/deployments",
    tag = "deployments",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of deployments, most recently updated first", body = Page<DeploymentSummary>),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<DeploymentSummary>>, ApiError> {
    Ok(Json(state.store().list_deployments(&query.page()?).await?))
}

/// One deployment: its newest version with its schemas, and its recent runs.
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{flow}/{name}",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
    ),
    responses(
        (status = 200, description = "The deployment", body = DeploymentDetail),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    path: DeploymentPath,
) -> Result<Json<DeploymentDetail>, ApiError> {
    let (latest, versions) = state
        .store()
        .deployment(&path.flow, &path.name)
        .await?
        .ok_or_else(|| path.not_found())?;
    let filter = RunFilter {
        deployment: Some(path.key()),
        ..RunFilter::default()
    };
    let page = PageRequest {
        limit: RECENT_RUNS,
        cursor: None,
    };
    let recent_runs = state.store().list_flow_runs(&filter, &page).await?.items;
    let since = live_since(&state);
    let live_workers = state
        .store()
        .live_workers(&path.flow, &path.name, since)
        .await?;
    let serving_version = Some(
        state
            .store()
            .serving_version(&path.flow, &path.name, since)
            .await?
            .unwrap_or_else(|| latest.version.clone()),
    );
    let schedules = state.store().schedules_of(&path.flow, &path.name).await?;
    Ok(Json(DeploymentDetail {
        latest,
        versions,
        recent_runs,
        live_workers,
        serving_version,
        schedules,
    }))
}

/// A deployment's versions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/deployments/{flow}/{name}/versions",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of versions, newest first", body = Page<DeploymentVersion>),
        (status = 400, description = "A parameter does not parse; the message names it", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn versions(
    State(state): State<AppState>,
    path: DeploymentPath,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<DeploymentVersion>>, ApiError> {
    let page = query.page()?;
    if state
        .store()
        .deployment_version(&path.flow, &path.name, None)
        .await?
        .is_none()
    {
        return Err(path.not_found());
    }
    Ok(Json(
        state
            .store()
            .deployment_versions(&path.flow, &path.name, &page)
            .await?,
    ))
}

/// Workers seen since this instant are live: within one lease of now.
pub(crate) fn live_since(state: &AppState) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(state.settings().lease).unwrap_or_default()
}

/// The `Prefer: wait=N` of a trigger, if any: 400 when it does not parse.
fn prefer_wait(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    let mut wait = None;
    for value in headers.get_all("prefer") {
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "the `Prefer` header is not visible ASCII",
            )
        })?;
        if let Some(n) = run_actions::prefer_wait(text)
            .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why))?
        {
            wait = Some(n);
        }
    }
    Ok(wait)
}

/// The idempotency key of a trigger: the body's, the header's, or both if they agree.
fn idempotency_key(
    headers: &HeaderMap,
    request: &TriggerRequest,
) -> Result<Option<String>, ApiError> {
    let bad =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message);
    let header = headers
        .get(IDEMPOTENCY_KEY_HEADER)
        .map(|value| {
            value.to_str().map(str::to_string).map_err(|_| {
                bad(format!(
                    "the `{IDEMPOTENCY_KEY_HEADER}` header is not visible ASCII"
                ))
            })
        })
        .transpose()?;
    let key = match (header, &request.idempotency_key) {
        (Some(header), Some(body)) if &header != body => {
            return Err(bad(format!(
                "the `{IDEMPOTENCY_KEY_HEADER}` header ({header:?}) and `idempotency_key` of the \
                 body ({body:?}) differ: send one of them"
            )));
        }
        (Some(key), _) => key,
        (None, Some(key)) => key.clone(),
        (None, None) => return Ok(None),
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(bad(format!(
            "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes without control \
             characters (a UUID is a good one)"
        )));
    }
    Ok(Some(key))
}

/// What identifies a trigger's request for its idempotency key: everything but the key.
fn request_fingerprint(request: &TriggerRequest) -> String {
    params::fingerprint(&json!({
        "parameters": request.parameters,
        "scheduled_for": request.scheduled_for,
        "tags": request.tags,
        "version": request.version,
    }))
}

/// The run an idempotency key created, as the answer to a replay.
async fn replay(state: &AppState, run_id: Uuid) -> Result<Response, ApiError> {
    let run = state.store().get_run(run_id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "the run {run_id} this idempotency key created has been deleted (retention)"
        ))
    })?;
    Ok((StatusCode::OK, Json(run)).into_response())
}

fn key_reused(deployment: &str, run_id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyReused,
        format!(
            "this idempotency key already created run {run_id} of {deployment} with another \
             body: use a new key for a different request"
        ),
    )
    .with_run_id(run_id)
}

/// Creates a run of a deployment.
#[utoipa::path(
    post,
    path = "/api/v1/deployments/{flow}/{name}/runs",
    tag = "deployments",
    params(
        ("flow" = String, Path, description = "The flow's name"),
        ("name" = String, Path, description = "The deployment's name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` of the body (1 to 255 bytes); both given must agree"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (whole seconds, at most 60): answer when the run ends within N s (201, with `result` inline for a `Completed` run up to 1 MiB), else 202 with the run as it stands"),
    ),
    request_body(content = TriggerRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The run was created (`Scheduled`: it waits for a worker); with `Prefer: wait=N`, the run ended within the wait, in its final state (`result` inline when `Completed` and at most 1 MiB); `Location` is the run", body = Run,
            headers(("Location" = String, description = "`/api/v1/flow-runs/{id}`"))),
        (status = 202, description = "With `Prefer: wait=N`: the run was created and has not ended within the wait; the run as it stands; `Location` is the run", body = Run,
            headers(("Location" = String, description = "`/api/v1/flow-runs/{id}`"))),
        (status = 200, description = "The idempotency key was used before with the same body: the run it created", body = Run),
        (status = 400, description = "Malformed JSON, a bad idempotency key, header and body keys that differ, or a `Prefer: wait` that is not whole seconds from 0 to 60", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `trigger` scope, or has it for other deployments only (`trigger=FLOW/NAME`)", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used with another body; `run_id` is the run it created", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_parameters`: the parameters do not fit the version's schema, every error in `details` at its JSON pointer; `invalid_body`: an unknown field, a bad tag, or a `version` the deployment does not have (at `/version`)", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: DeploymentPath,
    headers: HeaderMap,
    ApiJson(request): ApiJson<TriggerRequest>,
) -> Result<Response, ApiError> {
    caller.check_deployment(Scope::Trigger, &path.key())?;
    let wait = prefer_wait(&headers)?;
    let key = idempotency_key(&headers, &request)?;
    let mut problems = Vec::new();
    check_tags("/tags", &request.tags, &mut problems);
    if let Some(version) = &request.version {
        check_identity("/version", "version", version, &mut problems);
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(problems));
    }
    let store = state.store();
    let deployment = path.key();
    // Without a version: the newest one a live worker serves, else the newest registered (one
    // read).
    let found = match &request.version {
        Some(wanted) => store
            .deployment_version(&path.flow, &path.name, Some(wanted))
            .await?
            .map(|version| (version, false)),
        None => {
            store
                .trigger_version(&path.flow, &path.name, live_since(&state))
                .await?
        }
    };
    let Some((version, serving)) = found else {
        return match &request.version {
            Some(wanted)
                if store
                    .deployment_version(&path.flow, &path.name, None)
                    .await?
                    .is_some() =>
            {
                Err(ApiError::invalid_fields(vec![field(
                    "/version",
                    format!(
                        "{deployment} has no version {wanted:?}: see GET {PREFIX}/deployments/{deployment}/versions"
                    ),
                )]))
            }
            _ => Err(path.not_found()),
        };
    };
    let fingerprint = request_fingerprint(&request);
    if let Some(key) = &key
        && let Some(known) = store.idempotency_key(&deployment, key).await?
    {
        return if known.fingerprint == fingerprint {
            replay(&state, known.run_id).await
        } else {
            Err(key_reused(&deployment, known.run_id))
        };
    }

    let parameters = params::merge(&version.default_parameters, &request.parameters);
    let validator = validator_of(&state, &version)?;
    let parameters = Value::Object(parameters);
    let errors = params::errors(&validator, &parameters, "", false);
    if !errors.is_empty() {
        let message = format!(
            "{} invalid for {deployment} version {:?}: see `details`, one entry per error",
            match errors.len() {
                1 => "1 parameter is".to_string(),
                n => format!("{n} errors make the parameters"),
            },
            version.version
        );
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidParameters,
            message,
        )
        .with_details(errors));
    }
    if parameters.to_string().len() > MAX_PARAMETERS_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidParameters,
            format!("the parameters take more than {MAX_PARAMETERS_BYTES} bytes of JSON"),
        )
        .with_details(vec![field("", "too large")]));
    }

    let tags = run_tags(&version.tags, &request.tags);
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_fields(vec![field(
            "/tags",
            format!(
                "with the deployment's {} tags the run would have {}; at most {MAX_TAGS} are allowed",
                version.tags.len(),
                tags.len()
            ),
        )]));
    }

    let now = Utc::now();
    let served = request.version.is_none() && serving
        || request.version.is_some()
            && store
                .live_workers(&path.flow, &path.name, live_since(&state))
                .await?
                .iter()
                .any(|w| w.versions.contains(&version.version));
    let new = new_run(
        &version,
        &deployment,
        &request,
        tags,
        parameters,
        now,
        served,
    );
    let run_id = new.event.run_id;
    let event = new.event.clone();
    let new = NewRun {
        idempotency: key.map(|key| IdempotencyClaim {
            key,
            fingerprint,
            expires: expiry(now, state.settings().idempotency_ttl),
        }),
        created_by: Some(caller.created_by(&headers)),
        ..new
    };
    // The answer: the run as created (not read back: a worker may claim it at once).
    let created = new.record()?;
    match store.trigger(new).await? {
        Triggered::Created(id) => {
            debug_assert_eq!(id, run_id);
            state.wakeups().runs_changed();
            if state.changes().has_subscribers() {
                state
                    .changes()
                    .publish(changes_of(std::slice::from_ref(&event)));
            }
            let location = [(header::LOCATION, format!("{PREFIX}/flow-runs/{id}"))];
            let Some(seconds) = wait.filter(|n| *n > 0) else {
                return Ok((StatusCode::CREATED, location, Json(created)).into_response());
            };
            let mut run = run_actions_api::wait_for_final(&state, id, seconds).await?;
            if !run.state.is_final() {
                return Ok((StatusCode::ACCEPTED, location, Json(run)).into_response());
            }
            if run.state == StateType::Completed {
                run.result =
                    run_actions_api::inline_result(&state, id, run_actions_api::INLINE).await?;
            }
            Ok((StatusCode::CREATED, location, Json(run)).into_response())
        }
        Triggered::Replayed(id) => replay(&state, id).await,
        Triggered::KeyReused(id) => Err(key_reused(&deployment, id)),
    }
}

/// When a key claimed at `now` expires.
fn expiry(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A triggered run's tags: the deployment's, then the request's, without repeats.
pub(crate) fn run_tags(deployment: &[String], request: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in deployment.iter().chain(request) {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

/// The run a trigger creates: its first state event, `Scheduled`, carrying its details.
pub(crate) fn new_run(
    version: &DeploymentVersion,
    deployment: &str,
    request: &TriggerRequest,
    tags: Vec<String>,
    parameters: Value,
    now: DateTime<Utc>,
    served: bool,
) -> NewRun {
    let run_id = Uuid::now_v7();
    let message = if served {
        format!(
            "waiting for a worker of {deployment} (version {:?})",
            version.version
        )
    } else {
        format!(
            "waiting for a worker: no worker serves {deployment} yet (version {:?})",
            version.version
        )
    };
    let details = RunDetails {
        task_key: version.flow_key.clone().into(),
        version: Some(version.version.clone().into()),
        tags: tags.into_iter().map(Into::into).collect(),
        parameters: Some(parameters),
        upstream: Vec::new(),
        cache_key: None,
        deployment: Some(deployment.to_string()),
        worker: None,
    };
    NewRun {
        event: Event {
            id: Uuid::now_v7(),
            run_id,
            parent_run_id: None,
            flow_run_id: Some(run_id),
            run_kind: RunKind::Flow,
            name: version.flow.clone().into(),
            attempt: 1,
            timestamp: now,
            lease: None,
            body: EventBody::State {
                state: RunState::with_message(StateType::Scheduled, message),
                details: Some(Box::new(details)),
            },
        },
        deployment: deployment.to_string(),
        scheduled_for: request.scheduled_for,
        idempotency: None,
        version_pinned: request.version.is_some(),
        max_attempts: version.retries.saturating_add(1),
        created_by: None,
        schedule_slot: None,
    }
}

/// The compiled parameter schema of a stored version. It was checked at registration, so one
/// that no longer compiles is the server's problem (500).
pub(crate) fn validator_of(
    state: &AppState,
    version: &DeploymentVersion,
) -> Result<std::sync::Arc<jsonschema::Validator>, ApiError> {
    state.validators().of(version).map_err(|why| {
        ApiError::internal(anyhow::anyhow!(
            "stored schema of {}/{}: {why}",
            version.flow,
            version.name
        ))
    })
}
