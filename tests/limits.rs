//! Tag-based concurrency limits are never exceeded, whether runs start by plain call,
//! `submit` or `map`.

use flowkit::{flow, limits, task};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

#[task(tags = ["db"])]
async fn query(i: u64) -> u64 {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    HIGH_WATER.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_micros(200)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    i
}

#[flow]
async fn many_queries(n: u64) -> u64 {
    let mapped = query::map(0..n).concurrency(64).await;
    let submitted: Vec<_> = (0..50).map(query::submit).collect();
    let mut sum: u64 = mapped.iter().sum();
    for h in submitted {
        sum += h.await;
    }
    sum + query(0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_under_map_of_a_thousand() {
    flowkit::testing::isolated_home();
    limits().set("db", 3);
    let n = flowkit::testing::scaled(1000) as u64;
    let sum = many_queries(n).await;
    assert_eq!(sum, (0..n).sum::<u64>() + (0..50).sum::<u64>());
    let high = HIGH_WATER.load(Ordering::SeqCst);
    assert!(high <= 3, "at most 3 concurrent runs tagged db, saw {high}");
    assert_eq!(high, 3, "with 64-way map concurrency the limit is reached");
}

static NESTED_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static NESTED_HIGH: AtomicUsize = AtomicUsize::new(0);

#[task(tags = ["gpu"])]
async fn inner_gpu(i: u64) -> u64 {
    i + 1
}

#[task(tags = ["gpu"])]
async fn outer_gpu(i: u64) -> u64 {
    let now = NESTED_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    NESTED_HIGH.fetch_max(now, Ordering::SeqCst);
    // Runs inside this run's slot: waiting for a second one would deadlock at limit 1.
    let out = inner_gpu(i).await;
    NESTED_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_nested_in_a_limited_run_uses_its_slot() {
    flowkit::testing::isolated_home();
    limits().set("gpu", 1);
    let results = tokio::time::timeout(Duration::from_secs(20), outer_gpu::map(0..20))
        .await
        .expect("nested runs with the same tag must not deadlock");
    assert_eq!(results, (1..=20).collect::<Vec<u64>>());
    assert_eq!(
        NESTED_HIGH.load(Ordering::SeqCst),
        1,
        "still one gpu run at a time"
    );
}

static RESIZED_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static RESIZED_HIGH: AtomicUsize = AtomicUsize::new(0);

#[task(tags = ["io"])]
async fn io_call(i: u64) -> u64 {
    let now = RESIZED_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    RESIZED_HIGH.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await;
    RESIZED_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_limit_again_resizes_it_instead_of_adding_slots() {
    flowkit::testing::isolated_home();
    limits().set("io", 2);
    let first = tokio::spawn(io_call::map(0..60).concurrency(16).into_future());
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Same value again, while runs hold and wait for slots: still two at a time.
    limits().set("io", 2);
    let second = io_call::map(0..60).concurrency(16).await;
    let first = first.await.expect("first map");
    assert_eq!(first.len() + second.len(), 120);
    assert!(
        RESIZED_HIGH.load(Ordering::SeqCst) <= 2,
        "saw {}",
        RESIZED_HIGH.load(Ordering::SeqCst)
    );
}
