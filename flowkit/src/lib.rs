//! flowkit: retries, caching, timeouts, concurrency limits, hooks, notifications, logs and a
//! run history for ordinary async Rust functions — at the cost of a function call.
//!
//! Put `#[task]` on the steps of a pipeline and `#[flow]` on the function that calls them:
//!
//! ```
//! use flowkit::{flow, task};
//!
//! #[task(retries = 2, retry_delay = "10ms")]
//! async fn download(url: String) -> anyhow::Result<String> {
//!     Ok(format!("contents of {url}"))
//! }
//!
//! #[task(cache = inputs)]
//! async fn word_count(text: String) -> anyhow::Result<usize> {
//!     Ok(text.split_whitespace().count())
//! }
//!
//! #[flow]
//! async fn pipeline(url: String) -> anyhow::Result<usize> {
//!     let text = download(url).await?;
//!     word_count(text).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! assert_eq!(pipeline("https://example.com".into()).await?, 3);
//! # Ok(()) }
//! ```
//!
//! Every call is a *run* with a time-ordered id, a parent and a sequence of [`State`]s,
//! emitted as [`Event`]s to the sinks: the terminal summary, the JSONL event log and, with
//! `FLOWKIT_API_URL`, the server.
//!
//! A top-level flow returns once its events are in the local sinks; it never waits for the
//! server. Keep the guard of [`init`] for the whole of `main` (`let _flowkit =
//! flowkit::init();`) so the process ends only once the server has every run, or call
//! [`flush`]; see [`init`] for what happens without either.
//!
//! | module | what it holds |
//! |---|---|
//! | [`state`] | states and allowed transitions |
//! | [`event`] | the wire types the server ingests |
//! | [`policy`] | retry, cache, timeout and limits |
//! | [`hooks`], [`notify`] | functions run after state changes; webhook and Slack notifications |
//! | [`sink`] | where events go: summary, JSONL, your own |
//! | [`config`] | the environment variables flowkit reads |
//! | [`testing`] | recording runs in your tests (feature `test-util`) |

mod atomic_file;
pub mod bus;
pub mod config;
mod context;
pub mod deployment;
pub use flowkit_wire::event;
pub mod hooks;
mod http;
mod ids;
mod lifecycle;
pub mod notify;
pub mod policy;
mod run;
pub mod sink;
pub use flowkit_wire::state;
#[cfg(feature = "test-util")]
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use deployment::Deployment;
pub use event::{Event, EventBody, LogLevel, RunDetails, RunKind};
pub use flowkit_macros::{flow, task};
pub use hooks::{Hook, HookContext, RunInfo};
pub use ids::new_id;
pub use lifecycle::{FlushGuard, flush, init};
pub use policy::limits::{Limits, limits};
pub use policy::retry::RetryPolicy;
pub use policy::timeout::TimedOut;
pub use run::handle::{TaskHandle, spawn};
pub use run::map::{DEFAULT_MAP_CONCURRENCY, Map};
pub use run::spec::{CallOptions, WaitFor};
pub use state::{State, StateType};

/// The names most pipelines need: `use flowkit::prelude::*;`.
pub mod prelude {
    pub use crate::{CallOptions, State, StateType, TaskHandle, TimedOut, flow, task};
}
