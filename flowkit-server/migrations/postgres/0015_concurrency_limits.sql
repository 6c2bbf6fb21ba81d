-- Tag concurrency limits of deployed runs (see the SQLite migration of the same number). A
-- claim locks the rows of the limited tags its runs carry (`FOR UPDATE`, in tag order) while
-- it counts their leased runs, so claims on several replicas take turns per tag.
CREATE TABLE concurrency_limits (
    tag      text        NOT NULL PRIMARY KEY,
    slots    bigint      NOT NULL,
    updated  timestamptz NOT NULL
);
