//! Capturing `tracing` events inside a run as that run's logs. (Being written.)

use std::future::Future;

/// Wraps a root run's future so that `tracing` events emitted inside any run it starts are
/// captured, while still reaching the user's own subscriber.
pub(crate) fn capture<F: Future>(fut: F) -> F {
    fut
}
