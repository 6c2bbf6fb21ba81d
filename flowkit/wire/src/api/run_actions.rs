//! What other teams do to a flow run besides reading it: cancel it, retry it from its failure,
//! and read its result.
//!
//! | route | scope | body in | body out |
//! |---|---|---|---|
//! | `POST /flow-runs/{id}/cancel` | `trigger` | [`CancelRequest`] (optional) | 200 the [`Run`](crate::api::runs::Run): `Cancelled`, or `Cancelling` while its worker stops it; 409 `conflict` for a run already final |
//! | `POST /flow-runs/cancel` | `trigger` | [`BulkCancel`] | 200 [`BulkCancelled`] |
//! | `POST /flow-runs/{id}/retry` | `trigger` | | 200 the [`Run`](crate::api::runs::Run), `Scheduled` as attempt n+1; 409 `conflict` unless it is a deployed run that ended `Failed`, `Crashed`, `Cancelled` or `TimedOut` |
//! | `GET /flow-runs/{id}/result?wait=N` | `read` | | 200 the output JSON; 202 + the [`Run`](crate::api::runs::Run) while not final; 409 `run_not_completed` with the `state` for a run that ended otherwise |
//!
//! `wait` (here) and `Prefer: wait=N` (on a trigger) are whole seconds, at most
//! [`MAX_WAIT_SECONDS`]: the server answers as soon as the run is final, or after N seconds
//! with the run as it stands.
//!
//! ```
//! use flowkit_wire::api::run_actions::prefer_wait;
//! assert_eq!(prefer_wait("wait=10"), Ok(Some(10)));
//! assert_eq!(prefer_wait("respond-async, wait=5"), Ok(Some(5)));
//! assert_eq!(prefer_wait("return=minimal"), Ok(None));
//! assert!(prefer_wait("wait=61").is_err());
//! ```

use crate::state::StateType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest wait a caller may ask for, in seconds (`Prefer: wait=N`, `?wait=N`).
pub const MAX_WAIT_SECONDS: u32 = 60;

/// The largest result shown inline in a [`Run`](crate::api::runs::Run) (`result`), as JSON
/// bytes; a larger one is read from `GET /flow-runs/{id}/result`.
pub const MAX_INLINE_RESULT_BYTES: usize = 1024 * 1024;

/// The most runs one bulk cancel touches ([`BulkCancel::limit`]).
pub const MAX_BULK_CANCEL: u32 = 1000;

/// The `wait` preference of a `Prefer` header (RFC 7240): `Ok(None)` when absent, an error
/// saying what is accepted when it is not a whole number of seconds within
/// [`MAX_WAIT_SECONDS`].
pub fn prefer_wait(header: &str) -> Result<Option<u32>, String> {
    for preference in header.split(',') {
        let mut parts = preference.splitn(2, '=');
        let name = parts.next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("wait") {
            continue;
        }
        let value = parts.next().unwrap_or("").trim().trim_matches('"');
        return match value.parse::<u32>() {
            Ok(n) if n <= MAX_WAIT_SECONDS => Ok(Some(n)),
            _ => Err(format!(
                "`Prefer: wait={value}`: give a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"
            )),
        };
    }
    Ok(None)
}

/// The `Prefer` preference that asks for an answer without a body (RFC 7240): a worker sends
/// it with its finish, which then answers 204.
pub const PREFER_RETURN_MINIMAL: &str = "return=minimal";

/// Whether a `Prefer` header holds [`PREFER_RETURN_MINIMAL`] (any case, parameters after `;`
/// ignored).
///
/// ```
/// use flowkit_wire::api::run_actions::prefers_return_minimal;
/// assert!(prefers_return_minimal("wait=5, return=minimal; x=1"));
/// assert!(!prefers_return_minimal("return=representation"));
/// ```
pub fn prefers_return_minimal(header: &str) -> bool {
    header.split(',').any(|preference| {
        preference
            .split(';')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case(PREFER_RETURN_MINIMAL))
    })
}

/// Why a run is cancelled (optional body of `POST /flow-runs/{id}/cancel`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Shown as the state's message.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancel every non-final flow run that matches: `POST /flow-runs/cancel`. At least one filter
/// is required; runs are taken oldest first, at most `limit` per call (`more` says whether to
/// call again).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkCancel {
    /// Only runs of this deployment (`flow/name`).
    #[serde(default)]
    pub deployment: Option<String>,
    /// Only runs of this flow.
    #[serde(default)]
    pub flow_name: Option<String>,
    /// Only runs in one of these states (non-final ones; default: all non-final states).
    #[serde(default)]
    pub states: Vec<StateType>,
    /// Only runs with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only runs created before this instant.
    #[serde(default)]
    pub created_before: Option<DateTime<Utc>>,
    /// Why (the states' message).
    #[serde(default)]
    pub reason: Option<String>,
    /// At most this many runs (1 to [`MAX_BULK_CANCEL`], default 100).
    #[serde(default, deserialize_with = "crate::api::whole::opt_u32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
}

/// What a bulk cancel did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkCancelled {
    /// Runs now `Cancelled` (they had not started).
    pub cancelled: Vec<Uuid>,
    /// Runs now `Cancelling` (their workers stop them).
    pub cancelling: Vec<Uuid>,
    /// Whether more runs match: call again.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_reads_only_whole_seconds_in_range() {
        assert_eq!(prefer_wait(""), Ok(None));
        assert_eq!(prefer_wait("WAIT=0"), Ok(Some(0)));
        assert_eq!(prefer_wait("wait=\"60\""), Ok(Some(60)));
        for bad in ["wait=", "wait=1.5", "wait=-1", "wait=61", "wait=soon"] {
            let err = prefer_wait(bad).expect_err(bad);
            assert!(err.contains("0 to 60"), "{err}");
        }
    }
}
