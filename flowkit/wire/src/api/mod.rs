//! The bodies of the HTTP API, as the server answers them and clients send them: one
//! definition each, used by the server, the reporter, the typed client and the CLI.
//!
//! Every route lives under [`PREFIX`] (`/api/v1`); `/api/...` is kept as an alias of it.
//!
//! | module | bodies of |
//! |---|---|
//! | `alerts` (feature `alerts`) | `POST /alert-rules`, `GET /alert-rules…`, deliveries |
//! | [`concurrency_limits`] | `PUT /concurrency-limits/{tag}`, `GET /concurrency-limits…`, `DELETE /concurrency-limits/{tag}` (tag limits of deployed runs) |
//! | [`error`] | every error response: `{"error": {"code", "message"}}` |
//! | [`deployments`] | `POST /deployments`, `GET /deployments…`, `POST /deployments/{flow}/{name}/runs` |
//! | [`keys`] | `POST /keys`, `GET /keys`, `DELETE /keys/{key}` (API keys at runtime) |
//! | [`ingest`] | `POST /events` (the answer, and the limits an event must respect) and `POST /reporter-drops` |
//! | [`runs`] | `GET /flow-runs`, `/flow-runs/{id}`, `/flow-runs/{id}/task-runs` |
//! | [`schedules`] | the schedules of a deployment |
//! | [`run_actions`] | `POST /flow-runs/{id}/cancel`, `/flow-runs/cancel`, `/flow-runs/{id}/retry`, `GET /flow-runs/{id}/result` |
//! | [`workers`] | `POST /workers/claim`, `/workers/heartbeat`, `/flow-runs/{id}/finish`, `/flow-runs/{id}/release` |
//! | [`logs`] | `GET /flow-runs/{id}/logs` |
//! | [`graph`] | `GET /flow-runs/{id}/graph` |
//! | [`stats`] | `GET /stats` |
//! | [`stream`] | `GET /stream` (server-sent events) |
//! | [`health`] | `GET /health`, which also says what this server understands |
//! | [`page`] | pages and cursors of every list |

#[cfg(feature = "alerts")]
pub mod alerts;
pub mod concurrency_limits;
pub mod deployments;
pub mod error;
pub mod graph;
pub mod health;
pub mod ingest;
pub mod keys;
pub mod logs;
pub mod page;
pub mod run_actions;
pub mod runs;
pub mod schedules;
pub mod stats;
pub mod stream;
pub mod whole;
pub mod workers;

/// The OpenAPI schema of a list of tags: at most [`ingest::MAX_TAGS`], each 1 to
/// [`ingest::MAX_NAME_CHARS`] characters and not blank.
#[cfg(feature = "openapi")]
pub fn tag_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(ingest::MAX_NAME_CHARS))
                .pattern(Some("\\S")),
        )
        .max_items(Some(ingest::MAX_TAGS))
        .build()
}

/// The OpenAPI schema of a JSON Schema (2020-12): an object, or `true`/`false`.
#[cfg(feature = "openapi")]
pub fn json_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Boolean]))
        .build()
}

/// The path every route of this version of the API lives under.
pub const PREFIX: &str = "/api/v1";

/// The version of the API this crate describes: the last segment of [`PREFIX`].
pub const VERSION: &str = "v1";
