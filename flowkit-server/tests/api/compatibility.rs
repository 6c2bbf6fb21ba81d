//! A newer client's events: what this server does not know is not a reason to lose the run.

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

on_every_backend!(a_newer_clients_events_are_kept,);

/// This server as the "old server" of a newer client: fields, state types and event kinds it
/// does not know are not a reason to lose the run.
async fn a_newer_clients_events_are_kept(server: &TestServer) {
    let run = flow_run("from_the_future", 1, Utc::now() - Duration::minutes(1));
    let mut batch: Vec<Value> = run
        .events
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    for event in &mut batch {
        event["trace_id"] = json!("4bf92f3577b34da6a3ce929d0e0e4736");
        if event["details"].is_object() {
            event["details"]["priority"] = json!("high");
        }
    }
    // A later state type this server does not know, as the flow's last state.
    let mut later = batch[batch.len() - 1].clone();
    later["id"] = json!(Uuid::now_v7());
    later["timestamp"] = json!(Utc::now());
    later["state"] = json!({"type": "Hibernating", "message": "asked by ops", "by": "ops"});
    later["run_id"] = json!(run.flow);
    later["run_kind"] = json!("flow");
    later.as_object_mut().expect("object").remove("details");
    // A kind of event this server does not know: acknowledged, not stored.
    let mut record = batch[0].clone();
    record["id"] = json!(Uuid::now_v7());
    record["kind"] = json!("checkpoint");
    record["states"] = json!([{"type": "Completed"}]);
    batch.push(later);
    batch.push(record);

    let reply = server.post_json("/api/v1/events", &batch).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"accepted": run.events.len() + 1, "duplicates": 0, "ignored": 1, "rejected": []})
    );
    let flow = server
        .get_ok(&format!("/api/v1/flow-runs/{}", run.flow))
        .await;
    assert_eq!(flow["state"], "Unknown", "{flow}");
    assert_eq!(flow["state_message"], "asked by ops");
    let health = server.get_ok("/api/v1/health").await;
    assert_eq!(health["event_kinds"], json!(["state", "log", "run_record"]));
    assert_eq!(health["api_versions"], json!(["v1"]));
}
