//! Server-side alerts: rules over the API, a run entering a listed state → a real HTTP
//! receiver on loopback gets the message (once), retries with backoff while the receiver is
//! down, a restart in between, a run crashed by the reaper after its worker died, the quiet
//! period of a flapping flow, masked secrets, bad rules,
//! worker absences, and rules changed (`PATCH`): edited, paused and resumed, a target removed,
//! the stored URLs kept when sent back masked, bad changes refused at their fields, changes made
//! at once merged (compare and set). The alerts tick is called with chosen instants (its clock), so
//! nothing here waits out a backoff or a quiet period.

use crate::harness::TestServer;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use flowkit_server::AppState;
use flowkit_server::alerts::{TickOutcome, tick};
use flowkit_server::config::Settings;
use flowkit_server::store::{Backend, Store};
use flowkit_server::wire::{Event, EventBody, RunDetails, RunKind, State, StateType};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

const PUBLIC_URL: &str = "https://flowkit.example.com";
const SECRET: &str = "T0SECRET/B0SECRET/xoxb-very-secret-token";

fn settings() -> Settings {
    Settings {
        public_url: Some(PUBLIC_URL.to_string()),
        ..Settings::default()
    }
}

on_every_backend!(
    settings = super::settings();
    a_failed_run_sends_one_alert_naming_it_with_a_link,
    a_timed_out_run_alerts_too,
    a_hanging_receiver_never_blocks_ingestion,
    a_receiver_down_gets_it_after_it_returns_across_a_restart,
    a_crashed_run_alerts_though_its_worker_is_gone,
    the_quiet_period_collapses_a_flapping_flow,
    secrets_are_masked_bad_rules_refused_and_delete_removes,
    worker_absence_fires_once_per_absence,
    states_the_server_decides_fire_too,
    the_number_of_rules_is_bounded,
    rules_are_edited_and_paused_keeping_their_secrets,
    bad_changes_are_refused_at_their_fields,
    changes_made_at_once_all_land,
);

/// A receiver on 127.0.0.1: records every request (path, JSON body) and answers with the
/// queued statuses in turn, then 200.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(String, Value)>>,
    answers: Mutex<VecDeque<u16>>,
}

impl Receiver {
    fn got(&self) -> Vec<(String, Value)> {
        self.got.lock().expect("lock").clone()
    }
}

async fn record(
    axum::extract::State(rec): axum::extract::State<Arc<Receiver>>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> StatusCode {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    rec.got
        .lock()
        .expect("lock")
        .push((uri.path().to_string(), json));
    let code = rec.answers.lock().expect("lock").pop_front().unwrap_or(200);
    StatusCode::from_u16(code).expect("status")
}

/// Serves a receiver on `listener`; stops when the handle is aborted.
fn serve(listener: tokio::net::TcpListener, rec: Arc<Receiver>) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().fallback(record).with_state(rec);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn receiver(answers: &[u16]) -> (String, Arc<Receiver>, tokio::task::JoinHandle<()>) {
    let rec = Arc::new(Receiver::default());
    rec.answers.lock().expect("lock").extend(answers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (base, rec.clone(), serve(listener, rec))
}

/// Ingests a flow run of `flow` (deployment `deployment`, tag `nightly`): Running, then
/// `state` with `message`. Returns its id.
async fn run_ending(
    server: &TestServer,
    flow: &str,
    deployment: &str,
    state: StateType,
    message: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    let at = Utc::now();
    let details = RunDetails {
        task_key: format!("etl::{flow}").into(),
        tags: vec!["nightly".into()],
        deployment: Some(deployment.to_string()),
        ..RunDetails::default()
    };
    let event = |at: DateTime<Utc>, body: EventBody| Event {
        id: Uuid::now_v7(),
        run_id: id,
        parent_run_id: None,
        flow_run_id: Some(id),
        run_kind: RunKind::Flow,
        name: flow.to_string().into(),
        attempt: 1,
        timestamp: at,
        lease: None,
        body,
    };
    server
        .ingest(&[
            event(
                at,
                EventBody::State {
                    state: State::new(StateType::Running),
                    details: Some(Box::new(details)),
                },
            ),
            event(
                at + Duration::milliseconds(1500),
                EventBody::State {
                    state: State {
                        kind: state,
                        message: Some(message.to_string()),
                    },
                    details: None,
                },
            ),
        ])
        .await;
    id
}

async fn create_rule(server: &TestServer, rule: Value) -> Value {
    let reply = server.post_json("/api/v1/alert-rules", &rule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

async fn deliveries(server: &TestServer, rule: &Value) -> Vec<Value> {
    let page = server
        .get_ok(&format!(
            "/api/v1/alert-rules/{}/deliveries",
            rule["id"].as_str().expect("id")
        ))
        .await;
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn tick_at(state: &AppState, now: DateTime<Utc>) -> TickOutcome {
    tick(state, now).await.expect("alerts tick")
}

async fn a_failed_run_sends_one_alert_naming_it_with_a_link(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    let rule = create_rule(
        server,
        json!({
            "name": "etl failures",
            "deployment": "etl/nightly",
            "states": ["Failed", "Crashed"],
            "webhook": format!("{base}/hook/{SECRET}"),
            "slack": format!("{base}/slack/{SECRET}"),
        }),
    )
    .await;
    // Not matching: another deployment, or a state the rule does not list.
    run_ending(server, "etl", "etl/hourly", StateType::Failed, "other").await;
    run_ending(server, "etl", "etl/nightly", StateType::Completed, "fine").await;
    let failed = run_ending(
        server,
        "etl",
        "etl/nightly",
        StateType::Failed,
        "boom: disk full",
    )
    .await;

    let now = Utc::now();
    let outcome = tick_at(&server.state, now).await;
    assert_eq!(outcome.created, 2, "{outcome:?}");
    assert_eq!(outcome.delivered, 2, "{outcome:?}");
    let again = tick_at(&server.state, now + Duration::hours(1)).await;
    assert_eq!(again, TickOutcome::default());
    assert_eq!(
        tick_at(&server.state, now + Duration::days(29))
            .await
            .pruned,
        0,
        "kept 30 days"
    );

    let got = rec.got();
    assert_eq!(got.len(), 2, "{got:?}");
    let hook = got
        .iter()
        .find(|(path, _)| path.starts_with("/hook/"))
        .map(|(_, body)| body.clone())
        .expect("the webhook got the alert");
    assert_eq!(hook["run_id"], failed.to_string());
    assert_eq!(hook["name"], "etl");
    assert_eq!(hook["deployment"], "etl/nightly");
    assert_eq!(hook["state"]["type"], "Failed");
    assert_eq!(hook["state"]["message"], "boom: disk full");
    assert_eq!(hook["rule"], "etl failures");
    assert_eq!(hook["url"], format!("{PUBLIC_URL}/runs/{failed}"));
    assert!(hook["at"].is_string(), "{hook}");
    let slack = got
        .iter()
        .find(|(path, _)| path.starts_with("/slack/"))
        .map(|(_, body)| body["text"].as_str().unwrap_or("").to_string())
        .expect("Slack got the message");
    assert!(slack.contains("Flow `etl`: *Failed*"), "{slack}");
    assert!(slack.contains("deployment `etl/nightly`"), "{slack}");
    assert!(slack.contains(">boom: disk full"), "{slack}");
    assert!(
        slack.contains(&format!("<{PUBLIC_URL}/runs/{failed}|view run>")),
        "{slack}"
    );

    let listed = deliveries(server, &rule).await;
    assert_eq!(listed.len(), 2);
    for d in &listed {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["run_id"], failed.to_string());
        assert_eq!(d["attempts"].as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(d["attempts"][0]["status_code"], 200, "{d}");
    }
    // Finished deliveries are kept for a bounded time, then deleted.
    let kept = chrono::Duration::from_std(flowkit_server::alerts::KEEP_DELIVERIES).expect("keep");
    let pruned = tick_at(&server.state, now + kept + Duration::minutes(1)).await;
    assert_eq!(pruned.pruned, 2, "{pruned:?}");
    assert!(deliveries(server, &rule).await.is_empty());
}

/// `TimedOut` (a run over its `timeout`) is alerted like a failure, saying so.
async fn a_timed_out_run_alerts_too(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    create_rule(
        server,
        json!({
            "name": "too slow",
            "flow": "etl",
            "states": ["TimedOut"],
            "webhook": format!("{base}/hook"),
        }),
    )
    .await;
    run_ending(
        server,
        "etl",
        "etl/nightly",
        StateType::Failed,
        "not listed",
    )
    .await;
    let slow = run_ending(
        server,
        "etl",
        "etl/nightly",
        StateType::TimedOut,
        "timed out after 5s",
    )
    .await;
    let outcome = tick_at(&server.state, Utc::now()).await;
    assert_eq!(outcome.delivered, 1, "{outcome:?}");
    let got = rec.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let alert = &got[0].1;
    assert_eq!(alert["run_id"], slow.to_string());
    assert_eq!(alert["state"]["type"], "TimedOut");
    assert_eq!(alert["state"]["message"], "timed out after 5s");
}

/// A receiver that accepts the connection and never answers holds an alert send for up to
/// [`SEND_TIMEOUT`](flowkit_server::alerts::SEND_TIMEOUT); meanwhile ingestion, reads and the
/// matching of new alerts go on: nothing of the send holds the database or the writer.
async fn a_hanging_receiver_never_blocks_ingestion(server: &TestServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let _hanging = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    create_rule(
        server,
        json!({"name": "hangs", "flow": "etl", "states": ["Failed"],
               "webhook": format!("{base}/hook")}),
    )
    .await;
    run_ending(server, "etl", "etl/nightly", StateType::Failed, "first").await;
    let state = server.state.clone();
    let stuck = tokio::spawn(async move { tick_at(&state, Utc::now()).await });
    tokio::time::timeout(std::time::Duration::from_secs(5), accepted.recv())
        .await
        .expect("the alert send reaches the receiver")
        .expect("receiver running");

    // While that send hangs: 40 more failing runs ingested, read back, and matched.
    let mut more = Vec::new();
    for i in 0..40 {
        more.push(
            run_ending(
                server,
                "etl",
                "etl/nightly",
                StateType::Failed,
                &format!("run {i}"),
            )
            .await,
        );
    }
    for id in &more {
        let run = server.get_ok(&format!("/api/v1/flow-runs/{id}")).await;
        assert_eq!(run["state"], "Failed", "{run}");
    }
    let matched = server
        .state
        .store()
        .match_alerts(flowkit_server::store::alerts::MatchOrder {
            now: Utc::now(),
            base_url: PUBLIC_URL.to_string(),
            limit: 100,
        })
        .await
        .expect("match alerts");
    // Each new failure matched (held back by the rule's quiet period, as the first one's alert
    // is being sent).
    assert_eq!(matched.events, 40, "{matched:?}");
    assert_eq!(matched.deliveries + matched.suppressed, 40, "{matched:?}");
    assert!(
        !stuck.is_finished(),
        "the send was still hanging while all of that happened"
    );
    stuck.abort();
}

/// Closes `server`'s store and opens the same database again: a restarted server.
async fn restarted(server: &TestServer) -> (Arc<Store>, AppState) {
    server.store.close().await;
    let store = Arc::new(Store::connect(&server.url).await.expect("reopen the store"));
    let state = AppState::new(store.clone(), settings());
    (store, state)
}

async fn a_receiver_down_gets_it_after_it_returns_across_a_restart(server: &TestServer) {
    // A port with nothing listening: connections are refused.
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = parked.local_addr().expect("addr");
    drop(parked);
    let rule = create_rule(
        server,
        json!({
            "name": "down",
            "flow": "etl",
            "states": ["Crashed"],
            "webhook": format!("http://{addr}/hook/{SECRET}"),
        }),
    )
    .await;
    let crashed = run_ending(
        server,
        "etl",
        "etl/nightly",
        StateType::Crashed,
        "worker gone",
    )
    .await;

    let t0 = Utc::now();
    let first = tick_at(&server.state, t0).await;
    assert_eq!((first.created, first.failed_attempts), (1, 1), "{first:?}");
    // Not due again before its backoff.
    assert_eq!(
        tick_at(&server.state, t0 + Duration::seconds(30)).await,
        TickOutcome::default()
    );

    // The receiver comes back, answering 503 once.
    let rec = Arc::new(Receiver::default());
    rec.answers.lock().expect("lock").push_back(503);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let _serving = serve(listener, rec.clone());
    let t1 = t0 + Duration::seconds(61);
    let second = tick_at(&server.state, t1).await;
    assert_eq!(second.failed_attempts, 1, "{second:?}");

    let mut metrics = String::new();
    server.state.metrics().render(&mut metrics);
    assert!(
        metrics.contains("flowkit_alert_delivery_failures_total 2"),
        "{metrics}"
    );

    // The server restarts: everything is in the database.
    let (store, state) = restarted(server).await;
    let t2 = t1 + Duration::seconds(121);
    let third = tick_at(&state, t2).await;
    assert_eq!(third.delivered, 1, "{third:?}");
    assert_eq!(
        tick_at(&state, t2 + Duration::days(1)).await,
        TickOutcome::default()
    );

    let got = rec.got();
    assert_eq!(got.len(), 2, "one 503, then the delivery: {got:?}");
    assert_eq!(got[0].1, got[1].1, "the same message each time");
    assert_eq!(got[1].1["run_id"], crashed.to_string());
    assert_eq!(got[1].1["state"]["type"], "Crashed");

    let reopened = server.with_store(store.clone(), state);
    let listed = deliveries(&reopened, &rule).await;
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempt_count"], 3);
    let codes: Vec<Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [Value::Null, json!(503), json!(200)], "{d}");
    assert!(d["attempts"][0]["error"].is_string(), "{d}");
    assert!(!d.to_string().contains("SECRET"), "{d}");
    store.close().await;
}

async fn the_quiet_period_collapses_a_flapping_flow(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    create_rule(
        server,
        json!({
            "name": "flapping",
            "tag": "nightly",
            "states": ["Failed"],
            "webhook": format!("{base}/hook"),
            "quiet_period": "1h",
        }),
    )
    .await;
    let n = flowkit::testing::scaled(50).max(2);
    for i in 0..n {
        run_ending(
            server,
            "flappy",
            "flappy/main",
            StateType::Failed,
            &format!("fail {i}"),
        )
        .await;
    }
    let now = Utc::now();
    let outcome = tick_at(&server.state, now).await;
    assert_eq!(outcome.created, 1, "{outcome:?}");
    assert_eq!(outcome.suppressed, n as u64 - 1, "{outcome:?}");
    assert_eq!(rec.got().len(), 1);
    assert!(rec.got()[0].1.get("suppressed").is_none());

    // After the quiet period, the next failure says how many were held back.
    run_ending(server, "flappy", "flappy/main", StateType::Failed, "again").await;
    let later = tick_at(&server.state, now + Duration::minutes(61)).await;
    assert_eq!(later.created, 1, "{later:?}");
    let got = rec.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1["suppressed"], n as u64 - 1);
    assert_eq!(got[1].1["state"]["message"], "again");
}

async fn secrets_are_masked_bad_rules_refused_and_delete_removes(server: &TestServer) {
    let url = format!("https://hooks.slack.com/services/{SECRET}");
    let created = create_rule(
        server,
        json!({"name": "masked", "states": ["Failed"], "slack": url, "webhook": "http://127.0.0.1:9/x?token=SECRETQ"}),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_string();
    let list = server.get_ok("/api/v1/alert-rules").await;
    let one = server.get_ok(&format!("/api/alert-rules/{id}")).await;
    let shown = deliveries(server, &created).await;
    for body in [&created, &list, &one, &json!(shown)] {
        let text = body.to_string();
        assert!(!text.contains("SECRET"), "{text}");
    }
    assert_eq!(one["slack"], "https://hooks.slack.com/…oken");
    assert_eq!(list["items"][0]["id"], id.as_str());

    for (rule, pointer) in [
        (
            json!({"name": "x", "states": ["Bogus"], "webhook": "https://h/x"}),
            "/states/0",
        ),
        (
            json!({"name": "x", "states": ["Completed"], "webhook": "https://h/x"}),
            "/states/0",
        ),
        (
            json!({"name": "x", "states": ["Failed"], "webhook": "ftp://h/x"}),
            "/webhook",
        ),
        (
            json!({"name": "x", "states": ["Failed"], "slack": "not a url"}),
            "/slack",
        ),
        (
            json!({"name": "x", "states": ["Failed"], "webhook": "https://h/x", "quiet_period": "soon"}),
            "/quiet_period",
        ),
        (
            json!({"name": "x", "worker_absent_for": "0s", "webhook": "https://h/x"}),
            "/worker_absent_for",
        ),
        (json!({"name": "x", "states": ["Failed"]}), "/webhook"),
        (json!({"name": "x", "webhook": "https://h/x"}), "/states"),
    ] {
        let reply = server.post_json("/api/v1/alert-rules", &rule).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{rule}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_body");
        let details = &reply.body["error"]["details"];
        assert_eq!(details[0]["pointer"], pointer, "{rule}: {}", reply.body);
        assert!(
            details[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("a valid rule: {"),
            "{}",
            reply.body
        );
    }
    let reply = server.post_raw("/api/v1/alert-rules", "{\"name\": \"x\", \"oops\": 1, \"states\": [\"Failed\"], \"webhook\": \"https://h/x\"}").await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );

    let bad_id = server.get("/api/v1/alert-rules/nope").await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let bad_cursor = server
        .get(&format!("/api/v1/alert-rules/{id}/deliveries?cursor=zzz"))
        .await;
    assert_eq!(
        bad_cursor.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_cursor.body
    );

    let delete = |id: String| async move {
        server
            .request(
                Method::DELETE,
                &format!("/api/v1/alert-rules/{id}"),
                None,
                None,
                // A DELETE needs no content type (no other site's page can send one).
                None,
            )
            .await
    };
    assert_eq!(delete(id.clone()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server
            .get(&format!("/api/v1/alert-rules/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(id.clone()).await.status, StatusCode::NOT_FOUND);
    let list = server.get_ok("/api/v1/alert-rules").await;
    assert_eq!(list["items"], json!([]));
    // No rule left: a failure queues nothing.
    run_ending(server, "etl", "etl/nightly", StateType::Failed, "unwatched").await;
    assert_eq!(
        tick_at(&server.state, Utc::now()).await,
        TickOutcome::default()
    );
}

async fn worker_absence_fires_once_per_absence(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    let rule = create_rule(
        server,
        json!({
            "name": "no workers",
            "deployment": "etl/nightly",
            "worker_absent_for": "5m",
            "webhook": format!("{base}/hook"),
        }),
    )
    .await;
    let worker = Uuid::now_v7();
    let heartbeat = json!({
        "worker": worker,
        "worker_name": "host:1",
        "deployments": [{"flow": "etl", "name": "nightly", "version": "v1"}],
        "leases": [],
    });
    let reply = server
        .post_json("/api/v1/workers/heartbeat", &heartbeat)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let now = Utc::now();
    assert_eq!(tick_at(&server.state, now).await.created, 0, "still live");
    assert_eq!(
        tick_at(&server.state, now + Duration::minutes(6))
            .await
            .created,
        1
    );
    assert_eq!(
        tick_at(&server.state, now + Duration::minutes(30))
            .await
            .created,
        0,
        "once"
    );
    let got = rec.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["worker_absence"]["absent_for_secs"], 300);
    assert_eq!(got[0].1["deployment"], "etl/nightly");
    assert!(got[0].1["run_id"].is_null());
    let listed = deliveries(server, &rule).await;
    assert_eq!(listed[0]["status"], "delivered");
}

/// Runs the server decides, not the runtime's events: the scheduler's `Late` and `Expired`,
/// a cancel of a run no worker started. The database triggers see every path.
async fn states_the_server_decides_fire_too(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    create_rule(
        server,
        json!({
            "name": "server decided",
            "flow": "etl",
            "states": ["Late", "Expired", "Cancelled"],
            "webhook": format!("{base}/hook"),
            "quiet_period": "0s",
        }),
    )
    .await;
    let anchor = (Utc::now() - Duration::seconds(59)).to_rfc3339();
    let spec = json!({
        "flow": "etl",
        "name": "sched",
        "flow_key": "etl::run",
        "version": "v1",
        "parameter_schema": {"type": "object", "properties": {"dataset": {"type": "string"}}},
        "output_schema": {},
        "default_parameters": {},
        "schedules": [{"interval": "1m", "anchor": anchor, "max_lateness": "3m"}],
    });
    let reply = server.post_json("/api/v1/deployments", &spec).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let detail = server.get_ok("/api/v1/deployments/etl/sched").await;
    let first: DateTime<Utc> = detail["schedules"][0]["next_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no next instant: {detail}"));
    let scheduler = |at| flowkit_server::scheduler::tick(&server.state, at);
    assert_eq!(
        scheduler(first + Duration::seconds(1))
            .await
            .expect("tick")
            .created,
        1
    );
    assert_eq!(
        scheduler(first + Duration::seconds(61))
            .await
            .expect("tick")
            .late,
        1
    );
    assert_eq!(
        tick_at(&server.state, first + Duration::seconds(62))
            .await
            .delivered,
        1
    );
    assert_eq!(
        scheduler(first + Duration::minutes(4))
            .await
            .expect("tick")
            .expired,
        1
    );
    assert_eq!(
        tick_at(&server.state, first + Duration::minutes(4))
            .await
            .delivered,
        1
    );

    let triggered = server
        .post_json(
            "/api/v1/deployments/etl/sched/runs",
            &json!({"parameters": {}}),
        )
        .await;
    assert!(triggered.status.is_success(), "{}", triggered.body);
    let id = triggered.body["id"].as_str().expect("run id").to_string();
    let cancelled = server
        .post_json(&format!("/api/v1/flow-runs/{id}/cancel"), &json!({}))
        .await;
    assert!(cancelled.status.is_success(), "{}", cancelled.body);
    // (The alerts' clock is past `first + 4m` already: the quiet period's clock goes on.)
    assert_eq!(
        tick_at(&server.state, first + Duration::minutes(5))
            .await
            .delivered,
        1
    );

    let states: Vec<Value> = rec
        .got()
        .iter()
        .map(|(_, body)| body["state"]["type"].clone())
        .collect();
    assert_eq!(
        states,
        [json!("Late"), json!("Expired"), json!("Cancelled")]
    );
    assert_eq!(rec.got()[2].1["run_id"], id.as_str());
    assert_eq!(rec.got()[0].1["deployment"], "etl/sched");
}

/// A deployed run whose worker died: no process is left to run an `on_failure` hook, the
/// reaper decides `Crashed` once the lease has passed, and the rule's webhook is told.
async fn a_crashed_run_alerts_though_its_worker_is_gone(server: &TestServer) {
    let server = server.with_settings(Settings {
        lease: std::time::Duration::from_secs(1),
        ..settings()
    });
    let (base, rec, _serving) = receiver(&[]).await;
    create_rule(
        &server,
        json!({
            "name": "crashes",
            "flow": "etl",
            "states": ["Crashed"],
            "webhook": format!("{base}/hook"),
            "quiet_period": "0s",
        }),
    )
    .await;
    let spec = json!({
        "flow": "etl",
        "name": "nightly",
        "flow_key": "etl::run",
        "version": "v1",
        "parameter_schema": {"type": "object"},
        "output_schema": {},
        "default_parameters": {},
    });
    let reply = server.post_json("/api/v1/deployments", &spec).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let triggered = server
        .post_json(
            "/api/v1/deployments/etl/nightly/runs",
            &json!({"parameters": {}}),
        )
        .await;
    assert_eq!(triggered.status, StatusCode::CREATED, "{}", triggered.body);
    let id = triggered.body["id"].as_str().expect("run id").to_string();
    // A worker claims it, and dies: no heartbeat, no finish.
    let served = json!([{"flow": "etl", "name": "nightly", "version": "v1"}]);
    let claimed = server.claim(Uuid::now_v7(), "doomed:1", served, 1, 0).await;
    assert_eq!(claimed["runs"][0]["run_id"], id.as_str(), "{claimed}");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let reaped = flowkit_server::reaper::reap_now(&server.state)
        .await
        .expect("reap");
    assert_eq!(reaped, 1);
    let run = server.get_ok(&format!("/api/v1/flow-runs/{id}")).await;
    assert_eq!(run["state"], "Crashed", "{run}");
    assert!(rec.got().is_empty(), "nothing sent before the alerts tick");
    assert_eq!(tick_at(&server.state, Utc::now()).await.delivered, 1);
    let got = rec.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = &got[0].1;
    assert_eq!(body["state"]["type"], "Crashed", "{body}");
    assert_eq!(body["run_id"], id.as_str(), "{body}");
    assert_eq!(body["deployment"], "etl/nightly", "{body}");
    assert!(
        body["url"]
            .as_str()
            .is_some_and(|url| url.starts_with(PUBLIC_URL)),
        "a link to the run page: {body}"
    );
}

/// The server keeps at most `MAX_RULES` rules: one more is a 409 saying so, also when many
/// creates race for the last places (PostgreSQL runs them on several connections at once).
async fn the_number_of_rules_is_bounded(server: &TestServer) {
    use flowkit_server::wire::api::alerts::MAX_RULES;
    use tower::ServiceExt;
    const ROOM: usize = 3;
    const TRIES: usize = 24;
    for i in 0..MAX_RULES - ROOM {
        let reply = server
            .post_json(
                "/api/v1/alert-rules",
                &json!({"name": format!("r{i}"), "states": ["Failed"], "webhook": "https://h.example/x"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{i}: {}", reply.body);
    }
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..TRIES {
        let router = server.router();
        creates.spawn(async move {
            let body = json!({"name": format!("race {i}"), "states": ["Failed"], "webhook": "https://h.example/x"});
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/api/v1/alert-rules")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .expect("request");
            router.oneshot(request).await.expect("infallible").status()
        });
    }
    let mut answers = (0, 0);
    while let Some(status) = creates.join_next().await {
        match status.expect("task") {
            StatusCode::CREATED => answers.0 += 1,
            StatusCode::CONFLICT => answers.1 += 1,
            other => panic!("a create answered {other}"),
        }
    }
    assert_eq!(answers, (ROOM, TRIES - ROOM));
    let reply = server
        .post_json(
            "/api/v1/alert-rules",
            &json!({"name": "one more", "states": ["Failed"], "webhook": "https://h.example/x"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert!(
        reply.error_message().contains("at most 1000"),
        "{}",
        reply.body
    );
    let list = server.get_ok("/api/v1/alert-rules").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(MAX_RULES));
}

async fn patch_rule(server: &TestServer, id: &str, body: &Value) -> crate::harness::Reply {
    server
        .request(
            Method::PATCH,
            &format!("/api/v1/alert-rules/{id}"),
            Some(axum::body::Body::from(
                serde_json::to_vec(body).expect("json"),
            )),
            None,
            Some("application/json"),
        )
        .await
}

async fn patched(server: &TestServer, id: &str, body: Value) -> Value {
    let reply = patch_rule(server, id, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{body}: {}", reply.body);
    // The answer is what is stored.
    assert_eq!(
        server.get_ok(&format!("/api/v1/alert-rules/{id}")).await,
        reply.body
    );
    reply.body
}

/// `PATCH /alert-rules/{id}`: a subset of fields changes, the rest stays; the masked URLs the
/// API shows, sent back, keep the stored ones (the receiver gets the full secret paths);
/// `enabled: false` pauses the rule (a failure then sends nothing) until `enabled: true`;
/// `null` removes a target, but not the last one.
async fn rules_are_edited_and_paused_keeping_their_secrets(server: &TestServer) {
    let (base, rec, _serving) = receiver(&[]).await;
    let rule = create_rule(
        server,
        json!({
            "name": "etl failures",
            "flow": "etl",
            "tag": "nightly",
            "states": ["Failed"],
            "webhook": format!("{base}/hook/{SECRET}"),
            "slack": format!("{base}/slack/{SECRET}"),
            "quiet_period": "0s",
        }),
    )
    .await;
    assert_eq!(rule["enabled"], true, "{rule}");
    let id = rule["id"].as_str().expect("id").to_string();

    // The whole rule as the API shows it, sent back with a new name and states.
    let mut shown = rule.clone();
    let object = shown.as_object_mut().expect("object");
    object.remove("id");
    object.remove("created");
    object.insert("name".into(), json!("etl trouble"));
    object.insert("states".into(), json!(["Failed", "Crashed"]));
    let edited = patched(server, &id, shown).await;
    assert_eq!(edited["name"], "etl trouble");
    assert_eq!(edited["states"], json!(["Failed", "Crashed"]));
    assert_eq!(edited["webhook"], rule["webhook"]);
    assert_eq!(edited["created"], rule["created"]);
    assert!(!edited.to_string().contains("SECRET"), "{edited}");

    // Paused: a failure sends nothing.
    let paused = patched(server, &id, json!({"enabled": false})).await;
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["name"], "etl trouble", "the rest stays");
    let listed = server.get_ok("/api/v1/alert-rules").await;
    assert_eq!(listed["items"][0]["enabled"], false, "{listed}");
    run_ending(server, "etl", "etl/nightly", StateType::Crashed, "unseen").await;
    let now = Utc::now();
    let outcome = tick_at(&server.state, now).await;
    assert_eq!(
        outcome.created, 0,
        "a disabled rule matches nothing: {outcome:?}"
    );
    assert_eq!(outcome.events, 1, "{outcome:?}");
    assert!(rec.got().is_empty());

    // Resumed: the next failure goes to both stored URLs, in full.
    patched(server, &id, json!({"enabled": true})).await;
    let failed = run_ending(server, "etl", "etl/nightly", StateType::Crashed, "seen").await;
    let outcome = tick_at(&server.state, now + Duration::seconds(1)).await;
    assert_eq!(outcome.delivered, 2, "{outcome:?}");
    let mut paths: Vec<String> = rec.got().into_iter().map(|(path, _)| path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [format!("/hook/{SECRET}"), format!("/slack/{SECRET}")]
    );
    let got = rec.got();
    let webhook = got
        .iter()
        .find(|(path, _)| path.starts_with("/hook/"))
        .map(|(_, body)| body)
        .expect("the webhook's message");
    assert_eq!(webhook["run_id"], failed.to_string());
    assert_eq!(webhook["rule"], "etl trouble");

    // `null` removes a field: the Slack target and the flow.
    let fewer = patched(server, &id, json!({"slack": null, "flow": null})).await;
    assert!(fewer.get("slack").is_none(), "{fewer}");
    assert!(fewer.get("flow").is_none(), "{fewer}");
    assert_eq!(fewer["tag"], "nightly");
    run_ending(
        server,
        "other",
        "other/x",
        StateType::Failed,
        "any flow now",
    )
    .await;
    let outcome = tick_at(&server.state, now + Duration::seconds(2)).await;
    assert_eq!(
        outcome.delivered, 1,
        "only the webhook is left: {outcome:?}"
    );
    assert_eq!(rec.got()[2].0, format!("/hook/{SECRET}"));

    // Not the last target: the rule is unchanged.
    let refused = patch_rule(server, &id, &json!({"webhook": null, "name": "x"})).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"]["details"][0]["pointer"], "/webhook");
    let kept = server.get_ok(&format!("/api/v1/alert-rules/{id}")).await;
    assert_eq!(kept, fewer);

    // A new URL replaces the stored one (shown masked).
    let moved = patched(
        server,
        &id,
        json!({"webhook": "https://ops.example.com/hooks/NEWSECRET-1234"}),
    )
    .await;
    assert_eq!(moved["webhook"], "https://ops.example.com/…1234");

    // Unknown and malformed ids.
    let unknown = patch_rule(server, &Uuid::now_v7().to_string(), &json!({"name": "x"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let bad = patch_rule(server, "nope", &json!({"name": "x"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
}

/// Every bad change is a 422 at its field's JSON pointer, with a valid rule as an example;
/// the rule stays as it was.
async fn bad_changes_are_refused_at_their_fields(server: &TestServer) {
    let rule = create_rule(
        server,
        json!({"name": "r", "states": ["Failed"], "webhook": "https://h.example/x"}),
    )
    .await;
    let id = rule["id"].as_str().expect("id").to_string();
    for (body, pointer) in [
        (json!({"states": ["Completed"]}), "/states/0"),
        (json!({"states": ["Nope"]}), "/states/0"),
        (json!({"states": []}), "/states"),
        (json!({"states": null}), "/states"),
        (json!({"name": " "}), "/name"),
        (json!({"name": null}), "/name"),
        (json!({"name": 5}), "/name"),
        (json!({"enabled": "yes"}), "/enabled"),
        (json!({"enabled": null}), "/enabled"),
        (json!({"quiet_period": "soon"}), "/quiet_period"),
        (json!({"worker_absent_for": "0s"}), "/worker_absent_for"),
        (json!({"deployment": "nope"}), "/deployment"),
        (json!({"slack": "ftp://h/x"}), "/slack"),
        (json!({"tag": 3}), "/tag"),
        (json!({"oops": 1}), "/oops"),
        (json!(["name"]), ""),
    ] {
        let reply = patch_rule(server, &id, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_body");
        let details = &reply.body["error"]["details"];
        assert_eq!(details[0]["pointer"], pointer, "{body}: {}", reply.body);
        assert!(
            details[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("a valid rule: {"),
            "{}",
            reply.body
        );
    }
    let malformed = server
        .request(
            Method::PATCH,
            &format!("/api/v1/alert-rules/{id}"),
            Some(axum::body::Body::from("{\"name\": ")),
            None,
            Some("application/json"),
        )
        .await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.body
    );
    assert_eq!(
        server.get_ok(&format!("/api/v1/alert-rules/{id}")).await,
        rule,
        "unchanged"
    );
    // An empty change changes nothing, and is fine.
    assert_eq!(patched(server, &id, json!({})).await, rule);
}

/// A change is written only over the spec it was made from: the store refuses one made from
/// a spec changed since (so two changes read at once cannot undo each other), and the API,
/// given many changes of different fields at once, lands every one of them.
async fn changes_made_at_once_all_land(server: &TestServer) {
    let rule = create_rule(
        server,
        json!({"name": "cas", "states": ["Failed"], "webhook": "http://127.0.0.1:9/hook"}),
    )
    .await;
    let id: Uuid = rule["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let store = &server.store;
    let read = store.alert_rule(id).await.expect("read").expect("stored");
    let mut renamed = read.spec.clone();
    renamed.name = "first".into();
    assert!(
        store
            .update_alert_rule(id, read.spec.clone(), renamed.clone())
            .await
            .expect("update")
    );
    // Made from the spec as it was before "first" landed: refused, "first" stays.
    let mut stale = read.spec.clone();
    stale.tag = Some("late".into());
    assert!(
        !store
            .update_alert_rule(id, read.spec.clone(), stale)
            .await
            .expect("update")
    );
    let now = store.alert_rule(id).await.expect("read").expect("stored");
    assert_eq!(now.spec.name, "first");
    assert_eq!(now.spec.tag, None);
    // No such rule: refused too.
    assert!(
        !store
            .update_alert_rule(Uuid::now_v7(), renamed.clone(), renamed)
            .await
            .expect("update")
    );

    // Seven requests at once, each setting a field of its own: all of them land.
    let changes = [
        json!({"name": "merged"}),
        json!({"flow": "etl"}),
        json!({"tag": "nightly"}),
        json!({"states": ["Failed", "Crashed"]}),
        json!({"worker_absent_for": "5m"}),
        json!({"quiet_period": "1m"}),
        json!({"enabled": false}),
    ];
    let id_text = id.to_string();
    let replies =
        futures::future::join_all(changes.iter().map(|c| patch_rule(server, &id_text, c))).await;
    for (change, reply) in changes.iter().zip(&replies) {
        assert_eq!(reply.status, StatusCode::OK, "{change}: {}", reply.body);
    }
    let stored = server
        .get_ok(&format!("/api/v1/alert-rules/{id_text}"))
        .await;
    for change in &changes {
        for (field, value) in change.as_object().expect("object") {
            assert_eq!(&stored[field], value, "{field} lost: {stored}");
        }
    }
}
