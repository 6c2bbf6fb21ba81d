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
//! `FLOWKIT_API_URL`, the server (`flowkit-server`).
//!
//! A top-level flow returns once its events are in the local sinks; it never waits for the
//! server. Keep the guard of [`init`] for the whole of `main` (`let _flowkit =
//! flowkit::init();`) so the process ends only once the server has every run, or call
//! [`flush`]; see [`init`] for what happens without either.
//!
//! # What is here
//!
//! The attributes [`task`] and [`flow`], and at the root the types their runs use: the
//! per-call entry points ([`CallOptions`], [`TaskHandle`], [`spawn`], [`Map`], [`WaitFor`]),
//! the policies ([`RetryPolicy`], [`TimedOut`], [`limits`]), the record of a run ([`State`],
//! [`StateType`], [`Event`] and its parts, shared with the server), the lifecycle ([`init`],
//! [`flush`]), deployments ([`Deployment`], [`FlowSignature`], [`DeploymentSpec`]) and the
//! worker that runs them for others ([`serve`], [`Worker`], [`ShutdownHandle`],
//! [`ServeError`]) and the client that runs them on a server ([`Client`], [`RunError`]). The
//! modules hold what you extend or configure:
//!
//! | module | what it holds |
//! |---|---|
//! | [`hooks`] | functions run after a run reaches a state, and where they run |
//! | [`notify`] | webhook and Slack notifications, ready to use as hooks |
//! | [`sink`] | where events go: the summary, the JSONL log, the reporter, the log capture, your own |
//! | [`config`] | the environment variables flowkit reads |
//! | [`client`] | the typed client of the server: trigger deployments, wait for results, read, cancel and retry runs; the `flowkit` command's exit codes |
//! | `testing` | recording runs in your tests (with the feature `test-util`) |

// What users extend or configure.
pub mod client;
pub mod config;
pub mod hooks;
pub mod notify;
pub mod sink;
#[cfg(feature = "test-util")]
pub mod testing;

// The runtime: private, reached through the re-exports below.
mod atomic_file;
mod bus;
mod context;
mod deployment;
mod http;
mod ids;
mod lifecycle;
mod policy;
mod run;
mod worker;

// The wire model, shared with the server (crate `flowkit-wire`).
pub(crate) use flowkit_wire::{event, state};

#[doc(hidden)]
pub mod __private;

pub use client::{Client, RunError};
pub use deployment::{
    Catchup, Deployment, FlowSignature, InvalidDeployment, InvalidParameters, Overlap, Schedule,
};
pub use flowkit_macros::{flow, task};
pub use flowkit_wire::api::deployments::{DeploymentSpec, FieldError};
pub use flowkit_wire::{Event, EventBody, LogLevel, RunDetails, RunKind, State, StateType};
pub use lifecycle::{FlushGuard, flush, init};
pub use policy::limits::{Limits, limits};
pub use policy::retry::RetryPolicy;
pub use policy::timeout::TimedOut;
pub use run::handle::{TaskHandle, spawn};
pub use run::map::{DEFAULT_MAP_CONCURRENCY, Map};
pub use run::spec::{CallOptions, WaitFor};
pub use worker::{ServeError, ShutdownHandle, Worker, serve};

/// A fresh run id (UUID v7, time-ordered). Not a stable API: for tests and tools that forge
/// events.
#[doc(hidden)]
pub use ids::new_id;
