-- Tag concurrency limits of deployed runs (conventions as in 0001; the PostgreSQL migration of
-- the same number holds the same logical schema). A claim leases a run carrying `tag` only
-- while fewer than `slots` runs carrying it are leased (counted from `runs_leased`, so a
-- killed worker's slot comes back when its lease ends); see `store::tag_limits`.
CREATE TABLE concurrency_limits (
    tag      TEXT    NOT NULL PRIMARY KEY,
    slots    INTEGER NOT NULL,
    updated  INTEGER NOT NULL
);
