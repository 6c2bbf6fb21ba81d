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
use super::postgres::INSERT_STATES;
use super::rows::from_micros;
use super::{Finished, LeaseCall, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Postgres};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
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
/// per table for the group. As there, the final events' rows are taken before the runs' (the
/// order ingestion takes them in, so a reporter delivering the same event waits for the finish
/// instead of deadlocking with it): the events are inserted first, then the runs locked in id
/// order and decided; the events of refused finishes are taken out again. The caller makes
/// sure no run appears twice.
pub(super) async fn finishes(
    conn: &mut PgConnection,
    finished: &[&Finished],
) -> Result<Vec<LeaseCall>, StoreError> {
    let mut tx = begin_write::<Postgres>(conn).await?;
    let ids: Vec<Uuid> = finished.iter().map(|f| f.run_id).collect();
    let seen_rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT now() AS now, {LEASE_COLUMNS} FROM runs WHERE id = ANY($1)"
    )))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let Some(first) = seen_rows.first() else {
        tx.rollback().await?;
        return Ok(finished.iter().map(|_| LeaseCall::NotFound).collect());
    };
    let now = from_micros(Postgres::instant(first, "now")?.timestamp_micros())?;
    let mut seen: HashMap<Uuid, LeaseRow> = HashMap::with_capacity(seen_rows.len());
    for row in &seen_rows {
        let run = lease_row::<Postgres>(row)?;
        seen.insert(run.id, run);
    }
    // The event's time: after the run's latest state. If the reporter delivered the event
    // first (and the row folded it), the lease still ends here, with the result, and the event
    // takes the server's time.
    let ts_after = |run: &LeaseRow, f: &Finished| {
        let after = if run.state_event_id == f.event_id {
            now
        } else {
            run.state_ts
        };
        next_ts(now, after).max(f.timestamp)
    };
    let mut events: Vec<(&Finished, &LeaseRow, DateTime<Utc>)> = finished
        .iter()
        .filter_map(|f| seen.get(&f.run_id).map(|run| (*f, run, ts_after(run, f))))
        .collect();
    events.sort_by_key(|(f, _, _)| f.event_id);
    let inserted: HashSet<Uuid> = sqlx::query_scalar(AssertSqlSafe(INSERT_STATES.as_str()))
        .bind(column(&events, |(f, _, _)| f.event_id))
        .bind(column(&events, |(_, run, _)| run.id))
        .bind(column(&events, |(_, run, _)| run.group()))
        .bind(column(&events, |(f, _, _)| f.state.as_str()))
        .bind(column(&events, |(f, _, _)| {
            f.message.as_deref().map(Postgres::text)
        }))
        .bind(column(&events, |(f, _, _)| i64::from(f.attempt)))
        .bind(column(&events, |(_, _, ts)| *ts))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let first_ts: HashMap<Uuid, DateTime<Utc>> =
        events.iter().map(|(f, _, ts)| (f.event_id, *ts)).collect();
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
    for f in finished {
        let decided = match locked.get(&f.run_id) {
            None => Err(LeaseCall::NotFound),
            // The same finish again (its answer was lost): done already.
            Some(run) if run.state_event_id == f.event_id && !run.held() => Err(LeaseCall::Done),
            Some(run) => check_lease(run, f.token).map(|()| run),
        };
        match decided {
            Ok(run) => {
                calls.push(LeaseCall::Done);
                accepted.push((run, *f, ts_after(run, f)));
            }
            Err(call) => {
                calls.push(call);
                if inserted.contains(&f.event_id) {
                    refused.push(f.event_id);
                }
            }
        }
    }
    if !refused.is_empty() {
        sqlx::query("DELETE FROM run_states WHERE event_id = ANY($1)")
            .bind(&refused)
            .execute(&mut *tx)
            .await?;
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
    if !moved.is_empty() {
        sqlx::query(
            "UPDATE run_states SET ts = u.ts FROM UNNEST($1::uuid[], $2::timestamptz[]) \
             AS u(event_id, ts) WHERE run_states.event_id = u.event_id",
        )
        .bind(column(&moved, |(id, _)| *id))
        .bind(column(&moved, |(_, ts)| *ts))
        .execute(&mut *tx)
        .await?;
    }
    if !accepted.is_empty() {
        // The server's verdict: a client event coming later never moves it (see `store::rows`).
        sqlx::query(
            "UPDATE runs SET state = u.state, state_message = u.message, state_ts = u.ts, \
             state_event_id = u.event_id, attempt = u.attempt, ended = u.ended, \
             server_state = TRUE, lease_expires = NULL, lease_worker = NULL \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[], \
                         $6::int8[], $7::timestamptz[]) \
             AS u(id, state, message, ts, event_id, attempt, ended) WHERE runs.id = u.id",
        )
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
        .execute(&mut *tx)
        .await?;
    }
    let results: Vec<(Uuid, &String)> = accepted
        .iter()
        .filter_map(|(run, f, _)| f.result.as_ref().map(|r| (run.id, r)))
        .collect();
    if !results.is_empty() {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO run_results (run_id, result, bytes, created) \
             SELECT u.run_id, u.result, u.bytes, $4 \
             FROM UNNEST($1::uuid[], $2::bytea[], $3::int8[]) AS u(run_id, result, bytes)\
             {RESULT_UPSERT}"
        )))
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

/// One column of rows, as the array bound for it.
fn column<R, T>(rows: &[R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}
