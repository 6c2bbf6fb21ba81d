//! The bound on live streams (`GET /api/v1/stream`): at most `--max-streams` open on this
//! server, and at most `--max-streams-per-key` for one API key (all keyless clients count as
//! one key). A stream holds its [`StreamSlot`] for as long as it is open; dropping the stream
//! (the client went away, the server shuts down) frees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Default of `--max-streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// Default of `--max-streams-per-key`.
pub const DEFAULT_MAX_STREAMS_PER_KEY: usize = 100;

/// The open streams, counted in total and per key.
#[derive(Debug)]
pub struct StreamSlots {
    max_total: usize,
    max_per_key: usize,
    open: Mutex<Open>,
}

/// What is open now. `by_key` holds only keys with at least one stream, so it has at most
/// `max_total` entries.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_key: HashMap<String, usize>,
}

/// Why a stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The server has `max_total` streams open.
    ServerFull {
        /// The bound.
        max_total: usize,
    },
    /// This key has `max_per_key` streams open.
    KeyFull {
        /// The bound.
        max_per_key: usize,
    },
}

/// One open stream's place; frees it when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: String,
}

impl StreamSlots {
    /// Slots bounded by `max_total` and `max_per_key` (each at least 1).
    pub fn new(max_total: usize, max_per_key: usize) -> StreamSlots {
        StreamSlots {
            max_total: max_total.max(1),
            max_per_key: max_per_key.max(1),
            open: Mutex::new(Open::default()),
        }
    }

    /// Takes a slot for a stream of `key`, unless the server or the key is at its bound.
    pub fn acquire(self: &Arc<Self>, key: &str) -> Result<StreamSlot, StreamRefusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.max_total {
            return Err(StreamRefusal::ServerFull {
                max_total: self.max_total,
            });
        }
        let of_key = open.by_key.get(key).copied().unwrap_or(0);
        if of_key >= self.max_per_key {
            return Err(StreamRefusal::KeyFull {
                max_per_key: self.max_per_key,
            });
        }
        open.total += 1;
        open.by_key.insert(key.to_string(), of_key + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            key: key.to_string(),
        })
    }

    /// How many streams are open.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_total_and_per_key() {
        let slots = Arc::new(StreamSlots::new(3, 2));
        let a1 = slots.acquire("a").expect("a1");
        let _a2 = slots.acquire("a").expect("a2");
        assert_eq!(
            slots.acquire("a").expect_err("a3"),
            StreamRefusal::KeyFull { max_per_key: 2 }
        );
        let _b1 = slots.acquire("b").expect("b1");
        assert_eq!(
            slots.acquire("c").expect_err("full"),
            StreamRefusal::ServerFull { max_total: 3 }
        );
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _c1 = slots.acquire("c").expect("room again");
    }
}
