//! When a worker stops: on SIGTERM or SIGINT (Ctrl-C), or when its [`ShutdownHandle`] says so.

use tokio_util::sync::CancellationToken;

/// Stops a worker from code (a test, an admin endpoint of your service), as SIGTERM does:
/// it stops claiming, lets running runs finish within the grace period, then cancels the rest.
/// Get one from [`Worker::shutdown_handle`](crate::Worker::shutdown_handle); clones stop the
/// same worker.
///
/// ```
/// let worker = flowkit::Worker::new();
/// let handle = worker.shutdown_handle();
/// assert!(!handle.is_shutting_down());
/// handle.shutdown();
/// assert!(handle.is_shutting_down());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ShutdownHandle(pub(crate) CancellationToken);

impl ShutdownHandle {
    /// Asks the worker to shut down (idempotent).
    pub fn shutdown(&self) {
        self.0.cancel();
    }

    /// Whether shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// Triggers `token` on the first SIGTERM or SIGINT. Returns the task listening, to abort when
/// the worker is done.
pub(crate) fn on_signals(token: CancellationToken) -> Result<tokio::task::JoinHandle<()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
        Ok(tokio::spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(target: "flowkit", "flowkit worker: {which}: shutting down");
            token.cancel();
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(target: "flowkit", "flowkit worker: Ctrl-C: shutting down");
                token.cancel();
            }
        }))
    }
}
