//! Recent answers of `GET /api/stats`, reused for `Settings::stats_ttl` (default 1 s): the
//! dashboard asks for the last 24 hours about once a second per open tab, and counting a
//! day of runs can take the database half a second at 500 000 runs. Within the TTL every
//! request for the same window gets the same answer, and concurrent requests wait for one
//! computation instead of each running the query. The default window (`until` = now) is one
//! entry per bucket count, its answer as of when it was computed, so it is at most the TTL
//! old. At most [`MAX_ENTRIES`] windows are kept.
//!
//! The default window's buckets are aligned to their width (whole hours for 24 buckets), so
//! that its closed buckets (all but the current one) are the same from one answer to the
//! next: each is counted once and reused for [`CLOSED_TTL_FACTOR`] times the TTL (15 s by
//! default), while the current bucket is counted again for every answer
//! ([`StatsCache::closed_buckets`]). Counting a day at 500 000 runs then costs the database
//! about a 24th of the full count each second, and the full count once every 15 s. The price:
//! a change to a run created in an earlier bucket (it ended, or arrived late) shows in the
//! chart within 15 s rather than 1 s. At most [`MAX_CLOSED_BUCKETS`] buckets are kept.

use flowkit_wire::api::stats::Stats;
use flowkit_wire::state::StateType;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Most windows kept.
pub const MAX_ENTRIES: usize = 64;

/// A closed bucket of the default window is reused for this many times the TTL.
pub const CLOSED_TTL_FACTOR: u32 = 15;

/// Most closed buckets kept (over every bucket width asked for); past it, all are dropped.
pub const MAX_CLOSED_BUCKETS: usize = 4096;

/// Counts of one bucket by state.
pub type BucketCounts = Vec<(StateType, u64)>;

/// Which answer: the default window (aligned buckets, the last holding now), the exact last
/// 24 hours of the metrics, or an explicit window, in microseconds since the epoch, with its
/// number of buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsKey {
    /// `since` and `until` not given: buckets aligned to their width, the last holding now.
    Recent {
        /// Buckets asked for.
        buckets: u32,
    },
    /// Exactly the last 24 hours, one bucket (the `flowkit_flow_runs` metric).
    Day,
    /// An explicit window.
    Window {
        /// Its start.
        since: i64,
        /// Its end.
        until: i64,
        /// Buckets asked for.
        buckets: u32,
    },
}

/// The cache; see the module documentation.
#[derive(Debug)]
pub struct StatsCache {
    ttl: Duration,
    entries: Mutex<Vec<(StatsKey, Instant, Stats)>>,
    computed: AtomicU64,
    /// Closed buckets by (width, start), in microseconds, with when they were counted.
    closed: Mutex<HashMap<(i64, i64), (Instant, BucketCounts)>>,
    closed_counted: AtomicU64,
}

impl StatsCache {
    /// A cache keeping answers for `ttl` (zero: never reused).
    pub fn new(ttl: Duration) -> StatsCache {
        StatsCache {
            ttl,
            entries: Mutex::new(Vec::new()),
            computed: AtomicU64::new(0),
            closed: Mutex::new(HashMap::new()),
            closed_counted: AtomicU64::new(0),
        }
    }

    /// The counts of the closed buckets of `width` µs starting at `starts` (consecutive, in
    /// order), each reused while it was counted less than [`CLOSED_TTL_FACTOR`] × the TTL ago.
    /// The others are counted by `count(from, to, buckets)` (one call per run of consecutive
    /// stale buckets, answering one entry per bucket), and kept. Requests arriving meanwhile
    /// wait for it.
    pub async fn closed_buckets<E, F, Fut>(
        &self,
        width: i64,
        starts: &[i64],
        mut count: F,
    ) -> Result<Vec<BucketCounts>, E>
    where
        F: FnMut(i64, i64, u32) -> Fut,
        Fut: Future<Output = Result<Vec<BucketCounts>, E>>,
    {
        let ttl = self.ttl.saturating_mul(CLOSED_TTL_FACTOR);
        let mut closed = self.closed.lock().await;
        let now = Instant::now();
        let mut found: Vec<Option<BucketCounts>> = starts
            .iter()
            .map(|start| {
                closed
                    .get(&(width, *start))
                    .filter(|(at, _)| now.duration_since(*at) < ttl)
                    .map(|(_, counts)| counts.clone())
            })
            .collect();
        let mut i = 0;
        while i < starts.len() {
            if found[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < starts.len() && found[j].is_none() {
                j += 1;
            }
            let buckets = u32::try_from(j - i).unwrap_or(u32::MAX);
            let counted = count(starts[i], starts[j - 1] + width, buckets).await?;
            self.closed_counted
                .fetch_add(u64::from(buckets), Ordering::Relaxed);
            if closed.len() + counted.len() > MAX_CLOSED_BUCKETS {
                closed.clear();
            }
            for (k, counts) in (i..j).zip(counted) {
                closed.insert((width, starts[k]), (now, counts.clone()));
                found[k] = Some(counts);
            }
            i = j;
        }
        // Buckets of this width that left the window are not asked for again.
        if let Some(first) = starts.first() {
            closed.retain(|(w, start), _| *w != width || start >= first);
        }
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// How many closed buckets were counted (not reused) since start.
    pub fn closed_counted(&self) -> u64 {
        self.closed_counted.load(Ordering::Relaxed)
    }

    /// The answer for `key`: a fresh cached one, or `compute`'s (cached when it succeeds).
    /// Requests arriving while one computes wait for it.
    pub async fn get_or_compute<E, F, Fut>(&self, key: StatsKey, compute: F) -> Result<Stats, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Stats, E>>,
    {
        let mut entries = self.entries.lock().await;
        let now = Instant::now();
        entries.retain(|(_, at, _)| now.duration_since(*at) < self.ttl);
        if let Some((_, _, stats)) = entries.iter().find(|(k, _, _)| *k == key) {
            return Ok(stats.clone());
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        let stats = compute().await?;
        if !self.ttl.is_zero() {
            if entries.len() >= MAX_ENTRIES {
                entries.remove(0);
            }
            entries.push((key, Instant::now(), stats.clone()));
        }
        Ok(stats)
    }

    /// How many answers were computed (not served from the cache) since start.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }
}
