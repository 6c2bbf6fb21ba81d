//! `GET /api/v1/health`: liveness, the database backend, the server version and what it
//! understands (API versions, event kinds, state types), so a newer client sends a newer kind
//! of event only to a server that stores it. Open (no key), so load balancers and `curl` can
//! probe it. It never touches the database: a server whose database is down is still alive
//! (restarting it would not help).
//!
//! `GET /api/v1/ready`: readiness. Touches the database (`SELECT 1`) within [`READY_TIMEOUT`]
//! and answers 503 `unavailable` when it cannot, so a load balancer sends traffic elsewhere
//! during an outage. Open too.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::State;
use flowkit_wire::api::health::{BASE_EVENT_KINDS, Health, Readiness};
use flowkit_wire::state::StateType;
use std::time::Duration;

/// Longest wait of the readiness probe for the database.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Says the server is up (liveness; see [`ready`] for the database).
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "server",
    responses((status = 200, description = "The server is up (whether its database answers is `/api/v1/ready`'s question)", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        database: state.store().backend_name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_versions: vec![flowkit_wire::api::VERSION.to_string()],
        event_kinds: BASE_EVENT_KINDS
            .iter()
            .chain([&flowkit_wire::event::RUN_RECORD_KIND])
            .map(|k| k.to_string())
            .collect(),
        state_types: StateType::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
    })
}

/// Says whether the server can serve requests: its database answers within 2 s and the API
/// keys stored in it are read.
#[utoipa::path(
    get,
    path = "/api/v1/ready",
    tag = "server",
    responses(
        (status = 200, description = "The database answers and the stored API keys are read", body = Readiness),
        (status = 503, description = "`unavailable`: the database did not answer within 2 s, the stored API keys could not be read, or the server is shutting down (with `Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before probing again"))),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let unavailable = |why: String| {
        ApiError::unavailable(
            format!("not ready: {why}"),
            crate::error::UNAVAILABLE_RETRY_AFTER_SECS,
        )
    };
    if *state.shutdown_signal().borrow() {
        return Err(unavailable("the server is shutting down".into()));
    }
    // Ready means requests are served: the database answers, and the stored API keys are
    // read (a copy left stale by an outage would refuse keys with 503 until re-read).
    let check = async {
        state.store().ping().await.map_err(|err| {
            tracing::warn!(error = %err, "readiness: the database failed");
            "the database does not answer".to_string()
        })?;
        state
            .key_ring()
            .refresh_if_old(state.store())
            .await
            .map_err(|_| "the stored API keys cannot be read".to_string())
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(Json(Readiness {
            status: "ready".to_string(),
            database: state.store().backend_name().to_string(),
        })),
        Ok(Err(why)) => Err(unavailable(why)),
        Err(_) => Err(unavailable(format!(
            "the database did not answer within {} s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}
