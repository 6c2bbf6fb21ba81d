//! The cache on disk: where entries live under `FLOWKIT_HOME` and the format of an entry.
//!
//! # Layout
//!
//! ```text
//! <home>/cache/ab/ab12…ef.entry   a cached result, named by its key (64 hex digits) and
//!                                 sharded by the key's first two hex digits
//! <home>/results/<run id>.entry   the kept result of a run (`persist = true`)
//! ```
//!
//! Every file is written with [`crate::atomic_file`] (a temporary name in the same directory,
//! renamed over the final name), so a reader sees a whole entry or none, even with several
//! processes sharing one `FLOWKIT_HOME`.
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
//!
//! Everything here blocks on the file system: the store calls it off the async workers.

use crate::atomic_file::{self, Durability};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The version written in the `flowkit_entry` header field.
const FORMAT_VERSION: u32 = 1;

/// Extension of entry files.
const EXTENSION: &str = "entry";

/// A header longer than this is not a header: the file is garbage.
const MAX_HEADER_LEN: usize = 64 * 1024;

/// `<home>/cache/ab/ab12…ef.entry`: the file of the cache entry whose key is `hex`.
pub(super) fn entry_path(home: &Path, hex: &str) -> PathBuf {
    let shard = hex.get(..2).unwrap_or("00");
    home.join("cache")
        .join(shard)
        .join(format!("{hex}.{EXTENSION}"))
}

/// `<home>/results/<run id>.entry`: the file of a kept result.
pub(super) fn result_path(home: &Path, id: &str) -> PathBuf {
    home.join("results").join(format!("{id}.{EXTENSION}"))
}

/// Writes the entry for `key` (`value` with its header) to `path`, atomically.
pub(super) fn write_entry(
    path: &Path,
    key: &str,
    task_key: &str,
    at: SystemTime,
    value: &[u8],
    durability: Durability,
) -> io::Result<()> {
    gate::pass();
    let header = encode_header(key, task_key, at, value);
    atomic_file::write(path, &[&header, value], durability)
}

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

/// A valid entry read back.
pub(super) struct Entry {
    pub(super) created: SystemTime,
    pub(super) value: Arc<[u8]>,
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
pub(super) fn read_entry(path: &Path, expected_key: &str) -> Option<Entry> {
    gate::pass();
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

/// A way for tests to make the disk as slow as they like (feature `test-util`): see
/// [`crate::testing::hold_cache_disk`].
#[cfg(feature = "test-util")]
pub(crate) mod gate {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    /// How long a held operation waits for its release before it goes on regardless: long
    /// enough for any test, short enough that a test which blocks the thread that would
    /// release it fails instead of hanging.
    const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

    static HELD: AtomicBool = AtomicBool::new(false);
    static STATE: Mutex<State> = Mutex::new(State {
        arrived: 0,
        released: 0,
        gave_up: 0,
    });
    static CHANGED: Condvar = Condvar::new();

    struct State {
        arrived: usize,
        released: usize,
        gave_up: usize,
    }

    fn state() -> MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called before every disk read and write: while the gate is held, waits for a release.
    pub(crate) fn pass() {
        if !HELD.load(Ordering::Acquire) {
            return;
        }
        let mut s = state();
        s.arrived += 1;
        let ticket = s.arrived;
        CHANGED.notify_all();
        let deadline = Instant::now() + GIVE_UP_AFTER;
        while HELD.load(Ordering::Acquire) && s.released < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.gave_up += 1;
                return;
            }
            s = CHANGED
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn hold() {
        let mut s = state();
        (s.arrived, s.released, s.gave_up) = (0, 0, 0);
        HELD.store(true, Ordering::Release);
    }

    pub(crate) fn open() {
        HELD.store(false, Ordering::Release);
        let _s = state();
        CHANGED.notify_all();
    }

    pub(crate) fn release_one() {
        let mut s = state();
        s.released += 1;
        CHANGED.notify_all();
    }

    pub(crate) fn arrived() -> usize {
        state().arrived
    }

    pub(crate) fn gave_up() -> usize {
        state().gave_up
    }
}

#[cfg(not(feature = "test-util"))]
mod gate {
    pub(super) fn pass() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_checks_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = entry_path(dir.path(), "ab12");
        assert!(path.ends_with("cache/ab/ab12.entry"), "{}", path.display());
        let at = SystemTime::now();
        write_entry(
            &path,
            "ab12",
            "tests::task",
            at,
            b"[1,2]",
            Durability::Process,
        )
        .unwrap();
        let entry = read_entry(&path, "ab12").unwrap();
        assert_eq!(&*entry.value, b"[1,2]");
        assert_eq!(
            DateTime::<Utc>::from(entry.created),
            DateTime::<Utc>::from(at)
        );
        // The same bytes under another key's name are not that key's entry.
        assert!(matches!(
            decode(&fs::read(&path).unwrap(), "cd34"),
            Err(Invalid::Corrupt(_))
        ));
    }

    #[test]
    fn another_version_is_not_corrupt() {
        assert!(matches!(
            decode(b"{\"flowkit_entry\":2,\"whatever\":true}\nbody", "k"),
            Err(Invalid::OtherVersion(2))
        ));
    }
}
