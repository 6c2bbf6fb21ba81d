//! The HTTP API: the route table, and one module per resource, mirroring the URLs. The bodies
//! are `flowkit_wire::api`'s, shared with every client.
//!
//! Every route lives under `/api/v1`; the same routes answer under `/api` (the paths of the
//! first release), so existing clients keep working.
//!
//! | route (under `/api/v1`) | scope | handler |
//! |---|---|---|
//! | `GET /`, `GET /runs/{id}`, `GET /assets/*` (not under the API) | open | [`crate::dashboard`] (static page; its data needs `read`) |
//! | `GET /health` | open | [`health::health`] (liveness) |
//! | `GET /ready` | open | [`health::ready`] (readiness: the database answers) |
//! | `GET /openapi.json` | open | [`openapi::document`] |
//! | `GET /flow-runs` | read | [`flow_runs::list`] |
//! | `GET /flow-runs/{id}` | read | [`flow_runs::get`] |
//! | `GET /flow-runs/{id}/task-runs` | read | [`flow_runs::task_runs`] |
//! | `GET /flow-runs/{id}/logs` | read | [`flow_runs::logs`] |
//! | `GET /flow-runs/{id}/graph` | read | [`flow_runs::graph`] |
//! | `GET /stats` | read | [`stats::stats`] |
//! | `GET /metrics` | read | [`metrics::metrics`] (Prometheus text format) |
//! | `GET /stream` | read | [`stream::stream`] |
//! | `POST /events` | report | [`events::ingest`] |
//! | `POST /reporter-drops` | report | [`reporter_drops::record`] |
//! | `GET /reporter-drops` | read | [`reporter_drops::list`] |
//! | `GET /deployments` | read | [`deployments::list`] |
//! | `GET /deployments/{flow}/{name}` | read | [`deployments::get`] |
//! | `GET /deployments/{flow}/{name}/versions` | read | [`deployments::versions`] |
//! | `GET /deployments/{flow}/{name}/openapi.json` | read | [`deployment_openapi::document`] |
//! | `POST /deployments` | worker | [`deployments::register`] |
//! | `POST /deployments/{flow}/{name}/runs` | trigger | [`deployments::trigger`] |
//! | `POST /schedules/{id}/pause`, `/schedules/{id}/resume` | trigger | [`schedules::pause`], [`schedules::resume`] |
//! | `GET /deployments/{flow}/{name}/schedules`, `GET /schedules/{id}` | read | [`schedule_crud::list`], [`schedule_crud::get`] |
//! | `POST /deployments/{flow}/{name}/schedules`, `DELETE /schedules/{id}` | trigger | [`schedule_crud::create`], [`schedule_crud::delete`] |
//! | `POST /deployments/{flow}/{name}/backfill` | trigger | [`backfill::backfill`] |
//! | `GET /flow-runs/{id}/result` | read | [`run_actions::result`] |
//! | `POST /flow-runs/{id}/cancel` | trigger | [`run_actions::cancel`] |
//! | `POST /flow-runs/cancel` | trigger | [`run_actions::bulk_cancel`] |
//! | `POST /flow-runs/{id}/retry` | trigger | [`run_actions::retry`] |
//! | `POST /alert-rules`, `PATCH /alert-rules/{id}`, `DELETE /alert-rules/{id}` | admin | [`alerts::create`], [`alerts::update`], [`alerts::delete`] |
//! | `GET /alert-rules`, `/alert-rules/{id}`, `/alert-rules/{id}/deliveries` | read | [`alerts::list`], [`alerts::get`], [`alerts::deliveries`] |
//! | `POST /workers/claim` | worker | [`workers::claim`] |
//! | `POST /workers/heartbeat` | worker | [`workers::heartbeat`] |
//! | `POST /flow-runs/{id}/finish` | worker | [`workers::finish`] |
//! | `POST /flow-runs/{id}/release` | worker | [`workers::release`] |
//! | `POST /keys`, `GET /keys`, `DELETE /keys/{key}` | admin | [`keys::create`], [`keys::list`], [`keys::revoke`] |
//!
//! Every response carries the security headers of [`headers`]. Without API keys, a request
//! naming a `Host` that is not loopback, the bind address or an `--allowed-host` is refused
//! ([`crate::allowed_hosts`]); every state-changing route needs a JSON content type or a
//! same-origin `Origin` ([`same_origin`]).
//!
//! `admin` allows every route. `trigger` and `worker` can be limited to deployments
//! ([`crate::auth`]); a limited trigger key also reads the runs it created.

pub mod alerts;
pub mod backfill;
pub mod concurrency_limits;
pub mod deployment_openapi;
pub mod deployments;
pub mod events;
pub mod extract;
pub mod flow_runs;
pub mod full_scans;
pub mod headers;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod openapi_links;
pub mod param_schemas;
pub mod reporter_drops;
pub mod run_actions;
pub mod same_origin;
pub mod schedule_crud;
pub mod schedules;
pub mod stats;
pub mod stream;
pub mod workers;

use crate::{AppState, auth, error};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, patch, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// The whole server as a router: every route, its scope, and the layers that make every error
/// JSON.
pub fn app(state: AppState) -> Router {
    let api = routes(&state);
    Router::new()
        .merge(crate::dashboard::routes())
        .nest(flowkit_wire::api::PREFIX, api.clone())
        // The paths of the first release, kept as aliases.
        .nest("/api", api)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(from_fn_with_state(
            state.clone(),
            crate::allowed_hosts::check_host,
        ))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(from_fn(error::json_errors))
        .layer(from_fn(headers::security_headers))
        .with_state(state)
}

/// The API's routes, relative to its prefix, each group behind its scope.
fn routes(state: &AppState) -> Router<AppState> {
    let open = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(openapi::document));

    let read = Router::new()
        .route("/flow-runs", get(flow_runs::list))
        .route("/flow-runs/{id}", get(flow_runs::get))
        .route("/flow-runs/{id}/task-runs", get(flow_runs::task_runs))
        .route("/flow-runs/{id}/logs", get(flow_runs::logs))
        .route("/flow-runs/{id}/graph", get(flow_runs::graph))
        .route("/flow-runs/{id}/result", get(run_actions::result))
        .route("/stats", get(stats::stats))
        .route("/metrics", get(metrics::metrics))
        .route("/stream", get(stream::stream))
        .route("/reporter-drops", get(reporter_drops::list))
        .route("/deployments", get(deployments::list))
        .route("/deployments/{flow}/{name}", get(deployments::get))
        .route(
            "/deployments/{flow}/{name}/schedules",
            get(schedule_crud::list),
        )
        .route("/schedules/{id}", get(schedule_crud::get))
        .route(
            "/deployments/{flow}/{name}/versions",
            get(deployments::versions),
        )
        .route(
            "/deployments/{flow}/{name}/openapi.json",
            get(deployment_openapi::document),
        )
        .route("/alert-rules", get(alerts::list))
        .route("/alert-rules/{id}", get(alerts::get))
        .route("/alert-rules/{id}/deliveries", get(alerts::deliveries))
        .route("/concurrency-limits", get(concurrency_limits::list))
        .route("/concurrency-limits/{tag}", get(concurrency_limits::get))
        .route_layer(from_fn_with_state(state.clone(), auth::require_read));

    let report = Router::new()
        // Reads its body itself, bounded by `--max-body`.
        .route("/events", post(events::ingest))
        .route("/reporter-drops", post(reporter_drops::record))
        // Inside the key check: a request without a key gets 401 first.
        .route_layer(from_fn(same_origin::require_json_or_same_origin))
        .route_layer(from_fn_with_state(state.clone(), auth::require_report));

    let worker = Router::new()
        .route("/deployments", post(deployments::register))
        .route("/workers/claim", post(workers::claim))
        .route("/workers/heartbeat", post(workers::heartbeat))
        .route(
            "/flow-runs/{id}/finish",
            post(workers::finish).layer(DefaultBodyLimit::max(workers::FINISH_BODY_LIMIT)),
        )
        .route("/flow-runs/{id}/release", post(workers::release))
        // Inside the key check: a request without a key gets 401 first.
        .route_layer(from_fn(same_origin::require_json_or_same_origin))
        .route_layer(from_fn_with_state(state.clone(), auth::require_worker));

    let trigger = Router::new()
        .route(
            "/deployments/{flow}/{name}/runs",
            post(deployments::trigger),
        )
        .route("/flow-runs/cancel", post(run_actions::bulk_cancel))
        .route("/flow-runs/{id}/cancel", post(run_actions::cancel))
        .route("/flow-runs/{id}/retry", post(run_actions::retry))
        .route("/schedules/{id}/pause", post(schedules::pause))
        .route("/schedules/{id}/resume", post(schedules::resume))
        .route(
            "/deployments/{flow}/{name}/schedules",
            post(schedule_crud::create),
        )
        .route("/schedules/{id}", delete(schedule_crud::delete))
        .route(
            "/deployments/{flow}/{name}/backfill",
            post(backfill::backfill),
        )
        // Inside the key check: a request without a key gets 401 first.
        .route_layer(from_fn(same_origin::require_json_or_same_origin))
        .route_layer(from_fn_with_state(state.clone(), auth::require_trigger));

    // Keys: every route needs the JSON content type (or a matching Origin). Alert rules: a
    // DELETE needs none: no web page of another site can send one (forms only GET and POST; a
    // cross-site `fetch` DELETE needs a CORS preflight the server never grants).
    let admin = Router::new()
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{key}", delete(keys::revoke))
        // Inside the key check: a request without a key gets 401 first.
        .route_layer(from_fn(same_origin::require_json_or_same_origin))
        .route(
            "/alert-rules",
            post(alerts::create).route_layer(from_fn(same_origin::require_json_or_same_origin)),
        )
        .route(
            "/alert-rules/{id}",
            patch(alerts::update)
                .route_layer(from_fn(same_origin::require_json_or_same_origin))
                .delete(alerts::delete),
        )
        .route(
            "/concurrency-limits/{tag}",
            put(concurrency_limits::set)
                .route_layer(from_fn(same_origin::require_json_or_same_origin))
                .delete(concurrency_limits::delete),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));

    Router::new()
        .merge(open)
        .merge(admin)
        .merge(read)
        .merge(report)
        .merge(worker)
        .merge(trigger)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
}
