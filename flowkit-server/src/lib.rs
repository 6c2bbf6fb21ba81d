//! The flowkit server: receives run events over HTTP, stores them (SQLite by default,
//! PostgreSQL to scale out) and shows them on a dashboard.
//!
//! - [`app`] builds the router from an [`AppState`]: tests call it in-process;
//! - [`run`] serves it on a listener until a shutdown future resolves, then drains in-flight
//!   requests and closes the store;
//! - [`serve`] is what `main` calls: connect, check, bind, run until SIGTERM or Ctrl-C;
//! - [`connections`] accepts and serves the connections, closing slow, stalled and idle
//!   clients (header, body and idle timeouts) and bounding how many are open;
//! - [`spawn`] runs one in a background task of this process (tests, benchmarks, embedding);
//! - [`store`] is the database behind it, [`config`] its flags, [`auth`] its API keys (those
//!   created at runtime are read by every replica through [`key_ring`]);
//! - the bodies of every route are [`wire::api`]'s, shared with every client.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = flowkit_server::Config::new("sqlite://flowkit.db");
//! flowkit_server::serve(config).await
//! # }
//! ```

pub mod alerts;
pub mod allowed_hosts;
pub(crate) mod api;
pub mod auth;
pub mod backfill;
pub mod config;
pub mod connections;
pub(crate) mod dashboard;
pub(crate) mod error;
pub mod ingest_budget;
pub mod key_ring;
pub mod metrics;
pub(crate) mod params;
pub mod reaper;
pub mod retention;
pub mod scheduler;
pub mod stats_cache;
pub mod store;
pub(crate) mod stream;
pub mod stream_slots;
pub mod wake;

use anyhow::Context as _;
use config::Settings;
use std::future::Future;
use std::sync::Arc;
use store::{Backend, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use api::app;
pub use config::Config;
pub use flowkit_wire as wire;

/// What every request handler shares: the store, the settings, the live-change channel and
/// the shutdown flag (which ends the live streams so a graceful shutdown can finish).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    settings: Settings,
    changes: stream::Changes,
    shutdown: watch::Sender<bool>,
    validators: params::Validators,
    wake: wake::Wakeups,
    ingest_budget: ingest_budget::IngestBudget,
    stream_slots: Arc<stream_slots::StreamSlots>,
    full_scans: tokio::sync::Semaphore,
    metrics: metrics::Metrics,
    stats_cache: stats_cache::StatsCache,
    key_ring: key_ring::KeyRing,
}

/// The live streams of this server, as counters (for `/metrics` and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveStreams {
    /// Streams open now.
    pub open: usize,
    /// Run changes serialized since start: one per change, however many streams carry it.
    pub changes_serialized: u64,
}

impl AppState {
    /// State over an open store.
    pub fn new(store: Arc<Store>, settings: Settings) -> AppState {
        let changes = stream::Changes::new(settings.stream_capacity);
        AppState {
            inner: Arc::new(Inner {
                store,
                changes,
                shutdown: watch::Sender::new(false),
                validators: params::Validators::default(),
                wake: wake::Wakeups::default(),
                ingest_budget: ingest_budget::IngestBudget::new(settings.ingest_memory),
                metrics: metrics::Metrics::default(),
                full_scans: tokio::sync::Semaphore::new(api::full_scans::FULL_SCANS_AT_ONCE),
                stats_cache: stats_cache::StatsCache::new(settings.stats_ttl),
                key_ring: key_ring::KeyRing::default(),
                stream_slots: Arc::new(stream_slots::StreamSlots::new(
                    settings.max_streams,
                    settings.max_streams_per_key,
                )),
                settings,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The live-change channel.
    pub(crate) fn changes(&self) -> &stream::Changes {
        &self.inner.changes
    }

    /// What this replica counted (`/api/v1/metrics`).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The stored API keys as this replica knows them.
    pub fn key_ring(&self) -> &key_ring::KeyRing {
        &self.inner.key_ring
    }

    /// The slots of listings that may scan every run.
    pub(crate) fn full_scans(&self) -> &tokio::sync::Semaphore {
        &self.inner.full_scans
    }

    /// The recent answers of `/api/stats`.
    pub fn stats_cache(&self) -> &stats_cache::StatsCache {
        &self.inner.stats_cache
    }

    /// The bound on live streams.
    pub(crate) fn stream_slots(&self) -> &Arc<stream_slots::StreamSlots> {
        &self.inner.stream_slots
    }

    /// How many live streams are open, and how many changes they were sent (serialized once
    /// each).
    pub fn live_streams(&self) -> LiveStreams {
        LiveStreams {
            open: self.inner.stream_slots.open(),
            changes_serialized: self.inner.changes.serialized(),
        }
    }

    /// Compiled parameter schemas of deployment versions.
    pub(crate) fn validators(&self) -> &params::Validators {
        &self.inner.validators
    }

    /// The bytes of ingest bodies in flight (`--ingest-memory`).
    pub fn ingest_budget(&self) -> &ingest_budget::IngestBudget {
        &self.inner.ingest_budget
    }

    /// The wake-ups of long-polls (claims, result reads).
    pub fn wakeups(&self) -> &wake::Wakeups {
        &self.inner.wake
    }

    /// The store, shared.
    pub fn store_arc(&self) -> Arc<Store> {
        self.inner.store.clone()
    }

    /// Turns true when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Starts shutting down: live streams end, background tasks stop.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// Connects to the database (applying migrations), checks the configuration, binds
/// `config.bind` and serves until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.check()?;
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database_url)
            )
        })?;
    let store = Arc::new(store);
    let listener = match TcpListener::bind(config.bind).await {
        Ok(listener) => listener,
        Err(err) => {
            store.close().await;
            return Err(err).with_context(|| format!("cannot listen on {}", config.bind));
        }
    };
    let stored_keys = store.active_api_keys().await.map(|keys| keys.len());
    match (config.settings.api_keys.len(), &stored_keys) {
        (0, Ok(0)) => tracing::warn!(
            "no API key: every request is allowed (this server listens on loopback only). \
             Keys are required as soon as one exists: create the first with \
             `flowkit keys create NAME --scope admin` (or POST /api/v1/keys)"
        ),
        (startup, Ok(stored)) => tracing::info!(
            startup_keys = startup,
            stored_keys = stored,
            "API keys are required"
        ),
        (startup, Err(e)) => tracing::warn!(
            startup_keys = startup,
            error = %e,
            "cannot read the stored API keys yet"
        ),
    }
    tracing::info!(
        address = %config.bind,
        database = store.backend_name(),
        api_keys = config.settings.api_keys.len(),
        retention = %config.retention.map_or("off".to_string(), |d| humantime::format_duration(d).to_string()),
        "flowkit-server listening on http://{}",
        config.bind
    );
    run(listener, store, &config, shutdown_signal()).await
}

/// Serves [`app`] on `listener` until `shutdown` resolves; then stops accepting connections,
/// closes the idle ones, ends the live streams, lets in-flight requests finish (at most
/// `config.shutdown_timeout`) and closes the store, so every acknowledged batch is committed. Also runs the retention
/// task (old runs when `config.retention` is set, expired idempotency keys always), the
/// reaper of expired leases, the scheduler of deployments' schedules and the alerts' matcher
/// and sender ([`alerts`]).
pub async fn run(
    listener: TcpListener,
    store: Arc<Store>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut settings = config.settings.clone();
    settings.allowed_hosts = settings.allowed_hosts.with_bind(listener.local_addr()?);
    if settings.public_url.is_none() {
        settings.public_url = Some(format!("http://{}", listener.local_addr()?));
    }
    let state = AppState::new(store.clone(), settings);
    let retention = retention::spawn(store.clone(), config.retention, state.shutdown_signal());
    let reaper = reaper::spawn(state.clone());
    let scheduler = scheduler::spawn(state.clone());
    let alerts = alerts::spawn(state.clone());

    let (triggered_tx, mut triggered_rx) = watch::channel(false);
    let on_shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            state.begin_shutdown();
            triggered_tx.send_replace(true);
        }
    };
    // Slow, stalled and idle clients are closed by the accept loop's timeouts; see
    // `connections`.
    let server = connections::serve(
        listener,
        app(state.clone()),
        config.connections,
        triggered_rx.clone(),
    );
    let server = async move { tokio::join!(on_shutdown, server) };
    let grace = config.shutdown_timeout;
    tokio::select! {
        _ = server => {}
        _ = async {
            let _ = triggered_rx.wait_for(|t| *t).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("requests still running after {}; stopping anyway", humantime::format_duration(grace));
        }
    }
    state.begin_shutdown();
    retention.abort();
    let _ = retention.await;
    reaper.abort();
    let _ = reaper.await;
    scheduler.abort();
    let _ = scheduler.await;
    // The alerts task stops between ticks; a send in flight gets its timeout to finish.
    let mut alerts = alerts;
    if tokio::time::timeout(alerts::SEND_TIMEOUT, &mut alerts)
        .await
        .is_err()
    {
        alerts.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A server running inside this process, started by [`spawn`]: for tests, benchmarks and
/// programs that embed the server.
pub struct Spawned {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://ADDR`, what `FLOWKIT_API_URL` should say.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it gracefully (in-flight requests finish, the store closes) and waits for that.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the server task panicked")?
    }
}

/// Opens `config.database_url` (applying migrations) and serves on `listener` in a
/// background task until [`Spawned::stop`].
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let config = flowkit_server::config::Config::new("sqlite:///tmp/flowkit-demo.db");
/// let server = flowkit_server::spawn(listener, config).await?;
/// println!("report with FLOWKIT_API_URL={}", server.url());
/// server.stop().await
/// # }
/// ```
pub async fn spawn(listener: TcpListener, config: Config) -> anyhow::Result<Spawned> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database_url)
            )
        })?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(listener, Arc::new(store), &config, async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Spawned { addr, stop, task })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// The database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(super::redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            super::redact_url("sqlite://flowkit.db"),
            "sqlite://flowkit.db"
        );
    }
}
