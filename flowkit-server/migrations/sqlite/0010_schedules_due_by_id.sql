-- The tick reads the due schedules page after page in (next_at, id) order, each page starting
-- after the last schedule of the one before (see `store::schedules::due_schedules`), so it can
-- read the next page while the schedules of the last are still being written: this index
-- answers each page with a range scan instead of sorting every due schedule.
DROP INDEX schedules_due;
CREATE INDEX schedules_due ON schedules (next_at, id) WHERE paused_at IS NULL;
