//! Retention: runs received long enough ago are deleted with their events, fresh ones stay,
//! and a client's timestamps (which anyone with a report key can backdate) do not age a run.

use crate::fixtures::{event, flow_run, state};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::wire::{RunKind, StateType};

on_every_backend!(
    retention_deletes_old_runs,
    a_backdated_event_does_not_age_its_run,
);

const THIRTY_DAYS: std::time::Duration = std::time::Duration::from_secs(30 * 86400);

async fn retention_deletes_old_runs(server: &TestServer) {
    let old = flow_run("old", 2, Utc::now() - Duration::days(40));
    server.ingest(&old.events).await;
    // The sweep runs 30 days after this instant (its clock is given, not waited for): what
    // the server received before it is old, what it received after is fresh, whatever the
    // events' timestamps say.
    let received_between = Utc::now();
    let fresh = flow_run("fresh", 2, Utc::now() - Duration::days(1));
    server.ingest(&fresh.events).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let later = received_between + Duration::days(30);
    let deleted = flowkit_server::retention::sweep_at(&server.store, THIRTY_DAYS, later, &shutdown)
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

/// One state event dated 2000 for a current flow run (and one for a task of it) is accepted
/// into its history, but the next sweep keeps the flow run with its tasks and logs.
async fn a_backdated_event_does_not_age_its_run(server: &TestServer) {
    let run = flow_run("current", 2, Utc::now() - Duration::minutes(5));
    server.ingest(&run.events).await;
    let y2k = DateTime::from_timestamp(946_771_200, 0).expect("2000-01-02");
    let forged = [
        event(
            run.flow,
            RunKind::Flow,
            "current",
            run.flow,
            None,
            y2k,
            state(StateType::Running, None),
        ),
        event(
            run.tasks[0],
            RunKind::Task,
            "step_0",
            run.flow,
            Some(run.flow),
            y2k,
            state(StateType::Running, None),
        ),
    ];
    let answer = server.ingest(&forged).await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let deleted =
        flowkit_server::retention::sweep_at(&server.store, THIRTY_DAYS, Utc::now(), &shutdown)
            .await
            .expect("sweep");
    assert_eq!(deleted, 0, "the sweep deleted {deleted} runs");
    let flow = server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(flow["state"], "Completed", "{flow}");
    let tasks = server
        .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
        .await;
    assert_eq!(tasks["items"].as_array().map(Vec::len), Some(2), "{tasks}");
    let logs = server
        .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
        .await;
    assert_eq!(logs["items"].as_array().map(Vec::len), Some(3), "{logs}");
}
