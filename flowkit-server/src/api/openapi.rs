//! `GET /api/openapi.json`: the OpenAPI 3 document of every route, generated from the
//! handlers' `#[utoipa::path]` attributes and the response types.

use crate::api::openapi_links::{RunLinks, UniqueOperationIds};
use crate::api::param_schemas::CommaSeparated;
use crate::api::{
    alerts, backfill, concurrency_limits, deployment_openapi, deployments, events, flow_runs,
    health, keys, metrics, reporter_drops, run_actions, schedule_crud, schedules, stats, stream,
    workers,
};
use crate::dashboard;
use axum::http::header;
use axum::response::IntoResponse;
use flowkit_wire::api::deployments::{
    DeploymentDetail, DeploymentSpec, DeploymentSummary, DeploymentVersion, FieldError,
    TriggerRequest,
};
use flowkit_wire::api::error::{ErrorBody, ErrorCode, ErrorDetail};
use flowkit_wire::api::graph::{StateCount, TaskGroup};
use flowkit_wire::api::logs::LogEntry;
use flowkit_wire::api::page::Page;
use flowkit_wire::api::run_actions::{BulkCancel, BulkCancelled, CancelRequest};
use flowkit_wire::api::runs::Run;
use flowkit_wire::api::stream::{Lagged, RunChange};
use flowkit_wire::api::workers::{
    ClaimRequest, ClaimResponse, ClaimedRun, FinishRequest, HeartbeatRequest, HeartbeatResponse,
    HeldLease, LiveWorker, ReleaseRequest, Served,
};
use flowkit_wire::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use flowkit_wire::state::{State, StateType};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowkit-server",
        description = "Receives flowkit run events and serves runs, logs, graphs and statistics. \
            Every route is under `/api/v1`; `/api/...` answers the same as an alias. \
            Every error is `{\"error\": {\"code\": ..., \"message\": ...}}` (`code` is one of \
            `ErrorCode`). When the server has API keys, send `Authorization: Bearer <secret>`; \
            GET routes need the `read` scope, ingestion the `report` scope, registering \
            deployments, claiming and running them the `worker` scope, triggering, cancelling and retrying runs the `trigger` scope, creating, changing and deleting alert rules, API keys and concurrency limits the `admin` scope (`admin` allows \
            everything). `trigger=FLOW/NAME` and `worker=FLOW/NAME` limit a scope to \
            deployments, and such a trigger key reads the runs it created. Each deployment \
            has its own OpenAPI 3.1 document, typed by its flow's schemas: \
            `/api/v1/deployments/{flow}/{name}/openapi.json`. Invalid parameters of a trigger are a 422 `invalid_parameters` whose \
            `details` list every error at its JSON pointer. Readers ignore unknown fields, and read unknown state types as \
            `Unknown`, so newer peers never break older ones. \
            Every state-changing route (POST) needs `Content-Type: application/json` (415 \
            `unsupported_media_type` otherwise, even with an empty body) unless its `Origin` \
            is this server's own (403 `forbidden_origin` for another site's). A server without \
            API keys answers only requests whose `Host` is localhost, a loopback address, its \
            bind address or an `--allowed-host`: any other gets 403 `forbidden_host` on every \
            route (DNS rebinding)."
    ),
    paths(
        dashboard::index,
        dashboard::run_page,
        health::health,
        health::ready,
        metrics::metrics,
        events::ingest,
        reporter_drops::record,
        reporter_drops::list,
        flow_runs::list,
        flow_runs::get,
        flow_runs::task_runs,
        flow_runs::logs,
        flow_runs::graph,
        stats::stats,
        stream::stream,
        deployments::register,
        deployments::list,
        deployments::get,
        deployments::versions,
        deployments::trigger,
        deployment_openapi::document,
        run_actions::result,
        run_actions::cancel,
        run_actions::bulk_cancel,
        run_actions::retry,
        schedules::pause,
        schedules::resume,
        schedule_crud::create,
        schedule_crud::list,
        schedule_crud::get,
        schedule_crud::delete,
        backfill::backfill,
        workers::claim,
        workers::heartbeat,
        workers::finish,
        workers::release,
        keys::create,
        keys::list,
        keys::revoke,
        alerts::create,
        alerts::list,
        alerts::get,
        alerts::update,
        alerts::delete,
        alerts::deliveries,
        concurrency_limits::set,
        concurrency_limits::list,
        concurrency_limits::get,
        concurrency_limits::delete,
        document,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        Event,
        EventBody,
        State,
        StateType,
        RunDetails,
        RunKind,
        LogLevel,
        RunChange,
        Lagged,
        Page<Run>,
        Page<LogEntry>,
        FieldError,
        DeploymentSpec,
        DeploymentVersion,
        DeploymentSummary,
        DeploymentDetail,
        flowkit_wire::api::schedules::Schedule,
        flowkit_wire::api::schedules::ScheduleSpec,
        flowkit_wire::api::schedules::ScheduleSource,
        flowkit_wire::api::schedules::Catchup,
        flowkit_wire::api::schedules::Overlap,
        flowkit_wire::api::schedules::BackfillRequest,
        flowkit_wire::api::schedules::Backfilled,
        TriggerRequest,
        flowkit_wire::api::concurrency_limits::SetLimit,
        flowkit_wire::api::concurrency_limits::ConcurrencyLimit,
        flowkit_wire::api::concurrency_limits::ConcurrencyLimits,
        Page<DeploymentSummary>,
        Page<DeploymentVersion>,
        ClaimRequest,
        ClaimResponse,
        ClaimedRun,
        Served,
        HeldLease,
        HeartbeatRequest,
        HeartbeatResponse,
        FinishRequest,
        ReleaseRequest,
        LiveWorker,
        CancelRequest,
        BulkCancel,
        BulkCancelled,
        TaskGroup,
        StateCount,
        flowkit_wire::api::keys::CreateKey,
        flowkit_wire::api::keys::CreatedKey,
        flowkit_wire::api::keys::KeyInfo,
        flowkit_wire::api::keys::KeyList,
        flowkit_wire::api::keys::KeySource,
        flowkit_wire::api::keys::RevokedKey,
        flowkit_wire::api::alerts::AlertRuleSpec,
        flowkit_wire::api::alerts::AlertRulePatch,
        flowkit_wire::api::alerts::AlertRule,
        flowkit_wire::api::alerts::AlertRules,
        flowkit_wire::api::alerts::Delivery,
        flowkit_wire::api::alerts::DeliveryAttempt,
        flowkit_wire::api::alerts::DeliveryStatus,
        flowkit_wire::api::alerts::TargetKind,
        flowkit_wire::alerts::Alert,
        flowkit_wire::alerts::AlertState,
        flowkit_wire::alerts::WorkerAbsence,
        Page<flowkit_wire::api::alerts::Delivery>,
    )),
    modifiers(&ApiKeyAuth, &RunLinks, &UniqueOperationIds, &CommaSeparated),
    tags(
        (name = "server", description = "Health and API description"),
        (name = "events", description = "Ingestion, as the flowkit reporter sends it"),
        (name = "flow-runs", description = "Runs, logs, graphs, statistics and the live stream"),
        (name = "deployments", description = "Flows registered by workers, and triggering runs of them with parameters validated against the flow's JSON Schema"),
        (name = "workers", description = "Workers claim triggered runs under leases with fencing tokens, heartbeat, and finish or release them"),
        (name = "keys", description = "API keys created, listed and revoked at runtime (scope `admin`), stored hashed; every replica sees a new key at once and refuses a revoked one within 5 s"),
        (name = "alerts", description = "Server-side alert rules (a webhook or Slack message when a run fails, crashes, times out, is late or expires, or workers are gone) and their deliveries"),
        (name = "concurrency-limits", description = "Tag concurrency limits of deployed runs: at most N runs carrying a tag leased to workers at once, across every deployment, worker and replica, counted from leases (a dead worker's slot comes back when its lease ends)"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme the routes' `security` refers to.
struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key's secret (`--api-key NAME:SECRET:SCOPES`, or created with \
                         `POST /api/v1/keys`). Not needed when the server has no key at all.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
        })
    })
}

/// The OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
