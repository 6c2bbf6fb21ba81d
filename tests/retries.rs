//! Retries through the public API: attempts counted exactly, backoff within bounds,
//! `retry_if`, panics recorded, retried and resumed.

use flowkit::testing::record;
use flowkit::{StateType, task};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 4, retry_delay = "1s", backoff = 2.0, jitter = 0.1)]
async fn flaky(succeed_on: u32) -> Result<u32, String> {
    let n = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    ATTEMPT_TIMES.lock().expect("lock").push(Instant::now());
    if n < succeed_on {
        Err(format!("attempt {n} failed"))
    } else {
        Ok(n)
    }
}
static ATTEMPT_TIMES: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_exactly_and_backoff_stays_in_bounds() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(flaky(4)).await;
    assert_eq!(out, Ok(4), "succeeds on the fourth attempt");
    assert_eq!(
        FLAKY_CALLS.load(Ordering::SeqCst),
        4,
        "the body ran exactly 4 times"
    );

    let run = rec.run("flaky");
    assert_eq!(run.attempts(), 4);
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
            AwaitingRetry,
            Running,
            Completed
        ]
    );
    let retry_message = run.states[2].1.message.clone().unwrap_or_default();
    assert!(
        retry_message.contains("attempt 1 failed"),
        "{retry_message}"
    );
    assert!(retry_message.contains("retry 1 of 4"), "{retry_message}");

    // Delay before retry n is 1s × 2^(n-1), ±10%.
    let times = ATTEMPT_TIMES.lock().expect("lock").clone();
    assert_eq!(times.len(), 4);
    for (n, pair) in times.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        let nominal = Duration::from_secs(1) * 2u32.pow(n as u32);
        let (lo, hi) = (nominal.mul_f64(0.9), nominal.mul_f64(1.1));
        assert!(
            waited >= lo && waited <= hi + Duration::from_millis(1),
            "retry {}: waited {waited:?}, expected within [{lo:?}, {hi:?}]",
            n + 1
        );
    }
}

static GIVE_UP_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 2)]
async fn always_fails() -> Result<(), String> {
    let n = GIVE_UP_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    Err(format!("failure #{n}"))
}

#[tokio::test]
async fn the_caller_gets_the_last_error_unchanged() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(always_fails()).await;
    assert_eq!(out, Err("failure #3".to_string()));
    let run = rec.run("always_fails");
    assert_eq!(run.attempts(), 3);
    let last = run.final_state().expect("a final state");
    assert_eq!(last.kind, StateType::Failed);
    assert_eq!(last.message.as_deref(), Some("failure #3"));
}

#[derive(Debug, PartialEq)]
enum FetchError {
    NotFound,
    Unavailable,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

fn is_transient(e: &FetchError) -> bool {
    *e == FetchError::Unavailable
}

static FETCH_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 5, retry_if = is_transient)]
async fn fetch(missing: bool) -> Result<String, FetchError> {
    FETCH_CALLS.fetch_add(1, Ordering::SeqCst);
    if missing {
        Err(FetchError::NotFound)
    } else {
        Err(FetchError::Unavailable)
    }
}

#[tokio::test]
async fn retry_if_stops_retrying_permanent_errors() {
    flowkit::testing::isolated_home();
    FETCH_CALLS.store(0, Ordering::SeqCst);
    let (out, rec) = record(fetch(true)).await;
    assert_eq!(out, Err(FetchError::NotFound));
    assert_eq!(rec.run("fetch").attempts(), 1, "NotFound is not retried");
    assert_eq!(FETCH_CALLS.load(Ordering::SeqCst), 1);

    let (out, rec) = record(fetch(false)).await;
    assert_eq!(out, Err(FetchError::Unavailable));
    assert_eq!(
        rec.run("fetch").attempts(),
        6,
        "Unavailable is retried 5 times"
    );
}

static PANICS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 1)]
async fn panics_every_time(label: String) -> usize {
    PANICS.fetch_add(1, Ordering::SeqCst);
    panic!("boom in {label}");
}

#[tokio::test]
async fn panics_are_recorded_retried_and_resumed() {
    flowkit::testing::isolated_home();
    use futures::FutureExt;
    let (caught, rec) =
        record(std::panic::AssertUnwindSafe(panics_every_time("step".into())).catch_unwind()).await;
    let payload = caught.expect_err("the panic reaches the caller");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(message, "boom in step", "the original payload is resumed");
    assert_eq!(PANICS.load(Ordering::SeqCst), 2, "retried once");
    let run = rec.run("panics_every_time");
    use StateType::*;
    assert_eq!(
        run.state_types(),
        [Pending, Running, AwaitingRetry, Running, Crashed]
    );
    let last = run
        .final_state()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(last.contains("boom in step"), "{last}");
}

static OVERRIDE_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 1)]
async fn overridable() -> Result<(), String> {
    OVERRIDE_CALLS.fetch_add(1, Ordering::SeqCst);
    Err("nope".into())
}

#[tokio::test]
async fn with_options_overrides_retries_for_one_call() {
    flowkit::testing::isolated_home();
    let options = flowkit::CallOptions::new().retries(3);
    let (out, rec) = record(overridable::with_options(options).call()).await;
    assert!(out.is_err());
    assert_eq!(rec.run("overridable").attempts(), 4);
    assert_eq!(OVERRIDE_CALLS.load(Ordering::SeqCst), 4);
}
