//! Waking long-polls: claims waiting for a run to become claimable, and reads waiting for a
//! run to end (`GET /flow-runs/{id}/result?wait=N`, `Prefer: wait=N` on a trigger).
//!
//! A write of this process that makes a run claimable (a trigger, a retry, a release, a
//! re-queue by the reaper) wakes the waiting claims at once through a [`Notify`]; on
//! PostgreSQL the same writes `NOTIFY flowkit_runs` in their transaction, and every replica's
//! listener wakes its own waiting claims. Waiters also poll (claims every
//! [`CLAIM_POLL`], for runs whose `scheduled_for` comes due and in case a notification is
//! missed; result waits every [`RESULT_POLL`], for runs ended on another replica or by their
//! reporter's events), so a missed wake-up costs latency, never a stuck request.
//!
//! Both kinds of wait are bounded: at most [`MAX_WAITING_CLAIMS`] claims and
//! [`MAX_WAITING_RESULTS`] result reads wait at once; beyond that a request answers at once
//! as things stand (no runs; the run as it is), and its client asks again.

use crate::store::Store;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// How often a waiting claim looks for claimable runs without being woken.
pub const CLAIM_POLL: Duration = Duration::from_secs(1);
/// How often a waiting result read looks at its run without being woken.
pub const RESULT_POLL: Duration = Duration::from_millis(200);
/// Most claims waiting at once on one server.
pub const MAX_WAITING_CLAIMS: usize = 1000;
/// Most result reads (and waiting triggers) waiting at once on one server.
pub const MAX_WAITING_RESULTS: usize = 1000;

/// The wake-ups of one server process.
#[derive(Debug)]
pub struct Wakeups {
    /// A run became claimable.
    runs: Arc<Notify>,
    /// A run ended (finished, cancelled, crashed).
    ended: Notify,
    claims: Semaphore,
    results: Semaphore,
    /// The PostgreSQL listener, started by the first waiting claim.
    listening: OnceLock<()>,
}

impl Default for Wakeups {
    fn default() -> Wakeups {
        Wakeups {
            runs: Arc::new(Notify::new()),
            ended: Notify::new(),
            claims: Semaphore::new(MAX_WAITING_CLAIMS),
            results: Semaphore::new(MAX_WAITING_RESULTS),
            listening: OnceLock::new(),
        }
    }
}

impl Wakeups {
    /// Wakes every waiting claim of this process.
    pub fn runs_changed(&self) {
        self.runs.notify_waiters();
    }

    /// Wakes every waiting result read of this process.
    pub fn run_ended(&self) {
        self.ended.notify_waiters();
    }

    /// The notification waiting claims wait on.
    pub fn runs(&self) -> &Notify {
        &self.runs
    }

    /// The notification waiting result reads wait on.
    pub fn ended(&self) -> &Notify {
        &self.ended
    }

    /// A place among the waiting claims, or `None` when [`MAX_WAITING_CLAIMS`] wait already.
    pub fn claim_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.claims.try_acquire().ok()
    }

    /// A place among the waiting result reads, or `None` when [`MAX_WAITING_RESULTS`] wait.
    pub fn result_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.results.try_acquire().ok()
    }

    /// Starts listening to the other replicas (PostgreSQL), once.
    pub fn listen(&self, store: &Store) {
        self.listening.get_or_init(|| {
            let _ = store.listen_runs(self.runs.clone());
        });
    }
}
