//! Schedules created over the API and backfills: created, listed and deleted over HTTP, kept
//! across the deployment's registrations, refused at the field when bad; a backfill creates
//! each past instant's run once, under the keys the tick uses, and its `max_parallel` holds in
//! the claim. The tick is called with chosen instants: nothing here waits for the clock.

use crate::harness::TestServer;
use crate::schedules::{instant, register, registered, runs_of, schedules_of, spec};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, DurationRound, Utc};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::Settings;
use flowkit_server::scheduler::tick;
use flowkit_server::store::Backend;
use flowkit_server::store::schedules::ROWS_PER_STATEMENT;
use serde_json::{Value, json};
use uuid::Uuid;

on_every_backend!(
    api_schedules_are_created_listed_deleted_and_kept_across_registration,
    bad_api_schedules_are_refused_at_the_field,
    a_backfill_creates_each_instant_once_with_the_ticks_keys,
    a_backfills_max_parallel_holds_in_the_claim,
    a_backfill_of_several_statements_creates_each_instant_once,
    a_day_long_outage_gives_one_run_with_the_skipped_count,
    backfill_runs_never_become_late_or_expired,
);

const DATASET: &str = "s3://houses";

async fn create(server: &TestServer, name: &str, body: Value) -> crate::harness::Reply {
    server
        .post_json(
            &format!("/api/v1/deployments/train/{name}/schedules"),
            &body,
        )
        .await
}

async fn delete(server: &TestServer, id: &str) -> crate::harness::Reply {
    server
        .request(
            Method::DELETE,
            &format!("/api/v1/schedules/{id}"),
            None,
            None,
            Some("application/json"),
        )
        .await
}

async fn api_schedules_are_created_listed_deleted_and_kept_across_registration(
    server: &TestServer,
) {
    let code = registered(
        server,
        "nightly",
        json!([{"cron": "0 3 * * *", "parameters": {"dataset": DATASET}}]),
    )
    .await;
    let reply = create(
        server,
        "nightly",
        json!({"cron": "30 2 * * *", "timezone": "Europe/Paris", "parameters": {"dataset": "api"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_string();
    assert_eq!(reply.body["source"], "api");
    assert_eq!(reply.body["active"], true);
    assert!(reply.body["next_at"].is_string(), "{}", reply.body);
    assert_eq!(
        reply.headers["location"].to_str().expect("location"),
        format!("/api/v1/schedules/{id}")
    );
    // Read back by id and in the deployment's list (also under the first release's paths),
    // after the one declared in code.
    let one = server.get_ok(&format!("/api/schedules/{id}")).await;
    assert_eq!(one["spec"]["timezone"], "Europe/Paris");
    let list = server
        .get_ok("/api/deployments/train/nightly/schedules")
        .await;
    let list = list.as_array().expect("array").clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["source"], "code");
    assert_eq!(list[1]["id"], id.as_str());
    assert_eq!(
        server
            .get("/api/v1/deployments/train/nope/schedules")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Registering again replaces the code's schedules only: the API one stays, with its id.
    let reply = register(
        server,
        &spec(
            "nightly",
            json!([{"cron": "0 5 * * *", "parameters": {"dataset": DATASET}}]),
        ),
    )
    .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let after = schedules_of(server, "nightly").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().any(|s| s["id"] == id.as_str()), "{after:?}");
    assert!(
        after
            .iter()
            .all(|s| s["id"] != code[0].0.to_string().as_str()),
        "{after:?}"
    );

    // It creates runs like any schedule: due, one run, created by it.
    let next = instant(&one["next_at"]);
    let outcome = tick(&server.state, next + Duration::seconds(1))
        .await
        .expect("tick");
    assert!(outcome.created >= 1, "{outcome:?}");
    let runs = runs_of(server, "nightly").await;
    assert!(
        runs.iter()
            .any(|r| r["created_by"] == format!("schedule:{id}")
                && r["parameters"]["dataset"] == "api"),
        "{runs:?}"
    );

    // A schedule from code cannot be deleted over the API: 409 saying why.
    let code_id = after
        .iter()
        .find(|s| s["source"] == "code")
        .and_then(|s| s["id"].as_str())
        .expect("code schedule")
        .to_string();
    let refused = delete(server, &code_id).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused.error_message().contains("from the code"),
        "{}",
        refused.body
    );
    // Deleted: gone from the list, 404 after; its runs stay.
    let deleted = delete(server, &id).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(
        server.get(&format!("/api/v1/schedules/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(server, &id).await.status, StatusCode::NOT_FOUND);
    assert_eq!(schedules_of(server, "nightly").await.len(), 1);
    assert!(!runs_of(server, "nightly").await.is_empty());
    let bad = delete(server, "not-an-id").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    // Without the JSON content type: 415, nothing deleted.
    let no_type = server
        .request(
            Method::DELETE,
            &format!("/api/v1/schedules/{code_id}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

const OPS: &str = "ops-secret-0123456789";
const TEAM: &str = "team-secret-0123456789";

fn keys() -> Settings {
    let key = |s: &str| s.parse::<ApiKey>().expect("key");
    Settings {
        api_keys: ApiKeys::new(vec![
            key(&format!("ops:{OPS}:admin")),
            key(&format!("team:{TEAM}:trigger=train/nightly")),
        ])
        .expect("keys"),
        ..Settings::default()
    }
}

async fn bad_api_schedules_are_refused_at_the_field(server: &TestServer) {
    registered(server, "checked", json!([])).await;
    let at = |reply: &crate::harness::Reply, pointer: &str| -> String {
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        reply.body["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["pointer"] == pointer)
            .and_then(|d| d["message"].as_str())
            .unwrap_or_else(|| panic!("no error at {pointer}: {}", reply.body))
            .to_string()
    };
    let d = json!({"dataset": "d"});
    let reply = create(
        server,
        "checked",
        json!({"cron": "0 3 * *", "parameters": d}),
    )
    .await;
    assert!(at(&reply, "/cron").contains("0 3 * * *"));
    let reply = create(
        server,
        "checked",
        json!({"interval": "0s", "parameters": d}),
    )
    .await;
    assert!(at(&reply, "/interval").contains("15m"));
    let reply = create(
        server,
        "checked",
        json!({"cron": "0 3 * * *", "timezone": "Mars/Olympus", "parameters": d}),
    )
    .await;
    assert!(at(&reply, "/timezone").contains("Europe/Paris"));
    let reply = create(
        server,
        "checked",
        json!({"cron": "0 3 * * *", "parameters": {"dataset": "d", "epochs": "many"}}),
    )
    .await;
    at(&reply, "/parameters/epochs");
    // The defaults do not give `dataset`: the schedule must.
    let reply = create(server, "checked", json!({"cron": "0 3 * * *"})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let reply = create(server, "checked", json!({"cron": "0 3 * * *", "colour": 1})).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    let reply = create(
        server,
        "nope",
        json!({"cron": "0 3 * * *", "parameters": d}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(schedules_of(server, "checked").await.is_empty());

    // At most 32 created over the API: the 33rd is refused (409), nothing more stored.
    for minute in 0..32 {
        let reply = create(
            server,
            "checked",
            json!({"cron": format!("{minute} 4 * * *"), "parameters": d}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let full = create(
        server,
        "checked",
        json!({"cron": "59 4 * * *", "parameters": d}),
    )
    .await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{}", full.body);
    assert!(full.error_message().contains("32"), "{}", full.body);
    assert_eq!(schedules_of(server, "checked").await.len(), 32);

    // A trigger key limited to train/nightly creates and deletes there, not elsewhere.
    registered(server, "nightly", json!([])).await;
    let keyed = server.with_settings(keys());
    let call = |method: Method, uri: String, body: Option<Value>| {
        let keyed = &keyed;
        async move {
            keyed
                .request(
                    method,
                    &uri,
                    body.map(|b| Body::from(b.to_string())),
                    Some(TEAM),
                    Some("application/json"),
                )
                .await
        }
    };
    let body = json!({"cron": "0 3 * * *", "parameters": d});
    let refused = call(
        Method::POST,
        "/api/v1/deployments/train/checked/schedules".into(),
        Some(body.clone()),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let theirs = schedules_of(server, "checked").await;
    let other_id = theirs[0]["id"].as_str().expect("id").to_string();
    let refused = call(
        Method::DELETE,
        format!("/api/v1/schedules/{other_id}"),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let refused = call(
        Method::POST,
        "/api/v1/deployments/train/checked/backfill".into(),
        Some(json!({"from": Utc::now() - Duration::hours(1), "to": Utc::now()})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let mine = call(
        Method::POST,
        "/api/v1/deployments/train/nightly/schedules".into(),
        Some(body),
    )
    .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    let mine_id = mine.body["id"].as_str().expect("id").to_string();
    let deleted = call(Method::DELETE, format!("/api/v1/schedules/{mine_id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    // Without a key: 401.
    let anonymous = keyed
        .request(
            Method::DELETE,
            &format!("/api/v1/schedules/{other_id}"),
            None,
            None,
            Some("application/json"),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// Backfills `name` from `from` to `to`.
async fn backfill(server: &TestServer, name: &str, body: Value) -> crate::harness::Reply {
    server
        .post_json(&format!("/api/v1/deployments/train/{name}/backfill"), &body)
        .await
}

fn hour_ago() -> DateTime<Utc> {
    (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(1))
        .expect("trunc")
}

async fn a_backfill_creates_each_instant_once_with_the_ticks_keys(server: &TestServer) {
    let (id, _) = registered(
        server,
        "hourly",
        json!([{"interval": "1m", "parameters": {"dataset": DATASET}, "overlap": "allow"}]),
    )
    .await[0];
    let from = hour_ago() - Duration::minutes(30);
    let to = from + Duration::minutes(9);
    let range = json!({"from": from, "to": to});
    let reply = backfill(server, "hourly", range.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        (
            &reply.body["instants"],
            &reply.body["created"],
            &reply.body["existing"]
        ),
        (&json!(10), &json!(10), &json!(0)),
        "{}",
        reply.body
    );
    let backfill_id = reply.body["id"].as_str().expect("id").to_string();
    let runs = runs_of(server, "hourly").await;
    assert_eq!(runs.len(), 10);
    let mut instants: Vec<DateTime<Utc>> =
        runs.iter().map(|r| instant(&r["scheduled_for"])).collect();
    instants.sort();
    let expected: Vec<DateTime<Utc>> = (0..10).map(|m| from + Duration::minutes(m)).collect();
    assert_eq!(instants, expected);
    for run in &runs {
        assert_eq!(run["created_by"], "backfill:local", "{run}");
        assert_eq!(run["state"], "Scheduled", "{run}");
        let tags: Vec<&str> = run["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            tags.contains(&"backfill")
                && tags.contains(&format!("backfill:{backfill_id}").as_str()),
            "{run}"
        );
        assert!(
            run["state_message"]
                .as_str()
                .is_some_and(|m| m.contains("backfill")),
            "{run}"
        );
    }
    // The same range again, and a wider one: only the new instants get a run.
    let again = backfill(server, "hourly", range).await;
    assert_eq!(
        (&again.body["created"], &again.body["existing"]),
        (&json!(0), &json!(10)),
        "{}",
        again.body
    );
    let wider = backfill(
        server,
        "hourly",
        json!({"from": from - Duration::minutes(2), "to": to, "schedule": id}),
    )
    .await;
    assert_eq!(
        (&wider.body["created"], &wider.body["existing"]),
        (&json!(2), &json!(10)),
        "{}",
        wider.body
    );

    // The tick over the same instants creates none of them again: the schedule is made to
    // have handled its instants only up to before the range (as after an outage), with
    // catch-up `all`, so the tick creates a run for every instant since but the 12 taken.
    let all = register(
        server,
        &spec(
            "hourly",
            json!([{"interval": "1m", "parameters": {"dataset": DATASET}, "overlap": "allow", "catchup": "all"}]),
        ),
    )
    .await;
    assert!(all.status.is_success(), "{}", all.body);
    let now = Utc::now();
    let due = server
        .store
        .due_schedules(now + Duration::minutes(2), 100)
        .await
        .expect("due");
    let last_at = due
        .iter()
        .find(|d| d.id == id)
        .expect("due schedule")
        .last_at;
    let rewound = from - Duration::minutes(3);
    assert!(
        server
            .store
            .advance_schedule(id, last_at, rewound, Some(rewound + Duration::minutes(1)))
            .await
            .expect("rewind")
    );
    let before = runs_of(server, "hourly").await.len();
    assert_eq!(before, 12);
    let ticked = tick(&server.state, now).await.expect("tick");
    let since = ((now - rewound).num_seconds() / 60) as usize;
    assert_eq!(ticked.created, since - 12, "{ticked:?}");
    let after = runs_of(server, "hourly").await;
    assert_eq!(after.len(), since, "{ticked:?}");
    let mut seen = std::collections::HashSet::new();
    for run in &after {
        assert!(
            seen.insert(instant(&run["scheduled_for"])),
            "two runs for one instant: {after:?}"
        );
    }

    // Refused, at the field: a range ending in the future, reversed, too long, no schedule.
    let at = |reply: &crate::harness::Reply, pointer: &str| {
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(
            reply.body["error"]["details"][0]["pointer"], pointer,
            "{}",
            reply.body
        );
    };
    let future = backfill(
        server,
        "hourly",
        json!({"from": from, "to": Utc::now() + Duration::hours(1)}),
    )
    .await;
    at(&future, "/to");
    at(
        &backfill(server, "hourly", json!({"from": to, "to": from})).await,
        "/to",
    );
    let long = backfill(
        server,
        "hourly",
        json!({"from": from - Duration::days(1), "to": from}),
    )
    .await;
    at(&long, "/from");
    assert!(long.error_message().contains("1000"), "{}", long.body);
    at(
        &backfill(
            server,
            "hourly",
            json!({"from": from, "to": to, "max_parallel": 0}),
        )
        .await,
        "/max_parallel",
    );
    at(
        &backfill(
            server,
            "hourly",
            json!({"from": from, "to": to, "schedule": Uuid::now_v7()}),
        )
        .await,
        "/schedule",
    );
    registered(server, "unscheduled", json!([])).await;
    at(
        &backfill(server, "unscheduled", json!({"from": from, "to": to})).await,
        "/schedule",
    );
    assert_eq!(
        backfill(server, "nope", json!({"from": from, "to": to}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn claim(server: &TestServer, worker: Uuid, max_runs: u32) -> Vec<Value> {
    let reply = server
        .post_json(
            "/api/v1/workers/claim",
            &json!({
                "worker": worker,
                "worker_name": "w1",
                "deployments": [{"flow": "train", "name": "limited", "version": "abc@0.1.0"}],
                "max_runs": max_runs,
                "wait_seconds": 0,
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["runs"].as_array().cloned().unwrap_or_default()
}

/// Every run of a backfill is written in one transaction of multi-row statements of at most
/// `ROWS_PER_STATEMENT` slots: one that spans two of them tells the slots taken already, on
/// both sides of the boundary, from the new ones, and gives no instant two runs.
async fn a_backfill_of_several_statements_creates_each_instant_once(server: &TestServer) {
    registered(
        server,
        "bulk",
        json!([{"interval": "1m", "parameters": {"dataset": DATASET}, "overlap": "allow"}]),
    )
    .await;
    let rows = i64::try_from(ROWS_PER_STATEMENT).expect("rows");
    let instants = 2 * rows;
    let from = hour_ago() - Duration::days(1);
    let to = from + Duration::minutes(instants - 1);
    // The 20 instants around the boundary of the two statements first.
    let middle = backfill(
        server,
        "bulk",
        json!({"from": from + Duration::minutes(rows - 10), "to": from + Duration::minutes(rows + 9)}),
    )
    .await;
    assert_eq!(middle.status, StatusCode::OK, "{}", middle.body);
    assert_eq!(
        (&middle.body["created"], &middle.body["existing"]),
        (&json!(20), &json!(0)),
        "{}",
        middle.body
    );
    let whole = backfill(server, "bulk", json!({"from": from, "to": to})).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    assert_eq!(
        (
            &whole.body["instants"],
            &whole.body["created"],
            &whole.body["existing"]
        ),
        (&json!(instants), &json!(instants - 20), &json!(20)),
        "{}",
        whole.body
    );
    // Every instant of the range once, as the API lists the runs.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/flow-runs?deployment=train/bulk&limit=500&cursor={c}"),
            None => "/api/v1/flow-runs?deployment=train/bulk&limit=500".to_string(),
        };
        let page = server.get_ok(&uri).await;
        for run in page["items"].as_array().expect("items") {
            let at = instant(&run["scheduled_for"]);
            assert!(seen.insert(at), "two runs for {at}");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: std::collections::BTreeSet<DateTime<Utc>> =
        (0..instants).map(|m| from + Duration::minutes(m)).collect();
    assert_eq!(seen, expected);
}

async fn a_backfills_max_parallel_holds_in_the_claim(server: &TestServer) {
    registered(
        server,
        "limited",
        json!([{"interval": "1m", "parameters": {"dataset": DATASET}, "overlap": "allow"}]),
    )
    .await;
    let from = hour_ago() - Duration::minutes(20);
    let reply = backfill(
        server,
        "limited",
        json!({"from": from, "to": from + Duration::minutes(5), "max_parallel": 2}),
    )
    .await;
    assert_eq!(reply.body["created"], 6, "{}", reply.body);
    // A run of the deployment triggered by hand afterwards is not held behind the backfill.
    let manual = server
        .post_json(
            "/api/v1/deployments/train/limited/runs",
            &json!({"parameters": {"dataset": "manual"}}),
        )
        .await;
    assert_eq!(manual.status, StatusCode::CREATED, "{}", manual.body);

    let worker = Uuid::now_v7();
    let first = claim(server, worker, 10).await;
    let backfilled = |runs: &[Value]| {
        runs.iter()
            .filter(|r| {
                r["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "backfill"))
            })
            .count()
    };
    assert_eq!(backfilled(&first), 2, "{first:?}");
    assert_eq!(first.len(), 3, "{first:?}");
    // At its limit: the next claims get none of its runs.
    assert!(claim(server, worker, 10).await.is_empty());
    // One ends (handed back here): one more may start, not two.
    let done = first
        .iter()
        .find(|r| {
            r["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "backfill"))
        })
        .expect("a backfill run");
    let released = server
        .post_json(
            &format!(
                "/api/v1/flow-runs/{}/release",
                done["run_id"].as_str().expect("id")
            ),
            &json!({"token": done["token"], "reason": "test"}),
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let next = claim(server, worker, 10).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(claim(server, worker, 10).await.is_empty());
}

async fn a_day_long_outage_gives_one_run_with_the_skipped_count(server: &TestServer) {
    let (_, first) = registered(
        server,
        "outage",
        json!([{"interval": "1m", "parameters": {"dataset": DATASET}}]),
    )
    .await[0];
    // The server comes back 24 h after the first instant: one run, for the latest instant,
    // standing for the 1440 before it.
    let back = first + Duration::hours(24) + Duration::seconds(5);
    let outcome = tick(&server.state, back).await.expect("tick");
    assert_eq!((outcome.created, outcome.skipped), (1, 1440), "{outcome:?}");
    let runs = runs_of(server, "outage").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        instant(&runs[0]["scheduled_for"]),
        first + Duration::hours(24)
    );
    let message = runs[0]["state_message"].as_str().unwrap_or_default();
    assert!(message.contains("1440 earlier"), "{message}");
    let id = runs[0]["id"].as_str().expect("id");
    let run = server.get_ok(&format!("/api/v1/flow-runs/{id}")).await;
    assert_eq!(run["skipped_instants"], 1440, "{run}");
    // Nothing more until the next instant.
    assert_eq!(
        tick(&server.state, back + Duration::seconds(30))
            .await
            .expect("tick")
            .created,
        0
    );
}

/// Runs of a past range are late by design: the ticks leave them `Scheduled` (never `Late`,
/// never `Expired`, whatever the schedule's `max_lateness`) until a worker takes them.
async fn backfill_runs_never_become_late_or_expired(server: &TestServer) {
    registered(
        server,
        "patient",
        json!([{"interval": "1m", "parameters": {"dataset": DATASET}, "overlap": "allow",
                "max_lateness": "2m"}]),
    )
    .await;
    let from = hour_ago();
    let reply = backfill(
        server,
        "patient",
        json!({"from": from, "to": from + Duration::minutes(4)}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["created"], 5, "{}", reply.body);
    for minutes in [1, 5, 30] {
        tick(&server.state, Utc::now() + Duration::minutes(minutes))
            .await
            .expect("tick");
    }
    let (backfilled, ticked): (Vec<Value>, Vec<Value>) = runs_of(server, "patient")
        .await
        .into_iter()
        .partition(|r| r["created_by"] == "backfill:local");
    assert_eq!(backfilled.len(), 5);
    // The same ticks did make the schedule's own unclaimed runs late.
    assert!(
        ticked
            .iter()
            .any(|r| r["state"] == "Late" || r["state"] == "Expired"),
        "{ticked:?}"
    );
    for run in &backfilled {
        assert_eq!(run["state"], "Scheduled", "{run}");
    }
}
