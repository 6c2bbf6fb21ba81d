-- Retention by the server's clock (issue 8, "retention is forgeable"): `created` is the earliest
-- timestamp a client sent, so one state event dated 2000 made a whole flow run look old enough
-- to delete. `received` is when this server first stored a row of the run (its own clock, µs
-- since the epoch, never changed by later events): retention deletes by it. Runs stored before
-- this migration take their `created` (the best estimate there is of when they arrived).
--
-- runs_created served only retention: it is replaced, so a run row keeps the same number of
-- indexes.
ALTER TABLE runs ADD COLUMN received INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET received = created;
DROP INDEX runs_created;
CREATE INDEX runs_received ON runs (received);
