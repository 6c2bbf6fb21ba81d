//! `GET /api/v1/flow-runs/{id}/logs`: a [`Page`](crate::api::page::Page) of [`LogEntry`],
//! oldest first.

use crate::event::LogLevel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One log line of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// The event that carried it.
    pub event_id: Uuid,
    /// The run that logged it.
    pub run_id: Uuid,
    /// Its flow run.
    pub flow_run_id: Option<Uuid>,
    /// Name of the run that logged it.
    pub run_name: String,
    /// Level.
    pub level: LogLevel,
    /// Message, verbatim (not HTML-escaped: escape it when displaying).
    pub message: String,
    /// Other fields of the `tracing` event.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Attempt.
    pub attempt: u32,
    /// When.
    pub timestamp: DateTime<Utc>,
}
