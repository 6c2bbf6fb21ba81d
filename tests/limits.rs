//! Tag-based concurrency limits are never exceeded, whether runs start by plain call,
//! `submit` or `map`.

mod common;

use flowkit::{flow, limits, task};
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
    common::isolated_home();
    limits().set("db", 3);
    let sum = many_queries(1000).await;
    assert_eq!(sum, (0..1000).sum::<u64>() + (0..50).sum::<u64>());
    let high = HIGH_WATER.load(Ordering::SeqCst);
    assert!(high <= 3, "at most 3 concurrent runs tagged db, saw {high}");
    assert_eq!(high, 3, "with 64-way map concurrency the limit is reached");
}
