-- flowkit-server schema, PostgreSQL flavour. The SQLite migration of the same number holds the
-- same logical schema (see its comments for what each column means); keep both in step.
--
-- Conventions of this flavour: ids are uuid, instants timestamptz (microsecond precision, which
-- the server also truncates to before storing on SQLite), JSON values json (kept as sent:
-- nothing queries inside them), tags text[] and upstream ids uuid[].
--
-- Several server processes may ingest into one database at once. Correctness under that
-- concurrency rests on primary keys, not on locks taken by the server: the event id keys of
-- run_states and logs make a replayed or concurrently ingested event a no-op
-- (ON CONFLICT DO NOTHING), and every column of runs is merged by an upsert whose result does
-- not depend on the order in which transactions commit.
--
-- No FOREIGN KEY constraints: a task's events may be ingested before its flow's.

CREATE TABLE runs (
    id              uuid        NOT NULL PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('flow', 'task')),
    name            text        NOT NULL,
    parent_run_id   uuid,
    -- The nearest enclosing flow run; the run itself for a flow run; NULL for a standalone task.
    flow_run_id     uuid,
    -- Latest state: the state event with the greatest (timestamp, event id).
    state           text        NOT NULL,
    state_message   text,
    state_ts        timestamptz NOT NULL,
    state_event_id  uuid        NOT NULL,
    attempt         bigint      NOT NULL,
    -- Earliest state event; earliest Running; the latest state's timestamp when it is final.
    created         timestamptz NOT NULL,
    started         timestamptz,
    ended           timestamptz,
    -- Details arrive with one event (normally the first) whenever it is ingested.
    has_details     boolean     NOT NULL DEFAULT false,
    task_key        text        NOT NULL DEFAULT '',
    -- text[] with a GIN index: the tag filter is `tags @> ARRAY[$tag]`, which the index answers
    -- without a separate run_tags table to keep in step.
    tags            text[]      NOT NULL DEFAULT '{}',
    parameters      json,
    upstream        uuid[]      NOT NULL DEFAULT '{}',
    cache_key       text,
    deployment      text,
    version         text,
    worker          text
);

-- The flow-runs list, newest first, keyset-paginated on (created, id); partial so it holds only
-- flow runs and the query's `kind = 'flow'` selects it.
CREATE INDEX runs_flow_list ON runs (created DESC, id DESC) WHERE kind = 'flow';
-- The same order within one latest state, one flow name, one deployment.
CREATE INDEX runs_flow_state ON runs (state, created DESC, id DESC) WHERE kind = 'flow';
CREATE INDEX runs_flow_name ON runs (name, created DESC, id DESC) WHERE kind = 'flow';
CREATE INDEX runs_flow_deployment ON runs (deployment, created DESC, id DESC)
    WHERE kind = 'flow' AND deployment IS NOT NULL;
CREATE INDEX runs_flow_tags ON runs USING gin (tags) WHERE kind = 'flow';
-- Children of a flow run, oldest first; retention deletes groups through it.
CREATE INDEX runs_children ON runs (flow_run_id, created, id);
-- Subflow runs by their caller (the parent flow run, or one of its task runs).
CREATE INDEX runs_subflows ON runs (parent_run_id) WHERE kind = 'flow';
-- Retention: the oldest runs of any kind.
CREATE INDEX runs_created ON runs (created);

-- Every state a run entered. event_id here and in logs is the event-id ledger: every stored
-- event is either a state change or a log line, so their primary keys make ingestion
-- idempotent, and retention removes ledger entries with the rows themselves.
CREATE TABLE run_states (
    event_id  uuid        NOT NULL PRIMARY KEY,
    run_id    uuid        NOT NULL,
    -- The run's flow run, or the run itself when it has none: what the row is read and
    -- deleted with.
    group_id  uuid        NOT NULL,
    state     text        NOT NULL,
    message   text,
    attempt   bigint      NOT NULL,
    ts        timestamptz NOT NULL
);

CREATE INDEX run_states_group ON run_states (group_id, ts, event_id);

CREATE TABLE logs (
    event_id     uuid        NOT NULL PRIMARY KEY,
    run_id       uuid        NOT NULL,
    -- As sent (NULL for a standalone task run); group_id as in run_states.
    flow_run_id  uuid,
    group_id     uuid        NOT NULL,
    run_name     text        NOT NULL,
    -- 0 = TRACE, 1 = DEBUG, 2 = INFO, 3 = WARN, 4 = ERROR, so "at or above" is `>=`.
    level        smallint    NOT NULL,
    message      text        NOT NULL,
    -- The event's other fields; NULL when there are none.
    fields       json,
    attempt      bigint      NOT NULL,
    ts           timestamptz NOT NULL
);

CREATE INDEX logs_group ON logs (group_id, ts, event_id);

-- Events a reporter had to drop (its spool was full), per worker.
CREATE TABLE reporter_drops (
    worker     text        NOT NULL PRIMARY KEY,
    dropped    bigint      NOT NULL,
    last_seen  timestamptz NOT NULL
);
