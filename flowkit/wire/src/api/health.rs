//! `GET /api/v1/health`: liveness, and what this server understands, so a newer client can
//! send a newer kind of event only to a server that can store it.
//!
//! ```
//! use flowkit_wire::api::health::Health;
//! // An older server's answer, without the lists: assume only what every server knows.
//! let old: Health =
//!     serde_json::from_str(r#"{"status":"ok","database":"sqlite","version":"0.1.0"}"#).unwrap();
//! assert!(old.accepts_event_kind("state"));
//! assert!(!old.accepts_event_kind("run_record"));
//! ```

use serde::{Deserialize, Serialize};

/// The health answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok` when the server answers.
    #[cfg_attr(feature = "openapi", schema(example = "ok"))]
    pub status: String,
    /// `sqlite` or `postgres`.
    #[cfg_attr(feature = "openapi", schema(example = "sqlite"))]
    pub database: String,
    /// The server's version.
    #[cfg_attr(feature = "openapi", schema(example = "0.1.0"))]
    pub version: String,
    /// API versions served, e.g. `["v1"]` (under `/api/v1`).
    #[serde(default = "default_api_versions")]
    pub api_versions: Vec<String>,
    /// The event kinds `POST /api/v1/events` stores, e.g. `["state", "log"]`.
    #[serde(default = "default_event_kinds")]
    pub event_kinds: Vec<String>,
    /// The state types this server knows.
    #[serde(default)]
    pub state_types: Vec<String>,
}

/// The event kinds every server stores: what an answer without `event_kinds` means.
pub const BASE_EVENT_KINDS: [&str; 2] = ["state", "log"];

/// The answer of `GET /api/v1/ready` when the database answers: the readiness probe (health
/// is liveness and never touches the database).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `ready`.
    #[cfg_attr(feature = "openapi", schema(example = "ready"))]
    pub status: String,
    /// `sqlite` or `postgres`.
    #[cfg_attr(feature = "openapi", schema(example = "postgres"))]
    pub database: String,
}

fn default_event_kinds() -> Vec<String> {
    BASE_EVENT_KINDS.iter().map(|k| k.to_string()).collect()
}

fn default_api_versions() -> Vec<String> {
    vec![crate::api::VERSION.to_string()]
}

impl Health {
    /// Whether this server stores events of `kind` (e.g. `"log"`).
    pub fn accepts_event_kind(&self, kind: &str) -> bool {
        self.event_kinds.iter().any(|k| k == kind)
    }
}
