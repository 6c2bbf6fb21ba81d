//! Waiting for a run's result: the trigger asks the server to hold its answer until the run
//! ends (`Prefer: wait=N`), then `GET /flow-runs/{id}/result?wait=N` is asked again, each
//! time for at most [`MAX_WAIT_SECONDS`], until the run ends or the caller's wait runs out.

use super::{Client, MAX_WAIT_SECONDS, RunError};
use crate::FlowSignature;
use crate::http::Backoff;
use flowkit_wire::api::deployments::{FieldError, TriggerRequest};
use flowkit_wire::api::error::ErrorCode;
use flowkit_wire::api::runs::Run;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Times in a row the server may be unreachable while a run is waited for before the wait
/// gives up with [`RunError::Unreachable`] (a server restarting, a connection dropped).
const UNREACHABLE_RETRIES: u32 = 3;

/// A run that completed, and its output.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Finished {
    /// The run in its final state, its `result` the output.
    pub run: Run,
    /// What the flow returned, as JSON.
    pub output: Value,
    /// Whether the trigger's idempotency key was seen before: `run` is the run it created
    /// then (always `false` for [`Client::result`]).
    pub replayed: bool,
}

impl Client {
    /// Runs the deployment `name` of the flow `F` with typed arguments and waits for its typed
    /// output, at most [`Client::timeout`]: `client.run::<train>("nightly", (dataset, epochs,
    /// learning_rate))`. The arguments are sent as a JSON object keyed by the flow's parameter
    /// names ([`FlowSignature::parameters_json`]); the output is read as
    /// [`FlowSignature::Output`] ([`RunError::Decode`] if it does not read, e.g. when the
    /// deployment runs another version of the flow).
    pub async fn run<F>(&self, name: &str, args: F::Args) -> Result<F::Output, RunError>
    where
        F: FlowSignature,
        F::Args: Serialize,
        F::Output: DeserializeOwned,
    {
        let parameters = F::parameters_json(args).map_err(|e| {
            RunError::InvalidParameters(vec![FieldError {
                pointer: String::new(),
                message: format!("the arguments do not serialize as JSON: {e}"),
            }])
        })?;
        let request = TriggerRequest {
            parameters,
            ..TriggerRequest::default()
        };
        let finished = self
            .trigger_and_wait(F::NAME, name, &request, self.timeout)
            .await?;
        serde_path_to_error::deserialize(finished.output).map_err(|e| {
            let at = e.path().to_string();
            RunError::Decode {
                run_id: Some(finished.run.id),
                message: if at == "." {
                    e.into_inner().to_string()
                } else {
                    format!("at `{at}`: {}", e.into_inner())
                },
            }
        })
    }

    /// Runs the deployment `flow`/`name` with `parameters` (a JSON object keyed by parameter
    /// name; the deployment's defaults fill in the rest) and waits at most `wait` for its
    /// output, as JSON.
    pub async fn run_json(
        &self,
        flow: &str,
        name: &str,
        parameters: Map<String, Value>,
        wait: Duration,
    ) -> Result<Value, RunError> {
        let request = TriggerRequest {
            parameters,
            ..TriggerRequest::default()
        };
        Ok(self
            .trigger_and_wait(flow, name, &request, wait)
            .await?
            .output)
    }

    /// Triggers a run of the deployment `flow`/`name` with `request` (an idempotency key, a
    /// pinned version, tags…) and waits at most `wait` for it to complete: the run and its
    /// output, or the error of a run that ended otherwise.
    pub async fn trigger_and_wait(
        &self,
        flow: &str,
        name: &str,
        request: &TriggerRequest,
        wait: Duration,
    ) -> Result<Finished, RunError> {
        let start = Instant::now();
        let triggered = self.trigger_waiting(flow, name, request, wait).await?;
        let (mut run, output) = self.settle(triggered.run, start, wait).await?;
        run.result = Some(output.clone());
        Ok(Finished {
            run,
            output,
            replayed: triggered.replayed,
        })
    }

    /// The output of the flow run `id` as JSON, waiting at most `wait` for the run to end
    /// (`Duration::ZERO`: only ask once). A run still going after `wait` is
    /// [`RunError::StillRunning`]; one that ended without a result is the error of its state.
    pub async fn result(&self, id: Uuid, wait: Duration) -> Result<Value, RunError> {
        let start = Instant::now();
        match self.ask_result(id, wait).await? {
            Asked::Output(output) => Ok(output),
            Asked::NotYet(run) => Ok(self.settle(*run, start, wait).await?.1),
        }
    }

    /// Waits, until `start + wait` at the latest, for `run` to end: its final state and output.
    async fn settle(
        &self,
        mut run: Run,
        start: Instant,
        wait: Duration,
    ) -> Result<(Run, Value), RunError> {
        let deadline = start + wait;
        loop {
            if run.state.is_final() {
                if let Some(error) = RunError::from_final(run.clone()) {
                    return Err(error);
                }
                if let Some(output) = run.result.take() {
                    return Ok((run, output));
                }
                // Completed, with an output too large to come inline.
                return match self.ask_result(run.id, Duration::ZERO).await? {
                    Asked::Output(output) => Ok((run, output)),
                    Asked::NotYet(_) => Err(RunError::Decode {
                        run_id: Some(run.id),
                        message: format!(
                            "the run is {} but the server has no result for it",
                            run.state.as_str()
                        ),
                    }),
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RunError::StillRunning {
                    run: Box::new(run),
                    waited: start.elapsed(),
                });
            }
            match self.ask_result(run.id, left).await? {
                Asked::Output(output) => return Ok((self.flow_run(run.id).await?, output)),
                Asked::NotYet(now) => run = *now,
            }
        }
    }

    /// `GET /flow-runs/{id}/result?wait=N` once (N: `wait` in whole seconds, at most
    /// [`MAX_WAIT_SECONDS`]), again after a failure to reach the server (at most
    /// [`UNREACHABLE_RETRIES`] times in a row).
    async fn ask_result(&self, id: Uuid, wait: Duration) -> Result<Asked, RunError> {
        let backoff = Backoff::doubling(Duration::from_millis(500), Duration::from_secs(4), 0.1);
        let seconds = whole_seconds(wait.min(self.wait_step));
        let mut failures = 0;
        let answer = loop {
            let url = self.route(
                &["flow-runs", &id.to_string(), "result"],
                &[("wait", seconds.to_string())],
            );
            let request = self
                .request(Method::GET, url)
                .held_for(Duration::from_secs(u64::from(seconds)));
            match self.send(request).await {
                Ok(answer) => break answer,
                Err(RunError::Unreachable { .. }) if failures < UNREACHABLE_RETRIES => {
                    failures += 1;
                    tokio::time::sleep(backoff.after(failures)).await;
                }
                Err(error) => return Err(error),
            }
        };
        match answer.status {
            StatusCode::OK => Ok(Asked::Output(answer.json()?)),
            StatusCode::ACCEPTED => Ok(Asked::NotYet(Box::new(answer.json()?))),
            _ => match answer.error() {
                RunError::Api(detail) if detail.code == ErrorCode::RunNotCompleted => {
                    let run = self.flow_run(id).await?;
                    Err(RunError::from_final(run).unwrap_or(RunError::Api(detail)))
                }
                error => Err(error),
            },
        }
    }
}

/// What one ask for a result got.
enum Asked {
    /// The output of the completed run.
    Output(Value),
    /// The run, not final yet.
    NotYet(Box<Run>),
}

/// `wait` in whole seconds, rounded up, at most [`MAX_WAIT_SECONDS`].
pub(super) fn whole_seconds(wait: Duration) -> u32 {
    let seconds = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    u32::try_from(seconds)
        .unwrap_or(MAX_WAIT_SECONDS)
        .min(MAX_WAIT_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_whole_seconds_within_the_bound() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::from_secs(61)), MAX_WAIT_SECONDS);
        assert_eq!(whole_seconds(Duration::MAX), MAX_WAIT_SECONDS);
    }
}
