//! The tick's writes on SQLite ([`super::schedules::write_slots`]: slots claimed, runs
//! created, schedules moved on) by the writer straight on its connection, through `rusqlite`
//! with statements kept prepared from one batch to the next (see `super::sqlite_ingest`: every
//! statement through sqlx's driver is a round trip to the connection's thread with every bound
//! value copied first, and a batch binds some 10 000 values).
//!
//! The same statements and rows as the generic [`super::schedules::write_slots`], in the same
//! order, inside the savepoint the writer opens for the batch; only their shapes differ: chunks
//! of [`CHUNKS`] rows (a tick's batch of [`crate::scheduler::SCHEDULES_PER_BATCH`] is one
//! statement of each), so that each shape stays prepared.

use super::StoreError;
use super::rows::{DetailsRow, RunRow, StateRow};
use super::schedules::{Advance, SLOT_RUN_COLUMNS, SlotsWritten, slot_run_rows, sorted_slots};
use super::{NewRun, queries::STATE_COLUMNS};
use chrono::{DateTime, Utc};
use rusqlite::Statement;
use std::collections::HashSet;
use std::sync::LazyLock;
use uuid::Uuid;

/// Rows per statement, largest first (not padded: the last chunks of a batch take smaller
/// shapes).
pub(super) const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Statements this module keeps prepared: four tables' shapes.
pub(super) const PREPARED: usize = 4 * CHUNKS.len();

/// Values bound per slot, per state, per run, per advance.
const SLOT_WIDTH: usize = 4;
const STATE_WIDTH: usize = 7;
const RUN_WIDTH: usize = 29;
const ADVANCE_WIDTH: usize = 4;

/// The statements, one per size of [`CHUNKS`].
struct SlotSql {
    slots: Vec<String>,
    states: Vec<String>,
    runs: Vec<String>,
    advances: Vec<String>,
}

static SLOT_SQL: LazyLock<SlotSql> = LazyLock::new(|| {
    let build = |head: &str, width: usize, tail: &str| -> Vec<String> {
        let tuple = format!("({})", vec!["?"; width].join(", "));
        CHUNKS
            .iter()
            .map(|&rows| format!("{head}{}{tail}", vec![tuple.as_str(); rows].join(", ")))
            .collect()
    };
    SlotSql {
        slots: build(
            "INSERT INTO schedule_slots (schedule_id, instant, run_id, skipped) VALUES ",
            SLOT_WIDTH,
            " ON CONFLICT (schedule_id, instant) DO NOTHING RETURNING run_id",
        ),
        states: build(
            &format!("INSERT INTO run_states ({STATE_COLUMNS}) VALUES "),
            STATE_WIDTH,
            "",
        ),
        runs: build(
            &format!("INSERT INTO runs ({SLOT_RUN_COLUMNS}) VALUES "),
            RUN_WIDTH,
            "",
        ),
        advances: build(
            "WITH v (id, from_at, to_at, next_at) AS (VALUES ",
            ADVANCE_WIDTH,
            ") UPDATE schedules SET last_at = v.to_at, next_at = v.next_at FROM v \
             WHERE schedules.id = v.id AND schedules.last_at = v.from_at",
        ),
    }
});

/// Splits `rows` into chunks of the sizes of [`CHUNKS`], greedily; each with the index of its
/// size (so its statement).
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

/// Binds `values` to the parameters after the first `at`, in order.
macro_rules! bind_all {
    ($statement:expr, $at:expr, $($value:expr),+ $(,)?) => {{
        let mut index = $at;
        $(
            index += 1;
            $statement.raw_bind_parameter(index, $value)?;
        )+
        let _ = index;
    }};
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// See [`super::schedules::write_slots`]: the same, on `db` (the writer's connection, inside
/// the savepoint of the batch).
pub(super) fn write_slots(
    db: &rusqlite::Connection,
    runs: &[NewRun],
    advances: &[Advance],
) -> Result<SlotsWritten, StoreError> {
    let at = Utc::now();
    // 1. The slots, in key order; the ones claimed now come back.
    let slots = sorted_slots(runs)?;
    let mut won = HashSet::with_capacity(runs.len());
    for (which, chunk) in chunked(&slots) {
        let mut statement = db.prepare_cached(&SLOT_SQL.slots[which])?;
        for (i, (schedule, instant, slot, run_id)) in chunk.iter().enumerate() {
            bind_all!(
                statement,
                i * SLOT_WIDTH,
                schedule.as_bytes(),
                micros(*instant),
                run_id.as_bytes(),
                i64::try_from(slot.skipped).unwrap_or(i64::MAX),
            );
        }
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next()? {
            let id: [u8; 16] = row.get(0)?;
            won.insert(Uuid::from_bytes(id));
        }
    }
    let created: Vec<bool> = runs
        .iter()
        .map(|run| won.contains(&run.event.run_id))
        .collect();
    let claimed: Vec<&NewRun> = runs
        .iter()
        .filter(|run| won.contains(&run.event.run_id))
        .collect();
    // 2. Their runs: first states, then rows.
    if !claimed.is_empty() {
        let (plan, mut folded) = slot_run_rows(&claimed, at)?;
        for (which, chunk) in chunked(&plan.states) {
            let mut statement = db.prepare_cached(&SLOT_SQL.states[which])?;
            for (i, row) in chunk.iter().enumerate() {
                bind_state(&mut statement, i * STATE_WIDTH, row)?;
            }
            statement.raw_execute()?;
        }
        let mut rows = Vec::with_capacity(claimed.len());
        for run in &claimed {
            let row = folded
                .remove(&run.event.run_id)
                .ok_or_else(|| super::rows::corrupt("a schedule's run was not folded".into()))?;
            rows.push((*run, row));
        }
        for (which, chunk) in chunked(&rows) {
            let mut statement = db.prepare_cached(&SLOT_SQL.runs[which])?;
            for (i, (run, row)) in chunk.iter().enumerate() {
                bind_run(&mut statement, i * RUN_WIDTH, run, row)?;
            }
            statement.raw_execute()?;
        }
    }
    // 3. The schedules, in id order, each only if not moved since it was read.
    let mut sorted: Vec<&Advance> = advances.iter().collect();
    sorted.sort_by_key(|advance| advance.id);
    let mut advanced = 0;
    for (which, chunk) in chunked(&sorted) {
        let mut statement = db.prepare_cached(&SLOT_SQL.advances[which])?;
        for (i, advance) in chunk.iter().enumerate() {
            bind_all!(
                statement,
                i * ADVANCE_WIDTH,
                advance.id.as_bytes(),
                micros(advance.from),
                micros(advance.to),
                advance.next_at.map(micros),
            );
        }
        advanced += statement.raw_execute()? as u64;
    }
    Ok(SlotsWritten {
        created,
        advanced,
        at,
    })
}

fn bind_state(statement: &mut Statement<'_>, at: usize, row: &StateRow) -> Result<(), StoreError> {
    bind_all!(
        statement,
        at,
        row.event_id.as_bytes(),
        row.run_id.as_bytes(),
        row.group_id.as_bytes(),
        row.state.as_str(),
        &row.message,
        i64::from(row.attempt),
        row.ts,
    );
    Ok(())
}

/// Binds a run's row as `super::schedules::insert_slot_runs` does (the columns of
/// [`SLOT_RUN_COLUMNS`]).
fn bind_run(
    statement: &mut Statement<'_>,
    at: usize,
    run: &NewRun,
    row: &RunRow,
) -> Result<(), StoreError> {
    static NO_DETAILS: LazyLock<DetailsRow> = LazyLock::new(DetailsRow::default);
    let details = row.details.as_ref().unwrap_or(&NO_DETAILS);
    if !details.upstream.is_empty() {
        return Err(super::rows::corrupt(
            "a schedule's run with upstream runs".into(),
        ));
    }
    let slot = run.schedule_slot.as_ref();
    bind_all!(
        statement,
        at,
        row.id.as_bytes(),
        row.kind.as_str(),
        &row.name,
        row.parent_run_id.as_ref().map(Uuid::as_bytes),
        row.flow_run_id.as_ref().map(Uuid::as_bytes),
        row.state.as_str(),
        &row.state_message,
        row.state_ts,
        row.state_event_id.as_bytes(),
        i64::from(row.attempt),
        row.created,
        row.started,
        row.ended,
        row.details.is_some(),
        &details.task_key,
        details.tags_json()?,
        &details.parameters,
        &details.cache_key,
        &details.deployment,
        &details.version,
        &details.worker,
        row.lease_token,
        row.received,
        run.scheduled_for.map(micros),
        run.version_pinned,
        i64::from(run.max_attempts.max(1)),
        &run.created_by,
        slot.and_then(|slot| slot.late_at).map(micros),
        slot.and_then(|slot| slot.expires_at).map(micros),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widths rows are bound with are the statements' column counts.
    #[test]
    fn widths_are_the_column_counts() {
        let count = |columns: &str| columns.split(',').count();
        assert_eq!(count(STATE_COLUMNS), STATE_WIDTH);
        assert_eq!(count(SLOT_RUN_COLUMNS), RUN_WIDTH);
        for (i, size) in CHUNKS.iter().enumerate() {
            for (sql, width) in [
                (&SLOT_SQL.slots[i], SLOT_WIDTH),
                (&SLOT_SQL.states[i], STATE_WIDTH),
                (&SLOT_SQL.runs[i], RUN_WIDTH),
                (&SLOT_SQL.advances[i], ADVANCE_WIDTH),
            ] {
                assert_eq!(sql.matches('?').count(), size * width, "{sql}");
            }
        }
    }

    /// Every row lands in exactly one chunk, in order, each of one of the sizes.
    #[test]
    fn chunks_cover_every_row_once() {
        for len in 0..700usize {
            let rows: Vec<usize> = (0..len).collect();
            let chunks: Vec<(usize, &[usize])> = chunked(&rows).collect();
            let flat: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            assert_eq!(flat, rows);
            for (which, chunk) in chunks {
                assert_eq!(chunk.len(), CHUNKS[which]);
            }
        }
    }
}
