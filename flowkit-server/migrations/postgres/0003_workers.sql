-- Workers, leases, results, PostgreSQL flavour. The SQLite migration of the same number holds
-- the same logical schema (see its comments for what each column means); keep both in step.

ALTER TABLE runs ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_worker uuid;
ALTER TABLE runs ADD COLUMN lease_expires timestamptz;
ALTER TABLE runs ADD COLUMN server_state boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN version_pinned boolean NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN max_attempts bigint;
ALTER TABLE runs ADD COLUMN created_by text;

CREATE INDEX runs_claimable ON runs (deployment, created, id)
    WHERE kind = 'flow' AND state = 'Scheduled' AND deployment IS NOT NULL;
CREATE INDEX runs_leased ON runs (lease_expires) WHERE lease_expires IS NOT NULL;
CREATE INDEX runs_leased_deployment ON runs (deployment) WHERE lease_expires IS NOT NULL;

ALTER TABLE deployment_versions ADD COLUMN retries bigint NOT NULL DEFAULT 0;

CREATE TABLE workers (
    id         uuid        NOT NULL PRIMARY KEY,
    name       text        NOT NULL,
    started    timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
CREATE INDEX workers_last_seen ON workers (last_seen);

CREATE TABLE worker_deployments (
    worker     uuid        NOT NULL,
    flow       text        NOT NULL,
    name       text        NOT NULL,
    version    text        NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (worker, flow, name, version)
);
CREATE INDEX worker_deployments_by_deployment ON worker_deployments (flow, name, last_seen);

CREATE TABLE run_results (
    run_id   uuid        NOT NULL PRIMARY KEY,
    result   bytea       NOT NULL,
    bytes    bigint      NOT NULL,
    created  timestamptz NOT NULL
);

CREATE TABLE stale_events (
    worker     text        NOT NULL PRIMARY KEY,
    refused    bigint      NOT NULL,
    last_seen  timestamptz NOT NULL
);
