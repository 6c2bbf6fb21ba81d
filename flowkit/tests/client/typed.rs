//! `flowkit::Client` against a real server: its answers as the wire types, its errors as
//! `RunError`s.

use crate::flows::{self, train};
use crate::harness::{ADMIN, READER, Server, Worker};
use flowkit::client::{PageRequest, RunFilter, exit_code};
use flowkit::{Client, FlowSignature, RunError, StateType};
use flowkit_wire::api::deployments::TriggerRequest;
use flowkit_wire::api::error::ErrorCode;
use serde_json::json;
use std::time::Duration;
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

/// `client.run::<train>(...)` with the real flow run by the worker: typed arguments in, the
/// flow's typed output back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_run_gives_back_the_flows_output() {
    let server = Server::start().await;
    let spec = flows::nightly();
    server.register(&spec).await;
    let worker = Worker::new(&server, &[&spec]);
    let client = server.client(ADMIN);

    let args = ("houses.csv".to_string(), 5, Some(0.5));
    let (metrics, claimed) = tokio::join!(
        client.run::<train>("nightly", args.clone()),
        worker.run_train()
    );
    let expected = train(args.0, args.1, args.2).await.expect("the flow");
    assert_eq!(metrics.expect("typed run"), expected);
    assert_eq!(
        claimed.parameters,
        *json!({"dataset": "houses.csv", "epochs": 5, "learning_rate": 0.5})
            .as_object()
            .expect("object")
    );
    // Read again later, without waiting.
    assert_eq!(
        client
            .result(claimed.run_id, Duration::ZERO)
            .await
            .expect("result"),
        serde_json::to_value(&expected).expect("json")
    );

    // Untyped: defaults fill in what is not given.
    let params = json!({"dataset": "d"})
        .as_object()
        .cloned()
        .expect("object");
    let (output, _) = tokio::join!(
        client.run_json("train", "nightly", params, Duration::from_secs(60)),
        worker.run_train()
    );
    assert_eq!(output.expect("untyped run")["epochs"], 3);

    // The flow's error comes back in the run.
    let (err, failed) = tokio::join!(
        client.run::<train>("nightly", (String::new(), 1, None)),
        worker.run_train()
    );
    let err = err.expect_err("an empty dataset fails");
    match &err {
        RunError::Failed(run) => {
            assert_eq!(run.id, failed.run_id);
            assert_eq!(run.state_message.as_deref(), Some("no dataset given"));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(exit_code::of(&err), exit_code::FAILED);
    assert!(err.to_string().contains("no dataset given"), "{err}");
    match client.result(failed.run_id, Duration::ZERO).await {
        Err(RunError::Failed(run)) => assert_eq!(run.id, failed.run_id),
        other => panic!("expected Failed, got {other:?}"),
    }

    // An output that is not the flow's output type (another version of the flow).
    let (res, odd) = tokio::join!(
        client.run::<train>("nightly", ("d".to_string(), 1, None)),
        async {
            let run = worker.claim().await;
            worker
                .finish(
                    &run,
                    StateType::Completed,
                    None,
                    Some(json!({"rmse": "low"})),
                )
                .await;
            run
        }
    );
    match res {
        Err(RunError::Decode { run_id, message }) => {
            assert_eq!(run_id, Some(odd.run_id));
            assert!(
                message.contains("rmse") || message.contains("dataset"),
                "{message}"
            );
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_end_on_time_and_cancelled_runs_can_be_retried() {
    let server = Server::start().await;
    let spec = flows::nightly();
    server.register(&spec).await;
    let client = server.client(ADMIN).timeout(Duration::from_secs(1));

    // No worker: the wait ends, the run goes on.
    let err = client
        .run::<train>("nightly", ("d".to_string(), 1, None))
        .await
        .expect_err("no worker");
    let RunError::StillRunning { run, waited } = &err else {
        panic!("expected StillRunning, got {err:?}");
    };
    assert_eq!(run.state, StateType::Scheduled);
    assert!(*waited >= Duration::from_secs(1), "{waited:?}");
    let id = run.id;
    assert!(matches!(
        client.result(id, Duration::ZERO).await,
        Err(RunError::StillRunning { .. })
    ));

    let cancelled = client.cancel(id).await.expect("cancel");
    assert_eq!(cancelled.state, StateType::Cancelled);
    assert!(matches!(
        client.result(id, Duration::from_secs(5)).await,
        Err(RunError::Cancelled(_))
    ));
    match client.cancel(id).await {
        Err(RunError::Api(detail)) => assert_eq!(detail.code, ErrorCode::Conflict),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Retried, it is the same run's next attempt, and completes.
    let retried = client.retry(id).await.expect("retry");
    assert_eq!(
        (retried.id, retried.state, retried.attempt),
        (id, StateType::Scheduled, 2)
    );
    let worker = Worker::new(&server, &[&spec]);
    let (output, claimed) = tokio::join!(
        client.result(id, Duration::from_secs(60)),
        worker.run_train()
    );
    assert_eq!(claimed.run_id, id);
    assert_eq!(output.expect("result")["dataset"], "d");

    // An idempotent trigger of a run that completed gives back its output, said replayed.
    let request = TriggerRequest {
        parameters: json!({"dataset": "k"})
            .as_object()
            .cloned()
            .expect("object"),
        idempotency_key: Some("once".into()),
        ..TriggerRequest::default()
    };
    let (first, _) = tokio::join!(
        client.trigger_and_wait("train", "nightly", &request, Duration::from_secs(60)),
        worker.run_train()
    );
    let first = first.expect("first");
    assert!(!first.replayed);
    let again = client
        .trigger_and_wait("train", "nightly", &request, Duration::from_secs(5))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!((again.run.id, &again.output), (first.run.id, &first.output));

    // A run that takes longer than one step of the wait: asked again until it ends.
    let stepping = server
        .client(ADMIN)
        .wait_step(Duration::from_secs(1))
        .timeout(Duration::from_secs(60));
    let slow_worker = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        worker.run_train().await
    };
    let (metrics, _) = tokio::join!(
        stepping.run::<train>("nightly", ("slow".to_string(), 2, None)),
        slow_worker
    );
    assert_eq!(metrics.expect("after several steps").dataset, "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_no_worker_started_in_time_is_an_expired_error() {
    let server = Server::start().await;
    // Every second, at most a second late; no worker serves it, so its runs expire.
    let spec = train::deployment("hourly")
        .schedule(
            flowkit::Schedule::interval("1s")
                .parameters(json!({"dataset": "d", "epochs": 1}))
                .max_lateness("1s"),
        )
        .spec()
        .expect("train/hourly");
    server.register(&spec).await;
    let client = server.client(ADMIN);

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let expired = loop {
        let runs = client
            .runs(&RunFilter::all(), &PageRequest::default())
            .await
            .expect("runs");
        if let Some(run) = runs.items.iter().find(|r| r.state == StateType::Expired) {
            break run.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run expired within 60 s: {:?}",
            runs.items.iter().map(|r| r.state).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let error = client
        .result(expired, Duration::ZERO)
        .await
        .expect_err("an expired run has no result");
    assert!(matches!(error, RunError::Expired(_)), "{error:?}");
    assert_eq!(exit_code::of(&error), exit_code::EXPIRED);
    assert!(
        error.to_string().contains("expired"),
        "says what happened: {error}"
    );
    assert_eq!(error.run().map(|r| r.id), Some(expired));
}
