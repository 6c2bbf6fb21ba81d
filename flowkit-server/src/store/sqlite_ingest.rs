//! Bulk ingestion on SQLite: the rows of a plan written by the one writer straight on its
//! connection, with a few prepared multi-row statements.
//!
//! Every other statement of the server goes through sqlx, whose SQLite driver runs each on the
//! connection's own thread: a round trip between two threads per statement, and every bound
//! value copied into an argument list first. Ingestion writes three or four rows per event, so
//! here the writer borrows the connection from that thread
//! ([`SqliteConnection::lock_handle`], the driver's documented way to call SQLite directly)
//! and runs its statements itself through `rusqlite` (the same SQLite library: both use the one
//! `libsqlite3-sys`), binding each value from the plan's rows where it lies.
//!
//! Each table keys its own rows: an event insert ends `ON CONFLICT (event_id) DO NOTHING
//! RETURNING event_id`, so a stored event (a replay) is skipped and the ids newly stored come
//! back from the insert itself, as on PostgreSQL. One event id is one event whatever its kind,
//! so before the inserts one lookup finds the state events' ids among the stored log lines and
//! the log lines' ids among the stored states (an id reused for the other kind: a duplicate).
//! The writer is the only one to write the file, and each plan is written inside its write
//! transaction (`BEGIN IMMEDIATE`, which also keeps any other process out): what the lookup
//! finds stays true until the inserts. (Before, every id was searched in both tables before
//! the inserts: one index search more per event.)
//!
//! Statement shapes are few, so each stays prepared: a lookup binds a power of two of ids;
//! event inserts come in chunks of [`EVENT_CHUNKS`] rows, the last padded up with copies of
//! its last row (which the conflict clause skips, so they are not returned); runs in chunks of
//! [`RUN_CHUNKS`] rows.
//! (Multi-row statements, because SQLite opens a statement journal for each execution of an
//! insert into these tables and copies into it every page the statement first changes: one
//! statement per row would copy the same pages row after row.)
//!
//! The inserts are `INSERT OR FAIL`: SQLite journals a statement only when it may have to undo
//! it alone (a constraint that aborts, the default; a function call; an upsert's `DO UPDATE`),
//! and a statement that fails instead leaves no statement journal to keep. Nothing here relies
//! on a failed statement being undone alone: a failure fails the whole write, rolled back with
//! its transaction or savepoint. (The journal's copies of pages were about a tenth of the
//! writer's time.) Runs are inserted that way too when they are new, and only the others go
//! through the upsert (`queries::merge_runs`), which still journals.
//!
//! The writer's own transactions ([`Ingester::write_alone`], what heavy load is made of)
//! count instead of reading ids back: their inserts end `ON CONFLICT DO NOTHING` without
//! `RETURNING`, and a chunk that stores as many rows as it holds stored every one of them (see
//! [`insert_counted`]; in `ingest_bench`, 1.08-1.10× the events per second of the inserts that
//! return ids). An event sent again is the rare case that cannot be told from a count: the
//! group is rolled back and written again with the inserts that return ids. Those counted
//! inserts bind the plan's values where they lie, without a copy of each ([`StaticInsert`],
//! which rusqlite's statements cannot do).
//!
//! No trigger fires on inserts into `runs` (migration 0016): the writer queues the alert
//! events of the runs it creates itself ([`queue_alerts`]).
//!
//! Two ways in: [`Ingester`], kept by the writer for its whole life, whose statements stay
//! prepared from one ingest group to the next; and [`BulkWrite`] for the other writes that
//! store events (a trigger's first state, a scheduled run), which borrow the connection for
//! one call.

use super::queries::{self, BulkWrite, LOG_COLUMNS, RUN_COLUMNS, STATE_COLUMNS};
use super::rows::{LogRow, Plan, RunRow, StateRow};
use super::sqlite_rows::{BindRow, bind_rows, chunked, padded, read_ids, values_sql};
use super::sqlite_static_insert::StaticInsert;
use super::{IngestOutcome, StoreError};
use flowkit_wire::api::alerts::ALERT_STATES;
use flowkit_wire::event::RunKind;
use sqlx::Sqlite;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

/// Event ids one lookup binds at most (under SQLite's limit of 32 766 parameters).
const LOOKUP_CHUNK: usize = 4096;
/// Rows per multi-row insert of events, largest first; the last chunk of a batch is padded up
/// to the smallest size that holds it.
const EVENT_CHUNKS: [usize; 7] = [512, 256, 128, 64, 32, 16, 8];
/// Rows per multi-row upsert of runs, largest first (not padded: a run row is merged, not
/// skipped, when it comes again).
const RUN_CHUNKS: [usize; 4] = [256, 32, 8, 1];
/// The end of an insert of events: a stored id (a replay, or the padding: a copy of a row of
/// the same statement) is skipped; the ids newly stored come back.
const NEW_EVENTS_ONLY: &str = " ON CONFLICT (event_id) DO NOTHING RETURNING event_id";
/// The end of an insert of runs that only creates rows: a stored run (or the padding: a copy
/// of a row of the same statement) is skipped, left to the upsert; the ids of the rows created
/// come back.
const NEW_RUNS_ONLY: &str = " ON CONFLICT (id) DO NOTHING RETURNING id";
/// The end of an insert of events that counts what it stores (see [`insert_counted`]).
const NEW_EVENTS_COUNTED: &str = " ON CONFLICT (event_id) DO NOTHING";
/// The end of an insert of runs that counts what it creates (see [`create_or_merge_runs`]).
const NEW_RUNS_COUNTED: &str = " ON CONFLICT (id) DO NOTHING";
/// Statements the [`Ingester`] keeps prepared in rusqlite's cache: every shape above but the
/// counted inserts (held by [`CountedInserts`]), the lookups' 2 × 13 sizes, the two range
/// searches ([`any_between`]), the three of [`Ingester::write_alone`]'s transaction, and
/// [`QUEUE_ALERT`].
const PREPARED: usize = 57;
/// How [`Ingester::write_alone`] begins its transaction (as every write does on SQLite, see
/// `Dialect::BEGIN_WRITE`).
const BEGIN: &str = "BEGIN IMMEDIATE";

/// The multi-row statements of ingestion, one per chunk size, built once.
struct IngestSql {
    states: Vec<String>,
    logs: Vec<String>,
    runs: Vec<String>,
    /// The inserts of runs not stored yet (see [`NEW_RUNS_ONLY`]), one per size of
    /// [`EVENT_CHUNKS`].
    new_runs: Vec<String>,
    /// `states`, `logs` and `new_runs` ending with what they store counted, not returned
    /// ([`NEW_EVENTS_COUNTED`], [`NEW_RUNS_COUNTED`]), one per size of [`EVENT_CHUNKS`].
    states_counted: Vec<String>,
    logs_counted: Vec<String>,
    new_runs_counted: Vec<String>,
    /// The lookup of `2^i` ids among the stored log lines, at index `i`.
    in_logs: Vec<String>,
    /// The lookup of `2^i` ids among the stored states, at index `i`.
    in_states: Vec<String>,
    /// Whether a log line is stored with an id between the two bound.
    any_log_between: String,
    /// Whether a state is stored with an id between the two bound.
    any_state_between: String,
}

static INGEST_SQL: LazyLock<IngestSql> = LazyLock::new(|| {
    let build = |table: &str, columns: &str, sizes: &[usize], tail: &str| -> Vec<String> {
        // `OR FAIL` where nothing is updated: see the module documentation.
        let or = if tail.contains("DO UPDATE") {
            ""
        } else {
            "OR FAIL "
        };
        let head = format!("INSERT {or}INTO {table} ({columns}) VALUES ");
        let width = columns.split(',').count();
        sizes
            .iter()
            .map(|&rows| values_sql(&head, width, rows, tail))
            .collect()
    };
    IngestSql {
        states: build("run_states", STATE_COLUMNS, &EVENT_CHUNKS, NEW_EVENTS_ONLY),
        logs: build("logs", LOG_COLUMNS, &EVENT_CHUNKS, NEW_EVENTS_ONLY),
        runs: build(
            "runs",
            RUN_COLUMNS,
            &RUN_CHUNKS,
            &queries::merge_runs::<Sqlite>(),
        ),
        new_runs: build("runs", RUN_COLUMNS, &EVENT_CHUNKS, NEW_RUNS_ONLY),
        states_counted: build(
            "run_states",
            STATE_COLUMNS,
            &EVENT_CHUNKS,
            NEW_EVENTS_COUNTED,
        ),
        logs_counted: build("logs", LOG_COLUMNS, &EVENT_CHUNKS, NEW_EVENTS_COUNTED),
        new_runs_counted: build("runs", RUN_COLUMNS, &EVENT_CHUNKS, NEW_RUNS_COUNTED),
        in_logs: lookups("logs"),
        in_states: lookups("run_states"),
        any_log_between: any_between("logs"),
        any_state_between: any_between("run_states"),
    }
});

/// The lookups of 1, 2, 4, … [`LOOKUP_CHUNK`] ids in `table`.
fn lookups(table: &str) -> Vec<String> {
    (0..=LOOKUP_CHUNK.trailing_zeros())
        .map(|i| {
            let list = vec!["?"; 1 << i].join(", ");
            format!("SELECT event_id FROM {table} WHERE event_id IN ({list})")
        })
        .collect()
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(e.to_string())
    }
}

/// Whether `table` holds an event id between the two bound (one search of its key).
fn any_between(table: &str) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE event_id BETWEEN ?1 AND ?2)")
}

/// The fewest ids [`find_stored_in_ranges`] looks up one by one.
const RANGE_MIN: usize = 32;

/// A row keyed by an event id: what [`find_stored`] searches the ids of, from a plan's rows as
/// they lie (no list of ids built on the way).
trait EventKeyed {
    fn event_id(&self) -> &Uuid;
}

impl EventKeyed for StateRow {
    fn event_id(&self) -> &Uuid {
        &self.event_id
    }
}

impl EventKeyed for LogRow {
    fn event_id(&self) -> &Uuid {
        &self.event_id
    }
}

impl EventKeyed for Uuid {
    fn event_id(&self) -> &Uuid {
        self
    }
}

/// Adds to `found` the ids of `rows` (sorted by them) stored in a table: `any_between` (see
/// [`any_between`]) says whether the table holds an id between two, `lookups` (see [`lookups`])
/// finds them one by one.
///
/// Event ids are UUIDv7, which begin with their event's time, and a plan's are sorted: they
/// cover the stretch of time of a batch, in which the other kind's table (what this searches)
/// mostly holds nothing, an id stored as both kinds being a client's mistake. So the whole
/// range is asked first, one search of the table's key instead of one per id; a range that
/// holds a stored id is halved, down to [`RANGE_MIN`] ids looked up one by one. When the
/// other kind's events of other processes at the same moments are stored, that is about
/// 2/[`RANGE_MIN`] more searches than looking every id up.
fn find_stored_in_ranges<R: EventKeyed>(
    db: &rusqlite::Connection,
    any_between: &str,
    lookups: &[String],
    rows: &[R],
    found: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    debug_assert!(
        rows.is_sorted_by_key(|row| *row.event_id()),
        "ids are searched by ranges: sorted"
    );
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    let bounds = [first, last].map(|row| &row.event_id().as_bytes()[..]);
    let any: bool = db
        .prepare_cached(any_between)?
        .query_row(bounds, |row| row.get(0))?;
    if !any {
        return Ok(());
    }
    if rows.len() <= RANGE_MIN {
        return find_stored(db, lookups, rows, found);
    }
    let (low, high) = rows.split_at(rows.len() / 2);
    find_stored_in_ranges(db, any_between, lookups, low, found)?;
    find_stored_in_ranges(db, any_between, lookups, high, found)
}

/// Adds to `found` the ids of `rows` stored in the table of `lookups` (see [`lookups`]).
fn find_stored<R: EventKeyed>(
    db: &rusqlite::Connection,
    lookups: &[String],
    rows: &[R],
    found: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(LOOKUP_CHUNK) {
        // Padded to a power of two with the last id again: a handful of shapes stay prepared.
        let padded = chunk.len().next_power_of_two();
        let mut lookup = db.prepare_cached(&lookups[padded.trailing_zeros() as usize])?;
        let last = chunk
            .last()
            .map_or(&[0; 16], |row| row.event_id().as_bytes());
        let padding = std::iter::repeat_n(last, padded - chunk.len());
        for (i, id) in chunk
            .iter()
            .map(|row| row.event_id().as_bytes())
            .chain(padding)
            .enumerate()
        {
            lookup.raw_bind_parameter(i + 1, id)?;
        }
        read_ids(&mut lookup, found)?;
    }
    Ok(())
}

/// Writes `rows` with `statements` (one per size of `sizes`), chunk by chunk; with `pad`, the
/// last chunk is padded with copies of its last row up to its statement's size. With
/// `returned`, the statements return ids (see [`NEW_EVENTS_ONLY`]), which are added to it.
fn write_rows<R: BindRow>(
    db: &rusqlite::Connection,
    statements: &[String],
    sizes: &[usize],
    pad: bool,
    rows: &[R],
    mut returned: Option<&mut HashSet<Uuid>>,
) -> Result<(), StoreError> {
    for (which, chunk) in chunked(rows, sizes, pad) {
        let mut statement = db.prepare_cached(&statements[which])?;
        bind_rows(&mut *statement, padded(chunk, sizes[which]))?;
        match returned.as_deref_mut() {
            Some(ids) => read_ids(&mut statement, ids)?,
            None => {
                statement.raw_execute()?;
            }
        }
    }
    Ok(())
}

/// The tables of the counted inserts ([`insert_counted`]).
#[derive(Clone, Copy, Debug)]
enum Counted {
    States,
    Logs,
    NewRuns,
}

impl Counted {
    /// The insert of `EVENT_CHUNKS[which]` rows into this table.
    fn sql(self, which: usize) -> &'static str {
        let sql = &*INGEST_SQL;
        match self {
            Counted::States => &sql.states_counted[which],
            Counted::Logs => &sql.logs_counted[which],
            Counted::NewRuns => &sql.new_runs_counted[which],
        }
    }
}

/// The counted inserts on the writer's connection, each prepared as first used and bound
/// without copies (see [`StaticInsert`]). Dropped (finalized) before the connection closes.
pub(super) struct CountedInserts {
    db: NonNull<rusqlite::ffi::sqlite3>,
    /// By table (in the order of [`Counted`]), then by size of [`EVENT_CHUNKS`].
    prepared: Vec<Option<StaticInsert>>,
}

impl CountedInserts {
    /// None prepared yet, on `db`, the writer's connection (see [`StaticInsert::prepare`]).
    fn new(db: NonNull<rusqlite::ffi::sqlite3>) -> CountedInserts {
        CountedInserts {
            db,
            prepared: (0..3 * EVENT_CHUNKS.len()).map(|_| None).collect(),
        }
    }

    /// The insert of `EVENT_CHUNKS[which]` rows into `table`.
    fn insert(&mut self, table: Counted, which: usize) -> Result<&mut StaticInsert, StoreError> {
        let slot = &mut self.prepared[table as usize * EVENT_CHUNKS.len() + which];
        match slot {
            Some(insert) => Ok(insert),
            None => Ok(slot.insert(StaticInsert::prepare(self.db, table.sql(which))?)),
        }
    }
}

/// Inserts `rows` into `table` with the inserts of `counted` (one per size of
/// [`EVENT_CHUNKS`], ending `ON CONFLICT DO NOTHING` without `RETURNING`), chunk by chunk, the
/// last padded, and counts the rows each chunk stores. A chunk that stores fewer rows than it
/// holds (some were stored already) goes to `short`; when `short` answers false, this stops
/// there and answers false.
///
/// (`RETURNING` costs SQLite, for each row, a run of the trigger program that evaluates it
/// and an insert into a temporary table the results are read back from; the count is free.
/// The padding copies of a chunk's last row are not counted: they conflict with it.)
fn insert_counted<'r, R: BindRow>(
    counted: &mut CountedInserts,
    table: Counted,
    rows: &'r [R],
    mut short: impl FnMut(&'r [R]) -> bool,
) -> Result<bool, StoreError> {
    for (which, chunk) in chunked(rows, &EVENT_CHUNKS, true) {
        let stored = counted
            .insert(table, which)?
            .run(padded(chunk, EVENT_CHUNKS[which]))?;
        if stored < chunk.len() && !short(chunk) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The ids of the plan's state events stored as log lines, and of its log lines stored as
/// state events (an id reused for the other kind of event: a duplicate).
fn stored_as_other_kind(
    db: &rusqlite::Connection,
    plan: &Plan,
) -> Result<HashSet<Uuid>, StoreError> {
    let sql = &*INGEST_SQL;
    let mut found = HashSet::new();
    // A plan's rows are sorted by event id.
    let (states, logs) = (&plan.states, &plan.logs);
    find_stored_in_ranges(db, &sql.any_log_between, &sql.in_logs, states, &mut found)?;
    find_stored_in_ranges(db, &sql.any_state_between, &sql.in_states, logs, &mut found)?;
    Ok(found)
}

/// See [`BulkWrite::insert_events`].
fn insert_events(
    db: &rusqlite::Connection,
    plan: &Plan,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    let found = stored_as_other_kind(db, plan)?;
    let (states, logs) = plan.unseen(&found);
    write_rows(
        db,
        &INGEST_SQL.states,
        &EVENT_CHUNKS,
        true,
        &states,
        Some(stored),
    )?;
    write_rows(
        db,
        &INGEST_SQL.logs,
        &EVENT_CHUNKS,
        true,
        &logs,
        Some(stored),
    )
}

/// Queues an alert event for the run of the id bound, when it is a flow run and alert rules
/// exist (see [`queue_alerts`]).
const QUEUE_ALERT: &str = "INSERT INTO alert_events (run_id, state, attempt, message) \
     SELECT id, state, attempt, state_message FROM runs \
     WHERE id = ?1 AND kind = 'flow' AND EXISTS (SELECT 1 FROM alert_rules)";

/// Queues for the alert matcher (`crate::alerts`) the flow runs among `created` (rows this
/// write has just created) that were created in a state a rule may list, while rules exist:
/// what the trigger on inserts into `runs` did until migration 0016 dropped it. (A row trigger
/// makes SQLite write every row of an insert into `runs` to a temporary table first and then
/// copy it, and run the trigger's program for each: in `ingest_bench`, 1.03-1.09× the events
/// per second without it.) A change of a stored row still reaches `alert_events` through the
/// trigger on updates.
pub(super) fn queue_alerts<'r>(
    db: &rusqlite::Connection,
    created: impl Iterator<Item = &'r RunRow>,
) -> Result<(), StoreError> {
    for run in created.filter(|run| may_alert(run)) {
        db.prepare_cached(QUEUE_ALERT)?
            .execute([&run.id.as_bytes()[..]])?;
    }
    Ok(())
}

/// Whether a run row holds a flow run in a state an alert rule may list.
fn may_alert(run: &RunRow) -> bool {
    run.kind == RunKind::Flow && ALERT_STATES.contains(&run.state)
}

/// See [`BulkWrite::upsert_runs`].
///
/// Most runs are new (their events come together): they are inserted first, by a plain insert
/// that never aborts (see the module documentation), which tells the runs it creates (queued
/// for alerts, see [`queue_alerts`]); only the runs already stored are merged by the upsert.
fn upsert_runs<R: BindRow + Borrow<RunRow>>(
    db: &rusqlite::Connection,
    runs: &[R],
) -> Result<(), StoreError> {
    let mut created = HashSet::with_capacity(runs.len());
    write_rows(
        db,
        &INGEST_SQL.new_runs,
        &EVENT_CHUNKS,
        true,
        runs,
        Some(&mut created),
    )?;
    let runs = runs.iter().map(Borrow::borrow);
    queue_alerts(db, runs.clone().filter(|r| created.contains(&r.id)))?;
    if created.len() == runs.len() {
        return Ok(());
    }
    let stored: Vec<&RunRow> = runs.filter(|r| !created.contains(&r.id)).collect();
    write_rows(db, &INGEST_SQL.runs, &RUN_CHUNKS, false, &stored, None)
}

/// Creates the runs `runs` (a plan's, every event of which was newly stored), or merges them
/// into the stored rows of the same ids.
///
/// - A run whose details are in the plan is new: they come with its first event. Those are
///   inserted by a plain insert that counts what it creates (see [`insert_counted`]). A chunk
///   of them that created fewer rows than it holds (a run's details came after another of its
///   states) is merged whole by the upsert: merging a row just created from the same events
///   changes nothing, the merge being a function of the set of events a row has seen.
/// - The others are merged by the upsert, which creates those not stored.
/// - Except a flow run in a state an alert rule may list: it goes through [`upsert_runs`],
///   which tells the runs it creates, to be queued for alerts (an upsert's update is seen by
///   the trigger on updates; a row it creates, by nothing).
fn create_or_merge_runs(
    db: &rusqlite::Connection,
    counted: &mut CountedInserts,
    runs: &[RunRow],
) -> Result<(), StoreError> {
    let mut alerted = Vec::new();
    let mut new = Vec::with_capacity(runs.len());
    let mut merged = Vec::new();
    for run in runs {
        match (may_alert(run), run.details.is_some()) {
            (true, _) => alerted.push(run),
            (false, true) => new.push(run),
            (false, false) => merged.push(run),
        }
    }
    insert_counted(counted, Counted::NewRuns, &new, |chunk| {
        merged.extend_from_slice(chunk);
        true
    })?;
    write_rows(db, &INGEST_SQL.runs, &RUN_CHUNKS, false, &merged, None)?;
    upsert_runs(db, &alerted)
}

/// Writes a plan's rows inside the caller's transaction as [`write_plan`] does, with inserts
/// that count the rows they store instead of returning their ids (see [`insert_counted`]).
/// True when every event of the plan was newly stored, which is what its outcome then says
/// ([`Plan::outcomes_all_new`]). False as soon as one is found stored already (sent again):
/// which ones cannot be told any more, so the transaction is to be rolled back and the plan
/// written by [`write_plan`].
fn write_plan_counted(
    db: &rusqlite::Connection,
    counted: &mut CountedInserts,
    plan: &Plan,
) -> Result<bool, StoreError> {
    if !plan.is_empty() {
        let all_new = stored_as_other_kind(db, plan)?.is_empty()
            && insert_counted(counted, Counted::States, &plan.states, |_| false)?
            && insert_counted(counted, Counted::Logs, &plan.logs, |_| false)?;
        if !all_new {
            return Ok(false);
        }
    }
    create_or_merge_runs(db, counted, plan.all_runs())?;
    Ok(true)
}

/// Writes a plan's rows inside the caller's transaction (see [`queries::write_plan`]).
fn write_plan(
    db: &rusqlite::Connection,
    plan: &Plan,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    if !plan.is_empty() {
        insert_events(db, plan, stored)?;
    }
    let runs = plan.runs(stored);
    upsert_runs(db, &runs)
}

/// Bytes of the writer's lookaside memory ([`widen_lookaside`]).
const LOOKASIDE_BYTES: usize = 2 << 20;
/// The size of the larger of its slots (the rest are 128 bytes).
const LOOKASIDE_SLOT: usize = 256;

/// Gives the writer's connection `conn` [`LOOKASIDE_BYTES`] of lookaside memory (SQLite's
/// per-connection pool of small blocks) instead of SQLite's default of about 48 KiB. An
/// ingestion statement binds a few thousand strings and ids at once, each copied into a
/// block of its own: past the default pool each took a `malloc` and a `free` (in a profile of
/// `ingest_bench`, about a sixth of the writer's samples were in the allocator). To be called
/// before the connection keeps any prepared statement: SQLite refuses the change while the
/// pool is in use, and then nothing changes (the writer is only slower). Says whether the
/// pool was changed.
pub(super) async fn widen_lookaside(conn: &mut SqliteConnection) -> Result<bool, StoreError> {
    let mut handle = conn.lock_handle().await?;
    let slots = LOOKASIDE_BYTES / LOOKASIDE_SLOT;
    // SAFETY: the handle is a live connection that no other thread uses while `handle` is held
    // (see `borrowed`); with a null buffer SQLite allocates the pool itself and frees it with
    // the connection. The two sizes are `int`s, as the option takes them.
    #[allow(unsafe_code)]
    let code = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            handle.as_raw_handle().as_ptr(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            LOOKASIDE_SLOT as std::ffi::c_int,
            slots as std::ffi::c_int,
        )
    };
    drop(handle);
    Ok(code == rusqlite::ffi::SQLITE_OK)
}

/// SQLite's connection of `handle`, as rusqlite sees it, for as long as `handle` is held.
#[allow(unsafe_code)]
pub(super) fn borrowed(
    handle: &mut LockedSqliteHandle<'_>,
) -> Result<rusqlite::Connection, StoreError> {
    // SAFETY: the handle is a live connection, and while `handle` is held the driver's thread
    // makes no call on it or its statements (see `LockedSqliteHandle::as_raw_handle`). The
    // rusqlite connection does not own it, so it never closes it; whoever takes it makes sure
    // it makes its calls (and finalizes its statements, when dropped) while the handle is
    // held and before the driver closes the connection.
    Ok(unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?)
}

/// What [`Ingester::write_alone`] did.
pub(super) enum WrittenAlone {
    /// Committed: each plan's outcome.
    Committed(Vec<IngestOutcome>),
    /// A plan's write failed: the transaction was rolled back, nothing of any plan is stored.
    Failed(StoreError),
    /// The transaction could not begin or commit: nothing is stored.
    NotCommitted(StoreError),
}

/// Ingestion's statements, kept prepared on the writer's connection from one group to the
/// next. Made by the writer after the migrations and [closed](Ingester::close) before its
/// connection is: its prepared statements must be finalized while the connection is open.
pub(super) struct Ingester {
    db: rusqlite::Connection,
    /// The inserts of the writer's own transactions ([`Ingester::write_alone`]).
    counted: RefCell<CountedInserts>,
    /// The connection it was made for: it refuses any other.
    handle: NonNull<rusqlite::ffi::sqlite3>,
}

impl Ingester {
    /// Ingestion's statements on `conn` (prepared as first used).
    pub(super) async fn open(conn: &mut SqliteConnection) -> Result<Ingester, StoreError> {
        let mut handle = conn.lock_handle().await?;
        let db = borrowed(&mut handle)?;
        db.set_prepared_statement_cache_capacity(PREPARED);
        Ok(Ingester {
            db,
            counted: RefCell::new(CountedInserts::new(handle.as_raw_handle())),
            handle: handle.as_raw_handle(),
        })
    }

    /// Writes `plans` one after the other inside the transaction open on `conn` (the
    /// connection this was made for); returns each plan's outcome.
    pub(super) async fn write(
        &self,
        conn: &mut SqliteConnection,
        plans: &[Arc<Plan>],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut handle = conn.lock_handle().await?;
        self.owns(&mut handle)?;
        let outcomes = self.write_each(plans);
        drop(handle);
        outcomes
    }

    /// Refuses a handle of another connection than the one the statements were prepared on.
    fn owns(&self, handle: &mut LockedSqliteHandle<'_>) -> Result<(), StoreError> {
        if handle.as_raw_handle() == self.handle {
            Ok(())
        } else {
            Err(StoreError::Sqlite(
                "the writer's statements were prepared on another connection".into(),
            ))
        }
    }

    /// Writes `plans` one after the other on the borrowed connection; returns each plan's
    /// outcome.
    fn write_each(&self, plans: &[Arc<Plan>]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            let mut stored = HashSet::with_capacity(plan.states.len() + plan.logs.len());
            write_plan(&self.db, plan, &mut stored)?;
            outcomes.extend(plan.outcomes(&stored));
        }
        Ok(outcomes)
    }

    /// Writes `plans` one after the other on the borrowed connection with the inserts that
    /// count (see [`write_plan_counted`]); returns each plan's outcome, or `None` as soon as
    /// one of their events is found stored already (then the caller rolls the transaction
    /// back).
    fn write_each_counted(
        &self,
        plans: &[Arc<Plan>],
    ) -> Result<Option<Vec<IngestOutcome>>, StoreError> {
        let mut outcomes = Vec::with_capacity(plans.len());
        let mut counted = self.counted.borrow_mut();
        for plan in plans {
            if !write_plan_counted(&self.db, &mut counted, plan)? {
                return Ok(None);
            }
            outcomes.extend(plan.outcomes_all_new());
        }
        Ok(Some(outcomes))
    }

    /// Writes `plans` one after the other in a transaction of their own, begun and committed
    /// here on the writer's thread through `handle`, the connection this was made for, which
    /// the writer holds borrowed from its driver's thread while only ingest requests come
    /// (see `sqlite::ingest_alone`). Through sqlx, `BEGIN`, the borrowing and `COMMIT` were
    /// three round trips to that thread per group; while both cores are busy each waited for
    /// the other thread to be scheduled (the writer slept about a quarter of its time in
    /// `ingest_bench`).
    ///
    /// The connection must not be in a transaction (sqlx's own count of them is left
    /// untouched: this one ends before the handle is given back). Whatever fails, the
    /// transaction is rolled back before this returns.
    pub(super) fn write_alone(
        &self,
        handle: &mut LockedSqliteHandle<'_>,
        plans: &[Arc<Plan>],
    ) -> WrittenAlone {
        if let Err(e) = self.owns(handle) {
            return WrittenAlone::NotCommitted(e);
        }
        let run = |sql: &str| -> Result<(), StoreError> {
            self.db.prepare_cached(sql)?.raw_execute()?;
            Ok(())
        };
        let commit = |outcomes| match run("COMMIT") {
            Ok(()) => WrittenAlone::Committed(outcomes),
            Err(e) => WrittenAlone::NotCommitted(e),
        };
        let written = match run(BEGIN) {
            Err(e) => WrittenAlone::NotCommitted(e),
            Ok(()) => match self.write_each_counted(plans) {
                Err(e) => WrittenAlone::Failed(e),
                Ok(Some(outcomes)) => commit(outcomes),
                // An event was sent again: which ones cannot be told from counts, so the
                // group is written again with the inserts that return what they store.
                Ok(None) => match run("ROLLBACK").and_then(|()| run(BEGIN)) {
                    Err(e) => WrittenAlone::NotCommitted(e),
                    Ok(()) => match self.write_each(plans) {
                        Err(e) => WrittenAlone::Failed(e),
                        Ok(outcomes) => commit(outcomes),
                    },
                },
            },
        };
        if !self.db.is_autocommit() {
            // A failed write or commit: nothing of it stays.
            if let Err(e) = run("ROLLBACK") {
                tracing::error!("rolling back a failed ingest transaction: {e}");
            }
        }
        written
    }

    /// Finalizes the prepared statements (before `conn`, the connection this was made for,
    /// is closed).
    pub(super) async fn close(self, conn: &mut SqliteConnection) {
        match conn.lock_handle().await {
            Ok(mut handle) => {
                if handle.as_raw_handle() == self.handle {
                    drop(self.counted);
                    drop(self.db);
                } else {
                    // Not the connection they were prepared on: they are not touched.
                    std::mem::forget(self.counted);
                    std::mem::forget(self.db);
                }
                drop(handle);
            }
            // The driver's thread is gone: nothing may run on the handle any more, so the
            // statements are left as they are.
            Err(_) => {
                std::mem::forget(self.counted);
                std::mem::forget(self.db);
            }
        }
    }
}

/// Runs `write` on the connection of `conn`, borrowed from its driver's thread for the call
/// (its statements prepared for the call and finalized at its end).
async fn on_connection<T>(
    conn: &mut SqliteConnection,
    write: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut handle = conn.lock_handle().await?;
    let db = borrowed(&mut handle)?;
    let result = write(&db);
    drop(db);
    drop(handle);
    result
}

impl BulkWrite for Sqlite {
    async fn insert_events(
        conn: &mut SqliteConnection,
        plan: &Plan,
        stored: &mut HashSet<Uuid>,
    ) -> Result<(), StoreError> {
        on_connection(conn, |db| insert_events(db, plan, stored)).await
    }

    async fn upsert_runs(conn: &mut SqliteConnection, runs: &[RunRow]) -> Result<(), StoreError> {
        on_connection(conn, |db| upsert_runs(db, runs)).await
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler's writes (`super::sqlite_schedule_rows`), on the writer's connection too
// ---------------------------------------------------------------------------------------------

impl Ingester {
    /// Runs `write` on the connection of `conn` (the one this was made for) as rusqlite sees
    /// it, with this connection's cache of prepared statements (made to hold the scheduler's
    /// statements besides ingestion's).
    pub(super) async fn on_writer<T>(
        &self,
        conn: &mut SqliteConnection,
        write: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut handle = conn.lock_handle().await?;
        self.owns(&mut handle)?;
        self.db.set_prepared_statement_cache_capacity(
            PREPARED + super::sqlite_schedule_rows::PREPARED,
        );
        let result = write(&self.db);
        drop(handle);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searching by ranges finds exactly the stored ids among sorted ones, wherever they lie:
    /// none, a few scattered, runs of them, all.
    #[test]
    fn ranges_find_exactly_the_stored_ids() {
        let db = rusqlite::Connection::open_in_memory().expect("db");
        db.execute_batch("CREATE TABLE logs (event_id BLOB NOT NULL PRIMARY KEY)")
            .expect("table");
        let mut ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
        ids.sort();
        let sql = &*INGEST_SQL;
        type Stored = fn(usize) -> bool;
        let cases: [(&str, Stored); 4] = [
            ("none", |_| false),
            ("every 37th", |i| i % 37 == 5),
            ("a run", |i| (400..480).contains(&i)),
            ("all", |_| true),
        ];
        for (case, stored) in cases {
            db.execute("DELETE FROM logs", []).expect("clear");
            let mut expected = HashSet::new();
            for (i, id) in ids.iter().enumerate() {
                if stored(i) {
                    db.execute("INSERT INTO logs VALUES (?1)", [&id.as_bytes()[..]])
                        .expect("insert");
                    expected.insert(*id);
                }
            }
            // And ids outside the range searched, which must not be found.
            for _ in 0..3 {
                let outside = Uuid::now_v7();
                db.execute("INSERT INTO logs VALUES (?1)", [&outside.as_bytes()[..]])
                    .expect("insert");
            }
            let mut found = HashSet::new();
            find_stored_in_ranges(&db, &sql.any_log_between, &sql.in_logs, &ids, &mut found)
                .expect("search");
            assert_eq!(found, expected, "{case}");
        }
    }

    /// The widths rows are bound with are the statements' column counts.
    #[test]
    fn widths_are_the_column_counts() {
        let count = |columns: &str| columns.split(',').count();
        assert_eq!(count(STATE_COLUMNS), StateRow::WIDTH);
        assert_eq!(count(LOG_COLUMNS), LogRow::WIDTH);
        assert_eq!(count(RUN_COLUMNS), RunRow::WIDTH);
        assert_eq!(INGEST_SQL.in_logs.len(), 13);
        // The shapes, the two range searches, BEGIN, COMMIT, ROLLBACK and QUEUE_ALERT.
        assert_eq!(
            PREPARED,
            INGEST_SQL.states.len()
                + INGEST_SQL.logs.len()
                + INGEST_SQL.runs.len()
                + INGEST_SQL.new_runs.len()
                + INGEST_SQL.in_logs.len()
                + INGEST_SQL.in_states.len()
                + 2
                + 3
                + 1
        );
    }

    /// Every row lands in exactly one chunk, in order; only the last chunk of an event insert
    /// is short (to be padded), and runs are never padded.
    #[test]
    fn chunks_cover_every_row_once() {
        for len in 0..1500usize {
            let rows: Vec<usize> = (0..len).collect();
            for (sizes, pad) in [(&EVENT_CHUNKS[..], true), (&RUN_CHUNKS[..], false)] {
                let chunks: Vec<(usize, &[usize])> = chunked(&rows, sizes, pad).collect();
                let flat: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
                assert_eq!(flat, rows, "{len} {sizes:?}");
                for (i, (which, chunk)) in chunks.iter().enumerate() {
                    assert!(!chunk.is_empty());
                    if i + 1 < chunks.len() || !pad {
                        assert_eq!(chunk.len(), sizes[*which], "{len}");
                    } else {
                        assert!(chunk.len() <= sizes[*which], "{len}");
                    }
                }
            }
        }
    }
}
