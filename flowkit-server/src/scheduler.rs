//! The scheduler: a background task on every server replica (no leader) that creates the runs
//! of deployments' schedules when they are due — never ahead of time, so no backlog of
//! pre-created runs starts at once after an outage.
//!
//! Every [`TICK`] it reads the active schedules whose next instant has come and, for each,
//! the instants since the last one handled. The catch-up policy decides which of them get a
//! run (instants more than [`MISSED_AFTER`] old count as missed), the overlap policy whether
//! an unfinished earlier run prevents, queues or cancels; each run is created through the
//! trigger path under the permanent key (schedule, instant), so replicas ticking at once, or a
//! tick and a backfill, create it once. The run is `Scheduled` with `scheduled_for` = its
//! instant and `created_by` = `schedule:ID`; its first state's message says which schedule
//! created it and how many earlier instants it stands for.
//!
//! Each tick then marks overdue runs: a run of a schedule that no worker has claimed
//! [`LATE_AFTER`] after its instant becomes `Late` (still claimable), and one not started within
//! its schedule's `max_lateness` becomes `Expired` (final) instead of starting a stampede.

use crate::AppState;
use crate::api::deployments::{live_since, new_run, run_tags};
use crate::params;
use crate::store::{Backend, NewRun, ScheduleSlot, StoreError, Triggered};
use crate::stream::changes_of;
use chrono::{DateTime, Duration, Utc};
use flowkit_wire::api::deployments::TriggerRequest;
use flowkit_wire::api::schedules::{CATCHUP_ALL_MAX, Catchup, Overlap};
use flowkit_wire::schedule::Schedule;
use flowkit_wire::state::StateType;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How often every replica looks for due schedules.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// An instant first seen this long after it was due counts as missed (catch-up policy); a
/// tick is normally at most [`TICK`] late.
pub const MISSED_AFTER: Duration = Duration::seconds(60);

/// A run created by a schedule and not claimed this long after its instant becomes `Late`.
pub const LATE_AFTER: Duration = Duration::seconds(60);

/// The most due schedules one tick handles; the rest wait for the next tick.
pub const SCHEDULES_PER_TICK: u32 = 100;

/// The most instants of one schedule a tick looks at (a minutely schedule missed for ten
/// weeks); beyond, the instants are skipped and counted as this many.
pub const MAX_INSTANTS_SCANNED: usize = 100_000;

/// What a tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Runs created.
    pub created: usize,
    /// Instants that got no run (catch-up, overlap, or parameters the deployment no longer
    /// accepts).
    pub skipped: u64,
    /// Unfinished runs cancelled by `cancel_running`.
    pub cancelled: usize,
    /// Runs that became `Late` (not claimed [`LATE_AFTER`] after their instant).
    pub late: u64,
    /// Runs that became `Expired` (not started within their schedule's `max_lateness`).
    pub expired: u64,
}

/// Creates the runs of every schedule due at `now`, then marks the scheduled runs that are
/// late or expired as of `now`.
pub async fn tick(state: &AppState, now: DateTime<Utc>) -> Result<TickOutcome, StoreError> {
    let mut outcome = create_due_runs(state, now).await?;
    let overdue = state.store().mark_overdue(now).await?;
    outcome.late = overdue.late;
    outcome.expired = overdue.expired;
    if overdue.expired > 0 {
        state.wakeups().run_ended();
    }
    Ok(outcome)
}

async fn create_due_runs(state: &AppState, now: DateTime<Utc>) -> Result<TickOutcome, StoreError> {
    let mut outcome = TickOutcome::default();
    for due in state.store().due_schedules(now, SCHEDULES_PER_TICK).await? {
        let schedule = match Schedule::compile(&due.spec) {
            Ok(schedule) => schedule,
            Err(e) => {
                // Checked at registration: only a spec stored by an older server gets here.
                tracing::error!(schedule = %due.id, error = %e, "schedule cannot be read; stopped");
                state
                    .store()
                    .advance_schedule(due.id, due.last_at, due.last_at, None)
                    .await?;
                continue;
            }
        };
        let (instants, more) = schedule.between(due.last_at, now, MAX_INSTANTS_SCANNED);
        let Some(&latest) = instants.last() else {
            let next_at = schedule.next_after(due.last_at);
            state
                .store()
                .advance_schedule(due.id, due.last_at, due.last_at, next_at)
                .await?;
            continue;
        };
        let handled_to = if more { now } else { latest };
        let on_time = |at: &DateTime<Utc>| now - *at <= MISSED_AFTER;
        let mut create: Vec<DateTime<Utc>> = match due.spec.catchup {
            Catchup::Latest => vec![latest],
            Catchup::None => instants.iter().copied().filter(on_time).collect(),
            Catchup::All => instants
                .iter()
                .rev()
                .take(CATCHUP_ALL_MAX)
                .rev()
                .copied()
                .collect(),
        };
        let mut skipped = (instants.len() - create.len()) as u64;
        if !create.is_empty() && due.spec.overlap != Overlap::Allow {
            let open = state.store().open_schedule_runs(due.id).await?;
            let waiting = open.iter().any(|(_, s)| {
                matches!(
                    s,
                    StateType::Scheduled
                        | StateType::Late
                        | StateType::Pending
                        | StateType::AwaitingRetry
                )
            });
            match due.spec.overlap {
                Overlap::Skip if !open.is_empty() => {
                    skipped += create.len() as u64;
                    create.clear();
                }
                Overlap::QueueOne if waiting => {
                    skipped += create.len() as u64;
                    create.clear();
                }
                Overlap::QueueOne if !open.is_empty() => {
                    skipped += (create.len() - 1) as u64;
                    create.drain(..create.len() - 1);
                }
                Overlap::CancelRunning => {
                    for (run_id, _) in &open {
                        let reason = format!(
                            "cancelled by schedule {}: a newer instant is due ({})",
                            due.id,
                            latest.to_rfc3339()
                        );
                        state.store().cancel(*run_id, Some(reason)).await?;
                        outcome.cancelled += 1;
                    }
                    if !open.is_empty() {
                        state.wakeups().run_ended();
                    }
                }
                _ => {}
            }
        }
        // The version and parameters are looked up once for all the instants of this tick.
        let target = if create.is_empty() {
            None
        } else {
            target(state, &due).await?
        };
        let last = create.last().copied();
        for instant in create {
            // The run of the latest instant carries the count of the ones it stands for.
            let stands_for = if Some(instant) == last { skipped } else { 0 };
            let created = match &target {
                Some(target) => {
                    create_run(state, &due, &schedule, target, instant, stands_for).await?
                }
                None => None,
            };
            match created {
                Some(_) => outcome.created += 1,
                None => skipped += 1,
            }
        }
        outcome.skipped += skipped;
        let next_at = schedule.next_after(handled_to.max(now));
        state
            .store()
            .advance_schedule(due.id, due.last_at, handled_to, next_at)
            .await?;
    }
    Ok(outcome)
}

/// What a schedule's runs are created from: the version a trigger would run now, and the
/// schedule's parameters over its defaults, checked against its schema.
struct Target {
    deployment: String,
    version: flowkit_wire::api::deployments::DeploymentVersion,
    served: bool,
    parameters: Value,
}

/// The [`Target`] of `due`'s runs; `None` (logged) when the deployment is gone or its version
/// refuses the schedule's parameters.
async fn target(
    state: &AppState,
    due: &crate::store::schedules::DueSchedule,
) -> Result<Option<Target>, StoreError> {
    let store = state.store();
    let deployment = format!("{}/{}", due.flow, due.name);
    let serving = store
        .serving_version(&due.flow, &due.name, live_since(state))
        .await?;
    let Some(version) = store
        .deployment_version(&due.flow, &due.name, serving.as_deref())
        .await?
    else {
        tracing::warn!(schedule = %due.id, %deployment, "schedule of a deployment that is gone");
        return Ok(None);
    };
    let parameters = Value::Object(params::merge(
        &version.default_parameters,
        &due.spec.parameters,
    ));
    match state.validators().get(
        &version.flow,
        &version.name,
        &version.version,
        &version.parameter_schema,
    ) {
        Ok(validator) => {
            let errors = params::errors(&validator, &parameters, "", false);
            if let Some(first) = errors.first() {
                tracing::warn!(
                    schedule = %due.id,
                    %deployment,
                    version = %version.version,
                    error = format!("{}: {}", first.pointer, first.message),
                    "the schedule's parameters do not fit this version; its due instants get no run"
                );
                return Ok(None);
            }
        }
        Err(why) => {
            tracing::error!(%deployment, "stored schema does not compile: {why}");
            return Ok(None);
        }
    }
    Ok(Some(Target {
        deployment,
        version,
        served: serving.is_some(),
        parameters,
    }))
}

/// Creates the run of `due` for `instant`, unless its slot is taken: `Some(id)` of a run
/// created now, `None` if it existed.
async fn create_run(
    state: &AppState,
    due: &crate::store::schedules::DueSchedule,
    schedule: &Schedule,
    target: &Target,
    instant: DateTime<Utc>,
    skipped: u64,
) -> Result<Option<Uuid>, StoreError> {
    let store = state.store();
    let request = TriggerRequest {
        parameters: due.spec.parameters.clone(),
        scheduled_for: Some(instant),
        ..TriggerRequest::default()
    };
    let tags = run_tags(&target.version.tags, &[]);
    let mut new = new_run(
        &target.version,
        &target.deployment,
        &request,
        tags,
        target.parameters.clone(),
        Utc::now(),
        target.served,
    );
    if let flowkit_wire::event::EventBody::State { state: first, .. } = &mut new.event.body {
        let mut message = format!(
            "created by schedule {} for {}",
            due.id,
            instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if skipped > 0 {
            message.push_str(&format!(
                "; it stands for {skipped} earlier instant(s) that got no run (catch-up {:?}, \
                 overlap {:?})",
                due.spec.catchup, due.spec.overlap
            ));
        }
        first.message = Some(message);
    }
    let event = new.event.clone();
    let new = NewRun {
        created_by: Some(format!("schedule:{}", due.id)),
        schedule_slot: Some(ScheduleSlot {
            schedule_id: due.id,
            instant,
            skipped,
            late_at: instant + LATE_AFTER,
            expires_at: schedule.max_lateness().map(|lateness| instant + lateness),
        }),
        ..new
    };
    match store.trigger(new).await? {
        Triggered::Created(id) => {
            state.wakeups().runs_changed();
            if state.changes().has_subscribers() {
                state
                    .changes()
                    .publish(changes_of(std::slice::from_ref(&event)));
            }
            Ok(Some(id))
        }
        Triggered::Replayed(_) | Triggered::KeyReused(_) => Ok(None),
    }
}

/// Starts the scheduler of `state`'s server; it stops when the server shuts down.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        loop {
            match tick(&state, Utc::now()).await {
                Ok(outcome) if outcome != TickOutcome::default() => {
                    tracing::info!(
                        created = outcome.created,
                        skipped = outcome.skipped,
                        cancelled = outcome.cancelled,
                        late = outcome.late,
                        expired = outcome.expired,
                        "scheduler: runs of due schedules"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "scheduler tick failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}
