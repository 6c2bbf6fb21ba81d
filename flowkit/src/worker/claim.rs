//! The claim loop: while the worker has a free slot, ask the server for up to that many runs
//! (a long-poll of [`ClaimRequest::wait_seconds`]), and start each run it gets, holding a slot
//! until the run is finished. Stops when the worker shuts down; a claim in flight is awaited
//! (it may bring runs the server leased to this worker), and what it brings then is handed
//! back unstarted.

use super::ServeError;
use super::api::{Api, CallError};
use super::execute::Runs;
use crate::deployment::Deployment;
use crate::http::Backoff;
use flowkit_wire::api::workers::{ClaimRequest, ClaimResponse, ClaimedRun, MAX_CLAIM_RUNS, Served};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A claim's request timeout beyond its long-poll.
const CLAIM_SLACK: Duration = Duration::from_secs(15);

/// The deployments a worker runs, by `(flow, name)`.
pub(crate) type Deployments = HashMap<(String, String), Arc<Deployment>>;

/// What the claim loop asks with.
pub(crate) struct Claimer {
    pub api: Api,
    pub worker: Uuid,
    pub worker_name: String,
    pub served: Vec<Served>,
    pub wait: Duration,
}

impl Claimer {
    /// Claims and starts runs until `shutdown` is triggered. Each started run is a task of
    /// `tasks` holding one of `slots`' permits.
    pub(crate) async fn run(
        &self,
        slots: &Arc<Semaphore>,
        runs: &Arc<Runs>,
        deployments: &Arc<Deployments>,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), ServeError> {
        let backoff = Backoff::doubling(Duration::from_millis(250), Duration::from_secs(10), 0.2);
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                permit = Arc::clone(slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            let mut permits = vec![first];
            while permits.len() < MAX_CLAIM_RUNS as usize {
                match Arc::clone(slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let request = ClaimRequest {
                worker: self.worker,
                worker_name: self.worker_name.clone(),
                deployments: self.served.clone(),
                max_runs: permits.len() as u32,
                wait_seconds: self.wait.as_secs() as u32,
            };
            let answer = self
                .api
                .post::<_, ClaimResponse>("/workers/claim", &request, Some(self.wait + CLAIM_SLACK))
                .await;
            match answer {
                Ok(answer) => {
                    if failures > 0 {
                        tracing::info!(target: "flowkit", "flowkit worker: claims reach the server again");
                    }
                    failures = 0;
                    runs.held.set_lease_seconds(answer.lease_seconds);
                    for claimed in answer.runs {
                        self.start(claimed, &mut permits, runs, deployments, shutdown, tasks)
                            .await;
                    }
                }
                Err(CallError::Status {
                    status: status @ (401 | 403),
                    message,
                    ..
                }) => return Err(ServeError::Unauthorized { status, message }),
                Err(CallError::Status {
                    status, message, ..
                }) if !(status >= 500 || status == 429 || status == 408) => {
                    return Err(ServeError::ClaimRefused { status, message });
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(target: "flowkit", "flowkit worker: claiming runs failed ({e}); retrying");
                    }
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.after(failures)) => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    /// Starts one claimed run on a slot, or hands it back.
    async fn start(
        &self,
        claimed: ClaimedRun,
        permits: &mut Vec<OwnedSemaphorePermit>,
        runs: &Arc<Runs>,
        deployments: &Arc<Deployments>,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        let deployment = deployments
            .get(&(claimed.flow.clone(), claimed.name.clone()))
            .cloned();
        let reason = match (&deployment, permits.is_empty(), shutdown.is_cancelled()) {
            (None, _, _) => Some(format!(
                "handed back: this worker does not serve {}/{}",
                claimed.flow, claimed.name
            )),
            (_, true, _) => Some("handed back: the server gave more runs than asked".into()),
            (_, _, true) => Some("handed back unstarted: the worker is shutting down".into()),
            _ => None,
        };
        match (reason, deployment, permits.pop()) {
            (None, Some(deployment), Some(permit)) => {
                let runs = Arc::clone(runs);
                tasks.spawn(async move {
                    let _slot = permit;
                    runs.execute(&deployment, claimed).await;
                });
            }
            (reason, _, permit) => {
                drop(permit);
                let reason = reason.unwrap_or_else(|| "handed back".into());
                runs.release(&claimed, &reason).await;
            }
        }
    }
}
