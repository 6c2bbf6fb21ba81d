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
//! A tick starts just after each whole second (see [`rest_after`]: an instant is seen a few
//! milliseconds after it is due). It reads the due schedules [`DUE_PER_READ`] at a time (the
//! first read one batch's worth, so that writing starts sooner), the most overdue first, and
//! goes on while it finds full reads, for at most [`TICK_BUDGET`] (the rest wait for the next
//! tick). The deployments' targets of a read are looked up [`LOOKUPS_AT_ONCE`] at a time. It
//! plans the schedules in batches of [`SCHEDULES_PER_BATCH`] and writes each batch in one
//! transaction of a few multi-row statements (its slots, its runs' first states and rows by
//! plain inserts, its schedules moved on: see `store::schedules::write_slots`; on SQLite through
//! the writer's prepared statements, `store::sqlite_schedule_rows`) while it reads and plans the
//! next ones, at most [`BATCHES_IN_FLIGHT`] ahead on PostgreSQL ([`SQLITE_BATCHES_IN_FLIGHT`]
//! on SQLite). The server's loop ([`Scheduler::tick`]) also plans, during the second before an
//! instant, the runs of the schedules due at it whose runs need no decision at the instant, so
//! that the instant's tick only reads their schedules again and writes them (nothing is
//! written before the instant). With eight batches in flight on SQLite and six on PostgreSQL,
//! 10 000 schedules due at the same instant get their runs within 0.42–0.48 s at the 99th
//! percentile on SQLite and 0.74–0.78 s on PostgreSQL (`schedule_bench`, two runs on a quiet
//! 2-core machine; with two busy loops taking both cores, an earlier build: 1.21 s and 0.99 s).
//!
//! Each tick then marks overdue runs: a run of a schedule that no worker has claimed
//! `--late-after` (default 60 s) after its instant becomes `Late` (still claimable), and one not
//! started within its schedule's `max_lateness` becomes `Expired` (final) instead of starting a
//! stampede.

use crate::AppState;
use crate::api::deployments::{live_since, new_run, run_tags};
use crate::params;
use crate::store::schedules::{Advance, DueSchedule};
use crate::store::{Backend, NewRun, ScheduleSlot, StoreError};
use crate::stream::changes_of;
use chrono::{DateTime, Duration, Utc};
use flowkit_wire::api::deployments::TriggerRequest;
use flowkit_wire::api::schedules::{CATCHUP_ALL_MAX, Catchup, Overlap, ScheduleSpec};
use flowkit_wire::schedule::Schedule;
use flowkit_wire::state::StateType;
use futures::{StreamExt, TryStreamExt};
use serde_json::Map;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How often every replica looks for due schedules (just after each whole second: see
/// [`rest_after`]).
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// An instant first seen this long after it was due counts as missed (catch-up policy); a
/// tick is normally at most [`TICK`] late.
pub const MISSED_AFTER: Duration = Duration::seconds(60);

/// Due schedules read at once (the most a tick holds in memory besides the batches being
/// written).
pub const DUE_PER_READ: u32 = 2_000;

/// The due schedules of one batch: their runs are created and they are moved on in one
/// transaction.
pub const SCHEDULES_PER_BATCH: usize = 256;

/// Batches being written on PostgreSQL, concurrently, on as many connections (of the pool's
/// 10), and as many planned waiting for them: a tick holds at most twice this many planned
/// batches (besides those planned ahead, see [`Scheduler`]).
pub const BATCHES_IN_FLIGHT: usize = 6;

/// [`BATCHES_IN_FLIGHT`] on SQLite, whose one writer takes the batches in turn: the batches
/// queued behind the one being written are committed together by the writer's next group
/// (fewer commits, each page the batches share written to the WAL once per group).
pub const SQLITE_BATCHES_IN_FLIGHT: usize = 8;

/// The most schedules whose runs a [`Scheduler`] plans for the next instant (the rest are
/// planned at the instant).
pub const MAX_PLANNED_AHEAD: usize = 20_000;

/// Deployments whose serving version a tick looks up at once (see `Targets::prefetch`).
pub const LOOKUPS_AT_ONCE: usize = 8;

/// The most wall-clock time one tick spends creating runs before it leaves the rest of the due
/// schedules to the next tick (which starts one [`TICK`] later).
pub const TICK_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Runs that became `Late` (not claimed `--late-after` after their instant).
    pub late: u64,
    /// Runs that became `Expired` (not started within their schedule's `max_lateness`).
    pub expired: u64,
}

/// Creates the runs of every schedule due at `now`, then marks the scheduled runs that are
/// late or expired as of `now`. Plans nothing ahead: see [`Scheduler::tick`] for the tick of
/// the server's loop.
pub async fn tick(state: &AppState, now: DateTime<Utc>) -> Result<TickOutcome, StoreError> {
    Scheduler::default().tick_now(state, now).await
}

/// One replica's scheduler: [`tick`], plus the runs it planned during the second before an
/// instant for the schedules due at that instant (see [`Scheduler::tick`]).
#[derive(Default)]
pub struct Scheduler {
    ahead: Option<Ahead>,
}

/// The runs planned during the second before `at` for the schedules due at `at`.
struct Ahead {
    /// The instant (a whole second) they are for.
    at: DateTime<Utc>,
    /// Their batches of [`SCHEDULES_PER_BATCH`].
    batches: Vec<Vec<PlannedAhead>>,
}

/// One schedule's run planned ahead: the schedule as read then, its run, its move.
struct PlannedAhead {
    due: DueSchedule,
    run: NewRun,
    advance: Advance,
}

impl Scheduler {
    /// [`tick`] at `now`, then plans the runs of the schedules due at the next whole second, so
    /// that the tick at that instant mostly writes them instead of reading, looking up and
    /// planning them first (10 000 schedules due at once).
    ///
    /// Nothing is written ahead of time: the planned runs are created by the tick at or after
    /// their instant (and within the second after it; a plan whose instant is further past is
    /// dropped and its schedules planned again), under the same permanent key (schedule,
    /// instant) and with the same conditional move of each schedule as any tick's. Only the
    /// schedules that a tick at the instant would plan regardless of what is stored then are
    /// planned ahead: overlap `allow` (no overlap decision), exactly one instant due (no
    /// catch-up decision) and a version that takes their parameters; the others are planned at
    /// the instant. At the instant, each batch's schedules are read again before it is written:
    /// a schedule paused, deleted, changed or moved on since is planned then instead. The
    /// planned runs get fresh ids when written; their deployment's version is the one served
    /// when they were planned (at most a second before).
    pub async fn tick(
        &mut self,
        state: &AppState,
        now: DateTime<Utc>,
    ) -> Result<TickOutcome, StoreError> {
        let outcome = self.tick_now(state, now).await?;
        if self.ahead.is_none() {
            match plan_ahead(state, now).await {
                Ok(ahead) => self.ahead = ahead,
                // The instant's tick plans them then.
                Err(err) => tracing::warn!(error = %err, "scheduler: planning ahead failed"),
            }
        }
        Ok(outcome)
    }

    /// Creates the runs due at `now` (those planned ahead for it first), marks overdue runs.
    async fn tick_now(
        &mut self,
        state: &AppState,
        now: DateTime<Utc>,
    ) -> Result<TickOutcome, StoreError> {
        let ahead = match self.ahead.take() {
            // Its instant has not come: kept for a later tick.
            Some(ahead) if now < ahead.at => {
                self.ahead = Some(ahead);
                None
            }
            Some(ahead) if now - ahead.at < Duration::seconds(1) => Some(ahead),
            // Too late: what the schedules get may have changed (catch-up); planned again.
            Some(_) | None => None,
        };
        let mut outcome = create_due_runs(state, now, ahead).await?;
        let overdue = state.store().mark_overdue(now).await?;
        outcome.late = overdue.late;
        outcome.expired = overdue.expired;
        if overdue.expired > 0 {
            state.wakeups().run_ended();
        }
        Ok(outcome)
    }
}

/// The runs of the schedules due at the whole second after `now` (see [`Scheduler::tick`]);
/// `None` when there are none.
async fn plan_ahead(state: &AppState, now: DateTime<Utc>) -> Result<Option<Ahead>, StoreError> {
    let at = DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now);
    let mut targets = Targets::default();
    let mut compiled = Compiled::default();
    let mut ignored = TickOutcome::default();
    let mut planned = Vec::new();
    // Due at `at` but not at `now`: after (`now`, the largest id) in (next_at, id) order.
    let mut after = Some((now, Uuid::max()));
    while planned.len() < MAX_PLANNED_AHEAD {
        let due = state
            .store()
            .due_schedules_after(at, after, DUE_PER_READ)
            .await?;
        after = due.last().map(|due| (due.next_at, due.id));
        let full = due.len() >= DUE_PER_READ as usize;
        let allow: Vec<DueSchedule> = due
            .into_iter()
            .filter(|due| due.spec.overlap == Overlap::Allow && due.next_at == at)
            .collect();
        targets.prefetch(state, &allow).await?;
        for due in allow {
            let plan = plan_due(state, at, &due, &mut targets, &mut compiled, &mut ignored).await?;
            let simple = plan.skipped == 0
                && plan.advance.to == at
                && matches!(plan.runs.as_slice(), [run] if run.scheduled_for == Some(at));
            if let (true, Some(run)) = (simple, plan.runs.into_iter().next()) {
                planned.push(PlannedAhead {
                    due,
                    run,
                    advance: plan.advance,
                });
            }
        }
        if !full {
            break;
        }
    }
    if planned.is_empty() {
        return Ok(None);
    }
    tracing::debug!(schedules = planned.len(), %at, "scheduler: runs planned ahead");
    let mut batches = Vec::with_capacity(planned.len().div_ceil(SCHEDULES_PER_BATCH));
    let mut planned = planned.into_iter().peekable();
    while planned.peek().is_some() {
        batches.push(planned.by_ref().take(SCHEDULES_PER_BATCH).collect());
    }
    Ok(Some(Ahead { at, batches }))
}

/// The batch of the runs planned ahead in `planned` whose schedules are still as they were
/// read then (active, not moved on, same spec), read again now, their runs with fresh ids
/// (made when they are written, as those of the runs planned at the instant); the ids of
/// their schedules are added to `taken`.
async fn recheck(
    state: &AppState,
    planned: Vec<PlannedAhead>,
    taken: &mut HashSet<Uuid>,
) -> Result<Batch, StoreError> {
    let ids: Vec<Uuid> = planned.iter().map(|p| p.due.id).collect();
    let now: HashMap<Uuid, DueSchedule> = state
        .store()
        .active_schedules(&ids)
        .await?
        .into_iter()
        .map(|due| (due.id, due))
        .collect();
    let mut batch = Batch {
        runs: Vec::with_capacity(planned.len()),
        advances: Vec::with_capacity(planned.len()),
    };
    for PlannedAhead {
        due,
        mut run,
        advance,
    } in planned
    {
        let same = now.get(&due.id).is_some_and(|read| {
            read.last_at == due.last_at && read.next_at == due.next_at && read.spec == due.spec
        });
        if same {
            taken.insert(due.id);
            renew_ids(&mut run);
            batch.runs.push(run);
            batch.advances.push(advance);
        }
    }
    Ok(batch)
}

/// Gives a run planned ahead fresh ids (made when it is written, as those of the runs planned
/// at the instant).
fn renew_ids(run: &mut NewRun) {
    let run_id = Uuid::now_v7();
    run.event.id = Uuid::now_v7();
    run.event.run_id = run_id;
    run.event.flow_run_id = Some(run_id);
}

async fn create_due_runs(
    state: &AppState,
    now: DateTime<Utc>,
    ahead: Option<Ahead>,
) -> Result<TickOutcome, StoreError> {
    let mut outcome = TickOutcome::default();
    let started = std::time::Instant::now();
    let mut targets = Targets::default();
    let mut compiled = Compiled::default();
    let mut due_total = 0;
    let ahead = ahead.map_or_else(Vec::new, |ahead| ahead.batches);
    let in_flight = if state.store().backend_name() == "sqlite" {
        SQLITE_BATCHES_IN_FLIGHT
    } else {
        BATCHES_IN_FLIGHT
    };
    // Reading and planning on one side, writing on the other, side by side: a batch is
    // written (its runs created and its schedules moved on, in one transaction) while the
    // next ones are read and planned. Pages are read in (next_at, id) order, each after the
    // last of the one before, so a page needs no wait for the writes of the one before.
    let (batches, planned) = tokio::sync::mpsc::channel::<Batch>(in_flight);
    let planning = async {
        // Dropped when planning ends, even on an error: the writing then ends too.
        let batches = batches;
        // The runs planned ahead first (see `Scheduler::tick`), each batch's schedules read
        // again; then the due schedules but those.
        let mut taken = HashSet::new();
        for planned in ahead {
            let batch = recheck(state, planned, &mut taken).await?;
            due_total += batch.advances.len();
            if !batch.advances.is_empty() && batches.send(batch).await.is_err() {
                return Ok(());
            }
        }
        let mut after = None;
        loop {
            // The first read holds one batch, so that its runs are written while the rest
            // is read.
            let limit = if after.is_none() {
                SCHEDULES_PER_BATCH as u32
            } else {
                DUE_PER_READ
            };
            let read = state.store().due_schedules_after(now, after, limit).await?;
            after = read.last().map(|due| (due.next_at, due.id));
            let full = read.len() >= limit as usize;
            // Those planned ahead are being written already.
            let due: Vec<DueSchedule> = if taken.is_empty() {
                read
            } else {
                read.into_iter()
                    .filter(|due| !taken.contains(&due.id))
                    .collect()
            };
            due_total += due.len();
            targets.prefetch(state, &due).await?;
            for chunk in due.chunks(SCHEDULES_PER_BATCH) {
                let mut batch = Batch {
                    runs: Vec::new(),
                    advances: Vec::with_capacity(chunk.len()),
                };
                for due in chunk {
                    let planned =
                        plan_due(state, now, due, &mut targets, &mut compiled, &mut outcome)
                            .await?;
                    outcome.skipped += planned.skipped;
                    batch.runs.extend(planned.runs);
                    batch.advances.push(planned.advance);
                }
                if batches.send(batch).await.is_err() {
                    // The writing failed: its error is the tick's.
                    return Ok(());
                }
            }
            if !full || started.elapsed() >= TICK_BUDGET {
                return Ok::<_, StoreError>(());
            }
        }
    };
    let writing = tokio_stream::wrappers::ReceiverStream::new(planned)
        .map(|batch| create_slot_runs(state, batch.runs, batch.advances))
        .buffered(in_flight)
        .try_fold(SlotRuns::default(), |mut total, written| async move {
            total.created += written.created;
            total.existing += written.existing;
            tracing::debug!(
                created = written.created,
                since_tick_ms = started.elapsed().as_millis(),
                "scheduler: batch written"
            );
            Ok(total)
        });
    let (planning, writing) = tokio::join!(planning, writing);
    let written = writing?;
    planning?;
    outcome.created += written.created as usize;
    outcome.skipped += written.existing;
    if due_total > 0 {
        tracing::debug!(
            due = due_total,
            ms = started.elapsed().as_millis(),
            "scheduler: due schedules handled"
        );
    }
    Ok(outcome)
}

/// One batch of a tick: the runs of [`SCHEDULES_PER_BATCH`] schedules and how far they move on.
struct Batch {
    runs: Vec<NewRun>,
    advances: Vec<Advance>,
}

/// The [`Target`]s looked up during one tick, by deployment and parameters: the schedules of
/// one deployment share the version lookup. At most as many as the schedules a tick handles.
#[derive(Default)]
struct Targets(HashMap<(String, String, String), Option<Target>>);

impl Targets {
    /// Looks up the targets of the schedules of `due` not known yet, [`LOOKUPS_AT_ONCE`] at a
    /// time (each is a few reads on a connection of its own: one after the other, their
    /// round trips would hold the batches' planning back).
    async fn prefetch(&mut self, state: &AppState, due: &[DueSchedule]) -> Result<(), StoreError> {
        let mut missing = HashMap::new();
        for due in due {
            let key = Self::key(&due.flow, &due.name, &due.spec);
            if !self.0.contains_key(&key) {
                missing.entry(key).or_insert_with(|| {
                    (
                        due.flow.clone(),
                        due.name.clone(),
                        due.id,
                        due.spec.parameters.clone(),
                    )
                });
            }
        }
        let lookups = missing
            .into_iter()
            .map(|(key, (flow, name, id, parameters))| async move {
                let found = target(state, &flow, &name, id, &parameters).await?;
                Ok::<_, StoreError>((key, found))
            })
            .collect::<Vec<_>>();
        let found: Vec<_> = futures::stream::iter(lookups)
            .buffer_unordered(LOOKUPS_AT_ONCE)
            .try_collect()
            .await?;
        self.0.extend(found);
        Ok(())
    }

    fn key(flow: &str, name: &str, spec: &ScheduleSpec) -> (String, String, String) {
        (
            flow.to_string(),
            name.to_string(),
            Value::Object(spec.parameters.clone()).to_string(),
        )
    }

    async fn get(
        &mut self,
        state: &AppState,
        flow: &str,
        name: &str,
        id: Uuid,
        spec: &ScheduleSpec,
    ) -> Result<Option<&Target>, StoreError> {
        let key = Self::key(flow, name, spec);
        if !self.0.contains_key(&key) {
            let found = target(state, flow, name, id, &spec.parameters).await?;
            self.0.insert(key.clone(), found);
        }
        Ok(self.0.get(&key).and_then(Option::as_ref))
    }
}

/// What [`Schedule::compile`] reads of a spec: its timing and its lateness bound.
type TimingKey = (
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    String,
    Option<String>,
);

/// The schedules compiled during one tick, by timing: schedules sharing a timing (every
/// minute in one zone, say) are compiled once, not once each (compiling parses the cron
/// expression and searches its next instant). At most as many as the schedules a tick handles.
#[derive(Default)]
struct Compiled(HashMap<TimingKey, Result<Schedule, String>>);

impl Compiled {
    fn get(&mut self, spec: &ScheduleSpec) -> &Result<Schedule, String> {
        let key = (
            spec.cron.clone(),
            spec.interval.clone(),
            spec.anchor,
            spec.timezone.clone(),
            spec.max_lateness.clone(),
        );
        self.0
            .entry(key)
            .or_insert_with(|| Schedule::compile(spec).map_err(|e| e.to_string()))
    }
}

/// What one due schedule gets from a tick: the runs to create, the instants skipped, and how
/// far it moves on.
struct Planned {
    runs: Vec<NewRun>,
    skipped: u64,
    advance: Advance,
}

/// Decides the runs of one due schedule (catch-up and overlap policies; `cancel_running`
/// cancels here) and how far it moves on.
async fn plan_due(
    state: &AppState,
    now: DateTime<Utc>,
    due: &DueSchedule,
    targets: &mut Targets,
    compiled: &mut Compiled,
    outcome: &mut TickOutcome,
) -> Result<Planned, StoreError> {
    let stay = |next_at| Planned {
        runs: Vec::new(),
        skipped: 0,
        advance: Advance {
            id: due.id,
            from: due.last_at,
            to: due.last_at,
            next_at,
        },
    };
    let schedule = match compiled.get(&due.spec).clone() {
        Ok(schedule) => schedule,
        Err(e) => {
            // Checked at registration: only a spec stored by an older server gets here.
            tracing::error!(schedule = %due.id, error = %e, "schedule cannot be read; stopped");
            return Ok(stay(None));
        }
    };
    let (instants, more) = schedule.between(due.last_at, now, MAX_INSTANTS_SCANNED);
    let Some(&latest) = instants.last() else {
        return Ok(stay(schedule.next_after(due.last_at)));
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
    // The version and parameters are looked up once per deployment in a tick.
    let target = if create.is_empty() {
        None
    } else {
        targets
            .get(state, &due.flow, &due.name, due.id, &due.spec)
            .await?
    };
    let mut runs = Vec::with_capacity(create.len());
    match target {
        Some(target) => {
            let last = create.last().copied();
            let late_after =
                Duration::from_std(state.settings().late_after).unwrap_or(MISSED_AFTER);
            for instant in create {
                // The run of the latest instant carries the count of the ones it stands for.
                let stands_for = if Some(instant) == last { skipped } else { 0 };
                let mut message = format!(
                    "created by schedule {} for {}",
                    due.id,
                    instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                if stands_for > 0 {
                    message.push_str(&format!(
                        "; it stands for {stands_for} earlier instant(s) that got no run \
                         (catch-up {:?}, overlap {:?})",
                        due.spec.catchup, due.spec.overlap
                    ));
                }
                let origin = SlotRun {
                    created_by: format!("schedule:{}", due.id),
                    message,
                    tags: Vec::new(),
                    slot: ScheduleSlot {
                        schedule_id: due.id,
                        instant,
                        skipped: stands_for,
                        late_at: Some(instant + late_after),
                        expires_at: schedule.max_lateness().map(|lateness| instant + lateness),
                    },
                };
                runs.push(slot_run(&due.spec, target, origin));
            }
        }
        // No version takes the parameters (logged): the instants get no run.
        None => skipped += create.len() as u64,
    }
    Ok(Planned {
        runs,
        skipped,
        advance: Advance {
            id: due.id,
            from: due.last_at,
            to: handled_to,
            next_at: schedule.next_after(handled_to.max(now)),
        },
    })
}

/// What a schedule's runs are created from: the version a trigger would run now, and the
/// schedule's parameters over its defaults, checked against its schema.
pub(crate) struct Target {
    deployment: String,
    version: flowkit_wire::api::deployments::DeploymentVersion,
    served: bool,
    parameters: Value,
}

/// The [`Target`] of the runs of schedule `id` of `flow`/`name` with `parameters`; `None`
/// (logged) when the deployment is gone or its version refuses the parameters.
pub(crate) async fn target(
    state: &AppState,
    flow: &str,
    name: &str,
    id: Uuid,
    parameters: &Map<String, Value>,
) -> Result<Option<Target>, StoreError> {
    let store = state.store();
    let deployment = format!("{flow}/{name}");
    let serving = store.serving_version(flow, name, live_since(state)).await?;
    let Some(version) = store
        .deployment_version(flow, name, serving.as_deref())
        .await?
    else {
        tracing::warn!(schedule = %id, %deployment, "schedule of a deployment that is gone");
        return Ok(None);
    };
    let parameters = Value::Object(params::merge(&version.default_parameters, parameters));
    match state.validators().of(&version) {
        Ok(validator) => {
            let errors = params::errors(&validator, &parameters, "", false);
            if let Some(first) = errors.first() {
                tracing::warn!(
                    schedule = %id,
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

/// Who creates a run for a schedule's slot, and how it is labelled.
pub(crate) struct SlotRun {
    /// `schedule:ID`, `backfill:…`.
    pub created_by: String,
    /// The message of its first state.
    pub message: String,
    /// Tags beyond the deployment's.
    pub tags: Vec<String>,
    /// The slot it takes.
    pub slot: ScheduleSlot,
}

/// The run of a schedule's slot (by the tick or a backfill), to create with
/// [`create_slot_runs`].
pub(crate) fn slot_run(spec: &ScheduleSpec, target: &Target, origin: SlotRun) -> NewRun {
    let request = TriggerRequest {
        parameters: spec.parameters.clone(),
        scheduled_for: Some(origin.slot.instant),
        ..TriggerRequest::default()
    };
    let tags = run_tags(&target.version.tags, &origin.tags);
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
        first.message = Some(origin.message);
    }
    NewRun {
        created_by: Some(origin.created_by),
        schedule_slot: Some(origin.slot),
        ..new
    }
}

/// What [`create_slot_runs`] did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotRuns {
    /// Runs created.
    pub created: u64,
    /// Slots that had a run already.
    pub existing: u64,
}

/// Creates the runs of schedules' slots and moves schedules on (`advances`), in one
/// transaction (see `store::schedules::write_slots`), except the runs whose slot has a run
/// already (by any replica's tick or a backfill); wakes the waiting claims and announces the
/// new runs on the live stream.
pub(crate) async fn create_slot_runs(
    state: &AppState,
    runs: Vec<NewRun>,
    advances: Vec<Advance>,
) -> Result<SlotRuns, StoreError> {
    if runs.is_empty() && advances.is_empty() {
        return Ok(SlotRuns::default());
    }
    let events: Vec<_> = if state.changes().has_subscribers() {
        runs.iter().map(|run| run.event.clone()).collect()
    } else {
        Vec::new()
    };
    let written = state.store().write_slots(runs, advances).await?;
    let created = written.created;
    let mut outcome = SlotRuns::default();
    for won in &created {
        if *won {
            outcome.created += 1;
        } else {
            outcome.existing += 1;
        }
    }
    if outcome.created > 0 {
        state.wakeups().runs_changed();
        // As stored: created when written.
        let new: Vec<_> = events
            .into_iter()
            .zip(&created)
            .filter(|(_, won)| **won)
            .map(|(mut event, _)| {
                event.timestamp = written.at;
                event
            })
            .collect();
        if !new.is_empty() {
            state.changes().publish(changes_of(&new));
        }
    }
    Ok(outcome)
}

/// How long the tick loop rests after a tick that ended at `now`: until just after the next
/// whole second (instants are whole seconds), at least 100 ms and at most one [`TICK`] plus
/// that margin, so an instant is seen a few milliseconds after it is due.
pub fn rest_after(now: DateTime<Utc>) -> std::time::Duration {
    const MARGIN: std::time::Duration = std::time::Duration::from_millis(5);
    let into_second = std::time::Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    let rest = TICK.saturating_sub(into_second) + MARGIN;
    rest.max(std::time::Duration::from_millis(100))
}

/// Starts the scheduler of `state`'s server; it stops when the server shuts down.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        let mut scheduler = Scheduler::default();
        loop {
            match scheduler.tick(&state, Utc::now()).await {
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
                _ = tokio::time::sleep(rest_after(Utc::now())) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_loop_rests_until_just_after_the_next_second() {
        let at = |ms: i64| {
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("instant")
                + Duration::milliseconds(ms)
        };
        assert_eq!(rest_after(at(0)).as_millis(), 1005);
        assert_eq!(rest_after(at(250)).as_millis(), 755);
        // Right before a second: not a busy loop.
        assert_eq!(rest_after(at(999)).as_millis(), 100);
    }
}
