//! Workers: the processes that run deployed flows. [`serve`] registers deployments with the
//! flowkit server and runs the runs others trigger; [`Worker`] is the same with options, and
//! documents what a worker does.

mod api;
mod claim;
mod error;
mod execute;
mod heartbeat;
mod held;
mod register;
mod shutdown;

pub use error::ServeError;
pub use shutdown::ShutdownHandle;

use crate::config;
use crate::deployment::Deployment;
use crate::sink::report::ApiKey;
use api::Api;
use claim::{Claimer, Deployments};
use execute::Runs;
use flowkit_wire::api::workers::{MAX_CLAIM_RUNS, MAX_CLAIM_WAIT_SECONDS, Served};
use held::Held;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// A worker's slots by default: at most this many runs at once, unless every deployment has a
/// [`limit`](Deployment::limit) (then the sum of the limits) or [`Worker::slots`] says.
pub const DEFAULT_SLOTS: usize = 4;
/// How long running runs may take to finish after a shutdown is asked for.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long a cancelled run has to stop before its task is aborted.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);
/// How long one claim waits for a run on the server (long-poll).
pub const DEFAULT_CLAIM_WAIT: Duration = Duration::from_secs(20);

/// Timeout of the worker's other requests (registration, finish, release).
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// Registers `deployments` with the flowkit server at `FLOWKIT_API_URL` (with the key in
/// `FLOWKIT_API_KEY`, scopes `report,worker`), then claims and runs the runs others trigger
/// until SIGTERM or Ctrl-C: [`Worker::serve`] with every option at its default. See [`Worker`] for what a
/// worker does.
///
/// The error type is the caller's, anything with `From<ServeError>` (`anyhow::Error`,
/// `Box<dyn Error>`, `ServeError`), so `serve` can end a `main` as it is:
///
/// ```no_run
/// use flowkit::flow;
/// use serde_json::json;
///
/// /// Retrain the house-price model.
/// #[flow(retries = 1)]
/// async fn train(dataset: String, epochs: u32, learning_rate: f64) -> anyhow::Result<f64> {
///     Ok(learning_rate * f64::from(epochs))
/// }
///
/// #[flow]
/// async fn evaluate() -> anyhow::Result<bool> {
///     Ok(true)
/// }
///
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     flowkit::serve([
///         train::deployment("nightly").parameters(json!({"epochs": 50})).limit(2),
///         evaluate::deployment("adhoc"),
///     ])
///     .await
/// }
/// ```
///
/// With `?`, name the error type: `flowkit::serve::<flowkit::ServeError>([..]).await?`.
pub async fn serve<E: From<ServeError>>(
    deployments: impl IntoIterator<Item = Deployment>,
) -> Result<(), E> {
    Worker::new().serve(deployments).await.map_err(E::from)
}

/// A worker with options: slots, grace periods, the server and key (else `FLOWKIT_API_URL` and
/// `FLOWKIT_API_KEY`), signals, and a [`ShutdownHandle`] to stop it from code. [`serve`] is a
/// worker with every option at its default.
///
/// ```no_run
/// # use flowkit::flow;
/// # #[flow] async fn etl() -> anyhow::Result<u32> { Ok(1) }
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> Result<(), flowkit::ServeError> {
/// let worker = flowkit::Worker::new()
///     .slots(8)
///     .grace(Duration::from_secs(60))
///     .api_url("http://127.0.0.1:4200");
/// let stop = worker.shutdown_handle(); // e.g. for an admin endpoint
/// worker.serve([etl::deployment("on-demand")]).await
/// # }
/// ```
///
/// # What a worker does
///
/// 1. **Registers** every deployment (`POST /api/v1/deployments`, with its
///    [`DeploymentSpec`](crate::DeploymentSpec)). An invalid deployment, a refusal (409:
///    another function already registered that flow/name) or a refused key stops it before
///    anything runs, with the server's message ([`ServeError`]).
/// 2. **Claims** runs while it has a free slot: one long-poll of up to
///    [`Worker::claim_wait`] (20 s) asks for as many runs as there are free slots; the server
///    answers as soon as a run is triggered. Claims are exactly-once: each run comes with a
///    lease and a fencing token.
/// 3. **Runs** each claimed run as that run: the claimed run id, starting at the claimed
///    attempt, retrying up to the run's `max_attempts` (the flow's `retries` continue the
///    numbering), its parameters read strictly as the flow's arguments (the deployment's
///    defaults under them). Every event of the run — the flow's, its task runs', its logs —
///    carries the lease's token ([`Event::lease`](crate::Event::lease)), records the
///    deployment (`flow/name`) and this worker, and is reported like any run's.
/// 4. **Finishes** each run — one that did not complete once the reporter has delivered its
///    events (at most the flush timeout, `FLOWKIT_FLUSH_TIMEOUT`; what is left is spooled), so
///    that a failed run is on the server with its task runs and logs before anyone can retry
///    it (a retry makes the events of the attempt before stale) — with its final state event
///    (the same event, same id, that the sinks get) and, when `Completed`, its output as JSON
///    (`POST /flow-runs/{id}/finish` with `Prefer: return=minimal`: the server answers 204
///    without reading the run back), retried with backoff while the failure is transient and
///    the lease is held. A `409
///    stale_lease` means the server already decided the run's fate: the worker logs it and
///    moves on.
/// 5. **Heartbeats** once per worker every third of the lease (at most 5 s apart), from an OS
///    thread of its own (its own small runtime and HTTP client), so a flow that blocks every
///    thread of your tokio runtime cannot make its runs look crashed. The heartbeat carries every lease the
///    worker holds; its answer cancels runs (`cancel`) or stops them at once (`lost`). When
///    heartbeats fail for two thirds of the lease, the worker stops its runs itself, before
///    the server reclaims them.
///
/// # Cancellation
///
/// A run cancelled on the server (`POST /api/v1/flow-runs/{id}/cancel`) is `Cancelling` until
/// its worker sees it, within one heartbeat. The worker then cancels the flow's future: the
/// task runs in flight end `Cancelled` (their futures are dropped), the flow run ends
/// `Cancelled` with a message, and its **`on_failure` hooks** run (with the `Cancelled` state:
/// flowkit has no separate cancellation hook). A flow that does not stop within
/// [`Worker::cancel_grace`] (10 s; code that never reaches an `.await`) has its tokio task
/// aborted and is reported `Cancelled` anyway. Tasks started with `submit` or
/// [`spawn`](crate::spawn) whose handles the flow dropped are detached from it and are not
/// stopped.
///
/// # Shutdown
///
/// On SIGTERM or SIGINT (or [`ShutdownHandle::shutdown`]) the worker stops claiming (a claim
/// in flight is awaited, at most [`Worker::claim_wait`], and the runs it brings are handed
/// back unstarted with `POST /flow-runs/{id}/release`), lets running runs finish within
/// [`Worker::grace`] (30 s), then cancels the rest as above and finishes them `Cancelled`,
/// flushes the reporter ([`crate::flush`]) and returns `Ok(())`. Nothing stays `Running`.
///
/// # Bounds
///
/// Every wait has a timeout: each request (15 s; a claim its long-poll + 15 s; a heartbeat a
/// third of the lease, at least 1 s), the cancel grace, the shutdown grace, the finish retries
/// (while the lease lasts), the registration retries (15 s). Every queue is bounded: the runs
/// held by the worker by its slots ([`Worker::slots`]), a claim by the free slots (at most
/// [`MAX_CLAIM_RUNS`]).
#[derive(Debug)]
pub struct Worker {
    slots: Option<usize>,
    grace: Duration,
    cancel_grace: Duration,
    claim_wait: Duration,
    api_url: Option<String>,
    api_key: Option<ApiKey>,
    signals: bool,
    shutdown: ShutdownHandle,
}

impl Default for Worker {
    fn default() -> Worker {
        Worker::new()
    }
}

impl Worker {
    /// A worker with every option at its default.
    ///
    /// ```
    /// let worker = flowkit::Worker::new();
    /// # let _ = worker;
    /// ```
    pub fn new() -> Worker {
        Worker {
            slots: None,
            grace: DEFAULT_GRACE,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            claim_wait: DEFAULT_CLAIM_WAIT,
            api_url: None,
            api_key: None,
            signals: true,
            shutdown: ShutdownHandle::default(),
        }
    }

    /// Runs at most `n` runs at once (1 to [`MAX_CLAIM_RUNS`]; default [`DEFAULT_SLOTS`], or
    /// the sum of the deployments' limits when each has one).
    ///
    /// ```
    /// let worker = flowkit::Worker::new().slots(16);
    /// # let _ = worker;
    /// ```
    pub fn slots(mut self, n: usize) -> Worker {
        self.slots = Some(n);
        self
    }

    /// How long running runs may take to finish once a shutdown is asked for, before they
    /// are cancelled (default [`DEFAULT_GRACE`]).
    ///
    /// ```
    /// let worker = flowkit::Worker::new().grace(std::time::Duration::from_secs(120));
    /// # let _ = worker;
    /// ```
    pub fn grace(mut self, grace: Duration) -> Worker {
        self.grace = grace;
        self
    }

    /// How long a cancelled run has to stop before its task is aborted (default
    /// [`DEFAULT_CANCEL_GRACE`]).
    ///
    /// ```
    /// let worker = flowkit::Worker::new().cancel_grace(std::time::Duration::from_secs(2));
    /// # let _ = worker;
    /// ```
    pub fn cancel_grace(mut self, grace: Duration) -> Worker {
        self.cancel_grace = grace;
        self
    }

    /// How long one claim waits on the server for a run (whole seconds, at most 30; default
    /// [`DEFAULT_CLAIM_WAIT`]). A shutdown waits for the claim in flight, so a shorter wait
    /// shuts down sooner, at the cost of more requests while idle.
    ///
    /// ```
    /// let worker = flowkit::Worker::new().claim_wait(std::time::Duration::from_secs(5));
    /// # let _ = worker;
    /// ```
    pub fn claim_wait(mut self, wait: Duration) -> Worker {
        self.claim_wait = wait.min(Duration::from_secs(u64::from(MAX_CLAIM_WAIT_SECONDS)));
        self
    }

    /// The server to register with and claim from, instead of `FLOWKIT_API_URL`. When nothing
    /// has run in this process yet, events are reported there too.
    ///
    /// ```
    /// let worker = flowkit::Worker::new().api_url("http://127.0.0.1:4200");
    /// # let _ = worker;
    /// ```
    pub fn api_url(mut self, url: impl Into<String>) -> Worker {
        self.api_url = Some(url.into());
        self
    }

    /// The API key (scopes `report,worker`), instead of `FLOWKIT_API_KEY`.
    ///
    /// ```
    /// let worker = flowkit::Worker::new().api_key("a-secret-of-16-chars-or-more");
    /// # let _ = worker;
    /// ```
    pub fn api_key(mut self, key: impl Into<String>) -> Worker {
        self.api_key = Some(ApiKey::new(key.into()));
        self
    }

    /// Whether SIGTERM and SIGINT shut the worker down (default `true`). Turn it off when
    /// your program handles signals itself and stops the worker with its
    /// [`shutdown_handle`](Worker::shutdown_handle).
    ///
    /// ```
    /// let worker = flowkit::Worker::new().handle_signals(false);
    /// # let _ = worker;
    /// ```
    pub fn handle_signals(mut self, on: bool) -> Worker {
        self.signals = on;
        self
    }

    /// A handle that shuts this worker down as SIGTERM does.
    ///
    /// ```
    /// let worker = flowkit::Worker::new();
    /// let handle = worker.shutdown_handle();
    /// handle.shutdown(); // `serve` stops claiming, lets runs finish, and returns
    /// ```
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Registers `deployments` and runs what others trigger until shut down (see [`Worker`]). Returns `Ok(())` after a shutdown once nothing
    /// it claimed is left running; an error when it cannot start or the server stops
    /// accepting it.
    pub async fn serve(
        self,
        deployments: impl IntoIterator<Item = Deployment>,
    ) -> Result<(), ServeError> {
        let deployments: Vec<Deployment> = deployments.into_iter().collect();
        if deployments.is_empty() {
            return Err(ServeError::NoDeployments);
        }
        let mut specs = Vec::with_capacity(deployments.len());
        let mut by_name: Deployments = HashMap::new();
        for deployment in deployments {
            let spec = deployment.spec()?;
            let key = (spec.flow.clone(), spec.name.clone());
            if by_name.contains_key(&key) {
                return Err(ServeError::Duplicate(format!("{}/{}", key.0, key.1)));
            }
            by_name.insert(key, Arc::new(deployment));
            specs.push(spec);
        }

        if let Some(url) = &self.api_url {
            // Report where the worker claims, when nothing has fixed the settings yet.
            let mut settings = config::Config::from_env();
            settings.api_url = Some(url.clone());
            if self.api_key.is_some() {
                settings.api_key = self.api_key.clone();
            }
            let _ = config::init(settings);
        }
        let settings = config::get();
        let url = self
            .api_url
            .clone()
            .or_else(|| settings.api_url.clone())
            .ok_or(ServeError::NoServer)?;
        let key = self.api_key.clone().or_else(|| settings.api_key.clone());
        if settings.api_url.as_deref() != Some(url.as_str()) {
            tracing::warn!(
                target: "flowkit",
                "flowkit worker: runs are claimed from {url} but their events are reported to {}: \
                 give the worker's URL in FLOWKIT_API_URL",
                settings.api_url.as_deref().unwrap_or("no server")
            );
        }
        crate::bus::start();

        let api = Api::new(&url, key.clone(), API_TIMEOUT).map_err(ServeError::Setup)?;
        register::register(&api, &url, &specs).await?;

        let worker = crate::ids::new_id();
        let served: Vec<Served> = specs
            .iter()
            .map(|s| Served::new(&s.flow, &s.name, &s.version))
            .collect();
        let held = Arc::new(Held::new());
        let heartbeat = heartbeat::Heartbeat::start(
            heartbeat::Identity {
                url: url.clone(),
                key,
                worker,
                worker_name: settings.worker.clone(),
                served: served.clone(),
            },
            Arc::clone(&held),
        )
        .map_err(ServeError::Setup)?;
        let signals = if self.signals {
            match shutdown::on_signals(self.shutdown.0.clone()) {
                Ok(task) => Some(task),
                Err(why) => {
                    heartbeat.stop().await;
                    return Err(ServeError::Setup(why));
                }
            }
        } else {
            None
        };

        let slots = self.slot_count(&specs);
        let runs = Arc::new(Runs {
            api: api.clone(),
            held,
            worker_name: settings.worker.clone(),
            cancel_grace: self.cancel_grace,
        });
        let claimer = Claimer {
            api,
            worker,
            worker_name: settings.worker.clone(),
            served,
            wait: self.claim_wait,
        };
        let slots = Arc::new(Semaphore::new(slots));
        let by_name = Arc::new(by_name);
        let mut tasks = JoinSet::new();
        let outcome = claimer
            .run(&slots, &runs, &by_name, &self.shutdown.0, &mut tasks)
            .await;
        self.drain(&mut tasks, &runs).await;
        heartbeat.stop().await;
        if let Some(signals) = signals {
            signals.abort();
        }
        crate::flush().await;
        outcome
    }

    fn slot_count(&self, specs: &[crate::DeploymentSpec]) -> usize {
        let limits: Option<u64> = specs
            .iter()
            .map(|s| s.concurrency_limit.map(u64::from))
            .sum();
        let default = limits.map_or(DEFAULT_SLOTS, |sum| sum as usize);
        self.slots
            .unwrap_or(default)
            .clamp(1, MAX_CLAIM_RUNS as usize)
    }

    /// Lets the runs in flight finish within the grace, then cancels the rest and waits for
    /// them to stop and be finished (bounded by the cancel grace and one lease).
    async fn drain(&self, tasks: &mut JoinSet<()>, runs: &Runs) {
        if tasks.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
        if tasks.is_empty() {
            return;
        }
        tracing::warn!(
            target: "flowkit",
            "flowkit worker: {} run(s) still running after the grace period of {}; cancelling them",
            tasks.len(),
            humantime::format_duration(self.grace)
        );
        runs.held.cancel_all(&format!(
            "cancelled: the worker shut down and the run did not finish within its grace period of {}",
            humantime::format_duration(self.grace)
        ));
        let bound = self.cancel_grace + runs.held.lease() + Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + bound;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {}
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
