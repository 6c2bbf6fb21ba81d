//! Server-side alerts: a background task on every replica (no leader) that turns state changes
//! into messages of the alert rules and sends them.
//!
//! **How state changes are noticed, without slowing ingestion.** Database triggers on `runs`
//! (migration 0009) append a row to `alert_events` when a flow run enters `Failed`, `Crashed`,
//! `TimedOut`, `Late`, `Expired` or `Cancelled` — in the transaction of whatever changed the
//! run (ingestion, the reaper, the scheduler, cancel, finish), so a change is never lost, even
//! if the server stops right after, and no code path has to remember to report it. That is
//! the only work on the write path: one small insert per such change, and none at all while
//! no rule exists. Everything else happens here, every [`TICK`]:
//!
//! 1. **Match** ([`crate::store::Store::match_alerts`]):
//!    up to [`EVENTS_PER_TICK`] waiting changes, oldest first, are matched against the rules
//!    (states, flow, deployment, tag); a match creates one durable delivery per target, or —
//!    within the rule's quiet period for the same flow and deployment — is counted as held
//!    back, and the next message says how many.
//! 2. **Worker absences**: a rule with `worker_absent_for` fires once per absence when its
//!    workers' last heartbeat is that old.
//! 3. **Send**: up to [`DELIVERIES_PER_TICK`] due deliveries are claimed (a lease of
//!    [`CLAIM_LEASE`]: PostgreSQL `FOR UPDATE SKIP LOCKED`, SQLite's single writer, so two
//!    replicas never send one at once) and sent at once, each cut off after [`SEND_TIMEOUT`].
//!    Each attempt is recorded with its status code or error; a failure is retried after
//!    [`backoff`] (1 min doubling by default, `--alert-retry-after`; at most 6 h),
//!    [`MAX_ATTEMPTS`] attempts in all (the last about 8.5 h after the first with the
//!    default), then the delivery is `failed`. A `4xx` other than 408,
//!    425 and 429 would not change and fails at once.
//!
//! Delivered and failed deliveries are deleted [`KEEP_DELIVERIES`] after their creation
//! (at most [`PRUNE_PER_TICK`] per tick), so the table stays bounded.
//!
//! All of it is in the database, so a restart (or another replica) picks up where this one
//! stopped. [`tick`] takes the clock as an argument, so tests drive quiet periods and
//! backoff without sleeping.

use crate::AppState;
use crate::store::StoreError;
use crate::store::alerts::{AttemptOutcome, Claimed, MatchOrder};
use chrono::{DateTime, Utc};
use flowkit_wire::api::alerts::{DeliveryStatus, MAX_ATTEMPTS, TargetKind};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often every replica matches and sends.
pub const TICK: Duration = Duration::from_secs(1);
/// The most state changes one tick matches (batches of [`EVENTS_PER_BATCH`]); the rest wait
/// for the next tick.
pub const EVENTS_PER_TICK: u64 = 5000;
/// State changes matched per transaction. On SQLite each batch is one turn of the single
/// writer, taken between ingestion's turns: small, so ingestion never waits long behind it.
pub const EVENTS_PER_BATCH: u32 = 200;
/// The most deliveries one tick sends (all at once).
pub const DELIVERIES_PER_TICK: u32 = 20;
/// One request's time limit.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is kept from other replicas: longer than [`SEND_TIMEOUT`].
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// The wait before the second attempt; it doubles for every further one, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// Delivered and failed deliveries are kept this long (with their attempts), then deleted.
pub const KEEP_DELIVERIES: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most old deliveries one tick deletes.
pub const PRUNE_PER_TICK: u32 = 1000;
/// The longest part of a receiver's answer recorded with a failed attempt, in characters.
pub const MAX_ERROR_CHARS: usize = 300;

/// What a tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// State changes matched.
    pub events: u64,
    /// Deliveries created (state changes and worker absences).
    pub created: u64,
    /// Messages held back by quiet periods.
    pub suppressed: u64,
    /// Deliveries sent and answered 2xx.
    pub delivered: u64,
    /// Attempts that failed (to be retried, or failed for good).
    pub failed_attempts: u64,
    /// Finished deliveries older than [`KEEP_DELIVERIES`] deleted.
    pub pruned: u64,
}

/// The wait after attempt `attempt` (from 1) failed: `first` (`--alert-retry-after`, by
/// default [`FIRST_BACKOFF`]) doubling, at most [`MAX_BACKOFF`].
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// The base of run links: `--public-url`, else the bind address.
fn base_url(state: &AppState) -> String {
    state
        .settings()
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", crate::config::DEFAULT_BIND))
}

/// Matches, notices worker absences and sends what is due, as of `now`.
pub async fn tick(state: &AppState, now: DateTime<Utc>) -> Result<TickOutcome, StoreError> {
    let mut outcome = TickOutcome::default();
    let store = state.store();
    while outcome.events < EVENTS_PER_TICK {
        let matched = store
            .match_alerts(MatchOrder {
                now,
                base_url: base_url(state),
                limit: EVENTS_PER_BATCH,
            })
            .await?;
        outcome.events += matched.events;
        outcome.created += matched.deliveries;
        outcome.suppressed += matched.suppressed;
        if matched.events < u64::from(EVENTS_PER_BATCH) {
            break;
        }
    }
    let keep = chrono::Duration::from_std(KEEP_DELIVERIES).unwrap_or(chrono::Duration::MAX);
    outcome.pruned = store
        .prune_alert_deliveries(now - keep, PRUNE_PER_TICK)
        .await?;
    let absences = store.notify_worker_absences(now).await?;
    outcome.created += absences.deliveries;
    let lease = chrono::Duration::from_std(CLAIM_LEASE).unwrap_or(chrono::Duration::MAX);
    let claimed = store
        .claim_alert_deliveries(now, DELIVERIES_PER_TICK, lease)
        .await?;
    let retry_after = state.settings().alert_retry_after;
    let sent =
        futures::future::join_all(claimed.into_iter().map(|c| send(c, now, retry_after))).await;
    for outcome_of_one in sent {
        let delivered = outcome_of_one.status == DeliveryStatus::Delivered;
        state.metrics().alert_attempt(delivered);
        if delivered {
            outcome.delivered += 1;
        } else {
            outcome.failed_attempts += 1;
            tracing::warn!(
                delivery = %outcome_of_one.id,
                attempt = outcome_of_one.attempt,
                status = ?outcome_of_one.status,
                error = outcome_of_one.error.as_deref().unwrap_or(""),
                "alert delivery attempt failed"
            );
        }
        store.record_alert_attempt(outcome_of_one).await?;
    }
    Ok(outcome)
}

/// One client for every alert (connection pools, TLS).
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("flowkit-server/", env!("CARGO_PKG_VERSION")))
                .timeout(SEND_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .tls_backend_preconfigured(tls_config()?)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// TLS by rustls with the `ring` provider (passed to the client, not installed process-wide);
/// certificates checked by the operating system's verifier.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether an answer with this status may be different next time.
fn worth_retrying(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429)
}

/// Sends one claimed delivery; says how it went and what comes next. Never fails.
async fn send(claimed: Claimed, now: DateTime<Utc>, retry_after: Duration) -> AttemptOutcome {
    let body = match claimed.target {
        TargetKind::Webhook => claimed.alert.webhook_json(),
        TargetKind::Slack => claimed.alert.slack_json(),
    };
    let (status_code, error, retry) = match client() {
        Err(why) => (None, Some(why), true),
        Ok(client) => match client.post(&claimed.url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                (Some(response.status().as_u16()), None, false)
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let snippet: String = text.trim().chars().take(MAX_ERROR_CHARS).collect();
                let why = if snippet.is_empty() {
                    format!("answered {status}")
                } else {
                    format!("answered {status}: {snippet}")
                };
                (Some(status.as_u16()), Some(why), worth_retrying(status))
            }
            // Never the URL: it is a secret.
            Err(e) if e.is_timeout() => (
                None,
                Some(format!("no answer within {}s", SEND_TIMEOUT.as_secs())),
                true,
            ),
            Err(e) if e.is_connect() => (None, Some("cannot connect".to_string()), true),
            Err(e) => (
                None,
                Some(format!("request failed: {}", e.without_url())),
                true,
            ),
        },
    };
    let (status, next_attempt) = if error.is_none() {
        (DeliveryStatus::Delivered, None)
    } else if retry && claimed.attempt < MAX_ATTEMPTS {
        let wait = chrono::Duration::from_std(backoff(retry_after, claimed.attempt))
            .unwrap_or(chrono::Duration::MAX);
        (DeliveryStatus::Pending, Some(now + wait))
    } else {
        (DeliveryStatus::Failed, None)
    };
    AttemptOutcome {
        id: claimed.id,
        attempt: claimed.attempt,
        at: now,
        status_code,
        error,
        status,
        next_attempt,
    }
}

/// Starts the alerts task of `state`'s server; it stops when the server shuts down.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown_signal();
        loop {
            if let Err(err) = tick(&state, Utc::now()).await {
                tracing::warn!(error = %err, "alerts tick failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_bound_and_the_attempts_span_hours() {
        assert_eq!(backoff(FIRST_BACKOFF, 1), Duration::from_secs(60));
        assert_eq!(backoff(FIRST_BACKOFF, 2), Duration::from_secs(120));
        assert_eq!(backoff(FIRST_BACKOFF, 30), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(1), 3), Duration::from_secs(4));
        let total: Duration = (1..MAX_ATTEMPTS).map(|n| backoff(FIRST_BACKOFF, n)).sum();
        assert!(total > Duration::from_secs(8 * 3600), "{total:?}");
        assert!(total < Duration::from_secs(24 * 3600), "{total:?}");
        assert!(CLAIM_LEASE > SEND_TIMEOUT);
    }
}
