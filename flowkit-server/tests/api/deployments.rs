//! Deployments: registration and its versions, reading them back, and triggering runs with
//! parameters checked against the flow's JSON Schema, with idempotency keys — over the router
//! and, for concurrency, over real HTTP.

use crate::harness::{Reply, TestServer};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::Settings;
use flowkit_server::wire::api::ingest::MAX_TAGS;
use serde_json::{Value, json};

on_every_backend!(
    registration_keeps_every_version,
    a_dry_run_answers_as_registration_would_and_writes_nothing,
    registration_refuses_bad_specs_listing_every_error,
    versions_and_deployments_paginate,
    trigger_creates_a_scheduled_flow_run,
    invalid_parameters_list_every_error_at_its_pointer,
    idempotency_keys_are_scoped_and_fingerprinted,
    concurrent_identical_triggers_make_one_run,
    a_triggered_run_is_announced_on_the_live_stream,
    a_run_never_gets_more_tags_than_any_run_may_have,
);

/// The parameters of `train(dataset: String, epochs: u32, learning_rate: f64)`, as the
/// runtime describes them.
fn train_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "epochs": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
            "learning_rate": {"type": "number"}
        },
        "required": ["dataset", "learning_rate"],
        "additionalProperties": false
    })
}

fn spec(version: &str) -> Value {
    json!({
        "flow": "train",
        "name": "nightly",
        "flow_key": "houses::train",
        "version": version,
        "description": "Retrain the house-price model.",
        "parameter_schema": train_schema(),
        "output_schema": {"type": "object"},
        "default_parameters": {"epochs": 50},
        "tags": ["ml"],
        "concurrency_limit": 2
    })
}

async fn register(server: &TestServer, body: &Value) -> Reply {
    server.post_json("/api/v1/deployments", body).await
}

async fn register_ok(server: &TestServer, body: &Value) {
    let reply = register(server, body).await;
    assert!(
        reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
        "{}",
        reply.body
    );
}

async fn trigger(server: &TestServer, path: &str, body: &Value) -> Reply {
    server
        .post_json(&format!("/api/v1/deployments/{path}/runs"), body)
        .await
}

fn pointers(reply: &Reply) -> Vec<String> {
    let mut pointers: Vec<String> = reply.body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {}", reply.body))
        .iter()
        .map(|d| {
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
            d["pointer"].as_str().expect("pointer").to_string()
        })
        .collect();
    pointers.sort();
    pointers
}

/// `?dry_run=true` answers 204 where registering would succeed and the same error where it
/// would not, and writes nothing either way.
async fn a_dry_run_answers_as_registration_would_and_writes_nothing(server: &TestServer) {
    let dry = |body: Value| async move {
        server
            .post_json("/api/v1/deployments?dry_run=true", &body)
            .await
    };
    let new = dry(spec("abc@0.1.0")).await;
    assert_eq!(new.status, StatusCode::NO_CONTENT, "{}", new.body);
    let missing = server.get("/api/v1/deployments/train/nightly").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);

    register_ok(server, &spec("abc@0.1.0")).await;
    // A repeat would succeed (200); a changed version, or another function, would not.
    assert_eq!(dry(spec("abc@0.1.0")).await.status, StatusCode::NO_CONTENT);
    let mut changed = spec("abc@0.1.0");
    changed["tags"] = json!(["gpu"]);
    let conflict = dry(changed).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.error_code(), "conflict");
    let mut other = spec("xyz@1.0.0");
    other["flow_key"] = json!("other_crate::train");
    let taken = dry(other).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.error_code(), "deployment_conflict");
    let mut bad = spec("v2");
    bad["name"] = json!("");
    assert_eq!(dry(bad).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A new version would be created; it is not.
    assert_eq!(dry(spec("def@0.1.1")).await.status, StatusCode::NO_CONTENT);
    let detail = server.get_ok("/api/v1/deployments/train/nightly").await;
    assert_eq!(detail["latest"]["version"], "abc@0.1.0", "{detail}");
    assert_eq!(detail["versions"], 1, "{detail}");
    let unknown = server
        .post_json("/api/v1/deployments?dry=1", &spec("abc@0.1.0"))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
}

async fn registration_keeps_every_version(server: &TestServer) {
    let first = register(server, &spec("abc@0.1.0")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["version"], "abc@0.1.0");
    assert_eq!(first.body["default_parameters"], json!({"epochs": 50}));
    assert_eq!(first.body["concurrency_limit"], 2);

    // The same again (keys in another order): nothing changes.
    let mut same = spec("abc@0.1.0");
    let schema = same["parameter_schema"].take();
    same["parameter_schema"] = schema;
    let again = register(server, &same).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["registered"], first.body["registered"]);

    // The same version with another body: refused, the version never changes.
    let mut changed = spec("abc@0.1.0");
    changed["tags"] = json!(["gpu"]);
    let conflict = register(server, &changed).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.error_code(), "conflict");
    assert!(
        conflict.error_message().contains("new version"),
        "{}",
        conflict.error_message()
    );

    let second = register(server, &spec("def@0.1.1")).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);

    // Another function under the same flow/name.
    let mut other = spec("xyz@1.0.0");
    other["flow_key"] = json!("other_crate::train");
    let taken = register(server, &other).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.error_code(), "deployment_conflict");
    assert!(taken.error_message().contains("houses::train"));

    let list = server.get_ok("/api/v1/deployments").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    let summary = &list["items"][0];
    assert_eq!(summary["flow"], "train");
    assert_eq!(summary["name"], "nightly");
    assert_eq!(summary["latest_version"], "def@0.1.1");
    assert_eq!(summary["versions"], 2);
    assert_eq!(summary["description"], "Retrain the house-price model.");

    for prefix in ["/api/v1", "/api"] {
        let detail = server
            .get_ok(&format!("{prefix}/deployments/train/nightly"))
            .await;
        assert_eq!(detail["latest"]["version"], "def@0.1.1");
        assert_eq!(detail["latest"]["parameter_schema"], train_schema());
        assert_eq!(detail["versions"], 2);
        assert_eq!(detail["recent_runs"], json!([]));
    }
    let versions = server
        .get_ok("/api/v1/deployments/train/nightly/versions")
        .await;
    let listed: Vec<&str> = versions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].as_str().expect("version"))
        .collect();
    assert_eq!(listed, ["def@0.1.1", "abc@0.1.0"]);

    for uri in [
        "/api/v1/deployments/train/weekly",
        "/api/v1/deployments/nope/nightly/versions",
    ] {
        let missing = server.get(uri).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(missing.error_code(), "not_found");
        assert!(missing.error_message().contains("no deployment"));
    }
}

async fn registration_refuses_bad_specs_listing_every_error(server: &TestServer) {
    let mut bad = spec("v1");
    bad["flow"] = json!("train/nightly");
    bad["name"] = json!("");
    bad["concurrency_limit"] = json!(0);
    let reply = register(server, &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_code(), "invalid_body");
    assert_eq!(pointers(&reply), ["/concurrency_limit", "/flow", "/name"]);

    let mut bad = spec("v1");
    bad["parameter_schema"] = json!({"type": "object", "properties": {"x": {"type": "decimal"}}});
    bad["output_schema"] = json!({"minimum": "zero"});
    let reply = register(server, &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(pointers(&reply), ["/output_schema", "/parameter_schema"]);

    // Defaults must fit the schema (but need not give every required parameter).
    let mut bad = spec("v1");
    bad["default_parameters"] = json!({"epochs": -3, "learning_rate": "fast", "colour": "red"});
    let reply = register(server, &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(
        pointers(&reply),
        [
            "/default_parameters/colour",
            "/default_parameters/epochs",
            "/default_parameters/learning_rate"
        ]
    );

    // The wrong shape altogether, and a body that is not JSON.
    let reply = register(server, &json!({"flow": "train"})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let reply = server.post_raw("/api/v1/deployments", "{not json").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);

    assert_eq!(
        server.get_ok("/api/v1/deployments").await["items"],
        json!([])
    );
}

async fn versions_and_deployments_paginate(server: &TestServer) {
    for i in 0..5 {
        register_ok(server, &spec(&format!("v{i}"))).await;
    }
    for flow in ["etl", "report"] {
        let mut other = spec("1");
        other["flow"] = json!(flow);
        other["flow_key"] = json!(format!("demo::{flow}"));
        register_ok(server, &other).await;
    }
    let mut seen = Vec::new();
    let mut uri = "/api/v1/deployments/train/nightly/versions?limit=2".to_string();
    loop {
        let page = server.get_ok(&uri).await;
        for item in page["items"].as_array().expect("items") {
            seen.push(item["version"].as_str().expect("version").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                uri = format!("/api/v1/deployments/train/nightly/versions?limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, ["v4", "v3", "v2", "v1", "v0"]);
    let detail = server.get_ok("/api/v1/deployments/train/nightly").await;
    assert_eq!(detail["latest"]["version"], "v4");
    assert_eq!(detail["versions"], 5);

    let first = server.get_ok("/api/v1/deployments?limit=2").await;
    let names: Vec<&str> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["flow"].as_str().expect("flow"))
        .collect();
    assert_eq!(names, ["report", "etl"]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = server
        .get_ok(&format!("/api/v1/deployments?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"][0]["flow"], "train");
    assert!(rest["next_cursor"].is_null());

    for bad in ["?limit=0", "?cursor=garbage", "?colour=red"] {
        let reply = server.get(&format!("/api/v1/deployments{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
    }
}

async fn trigger_creates_a_scheduled_flow_run(server: &TestServer) {
    register_ok(server, &spec("abc@0.1.0")).await;
    let mut v2 = spec("def@0.2.0");
    // The newer version renamed a parameter.
    v2["parameter_schema"] = json!({
        "type": "object",
        "properties": {"data": {"type": "string"}, "epochs": {"type": "integer"}},
        "required": ["data"],
        "additionalProperties": false
    });
    register_ok(server, &v2).await;

    let when = "2031-01-02T03:04:05.678901Z";
    let reply = trigger(
        server,
        "train/nightly",
        &json!({
            "parameters": {"dataset": "s3://b/houses.csv", "learning_rate": 0.01},
            "version": "abc@0.1.0",
            "tags": ["adhoc", "ml"],
            "scheduled_for": when
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let run = reply.body;
    let id = run["id"].as_str().expect("id").to_string();
    assert_eq!(run["kind"], "flow");
    assert_eq!(run["name"], "train");
    assert_eq!(run["task_key"], "houses::train");
    assert_eq!(run["state"], "Scheduled");
    assert!(
        run["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("no worker serves train/nightly")),
        "{run}"
    );
    assert_eq!(
        run["parameters"],
        json!({"dataset": "s3://b/houses.csv", "learning_rate": 0.01, "epochs": 50})
    );
    assert_eq!(run["deployment"], "train/nightly");
    assert_eq!(run["version"], "abc@0.1.0");
    assert_eq!(run["tags"], json!(["ml", "adhoc"]));
    assert_eq!(run["scheduled_for"], when);
    assert_eq!(run["flow_run_id"], id.as_str());

    // Like any flow run: listed (filtered by deployment too), readable, with its history.
    let listed = server
        .get_ok("/api/v1/flow-runs?deployment=train/nightly")
        .await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(server.get_ok(&format!("/api/v1/flow-runs/{id}")).await, run);
    let history = server
        .get_ok(&format!("/api/v1/flow-runs/{id}/task-runs"))
        .await;
    assert_eq!(history["flow_run"]["states"][0]["state"], "Scheduled");
    let detail = server.get_ok("/api/v1/deployments/train/nightly").await;
    assert_eq!(detail["recent_runs"][0]["id"], id.as_str());

    // Without `version`, the newest: its own schema and no `scheduled_for`.
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {"data": "x"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["version"], "def@0.2.0");
    assert!(reply.body.get("scheduled_for").is_none(), "{}", reply.body);

    // An unknown version of a known deployment is the body's fault (422 at `/version`); an
    // unknown deployment is a 404.
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {}, "version": "nope"}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_code(), "invalid_body");
    assert_eq!(pointers(&reply), ["/version"]);
    let reply = trigger(server, "train/weekly", &json!({"parameters": {}})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);

    // A misspelt field is refused rather than ignored.
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {"data": "x"}, "idempotency": "k"}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(
        server.get_ok("/api/v1/flow-runs").await["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

async fn invalid_parameters_list_every_error_at_its_pointer(server: &TestServer) {
    register_ok(server, &spec("abc@0.1.0")).await;
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {"epochs": -1, "learning_rate": "fast", "colour": "red"}}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_code(), "invalid_parameters");
    assert_eq!(
        pointers(&reply),
        ["/colour", "/dataset", "/epochs", "/learning_rate"]
    );

    // Whatever the values, a 4xx that says what is wrong, never a 5xx.
    for parameters in [
        json!({"dataset": "d", "learning_rate": 0.1, "epochs": 4294967296u64}),
        json!({"dataset": "d", "learning_rate": 0.1, "epochs": 2.5}),
        json!({"dataset": null, "learning_rate": [1, 2]}),
        json!({"dataset": {"deep": [[[{}]]]}, "learning_rate": 1e308}),
        json!({"dataset": "\u{0}", "learning_rate": "\u{0}", "\u{0}": 1}),
    ] {
        let reply = trigger(
            server,
            "train/nightly",
            &json!({ "parameters": parameters }),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{parameters}: {}",
            reply.body
        );
        assert!(!pointers(&reply).is_empty());
    }
    let reply = trigger(server, "train/nightly", &json!({"parameters": [1, 2]})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.error_code(), "invalid_body");

    // Defaults fill in; a NUL inside a valid string is fine.
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {"dataset": "a\u{0}b", "learning_rate": 1}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["parameters"]["epochs"], 50);
    assert_eq!(
        server.get_ok("/api/v1/flow-runs").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

async fn idempotency_keys_are_scoped_and_fingerprinted(server: &TestServer) {
    register_ok(server, &spec("abc@0.1.0")).await;
    let mut other = spec("1");
    other["name"] = json!("adhoc");
    register_ok(server, &other).await;
    let body = json!({
        "parameters": {"dataset": "d", "learning_rate": 0.5},
        "idempotency_key": "nightly-2031-01-02"
    });
    let first = trigger(server, "train/nightly", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["id"].clone();

    let again = trigger(server, "train/nightly", &body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], id);

    // The key as a header, with the same body (keys in another order): the same run.
    let with_header = |body: &Value, key: &str| {
        let body = serde_json::to_vec(body).expect("json");
        let key = key.to_string();
        async move {
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/api/v1/deployments/train/nightly/runs")
                .header("content-type", "application/json")
                .header("idempotency-key", key);
            server.request_with(request, Body::from(body)).await
        }
    };
    let header_replay = with_header(
        &json!({"parameters": {"learning_rate": 0.5, "dataset": "d"}}),
        "nightly-2031-01-02",
    )
    .await;
    assert_eq!(
        header_replay.status,
        StatusCode::OK,
        "{}",
        header_replay.body
    );
    assert_eq!(header_replay.body["id"], id);

    // Header and body disagree.
    let disagree = with_header(&body, "another-key").await;
    assert_eq!(
        disagree.status,
        StatusCode::BAD_REQUEST,
        "{}",
        disagree.body
    );

    // The same key with another body.
    let mut changed = body.clone();
    changed["parameters"]["learning_rate"] = json!(0.25);
    let reused = trigger(server, "train/nightly", &changed).await;
    assert_eq!(reused.status, StatusCode::CONFLICT, "{}", reused.body);
    assert_eq!(reused.error_code(), "idempotency_key_reused");
    assert_eq!(reused.body["error"]["run_id"], id);

    // Another key, or the same key on another deployment: new runs.
    let mut fresh = body.clone();
    fresh["idempotency_key"] = json!("nightly-2031-01-03");
    assert_eq!(
        trigger(server, "train/nightly", &fresh).await.status,
        StatusCode::CREATED
    );
    let scoped = trigger(server, "train/adhoc", &body).await;
    assert_eq!(scoped.status, StatusCode::CREATED, "{}", scoped.body);
    assert_ne!(scoped.body["id"], id);

    // A refused trigger does not use up its key.
    let invalid = json!({"parameters": {"dataset": 1}, "idempotency_key": "retry-me"});
    let reply = trigger(server, "train/nightly", &invalid).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let fixed = json!({
        "parameters": {"dataset": "d", "learning_rate": 1},
        "idempotency_key": "retry-me"
    });
    let reply = trigger(server, "train/nightly", &fixed).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // A replay gets its run even after a newer version changed the schema.
    let mut stricter = spec("def@0.2.0");
    stricter["parameter_schema"]["required"] = json!(["dataset", "learning_rate", "epochs"]);
    stricter["default_parameters"] = json!({});
    register_ok(server, &stricter).await;
    let replay = trigger(server, "train/nightly", &body).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["id"], id);

    for bad in [String::new(), "k".repeat(256)] {
        let mut bad_key = body.clone();
        bad_key["idempotency_key"] = json!(bad);
        let reply = trigger(server, "train/nightly", &bad_key).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    }
    assert_eq!(
        server.get_ok("/api/v1/flow-runs").await["items"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

async fn concurrent_identical_triggers_make_one_run(server: &TestServer) {
    register_ok(server, &spec("abc@0.1.0")).await;
    let listening = server.listen().await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/deployments/train/nightly/runs", listening.url);
    // 1 000 connections at once: the client's and the server's sockets take 2 000 descriptors
    // of this process (`ulimit -n` must allow them; `FLOWKIT_TEST_SCALE` shrinks the test).
    let n = flowkit::testing::scaled(1000);
    // A pool that has no connection free within its acquire timeout answers 503 with
    // `Retry-After`: a well-behaved client retries, and the retry must find the same run.
    let unavailable = std::sync::atomic::AtomicUsize::new(0);
    let answers = futures::future::join_all((0..n).map(|_| {
        let (client, url, unavailable) = (&client, &url, &unavailable);
        async move {
            // Retried for as long as a loaded machine may need, then the test fails.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
            for attempt in 1u64.. {
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                let response = client
                    .post(url)
                    .header("Idempotency-Key", "one-run-please")
                    .json(&json!({"parameters": {"dataset": "d", "learning_rate": 0.5}}))
                    .send()
                    .await
                    .expect("send");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                if status == 503 && body["error"]["code"] == "unavailable" {
                    unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt.min(10)))
                        .await;
                    continue;
                }
                return (status, body);
            }
            panic!("still unavailable after 120 s of retries")
        }
    }))
    .await;
    eprintln!(
        "{n} identical triggers: {} answers 503 `unavailable` (retried)",
        unavailable.load(std::sync::atomic::Ordering::Relaxed)
    );
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{:?}", &answers[..answers.len().min(3)]);
    let id = &answers
        .iter()
        .find(|(status, _)| *status == 201)
        .expect("one 201")
        .1["id"];
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 201, "{status}: {body}");
        assert_eq!(&body["id"], id);
    }
    let runs = server
        .get_ok("/api/v1/flow-runs?deployment=train/nightly")
        .await;
    assert_eq!(runs["items"].as_array().map(Vec::len), Some(1), "{runs}");
}

async fn a_triggered_run_is_announced_on_the_live_stream(server: &TestServer) {
    register_ok(server, &spec("abc@0.1.0")).await;
    let listening = server.listen().await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("{}/api/v1/stream", listening.url))
        .send()
        .await
        .expect("connect to the stream");
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut read_until = async |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let chunk = tokio::time::timeout_at(deadline, stream.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {seen:?}"))
                .expect("read the stream")
                .unwrap_or_else(|| panic!("the stream ended before {needle:?}"));
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until("event: ready", &mut seen).await;
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": {"dataset": "d", "learning_rate": 0.5}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_string();
    read_until(&id, &mut seen).await;
    assert!(seen.contains("Scheduled"), "{seen}");
}

/// Registering needs `worker`, triggering `trigger`, reading `read`; `admin` does everything.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn deployment_routes_need_their_scopes() {
    let key = |s: &str| s.parse::<ApiKey>().expect("key");
    let server = TestServer::sqlite_with(Settings {
        api_keys: ApiKeys::new(vec![
            key("dashboard:read-secret-0123456789:read"),
            key("worker:worker-secret-0123456789:report,worker"),
            key("other-team:trigger-secret-0123456789:trigger"),
            key("ops:admin-secret-0123456789:admin"),
        ])
        .expect("keys"),
        ..Settings::default()
    })
    .await;
    let send = |method: Method, uri: &'static str, body: Option<Value>, secret: &'static str| {
        let body = body.map(|b| Body::from(serde_json::to_vec(&b).expect("json")));
        server.request(method, uri, body, Some(secret), Some("application/json"))
    };
    let register = || Some(spec("abc@0.1.0"));
    let run = || Some(json!({"parameters": {"dataset": "d", "learning_rate": 0.5}}));
    const DEPLOYMENTS: &str = "/api/v1/deployments";
    const RUNS: &str = "/api/v1/deployments/train/nightly/runs";

    for secret in ["read-secret-0123456789", "trigger-secret-0123456789"] {
        let reply = send(Method::POST, DEPLOYMENTS, register(), secret).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{secret}");
        assert!(
            reply.error_message().contains("worker"),
            "{}",
            reply.error_message()
        );
    }
    let reply = send(
        Method::POST,
        DEPLOYMENTS,
        register(),
        "worker-secret-0123456789",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let reply = send(
        Method::POST,
        DEPLOYMENTS,
        register(),
        "admin-secret-0123456789",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    for secret in ["read-secret-0123456789", "worker-secret-0123456789"] {
        let reply = send(Method::POST, RUNS, run(), secret).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{secret}");
        assert!(reply.error_message().contains("trigger"));
    }
    for secret in ["trigger-secret-0123456789", "admin-secret-0123456789"] {
        let reply = send(Method::POST, RUNS, run(), secret).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{secret}: {}",
            reply.body
        );
    }
    let reply = server.request(Method::POST, RUNS, None, None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    for (secret, status) in [
        ("read-secret-0123456789", StatusCode::OK),
        ("admin-secret-0123456789", StatusCode::OK),
        ("trigger-secret-0123456789", StatusCode::FORBIDDEN),
        ("worker-secret-0123456789", StatusCode::FORBIDDEN),
    ] {
        for uri in [
            DEPLOYMENTS,
            "/api/v1/deployments/train/nightly",
            "/api/v1/deployments/train/nightly/versions",
        ] {
            let reply = send(Method::GET, uri, None, secret).await;
            assert_eq!(reply.status, status, "{secret} GET {uri}: {}", reply.body);
        }
    }
    server.finish().await;
}

/// The deployment's tags and the trigger's together stay within the bound every run has.
async fn a_run_never_gets_more_tags_than_any_run_may_have(server: &TestServer) {
    let mut many = spec("tags@0.1.0");
    let tags: Vec<String> = (0..MAX_TAGS).map(|i| format!("d{i}")).collect();
    many["tags"] = json!(tags);
    register_ok(server, &many).await;
    let params = json!({"dataset": "s3://b/houses.csv", "learning_rate": 0.01});
    // Repeating a tag of the deployment adds nothing: still within the bound.
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": params, "tags": ["d0"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["tags"].as_array().map(Vec::len), Some(MAX_TAGS));
    let reply = trigger(
        server,
        "train/nightly",
        &json!({"parameters": params, "tags": ["one-more"]}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "invalid_body");
    assert_eq!(pointers(&reply), ["/tags"]);
}
