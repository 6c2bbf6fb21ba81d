//! `#[task]` and `#[flow]` put no lint on the user's code: whatever the body's layout, a crate
//! with warnings denied builds, and CI's `cargo clippy --workspace --all-targets -- -D
//! warnings` passes on this file too. The one-line bodies are the point (rustc warned
//! "unnecessary braces around block return value" at the user's braces), so rustfmt is told to
//! keep the layouts as written.

#![deny(warnings)]
#![deny(clippy::all)]

use flowkit::hooks::HookContext;
use flowkit::{flow, task};
use serde::{Deserialize, Serialize};

fn log_state(ctx: &HookContext) {
    eprintln!("{} -> {}", ctx.run.name, ctx.state);
}

fn transient(e: &anyhow::Error) -> bool {
    !e.to_string().contains("fatal")
}

fn by_text(text: &str) -> String {
    text.to_lowercase()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[rustfmt::skip]
mod layouts {
    use super::*;

    #[task] pub(crate) async fn inc(x: u64) -> u64 { x + 1 }

    #[task]
    pub(crate) async fn empty() {}

    #[task]
    pub(crate) async fn unit(flag: bool) { if flag { eprintln!("flag") } }

    #[task]
    pub(crate) async fn early(x: u8) -> &'static str { if x == 0 { return "zero"; } "other" }

    #[task]
    pub(crate) async fn question(s: String) -> Result<u64, std::num::ParseIntError> { Ok(s.parse::<u64>()? + 1) }

    #[task]
    pub(crate) async fn multi_line(x: u64) -> u64 {
        let y = x * 2;
        y + 1
    }

    #[task]
    pub(crate) async fn early_multi_line(x: u64) -> anyhow::Result<u64> {
        if x == 0 {
            return Ok(0);
        }
        let parsed: u64 = x.to_string().parse()?;
        Ok(parsed)
    }

    #[task] pub(crate) async fn generic<T: Clone + Send + Sync + 'static>(x: T) -> T { x }

    #[task(retries = 1, cache = inputs)]
    pub(crate) async fn generic_where<T>(x: T) -> T where T: Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static { x }

    #[task] pub(crate) async fn borrowed(s: &str) -> usize { s.len() }

    #[flow] pub(crate) async fn flow_one_line(x: u64) -> u64 { inc(x).await + 1 }

    #[flow]
    pub(crate) async fn flow_empty() {}

    #[flow]
    pub(crate) async fn flow_question(s: String) -> anyhow::Result<u64> { Ok(question(s).await? + inc::map([1, 2]).await.len() as u64) }

    #[task(
        name = "every-option",
        version = "1.2.0",
        retries = 2,
        retry_delay = "1ms",
        backoff = 2.0,
        jitter = 0.1,
        retry_if = transient,
        timeout = "1h",
        cache = inputs,
        cache_ttl = "1d",
        refresh_cache = true,
        tags = ["cpu", "ml"],
        on_completion = log_state,
        on_failure = [log_state, log_state],
        on_retry = log_state,
        persist = true,
    )]
    pub(crate) async fn every_option(x: u64) -> anyhow::Result<u64> { Ok(x + 1) }

    #[task(cache = by_text, cache_ttl = "30s", persist = true)]
    pub(crate) async fn key_fn(text: String) -> Result<String, String> { Ok(text) }

    #[task(fallible)]
    pub(crate) async fn aliased() -> Res { Ok(1) }
    pub(crate) type Res = std::result::Result<u8, std::io::Error>;

    #[task(infallible, retries = 1)]
    pub(crate) async fn as_value() -> Result<u8, String> { Err("a value".into()) }

    #[flow(
        name = "every-flow-option",
        version = "3",
        retries = 1,
        retry_delay = "1ms",
        backoff = 1.5,
        jitter = 0.5,
        retry_if = transient,
        timeout = "2h",
        cache = inputs,
        cache_ttl = "1h",
        tags = "etl",
        on_completion = [log_state],
        on_failure = log_state,
        on_retry = log_state,
        persist = true,
    )]
    pub(crate) async fn every_flow_option(x: u64) -> anyhow::Result<u64> { every_option(x).await }

    impl Counter {
        #[task] pub(crate) async fn new(n: u64) -> Self { Self { n } }

        #[task] pub(crate) async fn get(&self) -> u64 { self.n }

        #[task] pub(crate) async fn bump(&mut self) { self.n += 1 }

        #[task(retries = 1)] pub(crate) async fn take(self) -> u64 { self.n }

        #[task(retries = 1)] pub(crate) async fn grow(mut self, by: u64) -> Self { self.n += by; self }

        #[task(retries = 2, cache = inputs, persist = true, timeout = "1m", retry_if = transient, tags = ["m"])]
        pub(crate) async fn every_option(&self, by: u64) -> anyhow::Result<u64> { Ok(self.n + by) }

        #[task] pub(crate) async fn empty(&self) {}

        #[flow] pub(crate) async fn as_flow(&self) -> u64 { self.get().await }
    }
}

use layouts::*;

#[tokio::test]
async fn every_layout_runs() {
    flowkit::testing::isolated_home();
    assert_eq!(inc(1).await, 2);
    empty().await;
    unit(false).await;
    assert_eq!(early(0).await, "zero");
    assert_eq!(early(1).await, "other");
    assert_eq!(question("41".into()).await, Ok(42));
    assert_eq!(multi_line(2).await, 5);
    assert_eq!(early_multi_line(0).await.ok(), Some(0));
    assert_eq!(early_multi_line(7).await.ok(), Some(7));
    assert_eq!(generic(3u8).await, 3);
    assert_eq!(generic_where(4u8).await, 4);
    assert_eq!(borrowed("abc").await, 3);
    assert_eq!(inc::submit(1).await, 2);
    assert_eq!(inc::map([1, 2]).await, [2, 3]);
    assert_eq!(flow_one_line(1).await, 3);
    flow_empty().await;
    assert_eq!(flow_question("1".into()).await.ok(), Some(4));
    let _deployment = flow_empty::deployment("lint-clean");
    assert_eq!(every_option(1).await.ok(), Some(2));
    assert_eq!(key_fn("A".into()).await, Ok("A".into()));
    assert_eq!(aliased().await.ok(), Some(1));
    assert!(as_value().await.is_err());
    assert_eq!(every_flow_option(1).await.ok(), Some(2));

    let mut counter = Counter::new(1).await;
    assert_eq!(counter.get().await, 1);
    counter.bump().await;
    assert_eq!(counter.every_option(1).await.ok(), Some(3));
    counter.empty().await;
    assert_eq!(counter.as_flow().await, 2);
    let counter = counter.grow(1).await;
    assert_eq!(counter.take().await, 3);
}
