//! The expansion puts no lint on the user's code: with every warning denied, bodies of any
//! layout compile (one-line, multi-line, early `return`, `?`, empty, unit), in tasks, flows,
//! generic fns and methods. rustc used to warn about the braces of one-line bodies.

#![deny(warnings)]

use flowkit::{flow, task};

#[task] async fn inc(x: u64) -> u64 { x + 1 }

#[task] async fn empty() {}

#[task] async fn unit(flag: bool) { if flag { println!("flag") } }

#[task] async fn early(x: u8) -> &'static str { if x == 0 { return "zero"; } "other" }

#[task] async fn question(s: String) -> Result<u64, std::num::ParseIntError> { Ok(s.parse::<u64>()? + 1) }

#[task(retries = 2, retry_delay = "1ms", timeout = "1s", cache = inputs, persist = true, tags = ["t"])]
async fn with_options(x: u64) -> anyhow::Result<u64> { Ok(x) }

#[task]
async fn multi_line(x: u64) -> anyhow::Result<u64> {
    if x == 0 {
        return Ok(0);
    }
    let parsed: u64 = x.to_string().parse()?;
    Ok(parsed + 1)
}

#[task] async fn generic<T: Clone + Send + Sync + 'static>(x: T) -> T { x }

#[flow] async fn one_line_flow(x: u64) -> u64 { inc(x).await }

#[flow(retries = 1, timeout = "1h")] async fn question_flow(s: String) -> anyhow::Result<u64> { Ok(question(s).await? + 1) }

#[flow] async fn empty_flow() {}

#[derive(Clone)]
struct Counter(u64);

impl Counter {
    #[task] async fn new(n: u64) -> Self { Self(n) }
    #[task] async fn get(&self) -> u64 { self.0 }
    #[task] async fn bump(&mut self) { self.0 += 1 }
    #[task(retries = 1)] async fn take(self) -> u64 { self.0 }
    #[flow] async fn empty(&self) {}
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert_eq!(inc(1).await, 2);
        empty().await;
        unit(false).await;
        assert_eq!(early(0).await, "zero");
        assert_eq!(question("1".into()).await, Ok(2));
        assert_eq!(with_options(3).await.ok(), Some(3));
        assert_eq!(multi_line(3).await.ok(), Some(4));
        assert_eq!(generic(1u8).await, 1);
        assert_eq!(inc::map([1, 2]).await, [2, 3]);
        assert_eq!(one_line_flow(1).await, 2);
        assert_eq!(question_flow("1".into()).await.ok(), Some(3));
        empty_flow().await;
        let mut c = Counter::new(1).await;
        c.bump().await;
        c.empty().await;
        assert_eq!(c.get().await, 2);
        assert_eq!(c.take().await, 2);
    });
}
