//! Deployments: listing them, reading one, and triggering a run of one.

use super::runs::PageRequest;
use super::{Client, RunError};
use flowkit_wire::api::deployments::{DeploymentDetail, DeploymentSummary, TriggerRequest};
use flowkit_wire::api::page::Page;
use flowkit_wire::api::runs::Run;
use reqwest::{Method, StatusCode};
use std::fmt;
use std::time::Duration;

/// A run a trigger created, or found: `POST /deployments/{flow}/{name}/runs`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Triggered {
    /// The run, as the server answered it (with its parameters, defaults applied).
    pub run: Run,
    /// Whether the idempotency key was seen before with the same request: `run` is the run it
    /// created then, not a new one.
    pub replayed: bool,
}

impl fmt::Display for Triggered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.replayed {
            "was already created with this idempotency key"
        } else {
            "created"
        };
        write!(f, "run {} {how}: {}", self.run.id, self.run.state.as_str())
    }
}

impl Client {
    /// One page of the deployments (`GET /deployments`), newest first; pass the page's
    /// `next_cursor` in `page` for the next one. At most
    /// [`MAX_PAGE_SIZE`](flowkit_wire::api::page::MAX_PAGE_SIZE) per page.
    pub async fn deployments(
        &self,
        page: &PageRequest,
    ) -> Result<Page<DeploymentSummary>, RunError> {
        let url = self.route(&["deployments"], &page.query());
        self.call(self.request(Method::GET, url)).await
    }

    /// The deployment `flow`/`name` (`GET /deployments/{flow}/{name}`): its newest version
    /// with its parameter and output schemas, its live workers and recent runs.
    pub async fn deployment(&self, flow: &str, name: &str) -> Result<DeploymentDetail, RunError> {
        let url = self.route(&["deployments", flow, name], &[]);
        self.call(self.request(Method::GET, url)).await
    }

    /// Creates a run of the deployment `flow`/`name` with `request`'s parameters, without
    /// waiting for it (`POST /deployments/{flow}/{name}/runs`). With an idempotency key seen
    /// before with the same request, the run it created then ([`Triggered::replayed`]).
    pub async fn trigger(
        &self,
        flow: &str,
        name: &str,
        request: &TriggerRequest,
    ) -> Result<Triggered, RunError> {
        self.trigger_waiting(flow, name, request, Duration::ZERO)
            .await
    }

    /// [`trigger`](Client::trigger), asking the server to answer once the run ended, or after
    /// `wait` (whole seconds, at most [`MAX_WAIT_SECONDS`](super::MAX_WAIT_SECONDS)) with the
    /// run as it stands.
    pub(super) async fn trigger_waiting(
        &self,
        flow: &str,
        name: &str,
        request: &TriggerRequest,
        wait: Duration,
    ) -> Result<Triggered, RunError> {
        let url = self.route(&["deployments", flow, name, "runs"], &[]);
        let mut call = self.request(Method::POST, url).json(request)?;
        let seconds = super::wait::whole_seconds(wait.min(self.wait_step));
        if seconds > 0 {
            call = call
                .header("prefer", format!("wait={seconds}"))
                .held_for(Duration::from_secs(u64::from(seconds)));
        }
        let answer = self.send(call).await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        Ok(Triggered {
            run: answer.json()?,
            replayed: answer.status == StatusCode::OK,
        })
    }
}
