//! Tag-based concurrency limits.
//!
//! `flowkit::limits().set("db", 4)` allows at most four runs tagged `db` to execute at once in
//! this process, whether they were started by a plain call, `submit` or `map`. A run holds
//! its slots during each attempt and gives them back while it waits to retry.
//!
//! ```
//! flowkit::limits().set("db", 4);
//! assert_eq!(flowkit::limits().get("db"), Some(4));
//! flowkit::limits().remove("db");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of this process, by tag.
#[derive(Debug, Default)]
pub struct Limits {
    by_tag: RwLock<HashMap<String, (usize, Arc<Semaphore>)>>,
}

/// The limits of this process.
pub fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(Limits::default)
}

/// Takes `n` permits of `sem` out of circulation as soon as they are released: on the current
/// tokio runtime if there is one, else on a short-lived thread.
fn retire_permits(sem: Arc<Semaphore>, n: usize) {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let retire = async move {
        if let Ok(permits) = sem.acquire_many_owned(n).await {
            permits.forget();
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(retire);
        }
        Err(_) => {
            let _ = std::thread::Builder::new()
                .name("flowkit-limits".into())
                .spawn(move || futures::executor::block_on(retire));
        }
    }
}

/// Slots held by one attempt; dropping it gives them back.
#[derive(Debug)]
pub(crate) struct Slots {
    #[allow(dead_code)]
    permits: Vec<OwnedSemaphorePermit>,
    /// The tags whose slots these are.
    pub tags: Vec<String>,
}

impl Limits {
    /// Allows at most `max` concurrent runs tagged `tag` (at least one). Changing an existing
    /// limit resizes it in place: runs holding or waiting for a slot stay counted. When it
    /// shrinks below the runs holding slots now, new runs wait until enough have finished.
    pub fn set(&self, tag: impl Into<String>, max: usize) -> &Self {
        let max = max.max(1);
        let Ok(mut map) = self.by_tag.write() else {
            return self;
        };
        let tag = tag.into();
        match map.get_mut(&tag) {
            None => {
                map.insert(tag, (max, Arc::new(Semaphore::new(max))));
            }
            Some((old, sem)) if max > *old => {
                sem.add_permits(max - *old);
                *old = max;
            }
            Some((old, sem)) if max < *old => {
                let excess = *old - max;
                let forgotten = sem.forget_permits(excess);
                *old = max;
                if forgotten < excess {
                    // Slots in use now: take the rest back as they are released.
                    retire_permits(Arc::clone(sem), excess - forgotten);
                }
            }
            Some(_) => {}
        }
        self
    }

    /// The limit for `tag`, if one is set.
    pub fn get(&self, tag: &str) -> Option<usize> {
        self.by_tag.read().ok()?.get(tag).map(|(max, _)| *max)
    }

    /// Removes the limit for `tag`.
    pub fn remove(&self, tag: &str) -> &Self {
        if let Ok(mut map) = self.by_tag.write() {
            map.remove(tag);
        }
        self
    }

    /// Takes a slot for every limited tag among `static_tags` and `extra`, in a fixed order
    /// so two runs with overlapping tags cannot deadlock. Returns `None` at once when no tag
    /// is limited.
    pub(crate) async fn acquire(
        &self,
        static_tags: &[&str],
        extra: &[String],
        held: &[String],
    ) -> Option<Slots> {
        if static_tags.is_empty() && extra.is_empty() {
            return None;
        }
        let mut sems: Vec<(String, Arc<Semaphore>)> = {
            let map = self.by_tag.read().ok()?;
            if map.is_empty() {
                return None;
            }
            static_tags
                .iter()
                .copied()
                .chain(extra.iter().map(String::as_str))
                .filter(|t| !held.iter().any(|h| h == t))
                .filter_map(|t| map.get(t).map(|(_, s)| (t.to_string(), Arc::clone(s))))
                .collect()
        };
        if sems.is_empty() {
            return None;
        }
        sems.sort_by(|a, b| a.0.cmp(&b.0));
        sems.dedup_by(|a, b| a.0 == b.0);
        let mut permits = Vec::with_capacity(sems.len());
        let mut tags = Vec::with_capacity(sems.len());
        for (tag, sem) in sems {
            // A semaphore is never closed here, so acquiring only fails if that changes.
            if let Ok(p) = sem.acquire_owned().await {
                permits.push(p);
                tags.push(tag);
            }
        }
        Some(Slots { permits, tags })
    }
}
