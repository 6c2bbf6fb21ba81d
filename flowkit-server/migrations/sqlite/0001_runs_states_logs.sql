-- flowkit-server schema, SQLite flavour. The PostgreSQL migration of the same number holds the
-- same logical schema; keep both in step.
--
-- Conventions of this flavour:
--   * ids (UUID v7) are 16-byte BLOBs: they compare bytewise, exactly like PostgreSQL's uuid,
--     so ties on a timestamp break the same way on both backends;
--   * instants are INTEGER microseconds since the Unix epoch (UTC), the precision PostgreSQL's
--     timestamptz keeps, so both backends read back the same values;
--   * JSON values are TEXT.
--
-- There are no FOREIGN KEY constraints: events of one run, and runs of one flow, arrive in any
-- order (a task's events may be ingested before its flow's), so references cannot be enforced
-- at insert time. Retention deletes a run together with everything that refers to it.

-- One row per run (flow or task), folded from all its state events. Every column is a pure
-- function of the set of state events seen, whatever their arrival order:
--   * state, state_message, state_ts, state_event_id, attempt, ended: from the state event with
--     the greatest (timestamp, event id); ended is that timestamp when the state is final;
--   * created: the earliest state event's timestamp; started: the earliest Running one;
--   * the details columns: from the one event that carries the run's details (its first,
--     normally), whenever that event arrives; has_details says whether it has arrived.
CREATE TABLE runs (
    id              BLOB    NOT NULL PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('flow', 'task')),
    name            TEXT    NOT NULL,
    parent_run_id   BLOB,
    -- The nearest enclosing flow run; the run itself for a flow run; NULL for a standalone task.
    flow_run_id     BLOB,
    state           TEXT    NOT NULL,
    state_message   TEXT,
    state_ts        INTEGER NOT NULL,
    state_event_id  BLOB    NOT NULL,
    attempt         INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    started         INTEGER,
    ended           INTEGER,
    has_details     INTEGER NOT NULL DEFAULT 0,
    task_key        TEXT    NOT NULL DEFAULT '',
    -- Tags as a JSON array of strings. The tag filter tests membership with json_each() on the
    -- rows the list query walks anyway (newest first, through runs_flow_list, stopping at the
    -- page size); a separate run_tags table would cost an extra B-tree insert per tag per run
    -- on the ingestion path and still need a sort or a join back to runs for the keyset order.
    -- A rare tag therefore costs a scan of the flow runs (measured: see store_conformance).
    tags            TEXT    NOT NULL DEFAULT '[]',
    parameters      TEXT,
    -- Upstream run ids as a JSON array of hyphenated UUID strings.
    upstream        TEXT    NOT NULL DEFAULT '[]',
    cache_key       TEXT,
    deployment      TEXT,
    version         TEXT,
    worker          TEXT
);

-- The flow-runs list: newest first, keyset-paginated on (created, id). Partial on kind so the
-- index holds only flow runs (task runs outnumber them by far) and the query's
-- `kind = 'flow'` selects it.
CREATE INDEX runs_flow_list ON runs (created DESC, id DESC) WHERE kind = 'flow';
-- The same order within one latest state, one flow name, one deployment.
CREATE INDEX runs_flow_state ON runs (state, created DESC, id DESC) WHERE kind = 'flow';
CREATE INDEX runs_flow_name ON runs (name, created DESC, id DESC) WHERE kind = 'flow';
CREATE INDEX runs_flow_deployment ON runs (deployment, created DESC, id DESC)
    WHERE kind = 'flow' AND deployment IS NOT NULL;
-- Children of a flow run (its task runs), oldest first; retention deletes groups through it.
CREATE INDEX runs_children ON runs (flow_run_id, created, id);
-- Subflow runs by their caller (the parent flow run, or one of its task runs).
CREATE INDEX runs_subflows ON runs (parent_run_id) WHERE kind = 'flow';
-- Retention: the oldest runs of any kind.
CREATE INDEX runs_created ON runs (created);

-- Every state a run entered (the timeline, retries included).
--
-- event_id is the primary key, and logs' event_id too: together they are the event-id ledger
-- that makes ingestion idempotent (every stored event is a state change or a log line, so a
-- separate ledger table would repeat these keys at the cost of one more B-tree insert per
-- event, and retention would have to find its rows separately).
CREATE TABLE run_states (
    event_id  BLOB    NOT NULL PRIMARY KEY,
    run_id    BLOB    NOT NULL,
    -- The group the row is read and deleted with: the run's flow run, or the run itself when it
    -- has none (a standalone task run).
    group_id  BLOB    NOT NULL,
    state     TEXT    NOT NULL,
    message   TEXT,
    attempt   INTEGER NOT NULL,
    ts        INTEGER NOT NULL
) WITHOUT ROWID;

-- A flow run's history in time order; also how retention finds the rows of a group.
CREATE INDEX run_states_group ON run_states (group_id, ts, event_id);

-- Log lines captured inside runs.
CREATE TABLE logs (
    event_id     BLOB    NOT NULL PRIMARY KEY,
    run_id       BLOB    NOT NULL,
    -- As sent (NULL for a standalone task run); group_id as in run_states.
    flow_run_id  BLOB,
    group_id     BLOB    NOT NULL,
    run_name     TEXT    NOT NULL,
    -- 0 = TRACE, 1 = DEBUG, 2 = INFO, 3 = WARN, 4 = ERROR, so "at or above" is `>=`.
    level        INTEGER NOT NULL,
    message      TEXT    NOT NULL,
    -- The event's other fields as a JSON object; NULL when there are none.
    fields       TEXT,
    attempt      INTEGER NOT NULL,
    ts           INTEGER NOT NULL
);
-- (A rowid table, unlike run_states: a log line may be large, and WITHOUT ROWID tables suit
-- small rows.)

-- A flow run's logs oldest first, keyset-paginated on (ts, event_id); retention by group.
CREATE INDEX logs_group ON logs (group_id, ts, event_id);

-- Events a reporter had to drop (its spool was full), per worker, so the dashboard can say so.
CREATE TABLE reporter_drops (
    worker     TEXT    NOT NULL PRIMARY KEY,
    dropped    INTEGER NOT NULL,
    -- When the last report of drops arrived (µs since the epoch).
    last_seen  INTEGER NOT NULL
);
