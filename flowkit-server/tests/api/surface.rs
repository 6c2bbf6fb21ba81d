//! The HTTP surface: malformed bodies, bad query parameters, unknown routes and methods, the
//! run page a notification links to.

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use chrono::Utc;
use flowkit_server::config::Settings;
use serde_json::{Value, json};
use uuid::Uuid;

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn malformed_and_misshapen_bodies() {
    let server = TestServer::sqlite_with(Settings {
        max_body: 64 * 1024,
        max_batch: 10,
        ..Settings::default()
    })
    .await;

    let malformed = server.post_raw("/api/events", "[{\"id\": ").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "invalid_json");

    let object = server.post_raw("/api/events", "{\"events\": []}").await;
    assert_eq!(object.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(object.error_code(), "invalid_body");
    assert!(
        object
            .error_message()
            .contains("expected a JSON array of events, got an object")
    );

    let string = server.post_raw("/api/events", "\"hello\"").await;
    assert_eq!(string.status, StatusCode::UNPROCESSABLE_ENTITY);

    let too_big = server
        .post_raw("/api/events", format!("[\"{}\"]", "x".repeat(70 * 1024)))
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.error_code(), "payload_too_large");

    let too_many = server
        .post_raw(
            "/api/events",
            serde_json::to_vec(&vec![1; 11]).expect("json"),
        )
        .await;
    assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_many.error_code(), "too_many_events");
    assert!(too_many.error_message().contains("at most 10"));
    assert!(
        too_many.error_message().starts_with("11 events"),
        "counted, not built"
    );
    // Exactly the bound is fine (a run of numbers: each element rejected on its own).
    let at_bound = server
        .post_raw(
            "/api/events",
            serde_json::to_vec(&vec![1; 10]).expect("json"),
        )
        .await;
    assert_eq!(at_bound.status, StatusCode::ACCEPTED);
    assert_eq!(at_bound.body["rejected"].as_array().map(Vec::len), Some(10));

    // No content type at all: a browser's cross-origin "simple" request looks like this.
    let untyped = server
        .request(
            Method::POST,
            "/api/events",
            Some(Body::from("[]")),
            None,
            None,
        )
        .await;
    assert_eq!(untyped.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let text = server
        .request(
            Method::POST,
            "/api/events",
            Some(Body::from("[]")),
            None,
            Some("text/plain"),
        )
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let empty = server.post_raw("/api/events", "[]").await;
    assert_eq!(empty.status, StatusCode::ACCEPTED);
    assert_eq!(
        empty.body,
        json!({"accepted": 0, "duplicates": 0, "rejected": []})
    );

    // Wrong types and missing fields: each event rejected on its own, naming the field. (Unknown
    // fields, state types and kinds are a newer client's: see `a_newer_clients_events_are_kept`.)
    let good = serde_json::to_value(&flow_run("f", 0, Utc::now()).events[0]).expect("json");
    let mut cases = Vec::new();
    for (field, value) in [
        ("id", json!(7)),
        ("run_id", json!("nope")),
        ("timestamp", json!("yesterday")),
        ("name", json!(["a"])),
        ("state", json!({"type": ["Bored"]})),
        ("kind", json!(null)),
        ("details", json!({"task_key": 5})),
    ] {
        let mut event = good.clone();
        event[field] = value;
        cases.push((field, event));
    }
    let mut no_name = good.clone();
    no_name.as_object_mut().expect("object").remove("name");
    cases.push(("name", no_name));
    let batch: Vec<&Value> = cases.iter().map(|(_, v)| v).collect();
    let reply = server.post_json("/api/events", &batch).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["accepted"], 0);
    let rejected = reply.body["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), cases.len());
    for ((field, _), rejection) in cases.iter().zip(rejected) {
        let message = rejection["error"]["message"].as_str().expect("message");
        assert!(message.contains(&format!("`{field}")), "{field}: {message}");
    }
    server.finish().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn bad_query_parameters_name_the_parameter() {
    let server = TestServer::sqlite().await;
    let flow = Uuid::now_v7();
    for (uri, parameter) in [
        ("/api/flow-runs?limit=0".to_string(), "limit"),
        ("/api/flow-runs?limit=501".to_string(), "limit"),
        ("/api/flow-runs?limit=ten".to_string(), "limit"),
        ("/api/flow-runs?state=Exploded".to_string(), "state"),
        (
            "/api/flow-runs?created_after=yesterday".to_string(),
            "created_after",
        ),
        (
            "/api/flow-runs?created_before=2026-13-01T00:00:00Z".to_string(),
            "created_before",
        ),
        ("/api/flow-runs?colour=red".to_string(), "colour"),
        (format!("/api/flow-runs/{flow}/logs?level=LOUD"), "level"),
        (format!("/api/flow-runs/{flow}/logs?run_id=abc"), "run_id"),
        ("/api/stats?buckets=0".to_string(), "buckets"),
        // A typed parameter given empty is not "absent": the schema says what it must be.
        (
            "/api/flow-runs?created_before=".to_string(),
            "created_before",
        ),
        ("/api/flow-runs?limit=".to_string(), "limit"),
        (format!("/api/flow-runs/{flow}/logs?level="), "level"),
        (format!("/api/flow-runs/{flow}/logs?level=Warn"), "level"),
        (format!("/api/flow-runs/{flow}/logs?run_id="), "run_id"),
        ("/api/stats?until=".to_string(), "until"),
        (format!("/api/flow-runs/{flow}/result?wait="), "wait"),
        ("/api/stats?since=soon".to_string(), "since"),
        (
            "/api/stats?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z".to_string(),
            "since",
        ),
    ] {
        let reply = server.get(&uri).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.body
        );
        assert!(
            reply.error_message().contains(parameter),
            "{uri}: {}",
            reply.error_message()
        );
    }
    server.finish().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::sqlite().await;
    let missing = server.get("/api/nothing-here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    let wrong_method = server
        .request(Method::DELETE, "/api/flow-runs", None, None, None)
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "method_not_allowed");
    let get_events = server.get("/api/events").await;
    assert_eq!(get_events.status, StatusCode::METHOD_NOT_ALLOWED);

    let home = server.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.content_type.starts_with("text/html"));
    server.finish().await;
}

/// The link a notification carries (`flowkit_wire::links::run_page`) is the dashboard page.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_run_page_link_answers_the_dashboard() {
    let server = TestServer::sqlite().await;
    let link = flowkit_wire::links::run_page("http://flowkit.example", Uuid::now_v7());
    let path = link.trim_start_matches("http://flowkit.example");
    let page = server.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "GET {path}");
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    // Not a run id: a JSON error (checked by the harness), not the page.
    let bad = server.get("/runs/not-a-run").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    server.finish().await;
}
