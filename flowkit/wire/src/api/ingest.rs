//! `POST /api/v1/events` — a JSON array of [`Event`](crate::Event)s — and
//! `POST /api/v1/reporter-drops`: what a reporter sends and what the server answers.
//!
//! The constants are the limits the server checks on each event; a client may check them
//! first. Over-long messages are truncated by the server (ending with [`TRUNCATION_MARK`]),
//! everything else over a limit rejects the one event, never the batch.
//!
//! ```
//! use flowkit_wire::api::ingest::IngestResponse;
//! let answer: IngestResponse =
//!     serde_json::from_str(r#"{"accepted":2,"duplicates":1,"rejected":[]}"#).unwrap();
//! assert_eq!(answer.stored(), 3);
//! ```

use crate::api::error::ErrorDetail;
use serde::{Deserialize, Serialize};

/// Longest run name, task key, tag, deployment, version, worker or cache key, in characters.
pub const MAX_NAME_CHARS: usize = 1000;
/// Longest log message or state message kept, in bytes; longer ones are truncated.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest `fields` of a log event, as JSON bytes; larger is rejected.
pub const MAX_FIELDS_BYTES: usize = 64 * 1024;
/// Largest `details.parameters` of a flow run, as JSON bytes; larger is rejected.
pub const MAX_PARAMETERS_BYTES: usize = 256 * 1024;
/// Most tags of a run.
pub const MAX_TAGS: usize = 100;
/// Most upstream runs of a run.
pub const MAX_UPSTREAM: usize = 10_000;
/// How far ahead of the server's clock a timestamp may be, in seconds (clock skew between
/// machines): one day.
pub const MAX_CLOCK_SKEW_SECS: i64 = 24 * 60 * 60;
/// Most later states of one run record ([`EventBody::RunRecord`](crate::EventBody::RunRecord));
/// a record with more is rejected.
pub const MAX_RECORD_LATER: usize = 1000;
/// Deepest nesting of a JSON value a client sends inside an event (parameters, log fields,
/// results): deeper parts are replaced by [`DEPTH_MARK`] ([`cap_depth`]). The server parses
/// each event with a recursion limit of 128 levels and rejects (alone) an event nested deeper.
pub const MAX_VALUE_DEPTH: usize = 64;
/// What replaces a part of a value nested deeper than [`MAX_VALUE_DEPTH`].
pub const DEPTH_MARK: &str = "[flowkit: nested deeper than 64 levels, cut here]";

/// Replaces every part of `value` nested deeper than `max_depth` levels (the value itself is
/// level 1) by the string [`DEPTH_MARK`]. Returns how many parts were replaced. Recurses at
/// most `max_depth` levels, whatever the depth of `value`.
///
/// ```
/// use flowkit_wire::api::ingest::{DEPTH_MARK, cap_depth};
/// let mut v = serde_json::json!({"a": {"b": {"c": 1}}, "d": 2});
/// assert_eq!(cap_depth(&mut v, 2), 1);
/// assert_eq!(v, serde_json::json!({"a": {"b": DEPTH_MARK}, "d": 2}));
/// ```
pub fn cap_depth(value: &mut serde_json::Value, max_depth: usize) -> usize {
    use serde_json::Value;
    fn walk(value: &mut Value, left: usize) -> usize {
        let children: Box<dyn Iterator<Item = &mut Value>> = match value {
            Value::Array(items) => Box::new(items.iter_mut()),
            Value::Object(map) => Box::new(map.values_mut()),
            _ => return 0,
        };
        let mut cut = 0;
        for child in children {
            if left == 0 && matches!(child, Value::Array(_) | Value::Object(_)) {
                *child = Value::String(DEPTH_MARK.to_string());
                cut += 1;
            } else if left > 0 {
                cut += walk(child, left - 1);
            }
        }
        cut
    }
    if max_depth == 0 {
        return 0;
    }
    walk(value, max_depth - 1)
}

/// What ends a message the server truncated.
pub const TRUNCATION_MARK: &str = "… [truncated by flowkit-server]";

/// The answer to a batch of events (status 202).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestResponse {
    /// Events stored for the first time.
    pub accepted: usize,
    /// Valid events whose id was already stored: nothing changed for them.
    pub duplicates: usize,
    /// Events of a `kind` this server does not know (from a newer client): acknowledged and
    /// not stored. A client should only send the kinds `GET /api/v1/health` lists. Absent
    /// when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ignored: usize,
    /// Events not stored, by their index in the batch.
    pub rejected: Vec<RejectedEvent>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl IngestResponse {
    /// Events the server holds after this answer (new or already stored).
    pub fn stored(&self) -> usize {
        self.accepted + self.duplicates
    }
}

/// An event of the batch that was not stored, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedEvent {
    /// Position in the submitted array, from 0.
    pub index: usize,
    /// Code `invalid_event`; the message names the field.
    pub error: ErrorDetail,
}

/// The body of `POST /api/v1/reporter-drops`: a reporter had to drop events (its spool was
/// full), so the dashboard can warn that some runs are incomplete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReporterDrops {
    /// Events dropped since the last report (at most 2^63 - 1).
    #[cfg_attr(feature = "openapi", schema(maximum = 9_223_372_036_854_775_807_f64))]
    pub dropped: u64,
    /// The reporting process, `host:pid` (1 to 1000 characters).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "build-7:4242", min_length = 1, max_length = 1000)
    )]
    pub worker: String,
}

/// Most workers `GET /api/v1/reporter-drops` lists (the ones that dropped most recently).
pub const MAX_REPORTER_DROPS_LISTED: usize = 100;

/// What one reporting process dropped, as the server has counted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerDrops {
    /// The reporting process, `host:pid`.
    #[cfg_attr(feature = "openapi", schema(example = "build-7:4242"))]
    pub worker: String,
    /// Events it dropped in all, over every report it sent.
    pub dropped: u64,
    /// When its last report of drops arrived.
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

/// The answer of `GET /api/v1/reporter-drops`: events reporters had to drop, so runs may be
/// incomplete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReporterDropsSummary {
    /// Events dropped by every reporter, in all (saturating).
    pub total_dropped: u64,
    /// How many reporting processes dropped events.
    pub workers: u64,
    /// The workers that dropped most recently first, at most [`MAX_REPORTER_DROPS_LISTED`].
    pub items: Vec<WorkerDrops>,
}
