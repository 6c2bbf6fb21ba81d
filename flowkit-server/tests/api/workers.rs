//! Deployed runs, server side: workers claim triggered runs under leases with fencing tokens,
//! heartbeat, finish or release them; the reaper decides runs whose worker went away; stale
//! tokens are refused on every call and event; cancel, retry, results and `Prefer: wait`. All
//! through the HTTP API, on every backend, with a lease of one second (the reaper is run by
//! the tests themselves, once a lease has passed).

use crate::fixtures::{event, state};
use crate::harness::{Reply, TestServer};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{Duration, Utc};
use flowkit_server::config::Settings;
use flowkit_server::reaper;
use flowkit_server::store::Backend;
use flowkit_server::wire::{Event, RunKind, StateType};
use serde_json::{Value, json};
use uuid::Uuid;

fn settings() -> Settings {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Settings {
        lease: std::time::Duration::from_secs(1),
        ..Settings::default()
    }
}

on_every_backend!(
    settings = super::settings();
    claims_take_due_runs_oldest_first_exactly_once,
    claims_follow_pinned_versions_and_concurrency_limits,
    claims_refuse_bad_bodies,
    a_waiting_claim_is_woken_by_a_trigger_and_the_wait_is_bounded,
    finish_stores_the_final_state_and_the_result,
    finish_after_the_reporter_delivered_the_final_event_still_ends_the_lease,
    server_states_hold_against_client_events_and_stale_tokens_are_refused,
    a_dead_workers_run_crashes_and_is_requeued_while_it_has_attempts,
    a_dead_workers_cancelling_run_becomes_cancelled,
    heartbeats_extend_leases_and_report_lost_ones,
    release_hands_a_run_back,
    cancel_and_retry_follow_the_state_rules,
    a_retried_run_keeps_its_version_and_parameters,
    bulk_cancel_takes_pages_of_matching_runs,
    results_are_read_and_waited_for,
    large_results_are_served_apart_and_too_large_ones_fail,
    a_trigger_without_version_runs_the_version_a_live_worker_serves,
);

const FLOW: &str = "train";
const NAME: &str = "nightly";

fn spec(version: &str, limit: Option<u32>, retries: u32) -> Value {
    json!({
        "flow": FLOW,
        "name": NAME,
        "flow_key": "houses::train",
        "version": version,
        "parameter_schema": {
            "type": "object",
            "properties": {"epochs": {"type": "integer"}},
            "additionalProperties": false
        },
        "output_schema": {},
        "default_parameters": {"epochs": 5},
        "tags": ["ml"],
        "concurrency_limit": limit,
        "retries": retries,
    })
}

async fn register(server: &TestServer, version: &str, limit: Option<u32>, retries: u32) {
    let reply = server
        .post_json("/api/v1/deployments", &spec(version, limit, retries))
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
}

async fn trigger(server: &TestServer, body: Value) -> Value {
    let reply = server
        .post_json(&format!("/api/v1/deployments/{FLOW}/{NAME}/runs"), &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

struct Worker {
    id: Uuid,
    name: String,
    versions: Vec<String>,
}

impl Worker {
    fn new(name: &str, versions: &[&str]) -> Worker {
        Worker {
            id: Uuid::now_v7(),
            name: name.to_string(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn served(&self) -> Value {
        self.versions
            .iter()
            .map(|v| json!({"flow": FLOW, "name": NAME, "version": v}))
            .collect()
    }

    async fn claim(&self, server: &TestServer, max_runs: u32, wait: u32) -> Vec<Value> {
        let answer = server
            .claim(self.id, &self.name, self.served(), max_runs, wait)
            .await;
        assert_eq!(answer["lease_seconds"], 1);
        answer["runs"].as_array().cloned().unwrap_or_default()
    }

    async fn heartbeat(&self, server: &TestServer, leases: &[(&str, u64)]) -> Value {
        let leases: Vec<Value> = leases
            .iter()
            .map(|(id, token)| json!({"run_id": id, "token": token}))
            .collect();
        let reply = server
            .post_json(
                "/api/v1/workers/heartbeat",
                &json!({
                    "worker": self.id,
                    "worker_name": self.name,
                    "deployments": self.served(),
                    "leases": leases,
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }
}

fn run_id(run: &Value) -> Uuid {
    run["run_id"]
        .as_str()
        .or(run["id"].as_str())
        .and_then(|id| id.parse().ok())
        .expect("a run id")
}

fn token(run: &Value) -> u64 {
    run["token"].as_u64().expect("a token")
}

/// A state event of a claimed flow run, as its worker's runtime sends it.
fn run_event(id: Uuid, kind: StateType, attempt: u32, lease: Option<u64>, skew: Duration) -> Event {
    let mut e = event(
        id,
        RunKind::Flow,
        FLOW,
        id,
        None,
        Utc::now() + skew,
        state(kind, None),
    );
    e.attempt = attempt;
    e.lease = lease;
    e
}

async fn finish(server: &TestServer, id: Uuid, token: u64, event: &Event, result: Value) -> Reply {
    server
        .post_json(
            &format!("/api/v1/flow-runs/{id}/finish"),
            &json!({"token": token, "event": event, "result": result}),
        )
        .await
}

async fn run(server: &TestServer, id: Uuid) -> Value {
    server.get_ok(&format!("/api/v1/flow-runs/{id}")).await
}

/// Lets every lease of a test (one second) expire, then runs the reaper once.
async fn expire_leases(server: &TestServer) -> usize {
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    reaper::reap_now(&server.state).await.expect("reap")
}

async fn claims_take_due_runs_oldest_first_exactly_once(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let first = trigger(server, json!({"parameters": {}})).await;
    let second = trigger(server, json!({"parameters": {"epochs": 9}})).await;
    let later = trigger(
        server,
        json!({"parameters": {}, "scheduled_for": Utc::now() + Duration::hours(1)}),
    )
    .await;
    assert_eq!(first["created_by"], "local");
    let worker = Worker::new("host:1", &["v1"]);
    let claimed = worker.claim(server, 10, 0).await;
    let ids: Vec<Uuid> = claimed.iter().map(run_id).collect();
    assert_eq!(
        ids,
        [run_id(&first), run_id(&second)],
        "due runs, oldest first"
    );
    assert_eq!(claimed[0]["token"], 1);
    assert_eq!(claimed[0]["attempt"], 1);
    assert_eq!(claimed[0]["max_attempts"], 1);
    assert_eq!(claimed[0]["version"], "v1");
    assert_eq!(claimed[0]["tags"], json!(["ml"]));
    assert_eq!(claimed[1]["parameters"], json!({"epochs": 9}));
    let pending = run(server, run_id(&first)).await;
    assert_eq!(pending["state"], "Pending");
    assert_eq!(pending["worker"], "host:1");
    assert!(
        pending["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("claimed by worker host:1")),
        "{pending}"
    );
    // Claimed once: nothing left that is due, for this worker or another.
    assert!(worker.claim(server, 10, 0).await.is_empty());
    assert!(
        Worker::new("host:2", &["v1"])
            .claim(server, 10, 0)
            .await
            .is_empty()
    );
    assert_eq!(run(server, run_id(&later)).await["state"], "Scheduled");
    // The worker is listed as live, serving v1.
    let detail = server
        .get_ok(&format!("/api/v1/deployments/{FLOW}/{NAME}"))
        .await;
    assert_eq!(detail["serving_version"], "v1");
    let live = detail["live_workers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        live.iter()
            .any(|w| w["name"] == "host:1" && w["versions"] == json!(["v1"])),
        "{detail}"
    );
}

async fn claims_follow_pinned_versions_and_concurrency_limits(server: &TestServer) {
    register(server, "v1", None, 0).await;
    register(server, "v2", Some(1), 2).await;
    let pinned = trigger(server, json!({"parameters": {}, "version": "v1"})).await;
    let a = trigger(server, json!({"parameters": {}, "version": "v1"})).await;
    let _ = a;
    let b = trigger(server, json!({"parameters": {}})).await;
    let c = trigger(server, json!({"parameters": {}})).await;
    // A v2 worker never takes runs pinned to v1; the limit of v2 (1) leases one run at a time.
    let v2 = Worker::new("v2-host:1", &["v2"]);
    let got = v2.claim(server, 10, 0).await;
    assert_eq!(got.iter().map(run_id).collect::<Vec<_>>(), [run_id(&b)]);
    assert_eq!(got[0]["version"], "v2");
    assert_eq!(got[0]["max_attempts"], 3, "retries of v2 + 1");
    assert_eq!(run(server, run_id(&b)).await["version"], "v2");
    assert!(v2.claim(server, 10, 0).await.is_empty(), "at the limit");
    // The slot comes back when the run finishes.
    let done = run_event(
        run_id(&b),
        StateType::Completed,
        1,
        Some(1),
        Duration::zero(),
    );
    let reply = finish(server, run_id(&b), token(&got[0]), &done, json!(1)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let next = v2.claim(server, 10, 0).await;
    assert_eq!(next.iter().map(run_id).collect::<Vec<_>>(), [run_id(&c)]);
    // A worker of both versions takes the pinned runs, v1 having no limit.
    let both = Worker::new("both:1", &["v1", "v2"]);
    let got = both.claim(server, 10, 0).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(run_id(&got[0]), run_id(&pinned));
    assert!(got.iter().all(|r| r["version"] == "v1"));
}

async fn claims_refuse_bad_bodies(server: &TestServer) {
    let worker = Uuid::now_v7();
    let served = json!([{"flow": FLOW, "name": NAME, "version": "v1"}]);
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"flow": FLOW, "name": NAME, "version": format!("v{i}")}))
        .collect();
    let cases = [
        (json!({"max_runs": 0}), "/max_runs"),
        (json!({"max_runs": 101}), "/max_runs"),
        (json!({"max_runs": 1, "wait_seconds": 31}), "/wait_seconds"),
        (
            json!({"max_runs": 1, "deployments": too_many}),
            "/deployments",
        ),
        (
            json!({"max_runs": 1, "deployments": [{"flow": "no/slash", "name": NAME, "version": "v"}]}),
            "/deployments/0/flow",
        ),
        (json!({"max_runs": 1, "worker_name": ""}), "/worker_name"),
    ];
    for (patch, pointer) in cases {
        let mut body = json!({
            "worker": worker, "worker_name": "w:1", "deployments": served, "max_runs": 1
        });
        for (k, v) in patch.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let reply = server.post_json("/api/v1/workers/claim", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{patch}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_body");
        assert!(
            reply.body["error"]["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["pointer"] == pointer)),
            "{pointer}: {}",
            reply.body
        );
    }
    // Under /api too, like every route.
    let reply = server
        .post_json(
            "/api/workers/claim",
            &json!({"worker": worker, "worker_name": "w:1", "deployments": served, "max_runs": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn a_waiting_claim_is_woken_by_a_trigger_and_the_wait_is_bounded(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let worker = Worker::new("host:1", &["v1"]);
    // Nothing to claim: the answer comes after the wait, empty.
    let started = std::time::Instant::now();
    assert!(worker.claim(server, 1, 1).await.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // A trigger during the wait is claimed by the waiting claim, long before its wait ends.
    let started = std::time::Instant::now();
    let (claimed, triggered) = tokio::join!(worker.claim(server, 1, 20), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        trigger(server, json!({"parameters": {}})).await
    });
    assert_eq!(
        claimed.iter().map(run_id).collect::<Vec<_>>(),
        [run_id(&triggered)]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Nothing wakes a claim when a run comes due (`scheduled_for` passes): the waiting claim
    // finds it by looking again every second.
    let due = Utc::now() + Duration::milliseconds(1500);
    let later = trigger(server, json!({"parameters": {}, "scheduled_for": due})).await;
    let started = std::time::Instant::now();
    let claimed = worker.claim(server, 1, 20).await;
    assert_eq!(
        claimed.iter().map(run_id).collect::<Vec<_>>(),
        [run_id(&later)]
    );
    assert!(Utc::now() >= due, "not before it is due");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "found within a poll of coming due: {:?}",
        started.elapsed()
    );
}

async fn finish_stores_the_final_state_and_the_result(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let triggered = trigger(server, json!({"parameters": {}})).await;
    let id = run_id(&triggered);
    let worker = Worker::new("host:1", &["v1"]);
    let claimed = worker.claim(server, 1, 0).await;
    let lease = token(&claimed[0]);
    // The worker starts it: its Running event (with the token) takes over the claimed run.
    let running = run_event(id, StateType::Running, 1, Some(lease), Duration::zero());
    server.ingest(&[running]).await;
    assert_eq!(run(server, id).await["state"], "Running");
    // Not a final state, or not this run: 422.
    let not_final = run_event(id, StateType::Running, 1, Some(lease), Duration::zero());
    let reply = finish(server, id, lease, &not_final, json!(null)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let other = run_event(
        Uuid::now_v7(),
        StateType::Completed,
        1,
        Some(lease),
        Duration::zero(),
    );
    let reply = finish(server, id, lease, &other, json!(null)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    // A wrong token: 409 stale_lease, nothing changes.
    let done = run_event(
        id,
        StateType::Completed,
        1,
        Some(lease),
        -Duration::hours(1),
    );
    let reply = finish(server, id, lease + 1, &done, json!({"rmse": 0.1})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.error_code(), "stale_lease");
    // The worker's clock is an hour behind: the final state is still the run's latest.
    let reply = finish(server, id, lease, &done, json!({"rmse": 0.1})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Completed");
    let ended = reply.body["state_timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = server.get(&format!("/api/v1/flow-runs/{id}/result")).await;
    assert_eq!(result.status, StatusCode::OK);
    assert_eq!(result.body, json!({"rmse": 0.1}));
    // The reporter sends the same event later: a duplicate, nothing changes.
    let replay = server.ingest(std::slice::from_ref(&done)).await;
    assert_eq!(replay["duplicates"], 1, "{replay}");
    let after = run(server, id).await;
    assert_eq!(after["state"], "Completed");
    assert_eq!(after["state_timestamp"], ended);
    // The same finish again (its answer was lost): 200, unchanged.
    let reply = finish(server, id, lease, &done, json!({"rmse": 0.1})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // As a worker sends it (`Prefer: return=minimal`): 204, without the run.
    let minimal = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/api/v1/flow-runs/{id}/finish"))
        .header("content-type", "application/json")
        .header("prefer", "return=minimal");
    let body = json!({"token": lease, "event": &done, "result": {"rmse": 0.1}});
    let reply = server
        .request_with(minimal, serde_json::to_vec(&body).expect("json").into())
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(run(server, id).await["state_timestamp"], ended);
    // The lease ended: a heartbeat listing it hears it is lost.
    let beat = worker.heartbeat(server, &[(&id.to_string(), lease)]).await;
    assert_eq!(beat["lost"], json!([id]));
    // Unknown run: 404.
    let unknown = Uuid::now_v7();
    let e = run_event(unknown, StateType::Completed, 1, Some(1), Duration::zero());
    let reply = finish(server, unknown, 1, &e, json!(null)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
}

/// The worker's reporter may deliver the flow's final event before the worker's finish call
/// (same event id): the finish still stores the result and ends the lease.
async fn finish_after_the_reporter_delivered_the_final_event_still_ends_the_lease(
    server: &TestServer,
) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let worker = Worker::new("host:2", &["v1"]);
    let lease = token(&worker.claim(server, 1, 0).await[0]);
    let running = run_event(id, StateType::Running, 1, Some(lease), Duration::zero());
    server.ingest(&[running]).await;
    let done = run_event(id, StateType::Completed, 1, Some(lease), Duration::zero());
    let first = server.ingest(std::slice::from_ref(&done)).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let reply = finish(server, id, lease, &done, json!([1, 2])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Completed");
    let result = server.get(&format!("/api/v1/flow-runs/{id}/result")).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.body);
    assert_eq!(result.body, json!([1, 2]));
    let beat = worker.heartbeat(server, &[(&id.to_string(), lease)]).await;
    assert_eq!(beat["lost"], json!([id]), "the lease ended: {beat}");
    // The finish is the server's verdict: a client state event of the run that comes after
    // it, even an hour "newer" (a skewed clock), is kept in the history but moves nothing.
    let ahead = run_event(id, StateType::Running, 1, Some(lease), Duration::hours(1));
    let reply = server.ingest(&[ahead]).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(run(server, id).await["state"], "Completed");
}

async fn server_states_hold_against_client_events_and_stale_tokens_are_refused(
    server: &TestServer,
) {
    register(server, "v1", None, 1).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let worker = Worker::new("skewed:1", &["v1"]);
    let claimed = worker.claim(server, 1, 0).await;
    let lease = token(&claimed[0]);
    // A client state event other than the start, even an hour "newer", does not move a state
    // the server decided; it is kept in the history.
    let ahead = run_event(id, StateType::Failed, 1, Some(lease), Duration::hours(1));
    let reply = server.ingest(&[ahead]).await;
    assert_eq!(reply["accepted"], 1);
    assert_eq!(run(server, id).await["state"], "Pending");
    // The start with the current token takes over, even with a clock an hour behind.
    let behind = run_event(id, StateType::Running, 1, Some(lease), -Duration::hours(1));
    server.ingest(&[behind]).await;
    assert_eq!(run(server, id).await["state"], "Running");
    // The worker dies: the reaper crashes the run and re-queues it (retries = 1).
    assert_eq!(expire_leases(server).await, 1);
    let requeued = run(server, id).await;
    assert_eq!(requeued["state"], "Scheduled", "{requeued}");
    assert_eq!(requeued["attempt"], 2);
    // The dead worker's token is stale now: events refused one by one and counted, calls 409.
    let late = [
        run_event(id, StateType::Completed, 1, Some(lease), Duration::zero()),
        run_event(id, StateType::Running, 1, None, Duration::zero()),
    ];
    let reply = server.ingest(&late).await;
    assert_eq!(reply["accepted"], 1, "{reply}");
    let rejected = reply["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{reply}");
    assert_eq!(rejected[0]["index"], 0);
    assert_eq!(rejected[0]["error"]["code"], "stale_lease");
    assert_eq!(
        server.store.stale_events("skewed:1").await.expect("count"),
        1
    );
    // An event without a token does not move a server state either.
    assert_eq!(run(server, id).await["state"], "Scheduled");
    let done = run_event(id, StateType::Completed, 1, Some(lease), Duration::zero());
    let reply = finish(server, id, lease, &done, json!(1)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.error_code(), "stale_lease");
    let beat = worker.heartbeat(server, &[(&id.to_string(), lease)]).await;
    assert_eq!(beat["lost"], json!([id]));
}

async fn a_dead_workers_run_crashes_and_is_requeued_while_it_has_attempts(server: &TestServer) {
    register(server, "v1", None, 1).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let first = Worker::new("doomed:1", &["v1"]);
    let claimed = first.claim(server, 1, 0).await;
    assert_eq!(claimed[0]["max_attempts"], 2);
    assert_eq!(expire_leases(server).await, 1);
    // Attempt 2 for another worker, with a new token.
    let second = Worker::new("doomed:2", &["v1"]);
    let again = second.claim(server, 1, 0).await;
    assert_eq!(run_id(&again[0]), id);
    assert_eq!(again[0]["attempt"], 2);
    assert_eq!(
        token(&again[0]),
        token(&claimed[0]) + 2,
        "the reaper moved the token on"
    );
    // It dies too: no attempt left, the run stays Crashed.
    assert_eq!(expire_leases(server).await, 1);
    let crashed = run(server, id).await;
    assert_eq!(crashed["state"], "Crashed", "{crashed}");
    assert!(
        crashed["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("the worker doomed:2 stopped heartbeating")),
        "{crashed}"
    );
    let history = server
        .get_ok(&format!("/api/v1/flow-runs/{id}/task-runs"))
        .await;
    let text = history.to_string();
    assert!(text.contains("re-queued as attempt 2"), "{text}");
    // Nothing left to claim, nothing left to reap.
    assert!(second.claim(server, 1, 0).await.is_empty());
    assert_eq!(reaper::reap_now(&server.state).await.expect("reap"), 0);
}

async fn a_dead_workers_cancelling_run_becomes_cancelled(server: &TestServer) {
    register(server, "v1", None, 3).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let worker = Worker::new("host:1", &["v1"]);
    let claimed = worker.claim(server, 1, 0).await;
    let reply = server
        .post_json(
            &format!("/api/v1/flow-runs/{id}/cancel"),
            &json!({"reason": "not needed"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Cancelling");
    // Again: unchanged.
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/cancel"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Cancelling");
    // The worker hears it with its next heartbeat...
    let beat = worker
        .heartbeat(server, &[(&id.to_string(), token(&claimed[0]))])
        .await;
    assert_eq!(beat["cancel"], json!([id]));
    assert_eq!(beat["lost"], json!([]));
    // ... but dies: the run ends Cancelled, not re-queued.
    assert_eq!(expire_leases(server).await, 1);
    let cancelled = run(server, id).await;
    assert_eq!(cancelled["state"], "Cancelled", "{cancelled}");
}

async fn heartbeats_extend_leases_and_report_lost_ones(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let worker = Worker::new("host:1", &["v1"]);
    let claimed = worker.claim(server, 1, 0).await;
    let lease = token(&claimed[0]);
    let bogus = Uuid::now_v7();
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let beat = worker
            .heartbeat(server, &[(&id.to_string(), lease), (&bogus.to_string(), 1)])
            .await;
        assert_eq!(beat["lost"], json!([bogus]));
        assert_eq!(beat["lease_seconds"], 1);
        assert_eq!(reaper::reap_now(&server.state).await.expect("reap"), 0);
    }
    assert_eq!(run(server, id).await["state"], "Pending");
    // Another worker cannot renew it, even with the right token.
    let thief = Worker::new("thief:1", &["v1"]);
    let beat = thief.heartbeat(server, &[(&id.to_string(), lease)]).await;
    assert_eq!(beat["lost"], json!([id]));
    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({"run_id": bogus, "token": 1}))
        .collect();
    let reply = server
        .post_json(
            "/api/v1/workers/heartbeat",
            &json!({"worker": worker.id, "worker_name": "host:1", "deployments": [], "leases": too_many}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
}

async fn release_hands_a_run_back(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let worker = Worker::new("host:1", &["v1"]);
    let lease = token(&worker.claim(server, 1, 0).await[0]);
    let uri = format!("/api/v1/flow-runs/{id}/release");
    let release = |token: u64| {
        let body = json!({"token": token, "reason": "shutting down"});
        let uri = uri.clone();
        async move { server.post_json(&uri, &body).await }
    };
    let reply = release(lease + 5).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.error_code(), "stale_lease");
    let reply = release(lease).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Scheduled");
    assert_eq!(reply.body["attempt"], 1);
    assert!(
        reply.body["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{}",
        reply.body
    );
    // Released once: the lease is gone.
    assert_eq!(release(lease).await.status, StatusCode::CONFLICT);
    let again = Worker::new("host:2", &["v1"]).claim(server, 1, 0).await;
    assert_eq!(run_id(&again[0]), id);
    assert_eq!(token(&again[0]), lease + 1);
}

/// A retry runs the same version with the same parameters, though a newer version is
/// registered since: only a worker serving that version takes it.
async fn a_retried_run_keeps_its_version_and_parameters(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {"epochs": 7}})).await);
    let old = Worker::new("old:1", &["v1"]);
    let claimed = old.claim(server, 1, 0).await;
    assert_eq!(claimed[0]["parameters"], json!({"epochs": 7}));
    let failed = run_event(
        id,
        StateType::Failed,
        1,
        Some(token(&claimed[0])),
        Duration::zero(),
    );
    finish(server, id, token(&claimed[0]), &failed, json!(null)).await;
    register(server, "v2", None, 0).await;
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/retry"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], "v1");
    assert!(
        Worker::new("new:1", &["v2"])
            .claim(server, 1, 0)
            .await
            .is_empty()
    );
    let both = Worker::new("both:1", &["v1", "v2"]);
    let again = both.claim(server, 1, 0).await;
    assert_eq!(run_id(&again[0]), id);
    assert_eq!(again[0]["attempt"], 2);
    assert_eq!(again[0]["version"], "v1");
    assert_eq!(again[0]["parameters"], json!({"epochs": 7}));
}

async fn cancel_and_retry_follow_the_state_rules(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    // Not started: Cancelled at once; a worker no longer gets it.
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/cancel"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Cancelled");
    let worker = Worker::new("host:1", &["v1"]);
    assert!(worker.claim(server, 1, 0).await.is_empty());
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/cancel"), "")
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["error"]["state"], "Cancelled");
    // Retry: the same run as attempt 2, claimable again.
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/retry"), "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Scheduled");
    assert_eq!(reply.body["attempt"], 2);
    let claimed = worker.claim(server, 1, 0).await;
    assert_eq!(run_id(&claimed[0]), id);
    assert_eq!(claimed[0]["attempt"], 2);
    assert_eq!(claimed[0]["max_attempts"], 2);
    // Retry of a run that has not failed: 409 with its state.
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/retry"), "")
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body["error"]["state"], "Pending");
    // Unknown runs: 404; a run not deployed cannot be retried.
    let unknown = Uuid::now_v7();
    for action in ["cancel", "retry"] {
        let reply = server
            .post_raw(&format!("/api/v1/flow-runs/{unknown}/{action}"), "")
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{action}");
    }
    let local = run_event(Uuid::now_v7(), StateType::Failed, 1, None, Duration::zero());
    server.ingest(std::slice::from_ref(&local)).await;
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{}/retry", local.run_id), "")
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    let reply = server
        .post_raw(&format!("/api/v1/flow-runs/{id}/cancel"), "{\"why\": 1}")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
}

async fn bulk_cancel_takes_pages_of_matching_runs(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run_id(&trigger(server, json!({"parameters": {}})).await));
    }
    let worker = Worker::new("host:1", &["v1"]);
    let leased = run_id(&worker.claim(server, 1, 0).await[0]);
    let body = json!({"deployment": format!("{FLOW}/{NAME}"), "limit": 2, "reason": "stop"});
    let reply = server.post_json("/api/v1/flow-runs/cancel", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["cancelling"], json!([leased]));
    assert_eq!(reply.body["cancelled"], json!([ids[1]]));
    assert_eq!(reply.body["more"], true);
    let reply = server.post_json("/api/v1/flow-runs/cancel", &body).await;
    assert_eq!(reply.body["cancelled"], json!([ids[2]]), "{}", reply.body);
    assert_eq!(reply.body["more"], false);
    for bad in [
        json!({}),
        json!({"flow_name": FLOW, "limit": 1001}),
        json!({"flow_name": FLOW, "limit": 0}),
        json!({"states": ["Completed"]}),
    ] {
        let reply = server.post_json("/api/v1/flow-runs/cancel", &bad).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            reply.body
        );
    }
}

async fn prefer_trigger(server: &TestServer, prefer: &str) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/deployments/{FLOW}/{NAME}/runs"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("Prefer", prefer);
    server
        .request_with(request, Body::from(json!({"parameters": {}}).to_string()))
        .await
}

async fn results_are_read_and_waited_for(server: &TestServer) {
    register(server, "v1", None, 0).await;
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    // Not final: 202 with the run and where to ask again.
    let reply = server
        .get(&format!("/api/v1/flow-runs/{id}/result?wait=1"))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["state"], "Scheduled");
    for bad in ["61", "-1", "soon"] {
        let reply = server
            .get(&format!("/api/v1/flow-runs/{id}/result?wait={bad}"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let unknown = Uuid::now_v7();
    assert_eq!(
        server
            .get(&format!("/api/v1/flow-runs/{unknown}/result"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A waiting read is answered when the worker finishes the run.
    let worker = Worker::new("host:1", &["v1"]);
    let waiting = format!("/api/v1/flow-runs/{id}/result?wait=20");
    let (reply, ()) = tokio::join!(server.get(&waiting), async {
        let claimed = worker.claim(server, 1, 0).await;
        let done = run_event(
            id,
            StateType::Completed,
            1,
            Some(token(&claimed[0])),
            Duration::zero(),
        );
        let reply = finish(server, id, token(&claimed[0]), &done, json!([1, 2, 3])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    });
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!([1, 2, 3]));
    // A run that ended otherwise: 409 run_not_completed with its state and message.
    let failed = run_id(&trigger(server, json!({"parameters": {}})).await);
    let claimed = worker.claim(server, 1, 0).await;
    let mut boom = run_event(
        failed,
        StateType::Failed,
        1,
        Some(token(&claimed[0])),
        Duration::zero(),
    );
    if let flowkit_server::wire::EventBody::State { state, .. } = &mut boom.body {
        state.message = Some("boom".into());
    }
    finish(server, failed, token(&claimed[0]), &boom, json!(null)).await;
    let reply = server
        .get(&format!("/api/v1/flow-runs/{failed}/result"))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.error_code(), "run_not_completed");
    assert_eq!(reply.body["error"]["state"], "Failed");
    assert_eq!(reply.error_message(), "boom");
    // Prefer: wait on a trigger: nobody runs it within the wait → 202 with the run.
    let reply = prefer_trigger(server, "wait=1").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["state"], "Scheduled");
    let reply = prefer_trigger(server, "wait=61").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.error_message().contains("0 to 60"), "{}", reply.body);
    // A worker finishes it within the wait → 201 with the result inline.
    let stale_waiting = worker.claim(server, 10, 0).await;
    let (reply, ()) = tokio::join!(prefer_trigger(server, "wait=20"), async {
        let claimed = worker.claim(server, 1, 20).await;
        let run = run_id(&claimed[0]);
        let done = run_event(
            run,
            StateType::Completed,
            1,
            Some(token(&claimed[0])),
            Duration::zero(),
        );
        finish(server, run, token(&claimed[0]), &done, json!({"ok": true})).await;
    });
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "Completed");
    assert_eq!(reply.body["result"], json!({"ok": true}));
    // One that fails within the wait → 201 with the run in its final state, carrying its
    // error and no result: the caller reads `state`.
    let (reply, ()) = tokio::join!(prefer_trigger(server, "wait=20"), async {
        let claimed = worker.claim(server, 1, 20).await;
        let run = run_id(&claimed[0]);
        let mut failed = run_event(
            run,
            StateType::Failed,
            1,
            Some(token(&claimed[0])),
            Duration::zero(),
        );
        if let flowkit_server::wire::EventBody::State { state, .. } = &mut failed.body {
            state.message = Some("the dataset is empty".into());
        }
        finish(server, run, token(&claimed[0]), &failed, json!(null)).await;
    });
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "Failed", "{}", reply.body);
    assert_eq!(reply.body["state_message"], "the dataset is empty");
    assert!(reply.body.get("result").is_none(), "{}", reply.body);
    assert!(
        reply.headers.get(header::LOCATION).is_some(),
        "where the run is"
    );
    let _ = stale_waiting;
}

/// A result over the inline bound (1 MiB of JSON) is stored and served whole by `/result`,
/// but not put inline in a waiting trigger's answer; one over the stored bound (16 MiB) ends
/// the run `Failed`, saying why. A trigger's answers say where the run is (`Location`).
async fn large_results_are_served_apart_and_too_large_ones_fail(server: &TestServer) {
    use flowkit_server::wire::api::run_actions::MAX_INLINE_RESULT_BYTES;
    use flowkit_server::wire::api::workers::MAX_RESULT_BYTES;
    register(server, "v1", None, 0).await;
    let worker = Worker::new("host:big", &["v1"]);
    let large = json!("x".repeat(MAX_INLINE_RESULT_BYTES + 1024));
    let (reply, id) = tokio::join!(prefer_trigger(server, "wait=20"), async {
        let claimed = worker.claim(server, 1, 20).await;
        let id = run_id(&claimed[0]);
        let done = run_event(
            id,
            StateType::Completed,
            1,
            Some(token(&claimed[0])),
            Duration::zero(),
        );
        let finished = finish(server, id, token(&claimed[0]), &done, large.clone()).await;
        assert_eq!(finished.status, StatusCode::OK, "{}", finished.body);
        id
    });
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "Completed");
    assert!(
        reply.body.get("result").is_none(),
        "not inline: {}",
        reply.body["id"]
    );
    let location = reply
        .headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok());
    assert_eq!(location, Some(format!("/api/v1/flow-runs/{id}").as_str()));
    let served = server.get(&format!("/api/v1/flow-runs/{id}/result")).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, large, "the whole output");

    // Past the stored bound: the run fails, and says so; there is no result to read.
    let id = run_id(&trigger(server, json!({"parameters": {}})).await);
    let claimed = worker.claim(server, 1, 0).await;
    assert_eq!(run_id(&claimed[0]), id);
    let done = run_event(
        id,
        StateType::Completed,
        1,
        Some(token(&claimed[0])),
        Duration::zero(),
    );
    let too_large = json!("y".repeat(MAX_RESULT_BYTES + 1));
    let finished = finish(server, id, token(&claimed[0]), &done, too_large).await;
    assert_eq!(finished.status, StatusCode::OK, "{}", finished.body);
    let stored = run(server, id).await;
    assert_eq!(stored["state"], "Failed", "{stored}");
    let reply = server.get(&format!("/api/v1/flow-runs/{id}/result")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.error_code(), "run_not_completed");
    assert!(reply.error_message().contains("at most"), "{}", reply.body);
}

async fn a_trigger_without_version_runs_the_version_a_live_worker_serves(server: &TestServer) {
    register(server, "v1", None, 0).await;
    register(server, "v2", None, 4).await;
    // No live worker: the newest registered.
    let run = trigger(server, json!({"parameters": {}})).await;
    assert_eq!(run["version"], "v2");
    // A live worker of v1 only: v1, with v1's retries.
    Worker::new("old:1", &["v1"]).heartbeat(server, &[]).await;
    let run = trigger(server, json!({"parameters": {}})).await;
    assert_eq!(run["version"], "v1");
    let detail = server
        .get_ok(&format!("/api/v1/deployments/{FLOW}/{NAME}"))
        .await;
    assert_eq!(detail["serving_version"], "v1");
}
