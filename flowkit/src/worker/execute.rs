//! One claimed run: started as that run, watched until it ends, is cancelled (stopped within
//! the cancel grace, then aborted) or loses its lease (aborted at once), then, once its events
//! are delivered, finished on the server with its final state event and result.

use super::api::{Api, CallError};
use super::held::Held;
use crate::deployment::{Deployment, Started};
use crate::http::Backoff;
use crate::run::deployed::{Claim, Deployed};
use crate::state::{State, StateType};
use flowkit_wire::api::error::ErrorCode;
use flowkit_wire::api::runs::Run;
use flowkit_wire::api::workers::{ClaimedRun, FinishRequest, ReleaseRequest};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long an aborted run's task may take to drop its future (it does at its next `.await`).
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Most attempts to hand back a run.
const RELEASE_ATTEMPTS: u32 = 3;

/// What every run of one worker shares.
pub(crate) struct Runs {
    pub api: Api,
    pub held: Arc<Held>,
    pub worker_name: String,
    /// Time a cancelled run has to stop before its task is aborted.
    pub cancel_grace: Duration,
}

impl Runs {
    /// Runs `claimed` with `deployment` and finishes it on the server.
    pub(crate) async fn execute(&self, deployment: &Deployment, claimed: ClaimedRun) {
        let run_id = claimed.run_id;
        let token = claimed.token;
        let claim = Claim {
            run_id,
            attempt: claimed.attempt,
            max_attempts: claimed.max_attempts,
            token,
            deployment: format!("{}/{}", claimed.flow, claimed.name),
            worker: self.worker_name.clone(),
            tags: claimed.tags,
        };
        let Started { deployed, run } = deployment.start(claim, claimed.parameters);
        let lost = self.held.insert(token, Arc::clone(&deployed));
        if let Some(run) = run {
            // The flow's panics (and the unwinding of a cancelled run) end here.
            let mut task = tokio::spawn(AssertUnwindSafe(run).catch_unwind());
            self.held.set_abort(run_id, task.abort_handle());
            self.watch(&deployed, &mut task, &lost).await;
        }
        if lost.is_cancelled() {
            // The server decided the run's fate: nothing this worker sends would count.
            tracing::warn!(
                target: "flowkit",
                "flowkit worker: run {run_id} stopped: {}",
                deployed.cancel_message()
            );
            self.held.remove(run_id);
            return;
        }
        let event = if deployed.cancel.is_cancelled() {
            deployed.end(
                State::with_message(
                    StateType::Cancelled,
                    format!(
                        "{}; the flow did not stop within the cancel grace of {}, so its task was aborted",
                        deployed.cancel_message(),
                        humantime::format_duration(self.cancel_grace)
                    ),
                ),
                None,
            )
        } else {
            deployed.end(
                State::with_message(
                    StateType::Crashed,
                    "the flow's task ended without recording a final state",
                ),
                None,
            )
        };
        let result = (event.state_type() == Some(StateType::Completed))
            .then(|| deployed.take_result())
            .flatten();
        // A run that did not complete can be retried as soon as it is final on the server, and
        // the events of this attempt sent after that would carry a stale token and be refused:
        // its events (its task runs, its logs) reach the server first. Bounded by the flush
        // timeout; what is not delivered by then is spooled, and the run is finished anyway. (A
        // completed run cannot be retried: it is finished at once, which keeps throughput.)
        if event.state_type() != Some(StateType::Completed) {
            crate::lifecycle::flush_within(crate::config::get().flush_timeout).await;
        }
        self.finish(&deployed, token, event, result, &lost).await;
        self.held.remove(run_id);
    }

    /// Waits for the run's task to end; on a cancel request gives it the cancel grace, then
    /// aborts it; on a lost lease aborts it at once.
    async fn watch(
        &self,
        deployed: &Deployed,
        task: &mut JoinHandle<std::thread::Result<()>>,
        lost: &tokio_util::sync::CancellationToken,
    ) {
        tokio::select! {
            _ = &mut *task => return,
            () = lost.cancelled() => {}
            () = deployed.cancel.cancelled() => {
                tokio::select! {
                    ended = tokio::time::timeout(self.cancel_grace, &mut *task) => {
                        if ended.is_ok() {
                            return;
                        }
                    }
                    () = lost.cancelled() => {}
                }
            }
        }
        task.abort();
        let _ = tokio::time::timeout(ABORT_WAIT, &mut *task).await;
    }

    /// `POST /flow-runs/{id}/finish`, retried with backoff while the failure is transient and
    /// the lease is held (the heartbeat keeps it alive meanwhile, and gives it up when the
    /// server stays unreachable, which ends the retries).
    async fn finish(
        &self,
        deployed: &Deployed,
        token: u64,
        event: crate::Event,
        result: Option<serde_json::Value>,
        lost: &tokio_util::sync::CancellationToken,
    ) {
        let run_id = deployed.run_id;
        let request = FinishRequest {
            token,
            event,
            result,
        };
        let path = format!("/flow-runs/{run_id}/finish");
        let backoff = Backoff::doubling(Duration::from_millis(200), Duration::from_secs(5), 0.2);
        let mut failures = 0u32;
        loop {
            match self.api.post_minimal(&path, &request).await {
                Ok(()) => return,
                Err(CallError::Status {
                    code: Some(ErrorCode::StaleLease),
                    message,
                    ..
                }) => {
                    tracing::warn!(
                        target: "flowkit",
                        "flowkit worker: run {run_id} was not finished: its lease is stale ({message}); the server decided its fate"
                    );
                    return;
                }
                Err(e) if !e.is_transient() => {
                    tracing::error!(
                        target: "flowkit",
                        "flowkit worker: the server refused to finish run {run_id}: {e}"
                    );
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            target: "flowkit",
                            "flowkit worker: finishing run {run_id} failed ({e}); retrying while its lease lasts"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.after(failures)) => {}
                        () = lost.cancelled() => {
                            tracing::warn!(
                                target: "flowkit",
                                "flowkit worker: run {run_id} was not finished: its lease was lost ({e})"
                            );
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Hands a run back unstarted (`POST /flow-runs/{id}/release`): it is `Scheduled` again
    /// for another worker. A few attempts; if none succeeds the lease expires and the server
    /// re-queues or crashes it.
    pub(crate) async fn release(&self, claimed: &ClaimedRun, reason: &str) {
        let path = format!("/flow-runs/{}/release", claimed.run_id);
        let request = ReleaseRequest {
            token: claimed.token,
            reason: Some(reason.to_string()),
        };
        let backoff = Backoff::doubling(Duration::from_millis(200), Duration::from_secs(2), 0.2);
        for attempt in 1..=RELEASE_ATTEMPTS {
            match self.api.post::<_, Run>(&path, &request, None).await {
                Ok(_) => return,
                Err(e) if e.is_transient() && attempt < RELEASE_ATTEMPTS => {
                    tokio::time::sleep(backoff.after(attempt)).await;
                }
                Err(e) => {
                    tracing::warn!(
                        target: "flowkit",
                        "flowkit worker: could not hand back run {}: {e}",
                        claimed.run_id
                    );
                    return;
                }
            }
        }
    }
}
