//! The bus's queue: emitters append under a short lock, the sink thread takes everything
//! waiting at once.
//!
//! Items live in chunks of [`CHUNK`] so that a long queue never moves what it already holds
//! (no reallocation of one large buffer while emitters wait on the lock), and memory is taken
//! only as the queue grows: an idle process holds at most a few spare chunks.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Items per chunk.
const CHUNK: usize = 1024;

/// Emptied chunks kept for reuse: enough for a busy process's usual depth, little when idle.
const SPARE_CHUNKS: usize = 16;

/// A multi-producer queue whose consumer takes every item at once, in the order they were
/// pushed.
pub(super) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

struct Inner<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
    spare: Vec<Vec<T>>,
}

impl<T> Queue<T> {
    /// A queue that refuses bounded pushes once it holds `capacity` items.
    pub(super) fn new(capacity: usize) -> Queue<T> {
        Queue {
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                len: 0,
                spare: Vec::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `item`; when `bounded` and the queue already holds its capacity, gives it back.
    /// Unbounded pushes are for the few control messages someone waits for.
    pub(super) fn push(&self, item: T, bounded: bool) -> Result<(), T> {
        let mut inner = self.lock();
        if bounded && inner.len >= self.capacity {
            return Err(item);
        }
        inner.len += 1;
        if let Some(last) = inner.chunks.last_mut()
            && last.len() < CHUNK
        {
            last.push(item);
            return Ok(());
        }
        let mut chunk = inner
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        chunk.push(item);
        inner.chunks.push(chunk);
        Ok(())
    }

    /// Everything waiting, oldest first, in chunks; the queue is empty after.
    pub(super) fn take(&self) -> Vec<Vec<T>> {
        let mut inner = self.lock();
        inner.len = 0;
        std::mem::take(&mut inner.chunks)
    }

    /// Gives back chunks [`Queue::take`] returned, once their items are gone.
    pub(super) fn recycle(&self, chunks: Vec<Vec<T>>) {
        let mut inner = self.lock();
        for chunk in chunks {
            if inner.spare.len() >= SPARE_CHUNKS {
                break;
            }
            if chunk.is_empty() && chunk.capacity() >= CHUNK {
                inner.spare.push(chunk);
            }
        }
    }

    /// Items waiting.
    pub(super) fn len(&self) -> usize {
        self.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_push_order_across_chunks() {
        let queue = Queue::new(10_000);
        for i in 0..3 * CHUNK + 7 {
            assert!(queue.push(i, true).is_ok());
        }
        assert_eq!(queue.len(), 3 * CHUNK + 7);
        let chunks = queue.take();
        assert_eq!(chunks.len(), 4);
        let all: Vec<usize> = chunks.into_iter().flatten().collect();
        assert_eq!(all, (0..3 * CHUNK + 7).collect::<Vec<_>>());
        assert_eq!(queue.len(), 0);
        assert!(queue.take().is_empty());
    }

    #[test]
    fn bounded_pushes_stop_at_the_capacity_and_unbounded_ones_do_not() {
        let queue = Queue::new(3);
        for i in 0..3 {
            assert!(queue.push(i, true).is_ok());
        }
        assert_eq!(queue.push(3, true), Err(3));
        assert!(queue.push(4, false).is_ok());
        assert_eq!(queue.len(), 4);
        let all: Vec<i32> = queue.take().into_iter().flatten().collect();
        assert_eq!(all, vec![0, 1, 2, 4]);
        // Room again once taken.
        assert!(queue.push(5, true).is_ok());
    }

    #[test]
    fn recycled_chunks_are_reused_and_the_spares_are_bounded() {
        let queue = Queue::new(usize::MAX);
        for i in 0..(SPARE_CHUNKS + 4) * CHUNK {
            assert!(queue.push(i, true).is_ok());
        }
        let mut chunks = queue.take();
        for chunk in &mut chunks {
            chunk.clear();
        }
        queue.recycle(chunks);
        assert_eq!(queue.lock().spare.len(), SPARE_CHUNKS);
        assert!(queue.push(1, true).is_ok());
        assert_eq!(queue.lock().spare.len(), SPARE_CHUNKS - 1);
    }
}
