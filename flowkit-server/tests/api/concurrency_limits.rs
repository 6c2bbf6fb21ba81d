//! Tag concurrency limits of deployed runs (`/concurrency-limits`): set, listed, replaced and
//! deleted over HTTP with every bad input refused; held by claims across deployments, workers
//! and replicas, counted from leases (a dead worker's slot comes back when its lease ends); a
//! full tag does not hide the runs behind it. On every backend, with a lease of one second.

use crate::harness::{Reply, TestServer};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use flowkit_server::config::Settings;
use flowkit_server::reaper;
use flowkit_server::wire::StateType;
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
    limits_are_set_listed_replaced_and_deleted,
    bad_limits_are_refused_saying_why,
    the_server_keeps_at_most_max_limits,
    a_tag_limit_holds_across_deployments_and_comes_back_with_leases,
    runs_behind_a_full_tag_are_still_claimed,
    a_limit_holds_under_concurrent_claims_on_two_replicas,
);

/// `/api/v1/concurrency-limits/{tag}`, the tag percent-encoded.
fn limit_uri(tag: &str) -> String {
    let encoded: String = tag
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/api/v1/concurrency-limits/{encoded}")
}

async fn put(server: &TestServer, tag: &str, body: Value) -> Reply {
    let body = Body::from(serde_json::to_vec(&body).expect("json"));
    server
        .request(
            Method::PUT,
            &limit_uri(tag),
            Some(body),
            None,
            Some("application/json"),
        )
        .await
}

async fn set(server: &TestServer, tag: &str, limit: u32) -> Value {
    let reply = put(server, tag, json!({"limit": limit})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

async fn delete(server: &TestServer, tag: &str) -> Reply {
    server
        .request(Method::DELETE, &limit_uri(tag), None, None, None)
        .await
}

async fn leased(server: &TestServer, tag: &str) -> u64 {
    server.get_ok(&limit_uri(tag)).await["leased"]
        .as_u64()
        .expect("leased")
}

/// Registers `flow/name` (version v1, no retries) with `tags`.
async fn register(server: &TestServer, flow: &str, name: &str, tags: &[&str]) {
    let spec = json!({
        "flow": flow,
        "name": name,
        "flow_key": format!("pipelines::{flow}"),
        "version": "v1",
        "parameter_schema": {"type": "object", "additionalProperties": false},
        "output_schema": {},
        "default_parameters": {},
        "tags": tags,
        "concurrency_limit": null,
        "retries": 0,
    });
    let reply = server.post_json("/api/v1/deployments", &spec).await;
    assert!(reply.status.is_success(), "{}", reply.body);
}

async fn trigger(server: &TestServer, deployment: &str, tags: &[&str]) -> Uuid {
    let reply = server
        .post_json(
            &format!("/api/v1/deployments/{deployment}/runs"),
            &json!({"parameters": {}, "tags": tags}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid")
}

/// The deployments every worker of these tests serves.
const DEPLOYMENTS: [(&str, &str); 3] = [("train", "a"), ("train", "b"), ("etl", "c")];

async fn register_all(server: &TestServer) {
    register(server, "train", "a", &["gpu"]).await;
    register(server, "train", "b", &["gpu", "team-x"]).await;
    register(server, "etl", "c", &[]).await;
}

/// Claims up to `max_runs` as a new worker serving [`DEPLOYMENTS`]: the runs and tokens.
async fn claim(server: &TestServer, max_runs: u32) -> Vec<(Uuid, u64)> {
    claim_from(server, &DEPLOYMENTS, max_runs).await
}

/// Claims up to `max_runs` as a new worker serving `deployments`: the runs and tokens.
async fn claim_from(
    server: &TestServer,
    deployments: &[(&str, &str)],
    max_runs: u32,
) -> Vec<(Uuid, u64)> {
    let served: Vec<Value> = deployments
        .iter()
        .map(|(flow, name)| json!({"flow": flow, "name": name, "version": "v1"}))
        .collect();
    let answer = server
        .claim(Uuid::now_v7(), "host:1", json!(served), max_runs, 0)
        .await;
    answer["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|run| {
            let id = run["run_id"]
                .as_str()
                .expect("run_id")
                .parse()
                .expect("uuid");
            (id, run["token"].as_u64().expect("token"))
        })
        .collect()
}

async fn finish(server: &TestServer, id: Uuid, token: u64) {
    let mut event = crate::fixtures::event(
        id,
        flowkit_server::wire::RunKind::Flow,
        "train",
        id,
        None,
        chrono::Utc::now(),
        crate::fixtures::state(StateType::Completed, None),
    );
    event.lease = Some(token);
    let reply = server
        .post_json(
            &format!("/api/v1/flow-runs/{id}/finish"),
            &json!({"token": token, "event": event, "result": null}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn limits_are_set_listed_replaced_and_deleted(server: &TestServer) {
    // A tag with a space, a slash and a colon travels percent-encoded.
    let odd = "team a/gpu:1";
    let set_odd = set(server, odd, 2).await;
    assert_eq!(set_odd["tag"], odd);
    assert_eq!(set_odd["limit"], 2);
    assert_eq!(set_odd["leased"], 0);
    assert_eq!(server.get_ok(&limit_uri(odd)).await, set_odd);
    set(server, "db", 4).await;
    let list = server.get_ok("/api/v1/concurrency-limits").await;
    let tags: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|l| l["tag"].as_str())
        .collect();
    assert_eq!(tags, ["db", odd], "by tag");
    // Replaced in place.
    let replaced = set(server, odd, 5).await;
    assert_eq!(replaced["limit"], 5);
    assert_eq!(server.get_ok(&limit_uri(odd)).await["limit"], 5);
    assert_eq!(
        server.get_ok("/api/concurrency-limits").await["items"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "under /api too"
    );
    // Deleted once; then there is none.
    assert_eq!(delete(server, odd).await.status, StatusCode::NO_CONTENT);
    let gone = server.get(&limit_uri(odd)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert!(gone.error_message().contains("has no concurrency limit"));
    let again = delete(server, odd).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_eq!(again.error_code(), "not_found");
}

async fn bad_limits_are_refused_saying_why(server: &TestServer) {
    for (body, pointer_or_field) in [
        (json!({"limit": 0}), "/limit"),
        (json!({"limit": 1_000_001}), "/limit"),
        (json!({"limit": -1}), "limit"),
        (json!({"limit": "2"}), "limit"),
        (json!({"limit": 2.5}), "limit"),
        (json!({}), "limit"),
        (json!({"limit": 2, "slots": 3}), "slots"),
    ] {
        let reply = put(server, "gpu", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_body");
        assert!(
            reply.body.to_string().contains(pointer_or_field),
            "{body}: {}",
            reply.body
        );
    }
    // A blank tag, in each route that takes one.
    let blank = put(server, " ", json!({"limit": 1})).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST, "{}", blank.body);
    assert_eq!(blank.error_code(), "invalid_parameter");
    assert!(
        blank.error_message().contains("not blank"),
        "{}",
        blank.body
    );
    assert_eq!(
        server.get(&limit_uri(" ")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(delete(server, " ").await.status, StatusCode::BAD_REQUEST);
    let long = "t".repeat(1001);
    let reply = put(server, &long, json!({"limit": 1})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // Not JSON: 415; malformed JSON: 400.
    let reply = server
        .request(
            Method::PUT,
            &limit_uri("gpu"),
            Some(Body::from(r#"{"limit": 1}"#)),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = server
        .request(
            Method::PUT,
            &limit_uri("gpu"),
            Some(Body::from("{")),
            None,
            Some("application/json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // Nothing was set.
    let list = server.get_ok("/api/v1/concurrency-limits").await;
    assert_eq!(list["items"], json!([]));
    // A whole number written as a float is an integer (as JSON Schema says).
    let whole = put(server, "gpu", json!({"limit": 3.0})).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    assert_eq!(whole.body["limit"], 3, "{}", whole.body);
}

async fn the_server_keeps_at_most_max_limits(server: &TestServer) {
    let max = flowkit_server::wire::api::concurrency_limits::MAX_LIMITS;
    for i in 0..max {
        set(server, &format!("tag-{i:04}"), 1).await;
    }
    let reply = put(server, "one-more", json!({"limit": 1})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.error_code(), "conflict");
    assert!(reply.error_message().contains("delete one first"));
    // A limit kept already can still be changed; one deleted makes room.
    assert_eq!(set(server, "tag-0000", 7).await["limit"], 7);
    assert_eq!(
        delete(server, "tag-0001").await.status,
        StatusCode::NO_CONTENT
    );
    set(server, "one-more", 1).await;
    let list = server.get_ok("/api/v1/concurrency-limits").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(max));
}

async fn a_tag_limit_holds_across_deployments_and_comes_back_with_leases(server: &TestServer) {
    register_all(server).await;
    set(server, "gpu", 2).await;
    // Five runs tagged gpu in two deployments (b's carry team-x too), an untagged run of c,
    // and a run of c tagged gpu by its trigger.
    let mut gpu = Vec::new();
    for deployment in ["train/a", "train/b", "train/a", "train/b", "train/a"] {
        gpu.push(trigger(server, deployment, &[]).await);
    }
    let untagged = trigger(server, "etl/c", &[]).await;
    let tagged_c = trigger(server, "etl/c", &["gpu"]).await;
    // One worker asking for ten gets the two oldest gpu runs and the untagged one.
    let first = claim(server, 10).await;
    let ids: Vec<Uuid> = first.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [gpu[0], gpu[1], untagged], "{ids:?}");
    assert_eq!(leased(server, "gpu").await, 2);
    // Another worker gets nothing while both slots are leased.
    assert!(claim(server, 10).await.is_empty());
    // A finished run gives its slot back: the next oldest gpu run goes.
    finish(server, first[0].0, first[0].1).await;
    assert_eq!(leased(server, "gpu").await, 1);
    let second = claim(server, 10).await;
    assert_eq!(
        second.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [gpu[2]]
    );
    // Raising the limit lets one more go at once; lowering it stops none of the leased ones.
    assert_eq!(set(server, "gpu", 3).await["leased"], 2);
    assert_eq!(claim(server, 10).await.len(), 1);
    assert_eq!(set(server, "gpu", 1).await["leased"], 3);
    assert!(claim(server, 10).await.is_empty());
    // The workers die: at lease end the reaper decides their runs, and the slots come back.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(reaper::reap_now(&server.state).await.expect("reap"), 4);
    assert_eq!(leased(server, "gpu").await, 0);
    let after = claim(server, 10).await;
    assert_eq!(after.len(), 1, "the limit is 1 now: {after:?}");
    let left = [gpu[4], tagged_c];
    assert!(left.contains(&after[0].0), "{after:?}");
    // Lifted: the last one goes.
    assert_eq!(delete(server, "gpu").await.status, StatusCode::NO_CONTENT);
    let last = claim(server, 10).await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(left.contains(&last[0].0) && last[0].0 != after[0].0);
}

async fn runs_behind_a_full_tag_are_still_claimed(server: &TestServer) {
    register_all(server).await;
    set(server, "gpu", 1).await;
    // More gpu runs than a claim looks at in one read, then one untagged run and one tagged
    // team-x only (b's tags are gpu and team-x: a limit on team-x alone does not hold it).
    for _ in 0..120 {
        trigger(server, "train/a", &[]).await;
    }
    let untagged = trigger(server, "etl/c", &[]).await;
    let team = trigger(server, "etl/c", &["team-x"]).await;
    set(server, "team-x", 5).await;
    let first = claim(server, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(leased(server, "gpu").await, 1);
    let next = claim(server, 1).await;
    assert_eq!(
        next.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [untagged],
        "not hidden by the gpu runs at their limit"
    );
    let then = claim(server, 5).await;
    assert_eq!(then.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [team]);
    assert_eq!(leased(server, "team-x").await, 1);
    assert!(claim(server, 5).await.is_empty());
}

async fn a_limit_holds_under_concurrent_claims_on_two_replicas(server: &TestServer) {
    register_all(server).await;
    set(server, "gpu", 3).await;
    set(server, "team-x", 2).await;
    for i in 0..40 {
        let deployment = if i % 2 == 0 { "train/a" } else { "train/b" };
        trigger(server, deployment, &[]).await;
    }
    let replica = server.replica(settings()).await;
    // Workers of a and workers of b, on both replicas: claims of different deployments do not
    // wait for each other's deployment, only for the tags they share. Four rounds, each
    // ending with every run taken finished.
    for round in 0..4 {
        let mut claims = tokio::task::JoinSet::new();
        for i in 0..16 {
            let on = if i % 2 == 0 {
                server.with_settings(settings())
            } else {
                replica.with_settings(settings())
            };
            let deployment = [DEPLOYMENTS[(i / 2) % 2]];
            claims.spawn(async move { claim_from(&on, &deployment, 5).await });
        }
        let mut taken = Vec::new();
        while let Some(got) = claims.join_next().await {
            taken.extend(got.expect("claim task"));
        }
        // b's runs carry team-x too: at most 2 of them, at most 3 gpu runs in all.
        assert_eq!(taken.len(), 3, "round {round}: {taken:?}");
        let mut ids: Vec<Uuid> = taken.iter().map(|(id, _)| *id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "round {round}: each run claimed once");
        assert_eq!(leased(server, "gpu").await, 3);
        assert!(leased(server, "team-x").await <= 2);
        for (id, token) in taken {
            finish(server, id, token).await;
        }
        assert_eq!(leased(server, "gpu").await, 0);
    }
}

/// PostgreSQL: a claim of a run carrying a limited tag waits for the tag's row, so that it
/// counts the leases of the claim holding it once that one has committed (claims of other
/// deployments, on any replica, take turns per tag).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_the_claims_holding_its_tags() {
    let Some(server) = TestServer::postgres_with(settings()).await else {
        return;
    };
    register_all(&server).await;
    set(&server, "gpu", 1).await;
    let a = trigger(&server, "train/a", &[]).await;
    let b = trigger(&server, "train/b", &[]).await;
    // Another claim holding the gpu row, as a claim of b does until it commits.
    let pool = sqlx::PgPool::connect(&server.url).await.expect("connect");
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT tag FROM concurrency_limits WHERE tag = 'gpu' FOR UPDATE")
        .fetch_all(&mut *holder)
        .await
        .expect("lock the gpu row");
    let on = server.with_settings(settings());
    let waiting = tokio::spawn(async move { claim_from(&on, &[DEPLOYMENTS[0]], 5).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the claim waits for the gpu row");
    // The holder leases b's run and commits: the waiting claim counts it, and takes nothing.
    sqlx::query(
        "UPDATE runs SET state = 'Pending', lease_token = lease_token + 1, \
         lease_expires = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(b)
    .execute(&mut *holder)
    .await
    .expect("lease b");
    holder.commit().await.expect("commit");
    let got = waiting.await.expect("claim");
    assert!(got.is_empty(), "the slot was b's: {got:?}");
    assert_eq!(leased(&server, "gpu").await, 1);
    // Once b's lease ends, a goes.
    sqlx::query("UPDATE runs SET lease_expires = NULL, state = 'Completed' WHERE id = $1")
        .bind(b)
        .execute(&pool)
        .await
        .expect("end b's lease");
    let got = claim_from(&server, &[DEPLOYMENTS[0]], 5).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a]);
    pool.close().await;
    server.finish().await;
}
