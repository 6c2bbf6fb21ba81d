//! Schedules of deployments in the database: the `schedules` rows (what each schedule is,
//! whether it is paused, how far its instants have been handled) and the permanent keys of
//! the runs they created (`schedule_slots`, one per schedule and instant, written in the
//! trigger's transaction: see `queries::trigger`).
//!
//! The instants themselves are computed by [`flowkit_wire::schedule`]; the tick that creates
//! runs is `crate::scheduler`.

use super::StoreError;
use super::dialect::{Dialect, PushBind, begin_write};
use super::queries::{BulkWrite, Columns, json_string};
use super::rows::{DetailsRow, Plan, RunRow, corrupt, parse_state};
use chrono::{DateTime, Utc};
use flowkit_wire::api::schedules::{
    MAX_SCHEDULES_PER_DEPLOYMENT, Schedule, ScheduleSource, ScheduleSpec,
};
use flowkit_wire::state::StateType;
use sqlx::{Pool, QueryBuilder};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// How many of a schedule's latest runs the overlap policy looks at.
pub const OVERLAP_WINDOW: i64 = 50;

/// The id of a schedule declared in code: derived from its deployment and its timing (cron or
/// interval, time zone, anchor), so that registering it again, even with other parameters or
/// policies, keeps its id, its pause and the keys of the runs it created.
pub fn code_schedule_id(flow: &str, name: &str, spec: &ScheduleSpec) -> Uuid {
    let timing = serde_json::json!({
        "deployment": format!("{flow}/{name}"),
        "cron": spec.cron,
        "interval": spec.interval,
        "anchor": spec.anchor,
        "timezone": spec.timezone,
    });
    let hash = blake3::hash(timing.to_string().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A schedule to store: its id, spec and first due instant.
#[derive(Clone, Debug)]
pub struct ScheduleRow {
    /// See [`code_schedule_id`] (declared in code) or a random id (created over the API).
    pub id: Uuid,
    /// What it is.
    pub spec: ScheduleSpec,
    /// Its first instant after its creation.
    pub next_at: Option<DateTime<Utc>>,
}

/// An active schedule whose next instant has come.
#[derive(Clone, Debug)]
pub struct DueSchedule {
    /// The schedule.
    pub id: Uuid,
    /// Its deployment's flow.
    pub flow: String,
    /// Its deployment's name.
    pub name: String,
    /// What it is.
    pub spec: ScheduleSpec,
    /// Every instant up to this one was handled.
    pub last_at: DateTime<Utc>,
    /// Its next instant (due).
    pub next_at: DateTime<Utc>,
}

/// Replaces the schedules declared in code of `flow`/`name` with `rows`, in one transaction:
/// the ones no longer declared are deleted; the ones declared again keep their pause and how
/// far they got, and take the new spec (parameters and policies); new ones start now.
pub(crate) async fn replace_code_schedules<D: BulkWrite>(
    conn: &mut D::Connection,
    flow: &str,
    name: &str,
    rows: &[ScheduleRow],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("DELETE FROM schedules WHERE flow = ");
    q.bind(D::text(flow))
        .push(" AND name = ")
        .bind(D::text(name))
        .push(" AND source = 'code'");
    if !rows.is_empty() {
        q.push(" AND id NOT IN (");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(row.id);
        }
        q.push(")");
    }
    let deleted = D::rows_affected(&D::execute_once(&mut tx, &mut q).await?);
    for row in rows {
        let mut q = insert_sql::<D>(flow, name, "code", row, now)?;
        q.push(" ON CONFLICT (id) DO UPDATE SET spec = excluded.spec");
        D::execute(&mut tx, &mut q).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// `INSERT INTO schedules … VALUES (…)` of `row`, from `source` (`code` or `api`), active,
/// handled up to `now`.
fn insert_sql<D: Dialect>(
    flow: &str,
    name: &str,
    source: &'static str,
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<QueryBuilder<D>, StoreError> {
    let mut q = QueryBuilder::new(
        "INSERT INTO schedules (id, flow, name, source, spec, paused_at, last_at, next_at, \
         created) VALUES (",
    );
    q.bind(row.id)
        .push(", ")
        .bind(D::text(flow))
        .push(", ")
        .bind(D::text(name))
        .push(", '")
        .push(source)
        .push("', ");
    D::push_json(&mut q, json_string(&row.spec)?);
    q.push(", NULL, ").bind_instant(now).push(", ");
    match row.next_at {
        Some(at) => q.bind_instant(at),
        None => q.push("NULL"),
    };
    q.push(", ").bind_instant(now).push(")");
    Ok(q)
}

/// The schedules of `flow`/`name`: those declared in code first, then those created over the
/// API, each in creation order; at most [`MAX_SCHEDULES_PER_DEPLOYMENT`] of each.
pub(crate) async fn schedules_of<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
) -> Result<Vec<Schedule>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT id, source, {}, paused_at, next_at FROM schedules WHERE flow = ",
        D::json_text("spec")
    ));
    q.bind(D::text(flow))
        .push(" AND name = ")
        .bind(D::text(name))
        .push(" ORDER BY source DESC, created, id LIMIT ")
        .bind(2 * MAX_SCHEDULES_PER_DEPLOYMENT as i64);
    let rows = D::fetch_all(&mut *pool.acquire().await?, &mut q).await?;
    rows.iter().map(schedule_of::<D>).collect()
}

/// One schedule by id, with its deployment's flow and name.
pub(crate) async fn schedule<D: Dialect>(
    pool: &Pool<D>,
    id: Uuid,
) -> Result<Option<(String, String, Schedule)>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT id, flow, name, source, {}, paused_at, next_at FROM schedules WHERE id = ",
        D::json_text("spec")
    ));
    q.bind(id);
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.as_ref()
        .map(|row| {
            let c = Columns::<D>(row);
            Ok((c.get("flow")?, c.get("name")?, schedule_of::<D>(row)?))
        })
        .transpose()
}

fn schedule_of<D: Dialect>(row: &D::Row) -> Result<Schedule, StoreError> {
    let c = Columns::<D>(row);
    let source: String = c.get("source")?;
    let paused = c.opt_instant("paused_at")?.is_some();
    Ok(Schedule {
        id: c.get("id")?,
        source: match source.as_str() {
            "code" => ScheduleSource::Code,
            "api" => ScheduleSource::Api,
            other => return Err(corrupt(format!("schedule source {other:?}"))),
        },
        active: !paused,
        next_at: if paused {
            None
        } else {
            c.opt_instant("next_at")?
        },
        spec: c.json("spec")?,
    })
}

/// Up to `limit` active schedules due at `now`, the most overdue first, in (`next_at`, id)
/// order: after `after` (the (`next_at`, id) of the last schedule of the page before), so
/// that a page can be read while the schedules of the one before are still being moved on.
pub(crate) async fn due_schedules<D: Dialect>(
    pool: &Pool<D>,
    now: DateTime<Utc>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<DueSchedule>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT id, flow, name, {}, last_at, next_at FROM schedules \
         WHERE paused_at IS NULL AND next_at <= ",
        D::json_text("spec")
    ));
    q.bind_instant(now);
    if let Some((next_at, id)) = after {
        q.push(" AND (next_at, id) > (")
            .bind_instant(next_at)
            .push(", ")
            .bind(id)
            .push(")");
    }
    q.push(" ORDER BY next_at, id LIMIT ")
        .bind(i64::from(limit));
    let rows = D::fetch_all(&mut *pool.acquire().await?, &mut q).await?;
    rows.iter().map(due_schedule_of::<D>).collect()
}

/// The schedules of `ids` that are active and have a next instant, due or not, in no
/// particular order: a tick reads again the schedules whose runs it planned ahead (see
/// `crate::scheduler::Scheduler::tick`). At most [`ROWS_PER_STATEMENT`] ids a statement.
pub(crate) async fn active_schedules<D: Dialect>(
    pool: &Pool<D>,
    ids: &[Uuid],
) -> Result<Vec<DueSchedule>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    let mut conn = pool.acquire().await?;
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(format!(
            "SELECT id, flow, name, {}, last_at, next_at FROM schedules \
             WHERE paused_at IS NULL AND next_at IS NOT NULL AND id IN (",
            D::json_text("spec")
        ));
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(*id);
        }
        q.push(")");
        for row in D::fetch_all(&mut *conn, &mut q).await? {
            found.push(due_schedule_of::<D>(&row)?);
        }
    }
    Ok(found)
}

fn due_schedule_of<D: Dialect>(row: &D::Row) -> Result<DueSchedule, StoreError> {
    let c = Columns::<D>(row);
    Ok(DueSchedule {
        id: c.get("id")?,
        flow: c.get("flow")?,
        name: c.get("name")?,
        spec: c.json("spec")?,
        last_at: c.instant("last_at")?,
        next_at: c.instant("next_at")?,
    })
}

/// Records that a schedule's instants up to `to` were handled and when it is next due —
/// only if no one else did since `from` was read (another replica's tick): returns whether
/// this call moved it.
pub(crate) async fn advance_schedule<D: BulkWrite>(
    conn: &mut D::Connection,
    id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    next_at: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("UPDATE schedules SET last_at = ");
    q.bind_instant(to).push(", next_at = ");
    match next_at {
        Some(at) => q.bind_instant(at),
        None => q.push("NULL"),
    };
    q.push(" WHERE id = ")
        .bind(id)
        .push(" AND last_at = ")
        .bind_instant(from);
    let moved = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(moved)
}

/// Pauses a schedule (`paused_at`), or resumes it from `now`: instants passed while paused
/// are never caught up. Returns whether the schedule exists.
pub(crate) async fn set_paused<D: BulkWrite>(
    conn: &mut D::Connection,
    id: Uuid,
    paused_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    next_at: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("UPDATE schedules SET ");
    match paused_at {
        Some(at) => {
            q.push("paused_at = ").bind_instant(at);
        }
        None => {
            q.push("paused_at = NULL, last_at = ")
                .bind_instant(now)
                .push(", next_at = ");
            match next_at {
                Some(at) => q.bind_instant(at),
                None => q.push("NULL"),
            };
        }
    }
    q.push(" WHERE id = ").bind(id);
    let changed = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(changed)
}

/// The runs among a schedule's latest [`OVERLAP_WINDOW`] that have not ended, with their
/// states.
pub(crate) async fn open_runs<D: Dialect>(
    pool: &Pool<D>,
    schedule_id: Uuid,
) -> Result<Vec<(Uuid, StateType)>, StoreError> {
    let mut q = QueryBuilder::new(
        "SELECT r.id AS id, r.state AS state FROM (SELECT run_id FROM schedule_slots \
         WHERE schedule_id = ",
    );
    q.bind(schedule_id)
        .push(" ORDER BY instant DESC LIMIT ")
        .bind(OVERLAP_WINDOW)
        .push(") s JOIN runs r ON r.id = s.run_id");
    let rows = D::fetch_all(&mut *pool.acquire().await?, &mut q).await?;
    let mut open = Vec::new();
    for row in &rows {
        let c = Columns::<D>(row);
        let state: StateType = parse_state(&c.get::<String>("state")?)?;
        if !state.is_final() {
            open.push((c.get("id")?, state));
        }
    }
    Ok(open)
}

/// Claims the slot (schedule, instant) for `run_id` inside a trigger's transaction: `None`
/// when claimed now, the run that holds it otherwise.
pub(crate) async fn claim_slot<D: Dialect>(
    tx: &mut D::Connection,
    slot: &super::ScheduleSlot,
    run_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let mut q = QueryBuilder::new(
        "INSERT INTO schedule_slots (schedule_id, instant, run_id, skipped) VALUES (",
    );
    q.bind(slot.schedule_id)
        .push(", ")
        .bind_instant(slot.instant)
        .push(", ")
        .bind(run_id)
        .push(", ")
        .bind(i64::try_from(slot.skipped).unwrap_or(i64::MAX))
        .push(") ON CONFLICT (schedule_id, instant) DO NOTHING RETURNING run_id");
    if D::fetch_optional(&mut *tx, &mut q).await?.is_some() {
        return Ok(None);
    }
    let mut q = QueryBuilder::new("SELECT run_id FROM schedule_slots WHERE schedule_id = ");
    q.bind(slot.schedule_id)
        .push(" AND instant = ")
        .bind_instant(slot.instant);
    let row = D::fetch_optional(&mut *tx, &mut q).await?.ok_or_else(|| {
        corrupt("a schedule slot was taken and is gone in one transaction".into())
    })?;
    Ok(Some(Columns::<D>(&row).get("run_id")?))
}

/// See [`super::Backend::slot_skipped`].
pub(crate) async fn slot_skipped<D: Dialect>(
    pool: &Pool<D>,
    schedule_id: Uuid,
    instant: DateTime<Utc>,
) -> Result<Option<u64>, StoreError> {
    let mut q = QueryBuilder::new("SELECT skipped FROM schedule_slots WHERE schedule_id = ");
    q.bind(schedule_id)
        .push(" AND instant = ")
        .bind_instant(instant);
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.map(|row| {
        let skipped: i64 = Columns::<D>(&row).get("skipped")?;
        Ok(u64::try_from(skipped).unwrap_or(0))
    })
    .transpose()
}

/// What [`insert_api_schedule`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created,
    /// The deployment already has [`MAX_SCHEDULES_PER_DEPLOYMENT`] schedules created over the
    /// API (this many).
    Full(u64),
}

/// Stores a schedule created over the API for `flow`/`name`, in one transaction with the count
/// that keeps the deployment at most [`MAX_SCHEDULES_PER_DEPLOYMENT`] of them (on PostgreSQL,
/// the deployment's row is locked so two creations at once cannot both pass the count).
pub(crate) async fn insert_api_schedule<D: BulkWrite>(
    conn: &mut D::Connection,
    flow: &str,
    name: &str,
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<Inserted, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    if !D::FOR_UPDATE.is_empty() {
        let mut q = QueryBuilder::new("SELECT flow FROM deployments WHERE flow = ");
        q.bind(D::text(flow))
            .push(" AND name = ")
            .bind(D::text(name))
            .push(D::FOR_UPDATE);
        D::fetch_all(&mut tx, &mut q).await?;
    }
    let mut q = QueryBuilder::new("SELECT count(*) AS n FROM schedules WHERE flow = ");
    q.bind(D::text(flow))
        .push(" AND name = ")
        .bind(D::text(name))
        .push(" AND source = 'api'");
    let row_count = D::fetch_optional(&mut tx, &mut q)
        .await?
        .ok_or_else(|| corrupt("count(*) answered nothing".into()))?;
    let n: i64 = Columns::<D>(&row_count).get("n")?;
    if n >= MAX_SCHEDULES_PER_DEPLOYMENT as i64 {
        tx.commit().await?;
        return Ok(Inserted::Full(u64::try_from(n).unwrap_or(0)));
    }
    let mut q = insert_sql::<D>(flow, name, "api", row, now)?;
    D::execute(&mut tx, &mut q).await?;
    tx.commit().await?;
    Ok(Inserted::Created)
}

/// Deletes a schedule created over the API (those declared in code are replaced by the
/// deployment's registration instead). The keys of the runs it created are kept, so its id
/// is never reused for an instant that already ran. Returns how many rows went (0 or 1).
pub(crate) async fn delete_api_schedule<D: BulkWrite>(
    conn: &mut D::Connection,
    id: Uuid,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("DELETE FROM schedules WHERE id = ");
    q.bind(id).push(" AND source = 'api'");
    let deleted = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(deleted)
}

/// How far one schedule's instants were handled by a tick: see [`advance_schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    /// The schedule.
    pub id: Uuid,
    /// Its `last_at` as read.
    pub from: DateTime<Utc>,
    /// Its new `last_at`.
    pub to: DateTime<Utc>,
    /// When it is next due.
    pub next_at: Option<DateTime<Utc>>,
}

/// Rows of one multi-row statement of [`write_slots`] (at most 29 bound values each: 14 500 a
/// statement, under what either database accepts in one statement).
pub const ROWS_PER_STATEMENT: usize = 500;

/// What [`write_slots`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotsWritten {
    /// Per run, in the order given: whether it was created (false: its slot already had a
    /// run, created by another replica's tick or a backfill).
    pub created: Vec<bool>,
    /// Schedules moved on (the others had been moved by another replica since they were
    /// read).
    pub advanced: u64,
    /// When the runs were written: their creation instant (the timestamp of their first
    /// state), so that a run's `created` never precedes the transaction that wrote it.
    pub at: DateTime<Utc>,
}

/// Creates the runs of schedules' slots and moves schedules on, in one transaction, with a
/// few multi-row statements per [`ROWS_PER_STATEMENT`] rows whatever their number (every
/// [`NewRun`](super::NewRun) has a `schedule_slot` and no idempotency key):
///
/// 1. the slots, in the order of their key (schedule, instant), with
///    `INSERT … ON CONFLICT DO NOTHING RETURNING`: a slot that has a run already (committed,
///    or being written by another transaction, which this one then waits for) is left alone
///    and its run is not created;
/// 2. the runs of the slots claimed now: their first states, then their rows with the columns
///    only a schedule's run has, by plain multi-row inserts (see [`insert_slot_runs`]);
/// 3. the schedules, in id order, each only if its `last_at` is still the one read (see
///    [`advance_schedule`]).
///
/// Every transaction takes its locks in that one order (slots by key, then schedules by id),
/// so two replicas writing the same slots or schedules at once wait for each other instead of
/// deadlocking. At most the runs of one tick's batch or of one backfill (1000) and the
/// schedules of one batch.
pub(crate) async fn write_slots<D: BulkWrite>(
    conn: &mut D::Connection,
    runs: &[super::NewRun],
    advances: &[Advance],
) -> Result<SlotsWritten, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let at = Utc::now();
    let slots = sorted_slots(runs)?;
    let mut won = HashSet::with_capacity(runs.len());
    for chunk in slots.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(
            "INSERT INTO schedule_slots (schedule_id, instant, run_id, skipped) VALUES ",
        );
        for (i, (schedule, instant, slot, run_id)) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(*schedule)
                .push(", ")
                .bind_instant(*instant)
                .push(", ")
                .bind(*run_id)
                .push(", ")
                .bind(i64::try_from(slot.skipped).unwrap_or(i64::MAX))
                .push(")");
        }
        q.push(" ON CONFLICT (schedule_id, instant) DO NOTHING RETURNING run_id");
        // Kept prepared, as the statements below: a tick's batches have one size.
        for row in D::fetch_all(&mut tx, &mut q).await? {
            won.insert(Columns::<D>(&row).get::<Uuid>("run_id")?);
        }
    }
    let created: Vec<bool> = runs
        .iter()
        .map(|run| won.contains(&run.event.run_id))
        .collect();
    let claimed: Vec<&super::NewRun> = runs
        .iter()
        .filter(|run| won.contains(&run.event.run_id))
        .collect();
    if !claimed.is_empty() {
        insert_slot_runs::<D>(&mut tx, &claimed, at).await?;
        if let Some(notify) = D::NOTIFY_RUNS {
            D::fetch_optional(&mut tx, &mut QueryBuilder::new(notify)).await?;
        }
    }
    let advanced = advance_in_order::<D>(&mut tx, advances).await?;
    tx.commit().await?;
    Ok(SlotsWritten {
        created,
        advanced,
        at,
    })
}

/// A slot as [`sorted_slots`] gives it: its schedule, its instant, the slot, its run's id.
pub(super) type SortedSlot<'a> = (Uuid, DateTime<Utc>, &'a super::ScheduleSlot, Uuid);

/// The slots of `runs` (each must have one), in the order of their key (schedule, instant),
/// each with its run's id: the order [`write_slots`] claims them in.
pub(super) fn sorted_slots(runs: &[super::NewRun]) -> Result<Vec<SortedSlot<'_>>, StoreError> {
    let mut slots = Vec::with_capacity(runs.len());
    for run in runs {
        let slot = run
            .schedule_slot
            .as_ref()
            .ok_or_else(|| corrupt("a slot trigger without a slot".into()))?;
        slots.push((slot.schedule_id, slot.instant, slot, run.event.run_id));
    }
    slots.sort_by_key(|(schedule, instant, _, _)| (*schedule, *instant));
    Ok(slots)
}

/// [`advance_schedule`] for many schedules inside `tx`, in id order (PostgreSQL: their rows
/// are locked in that order first, whatever plan the update then takes); how many moved.
async fn advance_in_order<D: BulkWrite>(
    tx: &mut D::Connection,
    advances: &[Advance],
) -> Result<u64, StoreError> {
    let mut sorted: Vec<&Advance> = advances.iter().collect();
    sorted.sort_by_key(|advance| advance.id);
    let mut moved = 0;
    for chunk in sorted.chunks(ROWS_PER_STATEMENT) {
        if !D::FOR_UPDATE.is_empty() {
            let mut q = QueryBuilder::new("SELECT id FROM schedules WHERE id IN (");
            for (i, advance) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(advance.id);
            }
            q.push(") ORDER BY id").push(D::FOR_UPDATE);
            D::fetch_all_once(&mut *tx, &mut q).await?;
        }
        let mut q = QueryBuilder::new("WITH v (id, from_at, to_at, next_at) AS (VALUES ");
        for (i, advance) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(advance.id)
                .push(", ")
                .bind_instant(advance.from)
                .push(", ")
                .bind_instant(advance.to)
                .push(", ")
                .bind_opt_instant(advance.next_at)
                .push(")");
        }
        q.push(
            ") UPDATE schedules SET last_at = v.to_at, next_at = v.next_at FROM v \
             WHERE schedules.id = v.id AND schedules.last_at = v.from_at",
        );
        moved += D::rows_affected(&D::execute(&mut *tx, &mut q).await?);
    }
    Ok(moved)
}

/// Inserts the first states and the rows of runs whose slots were just claimed, in `tx`, as
/// ingestion would fold them (see [`Plan`]) and with the columns only a schedule's run has
/// (`scheduled_for`, `created_by`, `late_at`, …) in the same insert. The runs and their events
/// are new (ids made by the server for them), so plain multi-row inserts do: no lookup of
/// stored event ids, no merge with an existing row, no second write of the row.
/// [`ROWS_PER_STATEMENT`] rows a statement; every run was created at `at`.
async fn insert_slot_runs<D: BulkWrite>(
    tx: &mut D::Connection,
    claimed: &[&super::NewRun],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (plan, mut rows) = slot_run_rows(claimed, at)?;
    for chunk in plan.states.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(format!(
            "INSERT INTO run_states ({}) VALUES ",
            super::queries::STATE_COLUMNS
        ));
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(row.event_id)
                .push(", ")
                .bind(row.run_id)
                .push(", ")
                .bind(row.group_id)
                .push(", ")
                .bind(row.state.as_str().to_string())
                .push(", ")
                .bind(row.message.as_deref().map(D::text))
                .push(", ")
                .bind(i64::from(row.attempt))
                .push(", ")
                .bind_instant(instant_of(row.ts)?)
                .push(")");
        }
        D::execute(&mut *tx, &mut q).await?;
    }
    let no_details = DetailsRow::default();
    for chunk in claimed.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(format!("INSERT INTO runs ({SLOT_RUN_COLUMNS}) VALUES "));
        for (i, run) in chunk.iter().enumerate() {
            let row = rows
                .remove(&run.event.run_id)
                .ok_or_else(|| corrupt("a schedule's run was not folded".into()))?;
            let details = row.details.as_ref().unwrap_or(&no_details);
            if !details.upstream.is_empty() {
                return Err(corrupt("a schedule's run with upstream runs".into()));
            }
            let slot = run.schedule_slot.as_ref();
            let truth = |yes: bool| if yes { "TRUE" } else { "FALSE" };
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(row.id)
                .push(", ")
                .bind(row.kind.as_str().to_string())
                .push(", ")
                .bind(D::text(&row.name))
                .push(", ")
                .bind(row.parent_run_id)
                .push(", ")
                .bind(row.flow_run_id)
                .push(", ")
                .bind(row.state.as_str().to_string())
                .push(", ")
                .bind(row.state_message.as_deref().map(D::text))
                .push(", ")
                .bind_instant(instant_of(row.state_ts)?)
                .push(", ")
                .bind(row.state_event_id)
                .push(", ")
                .bind(i64::from(row.attempt))
                .push(", ")
                .bind_instant(instant_of(row.created)?)
                .push(", ")
                .bind_opt_instant(row.started.map(instant_of).transpose()?)
                .push(", ")
                .bind_opt_instant(row.ended.map(instant_of).transpose()?)
                .push(", ")
                .push(truth(row.details.is_some()))
                .push(", ")
                .bind(D::text(&details.task_key))
                .push(", ");
            D::push_strings(&mut q, &details.tags)?;
            q.push(", ");
            match &details.parameters {
                Some(json) => D::push_json(&mut q, json.clone()),
                None => {
                    q.push("NULL");
                }
            }
            q.push(", ")
                .bind(details.cache_key.as_deref().map(D::text))
                .push(", ")
                .bind(details.deployment.as_deref().map(D::text))
                .push(", ")
                .bind(details.version.as_deref().map(D::text))
                .push(", ")
                .bind(details.worker.as_deref().map(D::text))
                .push(", ")
                .bind(row.lease_token)
                .push(", ")
                .bind_instant(instant_of(row.received)?)
                .push(", ")
                .bind_opt_instant(run.scheduled_for)
                .push(", ")
                .push(truth(run.version_pinned))
                .push(", ")
                .bind(i64::from(run.max_attempts.max(1)))
                .push(", ")
                .bind(run.created_by.as_deref().map(D::text))
                .push(", ")
                .bind_opt_instant(slot.and_then(|slot| slot.late_at))
                .push(", ")
                .bind_opt_instant(slot.and_then(|slot| slot.expires_at))
                .push(")");
        }
        D::execute(&mut *tx, &mut q).await?;
    }
    Ok(())
}

/// The columns of `runs` a schedule's run is inserted with (the others take their defaults).
pub(super) const SLOT_RUN_COLUMNS: &str = "id, kind, name, parent_run_id, flow_run_id, state, \
     state_message, state_ts, state_event_id, attempt, created, started, ended, has_details, \
     task_key, tags, parameters, cache_key, deployment, version, worker, lease_token, received, \
     scheduled_for, version_pinned, max_attempts, created_by, late_at, expires_at";
/// The columns of a schedule's run besides a run's own ([`super::queries::RUN_COLUMNS`]): the
/// end of [`SLOT_RUN_COLUMNS`].
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(super) const SLOT_RUN_EXTRA_COLUMNS: &str =
    "scheduled_for, version_pinned, max_attempts, created_by, late_at, expires_at";

/// The first states (the plan's `states`) and the rows, by run id, of runs whose slots were
/// just claimed, created at `at`: what [`insert_slot_runs`] inserts (each run is created by one
/// state event).
pub(super) fn slot_run_rows(
    claimed: &[&super::NewRun],
    at: DateTime<Utc>,
) -> Result<(Plan, HashMap<Uuid, RunRow>), StoreError> {
    let events: Vec<_> = claimed
        .iter()
        .map(|run| {
            let mut event = run.event.clone();
            event.timestamp = at;
            event
        })
        .collect();
    let plan = Plan::new(vec![events])?;
    let ids: HashSet<Uuid> = plan.states.iter().map(|row| row.event_id).collect();
    let rows: HashMap<Uuid, RunRow> = plan
        .runs(&ids)
        .into_owned()
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    if !plan.logs.is_empty() || plan.states.len() != claimed.len() || rows.len() != claimed.len() {
        return Err(corrupt(
            "a schedule's run is created by one state event".into(),
        ));
    }
    Ok((plan, rows))
}

/// The instant of microseconds since the epoch (as [`Plan`] keeps them).
fn instant_of(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| corrupt(format!("an instant out of range: {micros} µs")))
}
