-- The same logical schema as the SQLite migration of the same number, whose comments explain it.
DROP INDEX schedules_due;
CREATE INDEX schedules_due ON schedules (next_at, id) WHERE paused_at IS NULL;
