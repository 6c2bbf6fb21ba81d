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

use super::NewRun;
use super::StoreError;
use super::queries::{RUN_COLUMNS, STATE_COLUMNS};
use super::rows::{RunRow, StateRow};
use super::schedules::{
    Advance, SLOT_RUN_EXTRA_COLUMNS, SlotsWritten, slot_run_rows, sorted_slots,
};
use super::sqlite_rows::{BindRow, Binder, bind_all, bind_rows, chunked, read_ids, values_sql};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::LazyLock;

/// Rows per statement, largest first (not padded: the last chunks of a batch take smaller
/// shapes).
pub(super) const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Statements this module keeps prepared: four tables' shapes.
pub(super) const PREPARED: usize = 4 * CHUNKS.len();

/// Values bound per slot and per advance.
const SLOT_WIDTH: usize = 4;
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
        CHUNKS
            .iter()
            .map(|&rows| values_sql(head, width, rows, tail))
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
            StateRow::WIDTH,
            "",
        ),
        runs: build(
            &format!("INSERT INTO runs ({RUN_COLUMNS}, {SLOT_RUN_EXTRA_COLUMNS}) VALUES "),
            SlotRun::WIDTH,
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
    for (which, chunk) in chunked(&slots, &CHUNKS, false) {
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
        read_ids(&mut statement, &mut won)?;
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
        for (which, chunk) in chunked(&plan.states, &CHUNKS, false) {
            let mut statement = db.prepare_cached(&SLOT_SQL.states[which])?;
            bind_rows(&mut *statement, chunk.iter())?;
            statement.raw_execute()?;
        }
        let mut rows = Vec::with_capacity(claimed.len());
        for run in &claimed {
            let row = folded
                .remove(&run.event.run_id)
                .ok_or_else(|| super::rows::corrupt("a schedule's run was not folded".into()))?;
            rows.push(SlotRun { run, row });
        }
        for (which, chunk) in chunked(&rows, &CHUNKS, false) {
            let mut statement = db.prepare_cached(&SLOT_SQL.runs[which])?;
            bind_rows(&mut *statement, chunk.iter())?;
            statement.raw_execute()?;
        }
        // No trigger fires on inserts into `runs` (migration 0016).
        super::sqlite_ingest::queue_alerts(db, rows.iter().map(|run| &run.row))?;
    }
    // 3. The schedules, in id order, each only if not moved since it was read.
    let mut sorted: Vec<&Advance> = advances.iter().collect();
    sorted.sort_by_key(|advance| advance.id);
    let mut advanced = 0;
    for (which, chunk) in chunked(&sorted, &CHUNKS, false) {
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

/// A schedule's new run: its row as ingestion writes it, then the columns of
/// [`SLOT_RUN_EXTRA_COLUMNS`] (as `super::schedules::insert_slot_runs` writes them).
struct SlotRun<'r> {
    run: &'r NewRun,
    row: RunRow,
}

impl BindRow for SlotRun<'_> {
    const WIDTH: usize = RunRow::WIDTH + 6;
    fn bind<'b>(&'b self, statement: &mut impl Binder<'b>, at: usize) -> Result<(), StoreError> {
        if (self.row.details.as_ref()).is_some_and(|d| !d.upstream.is_empty()) {
            return Err(super::rows::corrupt(
                "a schedule's run with upstream runs".into(),
            ));
        }
        self.row.bind(statement, at)?;
        let slot = self.run.schedule_slot.as_ref();
        bind_all!(
            statement,
            at + RunRow::WIDTH,
            self.run.scheduled_for.map(micros),
            self.run.version_pinned,
            i64::from(self.run.max_attempts.max(1)),
            &self.run.created_by,
            slot.and_then(|slot| slot.late_at).map(micros),
            slot.and_then(|slot| slot.expires_at).map(micros),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widths rows are bound with are the statements' column counts.
    #[test]
    fn widths_are_the_column_counts() {
        let count = |columns: &str| columns.split(',').count();
        assert_eq!(
            count(SLOT_RUN_EXTRA_COLUMNS),
            SlotRun::WIDTH - RunRow::WIDTH
        );
        // The generic path's columns: the same, without `upstream` (always empty here).
        let generic = format!("{RUN_COLUMNS}, {SLOT_RUN_EXTRA_COLUMNS}").replace("upstream, ", "");
        assert_eq!(generic, super::super::schedules::SLOT_RUN_COLUMNS);
        for (i, size) in CHUNKS.iter().enumerate() {
            for (sql, width) in [
                (&SLOT_SQL.slots[i], SLOT_WIDTH),
                (&SLOT_SQL.states[i], StateRow::WIDTH),
                (&SLOT_SQL.runs[i], SlotRun::WIDTH),
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
            let chunks: Vec<(usize, &[usize])> = chunked(&rows, &CHUNKS, false).collect();
            let flat: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            assert_eq!(flat, rows);
            for (which, chunk) in chunks {
                assert_eq!(chunk.len(), CHUNKS[which]);
            }
        }
    }
}
