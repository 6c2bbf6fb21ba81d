//! Hooks fire once per final state, after it is recorded, and can never fail the run.

use flowkit::hooks::HookContext;
use flowkit::testing::record;
use flowkit::{StateType, task};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static SEEN: Mutex<Vec<(String, StateType, u32)>> = Mutex::new(Vec::new());

fn remember(ctx: &HookContext) {
    SEEN.lock()
        .expect("lock")
        .push((ctx.run.name.to_string(), ctx.state.kind, ctx.run.attempt));
}

static CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 2, on_completion = remember, on_failure = remember, on_retry = [remember, remember])]
async fn hooked(fail_times: u32) -> Result<u32, String> {
    let n = CALLS.fetch_add(1, Ordering::SeqCst);
    if n < fail_times {
        Err(format!("fail {n}"))
    } else {
        Ok(n)
    }
}

#[tokio::test]
async fn hooks_fire_once_per_state() {
    flowkit::testing::isolated_home();
    let (out, _rec) = record(hooked(1)).await;
    assert_eq!(out, Ok(1));
    let seen = std::mem::take(&mut *SEEN.lock().expect("lock"));
    assert_eq!(
        seen,
        vec![
            ("hooked".to_string(), StateType::AwaitingRetry, 1),
            ("hooked".to_string(), StateType::AwaitingRetry, 1),
            ("hooked".to_string(), StateType::Completed, 2),
        ],
        "two on_retry hooks for the one retry, one on_completion"
    );
}

fn explode(_: &HookContext) {
    panic!("a broken hook");
}

static AFTER_PANIC: AtomicU32 = AtomicU32::new(0);

fn count(_: &HookContext) {
    AFTER_PANIC.fetch_add(1, Ordering::SeqCst);
}

#[task(on_completion = [explode, count])]
async fn survives_its_hooks() -> u32 {
    7
}

#[tokio::test]
async fn a_panicking_hook_does_not_fail_the_run() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(survives_its_hooks()).await;
    assert_eq!(out, 7);
    assert_eq!(
        rec.run("survives_its_hooks").final_state().map(|s| s.kind),
        Some(StateType::Completed)
    );
    assert_eq!(
        AFTER_PANIC.load(Ordering::SeqCst),
        1,
        "the next hook still ran"
    );
}

static FAILURES: AtomicU32 = AtomicU32::new(0);

fn on_fail(ctx: &HookContext) {
    assert!(ctx.state.kind.is_failure());
    FAILURES.fetch_add(1, Ordering::SeqCst);
}

#[task(on_failure = on_fail, on_completion = explode)]
async fn fails() -> anyhow::Result<()> {
    anyhow::bail!("nope")
}

#[tokio::test]
async fn on_failure_fires_once_and_on_completion_not_at_all() {
    flowkit::testing::isolated_home();
    assert!(fails().await.is_err());
    assert_eq!(FAILURES.load(Ordering::SeqCst), 1);
}
