//! The PostgreSQL backend: how the server scales out. Several server processes share one
//! database; each ingest request is one transaction on a pooled connection.
//!
//! Correctness under concurrent ingestion rests on keys and on an order-independent merge, not
//! on locks the server takes: `run_states` and `logs` are keyed by event id and inserted with
//! `ON CONFLICT DO NOTHING` (a replay, or the same event ingested by two servers at once, is
//! stored once and counted once as accepted), and each run is upserted with a merge whose
//! result does not depend on which transaction commits first (see `store::rows`). Rows are
//! written in id order, so two transactions touching the same runs lock them in the same order;
//! a deadlock or serialization failure that happens anyway is retried.
//!
//! Batches are sent as arrays and expanded with `UNNEST`: one statement per table per batch,
//! whatever its size.
//!
//! PostgreSQL text cannot hold NUL characters; they are stored as U+FFFD.

use super::cursor::Cursor;
use super::rows::{
    self, Plan, RunRow, StatsFrame, from_micros, micros, parse_attempt, parse_kind, parse_level,
    parse_state,
};
use super::{
    Backend, IngestOutcome, LogFilter, LogRecord, Page, PageRequest, RunFilter, RunRecord,
    StateRecord, Stats, StoreError,
};
use chrono::{DateTime, Utc};
use flowkit_wire::event::Event;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Connections per server process.
const POOL_SIZE: u32 = 10;
/// Attempts of a transaction that hit a deadlock or serialization failure.
const ATTEMPTS: u32 = 5;

/// The PostgreSQL store. See the module documentation.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies the migrations
    /// (sqlx serializes concurrent migrators with an advisory lock, so several servers may start
    /// at once).
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn apply(&self, plan: &Plan) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut stored = HashSet::with_capacity(plan.states.len() + plan.logs.len());
        if !plan.is_empty() {
            let mut tx = self.pool.begin().await?;
            insert_states(&mut tx, plan, &mut stored).await?;
            insert_logs(&mut tx, plan, &mut stored).await?;
            upsert_runs(&mut tx, &plan.runs(&stored)).await?;
            tx.commit().await?;
        }
        Ok(plan.outcomes(&stored))
    }

    async fn delete_once(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
            "SELECT id, flow_run_id FROM runs WHERE created < $1 ORDER BY created LIMIT $2",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        let groups = rows::retention_groups(&candidates);
        let mut deleted = 0;
        if !groups.is_empty() {
            deleted += sqlx::query("DELETE FROM runs WHERE flow_run_id = ANY($1) OR id = ANY($1)")
                .bind(&groups)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            for sql in [
                "DELETE FROM run_states WHERE group_id = ANY($1)",
                "DELETE FROM logs WHERE group_id = ANY($1)",
            ] {
                sqlx::query(sql).bind(&groups).execute(&mut *tx).await?;
            }
        }
        if candidates.len() < batch as usize {
            // Old log lines whose run never sent a state have no run row to go with.
            deleted += sqlx::query(
                "DELETE FROM logs WHERE event_id IN (
                     SELECT event_id FROM logs AS l
                     WHERE l.ts < $1
                       AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.id = l.group_id)
                       AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.flow_run_id = l.group_id)
                     LIMIT $2)",
            )
            .bind(cutoff)
            .bind(i64::from(batch))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Whether a transaction failed only because of another one and is worth running again.
fn retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has failed [`ATTEMPTS`] times.
async fn with_retries<T, F: Future<Output = Result<T, StoreError>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, StoreError> {
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < ATTEMPTS && retryable(&e) => {
                tracing::debug!("retrying a transaction after {e}");
                tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Text as PostgreSQL can store it (no NUL).
fn pg_text(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text.to_string()
    }
}

fn pg_opt(text: &Option<String>) -> Option<String> {
    text.as_deref().map(pg_text)
}

fn instant(value: i64) -> Result<DateTime<Utc>, StoreError> {
    from_micros(value)
}

async fn insert_states(
    conn: &mut PgConnection,
    plan: &Plan,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    if plan.states.is_empty() {
        return Ok(());
    }
    let rows = &plan.states;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let returned: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO run_states (event_id, run_id, group_id, state, message, attempt, ts)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int8[],
                              $7::timestamptz[])
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(ids)
    .bind(rows.iter().map(|r| r.run_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.group_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| pg_opt(&r.message)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| i64::from(r.attempt)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| instant(r.ts)).collect::<Result<Vec<_>, _>>()?)
    .fetch_all(&mut *conn)
    .await?;
    stored.extend(returned);
    Ok(())
}

async fn insert_logs(
    conn: &mut PgConnection,
    plan: &Plan,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    if plan.logs.is_empty() {
        return Ok(());
    }
    let rows = &plan.logs;
    let returned: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO logs (event_id, run_id, flow_run_id, group_id, run_name, level, message, fields, attempt, ts)
         SELECT u.event_id, u.run_id, u.flow_run_id, u.group_id, u.run_name, u.level, u.message, u.fields::json,
                u.attempt, u.ts
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int2[], $7::text[],
                     $8::text[], $9::int8[], $10::timestamptz[])
             AS u(event_id, run_id, flow_run_id, group_id, run_name, level, message, fields, attempt, ts)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.run_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.flow_run_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.group_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| pg_text(&r.run_name)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| rows::level_number(r.level)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| pg_text(&r.message)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| i64::from(r.attempt)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| instant(r.ts)).collect::<Result<Vec<_>, _>>()?)
    .fetch_all(&mut *conn)
    .await?;
    stored.extend(returned);
    Ok(())
}

/// The merge described in `store::rows`, as an upsert. A CASE per column rather than one
/// `WHERE (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)`
/// on the whole update: `created`, `started` and the details merge independently of which
/// state is latest (an older event can carry the earliest timestamp or the details).
const UPSERT_RUNS: &str = "
INSERT INTO runs (id, kind, name, parent_run_id, flow_run_id, state, state_message, state_ts, state_event_id,
                  attempt, created, started, ended, has_details, task_key, tags, parameters, upstream,
                  cache_key, deployment, version, worker)
SELECT u.id, u.kind, u.name, u.parent_run_id, u.flow_run_id, u.state, u.state_message, u.state_ts,
       u.state_event_id, u.attempt, u.created, u.started, u.ended, u.has_details, u.task_key,
       ARRAY(SELECT t.value FROM json_array_elements_text(u.tags::json) WITH ORDINALITY AS t(value, n)
             ORDER BY t.n),
       u.parameters::json,
       ARRAY(SELECT t.value::uuid FROM json_array_elements_text(u.upstream::json) WITH ORDINALITY AS t(value, n)
             ORDER BY t.n),
       u.cache_key, u.deployment, u.version, u.worker
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
            $8::timestamptz[], $9::uuid[], $10::int8[], $11::timestamptz[], $12::timestamptz[],
            $13::timestamptz[], $14::bool[], $15::text[], $16::text[], $17::text[], $18::text[],
            $19::text[], $20::text[], $21::text[], $22::text[])
    AS u(id, kind, name, parent_run_id, flow_run_id, state, state_message, state_ts, state_event_id, attempt,
         created, started, ended, has_details, task_key, tags, parameters, upstream, cache_key, deployment,
         version, worker)
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
    state_ts = GREATEST(runs.state_ts, excluded.state_ts),
    state_event_id = CASE WHEN (excluded.state_ts, excluded.state_event_id) > (runs.state_ts, runs.state_event_id)
        THEN excluded.state_event_id ELSE runs.state_event_id END,
    created = LEAST(runs.created, excluded.created),
    started = LEAST(runs.started, excluded.started),
    has_details = runs.has_details OR excluded.has_details,
    task_key = CASE WHEN runs.has_details THEN runs.task_key ELSE excluded.task_key END,
    tags = CASE WHEN runs.has_details THEN runs.tags ELSE excluded.tags END,
    parameters = CASE WHEN runs.has_details THEN runs.parameters ELSE excluded.parameters END,
    upstream = CASE WHEN runs.has_details THEN runs.upstream ELSE excluded.upstream END,
    cache_key = CASE WHEN runs.has_details THEN runs.cache_key ELSE excluded.cache_key END,
    deployment = CASE WHEN runs.has_details THEN runs.deployment ELSE excluded.deployment END,
    version = CASE WHEN runs.has_details THEN runs.version ELSE excluded.version END,
    worker = CASE WHEN runs.has_details THEN runs.worker ELSE excluded.worker END";

async fn upsert_runs(conn: &mut PgConnection, runs: &[RunRow]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let no_details = rows::DetailsRow::default();
    let details: Vec<&rows::DetailsRow> = runs
        .iter()
        .map(|r| r.details.as_ref().unwrap_or(&no_details))
        .collect();
    let tags = details
        .iter()
        .map(|d| {
            let clean = rows::DetailsRow {
                tags: d.tags.iter().map(|t| pg_text(t)).collect(),
                ..rows::DetailsRow::default()
            };
            clean.tags_json()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let upstream = details
        .iter()
        .map(|d| d.upstream_json())
        .collect::<Result<Vec<_>, _>>()?;
    let opt_instant = |v: Option<i64>| v.map(instant).transpose();
    sqlx::query(UPSERT_RUNS)
        .bind(runs.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| pg_text(&r.name)).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.parent_run_id).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.flow_run_id).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
        .bind(
            runs.iter()
                .map(|r| pg_opt(&r.state_message))
                .collect::<Vec<_>>(),
        )
        .bind(
            runs.iter()
                .map(|r| instant(r.state_ts))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(runs.iter().map(|r| r.state_event_id).collect::<Vec<_>>())
        .bind(
            runs.iter()
                .map(|r| i64::from(r.attempt))
                .collect::<Vec<_>>(),
        )
        .bind(
            runs.iter()
                .map(|r| instant(r.created))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(
            runs.iter()
                .map(|r| opt_instant(r.started))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(
            runs.iter()
                .map(|r| opt_instant(r.ended))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(runs.iter().map(|r| r.details.is_some()).collect::<Vec<_>>())
        .bind(
            details
                .iter()
                .map(|d| pg_text(&d.task_key))
                .collect::<Vec<_>>(),
        )
        .bind(tags)
        .bind(
            details
                .iter()
                .map(|d| d.parameters.clone())
                .collect::<Vec<_>>(),
        )
        .bind(upstream)
        .bind(
            details
                .iter()
                .map(|d| pg_opt(&d.cache_key))
                .collect::<Vec<_>>(),
        )
        .bind(
            details
                .iter()
                .map(|d| pg_opt(&d.deployment))
                .collect::<Vec<_>>(),
        )
        .bind(
            details
                .iter()
                .map(|d| pg_opt(&d.version))
                .collect::<Vec<_>>(),
        )
        .bind(
            details
                .iter()
                .map(|d| pg_opt(&d.worker))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The columns [`run_from_row`] reads.
const RUN_COLUMNS: &str = "id, kind, name, task_key, parent_run_id, flow_run_id, state, state_message, state_ts, \
     attempt, created, started, ended, tags, parameters, upstream, cache_key, deployment, version, worker";

fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        task_key: row.try_get("task_key")?,
        parent_run_id: row.try_get("parent_run_id")?,
        flow_run_id: row.try_get("flow_run_id")?,
        state: parse_state(row.try_get("state")?)?,
        state_message: row.try_get("state_message")?,
        state_timestamp: row.try_get("state_ts")?,
        attempt: parse_attempt(row.try_get("attempt")?)?,
        created: row.try_get("created")?,
        started: row.try_get("started")?,
        ended: row.try_get("ended")?,
        tags: row.try_get("tags")?,
        parameters: row.try_get("parameters")?,
        upstream: row.try_get("upstream")?,
        cache_key: row.try_get("cache_key")?,
        deployment: row.try_get("deployment")?,
        version: row.try_get("version")?,
        worker: row.try_get("worker")?,
    })
}

fn state_from_row(row: &PgRow) -> Result<StateRecord, StoreError> {
    Ok(StateRecord {
        event_id: row.try_get("event_id")?,
        run_id: row.try_get("run_id")?,
        state: parse_state(row.try_get("state")?)?,
        message: row.try_get("message")?,
        attempt: parse_attempt(row.try_get("attempt")?)?,
        timestamp: row.try_get("ts")?,
    })
}

fn log_from_row(row: &PgRow) -> Result<LogRecord, StoreError> {
    let fields: Option<serde_json::Value> = row.try_get("fields")?;
    let level: i16 = row.try_get("level")?;
    Ok(LogRecord {
        event_id: row.try_get("event_id")?,
        run_id: row.try_get("run_id")?,
        flow_run_id: row.try_get("flow_run_id")?,
        run_name: row.try_get("run_name")?,
        level: parse_level(i64::from(level))?,
        message: row.try_get("message")?,
        fields: match fields {
            Some(serde_json::Value::Object(map)) => map,
            Some(other) => {
                return Err(rows::corrupt(format!(
                    "log fields are not an object: {other}"
                )));
            }
            None => serde_json::Map::new(),
        },
        attempt: parse_attempt(row.try_get("attempt")?)?,
        timestamp: row.try_get("ts")?,
    })
}

/// A cursor's instant, which a forged cursor may put out of range.
fn cursor_instant(cursor: &Cursor) -> Result<DateTime<Utc>, StoreError> {
    from_micros(cursor.micros).map_err(|_| StoreError::InvalidCursor("instant out of range".into()))
}

/// The page size a request asks for, within 1..=1000.
fn page_size(page: &PageRequest) -> usize {
    page.limit.clamp(1, 1000) as usize
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
const SUBFLOWS: &str = "SELECT id FROM runs WHERE kind = 'flow' AND id <> $1 AND (parent_run_id = $1 \
     OR parent_run_id IN (SELECT id FROM runs WHERE flow_run_id = $1 AND kind = 'task'))";

impl Backend for PgStore {
    async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let plan = Plan::new(std::slice::from_ref(&events))?;
        let outcomes = with_retries(|| self.apply(&plan)).await?;
        Ok(outcomes.into_iter().next().unwrap_or_default())
    }

    async fn list_flow_runs(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<RunRecord>, StoreError> {
        let size = page_size(page);
        let after = page.cursor.as_deref().map(Cursor::decode).transpose()?;
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE kind = 'flow'"
        ));
        match filter.states.as_slice() {
            [] => {}
            // `=` rather than `= ANY`: PostgreSQL then reads runs_flow_state in page order.
            [state] => {
                q.push(" AND state = ").push_bind(state.as_str());
            }
            states => {
                let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
                q.push(" AND state = ANY(").push_bind(states).push(")");
            }
        }
        if let Some(name) = &filter.flow_name {
            q.push(" AND name = ").push_bind(pg_text(name));
        }
        if let Some(deployment) = &filter.deployment {
            q.push(" AND deployment = ").push_bind(pg_text(deployment));
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND tags @> ARRAY[")
                .push_bind(pg_text(tag))
                .push("]::text[]");
        }
        if let Some(after) = filter.created_after {
            q.push(" AND created >= ").push_bind(after);
        }
        if let Some(before) = filter.created_before {
            q.push(" AND created < ").push_bind(before);
        }
        if let Some(search) = &filter.search {
            // strpos, not LIKE: the search text is matched literally, `%` and `_` included.
            q.push(" AND strpos(lower(name), lower(")
                .push_bind(pg_text(search))
                .push(")) > 0");
        }
        if let Some(cursor) = &after {
            q.push(" AND (created, id) < (")
                .push_bind(cursor_instant(cursor)?)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        q.push(" ORDER BY created DESC, id DESC LIMIT ")
            .push_bind(size as i64 + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
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
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn child_runs(&self, flow_run_id: Uuid) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE flow_run_id = $1 AND id <> $1
             UNION ALL
             SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({SUBFLOWS}) AND flow_run_id IS DISTINCT FROM $1
             ORDER BY created, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(flow_run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn states(&self, flow_run_id: Uuid) -> Result<Vec<StateRecord>, StoreError> {
        let sql = format!(
            "SELECT event_id, run_id, state, message, attempt, ts FROM run_states WHERE group_id = $1
             UNION ALL
             SELECT event_id, run_id, state, message, attempt, ts FROM run_states
                 WHERE group_id IN ({SUBFLOWS}) AND run_id = group_id
             ORDER BY ts, event_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(flow_run_id)
            .fetch_all(&self.pool)
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
        let after = page.cursor.as_deref().map(Cursor::decode).transpose()?;
        let mut q = QueryBuilder::<Postgres>::new(
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
        if let Some(cursor) = &after {
            q.push(" AND (ts, event_id) > (")
                .push_bind(cursor_instant(cursor)?)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        q.push(" ORDER BY ts, event_id LIMIT ")
            .push_bind(size as i64 + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
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
            "SELECT floor(extract(epoch FROM created - $1) * 1000000 / $2)::bigint AS bucket, state,
                    count(*) AS n
             FROM runs
             WHERE kind = 'flow' AND created >= $1 AND created < $3
             GROUP BY 1, 2",
        )
        .bind(from_micros(frame.since)?)
        .bind(frame.width)
        .bind(from_micros(frame.until)?)
        .fetch_all(&self.pool)
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
        with_retries(|| self.delete_once(cutoff, batch)).await
    }

    async fn record_reporter_drops(&self, worker: &str, dropped: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reporter_drops (worker, dropped, last_seen) VALUES ($1, $2, now())
             ON CONFLICT (worker) DO UPDATE SET
                dropped = CASE WHEN reporter_drops.dropped > 9223372036854775807 - excluded.dropped
                    THEN 9223372036854775807 ELSE reporter_drops.dropped + excluded.dropped END,
                last_seen = GREATEST(reporter_drops.last_seen, excluded.last_seen)",
        )
        .bind(pg_text(worker))
        .bind(i64::try_from(dropped).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
