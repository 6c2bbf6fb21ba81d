-- Schedules of deployments, SQLite flavour (conventions as in 0001; the PostgreSQL migration of
-- the same number holds the same logical schema).

-- One row per schedule. A schedule declared in code has an id derived from its deployment and
-- its timing (cron or interval, time zone, anchor), so registering the same schedule again
-- keeps its id, its pause and the keys of the runs it created; one created over the API has a
-- random id.
CREATE TABLE schedules (
    id          BLOB    NOT NULL PRIMARY KEY,
    flow        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- 'code' (replaced by each registration of the deployment) or 'api' (kept).
    source      TEXT    NOT NULL CHECK (source IN ('code', 'api')),
    -- The ScheduleSpec as JSON.
    spec        TEXT    NOT NULL,
    -- When it was paused; NULL while active. A pause survives re-registration.
    paused_at   INTEGER,
    -- Every instant up to this one has been handled (a run created, or skipped and counted).
    last_at     INTEGER NOT NULL,
    -- The next instant after last_at; NULL when there is none.
    next_at     INTEGER,
    created     INTEGER NOT NULL
);

-- The tick's lookup: active schedules that are due.
CREATE INDEX schedules_due ON schedules (next_at) WHERE paused_at IS NULL;
CREATE INDEX schedules_of ON schedules (flow, name);

-- The permanent key of a scheduled run: one run per (schedule, instant), whoever creates it
-- (any replica's tick, a backfill). Kept after the run itself is deleted by retention, so an
-- instant is never run twice (one small row per scheduled run).
CREATE TABLE schedule_slots (
    schedule_id BLOB    NOT NULL,
    instant     INTEGER NOT NULL,
    run_id      BLOB    NOT NULL,
    -- Earlier instants this run stands for (catch-up `latest`, or overlap `skip`).
    skipped     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, instant)
);
