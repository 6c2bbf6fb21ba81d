//! Where runs are kept: one [`Backend`] trait, implemented by [`Store`] over one of two
//! databases chosen from the URL scheme (`sqlite://…` or `postgres://…`), each behind a cargo
//! feature of the same name (both on by default). The same conformance suite
//! (`tests/store_conformance/`) runs against both.
//!
//! - `queries`: every query written once, generic over a `dialect` that holds what the two
//!   databases spell differently;
//! - `rows`: turning batches of events into rows, and the merge rule of a run's row;
//! - `sqlite`, `postgres`: connecting, and what really is per backend: how writes reach the
//!   database (SQLite's single batching writer, PostgreSQL's pool with retries) and the bulk
//!   insert of a batch's rows.
//!
//! The store keeps, per run, its latest state (the one with the greatest
//! `(timestamp, event id)`, so events may arrive out of order), its state history (for the
//! timeline, retries included) and its log lines. Ingestion is idempotent by event id.

use chrono::{DateTime, Utc};
use flowkit_wire::api::deployments::{DeploymentSpec, DeploymentSummary, DeploymentVersion};
use flowkit_wire::api::graph::TaskGroup;
use flowkit_wire::api::run_actions::BulkCancelled;
use flowkit_wire::api::workers::{ClaimedRun, LiveWorker, Served};
use flowkit_wire::event::{Event, LogLevel};
use flowkit_wire::state::StateType;
use queries::{Maintenance, Written};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("flowkit-server needs a database: enable its `sqlite` or `postgres` feature");

pub mod alerts;
pub mod api_keys;
mod budget;
mod cursor;
mod dialect;
mod leases;
#[cfg(feature = "postgres")]
mod pg_batch;
#[cfg(feature = "postgres")]
mod postgres;
mod queries;
mod rows;
pub mod schedules;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_batch;
#[cfg(feature = "sqlite")]
mod sqlite_ingest;
#[cfg(feature = "sqlite")]
mod sqlite_rows;
#[cfg(feature = "sqlite")]
mod sqlite_schedule_rows;
#[cfg(feature = "sqlite")]
mod sqlite_static_insert;
pub mod tag_limits;
mod worker_touches;

/// An error of the store. Constraint violations and bad input are the caller's fault;
/// everything else is a 500 with the details logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not one the server understands.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The database URL names a backend this build of the server leaves out.
    #[error(
        "this server was built without {backend} support: rebuild flowkit-server with \
         `--features {feature}` to use a {feature}:// database URL"
    )]
    NotCompiledIn {
        /// The database, as people call it.
        backend: &'static str,
        /// The cargo feature of `flowkit-server` that brings it in.
        feature: &'static str,
    },
    /// A cursor given by a client does not decode.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The database said no.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value read from the database is not one the server can have written (the database
    /// was edited by hand, or damaged): says which and why.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The transaction a write shared with others (SQLite's group commit) failed to begin or
    /// to commit: the write did not happen.
    #[error("database error: the transaction of this write failed: {0}")]
    Commit(String),
    /// SQLite refused a statement the writer ran on its connection directly (ingestion's rows,
    /// see `store::sqlite_ingest`).
    #[error("database error: {0}")]
    Sqlite(String),
    /// The store is shutting down or its writer is gone.
    #[error("the store is closed")]
    Closed,
    /// A listing ran past its time budget and was stopped (see `budget`).
    #[error("the query ran past its budget of {0:?} and was stopped")]
    OverBudget(Duration),
}

impl StoreError {
    /// Whether the database could not be reached rather than refusing the request: no pooled
    /// connection within the acquire timeout, a connection refused, reset or cut, PostgreSQL
    /// shutting down or not yet accepting connections (SQLSTATE class 08, 57P01-57P03). The
    /// API answers these 503 `unavailable`, so a client retries instead of giving up.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            sqlx::Error::Io(_) => true,
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
            _ => false,
        }
    }
}

/// What ingesting a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// Events stored for the first time.
    pub accepted: usize,
    /// Events whose id was already stored (replays): nothing changed.
    pub duplicates: usize,
}

/// A run as stored, which is how the API shows it.
pub use flowkit_wire::api::runs::Run as RunRecord;

/// One state a run entered, with the run it belongs to (the API nests these under their runs
/// as [`flowkit_wire::api::runs::StateEntry`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The event that carried it.
    pub event_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// State type.
    pub state: StateType,
    /// State message.
    pub message: Option<String>,
    /// Attempt.
    pub attempt: u32,
    /// When.
    pub timestamp: DateTime<Utc>,
}

/// One log line of a run, as stored and as the API shows it.
pub use flowkit_wire::api::logs::LogEntry as LogRecord;

/// Filters of the flow-runs list. Every field narrows the result; `None` does not filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs whose latest state is one of these.
    pub states: Vec<StateType>,
    /// Only flows with this exact name.
    pub flow_name: Option<String>,
    /// Only runs of this deployment.
    pub deployment: Option<String>,
    /// Only runs carrying this tag.
    pub tag: Option<String>,
    /// Only runs created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only runs created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
}

/// A page request: newest first, keyset-paginated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// At most this many items. The store brings it within 1..=[`MAX_PAGE_SIZE`]; the API
    /// refuses a `limit` outside that range with a 400.
    ///
    /// [`MAX_PAGE_SIZE`]: flowkit_wire::api::page::MAX_PAGE_SIZE
    pub limit: u32,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

pub use flowkit_wire::api::page::Page;

/// Filters of a flow run's logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    /// Only lines at or above this level.
    pub min_level: Option<LogLevel>,
    /// Only lines of this run (a task run of the flow).
    pub run_id: Option<Uuid>,
}

/// Counts of flow runs by latest state over a time window, bucketed for a chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Start of the window.
    pub since: DateTime<Utc>,
    /// End of the window.
    pub until: DateTime<Utc>,
    /// Width of each bucket in seconds.
    pub bucket_seconds: u64,
    /// One entry per bucket, in time order: its start and the counts by state type.
    pub buckets: Vec<StatsBucket>,
    /// Counts by state type over the whole window.
    pub totals: Vec<(StateType, u64)>,
}

/// One bucket of [`Stats`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Flow runs created in the bucket, by their latest state type.
    pub counts: Vec<(StateType, u64)>,
}

/// What registering a deployment version did ([`Backend::register_deployment`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Registration {
    /// A new version, now the newest.
    Created(DeploymentVersion),
    /// This version was registered before with the same spec: nothing changed.
    Unchanged(DeploymentVersion),
    /// This version was registered before with another spec (returned): nothing changed.
    VersionConflict(DeploymentVersion),
    /// The flow/name belongs to another function (its `flow_key` is returned): nothing changed.
    OwnedByAnother {
        /// The function that registered the pair first.
        flow_key: String,
    },
    /// A dry run ([`Backend::check_registration`]): this version is new and would be created.
    WouldCreate,
}

/// A run to create for a trigger ([`Backend::trigger`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// Its first state event (`Scheduled`, with the run's details): stored like any event,
    /// so the run has a state history and later events of a worker merge into it.
    pub event: Event,
    /// `flow/name`: the scope of the idempotency key.
    pub deployment: String,
    /// Not to start before this instant.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// The idempotency key of the trigger, if it has one.
    pub idempotency: Option<IdempotencyClaim>,
    /// Whether the trigger named the version (only a worker serving it may claim the run).
    pub version_pinned: bool,
    /// Attempts the run may have in all (the version's `retries` + 1).
    pub max_attempts: u32,
    /// Who created it (`key:NAME`, `local`, `schedule:ID`, ...).
    pub created_by: Option<String>,
    /// The slot of the schedule that created it: at most one run per slot, ever.
    pub schedule_slot: Option<ScheduleSlot>,
}

impl NewRun {
    /// Whether the trigger can be written in one statement with others (SQLite batches
    /// triggers that claim no key).
    pub fn batchable(&self) -> bool {
        self.idempotency.is_none() && self.schedule_slot.is_none()
    }

    /// The run as [`Backend::get_run`] reads it back right after [`Backend::trigger`] created
    /// it (instants at the microsecond the database keeps; tests compare the two on both
    /// backends): the trigger answers with it without reading its row again.
    pub fn record(&self) -> Result<RunRecord, StoreError> {
        let event = &self.event;
        let flowkit_wire::event::EventBody::State { state, details } = &event.body else {
            return Err(rows::corrupt(format!(
                "the first event of triggered run {} is not a state",
                event.run_id
            )));
        };
        let stored = |at: DateTime<Utc>| rows::from_micros(rows::micros(at));
        let details = details.as_deref();
        let text = |value: Option<&std::borrow::Cow<'static, str>>| value.map(|v| v.to_string());
        let at = stored(event.timestamp)?;
        Ok(RunRecord {
            id: event.run_id,
            kind: event.run_kind,
            name: event.name.to_string(),
            task_key: details.map(|d| d.task_key.to_string()).unwrap_or_default(),
            parent_run_id: event.parent_run_id,
            flow_run_id: event.flow_run_id,
            state: state.kind,
            state_message: state.message.clone(),
            state_timestamp: at,
            attempt: event.attempt,
            created: at,
            started: (state.kind == StateType::Running).then_some(at),
            ended: state.kind.is_final().then_some(at),
            tags: details
                .map(|d| d.tags.iter().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
            parameters: details.and_then(|d| d.parameters.clone()),
            upstream: details.map(|d| d.upstream.clone()).unwrap_or_default(),
            cache_key: details.and_then(|d| d.cache_key.clone()),
            deployment: details.and_then(|d| d.deployment.clone()),
            version: details.and_then(|d| text(d.version.as_ref())),
            worker: details.and_then(|d| text(d.worker.as_ref())),
            scheduled_for: self.scheduled_for.map(stored).transpose()?,
            created_by: self.created_by.clone(),
            skipped_instants: None,
            result: None,
        })
    }
}

/// A schedule's instant, claimed by the run created for it (see `store::schedules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSlot {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The instant.
    pub instant: DateTime<Utc>,
    /// Earlier instants this run stands for (skipped by catch-up or overlap).
    pub skipped: u64,
    /// Not claimed by then, the run becomes `Late` (none: never, as for a backfill's runs,
    /// which are late by design).
    pub late_at: Option<DateTime<Utc>>,
    /// Not started by then (its schedule's `max_lateness`), the run becomes `Expired`.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What [`Backend::mark_overdue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overdue {
    /// Runs now `Late`.
    pub late: u64,
    /// Runs now `Expired`.
    pub expired: u64,
}

/// A worker, as its claims and heartbeats describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSeen {
    /// Its id.
    pub id: Uuid,
    /// `host:pid`.
    pub name: String,
    /// The versions it serves.
    pub served: Vec<Served>,
}

/// A claim ([`Backend::claim`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimOrder {
    /// Who claims.
    pub worker: WorkerSeen,
    /// At most this many runs.
    pub max_runs: u32,
    /// How long the leases last.
    pub lease: Duration,
}

/// What a heartbeat tells the worker ([`Backend::heartbeat`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// Its leased runs someone asked to cancel.
    pub cancel: Vec<Uuid>,
    /// The leases it listed that it no longer holds.
    pub lost: Vec<Uuid>,
}

/// What a call under a lease did ([`Backend::finish`], [`Backend::release`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCall {
    /// Done (or done before: the same finish again).
    Done,
    /// The token is not the run's current lease: nothing changed.
    Stale {
        /// The run's current token.
        current: u64,
        /// Whether a lease is held at all.
        held: bool,
        /// The run's state.
        state: StateType,
    },
    /// No such run.
    NotFound,
}

/// A worker's final state of a run ([`Backend::finish`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The run.
    pub run_id: Uuid,
    /// The lease's token.
    pub token: u64,
    /// The final state event's id (a later copy from the reporter is a duplicate of it).
    pub event_id: Uuid,
    /// The final state.
    pub state: StateType,
    /// Its message.
    pub message: Option<String>,
    /// The attempt.
    pub attempt: u32,
    /// The event's timestamp (the stored one is at least the database's clock).
    pub timestamp: DateTime<Utc>,
    /// The output, as JSON text, for a `Completed` run.
    pub result: Option<String>,
}

/// What an action on a run did ([`Backend::cancel`], [`Backend::retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAction {
    /// Done: the run is now in this state.
    Done(StateType),
    /// Nothing to do: the run already is in this state.
    Unchanged(StateType),
    /// Not possible from this state.
    Conflict(StateType),
    /// No such flow run.
    NotFound,
}

/// Which runs a bulk cancel takes ([`Backend::bulk_cancel`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BulkCancelFilter {
    /// Only runs of this deployment (`flow/name`).
    pub deployment: Option<String>,
    /// Only runs of this flow.
    pub flow_name: Option<String>,
    /// Only runs in these (non-final) states.
    pub states: Vec<StateType>,
    /// Only runs with this tag.
    pub tag: Option<String>,
    /// Only runs created before this.
    pub created_before: Option<DateTime<Utc>>,
    /// The states' message.
    pub reason: Option<String>,
    /// At most this many runs.
    pub limit: u32,
}

/// What one reaper pass did ([`Backend::reap`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Runs decided.
    pub runs: Vec<Uuid>,
    /// Whether one of them was re-queued (claims may take it).
    pub requeued: bool,
}

/// An idempotency key a trigger claims for the run it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The key.
    pub key: String,
    /// The fingerprint of the trigger's body.
    pub fingerprint: String,
    /// When the key is forgotten.
    pub expires: DateTime<Utc>,
}

/// A stored idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The fingerprint of the body that first used it.
    pub fingerprint: String,
    /// The run it created.
    pub run_id: Uuid,
}

/// What a trigger did ([`Backend::trigger`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Triggered {
    /// The run was created.
    Created(Uuid),
    /// The key was used before with the same body: this is the run it created.
    Replayed(Uuid),
    /// The key was used before with another body: this is the run it created.
    KeyReused(Uuid),
}

/// What the server asks of its database. Every method is safe to call concurrently; writes on
/// SQLite go through one writer task that batches them into transactions.
pub trait Backend: Send + Sync + 'static {
    /// Stores a batch of already-validated events, idempotently by event id, in one
    /// transaction (so a batch acknowledged to the client is durable).
    fn ingest(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<IngestOutcome, StoreError>> + Send;
    /// Flow runs (kind = flow), newest first by `(created, id)`.
    fn list_flow_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<RunRecord>, StoreError>> + Send;
    /// One run (flow or task).
    fn get_run(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<RunRecord>, StoreError>> + Send;
    /// Every task run and subflow run of this flow run, oldest first: unbounded, for tests
    /// and small flows; the API reads [`Backend::child_runs_page`].
    fn child_runs(
        &self,
        flow_run_id: Uuid,
    ) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;
    /// A page of the task runs and subflow runs of this flow run, oldest first by
    /// `(created, id)`, keyset-paginated (at most [`MAX_PAGE_SIZE`] of them).
    ///
    /// [`MAX_PAGE_SIZE`]: flowkit_wire::api::page::MAX_PAGE_SIZE
    fn child_runs_page(
        &self,
        flow_run_id: Uuid,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<RunRecord>, StoreError>> + Send;
    /// The state histories of these runs, each given as `(id, flow_run_id)`, ordered by
    /// `(timestamp, event id)`: index lookups per run, whatever the size of their flow.
    fn states_of(
        &self,
        runs: &[(Uuid, Option<Uuid>)],
    ) -> impl Future<Output = Result<Vec<StateRecord>, StoreError>> + Send;
    /// Every child of this flow run (as [`Backend::child_runs`] lists them) summed up per
    /// task name, most runs first: at most `max_groups` groups, the last one (without a
    /// name) summing up every name beyond `max_groups - 1`.
    fn child_groups(
        &self,
        flow_run_id: Uuid,
        max_groups: u32,
    ) -> impl Future<Output = Result<Vec<TaskGroup>, StoreError>> + Send;
    /// The state history of every run of a flow run (the flow itself and its children),
    /// ordered by `(timestamp, event id)`: unbounded, for tests and small flows; the API reads
    /// [`Backend::states_of`] the runs of one page.
    fn states(
        &self,
        flow_run_id: Uuid,
    ) -> impl Future<Output = Result<Vec<StateRecord>, StoreError>> + Send;
    /// Logs of a flow run (its own and its task runs'), oldest first, keyset-paginated.
    fn logs(
        &self,
        flow_run_id: Uuid,
        filter: &LogFilter,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<LogRecord>, StoreError>> + Send;
    /// Counts of flow runs by state, created in `[since, until)`, in `buckets` buckets.
    fn stats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        buckets: u32,
    ) -> impl Future<Output = Result<Stats, StoreError>> + Send;
    /// Deletes the `batch` runs first received before `cutoff`, oldest first, each with the rest
    /// of its group (a flow run's task runs go with it, even ones received after `cutoff`), and
    /// their states,
    /// logs and event ids, in one transaction; once no old run is left, also up to `batch`
    /// orphan log lines (older than `cutoff` by their own timestamp) and expired idempotency
    /// keys. "Received" is when this server (its clock, not the events' timestamps, which a
    /// client may backdate) first stored an event of the run. Returns how many runs, orphan lines and
    /// keys were deleted, which may exceed `batch`. Called repeatedly by the retention task
    /// until it returns 0.
    fn delete_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Records that a reporter dropped events (so the dashboard can say so).
    fn record_reporter_drops(
        &self,
        worker: &str,
        dropped: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Registers a version of a deployment in one transaction. The pair `flow`/`name` belongs
    /// to the `flow_key` that registered it first; a version is kept forever and never
    /// changed; a new version becomes the newest (registration order, even across servers).
    /// `fingerprint` identifies the spec's content, to tell a repeat from a conflict.
    fn register_deployment(
        &self,
        spec: &DeploymentSpec,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;
    /// What [`Backend::register_deployment`] would answer, without writing anything:
    /// [`Registration::WouldCreate`] instead of `Created`. A worker checks all its deployments
    /// this way before registering any, so a refusal leaves none registered.
    fn check_registration(
        &self,
        spec: &DeploymentSpec,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Registration, StoreError>> + Send;
    /// Deployments, most recently updated first, keyset-paginated.
    fn list_deployments(
        &self,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<DeploymentSummary>, StoreError>> + Send;
    /// A deployment's newest version and its number of versions.
    fn deployment(
        &self,
        flow: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<(DeploymentVersion, u64)>, StoreError>> + Send;
    /// One version of a deployment, or its newest when `version` is `None`.
    fn deployment_version(
        &self,
        flow: &str,
        name: &str,
        version: Option<&str>,
    ) -> impl Future<Output = Result<Option<DeploymentVersion>, StoreError>> + Send;
    /// A deployment's versions, newest first, keyset-paginated.
    fn deployment_versions(
        &self,
        flow: &str,
        name: &str,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<DeploymentVersion>, StoreError>> + Send;
    /// An idempotency key of a deployment (`flow/name`), unless it has expired.
    fn idempotency_key(
        &self,
        deployment: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;
    /// Creates a triggered run (its first state event and its row) in one transaction with its
    /// idempotency key, if any. A key already held (and not expired) creates nothing: the
    /// answer names the run it created, and whether the fingerprint matched. Concurrent
    /// triggers with one key create one run, on every backend.
    fn trigger(&self, run: NewRun) -> impl Future<Output = Result<Triggered, StoreError>> + Send;
    /// Records the worker (`last_seen`) and leases it up to `max_runs` runs, in one
    /// transaction: `Scheduled`, due, of a version it serves (the pinned one, else its newest
    /// served, written to the run), oldest first, within their deployment's concurrency limit
    /// (of the version, counted from the deployment's leased runs). Each becomes `Pending` (a
    /// server state) with a new fencing token and a lease of `lease`.
    fn claim(
        &self,
        order: ClaimOrder,
    ) -> impl Future<Output = Result<Vec<ClaimedRun>, StoreError>> + Send;
    /// Whether a run of one of the deployments `served` waits for a worker (`Scheduled` or
    /// `Late`, due): one indexed read without a lock, which a waiting claim makes before its
    /// write when woken, so a wake-up for a run another worker took costs no write. Limits and
    /// versions are not looked at: `true` may still claim nothing.
    fn claimable(&self, served: &[Served])
    -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records the worker and extends each listed lease it still holds by `lease` from now.
    fn heartbeat(
        &self,
        worker: WorkerSeen,
        leases: Vec<(Uuid, u64)>,
        lease: Duration,
    ) -> impl Future<Output = Result<HeartbeatOutcome, StoreError>> + Send;
    /// Stores a run's final state from its worker (at least the database's clock), its result,
    /// and ends the lease, in one transaction, if `token` is the run's current lease.
    fn finish(
        &self,
        finished: Finished,
    ) -> impl Future<Output = Result<LeaseCall, StoreError>> + Send;
    /// A worker hands a run back: `Scheduled` again (same attempt), or `Cancelled` if it was
    /// `Cancelling`; the lease ends. Only with the current token.
    fn release(
        &self,
        run_id: Uuid,
        token: u64,
        reason: Option<String>,
    ) -> impl Future<Output = Result<LeaseCall, StoreError>> + Send;
    /// Decides up to 100 runs whose lease expired (database clock): `Cancelling` →
    /// `Cancelled`, else `Crashed` and, with attempts left, `Scheduled` as the next attempt;
    /// the token moves on (the old worker is fenced off) and the lease ends. Safe to run on
    /// several replicas at once.
    fn reap(&self) -> impl Future<Output = Result<Reaped, StoreError>> + Send;
    /// Cancels a flow run: not leased → `Cancelled`; leased → `Cancelling` (its worker learns
    /// it from its next heartbeat); `Cancelling` → unchanged; final → conflict.
    fn cancel(
        &self,
        run_id: Uuid,
        reason: Option<String>,
    ) -> impl Future<Output = Result<RunAction, StoreError>> + Send;
    /// Cancels the oldest matching non-final flow runs, at most `filter.limit`.
    fn bulk_cancel(
        &self,
        filter: BulkCancelFilter,
    ) -> impl Future<Output = Result<BulkCancelled, StoreError>> + Send;
    /// Re-queues a deployed flow run that ended in failure as its next attempt, pinned to the
    /// version it ran.
    fn retry(&self, run_id: Uuid) -> impl Future<Output = Result<RunAction, StoreError>> + Send;
    /// The stored output of a run, as JSON bytes.
    fn run_result(
        &self,
        run_id: Uuid,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// The fencing tokens of those of `ids` that have one, with the worker each was last
    /// leased to: one indexed lookup.
    fn lease_tokens(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<HashMap<Uuid, (u64, Option<String>)>, StoreError>> + Send;
    /// Adds to a worker's count of events refused for a stale token.
    fn record_stale_events(
        &self,
        worker: &str,
        refused: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A worker's count of events refused for a stale token.
    fn stale_events(&self, worker: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The workers of a deployment seen since `since`, most recently seen first (at most 100).
    fn live_workers(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<LiveWorker>, StoreError>> + Send;
    /// The newest registered version of a deployment served by a worker seen since `since`.
    fn serving_version(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// The version a trigger naming none runs, in one read: the newest registered version
    /// served by a worker seen since `since` (with `true`), else the newest registered (with
    /// `false`); `None` when the deployment has no version.
    fn trigger_version(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<(DeploymentVersion, bool)>, StoreError>> + Send;
    /// Replaces the schedules declared in code of `flow`/`name` (see
    /// [`schedules::replace_code_schedules`]); returns how many were deleted.
    fn replace_code_schedules(
        &self,
        flow: &str,
        name: &str,
        rows: Vec<schedules::ScheduleRow>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The schedules of `flow`/`name`, those declared in code first.
    fn schedules_of(
        &self,
        flow: &str,
        name: &str,
    ) -> impl Future<Output = Result<Vec<flowkit_wire::api::schedules::Schedule>, StoreError>> + Send;

    /// One schedule, with its deployment's flow and name.
    fn schedule(
        &self,
        id: Uuid,
    ) -> impl Future<
        Output = Result<
            Option<(String, String, flowkit_wire::api::schedules::Schedule)>,
            StoreError,
        >,
    > + Send;

    /// How many earlier instants the run of schedule `schedule_id` at `instant` stands for
    /// (catch-up `latest`, overlap `skip`); none when that slot has no run.
    fn slot_skipped(
        &self,
        schedule_id: Uuid,
        instant: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Up to `limit` active schedules due at `now`, the most overdue first.
    fn due_schedules(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<schedules::DueSchedule>, StoreError>> + Send;

    /// The schedules of `ids` that are active and have a next instant, as
    /// [`Backend::due_schedules`] reads them, due or not, in no particular order (see
    /// [`schedules::active_schedules`]).
    fn active_schedules(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<schedules::DueSchedule>, StoreError>> + Send;

    /// [`Backend::due_schedules`] after the (`next_at`, id) of the last schedule of the page
    /// before (see [`schedules::due_schedules`]).
    fn due_schedules_after(
        &self,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<schedules::DueSchedule>, StoreError>> + Send;

    /// Moves a schedule's handled instants from `from` to `to` and sets when it is next due,
    /// unless another replica did first; returns whether this call moved it.
    fn advance_schedule(
        &self,
        id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Pauses (`paused_at`) or resumes (from `now`, next due at `next_at`) a schedule;
    /// returns whether it exists.
    fn set_schedule_paused(
        &self,
        id: Uuid,
        paused_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        next_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Scheduled runs past their `late_at` become `Late`, and runs not started by their
    /// `expires_at` become `Expired` (at most 100 of each per call), as of `now`.
    fn mark_overdue(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Overdue, StoreError>> + Send;

    /// Stores a schedule created over the API, unless its deployment has as many as it may
    /// (see [`schedules::insert_api_schedule`]).
    fn insert_api_schedule(
        &self,
        flow: &str,
        name: &str,
        row: schedules::ScheduleRow,
    ) -> impl Future<Output = Result<schedules::Inserted, StoreError>> + Send;

    /// Creates the runs of schedules' slots and moves schedules on, in one transaction (see
    /// [`schedules::write_slots`]): per run, whether it was created. At most the runs and
    /// schedules of one tick's batch, or the runs of one backfill (1000).
    fn write_slots(
        &self,
        runs: Vec<NewRun>,
        advances: Vec<schedules::Advance>,
    ) -> impl Future<Output = Result<schedules::SlotsWritten, StoreError>> + Send;

    /// Deletes a schedule created over the API; returns whether there was one.
    fn delete_api_schedule(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The unfinished runs among a schedule's latest ones, with their states.
    fn open_schedule_runs(
        &self,
        schedule_id: Uuid,
    ) -> impl Future<Output = Result<Vec<(Uuid, StateType)>, StoreError>> + Send;
    /// Flushes and closes (graceful shutdown: every acknowledged batch is committed).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The store the server runs on: one of the backends, chosen from the database URL.
pub struct Store {
    db: Db,
    /// The workers whose claims recorded them lately.
    touches: worker_touches::WorkerTouches,
}

/// The backends compiled in.
enum Db {
    /// SQLite file (the default): WAL mode, one batching writer.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL: how the server scales out (several servers, one database).
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH`, `sqlite:PATH`, `postgres://…`,
    /// `postgresql://…`), creating a SQLite file if missing, and applies migrations. A URL of
    /// a backend left out of this build is [`StoreError::NotCompiledIn`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let db = if url.starts_with("sqlite:") {
            open_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url).await?
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(Store {
            db,
            touches: Default::default(),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => "postgres",
        }
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<Db, StoreError> {
    Ok(Db::Sqlite(sqlite::SqliteStore::connect(url).await?))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(_url: &str) -> Result<Db, StoreError> {
    Err(StoreError::NotCompiledIn {
        backend: "SQLite",
        feature: "sqlite",
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Db, StoreError> {
    Ok(Db::Postgres(postgres::PgStore::connect(url).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Db, StoreError> {
    Err(StoreError::NotCompiledIn {
        backend: "PostgreSQL",
        feature: "postgres",
    })
}

/// Runs `$call` on the backend in use, named `$b`. The reads are the shared queries over the
/// backend's pool (`$b.pool()`); writes go through the backend's own path.
macro_rules! on_backend {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite($b) => $call.await,
            #[cfg(feature = "postgres")]
            Db::Postgres($b) => $call.await,
        }
    };
}

impl Store {
    /// [`Backend::register_deployment`], or with `dry_run` [`Backend::check_registration`].
    async fn register(
        &self,
        spec: &DeploymentSpec,
        fingerprint: &str,
        dry_run: bool,
    ) -> Result<Registration, StoreError> {
        let task = Maintenance::Register {
            spec: Box::new(spec.clone()),
            fingerprint: fingerprint.to_string(),
            dry_run,
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Registered(registration) => Ok(*registration),
            other => Err(unexpected(other)),
        }
    }
}

impl Backend for Store {
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        on_backend!(self, b => b.ingest(events))
    }
    async fn list_flow_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>, StoreError> {
        on_backend!(self, b => queries::list_flow_runs(b.pool(), filter, page))
    }
    async fn get_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        on_backend!(self, b => queries::get_run(b.pool(), id))
    }
    async fn child_runs(&self, flow_run_id: Uuid) -> Result<Vec<RunRecord>, StoreError> {
        on_backend!(self, b => queries::child_runs(b.pool(), flow_run_id))
    }
    async fn child_runs_page(
        &self,
        flow_run_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>, StoreError> {
        on_backend!(self, b => queries::child_runs_page(b.pool(), flow_run_id, page))
    }
    async fn states_of(
        &self,
        runs: &[(Uuid, Option<Uuid>)],
    ) -> Result<Vec<StateRecord>, StoreError> {
        on_backend!(self, b => queries::states_of(b.pool(), runs))
    }
    async fn child_groups(
        &self,
        flow_run_id: Uuid,
        max_groups: u32,
    ) -> Result<Vec<TaskGroup>, StoreError> {
        on_backend!(self, b => queries::child_groups(b.pool(), flow_run_id, max_groups))
    }
    async fn states(&self, flow_run_id: Uuid) -> Result<Vec<StateRecord>, StoreError> {
        on_backend!(self, b => queries::states(b.pool(), flow_run_id))
    }
    async fn logs(
        &self,
        flow_run_id: Uuid,
        filter: &LogFilter,
        page: &PageRequest,
    ) -> Result<Page<LogRecord>, StoreError> {
        on_backend!(self, b => queries::logs(b.pool(), flow_run_id, filter, page))
    }
    async fn stats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        buckets: u32,
    ) -> Result<Stats, StoreError> {
        on_backend!(self, b => queries::stats(b.pool(), since, until, buckets))
    }
    async fn delete_before(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let task = Maintenance::DeleteBefore { cutoff, batch };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
    async fn record_reporter_drops(&self, worker: &str, dropped: u64) -> Result<(), StoreError> {
        let task = Maintenance::ReporterDrops {
            worker: worker.to_string(),
            dropped,
        };
        on_backend!(self, b => b.maintain(task)).map(|_| ())
    }
    async fn register_deployment(
        &self,
        spec: &DeploymentSpec,
        fingerprint: &str,
    ) -> Result<Registration, StoreError> {
        self.register(spec, fingerprint, false).await
    }
    async fn check_registration(
        &self,
        spec: &DeploymentSpec,
        fingerprint: &str,
    ) -> Result<Registration, StoreError> {
        self.register(spec, fingerprint, true).await
    }
    async fn list_deployments(
        &self,
        page: &PageRequest,
    ) -> Result<Page<DeploymentSummary>, StoreError> {
        on_backend!(self, b => queries::list_deployments(b.pool(), page))
    }
    async fn deployment(
        &self,
        flow: &str,
        name: &str,
    ) -> Result<Option<(DeploymentVersion, u64)>, StoreError> {
        on_backend!(self, b => queries::deployment(b.pool(), flow, name))
    }
    async fn deployment_version(
        &self,
        flow: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<DeploymentVersion>, StoreError> {
        on_backend!(self, b => queries::deployment_version(b.pool(), flow, name, version))
    }
    async fn deployment_versions(
        &self,
        flow: &str,
        name: &str,
        page: &PageRequest,
    ) -> Result<Page<DeploymentVersion>, StoreError> {
        on_backend!(self, b => queries::deployment_versions(b.pool(), flow, name, page))
    }
    async fn idempotency_key(
        &self,
        deployment: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        on_backend!(self, b => queries::idempotency_key(b.pool(), deployment, key))
    }
    async fn trigger(&self, run: NewRun) -> Result<Triggered, StoreError> {
        // Keyless triggers on PostgreSQL: written together by its trigger writer.
        #[cfg(feature = "postgres")]
        if let Db::Postgres(b) = &self.db
            && run.batchable()
        {
            let id = run.event.run_id;
            return b.trigger(run).await.map(|()| Triggered::Created(id));
        }
        match on_backend!(self, b => b.maintain(Maintenance::Trigger(Box::new(run))))? {
            Written::Triggered(triggered) => Ok(triggered),
            other => Err(unexpected(other)),
        }
    }
    async fn claim(&self, order: ClaimOrder) -> Result<Vec<ClaimedRun>, StoreError> {
        let worker = order.worker.id;
        let touch = self.touches.due(&order.worker);
        let claimed = match &self.db {
            // On PostgreSQL: claimed together with the claims waiting at the same moment.
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => b.claim(order, touch).await,
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => {
                let task = Maintenance::Claim {
                    order: Box::new(order),
                    touch,
                };
                match b.maintain(task).await {
                    Ok(Written::Claimed(runs)) => Ok(runs),
                    Ok(other) => Err(unexpected(other)),
                    Err(e) => Err(e),
                }
            }
        };
        if claimed.is_err() && touch {
            self.touches.forget(worker);
        }
        claimed
    }
    async fn claimable(&self, served: &[Served]) -> Result<bool, StoreError> {
        on_backend!(self, b => leases::claimable(b.pool(), served))
    }
    async fn heartbeat(
        &self,
        worker: WorkerSeen,
        leases: Vec<(Uuid, u64)>,
        lease: Duration,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let task = Maintenance::Heartbeat {
            worker: Box::new(worker),
            leases,
            lease,
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Heartbeat(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
    async fn finish(&self, finished: Finished) -> Result<LeaseCall, StoreError> {
        // On PostgreSQL: written together with the finishes waiting at the same moment.
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // a build with PostgreSQL only
        if let Db::Postgres(b) = &self.db {
            return b.finish(finished).await;
        }
        match on_backend!(self, b => b.maintain(Maintenance::Finish(Box::new(finished))))? {
            Written::Lease(call) => Ok(call),
            other => Err(unexpected(other)),
        }
    }
    async fn release(
        &self,
        run_id: Uuid,
        token: u64,
        reason: Option<String>,
    ) -> Result<LeaseCall, StoreError> {
        let task = Maintenance::Release {
            run_id,
            token,
            reason,
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Lease(call) => Ok(call),
            other => Err(unexpected(other)),
        }
    }
    async fn reap(&self) -> Result<Reaped, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::Reap))? {
            Written::Reaped(reaped) => Ok(reaped),
            other => Err(unexpected(other)),
        }
    }
    async fn cancel(&self, run_id: Uuid, reason: Option<String>) -> Result<RunAction, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::Cancel { run_id, reason }))? {
            Written::Action(action) => Ok(action),
            other => Err(unexpected(other)),
        }
    }
    async fn bulk_cancel(&self, filter: BulkCancelFilter) -> Result<BulkCancelled, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::BulkCancel(Box::new(filter))))? {
            Written::BulkCancelled(answer) => Ok(answer),
            other => Err(unexpected(other)),
        }
    }
    async fn retry(&self, run_id: Uuid) -> Result<RunAction, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::Retry(run_id)))? {
            Written::Action(action) => Ok(action),
            other => Err(unexpected(other)),
        }
    }
    async fn run_result(&self, run_id: Uuid) -> Result<Option<Vec<u8>>, StoreError> {
        on_backend!(self, b => leases::result(b.pool(), run_id))
    }
    async fn lease_tokens(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, (u64, Option<String>)>, StoreError> {
        on_backend!(self, b => leases::lease_tokens(b.pool(), ids))
    }
    async fn record_stale_events(&self, worker: &str, refused: u64) -> Result<(), StoreError> {
        let task = Maintenance::StaleEvents {
            worker: worker.to_string(),
            refused,
        };
        on_backend!(self, b => b.maintain(task)).map(|_| ())
    }
    async fn stale_events(&self, worker: &str) -> Result<u64, StoreError> {
        on_backend!(self, b => leases::stale_events(b.pool(), worker))
    }
    async fn live_workers(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<LiveWorker>, StoreError> {
        on_backend!(self, b => leases::live_workers(b.pool(), flow, name, since))
    }
    async fn serving_version(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        on_backend!(self, b => leases::serving_version(b.pool(), flow, name, since))
    }
    async fn trigger_version(
        &self,
        flow: &str,
        name: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<(DeploymentVersion, bool)>, StoreError> {
        on_backend!(self, b => queries::trigger_version(b.pool(), flow, name, since))
    }
    async fn replace_code_schedules(
        &self,
        flow: &str,
        name: &str,
        rows: Vec<schedules::ScheduleRow>,
    ) -> Result<u64, StoreError> {
        let task = Maintenance::ReplaceSchedules {
            flow: flow.to_string(),
            name: name.to_string(),
            rows,
            now: Utc::now(),
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
    async fn schedules_of(
        &self,
        flow: &str,
        name: &str,
    ) -> Result<Vec<flowkit_wire::api::schedules::Schedule>, StoreError> {
        on_backend!(self, b => schedules::schedules_of(b.pool(), flow, name))
    }
    async fn schedule(
        &self,
        id: Uuid,
    ) -> Result<Option<(String, String, flowkit_wire::api::schedules::Schedule)>, StoreError> {
        on_backend!(self, b => schedules::schedule(b.pool(), id))
    }
    async fn slot_skipped(
        &self,
        schedule_id: Uuid,
        instant: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        on_backend!(self, b => schedules::slot_skipped(b.pool(), schedule_id, instant))
    }
    async fn due_schedules(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<schedules::DueSchedule>, StoreError> {
        on_backend!(self, b => schedules::due_schedules(b.pool(), now, None, limit))
    }
    async fn active_schedules(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<schedules::DueSchedule>, StoreError> {
        on_backend!(self, b => schedules::active_schedules(b.pool(), ids))
    }
    async fn due_schedules_after(
        &self,
        now: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<schedules::DueSchedule>, StoreError> {
        on_backend!(self, b => schedules::due_schedules(b.pool(), now, after, limit))
    }
    async fn advance_schedule(
        &self,
        id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let task = Maintenance::AdvanceSchedule {
            id,
            from,
            to,
            next_at,
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }
    async fn set_schedule_paused(
        &self,
        id: Uuid,
        paused_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        next_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let task = Maintenance::PauseSchedule {
            id,
            paused_at,
            now,
            next_at,
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }
    async fn mark_overdue(&self, now: DateTime<Utc>) -> Result<Overdue, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::Overdue(now)))? {
            Written::Overdue(overdue) => Ok(overdue),
            other => Err(unexpected(other)),
        }
    }
    async fn insert_api_schedule(
        &self,
        flow: &str,
        name: &str,
        row: schedules::ScheduleRow,
    ) -> Result<schedules::Inserted, StoreError> {
        let task = Maintenance::InsertSchedule {
            flow: flow.to_string(),
            name: name.to_string(),
            row: Box::new(row),
            now: Utc::now(),
        };
        match on_backend!(self, b => b.maintain(task))? {
            Written::ScheduleInserted(inserted) => Ok(inserted),
            other => Err(unexpected(other)),
        }
    }
    async fn write_slots(
        &self,
        runs: Vec<NewRun>,
        advances: Vec<schedules::Advance>,
    ) -> Result<schedules::SlotsWritten, StoreError> {
        if runs.is_empty() && advances.is_empty() {
            return Ok(schedules::SlotsWritten::default());
        }
        match on_backend!(self, b => b.maintain(Maintenance::WriteSlots { runs, advances }))? {
            Written::SlotsWritten(written) => Ok(written),
            other => Err(unexpected(other)),
        }
    }
    async fn delete_api_schedule(&self, id: Uuid) -> Result<bool, StoreError> {
        match on_backend!(self, b => b.maintain(Maintenance::DeleteSchedule(id)))? {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }
    async fn open_schedule_runs(
        &self,
        schedule_id: Uuid,
    ) -> Result<Vec<(Uuid, StateType)>, StoreError> {
        on_backend!(self, b => schedules::open_runs(b.pool(), schedule_id))
    }
    async fn close(&self) {
        on_backend!(self, b => b.close())
    }
}

impl Store {
    /// What reporters dropped: totals, and the `limit` workers that reported drops most
    /// recently (see `GET /api/v1/reporter-drops`).
    pub async fn reporter_drops(
        &self,
        limit: usize,
    ) -> Result<flowkit_wire::api::ingest::ReporterDropsSummary, StoreError> {
        on_backend!(self, b => queries::reporter_drops(b.pool(), limit))
    }

    /// Checks the database answers: one `SELECT 1` on a pooled connection (on PostgreSQL, a
    /// fresh connection when the pooled ones are broken, within the pool's acquire timeout).
    /// For the readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, b => async {
            sqlx::query("SELECT 1").execute(b.pool()).await?;
            Ok::<(), StoreError>(())
        })
    }

    /// Starts waking `wake` whenever another server replica (or this one) makes a run
    /// claimable: PostgreSQL `LISTEN flowkit_runs`, reconnecting after errors, until the store
    /// closes. `None` on SQLite, where only this process writes.
    pub fn listen_runs(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => {
                let _ = wake;
                None
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => Some(b.listen_runs(wake)),
        }
    }
}

/// A write answered with the outcome of another kind of write: a bug, reported as a 500.
fn unexpected(written: Written) -> StoreError {
    StoreError::Corrupt(format!("unexpected outcome of a write: {written:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL of a backend this build leaves out says which feature brings it in; one of no
    /// backend says what URLs work.
    #[tokio::test]
    async fn a_backend_left_out_names_its_feature() {
        #[cfg(not(feature = "postgres"))]
        let left_out = Some(("postgres://u@localhost/db", "postgres"));
        #[cfg(not(feature = "sqlite"))]
        let left_out = Some(("sqlite://flowkit.db", "sqlite"));
        #[cfg(all(feature = "sqlite", feature = "postgres"))]
        let left_out: Option<(&str, &str)> = None;
        if let Some((url, feature)) = left_out {
            match Store::connect(url).await {
                Err(e @ StoreError::NotCompiledIn { .. }) => {
                    let message = e.to_string();
                    assert!(
                        message.contains(&format!("--features {feature}")),
                        "{message}"
                    );
                }
                Err(other) => panic!("{url}: {other}"),
                Ok(_) => panic!("{url} opened without its backend"),
            }
        }
        match Store::connect("mysql://u@localhost/db").await {
            Err(StoreError::UnsupportedUrl(url)) => assert_eq!(url, "mysql://u@localhost/db"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("mysql:// opened"),
        }
    }
}
