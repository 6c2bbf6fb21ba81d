//! The typed client of the flowkit server: list deployments, trigger runs and wait for their
//! results, read, cancel and retry runs, read their logs. The `flowkit` command line tool (the
//! `cli` feature) is built on it.
//!
//! Every request and answer is a body of [`flowkit_wire::api`], the types the server itself
//! uses, so the two cannot disagree. Run a deployed flow by its type, with typed arguments and
//! a typed output (through the [`FlowSignature`](crate::FlowSignature) that `#[flow]`
//! implements):
//!
//! ```no_run
//! use flowkit::{Client, RunError, flow};
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct Metrics {
//!     rmse: f64,
//! }
//!
//! /// Retrain the house-price model.
//! #[flow]
//! async fn train(dataset: String, epochs: u32, learning_rate: f64) -> anyhow::Result<Metrics> {
//!     // ... the real work, run by a worker (`flowkit::serve`) ...
//!     # let _ = (dataset, epochs);
//!     Ok(Metrics { rmse: learning_rate })
//! }
//!
//! # async fn main_() -> Result<(), RunError> {
//! // FLOWKIT_API_URL and FLOWKIT_API_KEY, as the runtime reads them.
//! let client = Client::from_env()?;
//! let dataset = "s3://bucket/houses.csv".to_string();
//! match client.run::<train>("nightly", (dataset, 50, 0.01)).await {
//!     Ok(metrics) => println!("rmse {}", metrics.rmse),
//!     Err(RunError::Failed(run)) => eprintln!("failed: {:?}", run.state_message),
//!     Err(RunError::InvalidParameters(errors)) => {
//!         for e in errors {
//!             eprintln!("{}: {}", e.pointer, e.message);
//!         }
//!     }
//!     Err(other) => eprintln!("{other}"),
//! }
//! # Ok(()) }
//! ```
//!
//! The same without types: [`Client::run_json`] takes the parameters as a JSON object and gives
//! the output as JSON; [`Client::trigger`] creates a run without waiting for it.
//!
//! # Waiting
//!
//! A run is waited for by asking the server to hold each answer until the run ends, at most
//! [`MAX_WAIT_SECONDS`] at a time ([`Client::wait_step`]) (`Prefer: wait=N` on the trigger, then
//! `GET /flow-runs/{id}/result?wait=N`), until the run ends or the overall wait runs out:
//! [`Client::timeout`] for [`Client::run`] ([`DEFAULT_TIMEOUT`] unless set), the `wait`
//! argument elsewhere. A run still going then is [`RunError::StillRunning`]; it goes on on the
//! server.
//!
//! | file | what it holds |
//! |---|---|
//! | `error.rs` | [`RunError`] |
//! | `transport.rs` | sending a request and reading its answer or its error |
//! | `deployments.rs` | listing deployments and triggering runs ([`Triggered`]) |
//! | `concurrency_limits.rs` | tag concurrency limits of deployed runs: [`Client::concurrency_limits`], [`Client::set_concurrency_limit`], [`Client::delete_concurrency_limit`] |
//! | `keys.rs` | API keys at runtime: [`Client::create_key`], [`Client::keys`], [`Client::revoke_key`] |
//! | `runs.rs` | reading, cancelling and retrying runs, their logs ([`RunFilter`], [`PageRequest`]) |
//! | `wait.rs` | waiting for results: [`Client::run`], [`Client::run_json`], [`Client::result`] |
//! | `exit_code.rs` | the `flowkit` command's exit codes ([`exit_code`]) |

mod alerts;
mod concurrency_limits;
mod deployments;
mod error;
pub mod exit_code;
mod keys;
mod runs;
mod schedules;
mod transport;
mod wait;

pub use deployments::Triggered;
pub use error::RunError;
pub use flowkit_wire::api::run_actions::MAX_WAIT_SECONDS;
pub use runs::{PageRequest, RunFilter};
pub use wait::Finished;

use crate::sink::report::ApiKey;
use std::time::Duration;

/// How long [`Client::run`] waits for a run to end unless [`Client::timeout`] says otherwise:
/// one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// [`MAX_WAIT_SECONDS`] as a duration.
const MAX_WAIT: Duration = Duration::from_secs(MAX_WAIT_SECONDS as u64);

/// Most time a request that does not wait for a run may take (connecting included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one flowkit server. Cheap to clone: clones share their connections.
#[derive(Clone, Debug)]
pub struct Client {
    /// The server's base URL, without a trailing `/`.
    base: String,
    /// `{base}/api/v1`.
    api: reqwest::Url,
    api_key: Option<ApiKey>,
    http: reqwest::Client,
    timeout: Duration,
    /// Longest the server holds one request of a wait.
    wait_step: Duration,
}

impl Client {
    /// A client of the server at `FLOWKIT_API_URL`, sending `FLOWKIT_API_KEY` if set: the
    /// variables the runtime reads to report runs (see [`crate::config`]). Fails if
    /// `FLOWKIT_API_URL` is not set.
    pub fn from_env() -> Result<Client, RunError> {
        let url = crate::config::api_url_from_env().ok_or_else(|| {
            RunError::Config(
                "FLOWKIT_API_URL is not set: set it to the flowkit server's URL, e.g. \
                 http://127.0.0.1:4200"
                    .to_string(),
            )
        })?;
        let client = Client::new(url)?;
        Ok(match crate::config::api_key_from_env() {
            Some(key) => client.api_key(key.expose()),
            None => client,
        })
    }

    /// A client of the server at `url` (`http://host:port`, or with a path prefix), without an
    /// API key. Fails if `url` is not an `http(s)` URL.
    pub fn new(url: impl Into<String>) -> Result<Client, RunError> {
        let url = url.into();
        let base = url.trim().trim_end_matches('/').to_string();
        let api = reqwest::Url::parse(&flowkit_wire::links::api(&base, "")).map_err(|e| {
            RunError::Config(format!(
                "the server URL {base:?} is not a URL ({e}): give http://HOST:PORT or \
                     https://HOST:PORT"
            ))
        })?;
        if !matches!(api.scheme(), "http" | "https") || api.cannot_be_a_base() {
            return Err(RunError::Config(format!(
                "the server URL {base:?} must start with http:// or https://, e.g. http://127.0.0.1:4200"
            )));
        }
        // Long enough for the longest wait the server may hold a request for.
        let longest = MAX_WAIT + REQUEST_TIMEOUT;
        let http =
            crate::http::client(longest, api.scheme() == "https").map_err(RunError::Config)?;
        Ok(Client {
            base,
            api,
            api_key: None,
            http,
            timeout: DEFAULT_TIMEOUT,
            wait_step: MAX_WAIT,
        })
    }

    /// Sends `key` as `Authorization: Bearer <key>` with every request.
    pub fn api_key(mut self, key: impl Into<String>) -> Client {
        let key = key.into();
        self.api_key = (!key.trim().is_empty()).then(|| ApiKey::new(key.trim()));
        self
    }

    /// How long [`Client::run`] waits for a run to end (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The longest time the server holds one request while a run is waited for (at most, and
    /// by default, [`MAX_WAIT_SECONDS`]; at least one second): shorter behind a proxy that
    /// cuts requests that stay quiet longer.
    pub fn wait_step(mut self, step: Duration) -> Client {
        self.wait_step = step.clamp(Duration::from_secs(1), MAX_WAIT);
        self
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }
}
