-- Alert rules and their deliveries, PostgreSQL flavour (the SQLite migration of the same number
-- holds the same logical schema and explains it).

CREATE TABLE alert_rules (
    id                uuid        NOT NULL PRIMARY KEY,
    name              text        NOT NULL,
    spec              json        NOT NULL,
    created           timestamptz NOT NULL,
    absence_notified  timestamptz
);

CREATE TABLE alert_events (
    seq      bigserial   PRIMARY KEY,
    run_id   uuid        NOT NULL,
    state    text        NOT NULL,
    attempt  bigint      NOT NULL,
    message  text
);

CREATE FUNCTION flowkit_alert_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM alert_rules) THEN
        INSERT INTO alert_events (run_id, state, attempt, message)
        VALUES (NEW.id, NEW.state, NEW.attempt, NEW.state_message);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alert_events_on_insert AFTER INSERT ON runs FOR EACH ROW
WHEN (NEW.kind = 'flow'
    AND NEW.state IN ('Failed', 'Crashed', 'TimedOut', 'Late', 'Expired', 'Cancelled'))
EXECUTE FUNCTION flowkit_alert_event();

CREATE TRIGGER alert_events_on_update AFTER UPDATE OF state, attempt ON runs FOR EACH ROW
WHEN (NEW.kind = 'flow'
    AND NEW.state IN ('Failed', 'Crashed', 'TimedOut', 'Late', 'Expired', 'Cancelled')
    AND (OLD.state IS DISTINCT FROM NEW.state OR OLD.attempt IS DISTINCT FROM NEW.attempt))
EXECUTE FUNCTION flowkit_alert_event();

CREATE TABLE alert_quiet (
    rule_id     uuid        NOT NULL,
    scope       text        NOT NULL,
    last_sent   timestamptz NOT NULL,
    suppressed  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (rule_id, scope)
);

CREATE TABLE alert_deliveries (
    id             uuid        NOT NULL PRIMARY KEY,
    rule_id        uuid        NOT NULL,
    run_id         uuid,
    state          text,
    target         text        NOT NULL CHECK (target IN ('webhook', 'slack')),
    status         text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    alert          json        NOT NULL,
    created        timestamptz NOT NULL,
    next_attempt   timestamptz,
    delivered      timestamptz,
    attempt_count  bigint      NOT NULL DEFAULT 0
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt) WHERE status = 'pending';
CREATE INDEX alert_deliveries_of_rule ON alert_deliveries (rule_id, created DESC, id DESC);

CREATE TABLE alert_attempts (
    delivery_id  uuid        NOT NULL,
    n            bigint      NOT NULL,
    at           timestamptz NOT NULL,
    status_code  bigint,
    error        text,
    PRIMARY KEY (delivery_id, n)
);
