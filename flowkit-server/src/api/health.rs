//! `GET /api/v1/health`: liveness, the database backend, the server version and what it
//! understands (API versions, event kinds, state types), so a newer client sends a newer kind
//! of event only to a server that stores it. Open (no key), so load balancers and `curl` can
//! probe it.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use flowkit_wire::api::health::{BASE_EVENT_KINDS, Health};
use flowkit_wire::state::StateType;

/// Says the server is up.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "server",
    responses((status = 200, description = "The server is up", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        database: state.store().backend_name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_versions: vec![flowkit_wire::api::VERSION.to_string()],
        event_kinds: BASE_EVENT_KINDS.iter().map(|k| k.to_string()).collect(),
        state_types: StateType::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
    })
}
