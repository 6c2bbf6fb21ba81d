//! Writes of the PostgreSQL store done for many requests at once, as the SQLite writer groups
//! them (`store::sqlite_batch`): the keyless triggers, the claims and the finishes that wait
//! at the same moment are written together, with a few statements over arrays (`UNNEST`) or
//! multi-row `VALUES` for the whole group instead of several round trips and a transaction
//! each (claims: see `store::leases::claim`). Each answers what the one-at-a-time write would
//! have.
//!
//! A [`GroupWriter`] queues the requests (at most [`QUEUE`]) and writes what waits together
//! (at most [`GROUP`] requests) with at most [`WRITERS`] groups in flight at once.

use super::dialect::{Dialect, begin_write};
use super::leases::{LEASE_COLUMNS, LeaseRow, RESULT_UPSERT, check_lease, lease_row, next_ts};
use super::rows::from_micros;
use super::{Finished, LeaseCall, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Requests waiting for a group writer, at most (a request beyond waits for room).
pub(super) const QUEUE: usize = 1024;
/// Requests one group writes, at most.
pub(super) const GROUP: usize = 256;
/// Groups of one writer in flight at once.
pub(super) const WRITERS: usize = 2;

/// A request and where its answer goes.
type Order<T, R> = (T, oneshot::Sender<Result<R, StoreError>>);

/// Writes the requests of type `T` that wait at the same moment together; see the module
/// documentation.
pub(super) struct GroupWriter<T, R> {
    queue: mpsc::Sender<Order<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> GroupWriter<T, R> {
    /// Starts the writer: `write` writes a group and answers each of its requests, in order
    /// (one result per request). It stops when the writer is dropped.
    pub(super) fn spawn<W, F>(write: W) -> GroupWriter<T, R>
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<Result<R, StoreError>>> + Send + 'static,
    {
        let (queue, mut waiting) = mpsc::channel::<Order<T, R>>(QUEUE);
        tokio::spawn(async move {
            let writers = Arc::new(Semaphore::new(WRITERS));
            while let Some(first) = waiting.recv().await {
                let Ok(permit) = Arc::clone(&writers).acquire_owned().await else {
                    return;
                };
                // Gathered once a writer is free: what queued while all were busy goes together.
                let mut group = vec![first];
                while group.len() < GROUP {
                    match waiting.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<T>, Vec<_>) = group.into_iter().unzip();
                let written = write(requests);
                tokio::spawn(async move {
                    for (reply, result) in replies.into_iter().zip(written.await) {
                        let _ = reply.send(result);
                    }
                    drop(permit);
                });
            }
        });
        GroupWriter { queue }
    }

    /// Writes `request` with the others waiting: its answer.
    pub(super) async fn write(&self, request: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Commit("the store's group writer has stopped".into());
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Finishes of distinct runs, in one transaction: each decided as [`super::leases::finish`]
/// decides it (unknown run, the same finish again, a stale token), written with one statement
/// per step for the group. As there, the final events' rows are taken before the runs' (the
/// order ingestion takes them in, so a reporter delivering the same event waits for the finish
/// instead of deadlocking with it): the events are inserted first (with their timestamps
/// decided from the runs as they are read in the same statement), then the runs locked in id
/// order and decided; then one statement takes the events of refused finishes out again, moves
/// those whose run changed meanwhile, and writes the runs and results. The caller makes sure
/// no run appears twice.
pub(super) async fn finishes(
    conn: &mut PgConnection,
    finished: &[&Finished],
) -> Result<Vec<LeaseCall>, StoreError> {
    let mut tx = begin_write::<Postgres>(conn).await?;
    let ids: Vec<Uuid> = finished.iter().map(|f| f.run_id).collect();
    // A client timestamp as stored (microseconds, truncated as the binding truncates it).
    let stored = |at: DateTime<Utc>| from_micros(at.timestamp_micros());
    let timestamps = finished
        .iter()
        .map(|f| stored(f.timestamp))
        .collect::<Result<Vec<_>, _>>()?;
    let first: Vec<(Uuid, DateTime<Utc>, bool, DateTime<Utc>)> =
        sqlx::query_as(AssertSqlSafe(INSERT_FINAL_EVENTS))
            .bind(column(finished, |f| f.event_id))
            .bind(&ids)
            .bind(column(finished, |f| f.state.as_str()))
            .bind(column(finished, |f| {
                f.message.as_deref().map(Postgres::text)
            }))
            .bind(column(finished, |f| i64::from(f.attempt)))
            .bind(&timestamps)
            .fetch_all(&mut *tx)
            .await?;
    let Some(&(_, _, _, now)) = first.first() else {
        // None of the runs exists.
        tx.rollback().await?;
        return Ok(finished.iter().map(|_| LeaseCall::NotFound).collect());
    };
    let now = from_micros(now.timestamp_micros())?;
    // The event's time: after the run's latest state. If the reporter delivered the event
    // first (and the row folded it), the lease still ends here, with the result, and the event
    // takes the server's time. (The same rule as `INSERT_FINAL_EVENTS` applies in SQL.)
    let ts_after = |run: &LeaseRow, f: &Finished, at: DateTime<Utc>| {
        let after = if run.state_event_id == f.event_id {
            now
        } else {
            run.state_ts
        };
        next_ts(now, after).max(at)
    };
    let inserted: HashSet<Uuid> = first
        .iter()
        .filter(|(_, _, inserted, _)| *inserted)
        .map(|(id, _, _, _)| *id)
        .collect();
    let first_ts: HashMap<Uuid, DateTime<Utc>> =
        first.iter().map(|(id, ts, _, _)| (*id, *ts)).collect();
    let mut locked: HashMap<Uuid, LeaseRow> = HashMap::with_capacity(finished.len());
    for row in sqlx::query(AssertSqlSafe(format!(
        "SELECT {LEASE_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    )))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    {
        let run = lease_row::<Postgres>(&row)?;
        locked.insert(run.id, run);
    }
    let mut calls = Vec::with_capacity(finished.len());
    // The accepted finishes: the run, the finish, the final state's timestamp.
    let mut accepted: Vec<(&LeaseRow, &Finished, DateTime<Utc>)> = Vec::new();
    // Events inserted above for finishes refused here.
    let mut refused: Vec<Uuid> = Vec::new();
    for (f, at) in finished.iter().zip(&timestamps) {
        let decided = match locked.get(&f.run_id) {
            None => Err(LeaseCall::NotFound),
            // The same finish again (its answer was lost): done already.
            Some(run) if run.state_event_id == f.event_id && !run.held() => Err(LeaseCall::Done),
            Some(run) => check_lease(run, f.token).map(|()| run),
        };
        match decided {
            Ok(run) => {
                calls.push(LeaseCall::Done);
                accepted.push((run, *f, ts_after(run, f, *at)));
            }
            Err(call) => {
                calls.push(call);
                if inserted.contains(&f.event_id) {
                    refused.push(f.event_id);
                }
            }
        }
    }
    // The row as locked decides the time (it may have changed since it was read): a stored
    // event is moved to it unless it was inserted with it.
    let moved: Vec<(Uuid, DateTime<Utc>)> = accepted
        .iter()
        .filter(|(_, f, ts)| {
            !inserted.contains(&f.event_id) || first_ts.get(&f.event_id) != Some(ts)
        })
        .map(|(_, f, ts)| (f.event_id, *ts))
        .collect();
    let results: Vec<(Uuid, &String)> = accepted
        .iter()
        .filter_map(|(run, f, _)| f.result.as_ref().map(|r| (run.id, r)))
        .collect();
    if !refused.is_empty() || !accepted.is_empty() {
        sqlx::query(AssertSqlSafe(WRITE_FINISHES.as_str()))
            .bind(&refused)
            .bind(column(&moved, |(id, _)| *id))
            .bind(column(&moved, |(_, ts)| *ts))
            .bind(column(&accepted, |(run, _, _)| run.id))
            .bind(column(&accepted, |(_, f, _)| f.state.as_str()))
            .bind(column(&accepted, |(_, f, _)| {
                f.message.as_deref().map(Postgres::text)
            }))
            .bind(column(&accepted, |(_, _, ts)| *ts))
            .bind(column(&accepted, |(_, f, _)| f.event_id))
            .bind(column(&accepted, |(_, f, _)| i64::from(f.attempt)))
            .bind(column(&accepted, |(_, f, ts)| {
                f.state.is_final().then_some(*ts)
            }))
            .bind(column(&results, |(id, _)| *id))
            .bind(column(&results, |(_, r)| r.as_bytes().to_vec()))
            .bind(column(&results, |(_, r)| {
                i64::try_from(r.len()).unwrap_or(i64::MAX)
            }))
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(calls)
}

/// The final state events of a group of finishes (`$1` to `$6`: event id, run id, state,
/// message, attempt, the client's timestamp), inserted for the runs that exist with the time
/// [`super::leases::finish`] gives them (after the run's latest state as read here, with the
/// database's clock, and not before the client's timestamp), in event id order: one row per
/// event of an existing run, with its time, whether it was inserted (not stored before), and
/// the database's clock.
const INSERT_FINAL_EVENTS: &str = "WITH n AS (SELECT now() AS now), \
     e AS (SELECT f.event_id, r.id AS run_id, COALESCE(r.flow_run_id, r.id) AS group_id, \
       f.state, f.message, f.attempt, \
       GREATEST(CASE WHEN n.now > a.after THEN n.now \
                ELSE a.after + interval '1 microsecond' END, f.at) AS ts \
       FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], \
                   $6::timestamptz[]) AS f(event_id, run_id, state, message, attempt, at) \
       JOIN runs AS r ON r.id = f.run_id CROSS JOIN n \
       CROSS JOIN LATERAL (SELECT CASE WHEN r.state_event_id = f.event_id THEN n.now \
                           ELSE r.state_ts END AS after) AS a), \
     i AS (INSERT INTO run_states (event_id, run_id, group_id, state, message, attempt, ts) \
       SELECT event_id, run_id, group_id, state, message, attempt, ts FROM e ORDER BY event_id \
       ON CONFLICT (event_id) DO NOTHING RETURNING event_id) \
     SELECT e.event_id, e.ts, i.event_id IS NOT NULL AS inserted, n.now \
     FROM e LEFT JOIN i ON i.event_id = e.event_id CROSS JOIN n";

/// The writes of a group of finishes once decided, in one statement: the events of refused
/// finishes deleted (`$1`), events moved to their run's time as locked (`$2`, `$3`), the
/// accepted runs given their final state with the server's verdict and their lease ended
/// (`$4` to `$10`: a client event coming later never moves it, see `store::rows`), and their
/// results stored (`$11` to `$13`, created at `$14`).
static WRITE_FINISHES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS (DELETE FROM run_states WHERE event_id = ANY($1::uuid[])), \
         m AS (UPDATE run_states SET ts = u.ts FROM UNNEST($2::uuid[], $3::timestamptz[]) \
               AS u(event_id, ts) WHERE run_states.event_id = u.event_id), \
         r AS (UPDATE runs SET state = u.state, state_message = u.message, state_ts = u.ts, \
               state_event_id = u.event_id, attempt = u.attempt, ended = u.ended, \
               server_state = TRUE, lease_expires = NULL, lease_worker = NULL \
               FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::uuid[], \
                           $9::int8[], $10::timestamptz[]) \
               AS u(id, state, message, ts, event_id, attempt, ended) WHERE runs.id = u.id), \
         x AS (INSERT INTO run_results (run_id, result, bytes, created) \
               SELECT u.run_id, u.result, u.bytes, $14::timestamptz \
               FROM UNNEST($11::uuid[], $12::bytea[], $13::int8[]) AS u(run_id, result, bytes)\
               {RESULT_UPSERT}) \
         SELECT 1"
    )
});

/// One column of rows, as the array bound for it.
fn column<R, T>(rows: &[R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}
