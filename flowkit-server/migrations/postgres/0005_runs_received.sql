-- Retention by the server's clock (issue 8, "retention is forgeable"): see the SQLite migration
-- of the same number. `received` is when a server first stored a row of the run (never changed
-- by later events); runs stored before this migration take their `created`. runs_created
-- served only retention and is replaced.
ALTER TABLE runs ADD COLUMN received timestamptz;
UPDATE runs SET received = created;
ALTER TABLE runs ALTER COLUMN received SET NOT NULL;
DROP INDEX runs_created;
CREATE INDEX runs_received ON runs (received);
