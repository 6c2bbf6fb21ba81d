//! The OpenAPI document describes every route, and every route it describes exists.

use crate::harness::TestServer;
use axum::http::StatusCode;
use serde_json::Value;
use uuid::Uuid;

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn openapi_document_describes_every_route() {
    let server = TestServer::sqlite().await;
    let reply = server.get("/api/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("application/json"));
    let doc = reply.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("get", "/"),
        ("get", "/runs/{id}"),
        ("get", "/api/v1/health"),
        ("get", "/api/v1/ready"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/events"),
        ("post", "/api/v1/reporter-drops"),
        ("get", "/api/v1/reporter-drops"),
        ("get", "/api/v1/flow-runs"),
        ("get", "/api/v1/flow-runs/{id}"),
        ("get", "/api/v1/flow-runs/{id}/task-runs"),
        ("get", "/api/v1/flow-runs/{id}/logs"),
        ("get", "/api/v1/flow-runs/{id}/graph"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/metrics"),
        ("get", "/api/v1/stream"),
        ("post", "/api/v1/deployments"),
        ("get", "/api/v1/deployments"),
        ("get", "/api/v1/deployments/{flow}/{name}"),
        ("get", "/api/v1/deployments/{flow}/{name}/versions"),
        ("post", "/api/v1/deployments/{flow}/{name}/runs"),
        ("get", "/api/v1/deployments/{flow}/{name}/openapi.json"),
        ("get", "/api/v1/flow-runs/{id}/result"),
        ("post", "/api/v1/flow-runs/{id}/cancel"),
        ("post", "/api/v1/flow-runs/cancel"),
        ("post", "/api/v1/flow-runs/{id}/retry"),
        ("post", "/api/v1/workers/claim"),
        ("post", "/api/v1/workers/heartbeat"),
        ("post", "/api/v1/flow-runs/{id}/finish"),
        ("post", "/api/v1/flow-runs/{id}/release"),
        ("post", "/api/v1/schedules/{id}/pause"),
        ("post", "/api/v1/schedules/{id}/resume"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys"),
        ("delete", "/api/v1/keys/{key}"),
        ("post", "/api/v1/alert-rules"),
        ("get", "/api/v1/alert-rules"),
        ("get", "/api/v1/alert-rules/{id}"),
        ("patch", "/api/v1/alert-rules/{id}"),
        ("delete", "/api/v1/alert-rules/{id}"),
        ("get", "/api/v1/alert-rules/{id}/deliveries"),
        ("post", "/api/v1/deployments/{flow}/{name}/schedules"),
        ("get", "/api/v1/deployments/{flow}/{name}/schedules"),
        ("get", "/api/v1/schedules/{id}"),
        ("delete", "/api/v1/schedules/{id}"),
        ("post", "/api/v1/deployments/{flow}/{name}/backfill"),
        ("get", "/api/v1/concurrency-limits"),
        ("get", "/api/v1/concurrency-limits/{tag}"),
        ("put", "/api/v1/concurrency-limits/{tag}"),
        ("delete", "/api/v1/concurrency-limits/{tag}"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "documented operations: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
        // Every documented route exists, under `/api/v1` and under its `/api` alias: a GET on
        // a POST route is 405, an unknown run is "no flow run", never "no route". (The stream
        // would not end: it is probed elsewhere.)
        if path != "/api/v1/stream" {
            let uri = path
                .replace("{id}", &Uuid::now_v7().to_string())
                .replace("{flow}", "train")
                .replace("{name}", "nightly")
                .replace("{key}", "ci")
                .replace("{tag}", "gpu");
            for uri in [uri.clone(), uri.replacen("/api/v1/", "/api/", 1)] {
                let probe = server.get(&uri).await;
                assert!(
                    probe.status != StatusCode::NOT_FOUND
                        || !probe.error_message().starts_with("no route"),
                    "{uri} is documented but not routed"
                );
            }
        }
    }
    for (path, param) in [
        ("/api/v1/flow-runs", "limit"),
        ("/api/v1/flow-runs", "state"),
        ("/api/v1/flow-runs", "cursor"),
        ("/api/v1/flow-runs/{id}", "id"),
        ("/api/v1/flow-runs/{id}/logs", "level"),
        ("/api/v1/stats", "buckets"),
        ("/api/v1/deployments", "limit"),
        ("/api/v1/deployments/{flow}/{name}/versions", "cursor"),
        ("/api/v1/deployments/{flow}/{name}", "flow"),
    ] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        assert!(
            params.iter().any(|p| p["name"] == param),
            "{path} lacks {param}"
        );
    }
    // Enums and formats: what a generated client may send.
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{path} lacks {name}"))
    };
    let level = param("/api/v1/flow-runs/{id}/logs", "level");
    assert!(
        level["schema"]["enum"]
            .as_array()
            .is_some_and(|e| e.contains(&Value::from("WARN"))),
        "{level}"
    );
    let state = param("/api/v1/flow-runs", "state");
    assert_eq!(state["schema"]["type"], "array", "{state}");
    assert_eq!(state["explode"], false, "{state}");
    assert!(
        state["schema"]["items"]["enum"]
            .as_array()
            .is_some_and(|e| e.contains(&Value::from("Failed"))),
        "{state}"
    );
    for (path, name) in [
        ("/api/v1/flow-runs", "created_before"),
        ("/api/v1/stats", "since"),
    ] {
        assert_eq!(param(path, name)["schema"]["format"], "date-time");
    }
    // The stream is described as what it is.
    assert!(
        doc["paths"]["/api/v1/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            .is_object()
    );
    // A stateful client can follow a run: trigger -> the run -> its result, or cancel it.
    let trigger_links = &doc["paths"]["/api/v1/deployments/{flow}/{name}/runs"]["post"]["responses"]
        ["201"]["links"];
    for (link, target) in [
        ("GetFlowRun", "/api/v1/flow-runs/{id}"),
        ("GetResult", "/api/v1/flow-runs/{id}/result"),
        ("CancelRun", "/api/v1/flow-runs/{id}/cancel"),
    ] {
        let op_ref = trigger_links[link]["operationRef"]
            .as_str()
            .unwrap_or_else(|| panic!("trigger has no link {link}: {trigger_links}"));
        let pointer = op_ref.strip_prefix('#').expect("local operationRef");
        assert!(doc.pointer(pointer).is_some(), "{op_ref} does not resolve");
        assert!(op_ref.contains(&target.replace('/', "~1")), "{op_ref}");
        assert_eq!(
            trigger_links[link]["parameters"]["id"],
            "$response.body#/id"
        );
    }
    assert!(
        doc["paths"]["/api/v1/flow-runs/{id}"]["get"]["responses"]["200"]["links"]["GetResult"]
            .is_object()
    );
    // And an alert rule: its creation -> the rule, its change, its deletion, its deliveries.
    let rule_links = &doc["paths"]["/api/v1/alert-rules"]["post"]["responses"]["201"]["links"];
    for (link, method, target) in [
        ("GetAlertRule", "get", "/api/v1/alert-rules/{id}"),
        ("UpdateAlertRule", "patch", "/api/v1/alert-rules/{id}"),
        ("DeleteAlertRule", "delete", "/api/v1/alert-rules/{id}"),
        (
            "GetAlertDeliveries",
            "get",
            "/api/v1/alert-rules/{id}/deliveries",
        ),
    ] {
        let op_ref = rule_links[link]["operationRef"]
            .as_str()
            .unwrap_or_else(|| panic!("rule creation has no link {link}: {rule_links}"));
        let pointer = op_ref.strip_prefix('#').expect("local operationRef");
        assert!(doc.pointer(pointer).is_some(), "{op_ref} does not resolve");
        assert_eq!(
            op_ref,
            format!("#/paths/{}/{method}", target.replace('/', "~1"))
        );
        assert_eq!(rule_links[link]["parameters"]["id"], "$response.body#/id");
    }
    // Every status the rule's change can answer is documented.
    let patch = &doc["paths"]["/api/v1/alert-rules/{id}"]["patch"]["responses"];
    for status in ["200", "400", "401", "403", "404", "413", "415", "422"] {
        assert!(patch[status].is_object(), "PATCH lacks {status}: {patch}");
    }
    // Operation ids are unique.
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().into_iter().flat_map(|o| o.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "duplicate operation ids: {ids:?}");
    assert!(doc["paths"]["/api/v1/events"]["post"]["requestBody"].is_object());
    assert!(doc["paths"]["/api/v1/reporter-drops"]["post"]["requestBody"].is_object());
    // Readiness is open, and answers 200 or 503.
    let ready = &doc["paths"]["/api/v1/ready"]["get"];
    let mut statuses: Vec<&str> = ready["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(String::as_str)
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["200", "503"]);
    assert!(ready["security"].is_null(), "ready is open");
    // A 503 says when to come back.
    for (method, path) in [("post", "/api/v1/events"), ("get", "/api/v1/ready")] {
        assert!(
            doc["paths"][path][method]["responses"]["503"]["headers"]["Retry-After"].is_object(),
            "{method} {path}: 503 without Retry-After"
        );
    }
    // The deployment routes list every status they answer.
    for (method, path, statuses) in [
        (
            "post",
            "/api/v1/deployments",
            &[
                "200", "201", "204", "400", "401", "403", "409", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "get",
            "/api/v1/deployments",
            &["200", "400", "401", "403", "500", "503"][..],
        ),
        (
            "get",
            "/api/v1/deployments/{flow}/{name}",
            &["200", "401", "403", "404", "500", "503"][..],
        ),
        (
            "get",
            "/api/v1/deployments/{flow}/{name}/versions",
            &["200", "400", "401", "403", "404", "500", "503"][..],
        ),
        (
            "post",
            "/api/v1/deployments/{flow}/{name}/runs",
            &[
                "200", "201", "202", "400", "401", "403", "404", "409", "413", "415", "422", "500",
                "503",
            ][..],
        ),
        (
            "get",
            "/api/v1/flow-runs/{id}/result",
            &[
                "200", "202", "400", "401", "403", "404", "409", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/flow-runs/{id}/cancel",
            &[
                "200", "400", "401", "403", "404", "409", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/flow-runs/cancel",
            &[
                "200", "400", "401", "403", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/flow-runs/{id}/retry",
            &[
                "200", "400", "401", "403", "404", "409", "415", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/workers/claim",
            &[
                "200", "400", "401", "403", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/workers/heartbeat",
            &[
                "200", "400", "401", "403", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/flow-runs/{id}/finish",
            &[
                "200", "204", "400", "401", "403", "404", "409", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "post",
            "/api/v1/flow-runs/{id}/release",
            &[
                "200", "400", "401", "403", "404", "409", "413", "415", "422", "500", "503",
            ][..],
        ),
        (
            "get",
            "/api/v1/deployments/{flow}/{name}/openapi.json",
            &["200", "400", "401", "403", "404", "500", "503"][..],
        ),
        (
            "get",
            "/api/v1/reporter-drops",
            &["200", "401", "403", "500", "503"][..],
        ),
        (
            "post",
            "/api/v1/events",
            &[
                "202", "400", "401", "403", "413", "415", "422", "500", "503",
            ][..],
        ),
    ] {
        let op = &doc["paths"][path][method];
        let mut documented: Vec<&str> = op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        assert_eq!(documented, statuses, "{method} {path}");
        assert!(op["security"].is_array(), "{method} {path}");
    }
    // Every state-changing route says it needs JSON (415): a web page of another site
    // cannot send it without asking.
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if let Some(post) = ops.get("post") {
            assert!(
                post["responses"]["415"].is_object(),
                "post {path} does not document 415"
            );
        }
    }
    for code in ["forbidden_host", "forbidden_origin"] {
        assert!(
            doc["info"]["description"]
                .as_str()
                .is_some_and(|d| d.contains(code)),
            "the description does not explain {code}"
        );
    }
    // Every route behind a key says so, and every route that reads or writes the store lists
    // the store's failures (500, and 503 while the server shuts down).
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/v1/")
            || path.ends_with("/health")
            || path.ends_with("/ready")
            || path == "/api/v1/openapi.json"
        {
            continue;
        }
        for (method, op) in ops.as_object().expect("operations") {
            let responses = op["responses"].as_object().expect("responses");
            let mut wanted = vec!["401", "403"];
            if !path.ends_with("/stream") {
                wanted.extend(["500", "503"]);
            }
            for status in wanted {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lists no {status}"
                );
            }
        }
    }
    assert!(doc["paths"]["/api/v1/deployments"]["post"]["requestBody"].is_object());
    assert!(
        doc["paths"]["/api/v1/deployments/{flow}/{name}/runs"]["post"]["requestBody"].is_object()
    );
    assert!(
        doc["paths"]["/api/v1/deployments/{flow}/{name}/runs"]["post"]["responses"]["201"]["headers"]["Location"]
            .is_object()
    );
    assert!(doc["paths"]["/api/v1/flow-runs"]["get"]["security"].is_array());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for schema in [
        "Event",
        "Run",
        "TaskRuns",
        "Graph",
        "Stats",
        "ErrorBody",
        "ErrorCode",
        "IngestResponse",
        "RunChange",
        "StateType",
        "DeploymentSpec",
        "DeploymentVersion",
        "DeploymentSummary",
        "DeploymentDetail",
        "TriggerRequest",
        "FieldError",
        "ClaimRequest",
        "ClaimResponse",
        "HeartbeatRequest",
        "HeartbeatResponse",
        "FinishRequest",
        "ReleaseRequest",
        "BulkCancel",
        "BulkCancelled",
        "CancelRequest",
    ] {
        assert!(
            schemas.get(schema).is_some_and(Value::is_object),
            "schema {schema} missing; documented: {:?}",
            schemas.keys().collect::<Vec<_>>()
        );
    }
    // Descriptions are prose for API readers, not the crate's doc tests.
    let text = doc.to_string();
    assert!(!text.contains("```"), "a description carries a code block");
    // Every error code the server can answer is listed, so clients can match on them.
    let codes = serde_json::to_string(&schemas["ErrorCode"]).expect("json");
    for code in [
        "invalid_cursor",
        "payload_too_large",
        "unauthorized",
        "internal",
        "invalid_parameters",
        "idempotency_key_reused",
        "deployment_conflict",
    ] {
        assert!(codes.contains(code), "ErrorCode lacks {code}: {codes}");
    }
    server.finish().await;
}

/// The document of one deployment: OpenAPI 3.1, its trigger route with the version's
/// parameter schema inside the request body, its result route with the output schema, every
/// `$ref` resolving inside the document.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_deployment_has_its_own_openapi_document() {
    let server = TestServer::sqlite().await;
    // As schemars writes `train(dataset: String, mode: Mode, seed: Option<u64>) -> Metrics`.
    let parameters = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "mode": {"$ref": "#/$defs/Mode"},
            "seed": {"type": ["integer", "null"], "format": "uint64", "minimum": 0}
        },
        "required": ["dataset", "mode"],
        "additionalProperties": false,
        "$defs": {"Mode": {"type": "string", "enum": ["fast", "thorough"]}}
    });
    let output = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Metrics",
        "type": "object",
        "properties": {"rmse": {"type": "number"}, "history": {"type": "array", "items": {"$ref": "#/$defs/Point"}}},
        "required": ["rmse"],
        "$defs": {"Point": {"type": "object", "properties": {"epoch": {"type": "integer"}}}}
    });
    let spec = serde_json::json!({
        "flow": "train", "name": "nightly", "flow_key": "houses::train", "version": "v1",
        "description": "Retrain the house-price model.",
        "parameter_schema": parameters, "output_schema": output,
    });
    let reply = server.post_json("/api/v1/deployments", &spec).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    for uri in [
        "/api/v1/deployments/train/nightly/openapi.json",
        "/api/deployments/train/nightly/openapi.json",
        "/api/v1/deployments/train/nightly/openapi.json?version=v1",
    ] {
        let reply = server.get(uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
        assert!(reply.content_type.starts_with("application/json"));
        let doc = reply.body;
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "v1");
        assert!(
            doc["info"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("house-price"))
        );

        let trigger = &doc["paths"]["/api/v1/deployments/train/nightly/runs"]["post"];
        let mut statuses: Vec<&str> = trigger["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(String::as_str)
            .collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [
                "200", "201", "202", "400", "401", "403", "404", "409", "413", "415", "422", "500",
                "503"
            ]
        );
        let body = resolve(
            &doc,
            &trigger["requestBody"]["content"]["application/json"]["schema"],
        );
        let props = body["properties"].as_object().expect("properties");
        let mut fields: Vec<&str> = props.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "idempotency_key",
                "parameters",
                "scheduled_for",
                "tags",
                "version"
            ]
        );
        assert_eq!(body["additionalProperties"], false);
        // `parameters` is the flow's schema, its definitions moved beside it.
        let params = resolve(&doc, &props["parameters"]);
        assert_eq!(params["required"], serde_json::json!(["dataset", "mode"]));
        assert_eq!(params["additionalProperties"], false);
        assert!(params.get("$schema").is_none() && params.get("$defs").is_none());
        assert_eq!(
            resolve(&doc, &params["properties"]["mode"])["enum"],
            serde_json::json!(["fast", "thorough"])
        );
        assert_eq!(
            params["properties"]["seed"]["type"],
            serde_json::json!(["integer", "null"])
        );
        // The 422 answers the error body, with its details.
        let error = resolve(
            &doc,
            &trigger["responses"]["422"]["content"]["application/json"]["schema"],
        );
        assert!(error.to_string().contains("error"), "{error}");
        assert!(
            resolve(
                &doc,
                &trigger["responses"]["201"]["content"]["application/json"]["schema"]
            )["properties"]["state"]
                .is_object()
        );

        let result = &doc["paths"]["/api/v1/flow-runs/{id}/result"]["get"];
        let output = resolve(
            &doc,
            &result["responses"]["200"]["content"]["application/json"]["schema"],
        );
        assert_eq!(output["title"], "Metrics");
        assert_eq!(
            resolve(&doc, &output["properties"]["history"]["items"])["properties"]["epoch"]["type"],
            "integer"
        );
        for status in ["202", "409"] {
            assert!(
                result["responses"][status].is_object(),
                "result lacks {status}"
            );
        }
        // Every reference resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 5, "{refs:?}");
        for target in refs {
            let pointer = target.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }
    assert_eq!(
        server
            .get("/api/v1/deployments/train/nope/openapi.json")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let reply = server
        .get("/api/v1/deployments/train/nightly/openapi.json?version=v9")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.error_message().contains("v9"),
        "{}",
        reply.error_message()
    );
    server.finish().await;
}

/// The schema `value` refers to (followed through `$ref`s), or `value`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut v = value;
    for _ in 0..8 {
        match v["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => {
                v = doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("{pointer} does not resolve"))
            }
            None => return v,
        }
    }
    v
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    refs.push(v.as_str().expect("a $ref is a string").to_string());
                } else {
                    collect_refs(v, refs);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}
