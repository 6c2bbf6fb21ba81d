//! Schedules of deployments: checked when the deployment registers, replaced by the next
//! registration (keeping their identity and pause), and turned into runs by the scheduler's
//! tick only when due — once per instant, whatever ticks at once, with the catch-up and
//! overlap policies. The tick is called with chosen instants, so nothing here waits for the
//! clock.

use crate::harness::{Reply, TestServer};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::scheduler::{SCHEDULES_PER_BATCH, Scheduler, TickOutcome, tick};
use flowkit_server::store::Backend;
use serde_json::{Value, json};
use uuid::Uuid;

on_every_backend!(
    bad_schedules_refuse_the_registration_listing_every_error,
    a_due_schedule_creates_one_run_per_instant,
    catch_up_and_overlap_policies,
    overlap_policies_with_a_running_run,
    registration_replaces_code_schedules_keeping_identity_and_pause,
    unclaimed_runs_become_late_and_then_expired,
    two_replicas_ticking_over_several_batches_create_each_run_once,
    runs_planned_ahead_are_created_at_their_instant_once,
    late_marking_racing_claims_decides_each_run_once,
);

pub(crate) fn spec(name: &str, schedules: Value) -> Value {
    json!({
        "flow": "train",
        "name": name,
        "flow_key": "houses::train",
        "version": "abc@0.1.0",
        "parameter_schema": {
            "type": "object",
            "properties": {
                "dataset": {"type": "string"},
                "epochs": {"type": "integer", "minimum": 0, "maximum": 4294967295u64}
            },
            "required": ["dataset"],
            "additionalProperties": false
        },
        "output_schema": {},
        "default_parameters": {"epochs": 50},
        "schedules": schedules
    })
}

pub(crate) async fn register(server: &TestServer, body: &Value) -> Reply {
    server.post_json("/api/v1/deployments", body).await
}

pub(crate) async fn schedules_of(server: &TestServer, name: &str) -> Vec<Value> {
    let detail = server
        .get_ok(&format!("/api/v1/deployments/train/{name}"))
        .await;
    detail["schedules"]
        .as_array()
        .unwrap_or_else(|| panic!("no schedules: {detail}"))
        .clone()
}

pub(crate) async fn runs_of(server: &TestServer, name: &str) -> Vec<Value> {
    let page = server
        .get_ok(&format!(
            "/api/v1/flow-runs?deployment=train/{name}&limit=500"
        ))
        .await;
    page["items"].as_array().expect("items").clone()
}

pub(crate) fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an instant: {value}"))
}

async fn bad_schedules_refuse_the_registration_listing_every_error(server: &TestServer) {
    let reply = register(
        server,
        &spec(
            "bad",
            json!([
                {"cron": "0 3 * *"},
                {"interval": "0s"},
                {"cron": "0 3 * * *", "timezone": "Mars/Olympus"},
                {"cron": "0 4 * * *", "parameters": {"dataset": "d", "epochs": "many"}},
                {"cron": "0 5 * * *", "parameters": {"dataset": "d"}, "max_lateness": "soon"},
                {"cron": "0 6 * * *"},
                {"interval": "1h", "parameters": {"dataset": "d"}},
                {"interval": "1h", "parameters": {"dataset": "e"}}
            ]),
        ),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let details = reply.body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("details: {}", reply.body))
        .clone();
    let at = |pointer: &str| {
        details
            .iter()
            .find(|d| d["pointer"] == pointer)
            .and_then(|d| d["message"].as_str())
            .unwrap_or_else(|| panic!("no error at {pointer}: {}", reply.body))
            .to_string()
    };
    assert!(at("/schedules/0/cron").contains("0 3 * * *"));
    assert!(at("/schedules/1/interval").contains("15m"));
    assert!(at("/schedules/2/timezone").contains("Europe/Paris"));
    at("/schedules/3/parameters/epochs");
    assert!(at("/schedules/4/max_lateness").contains("30m"));
    // No dataset: neither the defaults nor the schedule give the required parameter.
    assert!(
        details.iter().any(|d| d["pointer"]
            .as_str()
            .is_some_and(|p| p.starts_with("/schedules/5/parameters"))),
        "{}",
        reply.body
    );
    assert!(at("/schedules/7").contains("same timing"));
    // Nothing was registered.
    let missing = server.get("/api/v1/deployments/train/bad").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Registers `name` with `schedules` and returns its schedules' ids and first instants.
pub(crate) async fn registered(
    server: &TestServer,
    name: &str,
    schedules: Value,
) -> Vec<(Uuid, DateTime<Utc>)> {
    let reply = register(server, &spec(name, schedules)).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    schedules_of(server, name)
        .await
        .iter()
        .map(|s| {
            assert_eq!(s["active"], true, "{s}");
            (
                s["id"].as_str().and_then(|id| id.parse().ok()).expect("id"),
                instant(&s["next_at"]),
            )
        })
        .collect()
}

async fn a_due_schedule_creates_one_run_per_instant(server: &TestServer) {
    let ids = registered(
        server,
        "minutely",
        json!([{"interval": "1m", "parameters": {"dataset": "s3://houses"}, "overlap": "allow"}]),
    )
    .await;
    let (id, first) = ids[0];
    assert!(
        first > Utc::now() - Duration::seconds(1) && first <= Utc::now() + Duration::minutes(1)
    );

    // Not yet due: nothing.
    let early = tick(&server.state, first - Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(early, TickOutcome::default());
    assert!(runs_of(server, "minutely").await.is_empty());

    // Due: one run, for that instant, by that schedule, with its parameters over the defaults.
    let outcome = tick(&server.state, first + Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(outcome.created, 1, "{outcome:?}");
    let runs = runs_of(server, "minutely").await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(instant(&run["scheduled_for"]), first, "{run}");
    assert_eq!(run["created_by"], format!("schedule:{id}"), "{run}");
    assert_eq!(run["state"], "Scheduled");
    assert_eq!(
        run["parameters"],
        json!({"dataset": "s3://houses", "epochs": 50})
    );
    // The row and its first state, as the tick writes them in one insert each: a flow run of
    // the deployment's version, created at its one Scheduled state.
    let detail = server
        .get_ok(&format!(
            "/api/v1/flow-runs/{}",
            run["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(detail["kind"], "flow", "{detail}");
    assert_eq!(detail["flow_run_id"], detail["id"], "{detail}");
    assert_eq!(detail["deployment"], "train/minutely", "{detail}");
    assert_eq!(detail["version"], "abc@0.1.0", "{detail}");
    assert_eq!(detail["upstream"], json!([]), "{detail}");
    assert_eq!(detail["attempt"], 1, "{detail}");
    assert!(
        detail["started"].is_null() && detail["ended"].is_null(),
        "{detail}"
    );
    let history = server
        .get_ok(&format!(
            "/api/v1/flow-runs/{}/task-runs",
            run["id"].as_str().expect("id")
        ))
        .await;
    let states = history["flow_run"]["states"]
        .as_array()
        .unwrap_or_else(|| panic!("no states: {history}"));
    assert_eq!(states.len(), 1, "{detail}");
    assert_eq!(states[0]["state"], "Scheduled", "{detail}");
    assert_eq!(states[0]["timestamp"], detail["created"], "{detail}");
    assert_eq!(detail["state_timestamp"], detail["created"], "{detail}");
    let message = states[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("created by schedule {id}")),
        "{detail}"
    );
    // The same tick again: nothing more.
    let again = tick(&server.state, first + Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(again.created, 0);

    // Ten minutes later, two replicas tick at once: one run for the latest instant (catch-up
    // `latest`), which says how many it stands for; never two.
    let later = first + Duration::minutes(10) + Duration::seconds(1);
    let (a, b) = tokio::join!(tick(&server.state, later), tick(&server.state, later));
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert_eq!(a.created + b.created, 1, "{a:?} {b:?}");
    let runs = runs_of(server, "minutely").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let newest = runs
        .iter()
        .find(|r| instant(&r["scheduled_for"]) == first + Duration::minutes(10))
        .unwrap_or_else(|| panic!("no run for the latest instant: {runs:?}"));
    let message = newest["state_message"].as_str().unwrap_or_default();
    assert!(message.contains("9 earlier"), "{message}");
    // The count is a field of the run (its page), not only words in a message.
    assert!(
        newest.get("skipped_instants").is_none(),
        "lists leave it out"
    );
    for (run, skipped) in runs.iter().map(|r| {
        let at = instant(&r["scheduled_for"]);
        (r, if at == first { 0 } else { 9 })
    }) {
        let id = run["id"].as_str().expect("id");
        let page = server.get_ok(&format!("/api/v1/flow-runs/{id}")).await;
        assert_eq!(page["skipped_instants"], skipped, "{page}");
    }
}

/// Time zones of the every-minute schedules of one deployment (each schedule of a deployment
/// needs a timing of its own).
const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
];

/// More schedules due at one instant than one batch of a tick (`SCHEDULES_PER_BATCH`), ticked
/// by two replicas at once: the batches are planned and written side by side, each in one
/// transaction, and every schedule gets exactly one run and is moved on once.
async fn two_replicas_ticking_over_several_batches_create_each_run_once(server: &TestServer) {
    let deployments = SCHEDULES_PER_BATCH.div_ceil(ZONES.len()) + 1;
    let schedules = deployments * ZONES.len();
    assert!(schedules > SCHEDULES_PER_BATCH);
    let mut due_at = Utc::now();
    for d in 0..deployments {
        let specs: Vec<Value> = ZONES
            .iter()
            .map(|zone| {
                json!({"cron": "* * * * *", "timezone": zone,
                       "parameters": {"dataset": "s3://houses"}, "overlap": "allow"})
            })
            .collect();
        for (_, next_at) in registered(server, &format!("many{d}"), Value::Array(specs)).await {
            due_at = due_at.max(next_at);
        }
    }
    let other = flowkit_server::AppState::new(
        std::sync::Arc::new(
            flowkit_server::store::Store::connect(&server.url)
                .await
                .expect("second replica"),
        ),
        flowkit_server::config::Settings::default(),
    );
    // Every schedule has one instant due (the latest minute), the most recent one's included.
    let now = due_at + Duration::seconds(1);
    let (a, b) = tokio::join!(tick(&server.state, now), tick(&other, now));
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert_eq!(a.created + b.created, schedules, "{a:?} {b:?}");
    let page = server.get_ok("/api/v1/flow-runs?limit=500").await;
    let mut slots = std::collections::HashSet::new();
    for run in page["items"].as_array().expect("items") {
        let key = (
            run["created_by"].as_str().expect("created_by").to_string(),
            instant(&run["scheduled_for"]),
        );
        assert!(slots.insert(key), "two runs for one slot: {run}");
    }
    assert_eq!(slots.len(), schedules);
    // Every schedule was moved on: nothing is due any more at that instant.
    let due = server.store.due_schedules(now, 1000).await.expect("due");
    assert!(due.is_empty(), "{due:?}");
    let again = tick(&other, now).await.expect("tick");
    assert_eq!(again, TickOutcome::default());
}

async fn catch_up_and_overlap_policies(server: &TestServer) {
    let dataset = json!({"dataset": "d"});
    // `all`: one run per missed instant; then `skip` (the default overlap) while they wait.
    let (_, first) = registered(
        server,
        "all",
        json!([{"interval": "1m", "parameters": dataset, "catchup": "all"}]),
    )
    .await[0];
    let outcome = tick(
        &server.state,
        first + Duration::minutes(4) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!(outcome.created, 5, "{outcome:?}");
    let outcome = tick(
        &server.state,
        first + Duration::minutes(6) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!((outcome.created, outcome.skipped), (0, 2), "{outcome:?}");
    assert_eq!(runs_of(server, "all").await.len(), 5);
    // `all` is bounded: after 121 missed instants, the latest CATCHUP_ALL_MAX get a run and the
    // older ones are counted as skipped.
    let max = flowkit_server::wire::api::schedules::CATCHUP_ALL_MAX;
    let (_, first) = registered(
        server,
        "all-bounded",
        json!([{"interval": "1m", "parameters": dataset, "catchup": "all"}]),
    )
    .await[0];
    let outcome = tick(
        &server.state,
        first + Duration::minutes(120) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!(outcome.created as usize, max, "{outcome:?}");
    // (The first `all` schedule, its runs still waiting, skips its instants in the same tick.)
    assert!(outcome.skipped as usize >= 121 - max, "{outcome:?}");
    assert_eq!(runs_of(server, "all-bounded").await.len(), max);

    // `none`: missed instants get no run; the one due now does.
    let (_, first) = registered(
        server,
        "none",
        json!([{"interval": "1m", "parameters": dataset, "catchup": "none", "overlap": "allow"}]),
    )
    .await[0];
    let outcome = tick(
        &server.state,
        first + Duration::minutes(5) + Duration::seconds(30),
    )
    .await
    .expect("tick");
    assert_eq!((outcome.created, outcome.skipped), (1, 5), "{outcome:?}");
    let runs = runs_of(server, "none").await;
    assert_eq!(
        instant(&runs[0]["scheduled_for"]),
        first + Duration::minutes(5)
    );

    // `queue_one`: one run waits; further instants are skipped while it does.
    let (_, first) = registered(
        server,
        "queue",
        json!([{"interval": "1m", "parameters": dataset, "overlap": "queue_one"}]),
    )
    .await[0];
    for minutes in 0..3 {
        tick(
            &server.state,
            first + Duration::minutes(minutes) + Duration::seconds(1),
        )
        .await
        .expect("tick");
    }
    assert_eq!(runs_of(server, "queue").await.len(), 1);

    // `cancel_running`: the waiting run is cancelled and the new instant gets a run.
    let (_, first) = registered(
        server,
        "cancel",
        json!([{"interval": "1m", "parameters": dataset, "overlap": "cancel_running"}]),
    )
    .await[0];
    tick(&server.state, first + Duration::seconds(1))
        .await
        .expect("tick");
    let outcome = tick(
        &server.state,
        first + Duration::minutes(1) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!((outcome.created, outcome.cancelled), (1, 1), "{outcome:?}");
    let runs = runs_of(server, "cancel").await;
    let states: Vec<&str> = runs.iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(runs.len(), 2);
    assert!(
        states.contains(&"Cancelled") && states.contains(&"Scheduled"),
        "{states:?}"
    );
}

/// A schedule due in about a second (an every-minute interval anchored 59 s ago), its first
/// instant's run created by a tick, claimed by a worker and `Running` (its worker's event, with
/// the lease's token): what the overlap policies decide on at the next instants.
async fn a_running_scheduled_run(server: &TestServer, name: &str, overlap: &str) -> DateTime<Utc> {
    let anchor = (Utc::now() - Duration::seconds(59)).to_rfc3339();
    let (_, first) = registered(
        server,
        name,
        json!([{"interval": "1m", "anchor": anchor, "parameters": {"dataset": "d"}, "overlap": overlap}]),
    )
    .await[0];
    let outcome = tick(&server.state, first + Duration::seconds(1))
        .await
        .expect("tick");
    assert_eq!(outcome.created, 1, "{outcome:?}");
    // Claimable once its instant has passed on the database's clock.
    let wait = (first - Utc::now()).num_milliseconds().max(0) as u64 + 200;
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    let served = json!([{"flow": "train", "name": name, "version": "abc@0.1.0"}]);
    let claimed = server
        .claim(Uuid::now_v7(), &format!("{name}:1"), served, 1, 0)
        .await;
    let run = &claimed["runs"][0];
    let id: Uuid = run["run_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a run claimed");
    let mut running = crate::fixtures::event(
        id,
        flowkit_server::wire::RunKind::Flow,
        "train",
        id,
        None,
        Utc::now(),
        crate::fixtures::state(flowkit_server::wire::StateType::Running, None),
    );
    running.lease = run["token"].as_u64();
    server.ingest(&[running]).await;
    let runs = runs_of(server, name).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["state"], "Running", "{runs:?}");
    first
}

/// The states of a deployment's runs, sorted.
async fn run_states(server: &TestServer, name: &str) -> Vec<String> {
    let mut states: Vec<String> = runs_of(server, name)
        .await
        .iter()
        .filter_map(|r| r["state"].as_str().map(str::to_string))
        .collect();
    states.sort();
    states
}

/// With a run `Running`: `skip` creates nothing, `queue_one` queues one run and no second,
/// `allow` creates one per instant, `cancel_running` asks the running one to cancel and creates
/// the new instant's run.
async fn overlap_policies_with_a_running_run(server: &TestServer) {
    for (overlap, after_two, expected) in [
        ("skip", (0, 0), vec!["Running"]),
        // The second tick is 61 s after the queued run's instant: past `--late-after`, so
        // that run is `Late` by then (still claimable).
        ("queue_one", (1, 0), vec!["Late", "Running"]),
        ("allow", (1, 1), vec!["Late", "Running", "Scheduled"]),
    ] {
        let name = format!("running-{overlap}");
        let first = a_running_scheduled_run(server, &name, overlap).await;
        let mut created = Vec::new();
        for minutes in [1, 2] {
            let at = first + Duration::minutes(minutes) + Duration::seconds(1);
            created.push(tick(&server.state, at).await.expect("tick").created);
        }
        assert_eq!((created[0], created[1]), after_two, "{overlap}");
        assert_eq!(run_states(server, &name).await, expected, "{overlap}");
    }
    let first = a_running_scheduled_run(server, "running-cancel", "cancel_running").await;
    let outcome = tick(
        &server.state,
        first + Duration::minutes(1) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!((outcome.created, outcome.cancelled), (1, 1), "{outcome:?}");
    assert_eq!(
        run_states(server, "running-cancel").await,
        ["Cancelling", "Scheduled"]
    );
}

async fn registration_replaces_code_schedules_keeping_identity_and_pause(server: &TestServer) {
    let dataset = json!({"dataset": "d"});
    let before = registered(
        server,
        "nightly",
        json!([
            {"cron": "0 3 * * *", "timezone": "Europe/Paris", "parameters": dataset},
            {"cron": "0 4 * * *", "parameters": dataset}
        ]),
    )
    .await;
    let (kept, _) = before[0];
    // Paused over the API (twice: the second changes nothing).
    for _ in 0..2 {
        let paused = server
            .post_json(&format!("/api/v1/schedules/{kept}/pause"), &json!({}))
            .await;
        assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
        assert_eq!(paused.body["active"], false, "{}", paused.body);
    }
    let unknown = server
        .post_json(
            &format!("/api/v1/schedules/{}/pause", Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let bad = server
        .post_json("/api/v1/schedules/not-an-id/resume", &json!({}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    // The same version registered again with other schedules: 200, schedules replaced, the
    // one with the same timing keeps its id and its pause, with its new parameters.
    let reply = register(
        server,
        &spec(
            "nightly",
            json!([
                {"cron": "0 3 * * *", "timezone": "Europe/Paris", "parameters": {"dataset": "new"}},
                {"interval": "15m", "parameters": dataset}
            ]),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let after = schedules_of(server, "nightly").await;
    assert_eq!(after.len(), 2, "{after:?}");
    let same = after
        .iter()
        .find(|s| s["id"] == kept.to_string())
        .unwrap_or_else(|| panic!("schedule {kept} lost: {after:?}"));
    assert_eq!(same["active"], false, "{same}");
    assert_eq!(same["next_at"], Value::Null);
    assert_eq!(same["spec"]["parameters"]["dataset"], "new");
    assert_eq!(same["source"], "code");
    assert!(
        after.iter().all(|s| s["spec"]["cron"] != "0 4 * * *"),
        "{after:?}"
    );
    // Paused: due or not, it creates nothing.
    let outcome = tick(&server.state, Utc::now() + Duration::days(2))
        .await
        .expect("tick");
    let runs = runs_of(server, "nightly").await;
    assert!(
        runs.iter()
            .all(|r| r["created_by"] != format!("schedule:{kept}")),
        "{outcome:?} {runs:?}"
    );
    // Resumed from now: active, next due at the next 03:00 in Paris.
    let resumed = server
        .post_json(&format!("/api/v1/schedules/{kept}/resume"), &json!({}))
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(resumed.body["active"], true, "{}", resumed.body);
    let next = instant(&resumed.body["next_at"]);
    assert!(
        next > Utc::now() && next <= Utc::now() + Duration::hours(25),
        "{next}"
    );
}

async fn state_of(server: &TestServer, name: &str, scheduled_for: DateTime<Utc>) -> Value {
    runs_of(server, name)
        .await
        .into_iter()
        .find(|r| instant(&r["scheduled_for"]) == scheduled_for)
        .unwrap_or_else(|| panic!("no run of {name} for {scheduled_for}"))
}

async fn unclaimed_runs_become_late_and_then_expired(server: &TestServer) {
    // Anchored so that the first instant comes about a second from now: the run can be
    // claimed for real once it is due.
    let anchor = (Utc::now() - Duration::seconds(59)).to_rfc3339();
    let (_, first) = registered(
        server,
        "lateness",
        json!([{"interval": "1m", "anchor": anchor, "parameters": {"dataset": "d"}, "max_lateness": "10m"}]),
    )
    .await[0];
    assert_eq!(
        tick(&server.state, first + Duration::seconds(1))
            .await
            .expect("tick")
            .created,
        1
    );
    let not_yet = tick(&server.state, first + Duration::seconds(59))
        .await
        .expect("tick");
    assert_eq!(not_yet.late, 0, "{not_yet:?}");
    let late = tick(&server.state, first + Duration::seconds(61))
        .await
        .expect("tick");
    assert_eq!(late.late, 1, "{late:?}");
    let run = state_of(server, "lateness", first).await;
    assert_eq!(run["state"], "Late", "{run}");
    assert!(
        run["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("worker")),
        "{run}"
    );

    // Late is not final: a worker still claims it (once it is due on the real clock).
    while Utc::now() < first {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let served = json!([{"flow": "train", "name": "lateness", "version": "abc@0.1.0"}]);
    let claim = server.claim(Uuid::now_v7(), "w1", served, 5, 0).await;
    let claimed = claim["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(claimed.len(), 1, "{claim}");
    assert_eq!(claimed[0]["run_id"], run["id"], "{claim}");
    // Claimed, it no longer expires.
    let later = tick(&server.state, first + Duration::minutes(11))
        .await
        .expect("tick");
    assert_eq!(later.expired, 0, "{later:?}");

    // Not started within max_lateness: Expired, a final state, instead of starting late.
    let (_, first) = registered(
        server,
        "expiring",
        json!([{"interval": "1m", "parameters": {"dataset": "d"}, "max_lateness": "5m"}]),
    )
    .await[0];
    tick(&server.state, first + Duration::seconds(1))
        .await
        .expect("tick");
    let expired = tick(
        &server.state,
        first + Duration::minutes(5) + Duration::seconds(1),
    )
    .await
    .expect("tick");
    assert_eq!(expired.expired, 1, "{expired:?}");
    let run = state_of(server, "expiring", first).await;
    assert_eq!(run["state"], "Expired", "{run}");
    assert!(run["ended"].is_string(), "{run}");
}

/// A replica's scheduler plans the runs of the next instant during the second before it:
/// nothing is written before the instant; at the instant the planned runs are created (once,
/// even with another replica ticking at once), with fresh ids and every column a run planned at
/// the instant has; a schedule whose overlap is decided at the instant is planned then; a plan
/// whose instant is more than a second past is not used.
async fn runs_planned_ahead_are_created_at_their_instant_once(server: &TestServer) {
    let mut due_at = Utc::now();
    let mut ids = Vec::new();
    for d in 0..2 {
        let mut specs: Vec<Value> = ZONES
            .iter()
            .map(|zone| {
                json!({"cron": "* * * * *", "timezone": zone,
                       "parameters": {"dataset": "s3://houses"}, "overlap": "allow"})
            })
            .collect();
        // Overlap `skip` (the default): decided at the instant.
        specs.push(json!({"cron": "* * * * *", "timezone": "Asia/Tokyo",
                          "parameters": {"dataset": "s3://skip"}}));
        for (id, next_at) in registered(server, &format!("ahead{d}"), Value::Array(specs)).await {
            due_at = due_at.max(next_at);
            ids.push(id);
        }
    }
    let schedules = ids.len();
    let other = flowkit_server::AppState::new(
        std::sync::Arc::new(
            flowkit_server::store::Store::connect(&server.url)
                .await
                .expect("second replica"),
        ),
        flowkit_server::config::Settings::default(),
    );
    let mut scheduler = Scheduler::default();
    // Half a second before the instant: nothing due, the instant's runs planned, none written.
    let before = scheduler
        .tick(&server.state, due_at - Duration::milliseconds(500))
        .await
        .expect("tick");
    assert_eq!(before, TickOutcome::default());
    for d in 0..2 {
        assert!(runs_of(server, &format!("ahead{d}")).await.is_empty());
    }
    // At the instant, with another replica (planning at the instant) ticking at once.
    let now = due_at + Duration::milliseconds(10);
    let (a, b) = tokio::join!(scheduler.tick(&server.state, now), tick(&other, now));
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert_eq!(a.created + b.created, schedules, "{a:?} {b:?}");
    let mut slots = std::collections::HashSet::new();
    for d in 0..2 {
        let runs = runs_of(server, &format!("ahead{d}")).await;
        assert_eq!(runs.len(), ZONES.len() + 1);
        for run in runs {
            let key = (
                run["created_by"].as_str().expect("created_by").to_string(),
                instant(&run["scheduled_for"]),
            );
            assert_eq!(key.1, due_at, "{run}");
            assert_eq!(run["state"], "Scheduled", "{run}");
            assert_eq!(run["parameters"]["epochs"], 50, "{run}");
            assert!(slots.insert(key), "two runs for one slot: {run}");
        }
    }
    assert_eq!(slots.len(), schedules);
    let due = server.store.due_schedules(now, 1000).await.expect("due");
    assert!(due.is_empty(), "{due:?}");

    // Planned for the next minute, then ticked two seconds after it: planned again then, once.
    let next = due_at + Duration::minutes(1);
    let planned = scheduler
        .tick(&server.state, next - Duration::milliseconds(300))
        .await
        .expect("tick");
    assert_eq!(planned, TickOutcome::default());
    let late = scheduler
        .tick(&server.state, next + Duration::seconds(2))
        .await
        .expect("tick");
    // The two `skip` schedules' runs of the first instant are still waiting.
    assert_eq!((late.created, late.skipped), (schedules - 2, 2), "{late:?}");
    let again = tick(&other, next + Duration::seconds(3))
        .await
        .expect("tick");
    assert_eq!(again.created, 0, "{again:?}");
}

/// Marking runs `Late` races workers claiming the same runs, with two replicas marking at
/// once: each run is claimed exactly once, a run is never marked `Late` once a worker holds
/// it, and a run marked `Late` is still claimed.
async fn late_marking_racing_claims_decides_each_run_once(server: &TestServer) {
    const SCHEDULES: i64 = 30;
    // Every schedule's first instant falls about 1.5 s from now, a few milliseconds apart
    // (one deployment's schedules need distinct timings).
    let base = Utc::now() - Duration::milliseconds(58_500);
    let specs: Vec<Value> = (0..SCHEDULES)
        .map(|i| {
            let anchor = (base + Duration::milliseconds(7 * i)).to_rfc3339();
            json!({"interval": "1m", "anchor": anchor, "parameters": {"dataset": "d"}})
        })
        .collect();
    let firsts = registered(server, "racing", Value::Array(specs)).await;
    let last = firsts.iter().map(|(_, at)| *at).max().expect("schedules");
    let created = tick(&server.state, last + Duration::milliseconds(100))
        .await
        .expect("tick");
    assert_eq!(created.created, SCHEDULES as usize, "{created:?}");
    while Utc::now() <= last {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past every run's `late_at` on the markers' clock.
    let overdue_at = last + Duration::minutes(2);
    let other = flowkit_server::AppState::new(
        std::sync::Arc::new(
            flowkit_server::store::Store::connect(&server.url)
                .await
                .expect("second replica"),
        ),
        flowkit_server::config::Settings::default(),
    );
    // The markers start once the claimers are under way, so that markings fall among claims.
    let marker = |state: flowkit_server::AppState, after: u64| async move {
        tokio::time::sleep(std::time::Duration::from_millis(after)).await;
        let mut late = 0;
        for _ in 0..40 {
            late += state
                .store()
                .mark_overdue(overdue_at)
                .await
                .expect("mark overdue")
                .late;
            tokio::task::yield_now().await;
        }
        late
    };
    let served = json!([{"flow": "train", "name": "racing", "version": "abc@0.1.0"}]);
    let claimer = |w: u32| {
        let served = served.clone();
        async move {
            let mut ids = Vec::new();
            for _ in 0..60 {
                let claim = server
                    .claim(Uuid::now_v7(), &format!("w{w}"), served.clone(), 1, 0)
                    .await;
                for run in claim["runs"].as_array().into_iter().flatten() {
                    ids.push(run["run_id"].as_str().expect("run id").to_string());
                }
                if ids.len() >= SCHEDULES as usize {
                    break;
                }
            }
            ids
        }
    };
    let (late_a, late_b, c1, c2, c3) = tokio::join!(
        marker(server.state.clone(), 4),
        marker(other, 6),
        claimer(1),
        claimer(2),
        claimer(3)
    );
    // What the race left unclaimed (Late or still Scheduled) is claimed now.
    let mut claimed: Vec<String> = c1.into_iter().chain(c2).chain(c3).collect();
    for _ in 0..SCHEDULES {
        let claim = server
            .claim(Uuid::now_v7(), "w4", served.clone(), 10, 0)
            .await;
        let runs = claim["runs"].as_array().cloned().unwrap_or_default();
        if runs.is_empty() {
            break;
        }
        claimed.extend(
            runs.iter()
                .map(|r| r["run_id"].as_str().expect("id").to_string()),
        );
    }
    let distinct: std::collections::HashSet<&String> = claimed.iter().collect();
    assert_eq!(distinct.len(), claimed.len(), "a run was claimed twice");
    assert_eq!(
        claimed.len(),
        SCHEDULES as usize,
        "every run is claimed once"
    );

    let mut marked = 0;
    for id in &claimed {
        let history = server
            .get_ok(&format!("/api/v1/flow-runs/{id}/task-runs"))
            .await;
        let states: Vec<&str> = history["flow_run"]["states"]
            .as_array()
            .unwrap_or_else(|| panic!("states: {history}"))
            .iter()
            .filter_map(|s| s["state"].as_str())
            .collect();
        // Scheduled, then at most one Late, then the worker's Pending: never Late once leased.
        match states.as_slice() {
            ["Scheduled", "Pending"] => {}
            ["Scheduled", "Late", "Pending"] => marked += 1,
            other => panic!("run {id}: states {other:?}"),
        }
        assert_eq!(history["flow_run"]["state"], "Pending", "{history}");
    }
    assert_eq!(
        marked,
        late_a + late_b,
        "each Late marking is in one run's history"
    );
}
