//! The timeout policy: how long one attempt may run.

use std::time::Duration;

/// The error a run gets when an attempt exceeds its `timeout`.
///
/// A task with `timeout = "..."` must return an error type that implements
/// `From<flowkit::TimedOut>` (`anyhow::Error` and `Box<dyn Error>` do), so the caller can get
/// `Err(TimedOut.into())` unchanged from the last attempt.
///
/// ```
/// let err: anyhow::Error = flowkit::TimedOut { after: std::time::Duration::from_secs(30) }.into();
/// assert_eq!(err.to_string(), "timed out after 30s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {}", humantime::format_duration(*.after))]
pub struct TimedOut {
    /// The timeout that was exceeded.
    pub after: Duration,
}
