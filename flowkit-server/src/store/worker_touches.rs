//! Which workers this server recorded lately. A claim records its worker (`last_seen` and
//! what it serves: see `store::leases`) when this server has not done so in the last
//! [`TOUCH_EVERY`] or when what it serves changed; the claims in between skip those two
//! upserts. A worker stays live for a lease after it was last seen and heartbeats every third
//! of one, so this delays nothing a reader sees by more than [`TOUCH_EVERY`].

use super::WorkerSeen;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The longest a claim goes without recording its worker.
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(2);
/// Most workers remembered (beyond, the memory is cleared: the next claims record theirs).
pub(crate) const MAX_REMEMBERED: usize = 10_000;

/// When this server last recorded each worker, and a hash of what it served then.
#[derive(Debug, Default)]
pub(crate) struct WorkerTouches {
    seen: Mutex<HashMap<Uuid, (Instant, u64)>>,
}

impl WorkerTouches {
    /// Whether a claim of `worker` records it now (if so, remembered as recorded now).
    pub(crate) fn due(&self, worker: &WorkerSeen) -> bool {
        let mut hasher = DefaultHasher::new();
        worker.name.hash(&mut hasher);
        for served in &worker.served {
            (&served.flow, &served.name, &served.version).hash(&mut hasher);
        }
        let served = hasher.finish();
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        if let Some(&(at, hash)) = seen.get(&worker.id)
            && hash == served
            && now.duration_since(at) < TOUCH_EVERY
        {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&worker.id) {
            seen.clear();
        }
        seen.insert(worker.id, (now, served));
        true
    }

    /// Forgets `worker` (its record failed with the claim's transaction).
    pub(crate) fn forget(&self, worker: Uuid) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&worker);
        }
    }

    /// Workers remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowkit_wire::api::workers::Served;

    fn worker(version: &str) -> WorkerSeen {
        WorkerSeen {
            id: Uuid::now_v7(),
            name: "w:1".into(),
            served: vec![Served::new("train", "nightly", version)],
        }
    }

    #[test]
    fn a_worker_is_recorded_again_when_what_it_serves_changes() {
        let touches = WorkerTouches::default();
        let mut w = worker("v1");
        assert!(touches.due(&w), "the first claim records the worker");
        assert!(!touches.due(&w), "the next one, at once, does not");
        w.served = vec![Served::new("train", "nightly", "v2")];
        assert!(
            touches.due(&w),
            "another version served is recorded at once"
        );
        touches.forget(w.id);
        assert!(touches.due(&w), "a forgotten worker is recorded again");
    }

    #[test]
    fn the_memory_is_bounded() {
        let touches = WorkerTouches::default();
        for _ in 0..MAX_REMEMBERED + 10 {
            assert!(touches.due(&worker("v1")));
        }
        assert!(touches.len() <= MAX_REMEMBERED);
    }
}
