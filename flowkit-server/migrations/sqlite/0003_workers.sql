-- Workers, leases, results, SQLite flavour (conventions as in 0001; the PostgreSQL migration of
-- the same number holds the same logical schema).
--
-- A triggered run is claimed by a worker over HTTP. The claim takes a *lease* on the run: the
-- worker must renew it (heartbeats) before it expires, or the server's reaper decides the run's
-- fate (Crashed, re-queued, or Cancelled). Every claim increments the run's fencing token; the
-- worker sends it with every call and every event of the run, and anything carrying an older
-- token is refused (409 `stale_lease` on calls, rejected and counted per event), so a worker
-- that lost its lease can never finish or change a run that has moved on.

-- The fencing token of the run's latest claim: 0 = never claimed. Only ever increases.
ALTER TABLE runs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
-- The worker holding the lease (its id), NULL when no lease is held.
ALTER TABLE runs ADD COLUMN lease_worker BLOB;
-- When the lease ends unless renewed (the database's clock), NULL when no lease is held.
ALTER TABLE runs ADD COLUMN lease_expires INTEGER;
-- 1 when the run's current state was decided by the server (claimed, Crashed, re-queued,
-- Cancelling, Cancelled at lease expiry): a client's state event (whatever its timestamp) does
-- not move the row out of it, except a current-token event of a claimed run (0 again once the
-- worker reports Running). See the store's fold rule.
ALTER TABLE runs ADD COLUMN server_state INTEGER NOT NULL DEFAULT 0;
-- 1 when the trigger named a version: only a worker serving that version may claim it; 0 when
-- any version the deployment's live workers serve will do (`version` then says the newest one
-- at trigger time, and is overwritten by the claim with the version that runs it).
ALTER TABLE runs ADD COLUMN version_pinned INTEGER NOT NULL DEFAULT 0;
-- How many attempts the run may have in all (the flow's `retries` + 1) for re-queues after a
-- crash and for `retry`; NULL for runs not created by the server.
ALTER TABLE runs ADD COLUMN max_attempts INTEGER;
-- Who created the run: `key:NAME` (an API key), `dashboard`, `schedule:NAME`, `run:UUID` (a
-- parent run), `local` (no keys configured). NULL for runs reported by the runtime.
ALTER TABLE runs ADD COLUMN created_by TEXT;

-- Runs waiting for a worker, oldest first, per deployment: what a claim reads.
CREATE INDEX runs_claimable ON runs (deployment, created, id)
    WHERE kind = 'flow' AND state = 'Scheduled' AND deployment IS NOT NULL;
-- Leases by expiry: what the reaper reads; also what concurrency limits count.
CREATE INDEX runs_leased ON runs (lease_expires) WHERE lease_expires IS NOT NULL;
CREATE INDEX runs_leased_deployment ON runs (deployment) WHERE lease_expires IS NOT NULL;

-- The flow's `retries`, registered with each version.
ALTER TABLE deployment_versions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

-- Workers by id (one per `flowkit::serve` process), for the dashboard and the deployments'
-- live workers. A worker is live while `last_seen` is within one lease of now.
CREATE TABLE workers (
    id         BLOB    NOT NULL PRIMARY KEY,
    -- `host:pid`.
    name       TEXT    NOT NULL,
    started    INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX workers_last_seen ON workers (last_seen);

-- What each worker serves (refreshed by its claims and heartbeats): which versions of which
-- deployments have a live worker.
CREATE TABLE worker_deployments (
    worker     BLOB    NOT NULL,
    flow       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (worker, flow, name, version)
) WITHOUT ROWID;
CREATE INDEX worker_deployments_by_deployment ON worker_deployments (flow, name, last_seen);

-- The output of a completed deployed run, as JSON bytes, whatever its size (bounded by the
-- server's result limit). Deleted with its run by retention.
CREATE TABLE run_results (
    run_id   BLOB    NOT NULL PRIMARY KEY,
    result   BLOB    NOT NULL,
    bytes    INTEGER NOT NULL,
    created  INTEGER NOT NULL
);

-- Events refused because they carried a stale fencing token, per worker name (the dashboard
-- and tests read the count).
CREATE TABLE stale_events (
    worker     TEXT    NOT NULL PRIMARY KEY,
    refused    INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
