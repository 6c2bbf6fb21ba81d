//! `GET /api/v1/metrics` (scope `read`): the server's metrics in the Prometheus text format
//! (0.0.4), for a platform team's scraper. Counters are per replica, since it started
//! ([`crate::metrics`]): events ingested by outcome, batches, ingest refusals (memory budget
//! full), ingest latency, reporter drops reported, runs claimed, lease expiries. Gauges: the
//! ingest bytes in flight and the budget, live streams open, and flow runs by latest state
//! over the last 24 hours, from the database (the `/api/stats` query, bounded to that window
//! and shared with it for a second); the API keys accepted, by source (startup, stored).

use crate::AppState;
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::metrics::{family, gauge};
use crate::stats_cache::StatsKey;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flowkit_wire::state::StateType;
use std::fmt::Write as _;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The server's metrics.
#[utoipa::path(
    get,
    path = "/api/v1/metrics",
    tag = "server",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format 0.0.4: `flowkit_events_total{outcome}`, `flowkit_ingest_batches_total`, `flowkit_ingest_refused_total`, `flowkit_ingest_duration_seconds` (histogram), `flowkit_ingest_memory_in_flight_bytes`, `flowkit_ingest_memory_capacity_bytes`, `flowkit_reporter_dropped_events_total`, `flowkit_streams_open`, `flowkit_stream_changes_serialized_total`, `flowkit_runs_claimed_total`, `flowkit_lease_expiries_total`, `flowkit_alert_deliveries_total`, `flowkit_alert_delivery_failures_total` (counters per replica, since it started), `flowkit_api_keys{source}` (startup keys of this replica, active stored keys) and `flowkit_flow_runs{state}` (flow runs created in the last 24 hours by latest state, from the database)", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let recent = state
        .stats_cache()
        .get_or_compute(StatsKey::Day, || {
            crate::api::stats::count(&state, None, None, 1)
        })
        .await?;
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "flowkit_flow_runs",
        "gauge",
        "Flow runs created in the last 24 hours, by latest state (from the database).",
    );
    for s in StateType::ALL {
        if s == StateType::Unknown {
            continue;
        }
        let n = recent.totals.get(s.as_str()).copied().unwrap_or(0);
        let _ = writeln!(out, "flowkit_flow_runs{{state=\"{}\"}} {n}", s.as_str());
    }
    state.metrics().render(&mut out);
    let budget = state.ingest_budget();
    gauge(
        &mut out,
        "flowkit_ingest_memory_in_flight_bytes",
        "Bytes of ingest request bodies held now (bounded by --ingest-memory).",
        budget.in_flight() as f64,
    );
    gauge(
        &mut out,
        "flowkit_ingest_memory_capacity_bytes",
        "The ingest memory budget (--ingest-memory).",
        budget.capacity() as f64,
    );
    let streams = state.live_streams();
    gauge(
        &mut out,
        "flowkit_streams_open",
        "Live streams (GET /api/v1/stream) open on this replica.",
        streams.open as f64,
    );
    family(
        &mut out,
        "flowkit_stream_changes_serialized_total",
        "counter",
        "Run changes serialized for the live streams: once per change, however many streams \
         carry it.",
    );
    let _ = writeln!(
        out,
        "flowkit_stream_changes_serialized_total {}",
        streams.changes_serialized
    );
    let stored = match state.key_ring().keys(state.store()).await {
        Ok(keys) => keys.len(),
        Err(_) => state.key_ring().rows().len(),
    };
    family(
        &mut out,
        "flowkit_api_keys",
        "gauge",
        "API keys this replica accepts, by source: startup (--api-key flags of this replica) \
         and stored (created at runtime and not revoked, as last read from the database).",
    );
    let _ = writeln!(
        out,
        "flowkit_api_keys{{source=\"startup\"}} {}",
        state.settings().api_keys.len()
    );
    let _ = writeln!(out, "flowkit_api_keys{{source=\"stored\"}} {stored}");
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
