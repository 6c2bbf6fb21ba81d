//! API keys at runtime: `POST /keys`, `GET /keys`, `DELETE /keys/{key}` (scope `admin`), the
//! rules they share with `--api-key`, two replicas on one database seeing a new key and a
//! revocation within the stated bound, the keyless mode, the bound of stored keys (also under
//! concurrent creates), and when each key was last used. On every backend.

use crate::harness::{Reply, TestServer};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::Settings;
use flowkit_server::key_ring::{MISS_RELOAD_EVERY, STALE_AFTER};
use flowkit_server::store::api_keys::{KeyCreated, StoredKey};
use flowkit_wire::api::keys::MAX_STORED_KEYS;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The startup admin key of these tests (a flag key: the API cannot revoke it).
const ROOT: &str = "root-secret-0123456789abcdef";

fn keyed() -> Settings {
    Settings {
        api_keys: ApiKeys::new(vec![
            format!("root:{ROOT}:admin").parse::<ApiKey>().expect("key"),
        ])
        .expect("keys"),
        ..Settings::default()
    }
}

on_every_backend!(
    settings = super::keyed();
    keys_are_created_listed_and_revoked,
    bad_bodies_are_refused_at_their_fields,
    stored_keys_are_bounded,
    two_replicas_see_new_keys_at_once_and_revocations_within_the_bound,
    last_used_is_listed_and_written_at_most_once_a_minute,
    concurrent_creates_keep_the_bound,
);

mod keyless {
    on_every_backend!(
        settings = flowkit_server::config::Settings::default();
        a_keyless_server_makes_its_first_key_an_admin_and_then_requires_keys,
    );
    use super::a_keyless_server_makes_its_first_key_an_admin_and_then_requires_keys;
}

async fn call(
    server: &TestServer,
    method: Method,
    uri: &str,
    body: Option<Value>,
    auth: Option<&str>,
) -> Reply {
    let body = body.map(|b| Body::from(serde_json::to_vec(&b).expect("json")));
    let content_type = (method != Method::GET).then_some("application/json");
    server.request(method, uri, body, auth, content_type).await
}

async fn create(server: &TestServer, auth: Option<&str>, name: &str, scopes: &[&str]) -> Reply {
    call(
        server,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": name, "scopes": scopes})),
        auth,
    )
    .await
}

fn secret(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["secret"].as_str().expect("a secret").to_string()
}

async fn status(server: &TestServer, method: Method, uri: &str, auth: Option<&str>) -> StatusCode {
    let body = (method != Method::GET).then(|| json!({}));
    call(server, method, uri, body, auth).await.status
}

async fn keys_are_created_listed_and_revoked(server: &TestServer) {
    let created = create(
        server,
        Some(ROOT),
        "team-a",
        &["read", "trigger=train/nightly"],
    )
    .await;
    let team_a = secret(&created);
    assert!(team_a.starts_with("fk_") && team_a.len() >= 40, "{team_a}");
    assert_eq!(created.body["key"]["name"], "team-a");
    assert_eq!(created.body["key"]["source"], "stored");
    assert_eq!(created.body["key"]["created_by"], "key:root");
    assert_eq!(
        created.body["key"]["scopes"],
        json!(["read", "trigger=train/nightly"])
    );

    // The new key works with its scopes, and only them.
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", Some(&team_a)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(server, Method::GET, "/api/v1/keys", Some(&team_a)).await,
        StatusCode::FORBIDDEN
    );
    let other = call(
        server,
        Method::POST,
        "/api/v1/deployments/train/adhoc/runs",
        Some(json!({})),
        Some(&team_a),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    assert_eq!(
        status(server, Method::GET, "/api/v1/keys", None).await,
        StatusCode::UNAUTHORIZED
    );

    // Listed, never with a secret or digest.
    let list = call(server, Method::GET, "/api/v1/keys", None, Some(ROOT)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let names: Vec<(&str, &str)> = list.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap_or(""),
                k["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(names, [("root", "startup"), ("team-a", "stored")]);
    let text = list.body.to_string();
    assert!(!text.contains(&team_a) && !text.contains(ROOT), "{text}");
    assert!(!text.contains("digest"), "{text}");

    // A name in use, stored or startup: 409.
    let again = create(server, Some(ROOT), "team-a", &["read"]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let root = create(server, Some(ROOT), "root", &["read"]).await;
    assert_eq!(root.status, StatusCode::CONFLICT, "{}", root.body);
    assert!(
        root.error_message().contains("startup flag"),
        "{}",
        root.body
    );

    // Revoked by name: refused at once here; a second revocation finds nothing.
    let revoked = call(
        server,
        Method::DELETE,
        "/api/v1/keys/team-a",
        Some(json!({})),
        Some(ROOT),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["key"]["name"], "team-a");
    assert!(revoked.body["revoked_at"].is_string());
    let refused = call(
        server,
        Method::GET,
        "/api/v1/flow-runs",
        None,
        Some(&team_a),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(
        status(server, Method::DELETE, "/api/v1/keys/team-a", Some(ROOT)).await,
        StatusCode::NOT_FOUND
    );
    // A startup key cannot be revoked over the API.
    let flag = call(
        server,
        Method::DELETE,
        "/api/v1/keys/root",
        Some(json!({})),
        Some(ROOT),
    )
    .await;
    assert_eq!(flag.status, StatusCode::CONFLICT, "{}", flag.body);
    assert!(flag.error_message().contains("--api-key"), "{}", flag.body);
    // Without the JSON content type: 415 (a web page cannot revoke keys).
    let bare = server
        .request(
            Method::DELETE,
            "/api/v1/keys/team-a",
            None,
            Some(ROOT),
            None,
        )
        .await;
    assert_eq!(bare.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The name is free again; revoking by id works too, also under /api.
    let renewed = create(server, Some(ROOT), "team-a", &["report"]).await;
    let renewed_secret = secret(&renewed);
    let id = renewed.body["key"]["id"].as_str().expect("id").to_string();
    let report = |auth: String| async move {
        call(
            server,
            Method::POST,
            "/api/v1/events",
            Some(json!([])),
            Some(&auth),
        )
        .await
        .status
    };
    assert_eq!(report(renewed_secret.clone()).await, StatusCode::ACCEPTED);
    assert_eq!(
        status(
            server,
            Method::DELETE,
            &format!("/api/keys/{id}"),
            Some(ROOT)
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(report(renewed_secret).await, StatusCode::UNAUTHORIZED);
    let list = call(server, Method::GET, "/api/keys", None, Some(ROOT)).await;
    assert_eq!(
        list.body["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );

    // The gauge of /metrics counts the active stored keys.
    let _kept = secret(&create(server, Some(ROOT), "kept", &["read"]).await);
    let text = metrics_text(server).await;
    assert!(
        text.contains("flowkit_api_keys{source=\"stored\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("flowkit_api_keys{source=\"startup\"} 1\n"),
        "{text}"
    );
}

async fn metrics_text(server: &TestServer) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = server
        .router()
        .oneshot(
            axum::http::Request::get("/api/v1/metrics")
                .header("authorization", format!("Bearer {ROOT}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("text")
}

async fn bad_bodies_are_refused_at_their_fields(server: &TestServer) {
    for (body, pointer) in [
        (json!({"name": "a b", "scopes": ["read"]}), "/name"),
        (json!({"name": "x".repeat(65), "scopes": ["read"]}), "/name"),
        (json!({"name": "a", "scopes": []}), "/scopes"),
        (json!({"name": "a", "scopes": ["write"]}), "/scopes/0"),
        (
            json!({"name": "a", "scopes": ["read", "read=train/nightly"]}),
            "/scopes/1",
        ),
        (
            json!({"name": "a", "scopes": ["trigger=train"]}),
            "/scopes/0",
        ),
        (json!({"name": "a", "scopes": ["read,admin"]}), "/scopes/0"),
        (
            json!({"name": "a", "scopes": ["admin", "worker=train/nightly"]}),
            "/scopes",
        ),
    ] {
        let reply = call(
            server,
            Method::POST,
            "/api/v1/keys",
            Some(body.clone()),
            Some(ROOT),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "invalid_body");
        assert_eq!(
            reply.body["error"]["details"][0]["pointer"], pointer,
            "{body}: {}",
            reply.body
        );
    }
    // The same rules as the flag: what the flag refuses, the API refuses.
    assert!(
        "a:0123456789abcdef:trigger=train"
            .parse::<ApiKey>()
            .is_err()
    );
    let unknown = call(
        server,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "a", "scopes": ["read"], "secret": "mine"})),
        Some(ROOT),
    )
    .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.body
    );
    let list = call(server, Method::GET, "/api/v1/keys", None, Some(ROOT)).await;
    assert_eq!(
        list.body["keys"].as_array().map(Vec::len),
        Some(1),
        "nothing stored"
    );
}

async fn stored_keys_are_bounded(server: &TestServer) {
    // Filled through the store (the API's path past the checks), then one more over the API.
    for i in 0..MAX_STORED_KEYS {
        let outcome = server
            .store
            .create_api_key(StoredKey {
                id: uuid::Uuid::now_v7(),
                name: format!("bulk-{i}"),
                digest: flowkit_server::auth::digest(&format!("bulk-secret-{i}-0123456789")),
                scopes: "read".to_string(),
                created: chrono::Utc::now(),
                created_by: "test".to_string(),
                last_used: None,
            })
            .await
            .expect("store");
        assert!(matches!(outcome, KeyCreated::Created), "{i}: {outcome:?}");
    }
    let full = create(server, Some(ROOT), "one-more", &["read"]).await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{}", full.body);
    assert!(full.error_message().contains("1000"), "{}", full.body);
    let list = call(server, Method::GET, "/api/v1/keys", None, Some(ROOT)).await;
    assert_eq!(
        list.body["keys"].as_array().map(Vec::len),
        Some(MAX_STORED_KEYS + 1),
        "the startup key and every stored one"
    );
    // Revoking one makes room; the last one works at once.
    assert_eq!(
        status(server, Method::DELETE, "/api/v1/keys/bulk-0", Some(ROOT)).await,
        StatusCode::OK
    );
    let last = secret(&create(server, Some(ROOT), "one-more", &["read"]).await);
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", Some(&last)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(
            server,
            Method::GET,
            "/api/v1/flow-runs",
            Some("bulk-secret-999-0123456789")
        )
        .await,
        StatusCode::OK
    );
}

/// Polls `check` until it is true or `deadline` passes; how long it took.
async fn within(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_replicas_see_new_keys_at_once_and_revocations_within_the_bound(a: &TestServer) {
    let b = a.replica(keyed()).await;
    // Both replicas have read the (empty) stored keys: B's copy is warm.
    assert_eq!(
        status(&b, Method::GET, "/api/v1/keys", Some(ROOT)).await,
        StatusCode::OK
    );
    let created = secret(&create(a, Some(ROOT), "ci", &["read"]).await);
    // On B: an unknown token re-reads the keys (at most every MISS_RELOAD_EVERY), so the key
    // works there at once, well within the bound.
    let took = within(STALE_AFTER, "a key created on A works on B", async || {
        status(&b, Method::GET, "/api/v1/flow-runs", Some(&created)).await == StatusCode::OK
    })
    .await;
    eprintln!("created on A, accepted by B after {took:?}");
    assert_eq!(
        status(a, Method::GET, "/api/v1/flow-runs", Some(&created)).await,
        StatusCode::OK
    );
    // Revoked on B: A, which holds the key in its copy, refuses it within the bound.
    assert_eq!(
        status(&b, Method::DELETE, "/api/v1/keys/ci", Some(ROOT)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&b, Method::GET, "/api/v1/flow-runs", Some(&created)).await,
        StatusCode::UNAUTHORIZED,
        "at once on the replica that revoked it"
    );
    let took = within(
        STALE_AFTER,
        "a key revoked on B is refused by A",
        async || {
            status(a, Method::GET, "/api/v1/flow-runs", Some(&created)).await
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    eprintln!("revoked on B, refused by A after {took:?}");

    // Unknown tokens re-read the keys at most once per MISS_RELOAD_EVERY: two misses in a
    // row make one read.
    let ring = b.state.key_ring();
    tokio::time::sleep(MISS_RELOAD_EVERY).await;
    assert!(
        ring.reload_on_miss(&b.store).await.is_some(),
        "the first miss re-reads"
    );
    assert!(
        ring.reload_on_miss(&b.store).await.is_none(),
        "the second does not"
    );
    b.finish().await;
}

pub(crate) async fn a_keyless_server_makes_its_first_key_an_admin_and_then_requires_keys(
    server: &TestServer,
) {
    // Open: everything is allowed without a key.
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", None).await,
        StatusCode::OK
    );
    // Its first key must be an admin: keys are required as soon as one exists.
    let reader = create(server, None, "reader", &["read"]).await;
    assert_eq!(
        reader.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reader.body
    );
    assert!(reader.error_message().contains("admin"), "{}", reader.body);
    let created = create(server, None, "ops", &["admin"]).await;
    let admin = secret(&created);
    assert_eq!(created.body["key"]["created_by"], "local");
    // From now on a key is required.
    let refused = call(server, Method::GET, "/api/v1/flow-runs", None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", Some(&admin)).await,
        StatusCode::OK
    );
    // A second key, of any scope, by the admin.
    let reader = secret(&create(server, Some(&admin), "reader", &["read"]).await);
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", Some(&reader)).await,
        StatusCode::OK
    );
    // Revoking every key makes the server open again (it listens on loopback only).
    for name in ["reader", "ops"] {
        assert_eq!(
            status(
                server,
                Method::DELETE,
                &format!("/api/v1/keys/{name}"),
                Some(&admin)
            )
            .await,
            StatusCode::OK,
            "{name}"
        );
    }
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", None).await,
        StatusCode::OK
    );
}

/// The `last_used` of the listed key `name`.
async fn last_used(server: &TestServer, name: &str) -> Value {
    let list = call(server, Method::GET, "/api/v1/keys", None, Some(ROOT)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    list.body["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not listed: {}", list.body))["last_used"]
        .clone()
}

/// `GET /keys` shows when each stored key last let a request in: never at first, then the
/// instant of its first use, which further uses within a minute do not move (no write per
/// request). The store writes it only when the one stored is a minute old.
async fn last_used_is_listed_and_written_at_most_once_a_minute(server: &TestServer) {
    let secret = secret(&create(server, Some(ROOT), "ci", &["read"]).await);
    assert_eq!(last_used(server, "ci").await, Value::Null, "never used");
    let startup = call(server, Method::GET, "/api/v1/keys", None, Some(ROOT)).await;
    assert_eq!(startup.body["keys"][0]["name"], "root");
    assert_eq!(startup.body["keys"][0]["last_used"], Value::Null);

    let before = chrono::Utc::now();
    assert_eq!(
        status(server, Method::GET, "/api/v1/flow-runs", Some(&secret)).await,
        StatusCode::OK
    );
    // Written in the background, after the answer.
    within(Duration::from_secs(10), "last_used written", async || {
        !last_used(server, "ci").await.is_null()
    })
    .await;
    let first = last_used(server, "ci").await;
    let at: chrono::DateTime<chrono::Utc> = first
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not an instant: {first}"));
    assert!(
        at >= before - chrono::Duration::seconds(1),
        "{at} < {before}"
    );
    for _ in 0..20 {
        assert_eq!(
            status(server, Method::GET, "/api/v1/flow-runs", Some(&secret)).await,
            StatusCode::OK
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(last_used(server, "ci").await, first, "within the minute");

    // The store's own guard, at chosen instants (another replica noting the same key).
    let digest = flowkit_server::auth::digest(&secret);
    let store = &server.store;
    assert!(
        !store
            .touch_api_key(digest, at + chrono::Duration::seconds(30))
            .await
            .expect("touch"),
        "less than a minute after the last write"
    );
    let later = at + chrono::Duration::seconds(61);
    assert!(store.touch_api_key(digest, later).await.expect("touch"));
    let shown: chrono::DateTime<chrono::Utc> = last_used(server, "ci")
        .await
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("an instant");
    assert_eq!(shown.timestamp_millis(), later.timestamp_millis());
    // A revoked key is not written.
    assert_eq!(
        status(server, Method::DELETE, "/api/v1/keys/ci", Some(ROOT)).await,
        StatusCode::OK
    );
    assert!(
        !store
            .touch_api_key(digest, later + chrono::Duration::minutes(5))
            .await
            .expect("touch")
    );
}

/// Many creates at once with room for a few: exactly that many are created, the others get
/// 409, and no more than `MAX_STORED_KEYS` are active (PostgreSQL runs them on several
/// connections at once).
async fn concurrent_creates_keep_the_bound(server: &TestServer) {
    use tower::ServiceExt;
    const ROOM: usize = 3;
    const TRIES: usize = 24;
    for i in 0..MAX_STORED_KEYS - ROOM {
        let outcome = server
            .store
            .create_api_key(StoredKey {
                id: uuid::Uuid::now_v7(),
                name: format!("bulk-{i}"),
                digest: flowkit_server::auth::digest(&format!("bulk-secret-{i}-0123456789")),
                scopes: "read".to_string(),
                created: chrono::Utc::now(),
                created_by: "test".to_string(),
                last_used: None,
            })
            .await
            .expect("store");
        assert!(matches!(outcome, KeyCreated::Created), "{i}: {outcome:?}");
    }
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..TRIES {
        let router = server.router();
        creates.spawn(async move {
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/api/v1/keys")
                .header("authorization", format!("Bearer {ROOT}"))
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"name": format!("race-{i}"), "scopes": ["read"]}).to_string(),
                ))
                .expect("request");
            router.oneshot(request).await.expect("infallible").status()
        });
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(status) = creates.join_next().await {
        match status.expect("task") {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => refused += 1,
            other => panic!("a create answered {other}"),
        }
    }
    assert_eq!((created, refused), (ROOM, TRIES - ROOM));
    let active = server.store.active_api_keys().await.expect("keys");
    assert_eq!(active.len(), MAX_STORED_KEYS);
}
