//! Backfills: the runs of a past range of a deployment's schedules, created at once under the
//! same permanent keys (schedule, instant) as the scheduler's tick, so an instant that already
//! has a run — by the tick, by an earlier backfill, on any replica — gets none.
//!
//! A backfill's runs are `Scheduled` with `scheduled_for` = their instant, `created_by` =
//! `backfill:` followed by who asked (`backfill:key:NAME`, `backfill:local`), and the tags
//! `backfill` and `backfill:ID` (its id), or `backfill:ID:max_parallel=N` when it limits how
//! many run at once. They never become `Late` or `Expired` (they are late by design).
//!
//! **`max_parallel`** is enforced by the claim, next to the deployment's concurrency limit and
//! in the same transaction (on PostgreSQL under the same lock of the deployment's row): the
//! claim counts the leased runs of each limited backfill and leaves its other runs out of the
//! search while it has `max_parallel` leased, so they neither run nor hide the deployment's
//! other runs behind them. A run whose lease ends frees its place for the next one, oldest
//! instant first.

use uuid::Uuid;

/// The tag every backfill's runs carry.
pub const TAG: &str = "backfill";

/// The tag of backfill `id`'s runs: `backfill:ID`, with `:max_parallel=N` when it limits how
/// many run at once.
pub fn tag(id: Uuid, max_parallel: Option<u32>) -> String {
    match max_parallel {
        Some(n) => format!("{TAG}:{id}:max_parallel={n}"),
        None => format!("{TAG}:{id}"),
    }
}

/// The backfill and its `max_parallel` of a run's tag, when the tag is one of a limited
/// backfill.
pub fn limit_of(tag: &str) -> Option<(Uuid, u32)> {
    let rest = tag.strip_prefix(TAG)?.strip_prefix(':')?;
    let (id, limit) = rest.split_once(":max_parallel=")?;
    Some((Uuid::parse_str(id).ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_the_backfill_and_its_limit() {
        let id = Uuid::now_v7();
        assert_eq!(limit_of(&tag(id, Some(3))), Some((id, 3)));
        assert_eq!(limit_of(&tag(id, None)), None);
        assert_eq!(limit_of(TAG), None);
        assert_eq!(limit_of("backfill:nope:max_parallel=2"), None);
        assert_eq!(limit_of(&format!("backfill:{id}:max_parallel=x")), None);
    }
}
