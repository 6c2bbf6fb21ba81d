-- Deployments, PostgreSQL flavour. The SQLite migration of the same number holds the same
-- logical schema (see its comments for what each column means); keep both in step.

ALTER TABLE runs ADD COLUMN scheduled_for timestamptz;

-- Registration upserts a deployment's row first: the upsert locks it, so concurrent
-- registrations of one deployment (from several server processes) run one after the other and
-- `latest_version` is the version registered last.
CREATE TABLE deployments (
    flow            text        NOT NULL,
    name            text        NOT NULL,
    id              uuid        NOT NULL UNIQUE,
    flow_key        text        NOT NULL,
    latest_version  text        NOT NULL,
    versions        bigint      NOT NULL,
    created         timestamptz NOT NULL,
    updated         timestamptz NOT NULL,
    PRIMARY KEY (flow, name)
);

CREATE INDEX deployments_list ON deployments (updated DESC, id DESC);

CREATE TABLE deployment_versions (
    flow                text        NOT NULL,
    name                text        NOT NULL,
    version             text        NOT NULL,
    id                  uuid        NOT NULL UNIQUE,
    flow_key            text        NOT NULL,
    description         text,
    parameter_schema    json        NOT NULL,
    output_schema       json        NOT NULL,
    default_parameters  json        NOT NULL,
    tags                text[]      NOT NULL,
    concurrency_limit   bigint,
    registered          timestamptz NOT NULL,
    fingerprint         text        NOT NULL,
    PRIMARY KEY (flow, name, version)
);

CREATE INDEX deployment_versions_list
    ON deployment_versions (flow, name, registered DESC, id DESC);

-- The primary key makes concurrent triggers with one key one run, across server processes:
-- the second insert waits for the first transaction and then finds the key taken.
CREATE TABLE idempotency_keys (
    deployment   text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,
    run_id       uuid        NOT NULL,
    created      timestamptz NOT NULL,
    expires      timestamptz NOT NULL,
    PRIMARY KEY (deployment, key)
);

CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires);
