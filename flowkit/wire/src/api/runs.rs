//! Runs as the API shows them: `GET /api/v1/flow-runs` (a [`Page`](crate::api::page::Page) of
//! [`Run`]), `GET /api/v1/flow-runs/{id}` (a [`Run`]) and
//! `GET /api/v1/flow-runs/{id}/task-runs` ([`TaskRuns`]).

use crate::event::RunKind;
use crate::state::StateType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A run (flow or task): identity, latest state and the facts of its first event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// The run's id (UUID v7).
    pub id: Uuid,
    /// `flow` or `task`.
    pub kind: RunKind,
    /// Display name.
    pub name: String,
    /// The function's path (from the run's details; empty until they arrive).
    pub task_key: String,
    /// The calling run.
    pub parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run.
    pub flow_run_id: Option<Uuid>,
    /// The latest state's type.
    pub state: StateType,
    /// The latest state's message (the error of a failed run).
    pub state_message: Option<String>,
    /// When the latest state was entered.
    pub state_timestamp: DateTime<Utc>,
    /// The attempt of the latest state.
    pub attempt: u32,
    /// Timestamp of the earliest event of the run.
    pub created: DateTime<Utc>,
    /// When the first attempt started running.
    pub started: Option<DateTime<Utc>>,
    /// When the run reached a final state.
    pub ended: Option<DateTime<Utc>>,
    /// Tags.
    pub tags: Vec<String>,
    /// Flow parameters (JSON).
    pub parameters: Option<serde_json::Value>,
    /// Upstream runs.
    pub upstream: Vec<Uuid>,
    /// Cache key, when cached.
    pub cache_key: Option<String>,
    /// Deployment that created the run.
    pub deployment: Option<String>,
    /// Version of the task or flow.
    pub version: Option<String>,
    /// `host:pid` that ran it.
    pub worker: Option<String>,
    /// Not to start before this instant (a triggered run's `scheduled_for`); absent for runs
    /// that were not scheduled ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Who created the run. For a run the server created: `key:NAME` (a trigger with an API
    /// key), `local` (a trigger on a server without keys), `dashboard:key:NAME` or `dashboard`
    /// (from the dashboard), `schedule:ID` (a schedule), `backfill:WHO` (a backfill, with who
    /// asked for it). For a run another run started (a task run, a subflow): `run:UUID`, its
    /// parent run. Absent for a top-level run the runtime reported (a flow run by `cargo run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// For a run a schedule created (`created_by` = `schedule:ID`): how many earlier instants
    /// of that schedule it stands for, which got no run of their own (catch-up `latest` after
    /// an outage, overlap `skip`). Only in `GET /flow-runs/{id}`; absent in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_instants: Option<u64>,
    /// The output of a `Completed` deployed run, inline when it is at most
    /// [`MAX_INLINE_RESULT_BYTES`](crate::api::run_actions::MAX_INLINE_RESULT_BYTES) of JSON;
    /// only in answers that wait for the run (`Prefer: wait`); otherwise read it from
    /// `GET /flow-runs/{id}/result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<serde_json::Value>,
}

/// One state a run entered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateEntry {
    /// The event that carried it.
    pub event_id: Uuid,
    /// State type.
    pub state: StateType,
    /// State message.
    pub message: Option<String>,
    /// Attempt.
    pub attempt: u32,
    /// When.
    pub timestamp: DateTime<Utc>,
}

/// A run with its state history, oldest state first: one bar of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunWithStates {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Every state it entered, retries included.
    pub states: Vec<StateEntry>,
}

/// A page of a flow run's task runs (and subflow runs) with their state histories, oldest
/// first by `(created, id)`, keyset-paginated like every list
/// ([`Page`](crate::api::page::Page)): `limit` 1 to
/// [`MAX_PAGE_SIZE`](crate::api::page::MAX_PAGE_SIZE), by default
/// [`TASK_RUNS_DEFAULT_PAGE_SIZE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRuns {
    /// The flow run itself, with its own states (on every page).
    pub flow_run: RunWithStates,
    /// Its children on this page, oldest first.
    pub items: Vec<RunWithStates>,
    /// Pass as `cursor` to get the next page; absent (null) on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Task runs of one page of `GET /flow-runs/{id}/task-runs` when the request does not say:
/// the largest page, so a client that does not follow `next_cursor` sees as much as one
/// bounded answer holds.
pub const TASK_RUNS_DEFAULT_PAGE_SIZE: u32 = crate::api::page::MAX_PAGE_SIZE;
