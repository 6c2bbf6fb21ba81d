//! A slow cache disk does not stall the runtime: on a current-thread runtime, while a cached
//! task's disk read and write are held, other tasks still run.
//!
//! Its own test binary: the disk gate holds every cache I/O of the process.

use flowkit::task;
use std::time::{Duration, Instant};

#[task(cache = inputs)]
async fn double(n: u64) -> anyhow::Result<u64> {
    Ok(n * 2)
}

/// Yields until `done()`; gives up after a while (the failure, not the expected path).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn held_cache_io_does_not_block_the_only_worker() {
    flowkit::testing::isolated_home();
    let gate = flowkit::testing::hold_cache_disk();
    let run = tokio::spawn(double(21));

    // The lookup misses memory and goes to disk, where it is held. Had it been made on this
    // thread, the thread would be stuck in it and nothing below would run until it gave up.
    until("the disk read", || gate.arrived() >= 1).await;
    assert_eq!(tokio::spawn(async { 6 * 7 }).await.ok(), Some(42));
    assert!(!run.is_finished(), "the run waits for its read");
    gate.release_one();

    // The result is written through to disk, held likewise.
    until("the disk write", || gate.arrived() >= 2).await;
    assert_eq!(tokio::spawn(async { 7 }).await.ok(), Some(7));
    assert!(!run.is_finished(), "the run waits for its write");
    gate.release_one();

    let out = run
        .await
        .expect("the run finishes")
        .expect("double succeeds");
    assert_eq!(out, 42);
    assert_eq!(gate.gave_up(), 0, "no held I/O had to give up");
    assert_eq!(gate.arrived(), 2);

    // A memory hit needs no disk at all.
    assert_eq!(double(21).await.expect("cached"), 42);
    assert_eq!(gate.arrived(), 2);
}
