//! The in-memory layer of the cache: a hash table over a slot vector, bounded in bytes and
//! entries, evicted with the CLOCK algorithm (an approximation of LRU whose hit path only sets
//! a flag).

use super::key::{CacheKey, KeyHasher};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default bound of the in-memory layer, in bytes (payloads plus bookkeeping).
pub(crate) const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Default bound of the in-memory layer, in entries.
pub(crate) const DEFAULT_MEMORY_ENTRIES: usize = 16 * 1024;

/// What one memory entry costs beyond its payload (key, timestamps, slot, index), roughly;
/// counted so that many tiny entries are bounded too.
pub(super) const ENTRY_OVERHEAD: usize = 128;

/// How old an entry created at `created` is. An entry from the future (clock skew between
/// processes) counts as brand new.
pub(super) fn age(created: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(created)
        .unwrap_or(Duration::ZERO)
}

/// One entry.
pub(super) struct Slot {
    pub(super) key: CacheKey,
    created: SystemTime,
    pub(super) value: Arc<[u8]>,
    /// Set by a hit, cleared by the sweeping hand: an entry is evicted when the hand finds it
    /// clear, i.e. not used for a whole sweep.
    referenced: bool,
}

/// The table. Its fields are open to the store, which reports them in `Debug` and whose tests
/// check the bounds.
pub(super) struct Memory {
    pub(super) index: HashMap<CacheKey, usize, BuildHasherDefault<KeyHasher>>,
    pub(super) slots: Vec<Slot>,
    hand: usize,
    pub(super) bytes: usize,
    pub(super) max_bytes: usize,
    pub(super) max_entries: usize,
}

pub(super) fn cost(value: &[u8]) -> usize {
    value.len().saturating_add(ENTRY_OVERHEAD)
}

impl Memory {
    pub(super) fn new(max_bytes: usize, max_entries: usize) -> Memory {
        Memory {
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            bytes: 0,
            max_bytes,
            max_entries,
        }
    }

    #[cfg(test)]
    pub(super) fn set_limits(&mut self, max_bytes: usize, max_entries: usize) {
        self.max_bytes = max_bytes;
        self.max_entries = max_entries;
        self.evict();
    }

    pub(super) fn get(&mut self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        let &i = self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        if ttl.is_some_and(|ttl| age(slot.created) > ttl) {
            return None;
        }
        slot.referenced = true;
        Some(Arc::clone(&slot.value))
    }

    pub(super) fn insert(&mut self, key: CacheKey, created: SystemTime, value: Arc<[u8]>) {
        if let Some(&i) = self.index.get(&key) {
            self.remove(i);
        }
        if self.max_entries == 0 || cost(&value) > self.max_bytes {
            return;
        }
        self.bytes += cost(&value);
        self.index.insert(key, self.slots.len());
        self.slots.push(Slot {
            key,
            created,
            value,
            // Survives the next sweep: a fresh entry is about to be read again more often than
            // not (the rest of a `map`, the next run of the flow).
            referenced: true,
        });
        self.evict();
    }

    fn remove(&mut self, i: usize) {
        if i >= self.slots.len() {
            return;
        }
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.key);
        self.bytes -= cost(&slot.value);
        if let Some(moved) = self.slots.get(i)
            && let Some(at) = self.index.get_mut(&moved.key)
        {
            *at = i;
        }
    }

    fn evict(&mut self) {
        while !self.slots.is_empty()
            && (self.bytes > self.max_bytes || self.slots.len() > self.max_entries)
        {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                // The last slot moves into `hand`, which is looked at next.
                self.remove(self.hand);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cache::key::cache_key;
    use proptest::prelude::*;

    fn key(n: u8) -> CacheKey {
        cache_key("tests::task", "src-hash", &[n; 32])
    }

    proptest! {
        #[test]
        fn memory_stays_consistent_under_any_operations(
            ops in proptest::collection::vec((0u8..12, 0usize..300, any::<bool>()), 1..200),
        ) {
            let mut m = Memory::new(1500, 6);
            for (k, len, is_put) in ops {
                if is_put {
                    m.insert(key(k), SystemTime::now(), Arc::from(vec![k; len]));
                } else if let Some(v) = m.get(&key(k), None) {
                    prop_assert!(v.iter().all(|&b| b == k));
                }
                prop_assert!(m.bytes <= m.max_bytes && m.slots.len() <= m.max_entries);
                prop_assert_eq!(m.index.len(), m.slots.len());
                prop_assert_eq!(m.bytes, m.slots.iter().map(|s| cost(&s.value)).sum::<usize>());
                for (key, &i) in &m.index {
                    prop_assert_eq!(m.slots[i].key, *key);
                }
            }
        }
    }
}
