//! The HTTP API against a real store: the router in-process (`tower::ServiceExt::oneshot`) for
//! most tests, the real server on a free loopback port for the live stream and shutdown.
//!
//! Every data test runs on a temporary SQLite file, and on PostgreSQL too when
//! `FLOWKIT_TEST_PG_URL` is set (each test in a database of its own, created and dropped
//! here). Without it the PostgreSQL tests print why they skip — and fail when
//! `FLOWKIT_REQUIRE_SERVICES=1`, as in CI.
//!
//! Each backend's tests are compiled only with its cargo feature; the tests that need a SQLite
//! file (not about the data: errors, keys, the socket) only with `sqlite`.

// Without SQLite, the helpers only the SQLite-only tests use are unused.
#![cfg_attr(not(feature = "sqlite"), allow(unused_imports, dead_code))]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use flowkit::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use flowkit::state::{State, StateType};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::{Cli, Config, ConfigError, Settings};
use flowkit_server::store::{Backend, Store};
use flowkit_server::{AppState, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A store on a fresh database, and the router over it.
struct TestServer {
    store: Arc<Store>,
    router: Router,
    url: String,
    /// Keeps the SQLite file alive.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop at the end.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pg_drop: Option<(String, String)>,
}

/// A response: status, content type and the body parsed as JSON (`Value::Null` if it is not).
struct Reply {
    status: StatusCode,
    content_type: String,
    body: Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }
    fn error_message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("<no error message>")
    }
}

impl TestServer {
    #[cfg(feature = "sqlite")]
    async fn sqlite() -> TestServer {
        TestServer::sqlite_with(Settings::default()).await
    }

    #[cfg(feature = "sqlite")]
    async fn sqlite_with(settings: Settings) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let store = Arc::new(Store::connect(&url).await.expect("open SQLite store"));
        TestServer::over(store, settings, url, Some(dir), None)
    }

    #[cfg(feature = "postgres")]
    /// A server on a database of its own in the PostgreSQL of `FLOWKIT_TEST_PG_URL`; `None`
    /// (after saying why) when it is not set, unless services are required.
    async fn postgres() -> Option<TestServer> {
        let admin_url = pg_url()?;
        let db = format!("flowkit_api_{}", Uuid::now_v7().simple());
        let admin = sqlx_connect(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&admin_url, &db);
        let store = Arc::new(Store::connect(&url).await.expect("open PostgreSQL store"));
        Some(TestServer::over(
            store,
            Settings::default(),
            url,
            None,
            Some((admin_url, db)),
        ))
    }

    fn over(
        store: Arc<Store>,
        settings: Settings,
        url: String,
        dir: Option<tempfile::TempDir>,
        pg_drop: Option<(String, String)>,
    ) -> TestServer {
        let router = app(AppState::new(store.clone(), settings));
        TestServer {
            store,
            router,
            url,
            _dir: dir,
            pg_drop,
        }
    }

    /// Closes the store (and drops a PostgreSQL test database).
    async fn finish(self) {
        self.store.close().await;
        #[cfg(feature = "postgres")]
        if let Some((admin_url, db)) = self.pg_drop {
            let admin = sqlx_connect(&admin_url).await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }

    async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<Body>,
        auth: Option<&str>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(secret) = auth {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(body.unwrap_or_else(Body::empty))
            .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(
                content_type.starts_with("application/json") && body["error"]["code"].is_string(),
                "error {status} is not in the JSON shape: {content_type} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Reply {
            status,
            content_type,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.request(Method::GET, uri, None, None, None).await
    }

    async fn get_ok(&self, uri: &str) -> Value {
        let reply = self.get(uri).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {uri}: {}", reply.body);
        reply.body
    }

    async fn post_raw(&self, uri: &str, body: impl Into<Body>) -> Reply {
        self.request(
            Method::POST,
            uri,
            Some(body.into()),
            None,
            Some("application/json"),
        )
        .await
    }

    async fn post_json(&self, uri: &str, body: &impl serde::Serialize) -> Reply {
        self.post_raw(uri, serde_json::to_vec(body).expect("json"))
            .await
    }

    /// Posts events and expects 202.
    async fn ingest(&self, events: &[Event]) -> Value {
        let reply = self.post_json("/api/events", &events).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        reply.body
    }
}

#[cfg(feature = "postgres")]
fn pg_url() -> Option<String> {
    match std::env::var("FLOWKIT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "FLOWKIT_REQUIRE_SERVICES=1 but FLOWKIT_TEST_PG_URL is not set: \
                 the PostgreSQL tests cannot run"
            );
            eprintln!("skipping the PostgreSQL variant: FLOWKIT_TEST_PG_URL is not set");
            None
        }
    }
}

#[cfg(feature = "postgres")]
async fn sqlx_connect(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to FLOWKIT_TEST_PG_URL")
}

#[cfg(feature = "postgres")]
/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_and_path = &base[scheme_end..];
    let host = host_and_path.split('/').next().unwrap_or(host_and_path);
    format!("{}{host}/{db}{query}", &base[..scheme_end])
}

/// Runs each listed test on SQLite (`sqlite::name`) and PostgreSQL (`postgres::name`).
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = super::TestServer::sqlite().await;
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = super::TestServer::postgres().await else { return };
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
    };
}

on_every_backend!(
    health,
    ingest_then_read_back_through_every_route,
    replayed_batch_changes_nothing,
    one_bad_event_does_not_cost_the_good_ones,
    a_newer_clients_events_are_kept,
    hostile_strings_are_stored_verbatim,
    keyset_pagination,
    unknown_ids,
    reporter_drops,
    retention_deletes_old_runs,
);

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// A flow run with its tasks, as the runtime reports it.
struct FlowRun {
    flow: Uuid,
    tasks: Vec<Uuid>,
    events: Vec<Event>,
}

fn event(
    run: Uuid,
    kind: RunKind,
    name: &str,
    flow: Uuid,
    parent: Option<Uuid>,
    at: DateTime<Utc>,
    body: EventBody,
) -> Event {
    Event {
        id: Uuid::now_v7(),
        run_id: run,
        parent_run_id: parent,
        flow_run_id: Some(flow),
        run_kind: kind,
        name: name.to_string().into(),
        attempt: 1,
        timestamp: at,
        body,
    }
}

fn state(kind: StateType, details: Option<RunDetails>) -> EventBody {
    EventBody::State {
        state: State::new(kind),
        details: details.map(Box::new),
    }
}

fn log(level: LogLevel, message: &str) -> EventBody {
    let mut fields = serde_json::Map::new();
    fields.insert("attempt_note".into(), json!("<i>ok</i>"));
    EventBody::Log {
        level,
        message: message.to_string(),
        fields,
    }
}

/// `name`: Pending → Running → (task i: Pending → Running → log → Completed, each depending on
/// the one before) → WARN log → Completed, one millisecond apart from `start`.
fn flow_run(name: &str, tasks: usize, start: DateTime<Utc>) -> FlowRun {
    let flow = Uuid::now_v7();
    let mut at = start;
    let mut tick = || {
        at += Duration::milliseconds(1);
        at
    };
    let mut events = vec![
        event(
            flow,
            RunKind::Flow,
            name,
            flow,
            None,
            tick(),
            state(
                StateType::Pending,
                Some(RunDetails {
                    task_key: format!("demo::{name}").into(),
                    tags: vec!["nightly".into()],
                    parameters: Some(json!({"rows": 3})),
                    worker: Some("test-host:1".into()),
                    ..RunDetails::default()
                }),
            ),
        ),
        event(
            flow,
            RunKind::Flow,
            name,
            flow,
            None,
            tick(),
            state(StateType::Running, None),
        ),
    ];
    let mut ids: Vec<Uuid> = Vec::new();
    for i in 0..tasks {
        let task = Uuid::now_v7();
        let task_name = format!("step_{i}");
        let details = RunDetails {
            task_key: format!("demo::{task_name}").into(),
            upstream: ids.last().copied().into_iter().collect(),
            ..RunDetails::default()
        };
        for body in [
            state(StateType::Pending, Some(details)),
            state(StateType::Running, None),
            log(LogLevel::Info, &format!("step {i} working")),
            state(StateType::Completed, None),
        ] {
            events.push(event(
                task,
                RunKind::Task,
                &task_name,
                flow,
                Some(flow),
                tick(),
                body,
            ));
        }
        ids.push(task);
    }
    events.push(event(
        flow,
        RunKind::Flow,
        name,
        flow,
        None,
        tick(),
        log(LogLevel::Warn, "almost done"),
    ));
    events.push(event(
        flow,
        RunKind::Flow,
        name,
        flow,
        None,
        tick(),
        state(StateType::Completed, None),
    ));
    FlowRun {
        flow,
        tasks: ids,
        events,
    }
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("array")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data tests, on every backend
// ---------------------------------------------------------------------------------------------

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

async fn replayed_batch_changes_nothing(server: &TestServer) {
    let run = flow_run("replayed", 2, Utc::now() - Duration::minutes(1));
    server.ingest(&run.events).await;
    let before = (
        server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await,
        server
            .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
            .await,
        server
            .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
            .await,
    );
    let again = server.ingest(&run.events).await;
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": run.events.len(), "rejected": []})
    );
    let after = (
        server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await,
        server
            .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
            .await,
        server
            .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
            .await,
    );
    assert_eq!(before, after);
    let list = server.get_ok("/api/flow-runs").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

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
    later["state"] = json!({"type": "Cancelling", "message": "asked by ops", "by": "ops"});
    later["run_id"] = json!(run.flow);
    later["run_kind"] = json!("flow");
    later.as_object_mut().expect("object").remove("details");
    // A kind of event this server does not know: acknowledged, not stored.
    let mut record = batch[0].clone();
    record["id"] = json!(Uuid::now_v7());
    record["kind"] = json!("run_record");
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
    assert_eq!(health["event_kinds"], json!(["state", "log"]));
    assert_eq!(health["api_versions"], json!(["v1"]));
}

async fn one_bad_event_does_not_cost_the_good_ones(server: &TestServer) {
    let run = flow_run("partly_bad", 1, Utc::now() - Duration::minutes(1));
    let mut batch: Vec<Value> = run
        .events
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    let mut bad_kind = batch[0].clone();
    bad_kind["id"] = json!(Uuid::now_v7());
    bad_kind["run_kind"] = json!("workflow");
    let mut bad_type = batch[1].clone();
    bad_type["id"] = json!(Uuid::now_v7());
    bad_type["attempt"] = json!("first");
    let mut unknown = batch[1].clone();
    unknown["id"] = json!(Uuid::now_v7());
    unknown["priority"] = json!(9);
    batch.insert(1, bad_kind);
    batch.insert(3, bad_type);
    batch.push(unknown);
    let last = batch.len() - 1;

    let reply = server.post_json("/api/events", &batch).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let rejected = reply.body["rejected"].as_array().expect("rejected");
    let summary: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["error"]["message"].as_str().expect("message"),
            )
        })
        .collect();
    // The event with a field this server does not know is from a newer client: stored.
    assert_eq!(reply.body["accepted"], run.events.len() + 1);
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert_eq!(summary[0].0, 1);
    assert!(
        summary[0]
            .1
            .starts_with("field `run_kind`: unknown variant `workflow`"),
        "{}",
        summary[0].1
    );
    assert_eq!(summary[1].0, 3);
    assert!(
        summary[1].1.starts_with("field `attempt`"),
        "{}",
        summary[1].1
    );
    assert!(summary.iter().all(|(index, _)| *index != last as u64));
    assert!(
        rejected
            .iter()
            .all(|r| r["error"]["code"] == "invalid_event")
    );

    let detail = server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(detail["state"], "Completed");
    let tasks = server
        .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
        .await;
    assert_eq!(tasks["items"].as_array().map(Vec::len), Some(1));
}

async fn hostile_strings_are_stored_verbatim(server: &TestServer) {
    let nasty = [
        "'; DROP TABLE runs; --",
        "\"); DELETE FROM events; --",
        "<script>alert('x')</script>",
        "<img src=x onerror=alert(1)>",
        "Robert'); DROP TABLE students;-- 🦀 \\ % _ \u{202e}",
    ];
    let mut flows = Vec::new();
    for (i, name) in nasty.iter().enumerate() {
        let start = Utc::now() - Duration::minutes(10) + Duration::seconds(i as i64);
        let mut run = flow_run(name, 1, start);
        for event in &mut run.events {
            if let EventBody::Log { message, .. } = &mut event.body {
                *message = format!("{name} | {message}");
            }
        }
        server.ingest(&run.events).await;
        flows.push(run.flow);
    }
    // A NUL cannot be stored by PostgreSQL: in a log message it becomes U+FFFD, in a name the
    // event is rejected.
    let mut with_nul = flow_run("nul", 0, Utc::now() - Duration::minutes(20));
    for event in &mut with_nul.events {
        if let EventBody::Log { message, .. } = &mut event.body {
            *message = "before\0after".into();
        }
    }
    let mut bad_name = with_nul.events[0].clone();
    bad_name.id = Uuid::now_v7();
    bad_name.name = "a\0b".into();
    with_nul.events.push(bad_name);
    let answer = server.ingest(&with_nul.events).await;
    assert_eq!(
        answer["rejected"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let nul_logs = server
        .get_ok(&format!("/api/flow-runs/{}/logs", with_nul.flow))
        .await;
    assert_eq!(nul_logs["items"][0]["message"], "before\u{FFFD}after");

    for (name, flow) in nasty.iter().zip(&flows) {
        let detail = server.get_ok(&format!("/api/flow-runs/{flow}")).await;
        assert_eq!(detail["name"], *name);
        let logs = server
            .get_ok(&format!("/api/flow-runs/{flow}/logs?level=WARN"))
            .await;
        assert_eq!(logs["items"][0]["message"], format!("{name} | almost done"));
        let found = server
            .get_ok(&format!("/api/flow-runs?flow_name={}", urlencode(name)))
            .await;
        assert_eq!(
            ids(&found["items"]),
            vec![flow.to_string()],
            "flow_name={name}"
        );
    }
    // Search treats metacharacters literally.
    for (needle, expected) in [
        ("DROP TABLE", 2),
        ("%", 1),
        ("_", 1),
        ("'", 3),
        ("<script>", 1),
    ] {
        let found = server
            .get_ok(&format!("/api/flow-runs?search={}", urlencode(needle)))
            .await;
        assert_eq!(
            found["items"].as_array().map(Vec::len),
            Some(expected),
            "search={needle}"
        );
    }
    let all = server.get_ok("/api/flow-runs?limit=500").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(nasty.len() + 1));
    assert_eq!(server.get_ok("/api/health").await["status"], "ok");
}

async fn keyset_pagination(server: &TestServer) {
    let start = Utc::now() - Duration::hours(2);
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    for i in 0..120 {
        let run = flow_run(&format!("paged_{i}"), 0, start + Duration::seconds(i));
        expected.push(run.flow.to_string());
        batch.extend(run.events);
    }
    server.ingest(&batch).await;
    expected.reverse(); // Newest first.

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/flow-runs?limit=50&cursor={}", urlencode(c)),
            None => "/api/flow-runs?limit=50".to_string(),
        };
        let page = server.get_ok(&uri).await;
        pages += 1;
        seen.extend(ids(&page["items"]));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // A run arriving between two pages does not shift the next page.
    let first = server.get_ok("/api/flow-runs?limit=10").await;
    server
        .ingest(&flow_run("newest", 0, Utc::now()).events)
        .await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = server
        .get_ok(&format!(
            "/api/flow-runs?limit=10&cursor={}",
            urlencode(cursor)
        ))
        .await;
    assert_eq!(ids(&second["items"]), expected[10..20].to_vec());

    let bad = server.get("/api/flow-runs?cursor=not-a-cursor").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_cursor");
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

async fn reporter_drops(server: &TestServer) {
    let ok = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": 12, "worker": "build-7:4242"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let missing = server
        .post_json("/api/reporter-drops", &json!({"dropped": 1}))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        missing.error_message().contains("worker"),
        "{}",
        missing.error_message()
    );
    let unknown = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": 1, "worker": "w:1", "extra": true}),
        )
        .await;
    // A field from a newer client is ignored, not refused.
    assert_eq!(unknown.status, StatusCode::ACCEPTED, "{}", unknown.body);
    let negative = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": -1, "worker": "w:1"}),
        )
        .await;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = server.post_raw("/api/reporter-drops", "{").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "invalid_json");
}

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

// ---------------------------------------------------------------------------------------------
// The HTTP surface (SQLite)
// ---------------------------------------------------------------------------------------------

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

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn api_keys_and_scopes() {
    let key = |s: &str| s.parse::<ApiKey>().expect("key");
    let server = TestServer::sqlite_with(Settings {
        api_keys: ApiKeys::new(vec![
            key("dashboard:read-secret-0123456789:read"),
            key("ci:report-secret-0123456789:report"),
            key("ops:admin-secret-0123456789:admin"),
        ])
        .expect("keys"),
        ..Settings::default()
    })
    .await;
    let run = flow_run("guarded", 1, Utc::now() - Duration::minutes(1));
    let body = || Some(Body::from(serde_json::to_vec(&run.events).expect("json")));
    let post = |auth| {
        server.request(
            Method::POST,
            "/api/events",
            body(),
            auth,
            Some("application/json"),
        )
    };

    let none = post(None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_code(), "unauthorized");
    let wrong = post(Some("not-a-key-0123456789")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let reader = post(Some("read-secret-0123456789")).await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    assert_eq!(reader.error_code(), "forbidden");
    assert!(reader.error_message().contains("report"));
    assert_eq!(
        post(Some("report-secret-0123456789")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(Some("admin-secret-0123456789")).await.status,
        StatusCode::ACCEPTED
    );

    let read = |auth| server.request(Method::GET, "/api/flow-runs", None, auth, None);
    assert_eq!(read(None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        read(Some("wrong-wrong-wrong-wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        read(Some("report-secret-0123456789")).await.status,
        StatusCode::FORBIDDEN
    );
    let ok = read(Some("read-secret-0123456789")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ids(&ok.body["items"]), vec![run.flow.to_string()]);
    assert_eq!(
        read(Some("admin-secret-0123456789")).await.status,
        StatusCode::OK
    );

    for uri in [
        format!("/api/flow-runs/{}", run.flow),
        "/api/stats".into(),
        "/api/stream".into(),
    ] {
        let reply = server.request(Method::GET, &uri, None, None, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let drops = server
        .request(
            Method::POST,
            "/api/reporter-drops",
            Some(Body::from("{\"dropped\":1,\"worker\":\"w\"}")),
            Some("read-secret-0123456789"),
            Some("application/json"),
        )
        .await;
    assert_eq!(drops.status, StatusCode::FORBIDDEN);

    // Open without a key: the health probe, the API description and the placeholder page.
    assert_eq!(server.get("/api/health").await.status, StatusCode::OK);
    assert_eq!(server.get("/api/openapi.json").await.status, StatusCode::OK);
    assert_eq!(server.get("/").await.status, StatusCode::OK);
    server.finish().await;
}

#[tokio::test]
async fn refuses_to_listen_openly_without_keys() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["flowkit-server"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv)
            .expect("arguments parse")
            .into_config()
            .expect("config")
    };
    let open = parse(&["--bind", "0.0.0.0:4200"]);
    let err = open.check().expect_err("must refuse");
    assert!(matches!(err, ConfigError::OpenOnNetwork(_)));
    let message = err.to_string();
    assert!(
        message.contains("--api-key") && message.contains("--insecure-open"),
        "{message}"
    );
    parse(&["--bind", "0.0.0.0:4200", "--insecure-open"])
        .check()
        .expect("explicitly open");
    parse(&[
        "--bind",
        "0.0.0.0:4200",
        "--api-key",
        "a:0123456789abcdef:read",
    ])
    .check()
    .expect("with keys");
    parse(&["--bind", "[::1]:4200"]).check().expect("loopback");

    // `serve` refuses before touching the database or the network.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("never.db");
    let mut config = Config::new(format!("sqlite://{}", db.display()));
    config.bind = "0.0.0.0:0".parse().expect("addr");
    let err = flowkit_server::serve(config)
        .await
        .expect_err("must refuse");
    assert!(err.to_string().contains("refusing to listen"), "{err}");
    assert!(!db.exists());
}

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
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/events"),
        ("post", "/api/v1/reporter-drops"),
        ("get", "/api/v1/flow-runs"),
        ("get", "/api/v1/flow-runs/{id}"),
        ("get", "/api/v1/flow-runs/{id}/task-runs"),
        ("get", "/api/v1/flow-runs/{id}/logs"),
        ("get", "/api/v1/flow-runs/{id}/graph"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/stream"),
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
            let uri = path.replace("{id}", &Uuid::now_v7().to_string());
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
    ] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        assert!(
            params.iter().any(|p| p["name"] == param),
            "{path} lacks {param}"
        );
    }
    assert!(doc["paths"]["/api/v1/events"]["post"]["requestBody"].is_object());
    assert!(doc["paths"]["/api/v1/reporter-drops"]["post"]["requestBody"].is_object());
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
    ] {
        assert!(codes.contains(code), "ErrorCode lacks {code}: {codes}");
    }
    server.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Over a real socket: the live stream and graceful shutdown
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
/// The real server on a free loopback port, stopped by dropping or sending on `stop`.
struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    url: String,
    _dir: tempfile::TempDir,
}

#[cfg(feature = "sqlite")]
async fn start(settings: Settings) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let store = Arc::new(Store::connect(&url).await.expect("store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = Config::new(url.clone());
    config.bind = addr;
    config.retention = None;
    config.settings = settings;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        flowkit_server::run(listener, store, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        addr,
        stop: Some(stop),
        task,
        url,
        _dir: dir,
    }
}

#[cfg(feature = "sqlite")]
/// Reads the SSE response until `needle` shows up (or fails after 10 s).
async fn read_until(response: &mut reqwest::Response, buffer: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !buffer.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {buffer:?}"))
            .expect("read stream");
        match chunk {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => panic!("stream ended before {needle:?}; got {buffer:?}"),
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_run_changes() {
    let server = start(Settings::default()).await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect to the stream");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|ct| ct.starts_with("text/event-stream"))
    );
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;

    let run = flow_run("live", 1, Utc::now());
    let reply = client
        .post(format!("http://{}/api/events", server.addr))
        .json(&run.events)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 202);
    read_until(&mut stream, &mut buffer, &run.tasks[0].to_string()).await;
    read_until(&mut stream, &mut buffer, &run.flow.to_string()).await;
    let flow_change = buffer
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|change| change["run_id"] == run.flow.to_string())
        .expect("a change of the flow run");
    assert_eq!(
        flow_change,
        json!({"run_id": run.flow, "flow_run_id": run.flow, "kind": "flow", "name": "live", "state": "Completed"})
    );
    assert!(buffer.contains("event: run"));

    // A replay changes nothing, and is not announced.
    client
        .post(format!("http://{}/api/events", server.addr))
        .json(&run.events)
        .send()
        .await
        .expect("post");
    if let Ok(chunk) =
        tokio::time::timeout(std::time::Duration::from_millis(300), stream.chunk()).await
    {
        panic!("a replay was announced: {chunk:?}");
    }

    stop(server).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_clients_are_told_to_refetch() {
    let server = start(Settings {
        stream_capacity: 2,
        ..Settings::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect");
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;
    let events: Vec<Event> = (0..200)
        .flat_map(|i| flow_run(&format!("burst_{i}"), 0, Utc::now()).events)
        .collect();
    let reply = client
        .post(format!("http://{}/api/events", server.addr))
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 202);
    read_until(&mut stream, &mut buffer, "event: lagged").await;
    assert!(buffer.contains("\"missed\":"), "{buffer}");
    stop(server).await;
}

#[cfg(feature = "sqlite")]
async fn stop(mut server: Running) {
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops within 10 s")
        .expect("join")
        .expect("run");
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = start(Settings::default()).await;
    let client = reqwest::Client::new();
    // An open live stream must not hold the shutdown up.
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect");
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;

    // A request in flight: headers and half of the body sent.
    let run = flow_run("in_flight", 3, Utc::now());
    let body = serde_json::to_vec(&run.events).expect("json");
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("write head");
    let half = body.len() / 2;
    socket.write_all(&body[..half]).await.expect("write half");
    socket.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !server.task.is_finished(),
        "the server stopped with a request in flight"
    );

    socket
        .write_all(&body[half..])
        .await
        .expect("write the rest");
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut response),
    )
    .await
    .expect("response within 10 s")
    .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");

    tokio::time::timeout(std::time::Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops once the request is answered")
        .expect("join")
        .expect("run");
    // The live stream ended with the server.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream did not end");
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "still accepting connections"
    );

    // The acknowledged batch is in the database.
    let store = Store::connect(&server.url).await.expect("reopen");
    let flow = store
        .get_run(run.flow)
        .await
        .expect("get")
        .expect("the flow run was stored");
    assert_eq!(flow.state, StateType::Completed);
    assert_eq!(store.child_runs(run.flow).await.expect("children").len(), 3);
    store.close().await;
}

/// Percent-encodes a query value.
fn urlencode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_over_a_real_socket_gets_a_json_413() {
    let server = start(Settings {
        max_body: 1024 * 1024,
        ..Settings::default()
    })
    .await;
    let client = reqwest::Client::new();
    let body = format!("[\"{}\"]", "x".repeat(3 * 1024 * 1024));
    for content_length in [true, false] {
        let request = client
            .post(format!("http://{}/api/events", server.addr))
            .header("content-type", "application/json");
        let request = if content_length {
            request.body(body.clone())
        } else {
            // Chunked: the limit is only found while reading.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                .as_bytes()
                .chunks(64 * 1024)
                .map(|c| Ok(c.to_vec()))
                .collect();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        };
        let response = request.send().await.expect("an answer, not a reset");
        assert_eq!(response.status(), 413);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "payload_too_large");
    }
    stop(server).await;
}

/// A row the server cannot have written (edited by hand, damaged) is a plain 500 for the
/// client, and the store's description of what is wrong goes to the log.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_corrupt_row_is_a_logged_500() {
    use sqlx::Connection as _;
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps the fields of every ERROR event, as `name=value` text.
    #[derive(Clone, Default)]
    struct Errors(Arc<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() != tracing::Level::ERROR {
                return;
            }
            let mut text = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    let _ = write!(text, "{}={value:?} ", field.name());
                },
            );
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
        }
    }
    let errors = Errors::default();
    // This test's thread only: the current-thread runtime runs the handler here.
    let _logging =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    let server = TestServer::sqlite().await;
    let run = flow_run("damaged", 1, Utc::now() - Duration::minutes(1));
    server.ingest(&run.events).await;
    let mut db = sqlx::SqliteConnection::connect(&server.url)
        .await
        .expect("open the file");
    sqlx::query("UPDATE runs SET attempt = -1")
        .execute(&mut db)
        .await
        .expect("damage the runs");
    db.close().await.expect("close");

    let reply = server.get(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error_code(), "internal");
    assert_eq!(reply.error_message(), "internal error", "nothing leaks");
    let logged = errors.0.lock().expect("errors").clone();
    assert!(
        logged
            .iter()
            .any(|e| e.contains("corrupt row: attempt -1 is out of range")),
        "the cause must be logged as an error: {logged:?}"
    );
    server.finish().await;
}
