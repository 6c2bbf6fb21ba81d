//! The reaper: a background task on every server replica (no leader) that decides the runs
//! whose lease expired, on the database's clock: a `Cancelling` run becomes `Cancelled`;
//! any other unfinished run `Crashed` ("the worker … stopped heartbeating") and, when it has
//! attempts left, `Scheduled` again as its next attempt. The run's fencing token moves on, so
//! nothing its old worker still sends is accepted. Replicas reaping at once never decide one
//! run twice (see `store::leases`).
//!
//! It looks every [`interval`] (a tenth of the lease, between 100 ms and 1 s), so a run is
//! decided at most about a second after its lease ends.

use crate::AppState;
use crate::store::{Backend, Reaped, StoreError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the reaper looks for expired leases: a tenth of the lease, within 100 ms..=1 s.
pub fn interval(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Decides every run whose lease has expired now (100 per transaction), waking the claims
/// (re-queued runs) and result reads (ended runs) of this process. Returns the runs decided.
pub async fn reap_now(state: &AppState) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let Reaped { runs, requeued } = state.store().reap().await?;
        total += runs.len();
        state.metrics().lease_expiries(runs.len());
        if !runs.is_empty() {
            tracing::info!(
                runs = runs.len(),
                "reaper: decided runs whose lease expired"
            );
            state.wakeups().run_ended();
        }
        if requeued {
            state.wakeups().runs_changed();
        }
        if runs.is_empty() || *state.shutdown_signal().borrow() {
            return Ok(total);
        }
    }
}

/// Starts the reaper of `state`'s server; it stops when the server shuts down.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        let every = interval(state.settings().lease);
        loop {
            if let Err(err) = reap_now(&state).await {
                tracing::warn!(error = %err, "reaper pass failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_follows_the_lease_within_bounds() {
        assert_eq!(interval(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_millis(100));
    }
}
