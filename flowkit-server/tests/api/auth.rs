//! API keys and their scopes, and refusing to listen on the network without any.

use crate::fixtures::{flow_run, ids};
use crate::harness::{Reply, TestServer};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::{Cli, Config, ConfigError, Settings};
use serde_json::{Value, json};

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
        "/api/v1/reporter-drops".into(),
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
    // Reading drops back takes `read`, which `report` alone lacks.
    let read_drops = |secret| {
        server.request(
            Method::GET,
            "/api/v1/reporter-drops",
            None,
            Some(secret),
            None,
        )
    };
    assert_eq!(
        read_drops("report-secret-0123456789").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read_drops("read-secret-0123456789").await.status,
        StatusCode::OK
    );

    // Open without a key: the health and readiness probes, the API description and the
    // placeholder page.
    assert_eq!(server.get("/api/health").await.status, StatusCode::OK);
    assert_eq!(server.get("/api/v1/ready").await.status, StatusCode::OK);
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

on_every_backend!(
    keys_limited_to_deployments,
    created_by_says_who_created_a_run
);

fn deployment_spec(flow: &str, name: &str) -> Value {
    json!({
        "flow": flow,
        "name": name,
        "flow_key": format!("demo::{flow}"),
        "version": "v1",
        "parameter_schema": {
            "type": "object",
            "properties": {"epochs": {"type": "integer", "minimum": 0}},
            "additionalProperties": false
        },
        "output_schema": {},
    })
}

const OPS: &str = "ops-secret-0123456789";
const TEAM: &str = "team-secret-0123456789";
const OTHER: &str = "other-secret-0123456789";
const WORKER: &str = "worker-secret-0123456789";

fn limited_keys() -> Settings {
    let key = |s: &str| s.parse::<ApiKey>().expect("key");
    Settings {
        api_keys: ApiKeys::new(vec![
            key(&format!("ops:{OPS}:admin")),
            // Another team: may run train/nightly (and eval/adhoc) only, and read its own runs.
            key(&format!(
                "team:{TEAM}:trigger=train/nightly,trigger=eval/adhoc"
            )),
            key(&format!("other:{OTHER}:trigger=eval/adhoc")),
            key(&format!("gpu-worker:{WORKER}:report,worker=train/nightly")),
        ])
        .expect("keys"),
        ..Settings::default()
    }
}

async fn call(
    server: &TestServer,
    method: Method,
    uri: &str,
    body: Option<Value>,
    secret: &str,
) -> Reply {
    let body = body.map(|b| Body::from(serde_json::to_vec(&b).expect("json")));
    server
        .request(method, uri, body, Some(secret), Some("application/json"))
        .await
}

/// `trigger=FLOW/NAME` and `worker=FLOW/NAME`: a key for one deployment, safe to hand out.
async fn keys_limited_to_deployments(open: &TestServer) {
    let keyed = open.with_settings(limited_keys());
    let server = &keyed;
    let register = |flow: &str, name: &str, secret: &'static str| {
        let spec = deployment_spec(flow, name);
        async move {
            call(
                server,
                Method::POST,
                "/api/v1/deployments",
                Some(spec),
                secret,
            )
            .await
        }
    };
    // The worker key registers its deployment, not another.
    assert_eq!(
        register("train", "nightly", WORKER).await.status,
        StatusCode::CREATED
    );
    let refused = register("train", "adhoc", WORKER).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.error_code(), "forbidden");
    assert!(
        refused.error_message().contains("only for train/nightly")
            && refused.error_message().contains("train/adhoc"),
        "{}",
        refused.error_message()
    );
    assert_eq!(
        register("train", "adhoc", OPS).await.status,
        StatusCode::CREATED
    );

    // It claims its deployment only.
    let claim = |flow: &str, name: &str| {
        json!({"worker": uuid::Uuid::now_v7(), "worker_name": "gpu:1", "max_runs": 1,
               "deployments": [{"flow": flow, "name": name, "version": "v1"}]})
    };
    let reply = call(
        server,
        Method::POST,
        "/api/v1/workers/claim",
        Some(claim("train", "adhoc")),
        WORKER,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);

    // The team's key triggers train/nightly, not train/adhoc.
    let run = |secret: &'static str, deployment: &str| {
        let uri = format!("/api/v1/deployments/{deployment}/runs");
        async move {
            call(
                server,
                Method::POST,
                &uri,
                Some(json!({"parameters": {"epochs": 1}})),
                secret,
            )
            .await
        }
    };
    let mine = run(TEAM, "train/nightly").await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    assert_eq!(mine.body["created_by"], "key:team");
    let refused = run(TEAM, "train/adhoc").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused
            .error_message()
            .contains("train/nightly, eval/adhoc"),
        "names what it may trigger: {}",
        refused.error_message()
    );
    let theirs = run(OPS, "train/nightly").await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    let adhoc = run(OPS, "train/adhoc").await;
    assert_eq!(adhoc.status, StatusCode::CREATED);
    let mine = mine.body["id"].as_str().expect("id").to_string();
    let theirs = theirs.body["id"].as_str().expect("id").to_string();
    let adhoc = adhoc.body["id"].as_str().expect("id").to_string();

    // It reads the run it created (the run, its logs, its result), under both prefixes, but
    // no other run and nothing else.
    for prefix in ["/api/v1", "/api"] {
        for tail in ["", "/logs"] {
            let reply = call(
                server,
                Method::GET,
                &format!("{prefix}/flow-runs/{mine}{tail}"),
                None,
                TEAM,
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{prefix} {tail}: {}",
                reply.body
            );
        }
        let result = call(
            server,
            Method::GET,
            &format!("{prefix}/flow-runs/{mine}/result"),
            None,
            TEAM,
        )
        .await;
        assert_eq!(
            result.status,
            StatusCode::ACCEPTED,
            "not final yet: {}",
            result.body
        );
        for uri in [
            format!("{prefix}/flow-runs/{theirs}"),
            format!("{prefix}/flow-runs/{theirs}/logs"),
            format!("{prefix}/flow-runs/{theirs}/result"),
            format!("{prefix}/flow-runs/{mine}/task-runs"),
            format!("{prefix}/flow-runs/{mine}/graph"),
            format!("{prefix}/flow-runs"),
            format!("{prefix}/deployments"),
            format!("{prefix}/flow-runs/not-a-uuid"),
        ] {
            let reply = call(server, Method::GET, &uri, None, TEAM).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}: {}", reply.body);
            assert!(
                reply.error_message().contains("`read`"),
                "{}",
                reply.error_message()
            );
        }
    }
    // Another limited key did not create it: no.
    let reply = call(
        server,
        Method::GET,
        &format!("/api/v1/flow-runs/{mine}"),
        None,
        OTHER,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Cancel and retry: runs of its deployments only.
    let cancel = |id: &str, secret: &'static str| {
        let uri = format!("/api/v1/flow-runs/{id}/cancel");
        async move { call(server, Method::POST, &uri, None, secret).await }
    };
    let reply = cancel(&adhoc, TEAM).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(
        reply.error_message().contains("train/adhoc"),
        "{}",
        reply.error_message()
    );
    let reply = cancel(&theirs, OTHER).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    // Its deployment, even a run another key created.
    let reply = cancel(&theirs, TEAM).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["state"], "Cancelled");
    let retry = call(
        server,
        Method::POST,
        &format!("/api/v1/flow-runs/{adhoc}/retry"),
        None,
        TEAM,
    )
    .await;
    assert_eq!(retry.status, StatusCode::FORBIDDEN, "{}", retry.body);
    let retry = call(
        server,
        Method::POST,
        &format!("/api/v1/flow-runs/{theirs}/retry"),
        None,
        TEAM,
    )
    .await;
    assert_eq!(
        retry.status,
        StatusCode::OK,
        "a cancelled run of its deployment: {}",
        retry.body
    );
    // Bulk cancel: one of its deployments, named.
    let bulk = |body: Value| {
        call(
            server,
            Method::POST,
            "/api/v1/flow-runs/cancel",
            Some(body),
            TEAM,
        )
    };
    assert_eq!(
        bulk(json!({"flow_name": "train"})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        bulk(json!({"deployment": "train/adhoc"})).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = bulk(json!({"deployment": "train/nightly"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// `created_by`: the key's name, `dashboard` (with its header) or `local` without keys; a
/// reported run's parent run.
async fn created_by_says_who_created_a_run(open: &TestServer) {
    let reply = open
        .post_json("/api/v1/deployments", &deployment_spec("train", "nightly"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    const RUNS: &str = "/api/v1/deployments/train/nightly/runs";
    async fn trigger(
        server: &TestServer,
        secret: Option<&str>,
        dashboard: bool,
    ) -> (Value, String) {
        let mut builder = axum::http::Request::builder()
            .method(Method::POST)
            .uri(RUNS)
            .header("content-type", "application/json");
        if let Some(secret) = secret {
            builder = builder.header("authorization", format!("Bearer {secret}"));
        }
        if dashboard {
            builder = builder.header(flowkit_server::auth::CLIENT_HEADER, "dashboard");
        }
        let reply = server
            .request_with(builder, Body::from(r#"{"parameters": {}}"#))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_string();
        (reply.body["created_by"].clone(), id)
    }
    let (by, id) = trigger(open, None, false).await;
    assert_eq!(by, "local");
    // Stored, not only answered.
    assert_eq!(
        open.get_ok(&format!("/api/v1/flow-runs/{id}")).await["created_by"],
        "local"
    );
    assert_eq!(trigger(open, None, true).await.0, "dashboard");
    let keyed = open.with_settings(limited_keys());
    assert_eq!(trigger(&keyed, Some(OPS), false).await.0, "key:ops");
    let (by, id) = trigger(&keyed, Some(TEAM), true).await;
    // Through the dashboard a key still says which key: a header cannot hide it.
    assert_eq!(by, "dashboard:key:team");
    let reply = call(
        &keyed,
        Method::GET,
        &format!("/api/v1/flow-runs/{id}"),
        None,
        TEAM,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "its own run: {}", reply.body);
    // Runs the runtime reported: a top-level flow run says nothing, a task run names the run
    // that started it.
    let reported = flow_run("reported", 1, Utc::now());
    open.ingest(&reported.events).await;
    let flow = open
        .get_ok(&format!("/api/v1/flow-runs/{}", reported.flow))
        .await;
    assert!(flow.get("created_by").is_none(), "{flow}");
    let tasks = open
        .get_ok(&format!("/api/v1/flow-runs/{}/task-runs", reported.flow))
        .await;
    assert_eq!(
        tasks["items"][0]["created_by"],
        format!("run:{}", reported.flow),
        "{tasks}"
    );
}
