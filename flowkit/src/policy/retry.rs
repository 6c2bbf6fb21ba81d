//! The retry policy: how many attempts a run gets and how long it waits between them.

use std::time::Duration;

/// Longest delay between two attempts, whatever the backoff says: one day.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How a run is retried.
///
/// The delay before retry `n` (1-based) is `delay × backoff^(n-1)`, then spread uniformly by
/// `± jitter` of itself, and capped at one day.
///
/// ```
/// use flowkit::RetryPolicy;
/// use std::time::Duration;
/// let p = RetryPolicy { retries: 3, delay: Duration::from_millis(500), backoff: 2.0, jitter: 0.0 };
/// assert_eq!(p.delay_before_retry(1, 0.5), Duration::from_millis(500));
/// assert_eq!(p.delay_before_retry(3, 0.5), Duration::from_millis(2000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt: a run gets at most `retries + 1` attempts.
    pub retries: u32,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay for every further retry (1.0: constant delay).
    pub backoff: f64,
    /// Fraction of the delay by which it is randomly spread (0.1: ±10%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            delay: Duration::ZERO,
            backoff: 1.0,
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry), given a uniform random
    /// number `unit` in `[0, 1)` that picks the point inside the jitter band.
    pub fn delay_before_retry(&self, retry: u32, unit: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(1_000) as i32;
        let backoff = if self.backoff.is_finite() && self.backoff > 0.0 {
            self.backoff
        } else {
            1.0
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let base = self.delay.as_secs_f64() * backoff.powi(exponent);
        let spread = base * (1.0 + jitter * (2.0 * unit - 1.0));
        let max = MAX_RETRY_DELAY.as_secs_f64();
        if !spread.is_finite() || spread >= max {
            MAX_RETRY_DELAY
        } else {
            Duration::from_secs_f64(spread.max(0.0))
        }
    }

    /// The range `[low, high]` the delay before retry `retry` always falls into.
    pub fn delay_bounds(&self, retry: u32) -> (Duration, Duration) {
        (
            self.delay_before_retry(retry, 0.0),
            self.delay_before_retry(retry, 1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(delay_ms: u64, backoff: f64, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            delay: Duration::from_millis(delay_ms),
            backoff,
            jitter,
        }
    }

    #[test]
    fn exponential_without_jitter() {
        let p = policy(100, 3.0, 0.0);
        let got: Vec<_> = (1..=4).map(|n| p.delay_before_retry(n, 0.3)).collect();
        let want: Vec<_> = [100, 300, 900, 2700]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn jitter_band_edges() {
        let p = policy(1000, 1.0, 0.1);
        assert_eq!(
            p.delay_bounds(1),
            (Duration::from_millis(900), Duration::from_millis(1100))
        );
    }

    #[test]
    fn huge_backoff_is_capped() {
        let p = policy(1000, 10.0, 0.0);
        assert_eq!(p.delay_before_retry(400, 0.5), MAX_RETRY_DELAY);
    }

    proptest! {
        #[test]
        fn delay_stays_in_bounds(delay_ms in 0u64..100_000, backoff in 0.0f64..10.0,
                                 jitter in 0.0f64..1.0, retry in 1u32..50, unit in 0.0f64..1.0) {
            let p = policy(delay_ms, backoff, jitter);
            let d = p.delay_before_retry(retry, unit);
            let (lo, hi) = p.delay_bounds(retry);
            prop_assert!(lo <= d && d <= hi, "{lo:?} <= {d:?} <= {hi:?}");
            prop_assert!(d <= MAX_RETRY_DELAY);
        }
    }
}
