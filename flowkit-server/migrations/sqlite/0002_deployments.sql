-- Deployments, SQLite flavour (conventions as in 0001; the PostgreSQL migration of the same
-- number holds the same logical schema).

-- When a triggered run may start (`scheduled_for` of the trigger); NULL for runs reported by
-- the runtime. Written by the trigger only: ingestion's upsert leaves it alone.
ALTER TABLE runs ADD COLUMN scheduled_for INTEGER;

-- One row per deployment (flow/name): who owns the pair, and which version is the newest.
-- Registration upserts this row first, which serializes registrations of one deployment (on
-- PostgreSQL the upsert locks the row; SQLite has one writer), so `latest_version` is always
-- the version registered last.
CREATE TABLE deployments (
    flow            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    -- A UUID v7: the tie-breaker of the list's keyset order.
    id              BLOB    NOT NULL UNIQUE,
    -- The function that registered the pair first; another one is refused (409).
    flow_key        TEXT    NOT NULL,
    latest_version  TEXT    NOT NULL,
    versions        INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    -- When the newest version was registered.
    updated         INTEGER NOT NULL,
    PRIMARY KEY (flow, name)
);

-- The list, most recently updated first, keyset-paginated on (updated, id).
CREATE INDEX deployments_list ON deployments (updated DESC, id DESC);

-- Every registered version, kept.
CREATE TABLE deployment_versions (
    flow                TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    id                  BLOB    NOT NULL UNIQUE,
    flow_key            TEXT    NOT NULL,
    description         TEXT,
    parameter_schema    TEXT    NOT NULL,
    output_schema       TEXT    NOT NULL,
    default_parameters  TEXT    NOT NULL,
    -- JSON array of strings.
    tags                TEXT    NOT NULL,
    concurrency_limit   INTEGER,
    -- Strictly increasing per deployment, in registration order: the newest version is the
    -- greatest (registered, id).
    registered          INTEGER NOT NULL,
    -- BLAKE3 of the canonical JSON of the registered spec: the same version registered again
    -- with another body is refused (409) rather than silently kept or replaced.
    fingerprint         TEXT    NOT NULL,
    PRIMARY KEY (flow, name, version)
);

-- A deployment's versions, newest first, keyset-paginated on (registered, id).
CREATE INDEX deployment_versions_list
    ON deployment_versions (flow, name, registered DESC, id DESC);

-- Idempotency keys of triggers, scoped to the deployment ("flow/name"). The primary key is
-- what turns concurrent triggers with one key into one run: every one but the first finds the
-- key taken and answers with the run it created.
CREATE TABLE idempotency_keys (
    deployment   TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    -- BLAKE3 of the canonical JSON of the trigger (without the key): same key, other body is
    -- a 409.
    fingerprint  TEXT    NOT NULL,
    run_id       BLOB    NOT NULL,
    created      INTEGER NOT NULL,
    -- After this the key is forgotten: replaced by the next trigger that uses it, deleted by
    -- the retention task.
    expires      INTEGER NOT NULL,
    PRIMARY KEY (deployment, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires);
