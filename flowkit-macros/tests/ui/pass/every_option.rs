//! Every option at once, each in its accepted forms: hooks as a fn path, a call and a list,
//! `cache` with a key function, durations in several humantime spellings.

use flowkit::hooks::HookContext;
use flowkit::task;
use serde::{Deserialize, Serialize};

fn log_state(ctx: &HookContext) {
    eprintln!("{} -> {}", ctx.run.name, ctx.state);
}

fn counting_hook(_tag: &'static str) -> impl Fn(&HookContext) + Send + Sync + 'static {
    |_ctx| {}
}

fn transient(e: &anyhow::Error) -> bool {
    !e.to_string().contains("fatal")
}

#[derive(Clone, Serialize, Deserialize)]
struct Features(Vec<f32>);

// Called with a reference to each argument; `&String` coerces to `&str`.
fn by_url(url: &str, _k: &u32) -> String {
    url.to_lowercase()
}

#[task(
    name = "featurize",
    version = "1.2.0",
    retries = 3,
    retry_delay = "1ms",
    backoff = 2.0,
    jitter = 0.1,
    retry_if = transient,
    timeout = "1h 30m",
    cache = inputs,
    cache_ttl = "1d",
    refresh_cache = true,
    tags = ["cpu", "ml"],
    on_completion = log_state,
    on_failure = [log_state, counting_hook("fail"), flowkit::notify::webhook("http://127.0.0.1:9/hook")],
    on_retry = |ctx: &HookContext| eprintln!("retrying {}", ctx.run.name),
    persist = true,
)]
async fn featurize(raw: Vec<u8>, scale: u32) -> anyhow::Result<Features> {
    Ok(Features(raw.iter().map(|b| f32::from(*b) * scale as f32).collect()))
}

#[task(cache = by_url, cache_ttl = "30 secs", tags = "net", backoff = 1, retries = 1)]
async fn fetch(url: String, k: u32) -> Result<String, String> {
    Ok(format!("{url}{k}"))
}

#[task(fallible)]
async fn aliased() -> Res {
    Ok(1)
}
type Res = std::result::Result<u8, std::io::Error>;

#[task(infallible, retries = 1)]
async fn result_as_value() -> Result<u8, String> {
    Err("this is a value, not a failure".into())
}

#[task(persist = true)]
async fn stored(x: u32) -> Vec<u32> {
    vec![x]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(featurize(vec![1, 2], 2).await.unwrap().0, vec![2.0, 4.0]);
    assert_eq!(fetch("A".into(), 1).await.unwrap(), "A1");
    assert_eq!(aliased().await.unwrap(), 1);
    assert!(result_as_value().await.is_err());
    assert_eq!(stored(3).await, vec![3]);
}
