//! `map`: its runs end with the run that started them, and a slow item does not hold back the
//! others. Virtual time throughout (tokio's paused clock), so hour-long sleeps cost nothing.

use flowkit::testing::record;
use flowkit::{StateType, flow, limits, task};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

// ---- a flow attempt that times out takes its mapped runs with it -------------------------

static FLOW_ATTEMPT: AtomicU32 = AtomicU32::new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);
static FINISHED: AtomicUsize = AtomicUsize::new(0);

#[task(tags = ["map-orphans"])]
async fn fetch_item(i: u32) -> anyhow::Result<u32> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    // The first attempt of the flow hangs; its retry is quick.
    let hang = FLOW_ATTEMPT.load(Ordering::SeqCst) == 1;
    let wait = if hang { 3600 } else { 1 };
    tokio::time::sleep(Duration::from_secs(wait)).await;
    FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(i)
}

#[flow(retries = 1, timeout = "10s")]
async fn fetch_all(n: u32) -> anyhow::Result<Vec<u32>> {
    FLOW_ATTEMPT.fetch_add(1, Ordering::SeqCst);
    fetch_item::map(0..n)
        .concurrency(4)
        .await
        .into_iter()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_flow_attempt_cancels_its_mapped_runs() {
    flowkit::testing::isolated_home();
    // Each run holds the only slot of its tag: an orphan of attempt 1 would keep one, and
    // attempt 2 could not finish within its timeout.
    limits().set("map-orphans", 4);
    let (out, rec) = record(fetch_all(4)).await;
    assert_eq!(out.expect("the second attempt succeeds"), [0, 1, 2, 3]);

    // Long enough for any orphan of attempt 1 to wake up and finish.
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(STARTED.load(Ordering::SeqCst), 8, "4 runs per flow attempt");
    assert_eq!(
        FINISHED.load(Ordering::SeqCst),
        4,
        "only the second attempt's runs ran to the end"
    );

    let items = rec.runs_named("fetch_item");
    assert_eq!(items.len(), 8);
    let ends = |kind: StateType| {
        items
            .iter()
            .filter(|r| r.final_state().map(|s| s.kind) == Some(kind))
            .count()
    };
    assert_eq!(ends(StateType::Cancelled), 4, "{items:#?}");
    assert_eq!(ends(StateType::Completed), 4, "{items:#?}");
    assert_eq!(
        rec.run("fetch_all").final_state().map(|s| s.kind),
        Some(StateType::Completed)
    );
}

// ---- a slow first item does not starve the rest ---------------------------------------------

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_RUNNING: AtomicUsize = AtomicUsize::new(0);
static FINISH_ORDER: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[task]
async fn crunch(i: u32) -> u32 {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_RUNNING.fetch_max(now, Ordering::SeqCst);
    let secs = if i == 0 { 3600 } else { 1 };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    FINISH_ORDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(i);
    i * 10
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_does_not_stop_the_refill() {
    flowkit::testing::isolated_home();
    let started = tokio::time::Instant::now();
    let out = crunch::map(0..8).concurrency(3).await;
    assert_eq!(
        out,
        [0, 10, 20, 30, 40, 50, 60, 70],
        "results in input order"
    );

    let order = FINISH_ORDER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        order.last(),
        Some(&0),
        "the other seven finished while item 0 slept: {order:?}"
    );
    assert_eq!(MOST_RUNNING.load(Ordering::SeqCst), 3, "never more than 3");
    // Item 0 alongside two lanes of one-second items: the map takes item 0's hour and not a
    // second more (a refill that waits for item 0 would start items 3.. only after it).
    assert!(
        started.elapsed() < Duration::from_secs(3601),
        "took {:?} of virtual time",
        started.elapsed()
    );
}
