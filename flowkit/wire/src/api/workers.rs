//! Workers: the processes that run deployed flows (`flowkit::serve`). They never get database
//! credentials; they claim triggered runs over HTTP with a key of scope `worker`, hold each
//! claimed run by a *lease* they renew with heartbeats, and finish or hand back each run.
//!
//! | route | scope | body in | body out |
//! |---|---|---|---|
//! | `POST /workers/claim` | `worker` | [`ClaimRequest`] | 200 [`ClaimResponse`] (possibly no runs, after the long-poll) |
//! | `POST /workers/heartbeat` | `worker` | [`HeartbeatRequest`] | 200 [`HeartbeatResponse`] |
//! | `POST /flow-runs/{id}/finish` | `worker` | [`FinishRequest`] | 200 the [`Run`](crate::api::runs::Run); 409 `stale_lease` |
//! | `POST /flow-runs/{id}/release` | `worker` | [`ReleaseRequest`] | 200 the [`Run`](crate::api::runs::Run), `Scheduled` again; 409 `stale_lease` |
//!
//! # Leases and fencing tokens
//!
//! A claim moves a `Scheduled` run to `Pending` and gives it a lease of [`DEFAULT_LEASE`]
//! (configurable on the server) on the database's clock, and a *fencing token*: a number that
//! grows with every claim of the run. The worker sends the token with the heartbeat, finish and
//! release calls and in [`Event::lease`](crate::Event::lease) of every event of the run (its
//! task runs' too). Anything carrying an older token than the run's is refused: calls with 409
//! `stale_lease`, events one by one (counted, never applied). So once a lease has expired and
//! the server has decided the run's fate, its old worker can no longer change it.
//!
//! When a lease expires (the worker died, hung, or lost the network), the reaper of any server
//! replica makes the run `Crashed` and, if the run has attempts left (the flow's `retries`),
//! re-queues it as the next attempt of the same run (`Scheduled`, attempt n+1); a run that was
//! `Cancelling` becomes `Cancelled`. Concurrency limits count leased runs, so a dead worker's
//! slot comes back when its lease ends.
//!
//! ```
//! use flowkit_wire::api::workers::{ClaimRequest, Served};
//!
//! let claim: ClaimRequest = serde_json::from_value(serde_json::json!({
//!     "worker": "0192f0c4-6a1e-7000-8000-000000000001",
//!     "worker_name": "build-7:4242",
//!     "deployments": [{"flow": "train", "name": "nightly", "version": "3f2a@0.1.0"}],
//!     "max_runs": 4,
//!     "wait_seconds": 20
//! })).unwrap();
//! assert_eq!(claim.deployments[0], Served::new("train", "nightly", "3f2a@0.1.0"));
//! ```

use crate::event::Event;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;
use uuid::Uuid;

/// How long a lease lasts unless renewed, by default (the server's `--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The longest a claim waits for a run ([`ClaimRequest::wait_seconds`]).
pub const MAX_CLAIM_WAIT_SECONDS: u32 = 30;

/// The most runs one claim may ask for ([`ClaimRequest::max_runs`]).
pub const MAX_CLAIM_RUNS: u32 = 100;

/// The most deployments (versions) one worker may serve ([`ClaimRequest::deployments`]).
pub const MAX_SERVED: usize = 1000;

/// The most leases one heartbeat may renew ([`HeartbeatRequest::leases`]).
pub const MAX_LEASES_PER_HEARTBEAT: usize = 10_000;

/// The largest result a worker may send ([`FinishRequest::result`], as JSON bytes). A flow
/// whose output is larger finishes `Failed`, saying so.
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// One version of one deployment that a worker runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Served {
    /// The flow's name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub flow: String,
    /// The deployment's name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub name: String,
    /// The version this worker runs (as registered).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub version: String,
}

impl Served {
    /// `flow`/`name` at `version`.
    pub fn new(flow: &str, name: &str, version: &str) -> Served {
        Served {
            flow: flow.into(),
            name: name.into(),
            version: version.into(),
        }
    }
}

/// A worker asks for runs to execute: `POST /workers/claim`.
///
/// The server answers at once when runs are waiting, else holds the request up to
/// `wait_seconds` (long-poll) and answers as soon as a run it may claim is triggered. A run is
/// claimable when it is `Scheduled`, due (`scheduled_for` passed), of a deployment in
/// `deployments` (at the pinned version, if the trigger pinned one) and under its deployment's
/// concurrency limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The worker's id: a UUID it draws when it starts, the same in every call.
    pub worker: Uuid,
    /// Who the worker is, for people: `host:pid`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub worker_name: String,
    /// What it runs (registered before with `POST /deployments`); at most [`MAX_SERVED`].
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub deployments: Vec<Served>,
    /// At most this many runs (1 to [`MAX_CLAIM_RUNS`]): the worker's free slots.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    #[serde(deserialize_with = "crate::api::whole::u32")]
    pub max_runs: u32,
    /// Wait up to this many seconds for a run (0 to [`MAX_CLAIM_WAIT_SECONDS`]; default 0).
    #[serde(default, deserialize_with = "crate::api::whole::u32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 30))]
    pub wait_seconds: u32,
}

/// The runs a claim got: `POST /workers/claim`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// The runs now leased to the worker (none when the wait ended without one).
    pub runs: Vec<ClaimedRun>,
    /// How long a lease lasts unless renewed: heartbeat well within it (a third is usual).
    pub lease_seconds: u32,
}

/// A run leased to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedRun {
    /// The run to execute: the worker runs the flow with this run id.
    pub run_id: Uuid,
    /// The flow's name.
    pub flow: String,
    /// The deployment's name.
    pub name: String,
    /// The version to run.
    pub version: String,
    /// The parameters, defaults applied, validated against the version's schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Map<String, Value>,
    /// The attempt this claim is (1 for a first run; n+1 after a crash or a retry).
    pub attempt: u32,
    /// How many attempts the run may have in all (the flow's `retries` + 1): the worker runs
    /// attempts `attempt..=max_attempts` itself when the flow fails.
    pub max_attempts: u32,
    /// The fencing token: send it with every call and event of this run.
    pub token: u64,
    /// The run's tags (the deployment's and the trigger's).
    pub tags: Vec<String>,
}

/// A lease a worker holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldLease {
    /// The run.
    pub run_id: Uuid,
    /// Its fencing token.
    #[serde(deserialize_with = "crate::api::whole::u64")]
    pub token: u64,
}

/// A worker is alive: `POST /workers/heartbeat`, one per worker every few seconds (a third of
/// the lease is usual), sent from a thread of its own so that a flow blocking the async
/// runtime cannot make its runs look crashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The worker's id.
    pub worker: Uuid,
    /// `host:pid`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub worker_name: String,
    /// What it serves (keeps it listed as a live worker of these deployments).
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub deployments: Vec<Served>,
    /// Every lease it holds: each one still current is extended by one lease from now.
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub leases: Vec<HeldLease>,
}

/// What a heartbeat tells the worker: `POST /workers/heartbeat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// How long the renewed leases last.
    pub lease_seconds: u32,
    /// Runs to cancel (someone asked; they are `Cancelling`): cancel them and finish them
    /// `Cancelled`.
    pub cancel: Vec<Uuid>,
    /// Leases the worker no longer holds (expired and decided by the server, or the run moved
    /// on): stop these runs at once; nothing they send will be accepted.
    pub lost: Vec<Uuid>,
}

/// A worker's run ended: `POST /flow-runs/{id}/finish`.
///
/// In one transaction the server stores the final state (at the database's clock, so it is the
/// run's latest whatever the worker's clock says), the result, and ends the lease. The same
/// event sent again later by the reporter is a duplicate by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    /// The lease's fencing token.
    #[serde(deserialize_with = "crate::api::whole::u64")]
    pub token: u64,
    /// The flow run's final state event, as the runtime emitted it.
    pub event: Event,
    /// The flow's output as JSON, for a `Completed` run (at most [`MAX_RESULT_BYTES`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Value>,
}

/// A worker hands a run back unstarted or interrupted, e.g. when it shuts down:
/// `POST /flow-runs/{id}/release`. The run is `Scheduled` again, with the same attempt, for
/// another worker to claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The lease's fencing token.
    #[serde(deserialize_with = "crate::api::whole::u64")]
    pub token: u64,
    /// Why (shown as the state's message).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A worker serving a deployment, as the deployment's detail shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveWorker {
    /// The worker's id.
    pub id: Uuid,
    /// `host:pid`.
    pub name: String,
    /// The versions of the deployment it serves.
    pub versions: Vec<String>,
    /// Its last claim or heartbeat.
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_claim_field_is_refused() {
        let err = serde_json::from_value::<ClaimRequest>(serde_json::json!({
            "worker": Uuid::nil(), "worker_name": "w", "deployments": [], "max_run": 3
        }))
        .expect_err("unknown field");
        assert!(err.to_string().contains("max_run"), "{err}");
    }

    #[test]
    fn a_heartbeat_answer_reads_with_parts_missing() {
        let reply: HeartbeatResponse = serde_json::from_value(serde_json::json!({
            "lease_seconds": 30, "cancel": [], "lost": []
        }))
        .expect("reply");
        assert_eq!(reply.lease_seconds, 30);
    }
}
