//! The result cache: keys, the in-memory layer and the persistent store under `FLOWKIT_HOME`.
//!
//! (Interface in place; the persistent layer is being written.)

use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// A cache key: BLAKE3 of task identity, source hash and inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// The key of a task's result for inputs whose hash is `inputs`.
pub fn cache_key(task_key: &str, source_hash: &str, inputs: &[u8; 32]) -> CacheKey {
    let mut h = blake3::Hasher::new();
    h.update(b"flowkit-cache-v1\0");
    h.update(task_key.as_bytes());
    h.update(b"\0");
    h.update(source_hash.as_bytes());
    h.update(b"\0");
    h.update(inputs);
    CacheKey(*h.finalize().as_bytes())
}

/// BLAKE3 of the JSON serialization of `value`.
pub fn hash_inputs<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], String> {
    let mut h = blake3::Hasher::new();
    serde_json::to_writer(&mut h, value).map_err(|e| e.to_string())?;
    Ok(*h.finalize().as_bytes())
}

/// The cache of this process: memory in front of the store under `FLOWKIT_HOME`.
#[derive(Debug)]
pub struct CacheStore {
    #[allow(dead_code)]
    dir: PathBuf,
    memory: Mutex<HashMap<CacheKey, (SystemTime, Arc<[u8]>)>>,
}

/// The cache of this process.
pub fn store() -> &'static CacheStore {
    static STORE: OnceLock<CacheStore> = OnceLock::new();
    STORE.get_or_init(|| CacheStore::open(crate::config::get().home.clone()))
}

impl CacheStore {
    /// A store rooted at `dir`.
    pub fn open(dir: PathBuf) -> CacheStore {
        CacheStore {
            dir,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The entry for `key`, if present and younger than `ttl`.
    pub fn get(&self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        let map = self.memory.lock().ok()?;
        let (at, value) = map.get(key)?;
        if let Some(ttl) = ttl {
            if at.elapsed().unwrap_or_default() > ttl {
                return None;
            }
        }
        Some(Arc::clone(value))
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &CacheKey, task_key: &str, value: Arc<[u8]>) {
        let _ = task_key;
        if let Ok(mut map) = self.memory.lock() {
            map.insert(*key, (SystemTime::now(), value));
        }
    }

    /// Keeps the result of run `run_id` (`persist = true`).
    pub fn put_result(&self, run_id: Uuid, task_key: &str, value: Arc<[u8]>) {
        let _ = (run_id, task_key, value);
    }
}
