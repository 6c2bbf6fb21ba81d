//! The HTTP API: the route table, and one module per resource, mirroring the URLs.
//!
//! | route | scope | handler |
//! |---|---|---|
//! | `GET /`, `GET /assets/*` | open | [`crate::dashboard`] (static page; its data needs `read`) |
//! | `GET /api/health` | open | [`health::health`] |
//! | `GET /api/openapi.json` | open | [`openapi::document`] |
//! | `GET /api/flow-runs` | read | [`flow_runs::list`] |
//! | `GET /api/flow-runs/{id}` | read | [`flow_runs::get`] |
//! | `GET /api/flow-runs/{id}/task-runs` | read | [`flow_runs::task_runs`] |
//! | `GET /api/flow-runs/{id}/logs` | read | [`flow_runs::logs`] |
//! | `GET /api/flow-runs/{id}/graph` | read | [`flow_runs::graph`] |
//! | `GET /api/stats` | read | [`stats::stats`] |
//! | `GET /api/stream` | read | [`stream::stream`] |
//! | `POST /api/events` | report | [`events::ingest`] |
//! | `POST /api/reporter-drops` | report | [`reporter_drops::record`] |

pub mod events;
pub mod extract;
pub mod flow_runs;
pub mod health;
pub mod openapi;
pub mod reporter_drops;
pub mod schema;
pub mod stats;
pub mod stream;

use crate::{AppState, auth, error};
use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// The whole server as a router: every route, its scope, and the layers that make every error
/// JSON.
pub fn app(state: AppState) -> Router {
    let open = Router::new()
        .merge(crate::dashboard::routes())
        .route("/api/health", get(health::health))
        .route("/api/openapi.json", get(openapi::document));

    let read = Router::new()
        .route("/api/flow-runs", get(flow_runs::list))
        .route("/api/flow-runs/{id}", get(flow_runs::get))
        .route("/api/flow-runs/{id}/task-runs", get(flow_runs::task_runs))
        .route("/api/flow-runs/{id}/logs", get(flow_runs::logs))
        .route("/api/flow-runs/{id}/graph", get(flow_runs::graph))
        .route("/api/stats", get(stats::stats))
        .route("/api/stream", get(stream::stream))
        .route_layer(from_fn_with_state(state.clone(), auth::require_read));

    let report = Router::new()
        // Reads its body itself, bounded by `--max-body`.
        .route("/api/events", post(events::ingest))
        .route("/api/reporter-drops", post(reporter_drops::record))
        .route_layer(from_fn_with_state(state.clone(), auth::require_report));

    Router::new()
        .merge(open)
        .merge(read)
        .merge(report)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(from_fn(error::json_errors))
        .with_state(state)
}
