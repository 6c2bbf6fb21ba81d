//! Recent answers of `GET /api/stats`, reused for `Settings::stats_ttl` (default 1 s): the
//! dashboard asks for the last 24 hours about once a second per open tab, and counting a
//! day of runs can take the database half a second at 500 000 runs. Within the TTL every
//! request for the same window gets the same answer, and concurrent requests wait for one
//! computation instead of each running the query. The default window (`until` = now) is one
//! entry per bucket count, its answer as of when it was computed, so it is at most the TTL
//! old. At most [`MAX_ENTRIES`] windows are kept.

use flowkit_wire::api::stats::Stats;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Most windows kept.
pub const MAX_ENTRIES: usize = 64;

/// Which answer: the default window (the last 24 hours up to now) or an explicit one, in
/// microseconds since the epoch, with its number of buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsKey {
    /// `since` and `until` not given.
    Recent {
        /// Buckets asked for.
        buckets: u32,
    },
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
}

impl StatsCache {
    /// A cache keeping answers for `ttl` (zero: never reused).
    pub fn new(ttl: Duration) -> StatsCache {
        StatsCache {
            ttl,
            entries: Mutex::new(Vec::new()),
            computed: AtomicU64::new(0),
        }
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
