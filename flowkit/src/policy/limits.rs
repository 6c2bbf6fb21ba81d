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

/// Slots held by one attempt; dropping it gives them back.
#[derive(Debug)]
pub(crate) struct Slots(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

impl Limits {
    /// Allows at most `max` concurrent runs tagged `tag` (at least one). Runs already holding
    /// a slot under an earlier limit keep it until they finish.
    pub fn set(&self, tag: impl Into<String>, max: usize) -> &Self {
        let max = max.max(1);
        if let Ok(mut map) = self.by_tag.write() {
            map.insert(tag.into(), (max, Arc::new(Semaphore::new(max))));
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
    pub(crate) async fn acquire(&self, static_tags: &[&str], extra: &[String]) -> Option<Slots> {
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
                .filter_map(|t| map.get(t).map(|(_, s)| (t.to_string(), Arc::clone(s))))
                .collect()
        };
        if sems.is_empty() {
            return None;
        }
        sems.sort_by(|a, b| a.0.cmp(&b.0));
        sems.dedup_by(|a, b| a.0 == b.0);
        let mut permits = Vec::with_capacity(sems.len());
        for (_, sem) in sems {
            // A semaphore is never closed here, so acquiring only fails if that changes.
            if let Ok(p) = sem.acquire_owned().await {
                permits.push(p);
            }
        }
        Some(Slots(permits))
    }
}
