//! The runtime's one HTTP layer, shared by the reporter and the notifications: how a client is
//! built, how a failure is described, and retries with the backoff of [`RetryPolicy`].

use crate::policy::retry::RetryPolicy;
use std::error::Error;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Longest time to open a connection, whatever the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is kept: shorter than the server's idle timeout (60 s by
/// default), so the client never reuses a connection the server is closing at that moment.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Not worth starting an attempt with less time than this left.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// A client whose every request gives up after `request_timeout` (connecting, after at most
/// [`CONNECT_TIMEOUT`]), so no caller depends on its own timer to stop waiting.
///
/// Without `tls`, the system's root certificates are not loaded (that takes milliseconds): for
/// a client that only ever talks plain `http://`; an `https://` request (a redirect) then fails.
pub(crate) fn client(request_timeout: Duration, tls: bool) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("flowkit/", env!("CARGO_PKG_VERSION")))
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(CONNECT_TIMEOUT))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tls_backend_preconfigured(tls_config(tls)?)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {}", describe(&e)))
}

/// TLS by rustls with the `ring` provider, passed to each client rather than installed as the
/// process's default provider, which belongs to the user's program. Certificates are checked
/// by the operating system's verifier (its root store); without `roots`, none is trusted.
fn tls_config(roots: bool) -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let mut config = if roots {
        builder
            .with_platform_verifier()
            .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    // HTTP/1.1 only: the client is built without HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What went wrong, with the error's causes, without the URL reqwest puts in its messages
/// (a webhook's URL is a secret).
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "cannot read the answer"
    } else {
        "request failed"
    };
    match err.source() {
        Some(cause) => format!("{what}: {}", error_chain(cause)),
        None => what.to_string(),
    }
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Waits between attempts: [`RetryPolicy::delay_before_retry`], capped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    max: Duration,
}

impl Backoff {
    /// `first`, doubling on every further failure, spread by `± jitter`, at most `max`.
    pub(crate) fn doubling(first: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff {
            policy: RetryPolicy {
                retries: u32::MAX,
                delay: first,
                backoff: 2.0,
                jitter,
            },
            max,
        }
    }

    /// The wait after `failures` consecutive failures (1 for the first).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        self.policy
            .delay_before_retry(failures, fastrand::f64())
            .min(self.max)
    }
}

/// Outcome of one attempt.
pub(crate) enum Attempt {
    Done,
    /// Failed; may be retried, after at least the given wait if the server asked for one.
    Retry(String, Option<Duration>),
    /// Failed in a way another attempt would not change.
    GiveUp(String),
}

/// How a [`with_retries`] ended.
pub(crate) struct Retried {
    /// `None` if an attempt succeeded; else why the last one failed (and why no more were made).
    pub failure: Option<String>,
    /// Attempts made.
    pub attempts: u32,
}

/// Makes up to `retries + 1` attempts, waiting [`Backoff::after`] (or longer if the server
/// asked) in between, all within `budget`: an attempt gets the time left as its timeout, and
/// none starts with less than [`MIN_ATTEMPT`] left. `on_retry(why, wait, attempts)` is told
/// before each wait.
pub(crate) async fn with_retries<F, Fut>(
    retries: u32,
    backoff: Backoff,
    budget: Duration,
    mut attempt: F,
    mut on_retry: impl FnMut(&str, Duration, u32),
) -> Retried
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let deadline = Instant::now() + budget;
    let mut attempts = 0u32;
    let mut last_error = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT {
            if attempts == 0 {
                last_error.push_str("no time left for a first attempt");
            } else {
                last_error.push_str("; out of time for another attempt");
            }
            break;
        }
        attempts += 1;
        let wait = match attempt(left).await {
            Attempt::Done => {
                return Retried {
                    failure: None,
                    attempts,
                };
            }
            Attempt::GiveUp(why) => {
                last_error = why;
                break;
            }
            Attempt::Retry(why, asked) => {
                last_error = why;
                backoff.after(attempts).max(asked.unwrap_or_default())
            }
        };
        if attempts > retries {
            break;
        }
        if Instant::now() + wait + MIN_ATTEMPT > deadline {
            last_error.push_str("; out of time for another attempt");
            break;
        }
        on_retry(&last_error, wait, attempts);
        tokio::time::sleep(wait).await;
    }
    Retried {
        failure: Some(last_error),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let b = Backoff::doubling(Duration::from_millis(250), Duration::from_secs(4), 0.0);
        let waits: Vec<u64> = (1..=6).map(|n| b.after(n).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(4));
        let jittered = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(60), 0.2);
        for _ in 0..100 {
            let d = jittered.after(1);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
    }

    #[test]
    fn errors_show_their_causes() {
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl Error for Wrap {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Wrap(std::io::Error::other("refused"))),
            "error sending request: refused"
        );
    }

    fn quick() -> Backoff {
        Backoff::doubling(Duration::from_millis(100), Duration::from_secs(1), 0.0)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_then_stops() {
        let calls = AtomicU32::new(0);
        let mut waits = Vec::new();
        let out = with_retries(
            5,
            quick(),
            Duration::from_secs(60),
            |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Attempt::Retry("503".into(), None)
                } else {
                    Attempt::Done
                }
            },
            |_, wait, _| waits.push(wait),
        )
        .await;
        assert!(out.failure.is_none());
        assert_eq!(out.attempts, 3);
        assert_eq!(
            waits,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_retry_count_on_give_up_and_within_the_budget() {
        let failing = |_| async { Attempt::Retry("503".into(), None) };
        let out = with_retries(2, quick(), Duration::from_secs(60), failing, |_, _, _| {}).await;
        assert_eq!((out.attempts, out.failure.as_deref()), (3, Some("503")));

        let out = with_retries(
            9,
            quick(),
            Duration::from_secs(60),
            |_| async { Attempt::GiveUp("404".into()) },
            |_, _, _| {},
        )
        .await;
        assert_eq!((out.attempts, out.failure.as_deref()), (1, Some("404")));

        // The server asks for 10 s; only 1 s is left.
        let asked = |_| async { Attempt::Retry("429".into(), Some(Duration::from_secs(10))) };
        let start = Instant::now();
        let out = with_retries(9, quick(), Duration::from_secs(1), asked, |_, _, _| {}).await;
        assert_eq!(out.attempts, 1);
        assert!(
            out.failure
                .is_some_and(|f| f.ends_with("out of time for another attempt"))
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
