//! The SQLite backend: one file, WAL mode, one writer task, a pool of read-only connections.
//!
//! SQLite allows one writer at a time. Rather than let connections of a pool race for the
//! write lock (and fail with "database is locked" under load), every write goes through one
//! task that owns the only read-write connection. It receives requests over a channel and
//! commits whatever has queued up while it was busy in one transaction (group commit), then
//! answers each request: an acknowledged batch is committed. Readers use their own read-only
//! connections, which WAL lets run alongside the writer.
//!
//! Durability: `synchronous = NORMAL` in WAL mode writes each commit to the WAL before the
//! commit returns but does not fsync it, so a commit survives the server process being killed
//! (SIGKILL, panic, OOM: the data is in the OS page cache) but may be lost on power loss or a
//! kernel crash. `FULL` would fsync every group; it was not needed for the process-crash
//! guarantee the server makes.

use super::cursor::Cursor;
use super::rows::{
    self, LogRow, Plan, RunRow, StateRow, StatsFrame, corrupt, from_micros, micros, parse_attempt,
    parse_kind, parse_level, parse_state,
};
use super::{
    Backend, IngestOutcome, LogFilter, LogRecord, Page, PageRequest, RunFilter, RunRecord,
    StateRecord, Stats, StoreError,
};
use chrono::{DateTime, Utc};
use flowkit_wire::event::Event;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, QueryBuilder, Row, Sqlite};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Stop gathering queued requests into one transaction past this many events.
const MAX_GROUP_EVENTS: usize = 20_000;
/// ... or this many requests.
const MAX_GROUP_REQUESTS: usize = 256;
/// Requests waiting for the writer before `ingest` callers wait for room (backpressure).
const QUEUE: usize = 1024;
/// Read-only connections.
const READERS: u32 = 4;
/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row INSERT, largest first. A fixed set keeps the number of distinct
/// statements (each prepared once and cached by the connection) small.
const CHUNKS: [usize; 4] = [256, 32, 8, 1];

/// The SQLite store. See the module documentation.
pub struct SqliteStore {
    /// Taken (dropped) by `close`, which lets the writer drain its queue and stop.
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: SqlitePool,
}

/// A write, for the writer task.
enum Command {
    Ingest {
        events: Vec<Event>,
        reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
    },
    DeleteBefore {
        cutoff: i64,
        batch: u32,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Drops {
        worker: String,
        dropped: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of `url` (`sqlite://PATH` or
    /// `sqlite:PATH`), switches it to WAL, applies the migrations and starts the writer.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            // Each connection of the reader pool would see its own empty database.
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        // No foreign keys: the schema has none (events of related runs arrive in any order).
        let base = SqliteConnectOptions::from_str(url)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        let write_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Bounds the work of `PRAGMA optimize` (below and at close) on a large database.
            .analysis_limit(400)
            .optimize_on_close(true, 400);
        let mut conn = SqliteConnection::connect_with(&write_options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        // Keeps the planner's statistics current (cheap: it only analyzes what changed).
        sqlx::query("PRAGMA optimize = 0x10002")
            .execute(&mut conn)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            // One connection open from the start: the first page does not pay for opening it.
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_loop(conn, receiver));
        Ok(SqliteStore {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            readers,
        })
    }

    /// Hands a command to the writer and waits for its answer.
    async fn write<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let sender = lock(&self.sender).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(sender);
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer: takes what has queued, commits it as one transaction, answers, repeats.
async fn write_loop(mut conn: SqliteConnection, mut receiver: mpsc::Receiver<Command>) {
    let sql = IngestSql::new();
    while let Some(first) = receiver.recv().await {
        let mut ingests = Vec::new();
        let mut others = Vec::new();
        let mut events = 0;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Ingest {
                    events: batch,
                    reply,
                } => {
                    events += batch.len();
                    ingests.push((batch, reply));
                }
                other => others.push(other),
            }
            if events < MAX_GROUP_EVENTS && ingests.len() < MAX_GROUP_REQUESTS {
                next = receiver.try_recv().ok();
            }
        }
        if !ingests.is_empty() {
            ingest_group(&mut conn, &sql, ingests).await;
        }
        for command in others {
            match command {
                Command::DeleteBefore {
                    cutoff,
                    batch,
                    reply,
                } => {
                    let _ = reply.send(delete_before(&mut conn, cutoff, batch).await);
                }
                Command::Drops {
                    worker,
                    dropped,
                    reply,
                } => {
                    let _ = reply.send(record_drops(&mut conn, &worker, dropped).await);
                }
                Command::Ingest { .. } => {}
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!("closing the SQLite writer connection: {e}");
    }
}

type IngestReply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

/// Commits several requests in one transaction; if that fails, tries each on its own so one
/// bad request cannot fail the others.
async fn ingest_group(
    conn: &mut SqliteConnection,
    sql: &IngestSql,
    group: Vec<(Vec<Event>, IngestReply)>,
) {
    let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    let result = match Plan::new(&batches) {
        Ok(plan) => apply(conn, sql, &plan).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) if batches.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(
                "a group of {} ingest requests failed ({e}); retrying them one by one",
                batches.len()
            );
            for (batch, reply) in batches.into_iter().zip(replies) {
                let batch = [batch];
                let result = match Plan::new(&batch) {
                    Ok(plan) => apply(conn, sql, &plan).await.map(|mut o| o.remove(0)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// Writes a plan in one transaction; returns each request's outcome.
async fn apply(
    conn: &mut SqliteConnection,
    sql: &IngestSql,
    plan: &Plan,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut stored = HashSet::with_capacity(plan.states.len() + plan.logs.len());
    if !plan.is_empty() {
        // IMMEDIATE: take the write lock now (waiting up to busy_timeout for another process)
        // rather than fail on upgrading a read transaction.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        insert_states(&mut tx, sql, &plan.states, &mut stored).await?;
        insert_logs(&mut tx, sql, &plan.logs, &mut stored).await?;
        upsert_runs(&mut tx, sql, &plan.runs(&stored)).await?;
        tx.commit().await?;
    }
    Ok(plan.outcomes(&stored))
}

/// The multi-row statements of ingestion, one per chunk size.
struct IngestSql {
    states: Vec<Arc<str>>,
    logs: Vec<Arc<str>>,
    runs: Vec<Arc<str>>,
}

const INSERT_STATES: &str =
    "INSERT INTO run_states (event_id, run_id, group_id, state, message, attempt, ts) VALUES ";
const INSERT_STATES_TAIL: &str = " ON CONFLICT (event_id) DO NOTHING RETURNING event_id";
const INSERT_LOGS: &str = "INSERT INTO logs (event_id, run_id, flow_run_id, group_id, run_name, level, message, \
     fields, attempt, ts) VALUES ";
const INSERT_LOGS_TAIL: &str = " ON CONFLICT (event_id) DO NOTHING RETURNING event_id";
const UPSERT_RUNS: &str = "INSERT INTO runs (id, kind, name, parent_run_id, flow_run_id, state, state_message, \
     state_ts, state_event_id, attempt, created, started, ended, has_details, task_key, tags, parameters, \
     upstream, cache_key, deployment, version, worker) VALUES ";
/// The merge described in `rows`: latest state by (timestamp, event id), least `created` and
/// `started`, first details. All right-hand sides see the row as it was before the update.
const UPSERT_RUNS_TAIL: &str = "
 ON CONFLICT (id) DO UPDATE SET
    parent_run_id = coalesce(runs.parent_run_id, excluded.parent_run_id),
    flow_run_id = coalesce(runs.flow_run_id, excluded.flow_run_id),
    state = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.state ELSE runs.state END,
    state_message = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.state_message ELSE runs.state_message END,
    attempt = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.attempt ELSE runs.attempt END,
    ended = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.ended ELSE runs.ended END,
    state_ts = max(runs.state_ts, excluded.state_ts),
    state_event_id = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.state_event_id ELSE runs.state_event_id END,
    created = min(runs.created, excluded.created),
    started = coalesce(min(runs.started, excluded.started), runs.started, excluded.started),
    has_details = max(runs.has_details, excluded.has_details),
    task_key = CASE WHEN runs.has_details THEN runs.task_key ELSE excluded.task_key END,
    tags = CASE WHEN runs.has_details THEN runs.tags ELSE excluded.tags END,
    parameters = CASE WHEN runs.has_details THEN runs.parameters ELSE excluded.parameters END,
    upstream = CASE WHEN runs.has_details THEN runs.upstream ELSE excluded.upstream END,
    cache_key = CASE WHEN runs.has_details THEN runs.cache_key ELSE excluded.cache_key END,
    deployment = CASE WHEN runs.has_details THEN runs.deployment ELSE excluded.deployment END,
    version = CASE WHEN runs.has_details THEN runs.version ELSE excluded.version END,
    worker = CASE WHEN runs.has_details THEN runs.worker ELSE excluded.worker END";

impl IngestSql {
    fn new() -> IngestSql {
        let build = |head: &str, columns: usize, tail: &str| -> Vec<Arc<str>> {
            CHUNKS
                .iter()
                .map(|&rows| Arc::from(values_sql(head, columns, rows, tail)))
                .collect()
        };
        IngestSql {
            states: build(INSERT_STATES, 7, INSERT_STATES_TAIL),
            logs: build(INSERT_LOGS, 10, INSERT_LOGS_TAIL),
            runs: build(UPSERT_RUNS, 22, UPSERT_RUNS_TAIL),
        }
    }
}

/// `head (?, …), (?, …) tail` with `rows` tuples of `columns` placeholders.
fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    format!("{head}{}{tail}", vec![tuple; rows].join(", "))
}

/// Splits `rows` into chunks of the sizes in [`CHUNKS`]; yields each chunk with the index of
/// its size (so the statement for it).
fn chunked<T>(mut rows: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    std::iter::from_fn(move || {
        let (which, size) = CHUNKS
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, size)| size <= rows.len())?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some((which, chunk))
    })
}

async fn insert_states(
    conn: &mut SqliteConnection,
    sql: &IngestSql,
    rows: &[StateRow],
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    for (which, chunk) in chunked(rows) {
        let mut query = sqlx::query(AssertSqlSafe(sql.states[which].clone()));
        for row in chunk {
            query = query
                .bind(row.event_id)
                .bind(row.run_id)
                .bind(row.group_id)
                .bind(row.state.as_str())
                .bind(row.message.clone())
                .bind(i64::from(row.attempt))
                .bind(row.ts);
        }
        for returned in query.fetch_all(&mut *conn).await? {
            stored.insert(returned.try_get::<Uuid, _>(0)?);
        }
    }
    Ok(())
}

async fn insert_logs(
    conn: &mut SqliteConnection,
    sql: &IngestSql,
    rows: &[LogRow],
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    for (which, chunk) in chunked(rows) {
        let mut query = sqlx::query(AssertSqlSafe(sql.logs[which].clone()));
        for row in chunk {
            query = query
                .bind(row.event_id)
                .bind(row.run_id)
                .bind(row.flow_run_id)
                .bind(row.group_id)
                .bind(row.run_name.clone())
                .bind(rows::level_number(row.level))
                .bind(row.message.clone())
                .bind(row.fields.clone())
                .bind(i64::from(row.attempt))
                .bind(row.ts);
        }
        for returned in query.fetch_all(&mut *conn).await? {
            stored.insert(returned.try_get::<Uuid, _>(0)?);
        }
    }
    Ok(())
}

async fn upsert_runs(
    conn: &mut SqliteConnection,
    sql: &IngestSql,
    runs: &[RunRow],
) -> Result<(), StoreError> {
    let no_details = rows::DetailsRow::default();
    for (which, chunk) in chunked(runs) {
        let mut query = sqlx::query(AssertSqlSafe(sql.runs[which].clone()));
        for run in chunk {
            let details = run.details.as_ref().unwrap_or(&no_details);
            query = query
                .bind(run.id)
                .bind(run.kind.as_str())
                .bind(run.name.clone())
                .bind(run.parent_run_id)
                .bind(run.flow_run_id)
                .bind(run.state.as_str())
                .bind(run.state_message.clone())
                .bind(run.state_ts)
                .bind(run.state_event_id)
                .bind(i64::from(run.attempt))
                .bind(run.created)
                .bind(run.started)
                .bind(run.ended)
                .bind(run.details.is_some())
                .bind(details.task_key.clone())
                .bind(details.tags_json()?)
                .bind(details.parameters.clone())
                .bind(details.upstream_json()?)
                .bind(details.cache_key.clone())
                .bind(details.deployment.clone())
                .bind(details.version.clone())
                .bind(details.worker.clone());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Binds a list of ids as `?, ?, …` into a statement built at run time.
fn id_list(head: &str, ids: &[Uuid], tail: &str) -> QueryBuilder<Sqlite> {
    let mut builder = QueryBuilder::new(head);
    let mut separated = builder.separated(", ");
    for id in ids {
        separated.push_bind(*id);
    }
    builder.push(tail);
    builder
}

/// Retention, in one transaction: the `batch` oldest runs created before `cutoff`, with every
/// run, state and log line of their groups (a flow run and its task runs go together).
async fn delete_before(
    conn: &mut SqliteConnection,
    cutoff: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let candidates: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, flow_run_id FROM runs WHERE created < ?1 ORDER BY created LIMIT ?2",
    )
    .bind(cutoff)
    .bind(i64::from(batch))
    .fetch_all(&mut *tx)
    .await?;
    let groups = rows::retention_groups(&candidates);
    let mut deleted = 0;
    // Stay well below SQLite's limit on bound parameters.
    for chunk in groups.chunks(500) {
        for (head, tail, count) in [
            ("DELETE FROM runs WHERE flow_run_id IN (", ")", true),
            ("DELETE FROM runs WHERE id IN (", ")", true),
            ("DELETE FROM run_states WHERE group_id IN (", ")", false),
            ("DELETE FROM logs WHERE group_id IN (", ")", false),
        ] {
            let done = id_list(head, chunk, tail)
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            if count {
                deleted += done.rows_affected();
            }
        }
    }
    if candidates.len() < batch as usize {
        deleted += delete_orphan_logs(&mut tx, cutoff, batch).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Old log lines whose run never sent a state (its state events were dropped by a reporter)
/// have no run row to be deleted with: delete up to `batch` of them once no old run is left.
async fn delete_orphan_logs(
    tx: &mut SqliteConnection,
    cutoff: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM logs WHERE event_id IN (
             SELECT event_id FROM logs AS l
             WHERE l.ts < ?1
               AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.id = l.group_id)
               AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.flow_run_id = l.group_id)
             LIMIT ?2)",
    )
    .bind(cutoff)
    .bind(i64::from(batch))
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

async fn record_drops(
    conn: &mut SqliteConnection,
    worker: &str,
    dropped: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO reporter_drops (worker, dropped, last_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (worker) DO UPDATE SET
            dropped = CASE WHEN reporter_drops.dropped > 9223372036854775807 - excluded.dropped
                THEN 9223372036854775807 ELSE reporter_drops.dropped + excluded.dropped END,
            last_seen = max(reporter_drops.last_seen, excluded.last_seen)",
    )
    .bind(worker)
    .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
    .bind(micros(Utc::now()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The columns [`run_from_row`] reads.
const RUN_COLUMNS: &str = "id, kind, name, task_key, parent_run_id, flow_run_id, state, state_message, state_ts, \
     attempt, created, started, ended, tags, parameters, upstream, cache_key, deployment, version, worker";

fn json_column<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(format!("column {column}: {e}")))
}

fn optional_instant(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.try_get::<Option<i64>, _>(column)?
        .map(from_micros)
        .transpose()
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let parameters: Option<String> = row.try_get("parameters")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        task_key: row.try_get("task_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        flow_run_id: row.try_get("flow_run_id")?,
        state: parse_state(row.try_get("state")?)?,
        state_message: row.try_get("state_message")?,
        state_timestamp: from_micros(row.try_get("state_ts")?)?,
        attempt: parse_attempt(row.try_get("attempt")?)?,
        created: from_micros(row.try_get("created")?)?,
        started: optional_instant(row, "started")?,
        ended: optional_instant(row, "ended")?,
        tags: json_column(row, "tags")?,
        parameters: parameters
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| corrupt(format!("column parameters: {e}")))?,
        upstream: json_column(row, "upstream")?,
        cache_key: row.try_get("cache_key")?,
        deployment: row.try_get("deployment")?,
        version: row.try_get("version")?,
        worker: row.try_get("worker")?,
    })
}

fn state_from_row(row: &SqliteRow) -> Result<StateRecord, StoreError> {
    Ok(StateRecord {
        event_id: row.try_get("event_id")?,
        run_id: row.try_get("run_id")?,
        state: parse_state(row.try_get("state")?)?,
        message: row.try_get("message")?,
        attempt: parse_attempt(row.try_get("attempt")?)?,
        timestamp: from_micros(row.try_get("ts")?)?,
    })
}

fn log_from_row(row: &SqliteRow) -> Result<LogRecord, StoreError> {
    let fields: Option<String> = row.try_get("fields")?;
    Ok(LogRecord {
        event_id: row.try_get("event_id")?,
        run_id: row.try_get("run_id")?,
        flow_run_id: row.try_get("flow_run_id")?,
        run_name: row.try_get("run_name")?,
        level: parse_level(row.try_get("level")?)?,
        message: row.try_get("message")?,
        fields: match fields {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| corrupt(format!("column fields: {e}")))?
            }
            None => serde_json::Map::new(),
        },
        attempt: parse_attempt(row.try_get("attempt")?)?,
        timestamp: from_micros(row.try_get("ts")?)?,
    })
}

/// The flow-runs list query; `limit` rows at most (the caller asks one more than a page to
/// learn whether a next page exists).
fn list_query(filter: &RunFilter, after: Option<Cursor>, limit: i64) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE kind = 'flow'"
    ));
    if !filter.states.is_empty() {
        q.push(" AND state IN (");
        let mut states = q.separated(", ");
        for state in &filter.states {
            states.push_bind(state.as_str());
        }
        q.push(")");
    }
    if let Some(name) = &filter.flow_name {
        q.push(" AND name = ").push_bind(name.clone());
    }
    if let Some(deployment) = &filter.deployment {
        q.push(" AND deployment = ").push_bind(deployment.clone());
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(after) = filter.created_after {
        q.push(" AND created >= ").push_bind(micros(after));
    }
    if let Some(before) = filter.created_before {
        q.push(" AND created < ").push_bind(micros(before));
    }
    if let Some(search) = &filter.search {
        // instr, not LIKE: the search text is matched literally, `%` and `_` included.
        q.push(" AND instr(lower(name), lower(")
            .push_bind(search.clone())
            .push(")) > 0");
    }
    if let Some(cursor) = after {
        q.push(" AND (created, id) < (")
            .push_bind(cursor.micros)
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    q.push(" ORDER BY created DESC, id DESC LIMIT ")
        .push_bind(limit);
    q
}

/// The page size a request asks for, within 1..=1000.
fn page_size(page: &PageRequest) -> usize {
    page.limit.clamp(1, 1000) as usize
}

fn decode_cursor(page: &PageRequest) -> Result<Option<Cursor>, StoreError> {
    page.cursor.as_deref().map(Cursor::decode).transpose()
}

/// Cuts `items` (fetched with one extra) to `size` and derives the next cursor.
fn paginate<T>(mut items: Vec<T>, size: usize, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let next_cursor = if items.len() > size {
        items.truncate(size);
        items.last().map(|last| key(last).encode())
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Subflow runs of a flow run: flow runs called by it or by one of its task runs.
const SUBFLOWS: &str = "SELECT id FROM runs WHERE kind = 'flow' AND id <> ?1 AND (parent_run_id = ?1 \
     OR parent_run_id IN (SELECT id FROM runs WHERE flow_run_id = ?1 AND kind = 'task'))";

impl Backend for SqliteStore {
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        self.write(|reply| Command::Ingest { events, reply }).await
    }

    async fn list_flow_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>, StoreError> {
        let size = page_size(page);
        let after = decode_cursor(page)?;
        let rows = list_query(filter, after, size as i64 + 1)
            .build()
            .fetch_all(&self.readers)
            .await?;
        let runs = rows
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(runs, size, |run| Cursor {
            micros: micros(run.created),
            id: run.id,
        }))
    }

    async fn get_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn child_runs(&self, flow_run_id: Uuid) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE flow_run_id = ?1 AND id <> ?1
             UNION ALL
             SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({SUBFLOWS}) AND flow_run_id IS NOT ?1
             ORDER BY created, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(flow_run_id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn states(&self, flow_run_id: Uuid) -> Result<Vec<StateRecord>, StoreError> {
        let sql = format!(
            "SELECT event_id, run_id, state, message, attempt, ts FROM run_states WHERE group_id = ?1
             UNION ALL
             SELECT event_id, run_id, state, message, attempt, ts FROM run_states
                 WHERE group_id IN ({SUBFLOWS}) AND run_id = group_id
             ORDER BY ts, event_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(flow_run_id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(state_from_row).collect()
    }

    async fn logs(
        &self,
        flow_run_id: Uuid,
        filter: &LogFilter,
        page: &PageRequest,
    ) -> Result<Page<LogRecord>, StoreError> {
        let size = page_size(page);
        let after = decode_cursor(page)?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT event_id, run_id, flow_run_id, run_name, level, message, fields, attempt, ts \
             FROM logs WHERE group_id = ",
        );
        q.push_bind(flow_run_id);
        if let Some(level) = filter.min_level {
            q.push(" AND level >= ")
                .push_bind(rows::level_number(level));
        }
        if let Some(run_id) = filter.run_id {
            q.push(" AND run_id = ").push_bind(run_id);
        }
        if let Some(cursor) = after {
            q.push(" AND (ts, event_id) > (")
                .push_bind(cursor.micros)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        q.push(" ORDER BY ts, event_id LIMIT ")
            .push_bind(size as i64 + 1);
        let rows = q.build().fetch_all(&self.readers).await?;
        let logs = rows
            .iter()
            .map(log_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(logs, size, |log| Cursor {
            micros: micros(log.timestamp),
            id: log.event_id,
        }))
    }

    async fn stats(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        buckets: u32,
    ) -> Result<Stats, StoreError> {
        let frame = StatsFrame::new(since, until, buckets);
        let rows = sqlx::query(
            "SELECT (created - ?1) / ?2 AS bucket, state, count(*) AS n FROM runs
             WHERE kind = 'flow' AND created >= ?1 AND created < ?3
             GROUP BY bucket, state",
        )
        .bind(frame.since)
        .bind(frame.width)
        .bind(frame.until)
        .fetch_all(&self.readers)
        .await?;
        let counts = rows
            .iter()
            .map(|row| {
                let n: i64 = row.try_get("n")?;
                Ok((
                    row.try_get("bucket")?,
                    parse_state(row.try_get("state")?)?,
                    n.max(0) as u64,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        frame.assemble(counts)
    }

    async fn delete_before(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let cutoff = micros(cutoff);
        self.write(|reply| Command::DeleteBefore {
            cutoff,
            batch,
            reply,
        })
        .await
    }

    async fn record_reporter_drops(&self, worker: &str, dropped: u64) -> Result<(), StoreError> {
        let worker = worker.to_string();
        self.write(|reply| Command::Drops {
            worker,
            dropped,
            reply,
        })
        .await
    }

    async fn close(&self) {
        drop(lock(&self.sender).take());
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer
            && let Err(e) = writer.await
        {
            tracing::error!("the SQLite writer task failed: {e}");
        }
        self.readers.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sqlite:PATH` works as well as `sqlite://PATH`, creates the file and turns WAL on.
    #[tokio::test]
    async fn opens_both_url_forms_in_wal_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, prefix) in ["sqlite://", "sqlite:"].into_iter().enumerate() {
            let path = dir.path().join(format!("db-{i}.sqlite"));
            let store = SqliteStore::connect(&format!("{prefix}{}", path.display()))
                .await
                .expect("connect");
            assert!(path.exists());
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&store.readers)
                .await
                .expect("journal mode");
            assert_eq!(mode, "wal");
            store.close().await;
            assert!(matches!(
                store.ingest(vec![]).await,
                Ok(IngestOutcome { accepted: 0, .. })
            ));
            assert!(matches!(
                store.record_reporter_drops("w", 1).await,
                Err(StoreError::Closed)
            ));
        }
        assert!(matches!(
            SqliteStore::connect("sqlite::memory:").await,
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    /// The list query must walk an index in the page's order: no sort of all flow runs.
    #[tokio::test]
    async fn list_query_uses_an_index_without_sorting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url).await.expect("connect");
        let cursor = Some(Cursor {
            micros: 1,
            id: Uuid::nil(),
        });
        let cases = [
            (RunFilter::default(), "runs_flow_list"),
            (
                RunFilter {
                    flow_name: Some("etl".into()),
                    ..RunFilter::default()
                },
                "runs_flow_name",
            ),
            (
                RunFilter {
                    deployment: Some("nightly".into()),
                    ..RunFilter::default()
                },
                "runs_flow_deployment",
            ),
            (
                RunFilter {
                    states: vec![flowkit_wire::state::StateType::Failed],
                    ..RunFilter::default()
                },
                "runs_flow_state",
            ),
            (
                RunFilter {
                    tag: Some("x".into()),
                    search: Some("a".into()),
                    ..RunFilter::default()
                },
                "runs_flow_list",
            ),
        ];
        for (filter, index) in cases {
            for after in [None, cursor] {
                let q = list_query(&filter, after, 51);
                let sql = format!("EXPLAIN QUERY PLAN {}", q.sql().as_str());
                let mut explain = sqlx::query(AssertSqlSafe(sql));
                // Re-bind the same values: EXPLAIN needs them to plan with the same shape.
                for state in &filter.states {
                    explain = explain.bind(state.as_str());
                }
                for value in [
                    &filter.flow_name,
                    &filter.deployment,
                    &filter.tag,
                    &filter.search,
                ]
                .into_iter()
                .flatten()
                {
                    explain = explain.bind(value.clone());
                }
                if let Some(c) = after {
                    explain = explain.bind(c.micros).bind(c.id);
                }
                explain = explain.bind(51i64);
                let plan: Vec<String> = explain
                    .fetch_all(&store.readers)
                    .await
                    .expect("explain")
                    .iter()
                    .map(|row| row.try_get::<String, _>("detail").expect("detail"))
                    .collect();
                let plan = plan.join(" | ");
                assert!(plan.contains(index), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            }
        }
        store.close().await;
    }
}
