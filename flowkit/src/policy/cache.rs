//! The result cache: keys, a bounded in-memory layer, and the persistent store under
//! `FLOWKIT_HOME`.
//!
//! A task with `cache = inputs` (or a key function) looks its result up by a [`CacheKey`]: the
//! BLAKE3 of the task's identity, the macro's hash of its source and the hash of its inputs.
//! Lookups go to memory first, then to disk; a disk hit is promoted to memory. Writes go to
//! both. A result kept with `persist = true` is stored by run id instead.
//!
//! The cache can only ever make a run faster: an entry that is missing, expired, truncated,
//! corrupt or unreadable is a miss (with a warning naming the file and the reason), and a
//! failed write (read-only directory, full disk) is a warning. Neither is an error for the run.
//!
//! # Layout
//!
//! ```text
//! <home>/cache/ab/ab12…ef.entry   a cached result, named by its key (64 hex digits) and
//!                                 sharded by the key's first two hex digits
//! <home>/results/<run id>.entry   the kept result of a run (`persist = true`)
//! ```
//!
//! Every file is written to a uniquely named temporary file in the same directory
//! (`.<name>.<pid>-<n>-<random>.tmp`) and renamed over the final name, so a reader sees a whole
//! entry or none, even with several processes sharing one `FLOWKIT_HOME`.
//!
//! # Entry format (version 1)
//!
//! One header line of JSON, a newline, then the payload exactly as the executor gave it (the
//! JSON of the task's output):
//!
//! ```text
//! {"flowkit_entry":1,"key":"ab12…ef","task_key":"etl::download","created":"2026-11-28T12:00:00.123456789Z","len":16,"blake3":"9f3c…"}
//! {"rows":[1,2,3]}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `flowkit_entry` | format version; entries of another version are skipped (a quiet miss) |
//! | `key` | the cache key in hex, or the run id for a kept result; must match the file name |
//! | `task_key` | the task's path, for humans browsing the directory |
//! | `created` | when the entry was written (RFC 3339, UTC); the caller's TTL is checked against it on every read, so changing a task's `cache_ttl` applies to old entries too |
//! | `len` | payload length in bytes; a truncated file fails this check |
//! | `blake3` | BLAKE3 of the payload in hex; a flipped byte fails this check |
//!
//! An entry that fails a check is removed (it can never become valid again); an expired one is
//! kept, since a longer TTL may make it valid again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Default bound of the in-memory layer, in bytes (payloads plus bookkeeping).
pub const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Default bound of the in-memory layer, in entries.
pub const DEFAULT_MEMORY_ENTRIES: usize = 16 * 1024;

/// The version written in the `flowkit_entry` header field.
const FORMAT_VERSION: u32 = 1;

/// Extension of entry files.
const EXTENSION: &str = "entry";

/// A header longer than this is not a header: the file is garbage.
const MAX_HEADER_LEN: usize = 64 * 1024;

/// What one memory entry costs beyond its payload (key, timestamps, slot, index), roughly;
/// counted so that many tiny entries are bounded too.
const ENTRY_OVERHEAD: usize = 128;

/// A cache key: BLAKE3 of task identity, source hash and inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl Hash for CacheKey {
    // The key is already a uniformly distributed hash: eight of its bytes make a perfectly good
    // table hash, which keeps a memory hit free of a second hashing pass.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// Passes [`CacheKey`]'s pre-hashed word through; anything else gets FNV-1a.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The key of a task's result for inputs whose hash is `inputs`.
///
/// Every part is length-prefixed, so no two different `(task_key, source_hash)` pairs can
/// produce the same hashed bytes.
pub fn cache_key(task_key: &str, source_hash: &str, inputs: &[u8; 32]) -> CacheKey {
    let mut h = blake3::Hasher::new_derive_key("flowkit 2026 result cache key v1");
    for part in [task_key.as_bytes(), source_hash.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(inputs);
    CacheKey(*h.finalize().as_bytes())
}

/// The memory key under which the kept result of run `run_id` lives.
fn result_key(run_id: Uuid) -> CacheKey {
    let mut h = blake3::Hasher::new_derive_key("flowkit 2026 kept result v1");
    h.update(run_id.as_bytes());
    CacheKey(*h.finalize().as_bytes())
}

/// BLAKE3 of the JSON serialization of `value`, streamed into the hasher (no intermediate
/// buffer).
///
/// Equal values hash equally as long as they serialize equally. `HashMap` and `HashSet`
/// serialize in their (randomized) iteration order, so two equal maps usually hash
/// differently: use `BTreeMap`/`BTreeSet` (or an insertion-ordered map) in cached inputs.
pub fn hash_inputs<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], String> {
    let mut h = blake3::Hasher::new();
    serde_json::to_writer(&mut h, value).map_err(|e| e.to_string())?;
    Ok(*h.finalize().as_bytes())
}

/// The cache of this process: memory in front of the store under `FLOWKIT_HOME`.
///
/// Cheap to share (`&'static` through [`store`]); every method takes `&self` and is safe to call
/// from any thread. No method fails: problems with the disk are logged and the cache behaves as
/// if the entry were not there.
pub struct CacheStore {
    home: PathBuf,
    memory: Mutex<Memory>,
    write_failures: AtomicU64,
}

/// The cache of this process, rooted at [`crate::config::Config::home`].
pub fn store() -> &'static CacheStore {
    static STORE: OnceLock<CacheStore> = OnceLock::new();
    STORE.get_or_init(|| CacheStore::open(crate::config::get().home.clone()))
}

impl CacheStore {
    /// A store rooted at `dir` (entries under `dir/cache/`, kept results under `dir/results/`)
    /// with the default memory bounds ([`DEFAULT_MEMORY_BYTES`], [`DEFAULT_MEMORY_ENTRIES`]).
    ///
    /// Touches nothing on disk: directories are created by the first write.
    pub fn open(dir: PathBuf) -> CacheStore {
        CacheStore {
            home: dir,
            memory: Mutex::new(Memory::new(DEFAULT_MEMORY_BYTES, DEFAULT_MEMORY_ENTRIES)),
            write_failures: AtomicU64::new(0),
        }
    }

    /// Bounds the in-memory layer to `max_bytes` (payloads plus a small per-entry overhead) and
    /// `max_entries`, evicting entries not used recently (CLOCK) beyond that. An entry larger
    /// than `max_bytes` is kept on disk only; `0` entries turns the memory layer off.
    pub fn with_memory_limit(self, max_bytes: usize, max_entries: usize) -> CacheStore {
        self.lock().set_limits(max_bytes, max_entries);
        self
    }

    /// The directory this store is rooted at.
    pub fn dir(&self) -> &Path {
        &self.home
    }

    /// The entry for `key`, if present and younger than `ttl` (`None`: any age).
    ///
    /// Memory first (a lock, a table lookup and an `Arc` clone), then disk; a valid disk entry
    /// is promoted to memory.
    pub fn get(&self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        if let Some(value) = self.lock().get(key, ttl) {
            return Some(value);
        }
        let hex = key.hex();
        let path = self.entry_path(&hex);
        let entry = read_entry(&path, &hex)?;
        if let Some(ttl) = ttl {
            let age = age(entry.created);
            if age > ttl {
                tracing::debug!(
                    target: "flowkit",
                    file = %path.display(),
                    "cache entry is {age:?} old, older than the TTL of {ttl:?}: a miss"
                );
                return None;
            }
        }
        self.lock()
            .insert(*key, entry.created, Arc::clone(&entry.value));
        Some(entry.value)
    }

    /// Stores `value` under `key`, in memory and on disk (`task_key` is recorded for humans).
    pub fn put(&self, key: &CacheKey, task_key: &str, value: Arc<[u8]>) {
        self.put_at(key, task_key, value, SystemTime::now());
    }

    /// [`put`](Self::put) with an explicit creation time (tests backdate entries with it).
    pub(crate) fn put_at(&self, key: &CacheKey, task_key: &str, value: Arc<[u8]>, at: SystemTime) {
        self.lock().insert(*key, at, Arc::clone(&value));
        let hex = key.hex();
        let path = self.entry_path(&hex);
        self.write(&path, &hex, task_key, at, &value, false);
    }

    /// Keeps the result of run `run_id` (`persist = true`), in memory and under `results/`.
    ///
    /// Unlike cache entries, kept results are synced to disk before they are renamed into place.
    pub fn put_result(&self, run_id: Uuid, task_key: &str, value: Arc<[u8]>) {
        let at = SystemTime::now();
        self.lock()
            .insert(result_key(run_id), at, Arc::clone(&value));
        let id = run_id.to_string();
        let path = self.result_path(&id);
        self.write(&path, &id, task_key, at, &value, true);
    }

    /// The kept result of run `run_id`, if any (memory first, then disk).
    pub fn get_result(&self, run_id: Uuid) -> Option<Arc<[u8]>> {
        let key = result_key(run_id);
        if let Some(value) = self.lock().get(&key, None) {
            return Some(value);
        }
        let id = run_id.to_string();
        let entry = read_entry(&self.result_path(&id), &id)?;
        self.lock()
            .insert(key, entry.created, Arc::clone(&entry.value));
        Some(entry.value)
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // The table is consistent between statements; a panic elsewhere while it was held
        // (e.g. an allocation failure) must not turn every later lookup into a panic.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry_path(&self, hex: &str) -> PathBuf {
        let shard = hex.get(..2).unwrap_or("00");
        self.home
            .join("cache")
            .join(shard)
            .join(format!("{hex}.{EXTENSION}"))
    }

    fn result_path(&self, id: &str) -> PathBuf {
        self.home.join("results").join(format!("{id}.{EXTENSION}"))
    }

    fn write(
        &self,
        path: &Path,
        key: &str,
        task_key: &str,
        at: SystemTime,
        value: &[u8],
        durable: bool,
    ) {
        let header = encode_header(key, task_key, at, value);
        match write_atomic(path, &header, value, durable) {
            Ok(()) => {
                self.write_failures.store(0, Ordering::Relaxed);
            }
            Err(err) => {
                // A read-only or full disk fails every write: say so loudly once, then back off
                // (1st, 2nd, 4th, 8th, ... failure in a row).
                let n = self.write_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        target: "flowkit",
                        file = %path.display(),
                        failures_in_a_row = n,
                        "cannot write cache entry: {err}; the result is cached in memory only"
                    );
                } else {
                    tracing::debug!(
                        target: "flowkit",
                        file = %path.display(),
                        "cannot write cache entry: {err}"
                    );
                }
            }
        }
    }
}

impl fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let memory = self.lock();
        f.debug_struct("CacheStore")
            .field("dir", &self.home)
            .field("memory_entries", &memory.slots.len())
            .field("memory_bytes", &memory.bytes)
            .field("max_bytes", &memory.max_bytes)
            .field("max_entries", &memory.max_entries)
            .finish()
    }
}

fn age(created: SystemTime) -> Duration {
    // An entry from the future (clock skew between processes) counts as brand new.
    SystemTime::now()
        .duration_since(created)
        .unwrap_or(Duration::ZERO)
}

// ---------------------------------------------------------------------------------------------
// Memory layer: a hash table over a slot vector, evicted with the CLOCK algorithm (an
// approximation of LRU whose hit path only sets a flag).

struct Slot {
    key: CacheKey,
    created: SystemTime,
    value: Arc<[u8]>,
    referenced: bool,
}

struct Memory {
    index: HashMap<CacheKey, usize, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
}

fn cost(value: &[u8]) -> usize {
    value.len().saturating_add(ENTRY_OVERHEAD)
}

impl Memory {
    fn new(max_bytes: usize, max_entries: usize) -> Memory {
        Memory {
            index: HashMap::default(),
            slots: Vec::new(),
            hand: 0,
            bytes: 0,
            max_bytes,
            max_entries,
        }
    }

    fn set_limits(&mut self, max_bytes: usize, max_entries: usize) {
        self.max_bytes = max_bytes;
        self.max_entries = max_entries;
        self.evict();
    }

    fn get(&mut self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        let &i = self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        if ttl.is_some_and(|ttl| age(slot.created) > ttl) {
            return None;
        }
        slot.referenced = true;
        Some(Arc::clone(&slot.value))
    }

    fn insert(&mut self, key: CacheKey, created: SystemTime, value: Arc<[u8]>) {
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

// ---------------------------------------------------------------------------------------------
// Disk format.

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    flowkit_entry: u32,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    task_key: Cow<'a, str>,
    created: DateTime<Utc>,
    len: u64,
    #[serde(borrow)]
    blake3: Cow<'a, str>,
}

/// Only the version, read first so that a future format is skipped rather than called corrupt.
#[derive(Deserialize)]
struct Version {
    flowkit_entry: u32,
}

struct Entry {
    created: SystemTime,
    value: Arc<[u8]>,
}

/// Why an entry on disk is not used.
#[derive(Debug)]
enum Invalid {
    /// Written by another version of flowkit: skipped, left alone.
    OtherVersion(u32),
    /// Cannot ever be valid: reported and removed.
    Corrupt(String),
}

fn encode_header(key: &str, task_key: &str, at: SystemTime, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        flowkit_entry: FORMAT_VERSION,
        key: Cow::Borrowed(key),
        task_key: Cow::Borrowed(task_key),
        created: DateTime::<Utc>::from(at),
        len: payload.len() as u64,
        blake3: Cow::Owned(blake3::hash(payload).to_hex().to_string()),
    };
    // Serializing strings and numbers into a Vec cannot fail; should it ever, the entry is
    // written with an empty header and is read back as corrupt, i.e. a miss.
    let mut line = serde_json::to_vec(&header).unwrap_or_default();
    line.push(b'\n');
    line
}

fn decode(bytes: &[u8], expected_key: &str) -> Result<Entry, Invalid> {
    let corrupt = |why: String| Invalid::Corrupt(why);
    let end = bytes
        .iter()
        .take(MAX_HEADER_LEN)
        .position(|&b| b == b'\n')
        .ok_or_else(|| {
            corrupt(if bytes.is_empty() {
                "the file is empty".to_string()
            } else {
                "no header line".to_string()
            })
        })?;
    let line = &bytes[..end];
    let version: Version =
        serde_json::from_slice(line).map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    if version.flowkit_entry != FORMAT_VERSION {
        return Err(Invalid::OtherVersion(version.flowkit_entry));
    }
    let header: Header<'_> =
        serde_json::from_slice(line).map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    if header.key != expected_key {
        return Err(corrupt(format!(
            "the header names key {}, not the file's",
            header.key
        )));
    }
    let payload = &bytes[end + 1..];
    if payload.len() as u64 != header.len {
        return Err(corrupt(format!(
            "payload is {} bytes, the header says {} (truncated or appended to)",
            payload.len(),
            header.len
        )));
    }
    if blake3::hash(payload).to_hex().as_str() != header.blake3 {
        return Err(corrupt(
            "payload checksum does not match the header's blake3".to_string(),
        ));
    }
    Ok(Entry {
        created: header.created.into(),
        value: Arc::from(payload),
    })
}

/// Reads and checks the entry at `path`; every problem is a `None`, reported unless it is the
/// ordinary "not there".
fn read_entry(path: &Path, expected_key: &str) -> Option<Entry> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(
                target: "flowkit",
                file = %path.display(),
                "cannot read cache entry: {err}; treating it as a miss"
            );
            return None;
        }
    };
    match decode(&bytes, expected_key) {
        Ok(entry) => Some(entry),
        Err(Invalid::OtherVersion(v)) => {
            tracing::debug!(
                target: "flowkit",
                file = %path.display(),
                "cache entry has format version {v}, this flowkit reads {FORMAT_VERSION}: a miss"
            );
            None
        }
        Err(Invalid::Corrupt(why)) => {
            // It can never become valid; removing it keeps the warning from repeating on every
            // lookup, and the next successful run writes a good entry in its place.
            let removed = fs::remove_file(path).is_ok();
            tracing::warn!(
                target: "flowkit",
                file = %path.display(),
                removed,
                "corrupt cache entry ({why}); treating it as a miss"
            );
            None
        }
    }
}

/// Writes `header` + `payload` to a temporary file next to `path` and renames it into place.
fn write_atomic(path: &Path, header: &[u8], payload: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("entry path has no parent directory"))?;
    let (tmp, mut file) = match create_temp(dir, path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            create_temp(dir, path)?
        }
        other => other?,
    };
    let written = (|| {
        file.write_all(header)?;
        file.write_all(payload)?;
        if durable {
            file.sync_data()?;
        }
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn create_temp(dir: &Path, target: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}-{}-{:08x}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    ));
    let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key(n: u8) -> CacheKey {
        cache_key("tests::task", "src-hash", &[n; 32])
    }

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn put_then_get_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        assert!(store.get(&key(1), None).is_none());
        store.put(&key(1), "tests::task", bytes(r#"{"a":1}"#));
        assert_eq!(&*store.get(&key(1), None).unwrap(), br#"{"a":1}"#);
        assert_eq!(
            &*store.get(&key(1), Some(Duration::from_secs(60))).unwrap(),
            br#"{"a":1}"#
        );
        assert!(store.get(&key(2), None).is_none());
    }

    #[test]
    fn layout_is_sharded_by_the_first_two_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        let k = key(7);
        store.put(&k, "tests::task", bytes("1"));
        let hex = k.hex();
        assert_eq!(hex.len(), 64);
        let expected = dir
            .path()
            .join("cache")
            .join(&hex[..2])
            .join(format!("{hex}.entry"));
        assert_eq!(files_under(dir.path()), vec![expected.clone()]);

        let text = fs::read_to_string(&expected).unwrap();
        let (header, payload) = text.split_once('\n').unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(header["flowkit_entry"], 1);
        assert_eq!(header["key"], hex.as_str());
        assert_eq!(header["task_key"], "tests::task");
        assert_eq!(header["len"], 1);
        assert!(header["created"].as_str().unwrap().ends_with('Z'));
        assert_eq!(payload, "1");
    }

    #[test]
    fn entries_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        CacheStore::open(dir.path().to_path_buf()).put(&key(1), "tests::task", bytes("[1,2]"));
        let run = Uuid::now_v7();
        CacheStore::open(dir.path().to_path_buf()).put_result(run, "tests::task", bytes("42"));

        let reopened = CacheStore::open(dir.path().to_path_buf());
        assert_eq!(&*reopened.get(&key(1), None).unwrap(), b"[1,2]");
        assert_eq!(&*reopened.get_result(run).unwrap(), b"42");
        assert!(reopened.get_result(Uuid::now_v7()).is_none());
        assert!(
            dir.path()
                .join("results")
                .join(format!("{run}.entry"))
                .is_file()
        );
    }

    #[test]
    fn a_disk_hit_is_promoted_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        CacheStore::open(dir.path().to_path_buf()).put(&key(1), "tests::task", bytes("x"));
        let store = CacheStore::open(dir.path().to_path_buf());
        assert!(store.get(&key(1), None).is_some());
        fs::remove_dir_all(dir.path().join("cache")).unwrap();
        // Served from memory now: the files are gone.
        assert_eq!(&*store.get(&key(1), None).unwrap(), b"x");
    }

    #[test]
    fn ttl_is_checked_on_read_against_the_callers_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let store = CacheStore::open(dir.path().to_path_buf());
        store.put_at(&key(1), "tests::task", bytes("old"), hour_ago);

        // In memory.
        assert!(store.get(&key(1), Some(Duration::from_secs(60))).is_none());
        assert!(
            store
                .get(&key(1), Some(Duration::from_secs(7200)))
                .is_some()
        );
        assert!(store.get(&key(1), None).is_some());

        // On disk, after a restart; the expired entry is kept for a longer TTL.
        let reopened = CacheStore::open(dir.path().to_path_buf());
        assert!(
            reopened
                .get(&key(1), Some(Duration::from_secs(60)))
                .is_none()
        );
        assert_eq!(files_under(dir.path()).len(), 1);
        assert!(
            reopened
                .get(&key(1), Some(Duration::from_secs(7200)))
                .is_some()
        );
    }

    #[test]
    fn a_fresh_put_replaces_an_expired_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        store.put_at(&key(1), "tests::task", bytes("old"), hour_ago);
        store.put(&key(1), "tests::task", bytes("new"));
        let ttl = Some(Duration::from_secs(60));
        assert_eq!(&*store.get(&key(1), ttl).unwrap(), b"new");
        let reopened = CacheStore::open(dir.path().to_path_buf());
        assert_eq!(&*reopened.get(&key(1), ttl).unwrap(), b"new");
    }

    /// Writes a good entry with one store, damages it, and reads it with a fresh one.
    fn read_damaged(damage: impl FnOnce(&Path)) -> (Option<Arc<[u8]>>, bool) {
        let dir = tempfile::tempdir().unwrap();
        CacheStore::open(dir.path().to_path_buf()).put(
            &key(1),
            "tests::task",
            bytes(r#"{"payload":"some bytes"}"#),
        );
        let path = files_under(dir.path()).pop().unwrap();
        damage(&path);
        let got = CacheStore::open(dir.path().to_path_buf()).get(&key(1), None);
        (got, path.exists())
    }

    #[test]
    fn a_truncated_entry_is_a_miss_and_is_removed() {
        let (got, exists) = read_damaged(|p| {
            let len = fs::metadata(p).unwrap().len();
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len - 3).unwrap();
        });
        assert!(got.is_none());
        assert!(!exists);
    }

    #[test]
    fn a_truncated_header_is_a_miss() {
        let (got, _) = read_damaged(|p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(20).unwrap();
        });
        assert!(got.is_none());
    }

    #[test]
    fn an_empty_entry_is_a_miss() {
        let (got, _) = read_damaged(|p| fs::write(p, b"").unwrap());
        assert!(got.is_none());
    }

    #[test]
    fn garbage_is_a_miss() {
        let (got, _) = read_damaged(|p| fs::write(p, b"\x00\xffnot an entry\n\x01\x02").unwrap());
        assert!(got.is_none());
        let (got, _) = read_damaged(|p| fs::write(p, vec![b'x'; 200_000]).unwrap());
        assert!(got.is_none());
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum() {
        let (got, exists) = read_damaged(|p| {
            let mut data = fs::read(p).unwrap();
            let last = data.len() - 2;
            data[last] ^= 0x20;
            fs::write(p, data).unwrap();
        });
        assert!(got.is_none());
        assert!(!exists);
    }

    #[test]
    fn an_entry_under_the_wrong_name_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        store.put(&key(2), "tests::task", bytes("two"));
        let from = store.entry_path(&key(2).hex());
        let to = store.entry_path(&key(1).hex());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, &to).unwrap();
        assert!(
            CacheStore::open(dir.path().to_path_buf())
                .get(&key(1), None)
                .is_none()
        );
    }

    /// What `flowkit` logs at warning level while `f` runs on this thread.
    fn warnings_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
    }

    #[test]
    fn a_corrupt_entry_is_reported_with_its_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        CacheStore::open(dir.path().to_path_buf()).put(&key(1), "tests::task", bytes("12345"));
        let path = files_under(dir.path()).pop().unwrap();
        let mut data = fs::read(&path).unwrap();
        data.truncate(data.len() - 1);
        fs::write(&path, data).unwrap();
        let logs = warnings_of(|| {
            assert!(
                CacheStore::open(dir.path().to_path_buf())
                    .get(&key(1), None)
                    .is_none()
            );
        });
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains(&path.display().to_string()), "{logs}");
        assert!(
            logs.contains("payload is 4 bytes, the header says 5"),
            "{logs}"
        );
    }

    #[test]
    fn a_failing_disk_warns_once_then_backs_off() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("not-a-dir");
        fs::write(&home, b"").unwrap();
        let store = CacheStore::open(home);
        let logs = warnings_of(|| {
            for n in 0..5 {
                store.put(&key(n), "tests::task", bytes("v"));
            }
        });
        // Failures 1, 2 and 4 are warnings; 3 and 5 are debug.
        assert_eq!(
            logs.matches("cannot write cache entry").count(),
            3,
            "{logs}"
        );
    }

    #[test]
    fn another_format_version_is_a_quiet_miss_and_is_kept() {
        let (got, exists) = read_damaged(|p| {
            fs::write(p, b"{\"flowkit_entry\":2,\"whatever\":true}\nbody").unwrap()
        });
        assert!(got.is_none());
        assert!(exists);
    }

    #[test]
    fn an_unreadable_entry_is_a_miss() {
        // A directory where the file should be: reading fails with something other than
        // NotFound.
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        fs::create_dir_all(store.entry_path(&key(1).hex())).unwrap();
        assert!(store.get(&key(1), None).is_none());
        // ... and writing over it fails: a warning, and the value is still served from memory.
        store.put(&key(1), "tests::task", bytes("v"));
        assert_eq!(&*store.get(&key(1), None).unwrap(), b"v");
    }

    #[test]
    fn a_failed_write_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // The home is a file: no directory can be created under it.
        let home = dir.path().join("not-a-dir");
        fs::write(&home, b"").unwrap();
        let store = CacheStore::open(home);
        store.put(&key(1), "tests::task", bytes("v"));
        store.put(&key(2), "tests::task", bytes("w"));
        store.put_result(Uuid::now_v7(), "tests::task", bytes("r"));
        assert_eq!(&*store.get(&key(1), None).unwrap(), b"v");
        assert_eq!(store.write_failures.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CacheStore::open(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for n in 0..25u8 {
                        // Threads overwrite each other's keys: renames race, never tear.
                        store.put(&key(n), "tests::task", bytes(&format!("{t}-{n}")));
                        store.put_result(Uuid::now_v7(), "tests::task", bytes("r"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let files = files_under(dir.path());
        assert_eq!(files.len(), 25 + 100);
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            assert!(name.ends_with(".entry") && !name.starts_with('.'), "{name}");
        }
        let reopened = CacheStore::open(dir.path().to_path_buf());
        for n in 0..25u8 {
            let v = reopened.get(&key(n), None).unwrap();
            assert!(std::str::from_utf8(&v).unwrap().ends_with(&format!("-{n}")));
        }
    }

    #[test]
    fn memory_is_bounded_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf())
            .with_memory_limit(4 * (1000 + ENTRY_OVERHEAD), usize::MAX);
        for n in 0..10 {
            store.put(&key(n), "tests::task", Arc::from(vec![n; 1000]));
            let m = store.lock();
            assert!(m.bytes <= m.max_bytes);
            assert!(m.slots.len() <= 4);
        }
        let m = store.lock();
        assert_eq!(m.slots.len(), 4);
        assert_eq!(m.index.len(), 4);
        assert_eq!(m.bytes, 4 * (1000 + ENTRY_OVERHEAD));
        // The newest entry was not the one evicted.
        assert!(m.index.contains_key(&key(9)));
        drop(m);
        // Evicted from memory, still on disk.
        assert_eq!(store.get(&key(0), None).unwrap().len(), 1000);
    }

    #[test]
    fn memory_is_bounded_by_entries_and_prefers_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf()).with_memory_limit(usize::MAX, 3);
        for n in 0..3 {
            store.put(&key(n), "tests::task", bytes("v"));
        }
        // A full sweep clears every flag and evicts the oldest entry.
        store.put(&key(3), "tests::task", bytes("v"));
        assert!(!store.lock().index.contains_key(&key(0)));
        // key(1) is used again: it outlives two more insertions, key(2) does not.
        assert!(store.get(&key(1), None).is_some());
        store.put(&key(4), "tests::task", bytes("v"));
        store.put(&key(5), "tests::task", bytes("v"));
        let m = store.lock();
        assert_eq!(m.slots.len(), 3);
        assert!(m.index.contains_key(&key(1)));
        assert!(!m.index.contains_key(&key(2)));
        for (k, &i) in &m.index {
            assert_eq!(m.slots[i].key, *k);
        }
    }

    #[test]
    fn an_entry_larger_than_memory_lives_on_disk_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf()).with_memory_limit(100, 10);
        store.put(&key(1), "tests::task", Arc::from(vec![0u8; 500]));
        assert_eq!(store.lock().slots.len(), 0);
        assert_eq!(store.get(&key(1), None).unwrap().len(), 500);
    }

    #[test]
    fn a_memory_hit_needs_no_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path().to_path_buf());
        store.put(&key(1), "tests::task", bytes("v"));
        fs::remove_dir_all(dir.path()).unwrap();
        assert!(store.get(&key(1), Some(Duration::from_secs(1))).is_some());
    }

    #[test]
    fn hash_inputs_is_stable_for_equal_values() {
        #[derive(Serialize)]
        struct Args {
            name: String,
            sizes: Vec<u32>,
            opts: BTreeMap<String, f64>,
        }
        let make = || Args {
            name: "x".into(),
            sizes: vec![1, 2, 3],
            opts: [("b".to_string(), 2.0), ("a".to_string(), 1.0)].into(),
        };
        let a = hash_inputs(&make()).unwrap();
        assert_eq!(a, hash_inputs(&make()).unwrap());
        // It is the BLAKE3 of the JSON, so it is stable across processes and versions too.
        let json = serde_json::to_vec(&make()).unwrap();
        assert_eq!(a, *blake3::hash(&json).as_bytes());
        let mut other = make();
        other.sizes.push(4);
        assert_ne!(a, hash_inputs(&other).unwrap());
    }

    #[test]
    fn hash_inputs_reports_unserializable_values() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), "tuple keys are not JSON");
        assert!(hash_inputs(&map).is_err());
    }

    #[test]
    fn cache_key_parts_do_not_run_into_each_other() {
        let i = [0u8; 32];
        assert_ne!(cache_key("ab", "c", &i), cache_key("a", "bc", &i));
        assert_ne!(cache_key("", "x", &i), cache_key("x", "", &i));
        assert_ne!(
            cache_key("t", "s", &i),
            result_key(Uuid::from_bytes([0; 16]))
        );
    }

    proptest! {
        #[test]
        fn cache_key_changes_with_every_part(
            task in ".{0,20}", source in ".{0,20}", inputs in any::<[u8; 32]>(),
            task2 in ".{0,20}", source2 in ".{0,20}", inputs2 in any::<[u8; 32]>(),
        ) {
            let k = cache_key(&task, &source, &inputs);
            prop_assert_eq!(k, cache_key(&task, &source, &inputs));
            prop_assert_eq!(k == cache_key(&task2, &source, &inputs), task == task2);
            prop_assert_eq!(k == cache_key(&task, &source2, &inputs), source == source2);
            prop_assert_eq!(k == cache_key(&task, &source, &inputs2), inputs == inputs2);
        }

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
