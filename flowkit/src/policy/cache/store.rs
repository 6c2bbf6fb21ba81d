//! The cache of this process: the memory layer in front of the entries on disk.
//!
//! The runtime calls the async methods ([`CacheStore::load`], [`CacheStore::save`],
//! [`CacheStore::save_result`]): a memory hit is answered in place, while every disk read and
//! write (with its fsync, for kept results) runs on tokio's blocking pool, never on the worker
//! thread that polls the run, where it would stall every task scheduled on that thread.

use super::disk;
use super::key::{CacheKey, result_key};
use super::memory::{DEFAULT_MEMORY_BYTES, DEFAULT_MEMORY_ENTRIES, Memory, age};
use crate::atomic_file::Durability;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Memory in front of the entries under `FLOWKIT_HOME`.
///
/// Every method takes `&self` and is safe to call from any thread. No method fails: problems
/// with the disk are logged and the cache behaves as if the entry were not there.
pub(crate) struct CacheStore {
    home: PathBuf,
    memory: Mutex<Memory>,
    write_failures: AtomicU64,
}

/// The cache of this process, rooted at [`crate::config::Config::home`].
pub(crate) fn store() -> &'static Arc<CacheStore> {
    static STORE: OnceLock<Arc<CacheStore>> = OnceLock::new();
    STORE.get_or_init(|| Arc::new(CacheStore::open(crate::config::get().home.clone())))
}

/// Runs blocking disk work on tokio's blocking pool when there is a runtime, else here.
/// `None` when the work could not finish: the runtime is shutting down, or it panicked (the
/// cache can only make a run faster, so either is a miss or an unwritten entry).
async fn off_worker<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(work).await.ok(),
        Err(_) => Some(work()),
    }
}

impl CacheStore {
    /// A store rooted at `dir` (entries under `dir/cache/`, kept results under `dir/results/`)
    /// with the default memory bounds.
    ///
    /// Touches nothing on disk: directories are created by the first write.
    pub(crate) fn open(dir: PathBuf) -> CacheStore {
        CacheStore {
            home: dir,
            memory: Mutex::new(Memory::new(DEFAULT_MEMORY_BYTES, DEFAULT_MEMORY_ENTRIES)),
            write_failures: AtomicU64::new(0),
        }
    }

    /// The entry for `key`, if present and younger than `ttl` (`None`: any age): from memory
    /// in place, else from disk off the async workers.
    pub(crate) async fn load(
        self: &Arc<Self>,
        key: CacheKey,
        ttl: Option<Duration>,
    ) -> Option<Arc<[u8]>> {
        if let Some(value) = self.lock().get(&key, ttl) {
            return Some(value);
        }
        let this = Arc::clone(self);
        off_worker(move || this.get_from_disk(&key, ttl))
            .await
            .flatten()
    }

    /// Stores `value` under `key`: in memory at once, then on disk off the async workers
    /// (`task_key` is recorded for humans).
    pub(crate) async fn save(self: &Arc<Self>, key: CacheKey, task_key: &str, value: Arc<[u8]>) {
        let at = SystemTime::now();
        self.lock().insert(key, at, Arc::clone(&value));
        let (this, task_key) = (Arc::clone(self), task_key.to_owned());
        off_worker(move || this.put_on_disk(&key, &task_key, at, &value)).await;
    }

    /// Keeps the result of run `run_id` (`persist = true`): in memory at once, then durably on
    /// disk off the async workers.
    pub(crate) async fn save_result(
        self: &Arc<Self>,
        run_id: Uuid,
        task_key: &str,
        value: Arc<[u8]>,
    ) {
        let at = SystemTime::now();
        self.lock()
            .insert(result_key(run_id), at, Arc::clone(&value));
        let (this, task_key) = (Arc::clone(self), task_key.to_owned());
        off_worker(move || this.put_result_on_disk(run_id, &task_key, at, &value)).await;
    }

    /// The kept result of run `run_id`, if any (memory first, then disk).
    // The read side of `persist`: only tests read kept results until results are served.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn get_result(&self, run_id: Uuid) -> Option<Arc<[u8]>> {
        let key = result_key(run_id);
        if let Some(value) = self.lock().get(&key, None) {
            return Some(value);
        }
        let id = run_id.to_string();
        let entry = disk::read_entry(&disk::result_path(&self.home, &id), &id)?;
        self.lock()
            .insert(key, entry.created, Arc::clone(&entry.value));
        Some(entry.value)
    }

    /// The disk half of a lookup: a valid entry younger than `ttl` is promoted to memory.
    fn get_from_disk(&self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        let hex = key.hex();
        let path = disk::entry_path(&self.home, &hex);
        let entry = disk::read_entry(&path, &hex)?;
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

    fn put_on_disk(&self, key: &CacheKey, task_key: &str, at: SystemTime, value: &[u8]) {
        let hex = key.hex();
        let path = disk::entry_path(&self.home, &hex);
        self.write(&path, &hex, task_key, at, value, Durability::Process);
    }

    /// Unlike cache entries, kept results are synced to disk before they are renamed into
    /// place: a lost cache entry is a miss, a lost kept result is lost.
    fn put_result_on_disk(&self, run_id: Uuid, task_key: &str, at: SystemTime, value: &[u8]) {
        let id = run_id.to_string();
        let path = disk::result_path(&self.home, &id);
        self.write(&path, &id, task_key, at, value, Durability::Machine);
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // The table is consistent between statements; a panic elsewhere while it was held
        // (e.g. an allocation failure) must not turn every later lookup into a panic.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
        path: &Path,
        key: &str,
        task_key: &str,
        at: SystemTime,
        value: &[u8],
        durability: Durability,
    ) {
        match disk::write_entry(path, key, task_key, at, value, durability) {
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

/// Blocking counterparts of the async methods, for the tests of the layers underneath.
#[cfg(test)]
impl CacheStore {
    /// Bounds the in-memory layer to `max_bytes` (payloads plus a small per-entry overhead) and
    /// `max_entries`, evicting entries not used recently (CLOCK) beyond that. An entry larger
    /// than `max_bytes` is kept on disk only; `0` entries turns the memory layer off.
    pub(crate) fn with_memory_limit(self, max_bytes: usize, max_entries: usize) -> CacheStore {
        self.lock().set_limits(max_bytes, max_entries);
        self
    }

    /// The directory this store is rooted at.
    pub(crate) fn dir(&self) -> &Path {
        &self.home
    }

    /// [`load`](Self::load), blocking: the entry for `key`, from memory or disk.
    pub(crate) fn get(&self, key: &CacheKey, ttl: Option<Duration>) -> Option<Arc<[u8]>> {
        if let Some(value) = self.lock().get(key, ttl) {
            return Some(value);
        }
        self.get_from_disk(key, ttl)
    }

    /// [`save`](Self::save), blocking.
    pub(crate) fn put(&self, key: &CacheKey, task_key: &str, value: Arc<[u8]>) {
        self.put_at(key, task_key, value, SystemTime::now());
    }

    /// [`put`](Self::put) with an explicit creation time (tests backdate entries with it).
    pub(crate) fn put_at(&self, key: &CacheKey, task_key: &str, value: Arc<[u8]>, at: SystemTime) {
        self.lock().insert(*key, at, Arc::clone(&value));
        self.put_on_disk(key, task_key, at, &value);
    }

    /// [`save_result`](Self::save_result), blocking.
    pub(crate) fn put_result(&self, run_id: Uuid, task_key: &str, value: Arc<[u8]>) {
        let at = SystemTime::now();
        self.lock()
            .insert(result_key(run_id), at, Arc::clone(&value));
        self.put_result_on_disk(run_id, task_key, at, &value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cache::key::cache_key;
    use crate::policy::cache::memory::ENTRY_OVERHEAD;
    use std::fs::{self, OpenOptions};
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};

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
        let from = disk::entry_path(store.dir(), &key(2).hex());
        let to = disk::entry_path(store.dir(), &key(1).hex());
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
        fs::create_dir_all(disk::entry_path(store.dir(), &key(1).hex())).unwrap();
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

    #[tokio::test(flavor = "current_thread")]
    async fn load_and_save_go_through_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CacheStore::open(dir.path().to_path_buf()));
        assert!(store.load(key(1), None).await.is_none());
        store.save(key(1), "tests::task", bytes("v")).await;
        let run = Uuid::now_v7();
        store.save_result(run, "tests::task", bytes("r")).await;
        assert_eq!(&*store.load(key(1), None).await.unwrap(), b"v");
        // On disk by the time `save` returned: a fresh store finds both.
        let reopened = Arc::new(CacheStore::open(dir.path().to_path_buf()));
        assert_eq!(&*reopened.load(key(1), None).await.unwrap(), b"v");
        assert_eq!(&*reopened.get_result(run).unwrap(), b"r");
        assert!(reopened.load(key(2), None).await.is_none());
    }
}
