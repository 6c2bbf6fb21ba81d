//! Every query of the store, written once for both backends: the reads, retention, reporter
//! drops, and the parts of ingestion that are not about moving rows in bulk (the transaction,
//! the column lists, the merge of a run's row). What the backends spell differently comes from
//! their [`Dialect`]; only the bulk insert of a batch's rows is written per backend
//! ([`BulkWrite`]: multi-row `VALUES` on SQLite, `UNNEST` of arrays on PostgreSQL).

use super::cursor::Cursor;
use super::dialect::{Bind, Dialect, Get, PushBind, begin_write};
use super::leases;
use super::rows::{
    self, Plan, RunRow, StatsFrame, corrupt, from_micros, micros, parse_attempt, parse_kind,
    parse_level, parse_state,
};
use super::{
    IdempotencyRecord, IngestOutcome, LogFilter, LogRecord, NewRun, Page, PageRequest,
    Registration, RunFilter, RunRecord, StateRecord, Stats, StoreError, Triggered,
};
use chrono::{DateTime, Utc};
use flowkit_wire::api::deployments::{DeploymentSpec, DeploymentSummary, DeploymentVersion};
use flowkit_wire::api::graph::{StateCount, TaskGroup};
use flowkit_wire::api::ingest::{ReporterDropsSummary, WorkerDrops};
use flowkit_wire::api::page::MAX_PAGE_SIZE;
use flowkit_wire::state::StateType;
use serde::de::DeserializeOwned;
use sqlx::{Pool, QueryBuilder};
use std::collections::HashSet;
use std::future::Future;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Reading rows
// ---------------------------------------------------------------------------------------------

/// One row of a result, read by column name.
pub(super) struct Columns<'r, D: Dialect>(pub(super) &'r D::Row);

impl<D: Dialect> Columns<'_, D> {
    pub(super) fn get<T>(&self, column: &str) -> Result<T, StoreError>
    where
        D: Get<T>,
    {
        Ok(D::get(self.0, column)?)
    }

    pub(super) fn instant(&self, column: &str) -> Result<DateTime<Utc>, StoreError> {
        D::instant(self.0, column)
    }

    pub(super) fn opt_instant(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        D::opt_instant(self.0, column)
    }

    /// A column holding JSON text (see [`Dialect::json_text`]).
    pub(super) fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|e| corrupt(format!("column {column}: {e}")))
    }

    /// A nullable column holding JSON text.
    pub(super) fn opt_json<T: DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.get(column)?;
        text.map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt(format!("column {column}: {e}")))
    }
}

/// The columns [`run_record`] reads.
pub(super) fn run_columns<D: Dialect>() -> String {
    format!(
        "id, kind, name, task_key, parent_run_id, flow_run_id, state, state_message, state_ts, \
         attempt, created, started, ended, {}, {}, {}, cache_key, deployment, version, worker, \
         scheduled_for, created_by",
        D::json_text("tags"),
        D::json_text("parameters"),
        D::json_text("upstream"),
    )
}

pub(super) fn run_record<D: Dialect>(row: &D::Row) -> Result<RunRecord, StoreError> {
    let c = Columns::<D>(row);
    let parent_run_id: Option<Uuid> = c.get("parent_run_id")?;
    // A run the server did not create was started by its parent run, if it has one.
    let created_by = c
        .get::<Option<String>>("created_by")?
        .or_else(|| parent_run_id.map(|parent| format!("run:{parent}")));
    Ok(RunRecord {
        id: c.get("id")?,
        kind: parse_kind(&c.get::<String>("kind")?)?,
        name: c.get("name")?,
        task_key: c.get("task_key")?,
        parent_run_id,
        flow_run_id: c.get("flow_run_id")?,
        state: parse_state(&c.get::<String>("state")?)?,
        state_message: c.get("state_message")?,
        state_timestamp: c.instant("state_ts")?,
        attempt: parse_attempt(c.get("attempt")?)?,
        created: c.instant("created")?,
        started: c.opt_instant("started")?,
        ended: c.opt_instant("ended")?,
        tags: c.json("tags")?,
        parameters: c.opt_json("parameters")?,
        upstream: c.json("upstream")?,
        cache_key: c.get("cache_key")?,
        deployment: c.get("deployment")?,
        version: c.get("version")?,
        worker: c.get("worker")?,
        scheduled_for: c.opt_instant("scheduled_for")?,
        created_by,
        skipped_instants: None,
        result: None,
    })
}

/// The columns [`state_record`] reads.
const STATE_RECORD_COLUMNS: &str = "event_id, run_id, state, message, attempt, ts";

fn state_record<D: Dialect>(row: &D::Row) -> Result<StateRecord, StoreError> {
    let c = Columns::<D>(row);
    Ok(StateRecord {
        event_id: c.get("event_id")?,
        run_id: c.get("run_id")?,
        state: parse_state(&c.get::<String>("state")?)?,
        message: c.get("message")?,
        attempt: parse_attempt(c.get("attempt")?)?,
        timestamp: c.instant("ts")?,
    })
}

/// The columns [`log_record`] reads. The level is widened to one integer type on both
/// backends (PostgreSQL keeps it in a smallint).
fn log_columns<D: Dialect>() -> String {
    format!(
        "event_id, run_id, flow_run_id, run_name, CAST(level AS BIGINT) AS level, message, {}, \
         attempt, ts",
        D::json_text("fields")
    )
}

fn log_record<D: Dialect>(row: &D::Row) -> Result<LogRecord, StoreError> {
    let c = Columns::<D>(row);
    Ok(LogRecord {
        event_id: c.get("event_id")?,
        run_id: c.get("run_id")?,
        flow_run_id: c.get("flow_run_id")?,
        run_name: c.get("run_name")?,
        level: parse_level(c.get("level")?)?,
        message: c.get("message")?,
        fields: c.opt_json("fields")?.unwrap_or_default(),
        attempt: parse_attempt(c.get("attempt")?)?,
        timestamp: c.instant("ts")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

/// The page size a request asks for, brought within 1..=[`MAX_PAGE_SIZE`] (the API refuses a
/// `limit` outside that range before it gets here).
fn page_size(page: &PageRequest) -> usize {
    page.limit.clamp(1, MAX_PAGE_SIZE) as usize
}

/// The position after which a page starts, if it is not the first.
fn decode_cursor(page: &PageRequest) -> Result<Option<Cursor>, StoreError> {
    page.cursor.as_deref().map(Cursor::decode).transpose()
}

/// A cursor's instant. [`Cursor::decode`] only accepts instants both backends can hold.
fn cursor_instant(cursor: &Cursor) -> Result<DateTime<Utc>, StoreError> {
    from_micros(cursor.micros).map_err(|_| StoreError::InvalidCursor("instant out of range".into()))
}

/// Every row of `q`, read with `read`.
pub(super) async fn read_all<D: Dialect, T>(
    pool: &Pool<D>,
    q: &mut QueryBuilder<D>,
    read: fn(&D::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = D::fetch_all(&mut *pool.acquire().await?, q).await?;
    rows.iter().map(read).collect()
}

/// A page of `q`'s rows, read with `read`: `q` asks for one row more than `size`, which says
/// whether a next page exists; its cursor is the `key` of the page's last item.
async fn read_page<D: Dialect, T>(
    pool: &Pool<D>,
    q: &mut QueryBuilder<D>,
    size: usize,
    read: fn(&D::Row) -> Result<T, StoreError>,
    key: impl Fn(&T) -> Cursor,
) -> Result<Page<T>, StoreError> {
    let mut items = read_all(pool, q, read).await?;
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items.last().map(|last| key(last).encode())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// `value, value, …` as placeholders.
pub(super) fn push_list<D, T>(q: &mut QueryBuilder<D>, values: impl IntoIterator<Item = T>)
where
    D: Dialect + Bind<T>,
{
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(value);
    }
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Appends the flow-runs list query (to an `EXPLAIN` in a test): at most `limit` rows (the caller asks one more than a page
/// to learn whether a next page exists). Every filter keeps the query on an index that walks
/// the runs in page order (see the migrations).
pub(crate) fn push_list_query<D: Dialect>(
    q: &mut QueryBuilder<D>,
    filter: &RunFilter,
    after: Option<Cursor>,
    limit: i64,
) -> Result<(), StoreError> {
    q.push(format!(
        "SELECT {} FROM runs WHERE kind = 'flow'",
        run_columns::<D>()
    ));
    match filter.states.as_slice() {
        [] => {}
        // `=` rather than a one-item list: PostgreSQL then reads runs_flow_state in page order.
        [state] => {
            q.push(" AND state = ").bind(state.as_str().to_string());
        }
        states => {
            q.push(" AND state IN (");
            push_list(q, states.iter().map(|s| s.as_str().to_string()));
            q.push(")");
        }
    }
    if let Some(name) = &filter.flow_name {
        q.push(" AND name = ").bind(D::text(name));
    }
    if let Some(deployment) = &filter.deployment {
        q.push(" AND deployment = ").bind(D::text(deployment));
    }
    if let Some(tag) = &filter.tag {
        D::push_has_tag(q, tag);
    }
    if let Some(after) = filter.created_after {
        q.push(" AND created >= ").bind_instant(after);
    }
    if let Some(before) = filter.created_before {
        q.push(" AND created < ").bind_instant(before);
    }
    if let Some(search) = &filter.search {
        // A position, not LIKE: the search text is matched literally, `%` and `_` included.
        q.push(format!(" AND {}(lower(name), lower(", D::POSITION))
            .bind(D::text(search))
            .push(")) > 0");
    }
    if let Some(cursor) = &after {
        q.push(" AND (created, id) < (")
            .bind_instant(cursor_instant(cursor)?)
            .push(", ")
            .bind(cursor.id)
            .push(")");
    }
    q.push(" ORDER BY created DESC, id DESC LIMIT ").bind(limit);
    Ok(())
}

/// Flow runs, newest first: see [`super::Backend::list_flow_runs`].
pub(crate) async fn list_flow_runs<D: Dialect>(
    pool: &Pool<D>,
    filter: &RunFilter,
    page: &PageRequest,
) -> Result<Page<RunRecord>, StoreError> {
    let size = page_size(page);
    let mut q = QueryBuilder::new("");
    push_list_query(&mut q, filter, decode_cursor(page)?, size as i64 + 1)?;
    read_page(pool, &mut q, size, run_record::<D>, |run| Cursor {
        micros: micros(run.created),
        id: run.id,
    })
    .await
}

/// [`list_flow_runs`] within `budget` of database time (see [`super::budget`]).
pub(crate) async fn list_flow_runs_within<D: super::budget::Budgeted>(
    pool: &Pool<D>,
    filter: &RunFilter,
    page: &PageRequest,
    budget: std::time::Duration,
) -> Result<Page<RunRecord>, StoreError> {
    let size = page_size(page);
    let mut q = QueryBuilder::new("");
    push_list_query(&mut q, filter, decode_cursor(page)?, size as i64 + 1)?;
    let rows = D::fetch_all_within(&mut *pool.acquire().await?, &mut q, budget).await?;
    let mut items = rows
        .iter()
        .map(run_record::<D>)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items.last().map(|run| {
            Cursor {
                micros: micros(run.created),
                id: run.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// One run.
pub(crate) async fn get_run<D: Dialect>(
    pool: &Pool<D>,
    id: Uuid,
) -> Result<Option<RunRecord>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM runs WHERE id = ",
        run_columns::<D>()
    ));
    q.bind(id);
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.as_ref().map(run_record::<D>).transpose()
}

/// How far a subflow run's creation may lie outside its flow run's `[created, ended]`: both
/// come from the clock of the one process that ran them, which may be stepped back a little
/// (NTP) while it runs.
const SUBFLOW_CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// When the subflow runs of a flow run were created: while it ran (from its `created` to its
/// `ended`, or on if it has not ended), with [`SUBFLOW_CLOCK_MARGIN`] either side. Unbounded
/// when the flow run's own row has not arrived.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SubflowWindow {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl SubflowWindow {
    /// The window of a flow run created at `created` and ended at `ended`.
    pub(crate) fn of(created: DateTime<Utc>, ended: Option<DateTime<Utc>>) -> Self {
        Self {
            from: created.checked_sub_signed(SUBFLOW_CLOCK_MARGIN),
            to: ended.and_then(|at| at.checked_add_signed(SUBFLOW_CLOCK_MARGIN)),
        }
    }
}

/// The [`SubflowWindow`] of `flow_run_id`, read from its row.
async fn subflow_window<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
) -> Result<SubflowWindow, StoreError> {
    let mut q = QueryBuilder::new("SELECT created, ended FROM runs WHERE id = ");
    q.bind(flow_run_id);
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    match row {
        Some(row) => Ok(SubflowWindow::of(
            D::instant(&row, "created")?,
            D::opt_instant(&row, "ended")?,
        )),
        None => Ok(SubflowWindow::default()),
    }
}

/// Appends the ids of the subflow runs of a flow run: flow runs called by it or by one of its
/// task runs. They are read from `runs_subflows_by_created` (subflow runs only, by creation)
/// within the flow run's [`SubflowWindow`], each caller looked up by primary key: the cost
/// follows the subflow runs created while this flow ran, not the size of this flow (a page of
/// the children of a flow of 300 000 task runs looked every one of them up before) nor the
/// number of runs stored.
fn push_subflows<D: Dialect>(q: &mut QueryBuilder<D>, flow_run_id: Uuid, window: SubflowWindow) {
    q.push(
        "SELECT s.id FROM runs s WHERE s.kind = 'flow' AND s.parent_run_id IS NOT NULL \
         AND s.id <> ",
    )
    .bind(flow_run_id);
    if let Some(from) = window.from {
        q.push(" AND s.created >= ").bind_instant(from);
    }
    if let Some(to) = window.to {
        q.push(" AND s.created <= ").bind_instant(to);
    }
    q.push(" AND (s.parent_run_id = ")
        .bind(flow_run_id)
        .push(" OR EXISTS (SELECT 1 FROM runs p WHERE p.id = s.parent_run_id AND p.flow_run_id = ")
        .bind(flow_run_id)
        .push("))");
}

/// Task runs and subflow runs of a flow run, oldest first.
pub(crate) async fn child_runs<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
) -> Result<Vec<RunRecord>, StoreError> {
    let window = subflow_window(pool, flow_run_id).await?;
    let columns = run_columns::<D>();
    let mut q = QueryBuilder::new(format!("SELECT {columns} FROM runs WHERE flow_run_id = "));
    q.bind(flow_run_id).push(" AND id <> ").bind(flow_run_id);
    q.push(format!(
        " UNION ALL SELECT {columns} FROM runs WHERE id IN ("
    ));
    push_subflows(&mut q, flow_run_id, window);
    q.push(") AND flow_run_id IS DISTINCT FROM ")
        .bind(flow_run_id)
        .push(" ORDER BY created, id");
    read_all(pool, &mut q, run_record::<D>).await
}

/// Appends ` AND (created, id) > cursor` when there is a cursor.
fn push_after<D: Dialect>(
    q: &mut QueryBuilder<D>,
    after: Option<&Cursor>,
) -> Result<(), StoreError> {
    if let Some(cursor) = after {
        q.push(" AND (created, id) > (")
            .bind_instant(cursor_instant(cursor)?)
            .push(", ")
            .bind(cursor.id)
            .push(")");
    }
    Ok(())
}

/// Appends the query of a page of the children of a flow run (to an `EXPLAIN` in a test):
/// its task runs after `after` by `(created, id)`, read from `runs_children` in page order,
/// merged with its subflow runs after `after` (see [`push_subflows`]), at most `limit` rows in
/// all.
pub(crate) fn push_child_page_query<D: Dialect>(
    q: &mut QueryBuilder<D>,
    flow_run_id: Uuid,
    window: SubflowWindow,
    after: Option<Cursor>,
    limit: i64,
) -> Result<(), StoreError> {
    let columns = run_columns::<D>();
    q.push(format!(
        "SELECT * FROM (SELECT {columns} FROM runs WHERE flow_run_id = "
    ))
    .bind(flow_run_id)
    .push(" AND id <> ")
    .bind(flow_run_id);
    push_after(q, after.as_ref())?;
    q.push(" ORDER BY created, id LIMIT ").bind(limit);
    q.push(format!(
        ") AS tasks UNION ALL SELECT * FROM (SELECT {columns} FROM runs WHERE id IN ("
    ));
    push_subflows(q, flow_run_id, window);
    q.push(") AND flow_run_id IS DISTINCT FROM ")
        .bind(flow_run_id);
    push_after(q, after.as_ref())?;
    q.push(" ORDER BY created, id LIMIT ").bind(limit);
    q.push(") AS subflows ORDER BY created, id LIMIT ")
        .bind(limit);
    Ok(())
}

/// A page of the task runs and subflow runs of a flow run, oldest first by `(created, id)`.
pub(crate) async fn child_runs_page<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
    page: &PageRequest,
) -> Result<Page<RunRecord>, StoreError> {
    let size = page_size(page);
    let after = decode_cursor(page)?;
    let window = subflow_window(pool, flow_run_id).await?;
    let mut q = QueryBuilder::new("");
    push_child_page_query(&mut q, flow_run_id, window, after, size as i64 + 1)?;
    read_page(pool, &mut q, size, run_record::<D>, |run| Cursor {
        micros: micros(run.created),
        id: run.id,
    })
    .await
}

/// Most runs whose states one query of [`states_of`] reads.
const STATES_CHUNK: usize = 500;

/// The state histories of `runs` (each `(id, flow_run_id)`), in `(timestamp, event id)` order:
/// per run, a range of `run_states_group (group_id, run_id, ts, event_id)`.
pub(crate) async fn states_of<D: Dialect>(
    pool: &Pool<D>,
    runs: &[(Uuid, Option<Uuid>)],
) -> Result<Vec<StateRecord>, StoreError> {
    let mut out = Vec::new();
    for chunk in runs.chunks(STATES_CHUNK) {
        let mut groups: std::collections::BTreeMap<Uuid, Vec<Uuid>> = Default::default();
        for &(id, flow_run_id) in chunk {
            groups
                .entry(rows::group_of(id, flow_run_id))
                .or_default()
                .push(id);
        }
        if chunk.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::new("");
        push_states_query(&mut q, groups);
        out.extend(read_all(pool, &mut q, state_record::<D>).await?);
    }
    if runs.len() > STATES_CHUNK {
        out.sort_by_key(|s| (s.timestamp, s.event_id));
    }
    Ok(out)
}

/// Appends the query of the states of runs, given by group (to an `EXPLAIN` in a test): one
/// `(group_id, run_id)` range of `run_states_group` per run.
pub(crate) fn push_states_query<D: Dialect>(
    q: &mut QueryBuilder<D>,
    groups: std::collections::BTreeMap<Uuid, Vec<Uuid>>,
) {
    for (i, (group, ids)) in groups.into_iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push(format!(
            "SELECT {STATE_RECORD_COLUMNS} FROM run_states WHERE group_id = "
        ))
        .bind(group)
        .push(" AND run_id IN (");
        push_list(q, ids);
        q.push(")");
    }
    q.push(" ORDER BY ts, event_id");
}

/// Appends the `name, state, started, ended` of every child of a flow run (task runs and
/// subflow runs).
fn push_children_facts<D: Dialect>(
    q: &mut QueryBuilder<D>,
    flow_run_id: Uuid,
    window: SubflowWindow,
) {
    const FACTS: &str = "name, state, started, ended";
    q.push(format!("SELECT {FACTS} FROM runs WHERE flow_run_id = "))
        .bind(flow_run_id)
        .push(" AND id <> ")
        .bind(flow_run_id)
        .push(format!(" UNION ALL SELECT {FACTS} FROM runs WHERE id IN ("));
    push_subflows(q, flow_run_id, window);
    q.push(") AND flow_run_id IS DISTINCT FROM ")
        .bind(flow_run_id);
}

/// Appends the aggregates a [`TaskGroup`] reads: `n`, `first_start`, `last_end` and one count
/// per state type (`s0`, `s1`, … in the order of [`StateType::ALL`]).
fn push_group_aggregates<D: Dialect>(q: &mut QueryBuilder<D>) {
    q.push("count(*) AS n, min(started) AS first_start, max(ended) AS last_end");
    for (i, state) in StateType::ALL.iter().enumerate() {
        q.push(format!(
            ", count(CASE WHEN state = '{}' THEN 1 END) AS s{i}",
            state.as_str()
        ));
    }
}

fn task_group<D: Dialect>(row: &D::Row, name: Option<String>) -> Result<TaskGroup, StoreError> {
    let c = Columns::<D>(row);
    let count = |column: &str| -> Result<u64, StoreError> {
        let n: i64 = c.get(column)?;
        u64::try_from(n).map_err(|_| corrupt(format!("column {column}: negative count {n}")))
    };
    let mut states = Vec::new();
    for (i, state) in StateType::ALL.iter().enumerate() {
        let n = count(&format!("s{i}"))?;
        if n > 0 {
            states.push(StateCount {
                state: *state,
                count: n,
            });
        }
    }
    Ok(TaskGroup {
        name,
        count: count("n")?,
        states,
        earliest_start: c.opt_instant("first_start")?,
        latest_end: c.opt_instant("last_end")?,
    })
}

fn named_task_group<D: Dialect>(row: &D::Row) -> Result<TaskGroup, StoreError> {
    let name: String = Columns::<D>(row).get("name")?;
    task_group::<D>(row, Some(name))
}

fn other_task_group<D: Dialect>(row: &D::Row) -> Result<TaskGroup, StoreError> {
    task_group::<D>(row, None)
}

/// Every child of a flow run summed up per task name, most runs first: at most `max_groups`
/// groups, the last one (without a name) summing up the names beyond `max_groups - 1`. The
/// database aggregates; the server holds at most `max_groups` rows.
pub(crate) async fn child_groups<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
    max_groups: u32,
) -> Result<Vec<TaskGroup>, StoreError> {
    let max_groups = max_groups.max(1) as usize;
    let window = subflow_window(pool, flow_run_id).await?;
    let mut q = QueryBuilder::new("SELECT name, ");
    push_group_aggregates(&mut q);
    q.push(" FROM (");
    push_children_facts(&mut q, flow_run_id, window);
    q.push(") AS c GROUP BY name ORDER BY n DESC, name LIMIT ")
        .bind(max_groups as i64 + 1);
    let mut groups = read_all(pool, &mut q, named_task_group::<D>).await?;
    if groups.len() <= max_groups {
        return Ok(groups);
    }
    groups.truncate(max_groups - 1);
    let mut q = QueryBuilder::new("SELECT ");
    push_group_aggregates(&mut q);
    q.push(" FROM (");
    push_children_facts(&mut q, flow_run_id, window);
    q.push(") AS c");
    if !groups.is_empty() {
        q.push(" WHERE name NOT IN (");
        push_list(&mut q, groups.iter().filter_map(|g| g.name.clone()));
        q.push(")");
    }
    groups.extend(read_all(pool, &mut q, other_task_group::<D>).await?);
    Ok(groups)
}

/// The state history of a flow run and of its children (a subflow's own states, not its
/// children's), in `(timestamp, event id)` order.
pub(crate) async fn states<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
) -> Result<Vec<StateRecord>, StoreError> {
    let window = subflow_window(pool, flow_run_id).await?;
    let mut q = QueryBuilder::new(format!(
        "SELECT {STATE_RECORD_COLUMNS} FROM run_states WHERE group_id = "
    ));
    q.bind(flow_run_id).push(format!(
        " UNION ALL SELECT {STATE_RECORD_COLUMNS} FROM run_states WHERE group_id IN ("
    ));
    push_subflows(&mut q, flow_run_id, window);
    q.push(") AND run_id = group_id ORDER BY ts, event_id");
    read_all(pool, &mut q, state_record::<D>).await
}

/// Logs of a flow run, oldest first, keyset-paginated.
pub(crate) async fn logs<D: Dialect>(
    pool: &Pool<D>,
    flow_run_id: Uuid,
    filter: &LogFilter,
    page: &PageRequest,
) -> Result<Page<LogRecord>, StoreError> {
    let size = page_size(page);
    let after = decode_cursor(page)?;
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM logs WHERE group_id = ",
        log_columns::<D>()
    ));
    q.bind(flow_run_id);
    if let Some(level) = filter.min_level {
        q.push(" AND level >= ")
            .bind(i64::from(rows::level_number(level)));
    }
    if let Some(run_id) = filter.run_id {
        q.push(" AND run_id = ").bind(run_id);
    }
    if let Some(cursor) = &after {
        q.push(" AND (ts, event_id) > (")
            .bind_instant(cursor_instant(cursor)?)
            .push(", ")
            .bind(cursor.id)
            .push(")");
    }
    q.push(" ORDER BY ts, event_id LIMIT ")
        .bind(size as i64 + 1);
    read_page(pool, &mut q, size, log_record::<D>, |log| Cursor {
        micros: micros(log.timestamp),
        id: log.event_id,
    })
    .await
}

/// Flow runs created in `[since, until)` counted by bucket and latest state.
pub(crate) async fn stats<D: Dialect>(
    pool: &Pool<D>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    buckets: u32,
) -> Result<Stats, StoreError> {
    let frame = StatsFrame::new(since, until, buckets);
    // Integer division of non-negative offsets: the bucket's index, rounded down.
    let mut q = QueryBuilder::new(format!("SELECT ({} - ", D::micros_of("created")));
    q.bind(frame.since)
        .push(") / ")
        .bind(frame.width)
        .push(" AS bucket, state, count(*) AS n FROM runs WHERE kind = 'flow' AND created >= ")
        .bind_instant(from_micros(frame.since)?)
        .push(" AND created < ")
        .bind_instant(from_micros(frame.until)?)
        .push(" GROUP BY bucket, state");
    let counts = read_all(pool, &mut q, |row| {
        let c = Columns::<D>(row);
        let n: i64 = c.get("n")?;
        Ok((
            c.get("bucket")?,
            parse_state(&c.get::<String>("state")?)?,
            n.max(0) as u64,
        ))
    })
    .await?;
    frame.assemble(counts)
}

// ---------------------------------------------------------------------------------------------
// Writes besides ingestion
// ---------------------------------------------------------------------------------------------

/// A write besides ingestion. Each backend runs it where it runs its writes (SQLite: on the
/// writer, between ingestion groups; PostgreSQL: on the pool, retried after a deadlock).
pub(crate) enum Maintenance {
    /// See [`super::Backend::delete_before`].
    DeleteBefore {
        /// Runs the server received before this go.
        cutoff: DateTime<Utc>,
        /// At most this many runs (with their groups) per call.
        batch: u32,
    },
    /// See [`super::Backend::record_reporter_drops`].
    ReporterDrops {
        /// The reporter's worker.
        worker: String,
        /// Events it dropped since its last report.
        dropped: u64,
    },
    /// See [`super::Backend::register_deployment`].
    Register {
        /// The version to register.
        spec: Box<DeploymentSpec>,
        /// The spec's fingerprint.
        fingerprint: String,
        /// Only say what registering would do ([`super::Backend::check_registration`]).
        dry_run: bool,
    },
    /// See [`super::Backend::trigger`].
    Trigger(Box<NewRun>),
    /// See [`super::Backend::claim`] (on SQLite; PostgreSQL claims on its own).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Claim {
        /// The claim.
        order: Box<super::ClaimOrder>,
        /// Whether to record the worker (`last_seen`, what it serves) too.
        touch: bool,
    },
    /// See [`super::Backend::heartbeat`].
    Heartbeat {
        /// The worker.
        worker: Box<super::WorkerSeen>,
        /// The leases it holds: run and token.
        leases: Vec<(Uuid, u64)>,
        /// How long the renewed leases last.
        lease: std::time::Duration,
    },
    /// See [`super::Backend::finish`].
    Finish(Box<super::Finished>),
    /// See [`super::Backend::release`].
    Release {
        /// The run.
        run_id: Uuid,
        /// The lease's token.
        token: u64,
        /// Why.
        reason: Option<String>,
    },
    /// See [`super::Backend::reap`].
    Reap,
    /// See [`super::Backend::cancel`].
    Cancel {
        /// The run.
        run_id: Uuid,
        /// Why.
        reason: Option<String>,
    },
    /// See [`super::Backend::bulk_cancel`].
    BulkCancel(Box<super::BulkCancelFilter>),
    /// See [`super::Backend::retry`].
    Retry(Uuid),
    /// See [`super::Backend::replace_code_schedules`].
    ReplaceSchedules {
        /// The deployment's flow.
        flow: String,
        /// The deployment's name.
        name: String,
        /// Its schedules declared in code now.
        rows: Vec<super::schedules::ScheduleRow>,
        /// When they were registered.
        now: DateTime<Utc>,
    },
    /// See [`super::Backend::advance_schedule`].
    AdvanceSchedule {
        /// The schedule.
        id: Uuid,
        /// Its `last_at` as read.
        from: DateTime<Utc>,
        /// Its new `last_at`.
        to: DateTime<Utc>,
        /// When it is next due.
        next_at: Option<DateTime<Utc>>,
    },
    /// See [`super::Backend::set_schedule_paused`].
    PauseSchedule {
        /// The schedule.
        id: Uuid,
        /// Paused since (none: resumed).
        paused_at: Option<DateTime<Utc>>,
        /// Resumed at.
        now: DateTime<Utc>,
        /// Next due, when resumed.
        next_at: Option<DateTime<Utc>>,
    },
    /// See [`super::Backend::mark_overdue`].
    Overdue(DateTime<Utc>),
    /// See [`super::Store::create_api_key`].
    CreateKey(Box<super::api_keys::StoredKey>),
    /// See [`super::Store::revoke_api_key`].
    RevokeKey {
        /// The key's name or id.
        key: String,
        /// Revoked at.
        at: DateTime<Utc>,
    },
    /// See [`super::Store::set_concurrency_limit`].
    SetTagLimit {
        /// The tag.
        tag: String,
        /// Its limit.
        slots: u32,
        /// Set at.
        now: DateTime<Utc>,
    },
    /// See [`super::Store::delete_concurrency_limit`]: the tag.
    DeleteTagLimit(String),
    /// See [`super::Store::touch_api_key`].
    TouchKey {
        /// The key's digest.
        digest: [u8; 32],
        /// Used at.
        at: DateTime<Utc>,
    },
    /// The alerts' tables (`super::alerts`).
    Alerts(Box<super::alerts::AlertWrite>),
    /// See [`super::Backend::insert_api_schedule`].
    InsertSchedule {
        /// The deployment's flow.
        flow: String,
        /// The deployment's name.
        name: String,
        /// The schedule.
        row: Box<super::schedules::ScheduleRow>,
        /// When it was created.
        now: DateTime<Utc>,
    },
    /// See [`super::Backend::delete_api_schedule`].
    DeleteSchedule(Uuid),
    /// See [`super::Backend::write_slots`].
    WriteSlots {
        /// The runs of schedules' slots.
        runs: Vec<NewRun>,
        /// The schedules moved on.
        advances: Vec<super::schedules::Advance>,
    },
    /// See [`super::Backend::record_stale_events`].
    StaleEvents {
        /// The worker.
        worker: String,
        /// Events refused.
        refused: u64,
    },
}

/// What a [`Maintenance`] task did.
#[derive(Debug)]
pub(crate) enum Written {
    /// Rows deleted ([`Maintenance::DeleteBefore`]), 0 for [`Maintenance::ReporterDrops`].
    Count(u64),
    /// [`Maintenance::Register`].
    Registered(Box<Registration>),
    /// [`Maintenance::Trigger`].
    Triggered(Triggered),
    /// [`Maintenance::Claim`].
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Claimed(Vec<flowkit_wire::api::workers::ClaimedRun>),
    /// [`Maintenance::Heartbeat`].
    Heartbeat(super::HeartbeatOutcome),
    /// [`Maintenance::Finish`], [`Maintenance::Release`].
    Lease(super::LeaseCall),
    /// [`Maintenance::Reap`].
    Reaped(super::Reaped),
    /// [`Maintenance::Cancel`], [`Maintenance::Retry`].
    Action(super::RunAction),
    /// [`Maintenance::BulkCancel`].
    BulkCancelled(flowkit_wire::api::run_actions::BulkCancelled),
    /// [`Maintenance::Overdue`].
    Overdue(super::Overdue),
    /// [`Maintenance::CreateKey`].
    KeyCreated(super::api_keys::KeyCreated),
    /// [`Maintenance::RevokeKey`].
    KeyRevoked(Option<super::api_keys::StoredKey>),
    /// [`Maintenance::Alerts`].
    Alerts(super::alerts::AlertWritten),
    /// [`Maintenance::InsertSchedule`].
    ScheduleInserted(super::schedules::Inserted),
    /// [`Maintenance::WriteSlots`].
    SlotsWritten(super::schedules::SlotsWritten),
}

/// Runs `task` on `conn`.
pub(crate) async fn maintain<D: BulkWrite>(
    conn: &mut D::Connection,
    task: &Maintenance,
) -> Result<Written, StoreError> {
    match task {
        Maintenance::DeleteBefore { cutoff, batch } => delete_before::<D>(conn, *cutoff, *batch)
            .await
            .map(Written::Count),
        Maintenance::ReporterDrops { worker, dropped } => {
            record_reporter_drops::<D>(conn, worker, *dropped).await?;
            Ok(Written::Count(0))
        }
        Maintenance::Register {
            spec,
            fingerprint,
            dry_run,
        } => register::<D>(conn, spec, fingerprint, *dry_run)
            .await
            .map(|registration| Written::Registered(Box::new(registration))),
        Maintenance::Trigger(run) => trigger::<D>(conn, run).await.map(Written::Triggered),
        Maintenance::Claim { order, touch } => leases::claim::<D>(conn, &[(&**order, *touch)])
            .await
            .map(|mut answers| Written::Claimed(answers.pop().unwrap_or_default())),
        Maintenance::Heartbeat {
            worker,
            leases: held,
            lease,
        } => leases::heartbeat::<D>(conn, worker, held, *lease)
            .await
            .map(Written::Heartbeat),
        Maintenance::Finish(finished) => leases::finish::<D>(conn, finished)
            .await
            .map(Written::Lease),
        Maintenance::Release {
            run_id,
            token,
            reason,
        } => leases::release::<D>(conn, *run_id, *token, reason.as_deref())
            .await
            .map(Written::Lease),
        Maintenance::Reap => leases::reap::<D>(conn).await.map(Written::Reaped),
        Maintenance::Cancel { run_id, reason } => {
            leases::cancel::<D>(conn, *run_id, reason.as_deref())
                .await
                .map(Written::Action)
        }
        Maintenance::BulkCancel(filter) => leases::bulk_cancel::<D>(conn, filter)
            .await
            .map(Written::BulkCancelled),
        Maintenance::Retry(run_id) => leases::retry::<D>(conn, *run_id).await.map(Written::Action),
        Maintenance::ReplaceSchedules {
            flow,
            name,
            rows,
            now,
        } => super::schedules::replace_code_schedules::<D>(conn, flow, name, rows, *now)
            .await
            .map(Written::Count),
        Maintenance::AdvanceSchedule {
            id,
            from,
            to,
            next_at,
        } => super::schedules::advance_schedule::<D>(conn, *id, *from, *to, *next_at)
            .await
            .map(Written::Count),
        Maintenance::PauseSchedule {
            id,
            paused_at,
            now,
            next_at,
        } => super::schedules::set_paused::<D>(conn, *id, *paused_at, *now, *next_at)
            .await
            .map(Written::Count),
        Maintenance::Overdue(now) => leases::mark_overdue::<D>(conn, *now)
            .await
            .map(Written::Overdue),
        Maintenance::CreateKey(key) => super::api_keys::create::<D>(conn, key)
            .await
            .map(Written::KeyCreated),
        Maintenance::RevokeKey { key, at } => super::api_keys::revoke::<D>(conn, key, *at)
            .await
            .map(Written::KeyRevoked),
        Maintenance::SetTagLimit { tag, slots, now } => {
            super::tag_limits::set::<D>(conn, tag, *slots, *now)
                .await
                .map(Written::Count)
        }
        Maintenance::DeleteTagLimit(tag) => super::tag_limits::delete::<D>(conn, tag)
            .await
            .map(Written::Count),
        Maintenance::TouchKey { digest, at } => super::api_keys::touch::<D>(conn, digest, *at)
            .await
            .map(Written::Count),
        Maintenance::Alerts(task) => super::alerts::write::<D>(conn, task)
            .await
            .map(Written::Alerts),
        Maintenance::InsertSchedule {
            flow,
            name,
            row,
            now,
        } => super::schedules::insert_api_schedule::<D>(conn, flow, name, row, *now)
            .await
            .map(Written::ScheduleInserted),
        Maintenance::DeleteSchedule(id) => super::schedules::delete_api_schedule::<D>(conn, *id)
            .await
            .map(Written::Count),
        Maintenance::WriteSlots { runs, advances } => {
            super::schedules::write_slots::<D>(conn, runs, advances)
                .await
                .map(Written::SlotsWritten)
        }
        Maintenance::StaleEvents { worker, refused } => {
            leases::record_stale_events::<D>(conn, worker, *refused).await?;
            Ok(Written::Count(0))
        }
    }
}

/// Retention, in one transaction: the `batch` runs first received (by the server's clock, see
/// the `received` column: never a client's timestamp, which anyone with a report key could
/// backdate) before `cutoff`, with every
/// run, state and log line of their groups (a flow run and its task runs go together); then,
/// once no old run is left, up to `batch` old log lines whose run never sent a state (its state
/// events were dropped by a reporter), which have no run row to be deleted with, and up to
/// `batch` expired idempotency keys, and the workers not seen since `cutoff`. A run's result
/// goes with it. Returns the runs, orphan log lines and keys deleted.
async fn delete_before<D: Dialect>(
    conn: &mut D::Connection,
    cutoff: DateTime<Utc>,
    batch: u32,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("SELECT id, flow_run_id FROM runs WHERE received < ");
    q.bind_instant(cutoff)
        .push(" ORDER BY received LIMIT ")
        .bind(i64::from(batch));
    let candidates = D::fetch_all(&mut tx, &mut q)
        .await?
        .iter()
        .map(|row| {
            let c = Columns::<D>(row);
            Ok((c.get("id")?, c.get("flow_run_id")?))
        })
        .collect::<Result<Vec<(Uuid, Option<Uuid>)>, StoreError>>()?;
    let groups = rows::retention_groups(&candidates);
    let mut deleted = 0;
    // Stay well below SQLite's limit on bound parameters.
    for chunk in groups.chunks(500) {
        for (table, column, counted) in [
            ("runs", "flow_run_id", true),
            ("runs", "id", true),
            ("run_states", "group_id", false),
            ("logs", "group_id", false),
            // Results belong to deployed flow runs, which are their own group.
            ("run_results", "run_id", false),
        ] {
            let mut q = QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            push_list(&mut q, chunk.iter().copied());
            q.push(")");
            let done = D::execute_once(&mut tx, &mut q).await?;
            if counted {
                deleted += D::rows_affected(&done);
            }
        }
    }
    if candidates.len() < batch as usize {
        let mut q = QueryBuilder::new(
            "DELETE FROM logs WHERE event_id IN (
                 SELECT event_id FROM logs AS l
                 WHERE l.ts < ",
        );
        q.bind_instant(cutoff)
            .push(
                " AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.id = l.group_id)
                  AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.flow_run_id = l.group_id)
                 LIMIT ",
            )
            .bind(i64::from(batch))
            .push(")");
        deleted += D::rows_affected(&D::execute(&mut tx, &mut q).await?);
        // Idempotency keys past their time: a trigger ignores (and replaces) an expired key
        // anyway; this only reclaims the space.
        let mut q = QueryBuilder::new(
            "DELETE FROM idempotency_keys WHERE (deployment, key) IN (
                 SELECT deployment, key FROM idempotency_keys WHERE expires <= ",
        );
        q.bind_instant(Utc::now())
            .push(" LIMIT ")
            .bind(i64::from(batch))
            .push(")");
        deleted += D::rows_affected(&D::execute(&mut tx, &mut q).await?);
        // Workers not seen since the cutoff, and what they served.
        for table in ["worker_deployments", "workers"] {
            let mut q = QueryBuilder::new(format!("DELETE FROM {table} WHERE last_seen < "));
            q.bind_instant(cutoff);
            D::execute(&mut tx, &mut q).await?;
        }
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Adds `dropped` to a worker's count of dropped events (saturating), and notes when.
async fn record_reporter_drops<D: Dialect>(
    conn: &mut D::Connection,
    worker: &str,
    dropped: u64,
) -> Result<(), StoreError> {
    let mut q =
        QueryBuilder::new("INSERT INTO reporter_drops (worker, dropped, last_seen) VALUES (");
    q.bind(D::text(worker))
        .push(", ")
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
        .push(", ");
    D::push_now(&mut q);
    q.push(format!(
        ") ON CONFLICT (worker) DO UPDATE SET
            dropped = CASE WHEN reporter_drops.dropped > 9223372036854775807 - excluded.dropped
                THEN 9223372036854775807 ELSE reporter_drops.dropped + excluded.dropped END,
            last_seen = {}(reporter_drops.last_seen, excluded.last_seen)",
        D::GREATEST
    ));
    D::execute(conn, &mut q).await?;
    Ok(())
}

/// What reporters dropped: the total and number of workers, and the `limit` workers whose
/// last report came most recently.
pub(crate) async fn reporter_drops<D: Dialect>(
    pool: &Pool<D>,
    limit: usize,
) -> Result<ReporterDropsSummary, StoreError> {
    // Summed as floating point (exact up to 2^53 events), so many saturated counters cannot
    // overflow the sum; read as text, which both backends write for a double.
    let mut q = QueryBuilder::new(
        "SELECT COUNT(*) AS workers, \
         CAST(COALESCE(SUM(CAST(dropped AS DOUBLE PRECISION)), 0) AS TEXT) AS total \
         FROM reporter_drops",
    );
    let totals = read_all(pool, &mut q, |row| {
        let c = Columns::<D>(row);
        let workers: i64 = c.get("workers")?;
        let total: String = c.get("total")?;
        let total: f64 = total
            .trim()
            .parse()
            .map_err(|_| corrupt(format!("reporter drops total {total:?}")))?;
        // `as` saturates: a sum beyond u64 reads as u64::MAX.
        Ok((workers.max(0) as u64, total.max(0.0) as u64))
    })
    .await?;
    let (workers, total_dropped) = totals.into_iter().next().unwrap_or((0, 0));
    let mut q = QueryBuilder::new(
        "SELECT worker, dropped, last_seen FROM reporter_drops \
         ORDER BY last_seen DESC, worker LIMIT ",
    );
    q.bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let items = read_all(pool, &mut q, |row| {
        let c = Columns::<D>(row);
        let dropped: i64 = c.get("dropped")?;
        Ok(WorkerDrops {
            worker: c.get("worker")?,
            dropped: dropped.max(0) as u64,
            last_seen: c.instant("last_seen")?,
        })
    })
    .await?;
    Ok(ReporterDropsSummary {
        total_dropped,
        workers,
        items,
    })
}

// ---------------------------------------------------------------------------------------------
// Ingestion
// ---------------------------------------------------------------------------------------------

/// The columns of `run_states`, in the order ingestion writes them.
pub(crate) const STATE_COLUMNS: &str = "event_id, run_id, group_id, state, message, attempt, ts";
/// The columns of `logs`, in the order ingestion writes them.
pub(crate) const LOG_COLUMNS: &str =
    "event_id, run_id, flow_run_id, group_id, run_name, level, message, fields, attempt, ts";
/// The columns of `runs`, in the order ingestion writes them.
pub(crate) const RUN_COLUMNS: &str = "id, kind, name, parent_run_id, flow_run_id, state, \
     state_message, state_ts, state_event_id, attempt, created, started, ended, has_details, \
     task_key, tags, parameters, upstream, cache_key, deployment, version, worker, lease_token, \
     received";
/// The end of an insert of events: a stored event id (a replay) is skipped, and the ids newly
/// stored come back, so the caller can count duplicates and fold only new states into runs.
#[cfg(feature = "postgres")]
pub(crate) const NEW_EVENTS_ONLY: &str = " ON CONFLICT (event_id) DO NOTHING RETURNING event_id";

/// The end of the upsert of runs: the merge described in `store::rows`. A CASE per column
/// rather than one `WHERE (excluded.state_ts, excluded.state_event_id) > (runs.state_ts,
/// runs.state_event_id)` on the whole update: `created`, `started` and the details merge
/// independently of which state is latest (an older event can carry the earliest timestamp or
/// the details). All right-hand sides see the row as it was before the update.
pub(crate) fn merge_runs<D: Dialect>() -> String {
    let newer =
        "(excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)";
    // The worker starting the run it claimed: see `store::rows` (a state the server decided).
    let takeover = "(runs.server_state AND runs.state = 'Pending' AND excluded.state = 'Running' \
         AND runs.lease_token > 0 AND excluded.lease_token = runs.lease_token)";
    let takes = format!("({takeover} OR (NOT runs.server_state AND {newer}))");
    let latest = |column: &str| {
        format!("{column} = CASE WHEN {takes} THEN excluded.{column} ELSE runs.{column} END")
    };
    let first_details = |column: &str| {
        format!(
            "{column} = CASE WHEN runs.has_details THEN runs.{column} ELSE excluded.{column} END"
        )
    };
    let (greatest, least) = (D::GREATEST, D::LEAST);
    let mut set = vec![
        "parent_run_id = coalesce(runs.parent_run_id, excluded.parent_run_id)".to_string(),
        "flow_run_id = coalesce(runs.flow_run_id, excluded.flow_run_id)".to_string(),
    ];
    set.extend(
        [
            "state",
            "state_message",
            "attempt",
            "ended",
            "state_event_id",
        ]
        .into_iter()
        .map(latest),
    );
    set.extend([
        format!(
            "state_ts = CASE WHEN runs.server_state AND NOT {takeover} THEN runs.state_ts \
             ELSE {greatest}(runs.state_ts, excluded.state_ts) END"
        ),
        // Evaluated on the row before the update, like every right-hand side.
        format!("server_state = CASE WHEN {takeover} THEN FALSE ELSE runs.server_state END"),
        // The carrier of the event's token: a run's own token only changes by the server.
        "lease_token = runs.lease_token".to_string(),
        format!("created = {least}(runs.created, excluded.created)"),
        // SQLite's two-argument min is NULL when either is; PostgreSQL's LEAST skips NULLs.
        format!(
            "started = coalesce({least}(runs.started, excluded.started), runs.started, \
             excluded.started)"
        ),
        "has_details = runs.has_details OR excluded.has_details".to_string(),
    ]);
    set.extend(
        [
            "task_key",
            "tags",
            "parameters",
            "upstream",
            "cache_key",
            "deployment",
            "version",
            "worker",
        ]
        .into_iter()
        .map(first_details),
    );
    format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(",\n    "))
}

/// How a backend writes a plan's rows in bulk: the only SQL written per backend. Each method
/// is called with at least one row.
pub(crate) trait BulkWrite: Dialect {
    /// Stores the plan's state and log rows whose event id neither `run_states` nor `logs`
    /// holds yet (one event id is one event, whatever its kind: a state event's id sent again
    /// as a log line, or the reverse, is a duplicate, not a second row); adds the ids it stored
    /// to `stored`.
    fn insert_events(
        conn: &mut Self::Connection,
        plan: &Plan,
        stored: &mut HashSet<Uuid>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Upserts runs with [`merge_runs`].
    fn upsert_runs(
        conn: &mut Self::Connection,
        runs: &[RunRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Writes a plan in one transaction; returns each of its requests' outcome. (PostgreSQL's
/// ingestion; SQLite's writer writes several plans in one transaction with its `Ingester`.)
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) async fn apply<D: BulkWrite>(
    conn: &mut D::Connection,
    plan: &Plan,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut stored = HashSet::with_capacity(plan.states.len() + plan.logs.len());
    if !plan.is_empty() {
        let mut tx = begin_write::<D>(conn).await?;
        write_plan::<D>(&mut tx, plan, &mut stored).await?;
        tx.commit().await?;
    }
    Ok(plan.outcomes(&stored))
}

/// Writes a plan's rows inside the caller's transaction; adds the event ids newly stored to
/// `stored`.
pub(crate) async fn write_plan<D: BulkWrite>(
    conn: &mut D::Connection,
    plan: &Plan,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    if !plan.is_empty() {
        D::insert_events(conn, plan, stored).await?;
    }
    let runs = plan.runs(stored);
    if !runs.is_empty() {
        D::upsert_runs(conn, &runs).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deployments
// ---------------------------------------------------------------------------------------------

/// The columns [`version_record`] reads.
fn version_columns<D: Dialect>() -> String {
    format!(
        "flow, name, version, id, flow_key, description, {}, {}, {}, {}, concurrency_limit, \
         retries, registered, fingerprint",
        D::json_text("parameter_schema"),
        D::json_text("output_schema"),
        D::json_text("default_parameters"),
        D::json_text("tags"),
    )
}

/// A version row, with its id (the keyset tie-breaker) and fingerprint.
struct VersionRow {
    version: DeploymentVersion,
    id: Uuid,
    fingerprint: String,
}

fn version_row<D: Dialect>(row: &D::Row) -> Result<VersionRow, StoreError> {
    let c = Columns::<D>(row);
    let limit: Option<i64> = c.get("concurrency_limit")?;
    let retries: i64 = c.get("retries")?;
    Ok(VersionRow {
        version: DeploymentVersion {
            flow: c.get("flow")?,
            name: c.get("name")?,
            version: c.get("version")?,
            flow_key: c.get("flow_key")?,
            description: c.get("description")?,
            parameter_schema: c.json("parameter_schema")?,
            output_schema: c.json("output_schema")?,
            default_parameters: c.json("default_parameters")?,
            tags: c.json("tags")?,
            concurrency_limit: limit
                .map(|n| u32::try_from(n).map_err(|_| corrupt(format!("concurrency limit {n}"))))
                .transpose()?,
            retries: u32::try_from(retries).map_err(|_| corrupt(format!("retries {retries}")))?,
            registered: c.instant("registered")?,
        },
        id: c.get("id")?,
        fingerprint: c.get("fingerprint")?,
    })
}

/// Appends `SELECT … FROM deployment_versions WHERE flow = … AND name = …`.
fn push_versions_of<D: Dialect>(q: &mut QueryBuilder<D>, flow: &str, name: &str) {
    q.push(format!(
        "SELECT {} FROM deployment_versions WHERE flow = ",
        version_columns::<D>()
    ))
    .bind(flow.to_string())
    .push(" AND name = ")
    .bind(name.to_string());
}

/// One version of a deployment, or its newest (the greatest `(registered, id)`) when
/// `version` is `None`.
async fn find_version<D: Dialect>(
    conn: &mut D::Connection,
    flow: &str,
    name: &str,
    version: Option<&str>,
) -> Result<Option<VersionRow>, StoreError> {
    let mut q = QueryBuilder::new("");
    push_versions_of(&mut q, flow, name);
    match version {
        Some(version) => {
            q.push(" AND version = ").bind(D::text(version));
        }
        None => {
            q.push(" ORDER BY registered DESC, id DESC LIMIT 1");
        }
    }
    let row = D::fetch_optional(conn, &mut q).await?;
    row.as_ref().map(version_row::<D>).transpose()
}

/// One version of a deployment (the newest when `version` is `None`).
pub(crate) async fn deployment_version<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
    version: Option<&str>,
) -> Result<Option<DeploymentVersion>, StoreError> {
    let found = find_version::<D>(&mut *pool.acquire().await?, flow, name, version).await?;
    Ok(found.map(|v| v.version))
}

/// See [`super::Backend::trigger_version`].
pub(crate) async fn trigger_version<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
    since: DateTime<Utc>,
) -> Result<Option<(DeploymentVersion, bool)>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {}, CAST(CASE WHEN EXISTS (SELECT 1 FROM worker_deployments AS d \
         WHERE d.flow = deployment_versions.flow AND d.name = deployment_versions.name \
         AND d.version = deployment_versions.version AND d.last_seen >= ",
        version_columns::<D>()
    ));
    q.bind_instant(since)
        .push(") THEN 1 ELSE 0 END AS BIGINT) AS served FROM deployment_versions WHERE flow = ")
        .bind(flow.to_string())
        .push(" AND name = ")
        .bind(name.to_string())
        .push(" ORDER BY served DESC, registered DESC, id DESC LIMIT 1");
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.as_ref()
        .map(|row| {
            let served = Columns::<D>(row).get::<i64>("served")? != 0;
            Ok((version_row::<D>(row)?.version, served))
        })
        .transpose()
}

/// The newest version of a deployment and how many it has.
pub(crate) async fn deployment<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
) -> Result<Option<(DeploymentVersion, u64)>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut q = QueryBuilder::new("SELECT versions FROM deployments WHERE flow = ");
    q.bind(flow.to_string())
        .push(" AND name = ")
        .bind(name.to_string());
    let Some(row) = D::fetch_optional(&mut conn, &mut q).await? else {
        return Ok(None);
    };
    let versions: i64 = Columns::<D>(&row).get("versions")?;
    let latest = find_version::<D>(&mut conn, flow, name, None).await?;
    // Registered in one transaction with its first version: never one without the other.
    let latest =
        latest.ok_or_else(|| corrupt(format!("deployment {flow}/{name} has no version")))?;
    Ok(Some((latest.version, versions.max(0) as u64)))
}

/// Deployments, most recently updated first.
pub(crate) async fn list_deployments<D: Dialect>(
    pool: &Pool<D>,
    page: &PageRequest,
) -> Result<Page<DeploymentSummary>, StoreError> {
    let size = page_size(page);
    let mut q = QueryBuilder::new(
        "SELECT d.flow, d.name, d.id, d.latest_version, d.versions, d.updated,
            (SELECT v.description FROM deployment_versions AS v
             WHERE v.flow = d.flow AND v.name = d.name AND v.version = d.latest_version)
            AS description
         FROM deployments AS d",
    );
    if let Some(cursor) = decode_cursor(page)? {
        q.push(" WHERE (d.updated, d.id) < (")
            .bind_instant(cursor_instant(&cursor)?)
            .push(", ")
            .bind(cursor.id)
            .push(")");
    }
    q.push(" ORDER BY d.updated DESC, d.id DESC LIMIT ")
        .bind(size as i64 + 1);
    let rows = read_all(pool, &mut q, |row| {
        let c = Columns::<D>(row);
        let versions: i64 = c.get("versions")?;
        Ok((
            DeploymentSummary {
                flow: c.get("flow")?,
                name: c.get("name")?,
                description: c.get("description")?,
                latest_version: c.get("latest_version")?,
                versions: versions.max(0) as u64,
                updated: c.instant("updated")?,
            },
            c.get::<Uuid>("id")?,
        ))
    })
    .await?;
    Ok(keyset_page(rows, size, |(d, id)| Cursor {
        micros: micros(d.updated),
        id: *id,
    }))
}

/// A deployment's versions, newest first.
pub(crate) async fn deployment_versions<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
    page: &PageRequest,
) -> Result<Page<DeploymentVersion>, StoreError> {
    let size = page_size(page);
    let mut q = QueryBuilder::new("");
    push_versions_of(&mut q, flow, name);
    if let Some(cursor) = decode_cursor(page)? {
        q.push(" AND (registered, id) < (")
            .bind_instant(cursor_instant(&cursor)?)
            .push(", ")
            .bind(cursor.id)
            .push(")");
    }
    q.push(" ORDER BY registered DESC, id DESC LIMIT ")
        .bind(size as i64 + 1);
    let rows = read_all(pool, &mut q, |row| {
        version_row::<D>(row).map(|v| (v.version, v.id))
    })
    .await?;
    Ok(keyset_page(rows, size, |(v, id)| Cursor {
        micros: micros(v.registered),
        id: *id,
    }))
}

/// A page of items read with their keyset id (one more than `size` if a next page exists).
fn keyset_page<T>(
    mut rows: Vec<(T, Uuid)>,
    size: usize,
    key: impl Fn(&(T, Uuid)) -> Cursor,
) -> Page<T> {
    let next_cursor = if rows.len() > size {
        rows.truncate(size);
        rows.last().map(|last| key(last).encode())
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(item, _)| item).collect(),
        next_cursor,
    }
}

/// Registers a version, in one transaction: see [`super::Backend::register_deployment`]; with
/// `dry_run`, the same transaction rolled back before anything is written
/// ([`super::Backend::check_registration`]).
async fn register<D: BulkWrite>(
    conn: &mut D::Connection,
    spec: &DeploymentSpec,
    fingerprint: &str,
    dry_run: bool,
) -> Result<Registration, StoreError> {
    let now = from_micros(micros(Utc::now()))?;
    let mut tx = begin_write::<D>(conn).await?;
    // Creates the deployment's row, or touches it without changing it: either way the row is
    // locked until commit (PostgreSQL), so registrations of one deployment take turns.
    let mut q = QueryBuilder::new(
        "INSERT INTO deployments (flow, name, id, flow_key, latest_version, versions, created, \
         updated) VALUES (",
    );
    q.bind(spec.flow.clone())
        .push(", ")
        .bind(spec.name.clone())
        .push(", ")
        .bind(Uuid::now_v7())
        .push(", ")
        .bind(D::text(&spec.flow_key))
        .push(", ")
        .bind(D::text(&spec.version))
        .push(", 0, ")
        .bind_instant(now)
        .push(", ")
        .bind_instant(now)
        .push(
            ") ON CONFLICT (flow, name) DO UPDATE SET versions = deployments.versions \
             RETURNING flow_key, versions, updated",
        );
    let row = D::fetch_optional(&mut tx, &mut q)
        .await?
        .ok_or_else(|| corrupt("the upsert of a deployment returned nothing".into()))?;
    let c = Columns::<D>(&row);
    let owner: String = c.get("flow_key")?;
    let versions: i64 = c.get("versions")?;
    let updated = c.instant("updated")?;
    if owner != D::text(&spec.flow_key) {
        tx.rollback().await?;
        return Ok(Registration::OwnedByAnother { flow_key: owner });
    }
    if let Some(known) =
        find_version::<D>(&mut tx, &spec.flow, &spec.name, Some(&spec.version)).await?
    {
        // Nothing to write: the upsert above only took the lock.
        tx.rollback().await?;
        return Ok(if known.fingerprint == fingerprint {
            Registration::Unchanged(known.version)
        } else {
            Registration::VersionConflict(known.version)
        });
    }
    if dry_run {
        tx.rollback().await?;
        return Ok(Registration::WouldCreate);
    }
    // Strictly after the previous version, whatever the clocks of the servers say, so the
    // newest by `registered` is the one registered last.
    let registered = if versions > 0 && updated >= now {
        updated + chrono::Duration::microseconds(1)
    } else {
        now
    };
    let mut q = QueryBuilder::new(format!(
        "INSERT INTO deployment_versions ({}) VALUES (",
        "flow, name, version, id, flow_key, description, parameter_schema, output_schema, \
         default_parameters, tags, concurrency_limit, retries, registered, fingerprint"
    ));
    q.bind(spec.flow.clone())
        .push(", ")
        .bind(spec.name.clone())
        .push(", ")
        .bind(D::text(&spec.version))
        .push(", ")
        .bind(Uuid::now_v7())
        .push(", ")
        .bind(D::text(&spec.flow_key))
        .push(", ")
        .bind(spec.description.as_deref().map(D::text))
        .push(", ");
    D::push_json(&mut q, json_string(&spec.parameter_schema)?);
    q.push(", ");
    D::push_json(&mut q, json_string(&spec.output_schema)?);
    q.push(", ");
    D::push_json(&mut q, json_string(&spec.default_parameters)?);
    q.push(", ");
    D::push_strings(&mut q, &spec.tags)?;
    q.push(", ")
        .bind(spec.concurrency_limit.map(i64::from))
        .push(", ")
        .bind(i64::from(spec.retries))
        .push(", ")
        .bind_instant(registered)
        .push(", ")
        .bind(fingerprint.to_string())
        .push(")");
    D::execute(&mut tx, &mut q).await?;
    let mut q = QueryBuilder::new("UPDATE deployments SET latest_version = ");
    q.bind(D::text(&spec.version))
        .push(", versions = versions + 1, updated = ")
        .bind_instant(registered)
        .push(" WHERE flow = ")
        .bind(spec.flow.clone())
        .push(" AND name = ")
        .bind(spec.name.clone());
    D::execute(&mut tx, &mut q).await?;
    let created = find_version::<D>(&mut tx, &spec.flow, &spec.name, Some(&spec.version))
        .await?
        .ok_or_else(|| corrupt("a version just registered cannot be read back".into()))?;
    tx.commit().await?;
    Ok(Registration::Created(created.version))
}

/// JSON text of a value (NUL characters are escaped by JSON, so any backend stores it).
pub(super) fn json_string<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))
}

/// An idempotency key of a deployment that has not expired.
pub(crate) async fn idempotency_key<D: Dialect>(
    pool: &Pool<D>,
    deployment: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let mut q =
        QueryBuilder::new("SELECT fingerprint, run_id FROM idempotency_keys WHERE deployment = ");
    q.bind(D::text(deployment))
        .push(" AND key = ")
        .bind(D::text(key))
        .push(" AND expires > ")
        .bind_instant(Utc::now());
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.as_ref()
        .map(|row| {
            let c = Columns::<D>(row);
            Ok(IdempotencyRecord {
                fingerprint: c.get("fingerprint")?,
                run_id: c.get("run_id")?,
            })
        })
        .transpose()
}

/// Creates a triggered run, in one transaction with its idempotency key: see
/// [`super::Backend::trigger`].
async fn trigger<D: BulkWrite>(
    conn: &mut D::Connection,
    new: &NewRun,
) -> Result<Triggered, StoreError> {
    let run_id = new.event.run_id;
    let now = Utc::now();
    let mut tx = begin_write::<D>(conn).await?;
    if let Some(claim) = &new.idempotency {
        let deployment = D::text(&new.deployment);
        let key = D::text(&claim.key);
        // An expired key is forgotten: the trigger that reuses it starts afresh.
        let mut q = QueryBuilder::new("DELETE FROM idempotency_keys WHERE deployment = ");
        q.bind(deployment.clone())
            .push(" AND key = ")
            .bind(key.clone())
            .push(" AND expires <= ")
            .bind_instant(now);
        D::execute(&mut tx, &mut q).await?;
        // The primary key decides: on PostgreSQL a concurrent insert of the same key waits for
        // the first transaction, then finds the key taken.
        let mut q = QueryBuilder::new(
            "INSERT INTO idempotency_keys (deployment, key, fingerprint, run_id, created, expires) \
             VALUES (",
        );
        q.bind(deployment.clone())
            .push(", ")
            .bind(key.clone())
            .push(", ")
            .bind(claim.fingerprint.clone())
            .push(", ")
            .bind(run_id)
            .push(", ")
            .bind_instant(now)
            .push(", ")
            .bind_instant(claim.expires)
            .push(") ON CONFLICT (deployment, key) DO NOTHING RETURNING run_id");
        if D::fetch_optional(&mut tx, &mut q).await?.is_none() {
            let mut q = QueryBuilder::new(
                "SELECT fingerprint, run_id FROM idempotency_keys WHERE deployment = ",
            );
            q.bind(deployment).push(" AND key = ").bind(key);
            let row = D::fetch_optional(&mut tx, &mut q).await?.ok_or_else(|| {
                corrupt("an idempotency key was taken and is gone in one transaction".into())
            })?;
            let c = Columns::<D>(&row);
            let fingerprint: String = c.get("fingerprint")?;
            let existing: Uuid = c.get("run_id")?;
            tx.commit().await?;
            return Ok(if fingerprint == claim.fingerprint {
                Triggered::Replayed(existing)
            } else {
                Triggered::KeyReused(existing)
            });
        }
    }
    if let Some(slot) = &new.schedule_slot
        && let Some(existing) = super::schedules::claim_slot::<D>(&mut tx, slot, run_id).await?
    {
        tx.commit().await?;
        return Ok(Triggered::Replayed(existing));
    }
    let plan = Plan::new(vec![vec![new.event.clone()]])?;
    let mut stored = HashSet::with_capacity(1);
    write_plan::<D>(&mut tx, &plan, &mut stored).await?;
    let mut q = QueryBuilder::new("UPDATE runs SET scheduled_for = ");
    match new.scheduled_for {
        Some(at) => q.bind_instant(at),
        None => q.push("NULL"),
    };
    q.push(if new.version_pinned {
        ", version_pinned = TRUE"
    } else {
        ", version_pinned = FALSE"
    })
    .push(", max_attempts = ")
    .bind(i64::from(new.max_attempts.max(1)))
    .push(", created_by = ")
    .bind(new.created_by.as_deref().map(D::text));
    if let Some(slot) = &new.schedule_slot {
        if let Some(at) = slot.late_at {
            q.push(", late_at = ").bind_instant(at);
        }
        if let Some(at) = slot.expires_at {
            q.push(", expires_at = ").bind_instant(at);
        }
    }
    q.push(" WHERE id = ").bind(run_id);
    D::execute(&mut tx, &mut q).await?;
    if let Some(notify) = D::NOTIFY_RUNS {
        D::fetch_optional(&mut tx, &mut QueryBuilder::new(notify)).await?;
    }
    tx.commit().await?;
    Ok(Triggered::Created(run_id))
}
