//! Caching through the public API: hits skip the body, survive a process restart, expire,
//! refresh, and a corrupt entry is a miss.
//!
//! The restart tests run this test binary again as a child process (see `child_mode`), with
//! `FLOWKIT_HOME` pointing at a temporary directory.

use flowkit::testing::record;
use flowkit::{CallOptions, StateType, task};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static SQUARE_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(cache = inputs)]
async fn square(x: u64, label: String) -> anyhow::Result<u64> {
    SQUARE_CALLS.fetch_add(1, Ordering::SeqCst);
    let _ = label;
    Ok(x * x)
}

#[tokio::test]
async fn a_second_call_with_the_same_inputs_is_cached() {
    flowkit::testing::isolated_home();
    let (first, rec1) = record(square(12, "a".into())).await;
    let (second, rec2) = record(square(12, "a".into())).await;
    let (third, rec3) = record(square(12, "b".into())).await;
    assert_eq!(first.expect("ok"), 144);
    assert_eq!(second.expect("ok"), 144);
    assert_eq!(third.expect("ok"), 144);
    assert_eq!(
        SQUARE_CALLS.load(Ordering::SeqCst),
        2,
        "the second call did not run the body"
    );
    use StateType::*;
    assert_eq!(
        rec1.run("square").state_types(),
        [Pending, Running, Completed]
    );
    assert_eq!(rec2.run("square").state_types(), [Pending, Cached]);
    assert_eq!(
        rec3.run("square").state_types(),
        [Pending, Running, Completed]
    );
    let key1 = rec1.run("square").details.and_then(|d| d.cache_key);
    let key2 = rec2.run("square").details.and_then(|d| d.cache_key);
    assert!(key1.is_some());
    assert_eq!(key1, key2);
}

static REFRESH_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(cache = inputs)]
async fn refreshable(x: u32) -> u32 {
    REFRESH_CALLS.fetch_add(1, Ordering::SeqCst) + x
}

#[tokio::test]
async fn refresh_cache_runs_the_body_and_rewrites_the_entry() {
    flowkit::testing::isolated_home();
    let first = refreshable(1000).await;
    assert_eq!(refreshable(1000).await, first, "cached");
    let refreshed = refreshable::with_options(CallOptions::new().refresh_cache(true))
        .call(1000)
        .await;
    assert_ne!(refreshed, first, "the body ran again");
    assert_eq!(
        refreshable(1000).await,
        refreshed,
        "the new result replaced the old one"
    );
    assert_eq!(REFRESH_CALLS.load(Ordering::SeqCst), 2);
}

static TTL_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(cache = inputs, cache_ttl = "50ms")]
async fn short_lived(x: u32) -> u32 {
    TTL_CALLS.fetch_add(1, Ordering::SeqCst);
    x
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    flowkit::testing::isolated_home();
    short_lived(5).await;
    short_lived(5).await;
    assert_eq!(TTL_CALLS.load(Ordering::SeqCst), 1);
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    short_lived(5).await;
    assert_eq!(
        TTL_CALLS.load(Ordering::SeqCst),
        2,
        "expired entry is a miss"
    );
}

fn key_fn_of(name: &str) -> String {
    name.to_lowercase()
}

static KEYED_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(cache = key_fn_of)]
async fn greet(name: String) -> String {
    KEYED_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("hello {name}")
}

#[tokio::test]
async fn a_key_function_decides_what_is_the_same_input() {
    flowkit::testing::isolated_home();
    assert_eq!(greet("Ada".into()).await, "hello Ada");
    assert_eq!(
        greet("ADA".into()).await,
        "hello Ada",
        "same key, cached result"
    );
    assert_eq!(KEYED_CALLS.load(Ordering::SeqCst), 1);
}

// ---- across processes -------------------------------------------------------------------

static CHILD_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(cache = inputs)]
async fn expensive(n: u64) -> anyhow::Result<Vec<u64>> {
    CHILD_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok((0..n).map(|i| i * i).collect())
}

/// Not a test of its own: when `FLOWKIT_TEST_CHILD` is set, the parent test runs this in a
/// child process and reads what it prints.
#[tokio::test]
async fn child_mode() {
    // FLOWKIT_HOME comes from the parent: no isolated_home() here.
    if std::env::var_os("FLOWKIT_TEST_CHILD").is_none() {
        return;
    }
    let (out, rec) = record(expensive(10)).await;
    let out = out.expect("ok");
    let state = rec.run("expensive").final_state().map(|s| s.kind);
    println!(
        "CHILD body_runs={} state={:?} sum={}",
        CHILD_CALLS.load(Ordering::SeqCst),
        state,
        out.iter().sum::<u64>()
    );
}

fn run_child(home: &std::path::Path) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["child_mode", "--exact", "--nocapture", "--test-threads=1"])
        .env("FLOWKIT_TEST_CHILD", "1")
        .env("FLOWKIT_HOME", home)
        .env("FLOWKIT_SUMMARY", "0")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("CHILD ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"))
        .to_string()
}

#[test]
fn a_cached_result_survives_a_process_restart() {
    let home = tempfile::tempdir().expect("temp dir");
    let first = run_child(home.path());
    assert_eq!(first, "CHILD body_runs=1 state=Some(Completed) sum=285");
    let second = run_child(home.path());
    assert_eq!(second, "CHILD body_runs=0 state=Some(Cached) sum=285");
}

#[test]
fn a_corrupt_cache_entry_is_a_miss_not_a_failure() {
    let home = tempfile::tempdir().expect("temp dir");
    run_child(home.path());
    let mut corrupted = 0;
    for entry in walk(&home.path().join("cache")) {
        std::fs::write(&entry, b"\x00\x01 not a cache entry").expect("corrupt");
        corrupted += 1;
    }
    assert!(
        corrupted > 0,
        "the first run wrote a cache entry under FLOWKIT_HOME/cache"
    );
    let again = run_child(home.path());
    assert_eq!(again, "CHILD body_runs=1 state=Some(Completed) sum=285");
    // The entry was rewritten: the next run is a hit again.
    let third = run_child(home.path());
    assert_eq!(third, "CHILD body_runs=0 state=Some(Cached) sum=285");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
