//! Retention: a background task that deletes runs older than the configured age, and the
//! idempotency keys of triggers that have expired (a trigger also ignores and replaces an
//! expired key by itself; the sweep only reclaims the space). The task runs even with run
//! retention off (`--retention off`): then it only sweeps expired keys, so the key table stays
//! bounded by the triggers of one `--idempotency-ttl`.
//!
//! A run's age is counted from when the server first received it (its `received` column, the
//! server's clock), not from its events' timestamps: those are the client's word, and one
//! event dated 2000 sent for a current run would otherwise make the next sweep delete the
//! whole flow run with its tasks and logs.
//!
//! Deletion goes in small batches with short pauses between them, so a large backlog (the
//! first start after enabling retention, or after a long stop) never holds the database's
//! write lock for long and ingestion keeps flowing.

use crate::store::{Backend, Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs deleted per call of [`Backend::delete_before`].
pub const BATCH: u32 = 500;
/// Pause between two batches while there is more to delete.
pub const PAUSE: Duration = Duration::from_millis(50);
/// Time between two sweeps.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes every run the server received before `now - retention` (by its own clock: see
/// [`Backend::delete_before`]; the events' timestamps, which a client may backdate, do not
/// count), [`BATCH`] at a time, pausing [`PAUSE`] between batches; stops early when `shutdown`
/// turns true. Returns the number of runs deleted.
pub async fn sweep(
    store: &Store,
    retention: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, StoreError> {
    sweep_at(store, retention, Utc::now(), shutdown).await
}

/// [`sweep`] as it would run at the instant `now` (a test's clock): deletes the runs received
/// before `now - retention`.
pub async fn sweep_at(
    store: &Store,
    retention: Duration,
    now: DateTime<Utc>,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, StoreError> {
    sweep_before(store, cutoff(Some(retention), now), shutdown).await
}

/// The instant before which runs are deleted: `now - retention`, or the beginning of time
/// (no run is that old) when retention is off or longer than chrono can represent.
fn cutoff(retention: Option<Duration>, now: DateTime<Utc>) -> DateTime<Utc> {
    retention
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Deletes the runs received before `cutoff` and the expired idempotency keys, [`BATCH`] at a
/// time.
async fn sweep_before(
    store: &Store,
    cutoff: DateTime<Utc>,
    shutdown: &watch::Receiver<bool>,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = store.delete_before(cutoff, BATCH).await?;
        total += deleted;
        if deleted == 0 || *shutdown.borrow() {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Starts the retention task: a sweep now, then one every [`INTERVAL`], until `shutdown`
/// turns true. Errors are logged and retried at the next sweep. With `retention` `None` runs
/// are kept and only expired idempotency keys go.
pub fn spawn(
    store: Arc<Store>,
    retention: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sweep_before(&store, cutoff(retention, Utc::now()), &shutdown).await {
                Ok(0) => tracing::debug!("retention: nothing to delete"),
                Ok(n) => tracing::info!(
                    rows = n,
                    "retention: deleted old runs, orphan log lines and expired idempotency keys"
                ),
                Err(err) => tracing::warn!(error = %err, "retention sweep failed; retrying later"),
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_run_retention_no_run_is_old_enough() {
        let now = Utc::now();
        assert_eq!(cutoff(None, now), DateTime::<Utc>::MIN_UTC);
        assert_eq!(cutoff(Some(Duration::MAX), now), DateTime::<Utc>::MIN_UTC);
        let day = cutoff(Some(Duration::from_secs(86_400)), now);
        assert_eq!(now - day, chrono::Duration::days(1));
    }
}
