//! The stored API keys as this replica knows them: the active rows of `api_keys`, read into
//! memory so that checking a key costs no database query, and re-read often enough that every
//! replica sees a new key and a revocation without a restart.
//!
//! **The bound.** A request is checked against a copy of the stored keys read at most
//! [`RELOAD_EVERY`] (1 s) before it: the first request after that re-reads them (one query;
//! the requests arriving meanwhile keep using the copy). When the database does not answer,
//! the copy is used until it is [`STALE_AFTER`] (5 s) old; after that a token that is not a
//! startup key gets 503 `unavailable` instead of being checked against keys that may have
//! been revoked since. So **a revoked key stops working on every replica within 5 s** (within
//! about 1 s while the database answers), and at once on the replica that revoked it, which
//! re-reads the keys before answering.
//!
//! A token this replica does not know makes it re-read the keys too, unless it tried less
//! than [`MISS_RELOAD_EVERY`] (250 ms) ago: so a key created on another replica works on
//! every replica within 250 ms of its creation, and unknown tokens cost at most one query per
//! 250 ms per replica however many arrive (a flood of bad tokens cannot flood the database).
//!
//! The copy holds at most [`MAX_STORED_KEYS`](flowkit_wire::api::keys::MAX_STORED_KEYS) keys.
//!
//! **When a key was last used.** A request let in by a stored key notes it here
//! ([`KeyRing::note_use`]): a map lookup under a short lock. At most once per
//! [`LAST_USED_EVERY`] per key, this replica then writes the key's `last_used` in the
//! background (the request does not wait for it), and the write itself changes nothing when
//! another replica wrote it less than a minute ago. So `GET /keys` shows when each stored key
//! was used to within a minute, at the cost of one write per key per minute at most.

use crate::auth::{ApiKey, ApiKeys};
use crate::error::ApiError;
use crate::store::Store;
use crate::store::api_keys::{LAST_USED_EVERY, StoredKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How old the copy of the stored keys may be before a request re-reads it.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How old the copy may get while the database does not answer; past it, stored keys are
/// refused with 503 (startup keys keep working).
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// The least time between two re-reads caused by unknown tokens.
pub const MISS_RELOAD_EVERY: Duration = Duration::from_millis(250);

/// The stored keys of this replica (see the module documentation).
#[derive(Debug, Default)]
pub struct KeyRing {
    copy: RwLock<Copy>,
    /// Held while re-reading: one query at a time.
    reload: tokio::sync::Mutex<()>,
    /// When this replica last wrote each stored key's `last_used`, by the key's digest. Holds
    /// at most the keys of the copy (the others go when it is re-read).
    touched: Mutex<HashMap<[u8; 32], Instant>>,
}

#[derive(Debug, Default)]
struct Copy {
    /// The keys, and the rows they were made from (for the listing).
    keys: Arc<ApiKeys>,
    rows: Arc<[StoredKey]>,
    /// When they were read; `None` before the first read succeeded.
    read_at: Option<Instant>,
    /// When a re-read was last tried.
    tried_at: Option<Instant>,
}

impl KeyRing {
    /// The stored keys to check a request against: the copy when it is fresh, re-read first
    /// when it is older than [`RELOAD_EVERY`]. 503 `unavailable` when no read succeeded for
    /// [`STALE_AFTER`].
    pub async fn keys(&self, store: &Store) -> Result<Arc<ApiKeys>, ApiError> {
        let (keys, age) = self.snapshot();
        if age.is_some_and(|age| age < RELOAD_EVERY) {
            return Ok(keys);
        }
        match self.reload.try_lock() {
            Ok(_guard) => {
                // Not again right after a failed try (the database is down: one try per
                // MISS_RELOAD_EVERY, not one per request).
                let tried = self.lock_read().tried_at;
                if tried.is_none_or(|at| at.elapsed() >= MISS_RELOAD_EVERY) {
                    self.read(store).await;
                }
            }
            // Someone is re-reading: use the copy while it is not stale, else wait for it.
            Err(_) if age.is_some_and(|age| age < STALE_AFTER) => return Ok(keys),
            Err(_) => drop(self.reload.lock().await),
        }
        let (keys, age) = self.snapshot();
        if age.is_some_and(|age| age < STALE_AFTER) {
            Ok(keys)
        } else {
            Err(ApiError::unavailable(
                "cannot check stored API keys: the database did not answer; try again",
                1,
            ))
        }
    }

    /// Re-reads the keys after an unknown token, unless a re-read was tried less than
    /// [`MISS_RELOAD_EVERY`] ago; the keys re-read, or `None` when none was.
    pub async fn reload_on_miss(&self, store: &Store) -> Option<Arc<ApiKeys>> {
        let _guard = self.reload.lock().await;
        let recent = self
            .lock_read()
            .tried_at
            .is_some_and(|at| at.elapsed() < MISS_RELOAD_EVERY);
        if recent {
            return None;
        }
        self.read(store).await.then(|| self.snapshot().0)
    }

    /// Re-reads the keys now (after this replica created or revoked one); fails when the
    /// database does not answer.
    pub async fn reload_now(&self, store: &Store) -> Result<(), ApiError> {
        let _guard = self.reload.lock().await;
        match store.active_api_keys().await {
            Ok(rows) => {
                self.install(rows);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Re-reads the keys when the copy is older than [`RELOAD_EVERY`] (or was never read),
    /// whenever the last try was: for the readiness probe, so that a server that says it is
    /// ready after a database outage does not then refuse keys with a copy the outage left
    /// stale. Fails when the database does not answer.
    pub async fn refresh_if_old(&self, store: &Store) -> Result<(), ApiError> {
        let (_, age) = self.snapshot();
        if age.is_some_and(|age| age < RELOAD_EVERY) {
            return Ok(());
        }
        self.reload_now(store).await
    }

    /// Notes that the stored key whose secret has the digest `digest` let a request in: its
    /// `last_used` is written in the background unless this replica wrote it less than
    /// [`LAST_USED_EVERY`] ago. Never waits for the database.
    pub fn note_use(&self, state: &crate::AppState, digest: [u8; 32]) {
        if !self.due(digest, Instant::now()) {
            return;
        }
        let store = state.store_arc();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(digest, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "cannot note when a stored API key was used");
            }
        });
    }

    /// Whether the key of `digest`, used at `now`, is due a `last_used` write (and if so,
    /// counts it as written at `now`).
    fn due(&self, digest: [u8; 32], now: Instant) -> bool {
        let every = LAST_USED_EVERY.to_std().unwrap_or(Duration::from_secs(60));
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        match touched.get(&digest) {
            Some(at) if now.saturating_duration_since(*at) < every => false,
            _ => {
                touched.insert(digest, now);
                true
            }
        }
    }

    /// The stored keys as last read (at most [`MAX_STORED_KEYS`](flowkit_wire::api::keys::MAX_STORED_KEYS)), without re-reading.
    pub fn rows(&self) -> Arc<[StoredKey]> {
        self.lock_read().rows.clone()
    }

    fn snapshot(&self) -> (Arc<ApiKeys>, Option<Duration>) {
        let copy = self.lock_read();
        (copy.keys.clone(), copy.read_at.map(|at| at.elapsed()))
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Copy> {
        self.copy.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the keys (the caller holds `reload`); whether it succeeded.
    async fn read(&self, store: &Store) -> bool {
        let result = store.active_api_keys().await;
        // Counted from the end of the try: a database that takes seconds to fail is not
        // asked again at once.
        self.copy
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .tried_at = Some(Instant::now());
        match result {
            Ok(rows) => {
                self.install(rows);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored API keys; keeping the last ones read");
                false
            }
        }
    }

    fn install(&self, rows: Vec<StoredKey>) {
        let now = Instant::now();
        let keys: Vec<ApiKey> = rows
            .iter()
            .filter_map(
                |row| match ApiKey::stored(&row.name, row.digest, &row.scopes) {
                    Ok(key) => Some(key),
                    Err(why) => {
                        // Only a row edited by hand can fail: the API checked it when it was made.
                        tracing::warn!(key = %row.name, "ignoring a stored API key: {why}");
                        None
                    }
                },
            )
            .collect();
        let keys = ApiKeys::from_trusted(keys);
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|digest, _| rows.iter().any(|row| row.digest == *digest));
        let mut copy = self.copy.write().unwrap_or_else(PoisonError::into_inner);
        copy.keys = Arc::new(keys);
        copy.rows = rows.into();
        copy.read_at = Some(now);
        copy.tried_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_used_is_written_at_most_once_a_minute_per_key() {
        let ring = KeyRing::default();
        let start = Instant::now();
        let (a, b) = ([1; 32], [2; 32]);
        assert!(ring.due(a, start), "the first use");
        assert!(!ring.due(a, start + Duration::from_secs(1)));
        assert!(!ring.due(a, start + Duration::from_secs(59)));
        assert!(ring.due(b, start + Duration::from_secs(59)), "another key");
        assert!(
            ring.due(a, start + Duration::from_secs(60)),
            "a minute later"
        );
        assert!(!ring.due(a, start + Duration::from_secs(61)));
        // A re-read forgets the keys that are gone.
        ring.install(Vec::new());
        assert!(ring.touched.lock().expect("lock").is_empty());
    }
}
