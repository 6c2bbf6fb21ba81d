//! Retention: old runs are deleted with their events, fresh ones stay.

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};

on_every_backend!(retention_deletes_old_runs,);

async fn retention_deletes_old_runs(server: &TestServer) {
    let old = flow_run("old", 2, Utc::now() - Duration::days(40));
    let fresh = flow_run("fresh", 2, Utc::now() - Duration::days(1));
    server.ingest(&old.events).await;
    server.ingest(&fresh.events).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let deleted = flowkit_server::retention::sweep(
        &server.store,
        std::time::Duration::from_secs(30 * 86400),
        &shutdown,
    )
    .await
    .expect("sweep");
    assert!(deleted >= 1, "deleted {deleted}");
    assert_eq!(
        server
            .get(&format!("/api/flow-runs/{}", old.flow))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    server
        .get_ok(&format!("/api/flow-runs/{}", fresh.flow))
        .await;
    let logs = server
        .get_ok(&format!("/api/flow-runs/{}/logs", fresh.flow))
        .await;
    assert_eq!(logs["items"].as_array().map(Vec::len), Some(3));
    // The old run's events are gone too: sending them again stores them again.
    let again = server.ingest(&old.events).await;
    assert_eq!(again["duplicates"], 0, "{again}");
}
