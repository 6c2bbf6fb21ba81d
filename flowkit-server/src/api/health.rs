//! `GET /api/health`: liveness, the database backend and the server version. Open (no key),
//! so load balancers and `curl` can probe it.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The health answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    pub status: String,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub database: String,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
}

/// Says the server is up.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "server",
    responses((status = 200, description = "The server is up", body = Health))
)]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        database: state.store().backend_name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
