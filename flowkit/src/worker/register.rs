//! Registering a worker's deployments (`POST /deployments`) before it claims anything: every
//! deployment is registered, or the worker does not start. Every spec is first checked with
//! `?dry_run=true`, so a refusal of one (409, 422) leaves none of them registered.

use super::ServeError;
use super::api::{Api, CallError};
use crate::http::Backoff;
use flowkit_wire::api::deployments::DeploymentSpec;
use std::time::{Duration, Instant};

/// How long registration keeps trying a server that does not answer.
const UNREACHABLE_BUDGET: Duration = Duration::from_secs(15);

/// Checks every spec (a dry run), then registers every spec; the first refusal (409, 422,
/// 401/403) or a server that stays unreachable for [`UNREACHABLE_BUDGET`] is the error.
pub(crate) async fn register(
    api: &Api,
    url: &str,
    specs: &[DeploymentSpec],
) -> Result<(), ServeError> {
    let started = Instant::now();
    for path in ["/deployments?dry_run=true", "/deployments"] {
        for spec in specs {
            post(api, url, path, spec, started).await?;
        }
    }
    Ok(())
}

/// Posts one spec to `path`, retrying while the server is unreachable.
async fn post(
    api: &Api,
    url: &str,
    path: &str,
    spec: &DeploymentSpec,
    started: Instant,
) -> Result<(), ServeError> {
    let backoff = Backoff::doubling(Duration::from_millis(250), Duration::from_secs(4), 0.2);
    let deployment = format!("{}/{}", spec.flow, spec.name);
    let mut failures = 0;
    loop {
        match api.post_minimal(path, spec).await {
            Ok(()) => return Ok(()),
            Err(CallError::Status {
                status: status @ (401 | 403),
                message,
                ..
            }) => return Err(ServeError::Unauthorized { status, message }),
            Err(e) if e.is_transient() => {
                failures += 1;
                if started.elapsed() >= UNREACHABLE_BUDGET {
                    return Err(ServeError::Unreachable {
                        url: url.to_string(),
                        message: e.to_string(),
                    });
                }
                tokio::time::sleep(backoff.after(failures)).await;
            }
            Err(CallError::Status {
                status, message, ..
            }) => {
                return Err(ServeError::Refused {
                    deployment,
                    status,
                    message,
                });
            }
            Err(CallError::Network(message)) => {
                return Err(ServeError::Unreachable {
                    url: url.to_string(),
                    message,
                });
            }
        }
    }
}
