//! The counters of `GET /api/v1/metrics` (Prometheus text format), kept in memory per replica
//! with atomics: each replica counts what it did since it started (Prometheus sums replicas).
//! Runs by state come from the database when the metrics are read (see
//! [`crate::api::metrics`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the buckets of the ingest latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What this replica counted since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    events_accepted: AtomicU64,
    events_duplicate: AtomicU64,
    events_rejected: AtomicU64,
    events_ignored: AtomicU64,
    batches: AtomicU64,
    ingest_refused: AtomicU64,
    reporter_drops: AtomicU64,
    runs_claimed: AtomicU64,
    lease_expiries: AtomicU64,
    alert_deliveries: AtomicU64,
    alert_failures: AtomicU64,
    latency: Histogram,
}

/// A Prometheus histogram of durations: a count per bucket (not cumulative here), the sum in
/// microseconds and the count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Metrics {
    /// An ingested batch: its events stored, duplicates, rejected and ignored, and how long
    /// its store write took.
    pub fn batch(
        &self,
        accepted: usize,
        duplicates: usize,
        rejected: usize,
        ignored: usize,
        took: Duration,
    ) {
        add(&self.events_accepted, accepted);
        add(&self.events_duplicate, duplicates);
        add(&self.events_rejected, rejected);
        add(&self.events_ignored, ignored);
        add(&self.batches, 1);
        self.latency.observe(took);
    }

    /// A batch refused because the ingest memory budget was full.
    pub fn ingest_refused(&self) {
        add(&self.ingest_refused, 1);
    }

    /// A reporter said it dropped `events`.
    pub fn reporter_drops(&self, events: u64) {
        self.reporter_drops.fetch_add(events, Ordering::Relaxed);
    }

    /// A claim leased `runs` runs.
    pub fn claimed(&self, runs: usize) {
        add(&self.runs_claimed, runs);
    }

    /// The reaper decided `runs` runs whose lease expired.
    pub fn lease_expiries(&self, runs: usize) {
        add(&self.lease_expiries, runs);
    }

    /// Counts one attempt at sending an alert: delivered (2xx) or not.
    pub fn alert_attempt(&self, delivered: bool) {
        if delivered {
            add(&self.alert_deliveries, 1);
        } else {
            add(&self.alert_failures, 1);
        }
    }

    /// The counters in Prometheus text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            out,
            "flowkit_events_total",
            "counter",
            "Events received in batches by this replica, by outcome: accepted (stored), \
             duplicate (already stored), rejected (invalid, or a stale lease), ignored (of an \
             unknown kind).",
        );
        for (outcome, counter) in [
            ("accepted", &self.events_accepted),
            ("duplicate", &self.events_duplicate),
            ("rejected", &self.events_rejected),
            ("ignored", &self.events_ignored),
        ] {
            let _ = writeln!(
                out,
                "flowkit_events_total{{outcome=\"{outcome}\"}} {}",
                get(counter)
            );
        }
        counter(
            out,
            "flowkit_ingest_batches_total",
            "Batches of events stored by this replica.",
            get(&self.batches),
        );
        counter(
            out,
            "flowkit_ingest_refused_total",
            "Batches refused with 503 because the ingest memory budget (--ingest-memory) was \
             full; the reporter retries them.",
            get(&self.ingest_refused),
        );
        family(
            out,
            "flowkit_ingest_duration_seconds",
            "histogram",
            "Time to store a batch of events (the database write).",
        );
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency.buckets) {
            cumulative += get(bucket);
            let _ = writeln!(
                out,
                "flowkit_ingest_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = get(&self.latency.count);
        let _ = writeln!(
            out,
            "flowkit_ingest_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "flowkit_ingest_duration_seconds_sum {}",
            get(&self.latency.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "flowkit_ingest_duration_seconds_count {count}");
        counter(
            out,
            "flowkit_alert_deliveries_total",
            "Alert messages this replica delivered (a 2xx answer).",
            get(&self.alert_deliveries),
        );
        counter(
            out,
            "flowkit_alert_delivery_failures_total",
            "Attempts at sending an alert message that failed on this replica (no answer, or \
             not 2xx); each is retried with backoff, up to 10 attempts.",
            get(&self.alert_failures),
        );
        counter(
            out,
            "flowkit_reporter_dropped_events_total",
            "Events reporters said they dropped (their spool was full), as reported to this \
             replica.",
            get(&self.reporter_drops),
        );
        counter(
            out,
            "flowkit_runs_claimed_total",
            "Deployed runs leased to workers by this replica's claims.",
            get(&self.runs_claimed),
        );
        counter(
            out,
            "flowkit_lease_expiries_total",
            "Runs whose worker's lease expired, decided by this replica's reaper (Crashed, \
             re-queued or Cancelled).",
            get(&self.lease_expiries),
        );
    }
}

/// `# HELP` and `# TYPE` of a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter without labels.
fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A gauge without labels.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.batch(3, 1, 2, 0, Duration::from_millis(2));
        metrics.batch(1, 0, 0, 0, Duration::from_secs(20));
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("flowkit_events_total{outcome=\"accepted\"} 4\n"),
            "{out}"
        );
        assert!(out.contains("flowkit_events_total{outcome=\"rejected\"} 2\n"));
        assert!(out.contains("flowkit_ingest_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(out.contains("flowkit_ingest_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(out.contains("flowkit_ingest_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(out.contains("flowkit_ingest_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(out.contains("flowkit_ingest_duration_seconds_count 2\n"));
    }
}
