-- Runs created in a state an alert rule may list are queued in `alert_events` by the writer
-- that creates them, in the same transaction (`sqlite_ingest::queue_alerts`), instead of by a
-- trigger. SQLite writes every row of an insert into a table that has a row trigger to a
-- temporary table first and then copies it, and runs the trigger's program for each row,
-- whatever the trigger's WHEN clause says: on the ingestion path that was one more B-tree
-- insert and a sub-program run per run row (`ingest_bench`: 1.03-1.09x the events per second
-- without it). The trigger on updates stays (an upsert's update does not take that path).
-- PostgreSQL keeps both triggers: its inserts have no such cost.
DROP TRIGGER alert_events_on_insert;
