//! Timeouts: the run becomes `TimedOut` and the caller gets `Err(TimedOut.into())`.

use flowkit::testing::record;
use flowkit::{StateType, TimedOut, flow, task};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[task(timeout = "1s")]
async fn slow(secs: u64) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(secs)
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out() {
    flowkit::testing::isolated_home();
    let started = tokio::time::Instant::now();
    let (out, rec) = record(slow(3600)).await;
    let err = out.expect_err("an hour-long sleep cannot finish within 1s");
    let timed_out = err
        .downcast_ref::<flowkit::TimedOut>()
        .expect("the error is a TimedOut");
    assert_eq!(timed_out.after, Duration::from_secs(1));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up after the timeout"
    );
    let run = rec.run("slow");
    use StateType::*;
    assert_eq!(run.state_types(), [Pending, Running, TimedOut]);
}

#[tokio::test(start_paused = true)]
async fn a_fast_attempt_is_not_affected() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(slow(0)).await;
    assert_eq!(out.expect("fast enough"), 0);
    assert_eq!(
        rec.run("slow").final_state().map(|s| s.kind),
        Some(StateType::Completed)
    );
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
}

static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[task(timeout = "100ms", retries = 2)]
async fn hangs_then_works() -> Result<&'static str, JobError> {
    if ATTEMPTS.fetch_add(1, Ordering::SeqCst) < 2 {
        std::future::pending::<()>().await;
    }
    Ok("done")
}

#[tokio::test(start_paused = true)]
async fn timed_out_attempts_are_retried() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(hangs_then_works()).await;
    assert_eq!(out.expect("the third attempt finishes"), "done");
    let run = rec.run("hangs_then_works");
    use StateType::*;
    assert_eq!(
        run.state_types(),
        [
            Pending,
            Running,
            AwaitingRetry,
            Running,
            AwaitingRetry,
            Running,
            Completed
        ]
    );
    let msg = run.states[2].1.message.clone().unwrap_or_default();
    assert!(msg.contains("timed out after 100ms"), "{msg}");
}

#[task]
async fn sleeps_an_hour() -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[flow(timeout = "1s")]
async fn impatient() -> anyhow::Result<()> {
    sleeps_an_hour().await
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_by_its_timed_out_caller_ends_cancelled() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(impatient()).await;
    assert!(out.is_err(), "the flow timed out");
    use StateType::*;
    assert_eq!(
        rec.run("impatient").state_types(),
        [Pending, Running, TimedOut]
    );
    let child = rec.run("sleeps_an_hour");
    assert_eq!(
        child.state_types(),
        [Pending, Running, Cancelled],
        "no run stays Running forever"
    );
    assert_eq!(child.states[2].0, 1, "cancelled during attempt 1");
}
