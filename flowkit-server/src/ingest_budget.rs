//! The memory budget of ingestion: a semaphore of bytes bounding the ingest request bodies held
//! at once (`--ingest-memory`), so many concurrent large batches cannot take the server's
//! memory. A batch reserves its declared size before its body is read and gives it back when
//! it has been answered; a batch that does not fit is refused at once (503 with `Retry-After`)
//! rather than queued, so waiting requests hold no memory and no worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this many, so a budget of several GiB fits the semaphore's
/// `u32` permit counts.
const UNIT: usize = 1024;

/// The bytes of ingest bodies in flight, bounded by a capacity.
#[derive(Clone, Debug)]
pub struct IngestBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    semaphore: Arc<Semaphore>,
    /// Capacity in units.
    units: usize,
    /// Units held now, and the most ever held at once (for tests and metrics).
    held: AtomicUsize,
    peak: AtomicUsize,
}

/// A reservation of bytes; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    units: usize,
    inner: Arc<Inner>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.held.fetch_sub(self.units, Ordering::AcqRel);
    }
}

impl IngestBudget {
    /// A budget of `bytes` (rounded up to whole KiB, at least one).
    pub fn new(bytes: usize) -> IngestBudget {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        IngestBudget {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(units)),
                units,
                held: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// Reserves `bytes` now, or `None` when they do not fit beside what is in flight (or
    /// exceed the whole budget).
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = bytes.div_ceil(UNIT).max(1);
        let permits = u32::try_from(units).ok()?;
        let permit = self
            .inner
            .semaphore
            .clone()
            .try_acquire_many_owned(permits)
            .ok()?;
        let held = self.inner.held.fetch_add(units, Ordering::AcqRel) + units;
        self.inner.peak.fetch_max(held, Ordering::AcqRel);
        Some(Reservation {
            _permit: permit,
            units,
            inner: self.inner.clone(),
        })
    }

    /// The capacity, in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.units.saturating_mul(UNIT)
    }

    /// Bytes reserved now.
    pub fn in_flight(&self) -> usize {
        self.inner.held.load(Ordering::Acquire).saturating_mul(UNIT)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Acquire).saturating_mul(UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_capacity_and_gives_back_on_drop() {
        let budget = IngestBudget::new(10 * 1024);
        let a = budget.try_reserve(6 * 1024).expect("fits");
        assert!(budget.try_reserve(5 * 1024).is_none(), "would exceed");
        let b = budget.try_reserve(4 * 1024).expect("fits exactly");
        assert_eq!(budget.in_flight(), 10 * 1024);
        assert!(budget.try_reserve(1).is_none());
        drop(a);
        assert_eq!(budget.in_flight(), 4 * 1024);
        assert!(budget.try_reserve(6 * 1024).is_some());
        drop(b);
        assert_eq!(budget.in_flight(), 0);
        assert_eq!(budget.peak(), 10 * 1024);
        assert!(
            budget.try_reserve(11 * 1024).is_none(),
            "larger than the budget"
        );
    }
}
