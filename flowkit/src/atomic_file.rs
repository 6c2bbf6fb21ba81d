//! Writing a file so that a reader sees all of it or none of it — and, when asked, so does the
//! disk after a power cut. The one way flowkit writes its own files: cache entries, kept
//! results, the reporter's spool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a write must survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A crash of the process: readers see the whole file or none. After a power cut the file
    /// may be missing or empty (fine for a cache, where that is a miss).
    Process,
    /// A crash of the machine too: the data is synced before the rename makes it visible, and
    /// the directory after it, so the file is whole or absent after a power cut.
    Machine,
}

/// Writes `parts`, one after the other, to `path`: first to a uniquely named temporary file in
/// the same directory (`.<name>.<pid>-<n>-<random>.tmp`, so several processes may write into
/// one directory; names starting with `.` are skipped by readers), then renamed over `path`.
/// Creates the directory when it is missing.
///
/// On error the temporary file is removed and `path` is left as it was.
pub(crate) fn write(path: &Path, parts: &[&[u8]], durability: Durability) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (tmp, mut file) = match create_temp(dir, path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            create_temp(dir, path)?
        }
        other => other?,
    };
    let written = (|| {
        for part in parts {
            file.write_all(part)?;
        }
        if durability == Durability::Machine {
            file.sync_data()?;
        }
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    if durability == Durability::Machine {
        sync_dir(dir);
    }
    Ok(())
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

/// Makes the rename itself durable. Best effort: the file is in place by now (failing would
/// make the caller write it again), and not every platform or file system syncs directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_the_parts_into_a_new_directory_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a").join("b").join("f.entry");
        for durability in [Durability::Process, Durability::Machine] {
            write(&path, &[b"head\n", b"", b"body"], durability).expect("write");
            assert_eq!(fs::read(&path).expect("read"), b"head\nbody");
        }
        assert_eq!(names(path.parent().expect("parent")), ["f.entry"]);
    }

    #[test]
    fn replaces_an_existing_file_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        write(
            &path,
            &[b"a much longer first version"],
            Durability::Process,
        )
        .expect("write");
        write(&path, &[b"second"], Durability::Machine).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The target is a non-empty directory: the rename fails after the data was written.
        let path = dir.path().join("taken");
        fs::create_dir_all(path.join("inside")).expect("mkdir");
        assert!(write(&path, &[b"x"], Durability::Machine).is_err());
        assert_eq!(names(dir.path()), ["taken"]);
        // The parent is a file: no temporary file can be created at all.
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        assert!(write(&file.join("f"), &[b"x"], Durability::Process).is_err());
    }

    #[test]
    fn concurrent_writers_never_tear_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shared");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        let data = vec![t; 4096];
                        write(path, &[&data], Durability::Process).expect("write");
                        let read = fs::read(path).expect("read");
                        assert_eq!(read.len(), 4096);
                        assert!(read.iter().all(|&b| b == read[0]), "a torn file");
                    }
                });
            }
        });
        assert_eq!(names(dir.path()), ["shared"]);
    }
}
