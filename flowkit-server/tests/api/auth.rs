//! API keys and their scopes, and refusing to listen on the network without any.

use crate::fixtures::{flow_run, ids};
use crate::harness::TestServer;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::{Cli, Config, ConfigError, Settings};

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
