//! The children of a flow run come in bounded answers: `task-runs` page by page (keyset,
//! oldest first by `(created, id)`, subflow runs merged in), and the graph capped at
//! `GRAPH_MAX_NODES` nodes, summed up per task name beyond.

use crate::fixtures::{event, flow_run, ids, state, urlencode};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::wire::{Event, RunDetails, RunKind, StateType};
use flowkit_wire::api::graph::{GRAPH_MAX_GROUPS, GRAPH_MAX_NODES};
use flowkit_wire::api::page::MAX_PAGE_SIZE;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

on_every_backend!(
    task_runs_pages_walk_every_child_once,
    task_runs_limits_are_checked,
    a_huge_flows_graph_is_bounded_and_summed_up,
    a_graph_of_many_names_keeps_a_bounded_number_of_groups,
);

/// Posts events in batches the server accepts.
async fn ingest_all(server: &TestServer, events: &[Event]) {
    for chunk in events.chunks(5_000) {
        server.ingest(chunk).await;
    }
}

/// Every page of `/task-runs` with `limit`, in order: the items, and the number of pages.
async fn walk(server: &TestServer, flow: Uuid, limit: u32) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut uri = format!("/api/v1/flow-runs/{flow}/task-runs?limit={limit}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page = server.get_ok(&uri).await;
        pages += 1;
        let got = page["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit as usize, "a page longer than its limit");
        // The flow run itself, with its states, on every page.
        assert_eq!(page["flow_run"]["id"], flow.to_string());
        assert_eq!(
            page["flow_run"]["states"].as_array().map(Vec::len),
            Some(3),
            "{}",
            page["flow_run"]
        );
        items.extend(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 1000, "pagination does not end");
    }
    (items, pages)
}

/// A subflow run (`Pending` only) called by `parent`, created at `at`.
fn subflow(name: &str, parent: Uuid, at: DateTime<Utc>) -> (Uuid, Event) {
    let id = Uuid::now_v7();
    let details = RunDetails {
        task_key: format!("demo::{name}").into(),
        ..RunDetails::default()
    };
    let first = event(
        id,
        RunKind::Flow,
        name,
        id,
        Some(parent),
        at,
        state(StateType::Pending, Some(details)),
    );
    (id, first)
}

async fn task_runs_pages_walk_every_child_once(server: &TestServer) {
    let start = Utc::now() - Duration::minutes(10);
    let mut run = flow_run("paged_children", 23, start);
    // Two subflows, one called by the flow and one by a task, created between task runs:
    // they come in their place in the order, not at the end.
    let (by_flow, e1) = subflow(
        "sub_by_flow",
        run.flow,
        start + Duration::microseconds(23_500),
    );
    let (by_task, e2) = subflow(
        "sub_by_task",
        run.tasks[2],
        start + Duration::microseconds(40_500),
    );
    run.events.extend([e1, e2]);
    ingest_all(server, &run.events).await;
    // Another flow's runs are none of this flow's children, not even its subflow run created
    // while this flow ran.
    let mut other = flow_run("other", 5, start);
    let (_, e3) = subflow(
        "sub_of_other",
        other.flow,
        start + Duration::microseconds(30_500),
    );
    other.events.push(e3);
    ingest_all(server, &other.events).await;

    let mut expected: Vec<(String, String)> = Vec::new();
    let everything = server
        .get_ok(&format!("/api/v1/flow-runs/{}/task-runs", run.flow))
        .await;
    assert!(
        everything["next_cursor"].is_null(),
        "25 children fit the default page"
    );
    for item in everything["items"].as_array().expect("items") {
        expected.push((
            item["created"].as_str().expect("created").to_string(),
            item["id"].as_str().expect("id").to_string(),
        ));
    }
    assert_eq!(expected.len(), 25);
    let mut sorted = expected.clone();
    sorted.sort_by(|a, b| {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("RFC 3339");
        (at(&a.0), &a.1).cmp(&(at(&b.0), &b.1))
    });
    assert_eq!(expected, sorted, "oldest first by (created, id)");
    let expected_ids: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    let position = |id: Uuid| expected_ids.iter().position(|e| *e == id.to_string());
    assert_eq!(position(by_flow), Some(6), "after task 5, before task 6");
    assert_eq!(position(by_task), Some(11), "after task 9, before task 10");

    for limit in [1, 4, 7, 25, 100] {
        let (items, pages) = walk(server, run.flow, limit).await;
        assert_eq!(
            ids(&Value::Array(items.clone())),
            expected_ids,
            "limit {limit}"
        );
        assert_eq!(
            pages,
            25_usize.div_ceil(limit as usize).max(1),
            "limit {limit}"
        );
        let unique: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
        assert_eq!(unique.len(), 25, "each child exactly once (limit {limit})");
        // Each child with its own states: a task Pending, Running, Completed; a subflow its
        // Pending.
        for item in &items {
            let states: Vec<&str> = item["states"]
                .as_array()
                .expect("states")
                .iter()
                .map(|s| s["state"].as_str().expect("state"))
                .collect();
            let want: &[&str] = if item["kind"] == "flow" {
                &["Pending"]
            } else {
                &["Pending", "Running", "Completed"]
            };
            assert_eq!(states, want, "{item}");
        }
    }

    // A flow run without children.
    let lonely = flow_run("lonely", 0, start);
    ingest_all(server, &lonely.events).await;
    let empty = server
        .get_ok(&format!(
            "/api/v1/flow-runs/{}/task-runs?limit=1",
            lonely.flow
        ))
        .await;
    assert_eq!(empty["items"], Value::Array(vec![]));
    assert!(empty["next_cursor"].is_null());
}

async fn task_runs_limits_are_checked(server: &TestServer) {
    let run = flow_run("limits", 2, Utc::now() - Duration::minutes(1));
    ingest_all(server, &run.events).await;
    let base = format!("/api/v1/flow-runs/{}/task-runs", run.flow);
    for bad in [
        "0".to_string(),
        (MAX_PAGE_SIZE + 1).to_string(),
        "-1".into(),
        "many".into(),
    ] {
        let reply = server.get(&format!("{base}?limit={bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(reply.error_code(), "invalid_parameter", "limit={bad}");
        assert!(
            reply.error_message().contains("limit"),
            "{}",
            reply.error_message()
        );
    }
    let ok = server
        .get_ok(&format!("{base}?limit={MAX_PAGE_SIZE}"))
        .await;
    assert_eq!(ok["items"].as_array().map(Vec::len), Some(2));
    let reply = server.get(&format!("{base}?cursor=not-a-cursor")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_cursor");
    let reply = server.get(&format!("{base}?page=2")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "unknown parameter");
}

/// A flow run of `n` task runs named `extract`, `transform`, `load` in turn; every seventh
/// failed, every eleventh (not failed) still running, the others completed. Returns the flow
/// id, the events and the expected `(name → state → count)`.
fn big_flow(n: usize) -> (Uuid, Vec<Event>, BTreeMap<String, BTreeMap<String, u64>>) {
    let start = Utc::now() - Duration::hours(1);
    let mut run = flow_run("big", 0, start);
    let mut expected: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for i in 0..n {
        let task = Uuid::now_v7();
        let name = ["extract", "transform", "load"][i % 3];
        let at = start + Duration::milliseconds(10) + Duration::microseconds(10 * i as i64);
        let last = if i % 7 == 0 {
            Some(StateType::Failed)
        } else if i % 11 == 0 {
            None
        } else {
            Some(StateType::Completed)
        };
        let details = RunDetails {
            task_key: format!("demo::{name}").into(),
            ..RunDetails::default()
        };
        let mut bodies = vec![
            state(StateType::Pending, Some(details)),
            state(StateType::Running, None),
        ];
        bodies.extend(last.map(|s| state(s, None)));
        for (k, body) in bodies.into_iter().enumerate() {
            run.events.push(event(
                task,
                RunKind::Task,
                name,
                run.flow,
                Some(run.flow),
                at + Duration::microseconds(k as i64 + 1),
                body,
            ));
        }
        *expected
            .entry(name.to_string())
            .or_default()
            .entry(last.unwrap_or(StateType::Running).as_str().to_string())
            .or_default() += 1;
    }
    (run.flow, run.events, expected)
}

async fn a_huge_flows_graph_is_bounded_and_summed_up(server: &TestServer) {
    let n = flowkit::testing::scaled(5000).max(GRAPH_MAX_NODES as usize + 100);
    let (flow, events, expected) = big_flow(n);
    ingest_all(server, &events).await;

    let graph = server
        .get_ok(&format!("/api/v1/flow-runs/{flow}/graph"))
        .await;
    let nodes = graph["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), GRAPH_MAX_NODES as usize);
    assert_eq!(graph["truncated"], true);
    assert_eq!(graph["total"], n as u64);
    // The nodes are the oldest children, the first page of task-runs.
    let page = server
        .get_ok(&format!(
            "/api/v1/flow-runs/{flow}/task-runs?limit={GRAPH_MAX_NODES}"
        ))
        .await;
    assert_eq!(ids(&graph["nodes"]), ids(&page["items"]));
    assert!(nodes.iter().all(|n| n["parameters"].is_null()));

    // The groups count every task run, per name and state.
    let groups = graph["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 3);
    let mut counted = 0;
    let mut got: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for group in groups {
        let name = group["name"].as_str().expect("name").to_string();
        let mut in_group = 0;
        for s in group["states"].as_array().expect("states") {
            let count = s["count"].as_u64().expect("count");
            in_group += count;
            got.entry(name.clone())
                .or_default()
                .insert(s["state"].as_str().expect("state").to_string(), count);
        }
        assert_eq!(group["count"].as_u64(), Some(in_group), "{group}");
        assert!(group["earliest_start"].is_string(), "{group}");
        assert!(group["latest_end"].is_string(), "{group}");
        counted += in_group;
    }
    assert_eq!(counted, n as u64, "every task run counted once");
    assert_eq!(got, expected);
    // Most runs first.
    let counts: Vec<u64> = groups.iter().filter_map(|g| g["count"].as_u64()).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    // Bounded bytes: 500 nodes, whatever the size of the flow (a node is well under 1 KiB).
    let bytes = serde_json::to_vec(&graph).expect("json").len();
    assert!(
        bytes < GRAPH_MAX_NODES as usize * 1024,
        "the graph answered {bytes} bytes"
    );

    // A flow at the bound is whole.
    let (small, events, _) = big_flow(GRAPH_MAX_NODES as usize);
    ingest_all(server, &events).await;
    let graph = server
        .get_ok(&format!("/api/v1/flow-runs/{small}/graph"))
        .await;
    assert_eq!(graph["truncated"], false);
    assert_eq!(graph["total"], GRAPH_MAX_NODES);
    assert_eq!(graph["groups"], Value::Array(vec![]));

    // Every task run, page by page, exactly once.
    let (items, _) = walk_big(server, flow).await;
    assert_eq!(items, n);
}

/// Walks the task runs of a flow without its own states check (a flow of [`big_flow`] has
/// two states): how many children, and how many pages.
async fn walk_big(server: &TestServer, flow: Uuid) -> (usize, usize) {
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut uri = format!("/api/v1/flow-runs/{flow}/task-runs");
        if let Some(c) = &cursor {
            uri.push_str(&format!("?cursor={}", urlencode(c)));
        }
        let page = server.get_ok(&uri).await;
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= MAX_PAGE_SIZE as usize);
        for id in ids(&page["items"]) {
            assert!(seen.insert(id), "a child on two pages");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10_000, "pagination does not end");
    }
    (seen.len(), pages)
}

async fn a_graph_of_many_names_keeps_a_bounded_number_of_groups(server: &TestServer) {
    // Every task of this fixture has a name of its own.
    let n = GRAPH_MAX_NODES as usize + GRAPH_MAX_GROUPS as usize;
    let run = flow_run("many_names", n, Utc::now() - Duration::hours(2));
    ingest_all(server, &run.events).await;
    let graph = server
        .get_ok(&format!("/api/v1/flow-runs/{}/graph", run.flow))
        .await;
    assert_eq!(graph["truncated"], true);
    assert_eq!(graph["total"], n as u64);
    let groups = graph["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), GRAPH_MAX_GROUPS as usize);
    let (named, other) = groups.split_at(groups.len() - 1);
    assert!(
        named
            .iter()
            .all(|g| g["count"] == 1 && g["name"].is_string())
    );
    assert!(other[0]["name"].is_null(), "{}", other[0]);
    assert_eq!(
        other[0]["count"].as_u64(),
        Some((n - named.len()) as u64),
        "the last group sums up every other name"
    );
    assert_eq!(
        other[0]["states"],
        serde_json::json!([{"state": "Completed", "count": n - named.len()}])
    );
    // Edges only between nodes shown: each task depends on the one before.
    let edges = graph["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), GRAPH_MAX_NODES as usize - 1);
}
