-- API keys created at runtime: see the SQLite migration of the same number.
CREATE TABLE api_keys (
    id          uuid        NOT NULL PRIMARY KEY,
    name        text        NOT NULL,
    digest      bytea       NOT NULL,
    scopes      text        NOT NULL,
    created     timestamptz NOT NULL,
    created_by  text        NOT NULL,
    revoked_at  timestamptz
);

CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX api_keys_digest ON api_keys (digest);
