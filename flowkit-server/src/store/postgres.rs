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

use super::dialect::Dialect;
use super::leases;
use super::pg_batch::{self, GroupWriter};
use super::queries::{
    self, BulkWrite, LOG_COLUMNS, Maintenance, NEW_EVENTS_ONLY, RUN_COLUMNS, STATE_COLUMNS, Written,
};
use super::rows::{self, LogRow, Plan, RunRow, StateRow, from_micros};
use super::{ClaimOrder, Finished, IngestOutcome, LeaseCall, NewRun, StoreError};
use chrono::{DateTime, Utc};
use flowkit_wire::api::workers::ClaimedRun;
use flowkit_wire::event::Event;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Connections per server process.
const POOL_SIZE: u32 = 10;
/// Longest wait for a pooled connection (a new one is opened, and retried while refused,
/// within it): during a database outage requests fail fast with 503 `unavailable` instead of
/// hanging for sqlx's default 30 s.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a starting server waits for its database to accept connections.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// Attempts of a transaction that hit a deadlock or serialization failure.
const ATTEMPTS: u32 = 5;

/// The PostgreSQL store. See the module documentation.
pub(crate) struct PgStore {
    pool: PgPool,
    /// Keyless triggers, written together.
    triggers: GroupWriter<NewRun, ()>,
    /// Finishes, written together.
    finishes: GroupWriter<Finished, LeaseCall>,
    /// Claims (and whether to record their workers), written together.
    claims: GroupWriter<(ClaimOrder, bool), Vec<ClaimedRun>>,
    /// This store's name in the payload of the `NOTIFY` of its triggers: its own listener
    /// skips them (the trigger route wakes this process's claims itself).
    replica: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`) and applies the migrations
    /// (sqlx serializes concurrent migrators with an advisory lock, so several servers may start
    /// at once).
    pub(crate) async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy(url)?;
        // At start the database may still be coming up: keep trying for STARTUP_WAIT (the
        // short acquire timeout is for requests).
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        loop {
            match pool.acquire().await {
                Ok(_) => break,
                Err(sqlx::Error::PoolTimedOut) if tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let replica = Uuid::now_v7().to_string();
        let triggers = {
            let pool = pool.clone();
            let replica = replica.clone();
            GroupWriter::spawn(move |runs| write_triggers(pool.clone(), replica.clone(), runs))
        };
        let finishes = {
            let pool = pool.clone();
            GroupWriter::spawn(move |finished| write_finishes(pool.clone(), finished))
        };
        let claims = {
            let pool = pool.clone();
            GroupWriter::spawn(move |orders| write_claims(pool.clone(), orders))
        };
        Ok(PgStore {
            pool,
            triggers,
            finishes,
            claims,
            replica,
        })
    }

    /// Creates the run of a keyless trigger ([`NewRun::batchable`]) with others waiting at the
    /// same moment, in one statement: see [`super::Backend::trigger`].
    pub(crate) async fn trigger(&self, run: NewRun) -> Result<(), StoreError> {
        self.triggers.write(run).await
    }

    /// A worker's claim, with the others waiting at the same moment: see
    /// [`super::Backend::claim`] (`touch`: whether to record the worker).
    pub(crate) async fn claim(
        &self,
        order: ClaimOrder,
        touch: bool,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        self.claims.write((order, touch)).await
    }

    /// A worker's finish, written with others waiting at the same moment: see
    /// [`super::Backend::finish`].
    pub(crate) async fn finish(&self, finished: Finished) -> Result<LeaseCall, StoreError> {
        self.finishes.write(finished).await
    }

    /// The connections the shared queries run on.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// See [`super::Backend::ingest`]: one transaction, retried if it collided with another.
    pub(crate) async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let plan = &Plan::new(vec![events])?;
        let outcomes = with_retries(move || async move {
            queries::apply::<Postgres>(&mut *self.pool.acquire().await?, plan).await
        })
        .await?;
        Ok(outcomes.into_iter().next().unwrap_or_default())
    }

    /// Runs a write besides ingestion, retried if it collided with another transaction.
    pub(crate) async fn maintain(&self, task: Maintenance) -> Result<Written, StoreError> {
        let task = &task;
        with_retries(move || async move {
            queries::maintain::<Postgres>(&mut *self.pool.acquire().await?, task).await
        })
        .await
    }

    /// Wakes `wake` on every `NOTIFY flowkit_runs` (a trigger, retry, release or re-queue on
    /// any replica), reconnecting after errors, until the pool closes. Holds one connection of
    /// the pool.
    pub(crate) fn listen_runs(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        let replica = self.replica.clone();
        tokio::spawn(async move {
            while !pool.is_closed() {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen("flowkit_runs").await {
                        Ok(()) => loop {
                            match listener.try_recv().await {
                                // Triggers of this process woke its claims already.
                                Ok(Some(n)) if n.payload() == replica => {}
                                // `None`: the connection was lost and is re-established on the
                                // next call; a notification may have been missed, so wake anyway.
                                Ok(_) => wake.notify_waiters(),
                                Err(e) => {
                                    if !pool.is_closed() {
                                        tracing::warn!("LISTEN flowkit_runs failed: {e}");
                                    }
                                    break;
                                }
                            }
                        },
                        Err(e) => tracing::warn!("LISTEN flowkit_runs failed: {e}"),
                    },
                    Err(e) if !pool.is_closed() => {
                        tracing::warn!("LISTEN flowkit_runs cannot connect: {e}")
                    }
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// Closes the pool.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Writes keyless triggers with one statement; if that fails, each on its own, so each gets
/// its own answer. `replica` names this store in the `NOTIFY`.
async fn write_triggers(
    pool: PgPool,
    replica: String,
    runs: Vec<NewRun>,
) -> Vec<Result<(), StoreError>> {
    let all: Vec<&NewRun> = runs.iter().collect();
    match write_triggered(&pool, &replica, &all).await {
        Ok(()) => runs.iter().map(|_| Ok(())).collect(),
        Err(e) if runs.len() == 1 => vec![Err(e)],
        Err(_) => {
            let mut answers = Vec::with_capacity(runs.len());
            for run in &runs {
                answers.push(write_triggered(&pool, &replica, &[run]).await);
            }
            answers
        }
    }
}

/// [`insert_triggered`] on a connection of `pool`.
async fn write_triggered(pool: &PgPool, replica: &str, runs: &[&NewRun]) -> Result<(), StoreError> {
    insert_triggered(&mut *pool.acquire().await?, replica, runs).await
}

/// Claims for a group of orders in one transaction ([`leases::claim`], retried if it collided
/// with another); if that fails, each on its own, so each gets its own answer.
async fn write_claims(
    pool: PgPool,
    orders: Vec<(ClaimOrder, bool)>,
) -> Vec<Result<Vec<ClaimedRun>, StoreError>> {
    let all: Vec<(&ClaimOrder, bool)> = orders.iter().map(|(o, touch)| (o, *touch)).collect();
    match claim_group(&pool, &all).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(e) if all.len() == 1 => vec![Err(e)],
        Err(_) => {
            let mut answers = Vec::with_capacity(all.len());
            for one in &all {
                answers.push(
                    claim_group(&pool, std::slice::from_ref(one))
                        .await
                        .map(|mut a| a.pop().unwrap_or_default()),
                );
            }
            answers
        }
    }
}

/// [`leases::claim`] for `group` on a connection of `pool`, retried if it collided with another
/// transaction.
async fn claim_group(
    pool: &PgPool,
    group: &[(&ClaimOrder, bool)],
) -> Result<Vec<Vec<ClaimedRun>>, StoreError> {
    with_retries(move || async move {
        leases::claim::<Postgres>(&mut *pool.acquire().await?, group).await
    })
    .await
}

/// Writes finishes of distinct runs in one transaction ([`pg_batch::finishes`], retried if it
/// collided with another); finishes of one run twice, or a group that failed, one at a time
/// as [`super::leases::finish`] writes them.
async fn write_finishes(
    pool: PgPool,
    finished: Vec<Finished>,
) -> Vec<Result<LeaseCall, StoreError>> {
    let distinct = finished
        .iter()
        .map(|f| f.run_id)
        .collect::<HashSet<_>>()
        .len();
    if finished.len() > 1 && distinct == finished.len() {
        let all: Vec<&Finished> = finished.iter().collect();
        let all = &all;
        let pool = &pool;
        if let Ok(calls) = with_retries(move || async move {
            pg_batch::finishes(&mut *pool.acquire().await?, all).await
        })
        .await
        {
            return calls.into_iter().map(Ok).collect();
        }
    }
    let mut answers = Vec::with_capacity(finished.len());
    for f in finished {
        let task = Maintenance::Finish(Box::new(f));
        let task = &task;
        let pool = &pool;
        let written = with_retries(move || async move {
            queries::maintain::<Postgres>(&mut *pool.acquire().await?, task).await
        })
        .await;
        answers.push(match written {
            Ok(Written::Lease(call)) => Ok(call),
            Ok(_) => Err(rows::corrupt("a finish answered something else".into())),
            Err(e) => Err(e),
        });
    }
    answers
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

/// Text as PostgreSQL can store it.
fn pg_text(text: &str) -> String {
    Postgres::text(text)
}

fn pg_opt(text: &Option<String>) -> Option<String> {
    text.as_deref().map(pg_text)
}

/// One column of a batch, as the array bound for it.
fn column<R, T>(rows: &[R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

/// A column of stored instants, as PostgreSQL's timestamptz.
fn instants<R>(rows: &[R], value: impl Fn(&R) -> i64) -> Result<Vec<DateTime<Utc>>, StoreError> {
    rows.iter().map(|r| from_micros(value(r))).collect()
}

/// A column of nullable stored instants.
fn opt_instants<R>(
    rows: &[R],
    value: impl Fn(&R) -> Option<i64>,
) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
    rows.iter()
        .map(|r| value(r).map(from_micros).transpose())
        .collect()
}

/// The insert of a batch of state rows.
pub(super) static INSERT_STATES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO run_states ({STATE_COLUMNS})
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                              $6::int8[], $7::timestamptz[]){NEW_EVENTS_ONLY}"
    )
});

/// The insert of a batch of log rows (fields travel as text, stored as json).
static INSERT_LOGS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO logs ({LOG_COLUMNS})
         SELECT u.event_id, u.run_id, u.flow_run_id, u.group_id, u.run_name, u.level, u.message,
                u.fields::json, u.attempt, u.ts
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int2[],
                     $7::text[], $8::text[], $9::int8[], $10::timestamptz[])
             AS u({LOG_COLUMNS}){NEW_EVENTS_ONLY}"
    )
});

/// The rows of a batch of runs as [`RUN_COLUMNS`] lists them, from the arrays of
/// [`RUN_ARRAYS`] expanded as `u`. Tags and upstream ids travel as JSON text (an array of arrays
/// of varying length is not something UNNEST can take) and become arrays here.
const RUN_SELECT: &str = "u.id, u.kind, u.name, u.parent_run_id, u.flow_run_id, u.state, \
    u.state_message, u.state_ts, u.state_event_id, u.attempt, u.created, u.started, u.ended, \
    u.has_details, u.task_key, \
    ARRAY(SELECT t.value FROM json_array_elements_text(u.tags::json) WITH ORDINALITY AS t(value, n) \
          ORDER BY t.n), \
    u.parameters::json, \
    ARRAY(SELECT t.value::uuid FROM json_array_elements_text(u.upstream::json) WITH ORDINALITY AS t(value, n) \
          ORDER BY t.n), \
    u.cache_key, u.deployment, u.version, u.worker, u.lease_token, u.received";

/// The arrays [`bind_runs`] binds, as `$1` to `$24`.
const RUN_ARRAYS: &str = "$1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], \
    $6::text[], $7::text[], $8::timestamptz[], $9::uuid[], $10::int8[], $11::timestamptz[], \
    $12::timestamptz[], $13::timestamptz[], $14::bool[], $15::text[], $16::text[], $17::text[], \
    $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::int8[], \
    $24::timestamptz[]";

/// The upsert of a batch of runs: arrays in, one row per run out, merged with
/// [`queries::merge_runs`].
static UPSERT_RUNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO runs ({RUN_COLUMNS}) SELECT {RUN_SELECT} FROM UNNEST({RUN_ARRAYS}) \
         AS u({RUN_COLUMNS}){}",
        queries::merge_runs::<Postgres>()
    )
});

/// Keyless triggers in one statement: their runs' rows ([`bind_runs`], `$1` to `$24`, then the
/// columns only a trigger sets, `$25` to `$28`), their first state events (`$29` to `$35`),
/// and the `NOTIFY` that wakes the claims of every other replica (its payload, `$36`, names
/// this one). The run and event ids are new (made by this server for the trigger): nothing to
/// merge with.
static INSERT_TRIGGERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH r AS (INSERT INTO runs ({RUN_COLUMNS}, scheduled_for, version_pinned, \
         max_attempts, created_by) SELECT {RUN_SELECT}, u.scheduled_for, u.version_pinned, \
         u.max_attempts, u.created_by FROM UNNEST({RUN_ARRAYS}, $25::timestamptz[], \
         $26::bool[], $27::int8[], $28::text[]) AS u({RUN_COLUMNS}, scheduled_for, \
         version_pinned, max_attempts, created_by)), \
         s AS (INSERT INTO run_states ({STATE_COLUMNS}) \
         SELECT * FROM UNNEST($29::uuid[], $30::uuid[], $31::uuid[], $32::text[], $33::text[], \
                              $34::int8[], $35::timestamptz[])) \
         SELECT pg_notify('flowkit_runs', $36)"
    )
});

/// An insert of events whose arrays are bound, returning the event ids it stored.
type InsertEvents = sqlx::query::QueryScalar<'static, Postgres, Uuid, PgArguments>;

/// Runs `insert` and adds the event ids it stored to `stored`.
async fn insert_events(
    conn: &mut PgConnection,
    insert: InsertEvents,
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    stored.extend(insert.fetch_all(conn).await?);
    Ok(())
}

/// Bulk ingestion on PostgreSQL: each column of a batch bound as one array, the rows expanded
/// with `UNNEST`, one statement per table per batch.
impl BulkWrite for Postgres {
    async fn insert_events(
        conn: &mut PgConnection,
        plan: &Plan,
        stored: &mut HashSet<Uuid>,
    ) -> Result<(), StoreError> {
        // Each table keys its own rows (`ON CONFLICT DO NOTHING RETURNING`, exact under
        // concurrent transactions); this lookup covers the other one. (Two transactions
        // committing the same id as both kinds at the same instant could still both store it:
        // a client that reuses an id for another event at the same moment is the only one to
        // see it.)
        let ids: Vec<Uuid> = plan
            .states
            .iter()
            .map(|r| r.event_id)
            .chain(plan.logs.iter().map(|r| r.event_id))
            .collect();
        let found: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM run_states WHERE event_id = ANY($1) \
             UNION ALL SELECT event_id FROM logs WHERE event_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let (states, logs) = plan.unseen(&found);
        if !states.is_empty() {
            insert_states(conn, &states, stored).await?;
        }
        if !logs.is_empty() {
            insert_logs(conn, &logs, stored).await?;
        }
        Ok(())
    }

    async fn upsert_runs(conn: &mut PgConnection, runs: &[RunRow]) -> Result<(), StoreError> {
        upsert_runs(conn, runs).await
    }
}

/// Inserts state rows, skipping stored event ids; adds the ids it stored to `stored`.
async fn insert_states(
    conn: &mut PgConnection,
    rows: &[&StateRow],
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    let insert = sqlx::query_scalar(AssertSqlSafe(INSERT_STATES.as_str()))
        .bind(column(rows, |r| r.event_id))
        .bind(column(rows, |r| r.run_id))
        .bind(column(rows, |r| r.group_id))
        .bind(column(rows, |r| r.state.as_str()))
        .bind(column(rows, |r| pg_opt(&r.message)))
        .bind(column(rows, |r| i64::from(r.attempt)))
        .bind(instants(rows, |r| r.ts)?);
    insert_events(conn, insert, stored).await
}

/// Inserts log rows, skipping stored event ids; adds the ids it stored to `stored`.
async fn insert_logs(
    conn: &mut PgConnection,
    rows: &[&LogRow],
    stored: &mut HashSet<Uuid>,
) -> Result<(), StoreError> {
    let insert = sqlx::query_scalar(AssertSqlSafe(INSERT_LOGS.as_str()))
        .bind(column(rows, |r| r.event_id))
        .bind(column(rows, |r| r.run_id))
        .bind(column(rows, |r| r.flow_run_id))
        .bind(column(rows, |r| r.group_id))
        .bind(column(rows, |r| pg_text(&r.run_name)))
        .bind(column(rows, |r| rows::level_number(r.level)))
        .bind(column(rows, |r| pg_text(&r.message)))
        .bind(column(rows, |r| r.fields.clone()))
        .bind(column(rows, |r| i64::from(r.attempt)))
        .bind(instants(rows, |r| r.ts)?);
    insert_events(conn, insert, stored).await
}

/// Upserts runs with [`queries::merge_runs`].
async fn upsert_runs(conn: &mut PgConnection, runs: &[RunRow]) -> Result<(), StoreError> {
    bind_runs(sqlx::query(AssertSqlSafe(UPSERT_RUNS.as_str())), runs)?
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A statement of rows of runs, with their columns bound as `$1` to `$24` ([`RUN_ARRAYS`]).
type RunsStatement = sqlx::query::Query<'static, Postgres, PgArguments>;

/// Binds the columns of `runs` to `q` as [`RUN_ARRAYS`] lists them.
fn bind_runs(q: RunsStatement, runs: &[RunRow]) -> Result<RunsStatement, StoreError> {
    let no_details = rows::DetailsRow::default();
    let details: Vec<&rows::DetailsRow> = runs
        .iter()
        .map(|r| r.details.as_ref().unwrap_or(&no_details))
        .collect();
    // NUL-free tags, as JSON text.
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
    Ok(q.bind(column(runs, |r| r.id))
        .bind(column(runs, |r| r.kind.as_str()))
        .bind(column(runs, |r| pg_text(&r.name)))
        .bind(column(runs, |r| r.parent_run_id))
        .bind(column(runs, |r| r.flow_run_id))
        .bind(column(runs, |r| r.state.as_str()))
        .bind(column(runs, |r| pg_opt(&r.state_message)))
        .bind(instants(runs, |r| r.state_ts)?)
        .bind(column(runs, |r| r.state_event_id))
        .bind(column(runs, |r| i64::from(r.attempt)))
        .bind(instants(runs, |r| r.created)?)
        .bind(opt_instants(runs, |r| r.started)?)
        .bind(opt_instants(runs, |r| r.ended)?)
        .bind(column(runs, |r| r.details.is_some()))
        .bind(column(&details, |d| pg_text(&d.task_key)))
        .bind(tags)
        .bind(column(&details, |d| d.parameters.clone()))
        .bind(upstream)
        .bind(column(&details, |d| pg_opt(&d.cache_key)))
        .bind(column(&details, |d| pg_opt(&d.deployment)))
        .bind(column(&details, |d| pg_opt(&d.version)))
        .bind(column(&details, |d| pg_opt(&d.worker)))
        .bind(column(runs, |r| r.lease_token))
        .bind(instants(runs, |r| r.received)?))
}

/// Creates the runs of keyless triggers with [`INSERT_TRIGGERED`]: one statement, so one
/// transaction, whatever their number.
async fn insert_triggered(
    conn: &mut PgConnection,
    replica: &str,
    new: &[&NewRun],
) -> Result<(), StoreError> {
    let events: Vec<Event> = new.iter().map(|run| run.event.clone()).collect();
    let plan = Plan::new(vec![events])?;
    let all: HashSet<Uuid> = plan.states.iter().map(|r| r.event_id).collect();
    let runs = plan.runs(&all);
    let by_id: HashMap<Uuid, &NewRun> = new.iter().map(|run| (run.event.run_id, *run)).collect();
    let trigger = |r: &RunRow| by_id.get(&r.id).copied();
    let mut scheduled_for = Vec::with_capacity(runs.len());
    let mut pinned = Vec::with_capacity(runs.len());
    let mut max_attempts = Vec::with_capacity(runs.len());
    let mut created_by = Vec::with_capacity(runs.len());
    for run in runs.iter() {
        let new = trigger(run).ok_or_else(|| {
            rows::corrupt(format!("run {} is not one of the triggers written", run.id))
        })?;
        scheduled_for.push(new.scheduled_for);
        pinned.push(new.version_pinned);
        max_attempts.push(i64::from(new.max_attempts.max(1)));
        created_by.push(new.created_by.as_deref().map(pg_text));
    }
    let states = &plan.states;
    bind_runs(sqlx::query(AssertSqlSafe(INSERT_TRIGGERED.as_str())), &runs)?
        .bind(scheduled_for)
        .bind(pinned)
        .bind(max_attempts)
        .bind(created_by)
        .bind(column(states, |r| r.event_id))
        .bind(column(states, |r| r.run_id))
        .bind(column(states, |r| r.group_id))
        .bind(column(states, |r| r.state.as_str()))
        .bind(column(states, |r| pg_opt(&r.message)))
        .bind(column(states, |r| i64::from(r.attempt)))
        .bind(instants(states, |r| r.ts)?)
        .bind(replica)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
