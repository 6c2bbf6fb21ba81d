//! The struct beside a free task: `submit` (spawned, awaitable handle), `submit_with`,
//! `map` (one-argument items, tuples for several, unit for none), `with_options(..).call(..)`,
//! and a `TaskHandle` passed on as an argument.

use flowkit::{CallOptions, TaskHandle, task};

#[task(retries = 1)]
async fn square(x: u64) -> u64 {
    x * x
}

#[task]
async fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[task]
async fn tick() -> u8 {
    1
}

#[task]
async fn after(upstream: TaskHandle<u64>) -> u64 {
    upstream.await + 1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let handle = square::submit(3);
    assert_eq!(handle.await, 9);

    let squares = square::map(1..=3).concurrency(2).await;
    assert_eq!(squares, [1, 4, 9]);
    let sums = add::map(vec![(1, 2), (3, 4)]).await;
    assert_eq!(sums, [3, 7]);
    let ticks = tick::map(std::iter::repeat_n((), 2)).await;
    assert_eq!(ticks, [1, 1]);

    let options = CallOptions::new().retries(0).tag("adhoc");
    assert_eq!(square::with_options(options.clone()).call(4).await, 16);
    assert_eq!(square::with_options(options).submit_with(5).await, 25);

    let first = square::submit(2);
    assert_eq!(after::submit(first).await, 5);
}
