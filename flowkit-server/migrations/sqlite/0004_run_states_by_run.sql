-- The state histories of one page of a flow run's task runs (GET /flow-runs/{id}/task-runs
-- reads them page by page): run_states_group gains run_id after group_id, so the states of
-- one run are one index range whatever the size of its flow. Still the index retention
-- deletes a group through (by its first column); the same number of indexes per state row.
DROP INDEX run_states_group;
CREATE INDEX run_states_group ON run_states (group_id, run_id, ts, event_id);
