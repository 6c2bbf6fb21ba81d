//! Runs expanded tasks and flows against flowkit's recording sink and checks what the runtime
//! saw: the order of states, attempts counted, bodies (`?`, `return`) unchanged, methods,
//! generics, the struct's entry points, flow parameters and upstream runs.

use flowkit::StateType::{AwaitingRetry, Cached, Completed, Crashed, Failed, Pending, Running};
use flowkit::hooks::HookContext;
use flowkit::testing::record;
use flowkit::{CallOptions, StateType, TaskHandle, flow, task};
use std::sync::atomic::{AtomicU32, Ordering};

fn states(rec: &flowkit::testing::Recording, name: &str) -> Vec<StateType> {
    rec.run(name).state_types()
}

#[task]
async fn plain(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn a_plain_call_is_a_run() {
    let (out, rec) = record(plain(1)).await;
    assert_eq!(out, 2);
    assert_eq!(states(&rec, "plain"), [Pending, Running, Completed]);
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 3, retry_delay = "1ms")]
async fn flaky(succeed_on: u32) -> Result<u32, String> {
    let n = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if n < succeed_on {
        return Err(format!("attempt {n} failed"));
    }
    Ok(n)
}

#[tokio::test]
async fn err_is_retried_until_success() {
    let (out, rec) = record(flaky(3)).await;
    assert_eq!(out, Ok(3));
    let run = rec.run("flaky");
    assert_eq!(run.attempts(), 3);
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
}

#[task(retries = 1, retry_delay = "1ms")]
async fn always_fails(reason: String) -> anyhow::Result<()> {
    anyhow::bail!("{reason}")
}

#[tokio::test]
async fn last_err_is_returned_unchanged() {
    let (out, rec) = record(always_fails("boom".into())).await;
    assert_eq!(out.unwrap_err().to_string(), "boom");
    let run = rec.run("always_fails");
    assert_eq!(run.attempts(), 2);
    assert_eq!(run.final_state().unwrap().kind, Failed);
}

// `retry_if` is called with `&E` (`&String` here), so deref coercion lets it take `&str`.
fn is_transient(e: &str) -> bool {
    e.starts_with("transient")
}

#[task(retries = 5, retry_if = is_transient)]
async fn permanent() -> Result<(), String> {
    Err("permanent: bad input".into())
}

#[tokio::test]
async fn retry_if_stops_retrying() {
    let (out, rec) = record(permanent()).await;
    assert!(out.is_err());
    assert_eq!(states(&rec, "permanent"), [Pending, Running, Failed]);
}

#[derive(Debug, PartialEq)]
struct ParseError(String);

impl From<std::num::ParseIntError> for ParseError {
    fn from(e: std::num::ParseIntError) -> Self {
        ParseError(e.to_string())
    }
}

#[task]
async fn parse_sum(texts: Vec<String>) -> Result<i64, ParseError> {
    let mut sum = 0;
    for t in texts {
        if t == "stop" {
            return Ok(sum);
        }
        sum += t.parse::<i64>()?;
    }
    Ok(sum)
}

#[tokio::test]
async fn question_mark_and_return_keep_working() {
    let (out, _) = record(parse_sum(vec!["1".into(), "2".into()])).await;
    assert_eq!(out, Ok(3));
    let (out, _) = record(parse_sum(vec!["1".into(), "stop".into(), "x".into()])).await;
    assert_eq!(out, Ok(1));
    let (out, rec) = record(parse_sum(vec!["x".into()])).await;
    assert!(out.is_err());
    assert_eq!(states(&rec, "parse_sum"), [Pending, Running, Failed]);
}

#[task(retries = 1, retry_delay = "1ms")]
async fn panics(x: u32) -> u32 {
    if x > 0 {
        panic!("x was {x}");
    }
    x
}

#[tokio::test]
async fn a_panic_is_retried_then_resumed() {
    let handle = tokio::spawn(record(panics(1)));
    let err = handle.await.unwrap_err();
    assert!(err.is_panic());
}

#[tokio::test]
async fn an_infallible_panic_is_recorded() {
    let (_, rec) = record(async {
        let _ = flowkit::spawn(panics(1)).await;
    })
    .await;
    let run = rec.run("panics");
    assert_eq!(run.attempts(), 2);
    assert_eq!(run.final_state().unwrap().kind, Crashed);
}

#[task(timeout = "20ms")]
async fn slow(ms: u64) -> anyhow::Result<u64> {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Ok(ms)
}

#[tokio::test]
async fn timeout_yields_the_timed_out_error() {
    let (out, rec) = record(slow(5_000)).await;
    let err = out.unwrap_err();
    assert!(err.downcast_ref::<flowkit::TimedOut>().is_some(), "{err:#}");
    assert_eq!(
        rec.run("slow").final_state().unwrap().kind,
        StateType::TimedOut
    );
}

#[task(cache = inputs)]
async fn cached(nonce: u128, x: u32) -> anyhow::Result<u32> {
    let _ = nonce;
    Ok(x * 10)
}

fn nonce() -> u128 {
    // The cache outlives the test process: fresh inputs make the first call a miss.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn cache_inputs_hits_on_equal_inputs() {
    let n = nonce();
    let (out, rec) = record(async {
        let a = cached(n, 1).await.unwrap();
        let b = cached(n, 1).await.unwrap();
        let c = cached(n, 2).await.unwrap();
        (a, b, c)
    })
    .await;
    assert_eq!(out, (10, 10, 20));
    let runs = rec.runs_named("cached");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].final_state().unwrap().kind, Completed);
    assert_eq!(runs[1].final_state().unwrap().kind, Cached);
    assert_eq!(runs[2].final_state().unwrap().kind, Completed);
}

#[derive(Clone, Debug, serde::Serialize)]
struct Account {
    id: u32,
}

static BALANCE_CALLS: AtomicU32 = AtomicU32::new(0);

impl Account {
    #[task(retries = 2, retry_delay = "1ms")]
    async fn balance(&self, currency: String) -> Result<String, String> {
        if BALANCE_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("first call fails".into());
        }
        Ok(format!("{} {currency}", self.id))
    }

    #[task(retries = 1)]
    async fn into_id(self) -> u32 {
        self.id
    }

    #[task(name = "Account::open")]
    async fn open(id: u32) -> Self {
        Account { id }
    }
}

#[tokio::test]
async fn methods_run_with_self() {
    let (out, rec) = record(async {
        let account = Account::open(7).await;
        let balance = account.balance("EUR".into()).await;
        (balance, account.into_id().await)
    })
    .await;
    assert_eq!(out, (Ok("7 EUR".to_string()), 7));
    assert_eq!(rec.run("balance").attempts(), 2);
    assert_eq!(states(&rec, "into_id"), [Pending, Running, Completed]);
    assert_eq!(states(&rec, "Account::open"), [Pending, Running, Completed]);
}

#[task(retries = 1)]
async fn describe<T: std::fmt::Debug + Clone + Send + Sync + 'static>(value: T) -> String {
    format!("{value:?}")
}

#[tokio::test]
async fn generic_tasks_run_and_spawn() {
    let (out, rec) = record(async {
        let a = describe(1u8).await;
        let b = describe::submit("x").await;
        let c = describe::map(vec![[1], [2]]).await;
        (a, b, c)
    })
    .await;
    assert_eq!(
        out,
        (
            "1".to_string(),
            "\"x\"".to_string(),
            vec!["[1]".to_string(), "[2]".to_string()]
        )
    );
    assert_eq!(rec.runs_named("describe").len(), 4);
}

#[task(retries = 3, retry_delay = "1ms")]
async fn fails_once_per_key(key: u32) -> Result<u32, String> {
    static SEEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap();
    if seen.contains(&key) {
        Ok(key)
    } else {
        seen.push(key);
        Err(format!("first try of {key}"))
    }
}

#[tokio::test]
async fn with_options_overrides_retries() {
    let (out, rec) = record(async {
        fails_once_per_key::with_options(CallOptions::new().retries(0))
            .call(100)
            .await
    })
    .await;
    assert!(out.is_err());
    assert_eq!(rec.run("fails_once_per_key").attempts(), 1);
}

#[task]
async fn produce(x: u32) -> u32 {
    x * 2
}

#[task]
async fn consume(input: TaskHandle<u32>) -> u32 {
    input.await + 1
}

#[flow(version = "2")]
async fn pipeline(start: u32, label: String) -> u32 {
    let produced = produce::submit(start);
    let consumed = consume(produced).await;
    let mapped: u32 = produce::map([1, 2, 3]).await.into_iter().sum();
    consumed + mapped + label.len() as u32
}

#[tokio::test]
async fn flows_record_parameters_children_and_upstream() {
    let (out, rec) = record(pipeline(5, "ab".into())).await;
    assert_eq!(out, 11 + 12 + 2);
    let flow = rec.run("pipeline");
    assert_eq!(flow.kind, flowkit::RunKind::Flow);
    assert_eq!(flow.state_types(), [Pending, Running, Completed]);
    let details = flow.details.clone().expect("the flow's details");
    assert_eq!(
        details.parameters,
        Some(serde_json::json!({"start": 5, "label": "ab"}))
    );

    let produced = &rec.runs_named("produce")[0];
    assert_eq!(produced.parent_run_id, Some(flow.id));
    let consumed = rec.run("consume");
    assert_eq!(consumed.flow_run_id, Some(flow.id));
    let upstream = consumed.details.clone().expect("details").upstream;
    assert_eq!(upstream, [produced.id]);
    assert_eq!(rec.runs_named("produce").len(), 4);
}

#[tokio::test]
async fn the_source_hash_and_key_reach_the_runtime() {
    let (_, rec) = record(plain(0)).await;
    let details = rec.run("plain").details.clone().expect("details");
    assert!(
        details.task_key.ends_with("expand::plain"),
        "{}",
        details.task_key
    );
}

static HOOK_CALLS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn remember(ctx: &HookContext) {
    HOOK_CALLS
        .lock()
        .unwrap()
        .push(format!("{}:{:?}", ctx.run.name, ctx.state.kind));
}

fn tagged(tag: &'static str) -> impl Fn(&HookContext) + Send + Sync + 'static {
    move |ctx| {
        HOOK_CALLS
            .lock()
            .unwrap()
            .push(format!("{tag}:{}", ctx.run.name));
    }
}

#[task(
    name = "hooked",
    retries = 1,
    retry_delay = "1ms",
    on_retry = remember,
    on_failure = [remember, tagged("second")],
    on_completion = remember
)]
async fn hooked(fail: bool) -> Result<(), String> {
    if fail { Err("no".into()) } else { Ok(()) }
}

#[tokio::test]
async fn hooks_from_the_attribute_run() {
    record(async {
        let _ = hooked(true).await;
        let _ = hooked(false).await;
    })
    .await;
    let calls = HOOK_CALLS.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "hooked:AwaitingRetry",
            "hooked:Failed",
            "second:hooked",
            "hooked:Completed"
        ]
    );
}

// Called with `&String`: deref coercion lets the key function take `&str`.
fn by_lowercase(url: &str) -> String {
    url.to_lowercase()
}

#[task(cache = by_lowercase)]
async fn fetch_page(url: String) -> anyhow::Result<String> {
    Ok(format!("page of {url}"))
}

#[tokio::test]
async fn cache_key_fn_decides_what_is_equal() {
    let url = format!("https://example.com/{}", nonce());
    let (out, rec) = record(async {
        let a = fetch_page(url.clone()).await.unwrap();
        let b = fetch_page(url.to_uppercase()).await.unwrap();
        (a, b)
    })
    .await;
    // The second call hits the first one's entry: its key is the same lowercase URL.
    assert_eq!(out.0, out.1);
    let runs = rec.runs_named("fetch_page");
    assert_eq!(runs[1].final_state().unwrap().kind, Cached);
}
