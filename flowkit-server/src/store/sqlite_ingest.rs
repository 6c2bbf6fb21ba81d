//! Bulk ingestion on SQLite: the rows of a plan written with a few prepared multi-row
//! statements by the one writer (see `store::sqlite`).
//!
//! The writer is the only one to write the file, and each plan is written inside its write
//! transaction (`BEGIN IMMEDIATE`, which also keeps any other process out): what one lookup of
//! the plan's event ids finds in `run_states` and `logs` stays true until the inserts. So one
//! statement tells which events are new, whatever their kind (one event id is one event), and
//! the inserts need not return what they stored: every row not found is stored. (PostgreSQL,
//! with concurrent writers, asks each insert what it stored instead.)
//!
//! Statement shapes are few, so each is prepared once and kept by the connection: the lookup
//! binds a power of two of ids; event inserts come in chunks of [`EVENT_CHUNKS`] rows, the last
//! padded up with copies of its last row (which `ON CONFLICT DO NOTHING` skips); runs in chunks
//! of [`RUN_CHUNKS`] rows.

use super::queries::{BulkWrite, LOG_COLUMNS, RUN_COLUMNS, STATE_COLUMNS};
use super::rows::{self, LogRow, Plan, RunRow, StateRow};
use super::{StoreError, queries};
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{Arguments, AssertSqlSafe, Row, Sqlite};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

/// Event ids one lookup binds (each used twice: under SQLite's limit of 32 766 parameters).
const LOOKUP_CHUNK: usize = 4096;
/// Rows per multi-row insert of events, largest first; the last chunk of a batch is padded up
/// to the smallest size that holds it.
const EVENT_CHUNKS: [usize; 7] = [512, 256, 128, 64, 32, 16, 8];
/// Rows per multi-row upsert of runs, largest first (not padded: a run row is merged, not
/// skipped, when it comes again).
const RUN_CHUNKS: [usize; 4] = [256, 32, 8, 1];
/// The end of an insert of events. The lookup before it found none of them stored, so nothing
/// conflicts but the padding (a copy of a row of the same statement).
const SKIP_PADDING: &str = " ON CONFLICT (event_id) DO NOTHING";

/// Values bound per row of `run_states`.
const STATE_WIDTH: usize = 7;
/// Values bound per row of `logs`.
const LOG_WIDTH: usize = 10;
/// Values bound per row of `runs`.
const RUN_WIDTH: usize = 24;

/// The multi-row statements of ingestion, one per chunk size, built once.
struct IngestSql {
    states: Vec<Arc<str>>,
    logs: Vec<Arc<str>>,
    runs: Vec<Arc<str>>,
}

static INGEST_SQL: LazyLock<IngestSql> = LazyLock::new(|| {
    let build = |table: &str, columns: &str, sizes: &[usize], tail: &str| -> Vec<Arc<str>> {
        let head = format!("INSERT INTO {table} ({columns}) VALUES ");
        let width = columns.split(',').count();
        sizes
            .iter()
            .map(|&rows| Arc::from(values_sql(&head, width, rows, tail)))
            .collect()
    };
    IngestSql {
        states: build("run_states", STATE_COLUMNS, &EVENT_CHUNKS, SKIP_PADDING),
        logs: build("logs", LOG_COLUMNS, &EVENT_CHUNKS, SKIP_PADDING),
        runs: build(
            "runs",
            RUN_COLUMNS,
            &RUN_CHUNKS,
            &queries::merge_runs::<Sqlite>(),
        ),
    }
});

/// `head (?, …), (?, …) tail` with `rows` tuples of `columns` placeholders.
fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let tuple = format!("({})", vec!["?"; columns].join(", "));
    format!("{head}{}{tail}", vec![tuple; rows].join(", "))
}

/// The lookup of `ids` ids (a power of two) in both event tables: the ids are bound once for
/// each list. (Not `?NNN` placeholders bound once: SQLite finds a numbered parameter's name by a
/// linear search, so binding thousands of them costs more than binding each id twice.)
fn lookup_sql(ids: usize) -> String {
    let list = vec!["?"; ids].join(", ");
    format!(
        "SELECT event_id FROM run_states WHERE event_id IN ({list}) \
         UNION ALL SELECT event_id FROM logs WHERE event_id IN ({list})"
    )
}

/// A statement with room for `values` bound values (growing the arguments one value at a
/// time would copy them over and over).
fn statement(sql: Arc<str>, values: usize) -> Statement {
    let mut arguments = SqliteArguments::default();
    arguments.reserve(values, 0);
    sqlx::query_with(AssertSqlSafe(sql), arguments)
}

/// Splits `rows` into chunks of greedy sizes of `sizes` (largest first); yields each with
/// the index of its size (so the statement for it). With `pad`, a last chunk smaller than every
/// size gets the smallest one, and is to be padded.
fn chunked<'r, T>(
    mut rows: &'r [T],
    sizes: &[usize],
    pad: bool,
) -> impl Iterator<Item = (usize, &'r [T])> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let found = sizes
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, size)| size <= rows.len());
        let (which, size) = match found {
            Some(found) => found,
            None if pad => (sizes.len() - 1, rows.len()),
            None => return None,
        };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some((which, chunk))
    })
}

/// A statement of [`IngestSql`] with its arguments.
type Statement = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// The plan's event ids already stored in `run_states` or `logs`.
async fn stored_ids(conn: &mut SqliteConnection, plan: &Plan) -> Result<HashSet<Uuid>, StoreError> {
    let ids: Vec<Uuid> = plan
        .states
        .iter()
        .map(|r| r.event_id)
        .chain(plan.logs.iter().map(|r| r.event_id))
        .collect();
    let mut found = HashSet::new();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        // Padded to a power of two with the last id again: a handful of shapes stay prepared.
        let padded = chunk.len().next_power_of_two();
        let last = chunk.last().copied().unwrap_or_default();
        let padded_ids = || {
            chunk
                .iter()
                .copied()
                .chain(std::iter::repeat_n(last, padded - chunk.len()))
        };
        let query = statement(Arc::from(lookup_sql(padded)), 2 * padded);
        let query = padded_ids()
            .chain(padded_ids())
            .fold(query, |query, id| query.bind(id));
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(row.try_get::<Uuid, _>(0)?);
        }
    }
    Ok(found)
}

/// Inserts `rows` with `statements` (one per size of [`EVENT_CHUNKS`]), binding each row's
/// `width` values with `bind`; the last chunk is padded with copies of its last row.
async fn insert_rows<R>(
    conn: &mut SqliteConnection,
    statements: &[Arc<str>],
    width: usize,
    rows: &[&R],
    bind: impl Fn(Statement, &R) -> Statement,
) -> Result<(), StoreError> {
    for (which, chunk) in chunked(rows, &EVENT_CHUNKS, true) {
        let query = statement(statements[which].clone(), EVENT_CHUNKS[which] * width);
        let mut query = chunk.iter().fold(query, |query, row| bind(query, row));
        if let Some(last) = chunk.last() {
            for _ in chunk.len()..EVENT_CHUNKS[which] {
                query = bind(query, last);
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

fn bind_state(query: Statement, row: &StateRow) -> Statement {
    query
        .bind(row.event_id)
        .bind(row.run_id)
        .bind(row.group_id)
        .bind(row.state.as_str())
        .bind(row.message.clone())
        .bind(i64::from(row.attempt))
        .bind(row.ts)
}

fn bind_log(query: Statement, row: &LogRow) -> Statement {
    query
        .bind(row.event_id)
        .bind(row.run_id)
        .bind(row.flow_run_id)
        .bind(row.group_id)
        .bind(row.run_name.clone())
        .bind(rows::level_number(row.level))
        .bind(row.message.clone())
        .bind(row.fields.clone())
        .bind(i64::from(row.attempt))
        .bind(row.ts)
}

impl BulkWrite for Sqlite {
    async fn insert_events(
        conn: &mut SqliteConnection,
        plan: &Plan,
        stored: &mut HashSet<Uuid>,
    ) -> Result<(), StoreError> {
        let found = stored_ids(conn, plan).await?;
        let (states, logs) = plan.unseen(&found);
        insert_rows(conn, &INGEST_SQL.states, STATE_WIDTH, &states, bind_state).await?;
        insert_rows(conn, &INGEST_SQL.logs, LOG_WIDTH, &logs, bind_log).await?;
        stored.extend(states.iter().map(|r| r.event_id));
        stored.extend(logs.iter().map(|r| r.event_id));
        Ok(())
    }

    async fn upsert_runs(conn: &mut SqliteConnection, runs: &[RunRow]) -> Result<(), StoreError> {
        let no_details = rows::DetailsRow::default();
        for (which, chunk) in chunked(runs, &RUN_CHUNKS, false) {
            let mut query = statement(INGEST_SQL.runs[which].clone(), chunk.len() * RUN_WIDTH);
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
                    .bind(details.worker.clone())
                    .bind(run.lease_token)
                    .bind(run.received);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widths the arguments are reserved for are the statements' columns.
    #[test]
    fn widths_are_the_column_counts() {
        let count = |columns: &str| columns.split(',').count();
        assert_eq!(count(STATE_COLUMNS), STATE_WIDTH);
        assert_eq!(count(LOG_COLUMNS), LOG_WIDTH);
        assert_eq!(count(RUN_COLUMNS), RUN_WIDTH);
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
