//! Writes of the SQLite writer done for many requests at once: what a group commit queued
//! together is written with a few multi-row statements instead of a few statements per
//! request (every statement is a round trip to the connection's thread). Each runs in a
//! savepoint of the group's transaction and answers what the one-at-a-time write would have.
//!
//! SQLite only: the `WITH v (…) AS (VALUES …) UPDATE … FROM v` form binds untyped values, which
//! PostgreSQL would not accept; its writes run one at a time on a pool, concurrently.

use super::dialect::begin_write;
use super::leases::{
    LEASE_COLUMNS, LeaseRow, RESULT_UPSERT, check_lease, db_now, lease_row, next_ts,
};
use super::rows::{self, Plan};
use super::sqlite_ingest::Ingester;
use super::{Finished, LeaseCall, NewRun, StoreError};
use flowkit_wire::event::Event;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use std::collections::HashMap;
use uuid::Uuid;

/// Rows per multi-row statement.
const CHUNK: usize = 256;

/// Keyless triggers: their first events as one plan, written by the writer's [`Ingester`]
/// with ingestion's prepared statements, then the columns only a trigger sets in one
/// `UPDATE … FROM` per chunk. A failure fails them all (the API validated each; what fails here
/// is the database).
pub(super) async fn triggers(
    conn: &mut SqliteConnection,
    ingester: &Ingester,
    runs: &[&NewRun],
) -> Result<(), StoreError> {
    let mut tx = begin_write::<Sqlite>(conn).await?;
    let events: Vec<Event> = runs.iter().map(|run| run.event.clone()).collect();
    let plan = std::sync::Arc::new(Plan::new(vec![events])?);
    ingester.write(&mut tx, std::slice::from_ref(&plan)).await?;
    for chunk in runs.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "WITH v (id, scheduled_for, version_pinned, max_attempts, created_by) AS (VALUES ",
        );
        for (i, run) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .push_bind(run.event.run_id)
                .push(", ")
                .push_bind(run.scheduled_for.map(rows::micros))
                .push(", ")
                .push_bind(i64::from(run.version_pinned))
                .push(", ")
                .push_bind(i64::from(run.max_attempts.max(1)))
                .push(", ")
                .push_bind(run.created_by.clone())
                .push(")");
        }
        q.push(
            ") UPDATE runs SET scheduled_for = v.scheduled_for, version_pinned = v.version_pinned, \
             max_attempts = v.max_attempts, created_by = v.created_by FROM v WHERE runs.id = v.id",
        );
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Finishes of distinct runs: each decided as [`super::leases::finish`] decides it (unknown
/// run, the same finish again, a stale token), then the accepted ones written with one insert
/// of their final states, one `UPDATE … FROM` of their runs (the lease ends) and one insert of
/// their results. The caller makes sure no run appears twice.
pub(super) async fn finishes(
    conn: &mut SqliteConnection,
    finished: &[&Finished],
) -> Result<Vec<LeaseCall>, StoreError> {
    let mut tx = begin_write::<Sqlite>(conn).await?;
    let now = db_now::<Sqlite>(&mut tx).await?;
    let mut runs: HashMap<Uuid, LeaseRow> = HashMap::with_capacity(finished.len());
    for chunk in finished.chunks(CHUNK) {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("SELECT {LEASE_COLUMNS} FROM runs WHERE id IN ("));
        let mut ids = q.separated(", ");
        for f in chunk {
            ids.push_bind(f.run_id);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *tx).await? {
            let run = lease_row::<Sqlite>(&row)?;
            runs.insert(run.id, run);
        }
    }
    let mut calls = Vec::with_capacity(finished.len());
    // The accepted finishes: the run, the finish, the final state's timestamp.
    let mut accepted = Vec::new();
    for f in finished {
        let Some(run) = runs.get(&f.run_id) else {
            calls.push(LeaseCall::NotFound);
            continue;
        };
        if run.state_event_id == f.event_id && !run.held() {
            // The same finish again (its answer was lost): done already.
            calls.push(LeaseCall::Done);
            continue;
        }
        if let Err(stale) = check_lease(run, f.token) {
            calls.push(stale);
            continue;
        }
        // The reporter may have delivered the event first: the lease still ends here.
        let after = if run.state_event_id == f.event_id {
            now
        } else {
            run.state_ts
        };
        calls.push(LeaseCall::Done);
        accepted.push((run, *f, next_ts(now, after).max(f.timestamp)));
    }
    for chunk in accepted.chunks(CHUNK) {
        // A state row the reporter stored first takes the server's timestamp.
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO run_states (event_id, run_id, group_id, state, message, attempt, ts) ",
        );
        q.push_values(chunk, |mut row, (run, f, ts)| {
            row.push_bind(f.event_id)
                .push_bind(run.id)
                .push_bind(run.group())
                .push_bind(f.state.as_str())
                .push_bind(f.message.clone())
                .push_bind(i64::from(f.attempt))
                .push_bind(rows::micros(*ts));
        });
        q.push(" ON CONFLICT (event_id) DO UPDATE SET ts = excluded.ts");
        q.build().execute(&mut *tx).await?;

        let mut q = QueryBuilder::<Sqlite>::new(
            "WITH v (id, state, message, ts, event_id, attempt, ended) AS (VALUES ",
        );
        for (i, (run, f, ts)) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .push_bind(run.id)
                .push(", ")
                .push_bind(f.state.as_str())
                .push(", ")
                .push_bind(f.message.clone())
                .push(", ")
                .push_bind(rows::micros(*ts))
                .push(", ")
                .push_bind(f.event_id)
                .push(", ")
                .push_bind(i64::from(f.attempt))
                .push(", ")
                .push_bind(f.state.is_final().then(|| rows::micros(*ts)))
                .push(")");
        }
        q.push(
            ") UPDATE runs SET state = v.state, state_message = v.message, state_ts = v.ts, \
             state_event_id = v.event_id, attempt = v.attempt, ended = v.ended, \
             server_state = TRUE, lease_expires = NULL, lease_worker = NULL \
             FROM v WHERE runs.id = v.id",
        );
        q.build().execute(&mut *tx).await?;

        let results: Vec<_> = chunk
            .iter()
            .filter_map(|(run, f, _)| f.result.as_ref().map(|r| (run.id, r)))
            .collect();
        if !results.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO run_results (run_id, result, bytes, created) ",
            );
            q.push_values(&results, |mut row, (id, result)| {
                row.push_bind(*id)
                    .push_bind(result.as_bytes().to_vec())
                    .push_bind(i64::try_from(result.len()).unwrap_or(i64::MAX))
                    .push_bind(rows::micros(now));
            });
            q.push(RESULT_UPSERT);
            q.build().execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(calls)
}
