//! Registering a worker's deployments (`POST /deployments`) before it claims anything: every
//! deployment is registered, or the worker does not start.

use super::ServeError;
use super::api::{Api, CallError};
use crate::http::Backoff;
use flowkit_wire::api::deployments::DeploymentSpec;
use std::time::{Duration, Instant};

/// How long registration keeps trying a server that does not answer.
const UNREACHABLE_BUDGET: Duration = Duration::from_secs(15);

/// Registers every spec; the first refusal (409, 422, 401/403) or a server that stays
/// unreachable for [`UNREACHABLE_BUDGET`] is the error.
pub(crate) async fn register(
    api: &Api,
    url: &str,
    specs: &[DeploymentSpec],
) -> Result<(), ServeError> {
    let backoff = Backoff::doubling(Duration::from_millis(250), Duration::from_secs(4), 0.2);
    let started = Instant::now();
    for spec in specs {
        let deployment = format!("{}/{}", spec.flow, spec.name);
        let mut failures = 0;
        loop {
            match api
                .post::<_, serde_json::Value>("/deployments", spec, None)
                .await
            {
                Ok(_) => break,
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
    Ok(())
}
