//! The runs a worker holds a lease on, shared by its run tasks and its heartbeat thread.
//!
//! Bounded by the worker's slots: a run enters when it is claimed (with a slot) and leaves
//! once it is finished, handed back or lost.

use crate::run::deployed::Deployed;
use flowkit_wire::api::workers::{DEFAULT_LEASE, HeldLease};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One held run.
struct HeldRun {
    token: u64,
    deployed: Arc<Deployed>,
    /// Triggered when the lease is lost: the run is stopped at once and not finished.
    lost: CancellationToken,
    /// The run's tokio task, once started: aborted from the heartbeat thread on a lost lease,
    /// even when the runtime's threads are busy.
    abort: Option<AbortHandle>,
}

/// Every run the worker holds, and the lease the server last announced.
pub(crate) struct Held {
    runs: Mutex<HashMap<Uuid, HeldRun>>,
    /// The lease, in milliseconds.
    lease_ms: AtomicU64,
}

impl Held {
    pub(crate) fn new() -> Held {
        Held {
            runs: Mutex::new(HashMap::new()),
            lease_ms: AtomicU64::new(DEFAULT_LEASE.as_millis() as u64),
        }
    }

    fn runs(&self) -> MutexGuard<'_, HashMap<Uuid, HeldRun>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a lease lasts (the server's last word; [`DEFAULT_LEASE`] before it spoke).
    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_lease_seconds(&self, seconds: u32) {
        if seconds > 0 {
            self.lease_ms
                .store(u64::from(seconds) * 1000, Ordering::Relaxed);
        }
    }

    /// Holds `deployed`'s run under `token`; returns the token triggered if the lease is lost.
    pub(crate) fn insert(&self, token: u64, deployed: Arc<Deployed>) -> CancellationToken {
        let lost = CancellationToken::new();
        self.runs().insert(
            deployed.run_id,
            HeldRun {
                token,
                deployed,
                lost: lost.clone(),
                abort: None,
            },
        );
        lost
    }

    /// The run's task, to abort on a lost lease.
    pub(crate) fn set_abort(&self, run_id: Uuid, abort: AbortHandle) {
        if let Some(run) = self.runs().get_mut(&run_id) {
            if run.lost.is_cancelled() {
                abort.abort();
            }
            run.abort = Some(abort);
        }
    }

    pub(crate) fn remove(&self, run_id: Uuid) {
        self.runs().remove(&run_id);
    }

    pub(crate) fn len(&self) -> usize {
        self.runs().len()
    }

    /// Every lease held, for a heartbeat.
    pub(crate) fn leases(&self) -> Vec<HeldLease> {
        self.runs()
            .iter()
            .map(|(run_id, run)| HeldLease {
                run_id: *run_id,
                token: run.token,
            })
            .collect()
    }

    /// Asks these runs to stop (they end `Cancelled` and are finished).
    pub(crate) fn cancel(&self, run_ids: &[Uuid], reason: &str) {
        let runs = self.runs();
        for id in run_ids {
            if let Some(run) = runs.get(id) {
                run.deployed.cancel(reason);
            }
        }
    }

    /// Asks every held run to stop.
    pub(crate) fn cancel_all(&self, reason: &str) {
        for run in self.runs().values() {
            run.deployed.cancel(reason);
        }
    }

    /// Stops these runs at once: their leases are lost, nothing they send counts any more.
    pub(crate) fn lose(&self, run_ids: &[Uuid], reason: &str) {
        let runs = self.runs();
        for id in run_ids {
            if let Some(run) = runs.get(id) {
                lose(run, reason);
            }
        }
    }

    /// Stops every held run at once.
    pub(crate) fn lose_all(&self, reason: &str) {
        for run in self.runs().values() {
            lose(run, reason);
        }
    }
}

fn lose(run: &HeldRun, reason: &str) {
    run.deployed.cancel(reason);
    run.lost.cancel();
    if let Some(abort) = &run.abort {
        abort.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::deployed::Claim;

    fn deployed(token: u64) -> Arc<Deployed> {
        Deployed::new(
            Claim {
                run_id: crate::ids::new_id(),
                attempt: 1,
                max_attempts: 1,
                token,
                deployment: "f/d".into(),
                worker: "w".into(),
                tags: Vec::new(),
            },
            "f",
            |_| None,
        )
    }

    #[test]
    fn leases_cancels_and_losses_reach_the_runs() {
        let held = Held::new();
        let (a, b) = (deployed(3), deployed(7));
        let lost_a = held.insert(3, Arc::clone(&a));
        let lost_b = held.insert(7, Arc::clone(&b));
        let mut leases = held.leases();
        leases.sort_by_key(|l| l.token);
        assert_eq!(
            leases,
            [
                HeldLease {
                    run_id: a.run_id,
                    token: 3
                },
                HeldLease {
                    run_id: b.run_id,
                    token: 7
                }
            ]
        );

        held.cancel(&[a.run_id], "asked by someone");
        assert!(a.cancel.is_cancelled() && !b.cancel.is_cancelled());
        assert_eq!(a.cancel_message(), "asked by someone");
        assert!(!lost_a.is_cancelled());

        held.lose(&[b.run_id], "lease lost");
        assert!(lost_b.is_cancelled() && b.cancel.is_cancelled());

        held.remove(a.run_id);
        assert_eq!(held.len(), 1);
        held.set_lease_seconds(6);
        assert_eq!(held.lease(), Duration::from_secs(6));
        held.set_lease_seconds(0);
        assert_eq!(held.lease(), Duration::from_secs(6), "0 is not a lease");
    }
}
