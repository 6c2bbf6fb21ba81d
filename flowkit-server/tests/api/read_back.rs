//! What was ingested reads back through every route; ids that name nothing are 404s.

use crate::fixtures::{flow_run, ids, urlencode};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use serde_json::json;
use std::collections::HashSet;
use uuid::Uuid;

on_every_backend!(
    health,
    ingest_then_read_back_through_every_route,
    unknown_ids,
);

async fn health(server: &TestServer) {
    let body = server.get_ok("/api/health").await;
    assert_eq!(body["status"], "ok");
    let expected = if server.url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(body["database"], expected);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

async fn ingest_then_read_back_through_every_route(server: &TestServer) {
    let run = flow_run("etl", 3, Utc::now() - Duration::minutes(5));
    let total = run.events.len();
    let answer = server.ingest(&run.events).await;
    assert_eq!(
        answer,
        json!({"accepted": total, "duplicates": 0, "rejected": []})
    );

    // The list.
    let list = server.get_ok("/api/flow-runs").await;
    assert_eq!(ids(&list["items"]), vec![run.flow.to_string()]);
    assert!(list["next_cursor"].is_null());
    let item = &list["items"][0];
    assert_eq!(item["name"], "etl");
    assert_eq!(item["kind"], "flow");
    assert_eq!(item["state"], "Completed");
    assert_eq!(item["tags"], json!(["nightly"]));
    assert_eq!(item["parameters"], json!({"rows": 3}));

    // Filters.
    for (query, expected) in [
        ("state=Completed", 1),
        ("state=Failed,Crashed", 0),
        ("flow_name=etl", 1),
        ("flow_name=other", 0),
        ("tag=nightly", 1),
        ("tag=weekly", 0),
        ("search=ET", 1),
        ("search=zzz", 0),
        ("created_after=2000-01-01T00:00:00Z", 1),
        ("created_before=2000-01-01T00:00:00Z", 0),
        ("started_after=2000-01-01T00:00:00Z", 1),
        ("started_before=2000-01-01T00:00:00Z", 0),
    ] {
        let page = server.get_ok(&format!("/api/flow-runs?{query}")).await;
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(expected),
            "{query}"
        );
    }

    // The detail.
    let detail = server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(detail["id"], run.flow.to_string());
    assert_eq!(detail["task_key"], "demo::etl");
    assert_eq!(detail["worker"], "test-host:1");
    assert!(
        detail["started"].is_string() && detail["ended"].is_string(),
        "{detail}"
    );

    // Task runs with their states, for the timeline.
    let task_runs = server
        .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
        .await;
    let items = task_runs["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let task_ids: HashSet<String> = items
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect();
    let expected: HashSet<String> = run.tasks.iter().map(Uuid::to_string).collect();
    assert_eq!(task_ids, expected);
    for item in items {
        let states: Vec<&str> = item["states"]
            .as_array()
            .expect("states")
            .iter()
            .map(|s| s["state"].as_str().expect("state"))
            .collect();
        assert_eq!(states, ["Pending", "Running", "Completed"], "{item}");
    }
    let flow_states = task_runs["flow_run"]["states"]
        .as_array()
        .expect("flow states");
    assert_eq!(flow_states.len(), 3);

    // Logs: all, by level, by run.
    let logs = server
        .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
        .await;
    assert_eq!(logs["items"].as_array().map(Vec::len), Some(4));
    assert_eq!(logs["items"][0]["message"], "step 0 working");
    assert_eq!(logs["items"][0]["fields"]["attempt_note"], "<i>ok</i>");
    let warn = server
        .get_ok(&format!("/api/flow-runs/{}/logs?level=warn", run.flow))
        .await;
    assert_eq!(warn["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(warn["items"][0]["message"], "almost done");
    let one = server
        .get_ok(&format!(
            "/api/flow-runs/{}/logs?run_id={}",
            run.flow, run.tasks[1]
        ))
        .await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["items"][0]["message"], "step 1 working");
    let paged = server
        .get_ok(&format!("/api/flow-runs/{}/logs?limit=3", run.flow))
        .await;
    assert_eq!(paged["items"].as_array().map(Vec::len), Some(3));
    let cursor = paged["next_cursor"].as_str().expect("a next page");
    let rest = server
        .get_ok(&format!(
            "/api/flow-runs/{}/logs?limit=3&cursor={}",
            run.flow,
            urlencode(cursor)
        ))
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert!(rest["next_cursor"].is_null());

    // The graph: step_0 → step_1 → step_2.
    let graph = server
        .get_ok(&format!("/api/flow-runs/{}/graph", run.flow))
        .await;
    assert_eq!(graph["nodes"].as_array().map(Vec::len), Some(3));
    let mut edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["from"].as_str().expect("from").to_string(),
                e["to"].as_str().expect("to").to_string(),
            )
        })
        .collect();
    edges.sort();
    let mut expected = vec![
        (run.tasks[0].to_string(), run.tasks[1].to_string()),
        (run.tasks[1].to_string(), run.tasks[2].to_string()),
    ];
    expected.sort();
    assert_eq!(edges, expected);

    // Stats over the default window (the last 24 hours, 24 buckets).
    let stats = server.get_ok("/api/stats").await;
    assert_eq!(stats["buckets"].as_array().map(Vec::len), Some(24));
    assert_eq!(stats["totals"]["Completed"], 1, "{stats}");
    assert_eq!(stats["bucket_seconds"], 3600);
    let custom = server
        .get_ok(&format!(
            "/api/stats?since={}&until={}&buckets=4",
            urlencode(&(Utc::now() - Duration::hours(1)).to_rfc3339()),
            urlencode(&Utc::now().to_rfc3339())
        ))
        .await;
    assert_eq!(custom["buckets"].as_array().map(Vec::len), Some(4));
    assert_eq!(custom["totals"]["Completed"], 1, "{custom}");
}

async fn unknown_ids(server: &TestServer) {
    let run = flow_run("known", 1, Utc::now() - Duration::minutes(1));
    server.ingest(&run.events).await;
    let nobody = Uuid::now_v7();
    for suffix in ["", "/task-runs", "/logs", "/graph"] {
        let reply = server
            .get(&format!("/api/flow-runs/{nobody}{suffix}"))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{suffix}");
        assert_eq!(reply.error_code(), "not_found");
        assert!(reply.error_message().contains(&nobody.to_string()));

        let task = server
            .get(&format!("/api/flow-runs/{}{suffix}", run.tasks[0]))
            .await;
        assert_eq!(
            task.status,
            StatusCode::NOT_FOUND,
            "a task run is not a flow run"
        );

        let malformed = server
            .get(&format!("/api/flow-runs/not-a-uuid{suffix}"))
            .await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{suffix}");
        assert_eq!(malformed.error_code(), "invalid_id");
    }
}
