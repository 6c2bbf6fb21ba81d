//! `flowkit::Client` against a real server: its answers as the wire types, its errors as
//! `RunError`s.

use crate::flows::{self, train};
use crate::harness::{ADMIN, READER, Server};
use flowkit::client::{PageRequest, RunFilter};
use flowkit::{Client, FlowSignature, RunError, StateType};
use flowkit_wire::api::deployments::TriggerRequest;
use flowkit_wire::api::error::ErrorCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_page_by_page() {
    let server = Server::start().await;
    for name in ["a", "b", "c"] {
        let spec = train::deployment(name).spec().expect("spec");
        server.register(&spec).await;
    }
    let client = server.client(READER);
    let first = client
        .deployments(&PageRequest::first(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let cursor = first.next_cursor.clone().expect("a next page");
    let second = client
        .deployments(&PageRequest::first(2).after(cursor))
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.next_cursor, None);
    let mut names: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);

    let detail = client.deployment("train", "b").await.expect("train/b");
    assert_eq!(detail.latest.flow_key, flows::nightly().flow_key);
    let spec = train::deployment("b").spec().expect("spec");
    assert_eq!(detail.latest.parameter_schema, spec.parameter_schema);
    assert_eq!(detail.latest.output_schema, spec.output_schema);
    match client.deployment("train", "z").await {
        Err(RunError::NotFound(detail)) => assert_eq!(detail.code, ErrorCode::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_replays_its_idempotency_key_and_runs_filter() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;
    let client = server.client(ADMIN);
    let parameters =
        train::parameters_json(("houses.csv".to_string(), 5, None)).expect("parameters");
    let request = TriggerRequest {
        parameters: parameters.clone(),
        idempotency_key: Some("k-1".into()),
        ..TriggerRequest::default()
    };
    let first = client
        .trigger("train", "nightly", &request)
        .await
        .expect("trigger");
    assert!(!first.replayed);
    assert_eq!(first.run.state, StateType::Scheduled);
    assert_eq!(
        first.run.parameters,
        Some(json!({"dataset": "houses.csv", "epochs": 5, "learning_rate": null}))
    );
    let again = client
        .trigger("train", "nightly", &request)
        .await
        .expect("replay");
    assert!(again.replayed, "{again}");
    assert_eq!(again.run.id, first.run.id);

    // The same key with other parameters: refused, naming the run the key created.
    let other = TriggerRequest {
        parameters: train::parameters_json(("other.csv".to_string(), 5, None)).expect("params"),
        ..request.clone()
    };
    match client.trigger("train", "nightly", &other).await {
        Err(RunError::Api(detail)) => {
            assert_eq!(detail.code, ErrorCode::IdempotencyKeyReused);
            assert_eq!(detail.run_id, Some(first.run.id));
        }
        other => panic!("expected idempotency_key_reused, got {other:?}"),
    }

    let scheduled = client
        .runs(
            &RunFilter::all()
                .deployment("train/nightly")
                .state(StateType::Scheduled),
            &PageRequest::default(),
        )
        .await
        .expect("runs");
    assert_eq!(scheduled.items.len(), 1);
    assert_eq!(scheduled.items[0].id, first.run.id);
    let completed = client
        .runs(
            &RunFilter::all().state(StateType::Completed),
            &PageRequest::default(),
        )
        .await
        .expect("runs");
    assert!(completed.items.is_empty());
    let run = client.flow_run(first.run.id).await.expect("run");
    assert_eq!(run.id, first.run.id);
    let logs = client
        .logs(first.run.id, &PageRequest::default())
        .await
        .expect("logs");
    assert!(logs.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors_that_say_what_to_do() {
    let mut server = Server::start().await;
    server.register(&flows::nightly()).await;
    let request = TriggerRequest {
        parameters: json!({"epochs": -1, "extra": true})
            .as_object()
            .cloned()
            .expect("object"),
        ..TriggerRequest::default()
    };
    match server
        .client(ADMIN)
        .trigger("train", "nightly", &request)
        .await
    {
        Err(RunError::InvalidParameters(errors)) => {
            let mut pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
            pointers.sort();
            assert_eq!(pointers, ["/dataset", "/epochs", "/extra"]);
        }
        other => panic!("expected InvalidParameters, got {other:?}"),
    }
    let err = server
        .client("wrong-key-0123456789")
        .flow_run(Uuid::now_v7())
        .await
        .expect_err("unknown key");
    assert!(matches!(err, RunError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("FLOWKIT_API_KEY"), "{err}");
    let err = server
        .client(READER)
        .trigger("train", "nightly", &TriggerRequest::default())
        .await
        .expect_err("read-only key");
    assert!(matches!(err, RunError::Forbidden(_)), "{err:?}");
    let err = server
        .client(ADMIN)
        .flow_run(Uuid::now_v7())
        .await
        .expect_err("no such run");
    assert!(matches!(err, RunError::NotFound(_)), "{err:?}");

    server.stop().await;
    let err = server
        .client(ADMIN)
        .deployments(&PageRequest::default())
        .await
        .expect_err("no server");
    assert!(matches!(err, RunError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&server.url), "{err}");

    for url in ["", "127.0.0.1:4200", "ftp://host", "mailto:x@y"] {
        let err = Client::new(url).expect_err(url);
        assert!(matches!(err, RunError::Config(_)), "{url}: {err:?}");
        assert!(err.to_string().contains("http://"), "{url}: {err}");
    }
}
