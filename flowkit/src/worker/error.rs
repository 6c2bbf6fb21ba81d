//! Why a worker could not start or had to stop.

use crate::deployment::InvalidDeployment;

/// Why [`crate::serve`] (or [`crate::Worker::serve`]) returned an error. Every message says
/// what to do about it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use flowkit::{ServeError, Worker};
///
/// // No deployments: nothing to serve.
/// let err = Worker::new().api_url("http://127.0.0.1:9").serve([]).await.unwrap_err();
/// assert!(matches!(err, ServeError::NoDeployments));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Neither `FLOWKIT_API_URL` nor [`crate::Worker::api_url`] says where the server is.
    #[error(
        "no flowkit server configured: set FLOWKIT_API_URL (e.g. http://127.0.0.1:4200) and \
         start flowkit-server (`cargo run -p flowkit-server`), or give the URL with \
         Worker::api_url"
    )]
    NoServer,
    /// `serve` was given no deployment.
    #[error(
        "nothing to serve: give serve at least one deployment (`my_flow::deployment(\"name\")`)"
    )]
    NoDeployments,
    /// A deployment's spec is invalid (its names, defaults or limit).
    #[error("{0}")]
    InvalidDeployment(#[from] InvalidDeployment),
    /// The same `flow/name` was given twice.
    #[error("deployment {0} is given twice: each flow/name may be served once per worker")]
    Duplicate(String),
    /// The server refused to register a deployment (409: another function registered this
    /// flow/name, or this version with another spec; 422: the server found the spec invalid).
    #[error("the server refused to register deployment {deployment} ({status}): {message}")]
    Refused {
        /// `flow/name`.
        deployment: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server refused the API key (401) or its scopes (403).
    #[error(
        "the server refused the API key ({status}): {message}. A worker needs a key with the \
         scopes `report,worker` in FLOWKIT_API_KEY (or Worker::api_key)"
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached to register the deployments.
    #[error(
        "cannot reach the flowkit server at {url}: {message}. Is flowkit-server running there?"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered a claim with an error the worker cannot recover from.
    #[error("the server refused to give this worker runs ({status}): {message}")]
    ClaimRefused {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The worker could not set itself up (an HTTP client, its heartbeat thread, a signal
    /// handler).
    #[error("the worker cannot start: {0}")]
    Setup(String),
}
