-- Alert rules and their deliveries, SQLite flavour (conventions as in 0001; the PostgreSQL
-- migration of the same number holds the same logical schema).

-- One row per rule. `spec` is the AlertRuleSpec as sent, target URLs in full (the API shows
-- them masked). `absence_notified` is the `last_seen` of the absence of workers already
-- notified (worker_absent_for), so each absence is notified once.
CREATE TABLE alert_rules (
    id                BLOB    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL,
    spec              TEXT    NOT NULL,
    created           INTEGER NOT NULL,
    absence_notified  INTEGER
);

-- Flow runs that entered a state a rule may list, waiting for the matcher (crate::alerts).
-- Written by the triggers below in the same transaction as the state change, whichever path
-- changed it (ingestion, the reaper, the scheduler, cancel, finish), so no change is lost and
-- none of those paths does more than this one small insert — and only while rules exist.
-- The matcher reads them oldest first and deletes them.
CREATE TABLE alert_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   BLOB    NOT NULL,
    state    TEXT    NOT NULL,
    attempt  INTEGER NOT NULL,
    message  TEXT
);

CREATE TRIGGER alert_events_on_insert AFTER INSERT ON runs
WHEN NEW.kind = 'flow'
    AND NEW.state IN ('Failed', 'Crashed', 'TimedOut', 'Late', 'Expired', 'Cancelled')
    AND EXISTS (SELECT 1 FROM alert_rules)
BEGIN
    INSERT INTO alert_events (run_id, state, attempt, message)
    VALUES (NEW.id, NEW.state, NEW.attempt, NEW.state_message);
END;

CREATE TRIGGER alert_events_on_update AFTER UPDATE OF state, attempt ON runs
WHEN NEW.kind = 'flow'
    AND NEW.state IN ('Failed', 'Crashed', 'TimedOut', 'Late', 'Expired', 'Cancelled')
    AND (OLD.state IS NOT NEW.state OR OLD.attempt IS NOT NEW.attempt)
    AND EXISTS (SELECT 1 FROM alert_rules)
BEGIN
    INSERT INTO alert_events (run_id, state, attempt, message)
    VALUES (NEW.id, NEW.state, NEW.attempt, NEW.state_message);
END;

-- The quiet period of each rule per flow and deployment (`scope`): when a message was last
-- created, and how many were held back since.
CREATE TABLE alert_quiet (
    rule_id     BLOB    NOT NULL,
    scope       TEXT    NOT NULL,
    last_sent   INTEGER NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rule_id, scope)
) WITHOUT ROWID;

-- One message of a rule to one of its targets. `next_attempt` is when it is due (pending);
-- a replica that claims it moves `next_attempt` past the send's timeout (its lease), so no
-- other replica sends it meanwhile, and raises `attempt_count`, which fences the outcome.
CREATE TABLE alert_deliveries (
    id             BLOB    NOT NULL PRIMARY KEY,
    rule_id        BLOB    NOT NULL,
    run_id         BLOB,
    state          TEXT,
    target         TEXT    NOT NULL CHECK (target IN ('webhook', 'slack')),
    status         TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    -- The Alert as JSON: what is sent.
    alert          TEXT    NOT NULL,
    created        INTEGER NOT NULL,
    next_attempt   INTEGER,
    delivered      INTEGER,
    attempt_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt) WHERE status = 'pending';
CREATE INDEX alert_deliveries_of_rule ON alert_deliveries (rule_id, created DESC, id DESC);

-- Every attempt of a delivery: when, the receiver's status code or the error.
CREATE TABLE alert_attempts (
    delivery_id  BLOB    NOT NULL,
    n            INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID;
