//! The spool: batches the server has not taken yet, one compressed JSON-lines file per chunk.
//!
//! A file is named `<micros>-<pid>-<seq>-<count>.jsonl.lz4`: when its oldest batch was cut
//! (microseconds since the Unix epoch), by which process, in which order within that process,
//! and how many events it holds (a line may be a run record standing for several events).
//! Sorting by `(micros, pid, seq)` is sorting by age, across processes. Its content is one LZ4
//! frame (with a content checksum) of JSON lines, each one element of a batch exactly as the
//! server ingests it: an [`Event`](crate::Event), or a run record. Events compress about four
//! times, so the spool's byte bound holds four times more of them. Plain `.jsonl` files (left
//! by flowkit versions before compressed spools) are read and sent too.
//!
//! Files are written to a hidden temporary name and renamed into place, so a reader never
//! sees half a file. Only the process holding the exclusive lock on `.lock` reads and
//! deletes files; every process may add files. The lock dies with its process, so the next
//! process that starts (or a running one, on its next scan) takes over what a dead one left.

use crate::atomic_file::{self, Durability};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temporary files older than this were left by a crash and are removed on a scan.
const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

/// The end of a spool file's name.
const SUFFIX: &str = ".jsonl.lz4";
/// The end of an uncompressed spool file's name (flowkit versions before compressed spools).
const PLAIN_SUFFIX: &str = ".jsonl";
/// Most bytes one spool file unpacks to; past it the rest of the file is left out (a chunk
/// holds at most one batch of the largest size, a few megabytes: only a damaged or foreign
/// file comes near).
const MAX_UNPACKED: u64 = 256 * 1024 * 1024;

/// The age of a batch: orders batches oldest first, across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    /// When the batch was cut, in microseconds since the Unix epoch.
    pub micros: u64,
    /// The process that cut it.
    pub pid: u32,
    /// Its order among the batches of that process.
    pub seq: u64,
}

impl Key {
    /// The file name of a chunk of `count` events whose oldest batch has this key.
    pub(crate) fn file_name(&self, count: usize) -> String {
        format!(
            "{:020}-{:010}-{:010}-{count}{SUFFIX}",
            self.micros, self.pid, self.seq
        )
    }

    /// The key and event count a spool file name stands for, if it is one.
    pub(crate) fn parse_file_name(name: &str) -> Option<(Key, usize)> {
        let stem = name
            .strip_suffix(SUFFIX)
            .or_else(|| name.strip_suffix(PLAIN_SUFFIX))?;
        let mut parts = stem.split('-');
        let micros = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok()?;
        parts
            .next()
            .is_none()
            .then_some((Key { micros, pid, seq }, count))
    }
}

/// One spool file this process knows about.
#[derive(Clone, Debug)]
pub(crate) struct SpoolFile {
    pub path: PathBuf,
    pub count: usize,
    pub bytes: u64,
}

/// The spool directory of one reporter.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    /// The open `.lock` file while this process holds the lock.
    lock: Option<File>,
    /// Files found by the last scan plus those written since, oldest first (only kept while
    /// holding the lock: nobody else may send them).
    files: BTreeMap<Key, SpoolFile>,
    /// Events and bytes in the directory, as far as this process knows.
    events: u64,
    bytes: u64,
    max_events: u64,
    max_bytes: u64,
}

impl Spool {
    /// A spool in `dir` (created on first write) bounded to `max_events` and `max_bytes`.
    pub(crate) fn new(dir: PathBuf, max_events: u64, max_bytes: u64) -> Spool {
        Spool {
            dir,
            lock: None,
            files: BTreeMap::new(),
            events: 0,
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this process holds the lock, i.e. is the one that sends spooled files.
    pub(crate) fn is_owner(&self) -> bool {
        self.lock.is_some()
    }

    /// Events in the spool, as far as this process knows.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Takes the lock if nobody holds it. Returns whether this process holds it now.
    pub(crate) fn try_own(&mut self) -> io::Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        if !self.dir.exists() {
            // Nothing to send yet; the directory is made on the first write.
            return Ok(false);
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(true)
            }
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Lists the directory again: other processes add files, a previous one left some.
    pub(crate) fn scan(&mut self) -> io::Result<()> {
        let mut files = BTreeMap::new();
        let (mut events, mut bytes) = (0u64, 0u64);
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.files.clear();
                (self.events, self.bytes) = (0, 0);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                if name.ends_with(".tmp") {
                    remove_if_stale(&entry.path());
                }
                continue;
            }
            let Some((key, count)) = Key::parse_file_name(name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            events += count as u64;
            bytes += meta.len();
            files.insert(
                key,
                SpoolFile {
                    path: entry.path(),
                    count,
                    bytes: meta.len(),
                },
            );
        }
        (self.events, self.bytes) = (events, bytes);
        self.files = if self.is_owner() {
            files
        } else {
            BTreeMap::new()
        };
        Ok(())
    }

    /// Whether `count` more events in `bytes` more bytes stay within the bounds.
    pub(crate) fn fits(&self, count: usize, bytes: usize) -> bool {
        self.events + count as u64 <= self.max_events && self.bytes + bytes as u64 <= self.max_bytes
    }

    /// Writes a chunk of `count` events under `key`, atomically and durably: `packed` is
    /// what [`pack`] made of its lines.
    pub(crate) fn write(&mut self, key: Key, packed: &[u8], count: usize) -> io::Result<()> {
        let path = self.dir.join(key.file_name(count));
        // Durable before it is visible: after a power cut a file is whole or absent.
        atomic_file::write(&path, &[packed], Durability::Machine)?;
        self.events += count as u64;
        self.bytes += packed.len() as u64;
        if self.is_owner() {
            self.files.insert(
                key,
                SpoolFile {
                    path,
                    count,
                    bytes: packed.len() as u64,
                },
            );
        }
        Ok(())
    }

    /// The oldest file, if this process may send files.
    pub(crate) fn oldest(&self) -> Option<(Key, &SpoolFile)> {
        self.files.iter().next().map(|(k, f)| (*k, f))
    }

    /// Forgets a file (delivered, unreadable or gone) and deletes it.
    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some(file) = self.files.remove(key) {
            self.events = self.events.saturating_sub(file.count as u64);
            self.bytes = self.bytes.saturating_sub(file.bytes);
            match fs::remove_file(&file.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Left behind, it would be sent again: harmless, the server ingests an id once.
                Err(_) => {}
            }
        }
    }
}

/// A spool file read back.
#[derive(Debug)]
pub(crate) struct Lines {
    /// The lines to send, each a JSON object ending with a newline.
    pub lines: Vec<u8>,
    /// How many lines.
    pub count: usize,
    /// How many events they stand for (a run record stands for several).
    pub events: usize,
    /// Damaged lines left out.
    pub skipped: usize,
}

/// The content of a spool file holding `lines` (JSON lines): one LZ4 frame of independent
/// 64 KiB blocks, each with its checksum, and a checksum of the whole.
pub(crate) fn pack(lines: &[u8]) -> io::Result<Vec<u8>> {
    let mut info = lz4_flex::frame::FrameInfo::new();
    info.content_checksum = true;
    // Small independent blocks: a damaged block costs only its own lines.
    info.block_size = lz4_flex::frame::BlockSize::Max64KB;
    info.block_mode = lz4_flex::frame::BlockMode::Independent;
    info.block_checksums = true;
    let mut encoder =
        lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(lines.len() / 3));
    encoder.write_all(lines)?;
    encoder.finish().map_err(io::Error::other)
}

/// The JSON lines of the spool file at `path`: unpacked (at most [`MAX_UNPACKED`] bytes), or
/// as they are for a plain `.jsonl` file. Of a damaged compressed file, what unpacked before
/// the damage (its last line cut short, which [`read_lines`] skips).
fn unpacked(path: &Path) -> io::Result<Vec<u8>> {
    let is_plain = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(PLAIN_SUFFIX));
    if is_plain {
        return fs::read(path);
    }
    let file = File::open(path)?;
    let mut decoder =
        lz4_flex::frame::FrameDecoder::new(io::BufReader::new(file)).take(MAX_UNPACKED);
    let mut data = Vec::new();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut block) {
            Ok(0) => return Ok(data),
            Ok(n) => data.extend_from_slice(&block[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Damaged: what unpacked before the damage, its last line cut short.
            Err(e) if data.is_empty() => return Err(e),
            Err(_) => {
                data.push(b'\n');
                return Ok(data);
            }
        }
    }
}

/// The lines of every spool file in `dir`, oldest file first: each a batch element as the
/// server ingests it (an event or a run record, as JSON). For tools and tests that look at
/// what a process left undelivered; damaged lines are left out.
pub fn spooled_lines(dir: &Path) -> io::Result<Vec<String>> {
    let mut files: Vec<(Key, PathBuf)> = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                if let Some((key, _)) = name.to_str().and_then(Key::parse_file_name) {
                    files.push((key, entry.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    files.sort();
    let mut lines = Vec::new();
    for (_, path) in files {
        let read = match read_lines(&path) {
            Ok(read) => read,
            // Sent and removed meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        lines.extend(
            read.lines
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| String::from_utf8_lossy(line).into_owned()),
        );
    }
    Ok(lines)
}

/// Reads a spool file back as the lines to send, skipping lines that are not JSON objects.
pub(crate) fn read_lines(path: &Path) -> io::Result<Lines> {
    let data = unpacked(path)?;
    let mut out = Vec::with_capacity(data.len());
    let (mut count, mut events, mut skipped) = (0, 0, 0);
    for line in data.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match super::encode::events_in_line(line) {
            Some(n) => {
                out.extend_from_slice(line);
                out.push(b'\n');
                count += 1;
                events += n;
            }
            None => skipped += 1,
        }
    }
    Ok(Lines {
        lines: out,
        count,
        events,
        skipped,
    })
}

fn remove_if_stale(path: &Path) {
    let stale = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_TEMP);
    if stale {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(lines: &[u8]) -> Vec<u8> {
        pack(lines).expect("pack")
    }

    /// `n` lines shaped like the reporter's events.
    fn events(n: usize) -> Vec<u8> {
        let mut lines = Vec::new();
        for i in 0..n {
            let line = serde_json::json!({
                "id": uuid::Uuid::now_v7(),
                "run_id": uuid::Uuid::now_v7(),
                "timestamp": "2026-11-30T10:00:00.123456Z",
                "kind": "state",
                "state": {"type": "Completed", "name": "Completed", "attempt": 1},
                "details": {"name": format!("featurize-{i}"), "task_key": "pipeline::featurize"},
            });
            lines.extend_from_slice(line.to_string().as_bytes());
            lines.push(b'\n');
        }
        lines
    }

    #[test]
    fn files_are_compressed_and_read_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::new(dir.path().to_path_buf(), u64::MAX, u64::MAX);
        let lines = events(2000);
        let file = packed(&lines);
        assert!(
            file.len() * 3 < lines.len(),
            "events compress at least 3x: {} -> {} bytes",
            lines.len(),
            file.len()
        );
        s.write(key(1, 0), &file, 2000).expect("write");
        let path = dir.path().join(key(1, 0).file_name(2000));
        assert!(path.to_string_lossy().ends_with(".jsonl.lz4"));
        let read = read_lines(&path).expect("read");
        assert_eq!(read.lines, lines);
        assert_eq!((read.count, read.events, read.skipped), (2000, 2000, 0));
        assert_eq!(
            spooled_lines(dir.path()).expect("lines").len(),
            2000,
            "the public reader sees every line"
        );
    }

    #[test]
    fn plain_files_of_older_versions_are_still_read_and_ordered() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = format!("{:020}-{:010}-{:010}-1.jsonl", 1, 42, 0);
        fs::write(dir.path().join(&old), b"{\"a\":1}\n").expect("write");
        let mut s = Spool::new(dir.path().to_path_buf(), 100, 1 << 20);
        s.write(key(2, 0), &packed(b"{\"b\":2}\n"), 1)
            .expect("write");
        assert!(s.try_own().expect("lock"));
        s.scan().expect("scan");
        assert_eq!(s.events(), 2);
        assert_eq!(
            s.oldest().map(|(k, _)| k),
            Some(key(1, 0)),
            "the plain file is older"
        );
        assert_eq!(
            spooled_lines(dir.path()).expect("lines"),
            vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()]
        );
    }

    #[test]
    fn a_damaged_compressed_file_gives_back_what_precedes_the_damage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines = events(3000);
        let mut file = packed(&lines);
        // Damage the last third of the frame: the blocks before it still unpack.
        let from = file.len() * 2 / 3;
        for b in &mut file[from..] {
            *b ^= 0x5a;
        }
        let path = dir.path().join(key(1, 0).file_name(3000));
        fs::write(&path, &file).expect("write");
        let read = read_lines(&path).expect("read what unpacks");
        assert!(
            read.count > 0 && read.count < 3000,
            "a prefix is kept: {} lines",
            read.count
        );
        assert!(
            lines.starts_with(&read.lines),
            "whole lines of the original, in order"
        );
        // Entirely foreign bytes: an error, and the caller skips the file.
        fs::write(&path, b"not lz4 at all").expect("write");
        assert!(read_lines(&path).is_err());
    }

    fn key(micros: u64, seq: u64) -> Key {
        Key {
            micros,
            pid: 42,
            seq,
        }
    }

    #[test]
    fn file_names_round_trip_and_sort_by_age() {
        let k = key(1_764_331_200_123_456, 7);
        let name = k.file_name(500);
        assert_eq!(Key::parse_file_name(&name), Some((k, 500)));
        assert!(key(9, 1).file_name(1) < key(10, 0).file_name(1));
        assert_eq!(
            Key::parse_file_name(&name.replace(".jsonl.lz4", ".jsonl")),
            Some((k, 500)),
            "plain files of older versions"
        );
        assert_eq!(Key::parse_file_name(".x.tmp"), None);
        assert_eq!(Key::parse_file_name("1-2-3-4-5.jsonl"), None);
        assert_eq!(Key::parse_file_name("notes.jsonl"), None);
    }

    #[test]
    fn only_the_lock_holder_lists_files_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool_dir = dir.path().join("spool");
        let mut a = Spool::new(spool_dir.clone(), 100, 1 << 20);
        let mut b = Spool::new(spool_dir.clone(), 100, 1 << 20);
        assert!(
            !a.try_own().expect("no dir yet"),
            "nothing to own before a write"
        );
        b.write(key(2, 0), &packed(b"{\"a\":2}\n"), 1)
            .expect("write");
        a.write(key(1, 0), &packed(b"{\"a\":1}\n{\"a\":1}\n"), 2)
            .expect("write");
        assert!(a.try_own().expect("lock"));
        assert!(!b.try_own().expect("lock"), "a holds it");
        a.scan().expect("scan");
        b.scan().expect("scan");
        assert_eq!((a.events(), b.events()), (3, 3));
        assert_eq!(a.oldest().map(|(k, f)| (k, f.count)), Some((key(1, 0), 2)));
        assert!(b.oldest().is_none(), "b may not send");
        a.remove(&key(1, 0));
        assert_eq!(a.events(), 1);
        drop(a);
        assert!(b.try_own().expect("lock"), "the lock dies with its holder");
        b.scan().expect("scan");
        assert_eq!(b.oldest().map(|(k, _)| k), Some(key(2, 0)));
    }

    #[test]
    fn bounds_count_events_and_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::new(dir.path().to_path_buf(), 3, 1000);
        assert!(s.fits(3, 10));
        let file = packed(b"{}\n{}\n");
        s.write(key(1, 0), &file, 2).expect("write");
        assert!(s.fits(1, 10));
        assert!(!s.fits(2, 10));
        assert!(
            s.fits(1, 1000 - file.len()),
            "the bound counts the bytes on disk"
        );
        assert!(!s.fits(1, 1001 - file.len()));
    }

    #[test]
    fn damaged_lines_are_skipped_on_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.jsonl");
        fs::write(&path, b"{\"a\":1}\n{\"a\":\n\n{\"b\":2}\n[1]\n").expect("write");
        let read = read_lines(&path).expect("read");
        assert_eq!(read.lines, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!((read.count, read.events, read.skipped), (2, 2, 2));
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::new(dir.path().join("nested"), 10, 1000);
        s.write(key(1, 0), &packed(b"{}\n"), 1).expect("write");
        let names: Vec<String> = fs::read_dir(dir.path().join("nested"))
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![key(1, 0).file_name(1)]);
    }
}
