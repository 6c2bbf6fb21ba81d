-- API keys created at runtime (`POST /api/v1/keys`), SQLite flavour (conventions as in 0001; the
-- PostgreSQL migration of the same number holds the same logical schema). Keys given by
-- `--api-key` flags are not stored here.

-- One row per key ever created. The secret itself is never stored: only its BLAKE3 digest,
-- which the server compares in constant time with the digest of a presented token. Revoking
-- sets revoked_at; the row stays (who created which key, and when it was revoked).
CREATE TABLE api_keys (
    id          BLOB    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    -- BLAKE3 of the secret, 32 bytes.
    digest      BLOB    NOT NULL,
    -- The scopes as the `--api-key` flag spells them, comma-separated
    -- (`read,trigger=train/nightly`).
    scopes      TEXT    NOT NULL,
    created     INTEGER NOT NULL,
    -- `key:NAME` of the admin key that created it, `local` on a server without keys.
    created_by  TEXT    NOT NULL,
    revoked_at  INTEGER
);

-- A name (and a secret) belongs to one active key at a time; a revoked key's name can be given
-- to a new key.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX api_keys_digest ON api_keys (digest);
