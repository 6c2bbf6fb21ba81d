//! `GET /api/v1/metrics`: the Prometheus text format, parsed, and its numbers move with what
//! the server does.

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use flowkit_server::config::Settings;
use http_body_util::BodyExt;
use std::collections::HashMap;
use tower::ServiceExt;

on_every_backend!(
    settings = flowkit_server::config::Settings {
        // Each read of the metrics counts the runs again.
        stats_ttl: std::time::Duration::ZERO,
        // Leases expire fast: the claims test lets one lapse.
        lease: std::time::Duration::from_secs(1),
        ..flowkit_server::config::Settings::default()
    };
    metrics_move_with_what_the_server_does,
    claims_and_lease_expiries_are_counted,
);

/// The samples of a Prometheus text exposition, by `name{labels}`; checks every line is a
/// comment or a sample, and every sample's family was declared with `# TYPE`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().expect("name").to_string());
            let kind = parts.next().expect("kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("a sample: name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let name = key.split('{').next().expect("name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE");
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "{key} twice"
        );
    }
    samples
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let reply = server.get_raw("/api/v1/metrics").await;
    assert_eq!(reply.0, StatusCode::OK);
    assert!(
        reply.1.starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.1
    );
    parse(&reply.2)
}

async fn metrics_move_with_what_the_server_does(server: &TestServer) {
    let before = scrape(server).await;
    for key in [
        "flowkit_events_total{outcome=\"accepted\"}",
        "flowkit_ingest_duration_seconds_count",
        "flowkit_ingest_duration_seconds_bucket{le=\"+Inf\"}",
        "flowkit_ingest_refused_total",
        "flowkit_ingest_memory_in_flight_bytes",
        "flowkit_ingest_memory_capacity_bytes",
        "flowkit_reporter_dropped_events_total",
        "flowkit_streams_open",
        "flowkit_stream_changes_serialized_total",
        "flowkit_runs_claimed_total",
        "flowkit_lease_expiries_total",
        "flowkit_flow_runs{state=\"Completed\"}",
        "flowkit_api_keys{source=\"startup\"}",
        "flowkit_api_keys{source=\"stored\"}",
    ] {
        assert!(before.contains_key(key), "{key} missing: {before:?}");
    }
    let run = flow_run("etl", 1, Utc::now());
    let events = run.events.len() as f64;
    server.ingest(&run.events).await;
    server.ingest(&run.events).await;
    let mut bad = serde_json::to_value(&run.events[..1]).expect("json");
    bad[0]["run_kind"] = serde_json::json!(7);
    let answer = server.post_json("/api/v1/events", &bad).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let reply = server
        .post_json(
            "/api/v1/reporter-drops",
            &serde_json::json!({"dropped": 5, "worker": "build-7:42"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    let after = scrape(server).await;
    let moved = |key: &str| after[key] - before[key];
    assert_eq!(moved("flowkit_events_total{outcome=\"accepted\"}"), events);
    assert_eq!(moved("flowkit_events_total{outcome=\"duplicate\"}"), events);
    assert_eq!(moved("flowkit_events_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(moved("flowkit_ingest_batches_total"), 3.0);
    assert_eq!(moved("flowkit_ingest_duration_seconds_count"), 3.0);
    assert_eq!(
        after["flowkit_ingest_duration_seconds_bucket{le=\"+Inf\"}"],
        after["flowkit_ingest_duration_seconds_count"]
    );
    assert_eq!(moved("flowkit_reporter_dropped_events_total"), 5.0);
    assert_eq!(moved("flowkit_flow_runs{state=\"Completed\"}"), 1.0);
    assert_eq!(after["flowkit_ingest_memory_in_flight_bytes"], 0.0);
}

impl TestServer {
    /// A GET answered with any content type: status, content type, body text.
    async fn get_raw(&self, uri: &str) -> (StatusCode, String, String) {
        let response = self
            .router()
            .oneshot(
                Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8(bytes.to_vec()).expect("text"),
        )
    }
}

/// Behind the `read` scope.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn metrics_need_the_read_scope() {
    let open = TestServer::sqlite().await;
    let keyed = open.with_settings(Settings {
        api_keys: flowkit_server::auth::ApiKeys::new(vec![
            "ci:ci-secret-0123456789abc:report".parse().expect("key"),
        ])
        .expect("keys"),
        ..Settings::default()
    });
    let reply = keyed.get("/api/v1/metrics").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = keyed
        .request(
            Method::GET,
            "/api/v1/metrics",
            None,
            Some("ci-secret-0123456789abc"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    open.finish().await;
}

/// A claim counts the runs it leased; the reaper counts the leases it found expired.
async fn claims_and_lease_expiries_are_counted(server: &TestServer) {
    let reply = server
        .post_json(
            "/api/v1/deployments",
            &serde_json::json!({
                "flow": "train", "name": "nightly", "flow_key": "m::train", "version": "v1",
                "parameter_schema": {"type": "object"}, "output_schema": {},
                "default_parameters": {}, "retries": 0,
            }),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    for _ in 0..2 {
        let reply = server
            .post_json(
                "/api/v1/deployments/train/nightly/runs",
                &serde_json::json!({"parameters": {}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let before = scrape(server).await;
    let worker = uuid::Uuid::now_v7();
    let reply = server
        .post_json(
            "/api/v1/workers/claim",
            &serde_json::json!({
                "worker": worker, "worker_name": "doomed:1",
                "deployments": [{"flow": "train", "name": "nightly", "version": "v1"}],
                "max_runs": 2, "wait_seconds": 0,
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["runs"].as_array().map(Vec::len), Some(2));
    let claimed = scrape(server).await;
    assert_eq!(
        claimed["flowkit_runs_claimed_total"] - before["flowkit_runs_claimed_total"],
        2.0
    );
    assert_eq!(
        claimed["flowkit_lease_expiries_total"],
        before["flowkit_lease_expiries_total"]
    );
    // The worker never heartbeats: once its one-second leases lapse, the reaper (the
    // background task's pass, run here) decides both runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut reaped = 0;
    while reaped < 2 {
        assert!(std::time::Instant::now() < deadline, "leases never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        reaped += flowkit_server::reaper::reap_now(&server.state)
            .await
            .expect("reap");
    }
    let after = scrape(server).await;
    assert_eq!(
        after["flowkit_lease_expiries_total"] - before["flowkit_lease_expiries_total"],
        2.0
    );
    assert_eq!(
        after["flowkit_runs_claimed_total"] - before["flowkit_runs_claimed_total"],
        2.0
    );
}
