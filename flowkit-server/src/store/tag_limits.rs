//! Tag concurrency limits of deployed runs, in the `concurrency_limits` table (migration
//! 0015): the queries behind `/api/v1/concurrency-limits`, and [`TagSlots`], what a claim
//! (`super::leases::claim`) asks before it leases a run carrying a tag.
//!
//! A limit is counted from the runs leased now (`lease_expires IS NOT NULL`), never from a
//! counter: a run's slot comes back when its lease ends, however it ends (finished, released,
//! or decided by the reaper when its worker died). On PostgreSQL a claim locks the rows of
//! the limits it checks (`FOR UPDATE`, in tag order, after the deployments' rows it locks) for
//! the rest of its transaction, so claims of runs sharing a tag take turns on every replica
//! and none counts before another's leases are committed; a second look at tags it had not
//! seen skips the rows others hold (`SKIP LOCKED`) instead of waiting, so no two claims ever
//! wait for each other in a cycle. On SQLite the one writer runs claims one at a time.

use super::dialect::{Dialect, PushBind, begin_write, xact_lock};
use super::queries::{Columns, Maintenance, Written, push_list};
use super::{Db, Store, StoreError, unexpected};
use chrono::{DateTime, Utc};
use flowkit_wire::api::concurrency_limits::{ConcurrencyLimit, MAX_LIMITS};
use sqlx::{Pool, QueryBuilder};
use std::collections::{BTreeSet, HashMap};

/// The name of the lock setting a limit holds while it counts the limits (PostgreSQL:
/// concurrent creates on several connections or replicas wait for each other, so
/// [`MAX_LIMITS`] holds).
const LIMITS_LOCK: i64 = 0x666b_6c69_6d69_7473; // "fklimits"

/// Tags per statement of a claim's look-ups.
const CHUNK: usize = 200;

/// Sets `tag`'s limit to `slots` as of `now` (creating it unless [`MAX_LIMITS`] are kept
/// already: then 0; else 1).
pub(crate) async fn set<D: Dialect>(
    conn: &mut D::Connection,
    tag: &str,
    slots: u32,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    xact_lock::<D>(&mut tx, LIMITS_LOCK).await?;
    let mut q = QueryBuilder::new("SELECT COUNT(*) AS n FROM concurrency_limits WHERE tag <> ");
    q.bind(D::text(tag));
    let row = D::fetch_optional(&mut tx, &mut q).await?;
    let others: i64 = row
        .map(|r| Columns::<D>(&r).get("n"))
        .transpose()?
        .unwrap_or(0);
    if others >= MAX_LIMITS as i64 {
        return Ok(0);
    }
    let mut q = QueryBuilder::new("INSERT INTO concurrency_limits (tag, slots, updated) VALUES (");
    q.bind(D::text(tag))
        .push(", ")
        .bind(i64::from(slots))
        .push(", ")
        .bind_instant(now)
        .push(
            ") ON CONFLICT (tag) DO UPDATE SET slots = excluded.slots, \
             updated = excluded.updated",
        );
    D::execute(&mut tx, &mut q).await?;
    tx.commit().await?;
    Ok(1)
}

/// Deletes `tag`'s limit; 1 when there was one.
pub(crate) async fn delete<D: Dialect>(
    conn: &mut D::Connection,
    tag: &str,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("DELETE FROM concurrency_limits WHERE tag = ");
    q.bind(D::text(tag));
    let deleted = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(deleted)
}

/// Every limit (at most [`MAX_LIMITS`]) by tag, or only `tag`'s, with the runs leased now.
async fn read<D: Dialect>(
    pool: &Pool<D>,
    tag: Option<&str>,
) -> Result<Vec<ConcurrencyLimit>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut q = QueryBuilder::new("SELECT tag, slots, updated FROM concurrency_limits");
    if let Some(tag) = tag {
        q.push(" WHERE tag = ").bind(D::text(tag));
    }
    q.push(" ORDER BY tag LIMIT ").bind(MAX_LIMITS as i64);
    let mut limits = Vec::new();
    for row in D::fetch_all(&mut *conn, &mut q).await? {
        let c = Columns::<D>(&row);
        limits.push(ConcurrencyLimit {
            tag: c.get("tag")?,
            limit: u32::try_from(c.get::<i64>("slots")?).unwrap_or(u32::MAX),
            leased: 0,
            updated: c.instant("updated")?,
        });
    }
    if limits.is_empty() {
        return Ok(limits);
    }
    let tags: Vec<String> = limits.iter().map(|l| l.tag.clone()).collect();
    let leased = count_leased::<D>(&mut conn, &tags).await?;
    for limit in &mut limits {
        limit.leased = leased
            .get(&limit.tag)
            .and_then(|n| u64::try_from(*n).ok())
            .unwrap_or(0);
    }
    Ok(limits)
}

/// The runs leased now carrying each of `tags` (those with none left out).
async fn count_leased<D: Dialect>(
    conn: &mut D::Connection,
    tags: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut counts = HashMap::new();
    for chunk in tags.chunks(CHUNK) {
        let mut q = QueryBuilder::new("");
        for (i, tag) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push(format!(
                "SELECT CAST({i} AS BIGINT) AS k, COUNT(*) AS n FROM runs \
                 WHERE lease_expires IS NOT NULL"
            ));
            D::push_has_tag(&mut q, tag);
        }
        for row in D::fetch_all(conn, &mut q).await? {
            let c = Columns::<D>(&row);
            let (k, n): (i64, i64) = (c.get("k")?, c.get("n")?);
            if let Some(tag) = usize::try_from(k).ok().and_then(|k| chunk.get(k))
                && n > 0
            {
                counts.insert(tag.clone(), n);
            }
        }
    }
    Ok(counts)
}

/// How a claim locks the limits it looks up (PostgreSQL; SQLite's writer needs no lock).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Waits for the rows (the first look-up of a claim: one statement, in tag order).
    Wait,
    /// Skips the rows other claims hold: their tags count as full for this claim (a later
    /// look-up, which must not wait while holding the first one's locks).
    Skip,
}

/// A limited tag as a claim sees it.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// At most `limit` leased; `leased` now, the claim's own included.
    Limited { limit: i64, leased: i64 },
    /// Its row is held by another claim (see [`Lock::Skip`]): no run carrying it this time.
    Busy,
}

/// The tag limits a claim has looked up: which of the tags it saw are limited, and the
/// slots they have left as it leases runs.
#[derive(Default)]
pub(crate) struct TagSlots {
    /// The tags looked up, limited or not.
    seen: BTreeSet<String>,
    /// The limited ones.
    limited: HashMap<String, Slot>,
}

impl TagSlots {
    /// Looks up the limits of the tags of `tags` not seen yet, locking them as `lock` says,
    /// and counts the runs leased with those that are limited.
    pub(crate) async fn look_up<'t, D: Dialect>(
        &mut self,
        tx: &mut D::Connection,
        tags: impl IntoIterator<Item = &'t String>,
        lock: Lock,
    ) -> Result<(), StoreError> {
        let new: BTreeSet<String> = tags
            .into_iter()
            .filter(|tag| !self.seen.contains(*tag))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let new: Vec<String> = new.into_iter().collect();
        let mut found: Vec<(String, i64)> = Vec::new();
        for chunk in new.chunks(CHUNK) {
            let mut q =
                QueryBuilder::new("SELECT tag, slots FROM concurrency_limits WHERE tag IN (");
            push_list(&mut q, chunk.iter().map(|t| D::text(t)));
            q.push(") ORDER BY tag");
            if lock == Lock::Wait {
                q.push(D::FOR_UPDATE);
            }
            for row in D::fetch_all(tx, &mut q).await? {
                let c = Columns::<D>(&row);
                found.push((c.get("tag")?, c.get("slots")?));
            }
        }
        let mut held: Option<BTreeSet<String>> = None;
        if lock == Lock::Skip && !D::FOR_UPDATE.is_empty() && !found.is_empty() {
            let mut got = BTreeSet::new();
            for chunk in found.chunks(CHUNK) {
                let mut q = QueryBuilder::new("SELECT tag FROM concurrency_limits WHERE tag IN (");
                push_list(&mut q, chunk.iter().map(|(t, _)| t.clone()));
                q.push(") ORDER BY tag").push(D::SKIP_LOCKED);
                for row in D::fetch_all(tx, &mut q).await? {
                    got.insert(Columns::<D>(&row).get::<String>("tag")?);
                }
            }
            held = Some(got);
        }
        let counted: Vec<String> = found
            .iter()
            .filter(|(tag, _)| held.as_ref().is_none_or(|got| got.contains(tag)))
            .map(|(tag, _)| tag.clone())
            .collect();
        let leased = count_leased::<D>(tx, &counted).await?;
        for (tag, limit) in found {
            let slot = if held.as_ref().is_none_or(|got| got.contains(&tag)) {
                Slot::Limited {
                    limit,
                    leased: leased.get(&tag).copied().unwrap_or(0),
                }
            } else {
                Slot::Busy
            };
            self.limited.insert(tag, slot);
        }
        self.seen.extend(new);
        Ok(())
    }

    /// Whether a claim has looked up any limited tag.
    pub(crate) fn any_limited(&self) -> bool {
        !self.limited.is_empty()
    }

    /// The limited tags with no slot left (or held by another claim).
    pub(crate) fn full(&self) -> Vec<String> {
        self.limited
            .iter()
            .filter(|(_, slot)| match slot {
                Slot::Limited { limit, leased } => leased >= limit,
                Slot::Busy => true,
            })
            .map(|(tag, _)| tag.clone())
            .collect()
    }

    /// Whether a run carrying `tags` may be leased: every tag was looked up, and each limited
    /// one has a slot left.
    pub(crate) fn admits(&self, tags: &[String]) -> bool {
        tags.iter().all(|tag| {
            self.seen.contains(tag)
                && match self.limited.get(tag) {
                    None => true,
                    Some(Slot::Limited { limit, leased }) => leased < limit,
                    Some(Slot::Busy) => false,
                }
        })
    }

    /// Takes a slot of each limited tag of `tags` (a run carrying them was leased).
    pub(crate) fn take(&mut self, tags: &[String]) {
        for tag in tags {
            if let Some(Slot::Limited { leased, .. }) = self.limited.get_mut(tag) {
                *leased += 1;
            }
        }
    }
}

impl Store {
    /// Sets `tag`'s limit to `slots` (created or replaced) as of `now`; `false` when it would be
    /// a new one and [`MAX_LIMITS`] are kept already.
    pub async fn set_concurrency_limit(
        &self,
        tag: &str,
        slots: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let task = Maintenance::SetTagLimit {
            tag: tag.to_string(),
            slots,
            now,
        };
        match self.maintain(task).await? {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `tag`'s limit; `false` when there was none.
    pub async fn delete_concurrency_limit(&self, tag: &str) -> Result<bool, StoreError> {
        match self
            .maintain(Maintenance::DeleteTagLimit(tag.to_string()))
            .await?
        {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    /// Every limit (at most [`MAX_LIMITS`]), by tag, with the runs leased now.
    pub async fn concurrency_limits(&self) -> Result<Vec<ConcurrencyLimit>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => read(b.pool(), None).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => read(b.pool(), None).await,
        }
    }

    /// `tag`'s limit with the runs leased now, if it has one.
    pub async fn concurrency_limit(
        &self,
        tag: &str,
    ) -> Result<Option<ConcurrencyLimit>, StoreError> {
        let found = match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => read(b.pool(), Some(tag)).await?,
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => read(b.pool(), Some(tag)).await?,
        };
        Ok(found.into_iter().next())
    }

    async fn maintain(&self, task: Maintenance) -> Result<Written, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => b.maintain(task).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => b.maintain(task).await,
        }
    }
}
