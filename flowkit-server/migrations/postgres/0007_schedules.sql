-- Schedules of deployments, PostgreSQL flavour: the same logical schema as the SQLite
-- migration of the same number, whose comments explain each column.

CREATE TABLE schedules (
    id          uuid        NOT NULL PRIMARY KEY,
    flow        text        NOT NULL,
    name        text        NOT NULL,
    source      text        NOT NULL CHECK (source IN ('code', 'api')),
    spec        json        NOT NULL,
    paused_at   timestamptz,
    last_at     timestamptz NOT NULL,
    next_at     timestamptz,
    created     timestamptz NOT NULL
);

CREATE INDEX schedules_due ON schedules (next_at) WHERE paused_at IS NULL;
CREATE INDEX schedules_of ON schedules (flow, name);

CREATE TABLE schedule_slots (
    schedule_id uuid        NOT NULL,
    instant     timestamptz NOT NULL,
    run_id      uuid        NOT NULL,
    skipped     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, instant)
);
