//! One heartbeat per worker, every third of the lease and at least every [`MAX_INTERVAL`] (so a
//! cancellation reaches a run within seconds), from an OS thread of its own with its
//! own current-thread runtime and HTTP client: a flow that blocks every thread of the user's
//! tokio runtime cannot keep the heartbeat from going out, so it cannot make its runs look
//! crashed.
//!
//! Each heartbeat carries every lease the worker holds and acts on the answer: runs to
//! `cancel` are cancelled (they end `Cancelled` within the cancel grace), runs `lost` are
//! stopped at once (their tokio task is aborted from this thread). When heartbeats have failed
//! for two thirds of the lease, the worker stops all its runs itself, before the server's
//! reaper reclaims them. Every request is bounded by a timeout of a third of the lease (at
//! least 1 s); the thread stops when the worker asks, within one such request.

use super::api::Api;
use super::held::Held;
use crate::sink::report::ApiKey;
use flowkit_wire::api::workers::{HeartbeatRequest, HeartbeatResponse, Served};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The shortest wait between heartbeats, whatever the lease.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The longest wait between heartbeats, whatever the lease: how long a cancellation may take
/// to reach a worker.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// How often the thread looks at the lease and at whether it should stop.
const TICK: Duration = Duration::from_millis(100);

/// What a heartbeat says about the worker.
pub(crate) struct Identity {
    pub url: String,
    pub key: Option<ApiKey>,
    pub worker: Uuid,
    pub worker_name: String,
    pub served: Vec<Served>,
}

/// The running heartbeat thread.
pub(crate) struct Heartbeat {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// The wait between heartbeats for `lease`.
pub(crate) fn interval(lease: Duration) -> Duration {
    (lease / 3).min(MAX_INTERVAL).max(MIN_INTERVAL)
}

impl Heartbeat {
    /// Starts the thread.
    pub(crate) fn start(identity: Identity, held: Arc<Held>) -> Result<Heartbeat, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build the heartbeat's runtime: {e}"))?;
        // The client's timeout is per request below.
        let api = Api::new(&identity.url, identity.key.clone(), Duration::from_secs(30))?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("flowkit-heartbeat".into())
            .spawn(move || beat(runtime, api, identity, held, stopped))
            .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
        Ok(Heartbeat { stop, thread })
    }

    /// Stops the thread and waits for it (at most one request's timeout).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn beat(
    runtime: tokio::runtime::Runtime,
    api: Api,
    identity: Identity,
    held: Arc<Held>,
    stopped: mpsc::Receiver<()>,
) {
    let mut last_ok = Instant::now();
    let mut last_beat = Instant::now();
    let mut failing = false;
    loop {
        // The lease may change (the first claim's answer tells it): the wait is re-read every
        // tick.
        let lease = held.lease();
        let every = interval(lease);
        let now = Instant::now();
        let due = last_beat + every;
        if now < due {
            match stopped.recv_timeout((due - now).min(TICK)) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        last_beat = now;
        let request = HeartbeatRequest {
            worker: identity.worker,
            worker_name: identity.worker_name.clone(),
            deployments: identity.served.clone(),
            leases: held.leases(),
        };
        let timeout = every.max(Duration::from_secs(1));
        let answer = runtime.block_on(api.post::<_, HeartbeatResponse>(
            "/workers/heartbeat",
            &request,
            Some(timeout),
        ));
        match answer {
            Ok(answer) => {
                if failing {
                    tracing::info!(target: "flowkit", "flowkit worker: heartbeats reach the server again");
                    failing = false;
                }
                last_ok = Instant::now();
                held.set_lease_seconds(answer.lease_seconds);
                if !answer.cancel.is_empty() {
                    held.cancel(
                        &answer.cancel,
                        "cancelled on request (the server asked the worker to stop the run)",
                    );
                }
                if !answer.lost.is_empty() {
                    tracing::warn!(
                        target: "flowkit",
                        "flowkit worker: the server says {} lease(s) are no longer this worker's; stopping those runs",
                        answer.lost.len()
                    );
                    held.lose(&answer.lost, "stopped: the worker lost the run's lease (the server decided the run's fate)");
                }
            }
            Err(why) => {
                if !failing {
                    tracing::warn!(target: "flowkit", "flowkit worker: heartbeat failed: {why}");
                    failing = true;
                }
                let silent = last_ok.elapsed();
                if silent >= lease.mul_f64(2.0 / 3.0) && held.len() > 0 {
                    tracing::error!(
                        target: "flowkit",
                        "flowkit worker: no heartbeat reached the server for {silent:?} (lease {lease:?}); stopping this worker's runs before their leases expire"
                    );
                    held.lose_all(&format!(
                        "stopped: the worker could not reach the server for {} and its lease was about to expire",
                        humantime::format_duration(Duration::from_secs(silent.as_secs()))
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_of_the_lease_but_never_a_busy_loop() {
        assert_eq!(interval(Duration::from_secs(12)), Duration::from_secs(4));
        assert_eq!(interval(Duration::from_secs(30)), MAX_INTERVAL);
        assert_eq!(interval(Duration::from_millis(30)), MIN_INTERVAL);
    }
}
