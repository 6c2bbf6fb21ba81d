//! What a web page of another site can do to a server on loopback: nothing. Without API keys a
//! `Host` that is not loopback, the bind address or an `--allowed-host` is refused (DNS
//! rebinding), and a state-changing request needs a JSON content type or the server's own
//! `Origin` (cross-origin "simple" posts).

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::Utc;
use flowkit_server::allowed_hosts::AllowedHosts;
use flowkit_server::config::Settings;

fn get_with_host(uri: &str, host: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(header::HOST, host)
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn keyless_server_answers_loopback_hosts_only() {
    let server = TestServer::sqlite().await;
    for host in [
        "localhost",
        "localhost:4200",
        "127.0.0.1:4200",
        "127.0.0.1",
        "[::1]:4200",
    ] {
        let reply = server
            .request_with(get_with_host("/api/v1/flow-runs", host), Body::empty())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.body);
    }
    for (uri, host) in [
        ("/api/v1/flow-runs", "evil.example"),
        ("/api/v1/flow-runs", "evil.example:4200"),
        ("/api/v1/stats", "localhost.evil.example:4200"),
        ("/api/flow-runs", "192.168.1.20:4200"),
        ("/", "evil.example"),
        ("/api/v1/health", "evil.example"),
    ] {
        let reply = server
            .request_with(get_with_host(uri, host), Body::empty())
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri} {host}");
        assert_eq!(reply.error_code(), "forbidden_host");
        assert!(
            reply.error_message().contains("--allowed-host"),
            "{}",
            reply.error_message()
        );
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    // An allowed host passes; other names are still refused.
    let allowed = server.with_settings(Settings {
        allowed_hosts: AllowedHosts::parse(&["flowkit.internal"]).expect("hosts"),
        ..Settings::default()
    });
    let reply = allowed
        .request_with(
            get_with_host("/api/v1/flow-runs", "flowkit.internal:4200"),
            Body::empty(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = allowed
        .request_with(
            get_with_host("/api/v1/flow-runs", "evil.example"),
            Body::empty(),
        )
        .await;
    assert_eq!(reply.error_code(), "forbidden_host");

    // With keys, a rebound page has no key: any host, unless hosts are given.
    let keyed = server.with_settings(Settings {
        api_keys: flowkit_server::auth::ApiKeys::new(vec![
            "ops:ops-secret-0123456789:read".parse().expect("key"),
        ])
        .expect("keys"),
        ..Settings::default()
    });
    let reply = keyed
        .request_with(
            get_with_host("/api/v1/flow-runs", "flowkit.example.com")
                .header(header::AUTHORIZATION, "Bearer ops-secret-0123456789"),
            Body::empty(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    server.finish().await;
}

/// Through the real server: `run` accepts its bind address and refuses a rebound name.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_real_server_refuses_a_rebound_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let spawned = flowkit_server::spawn(listener, flowkit_server::Config::new(url))
        .await
        .expect("spawn");
    let client = reqwest::Client::new();
    let runs = format!("{}/api/v1/flow-runs", spawned.url());
    let ok = client.get(&runs).send().await.expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = client
        .get(&runs)
        .header(header::HOST, "attacker.example:4200")
        .send()
        .await
        .expect("get");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden_host");
    spawned.stop().await.expect("stop");
}

/// Every state-changing route refuses a cross-origin "simple" request (no JSON content type),
/// and changes nothing; the same request with JSON, or from the server's own page, passes.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn cross_origin_simple_posts_change_nothing() {
    let server = TestServer::sqlite().await;
    let run = flow_run("etl", 0, Utc::now());
    server.ingest(&run.events[..2]).await;
    let id = run.flow;
    let cancel = format!("/api/v1/flow-runs/{id}/cancel");
    let post = |uri: &str, content_type: Option<&str>, origin: Option<&str>| {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, "127.0.0.1:4200");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        builder
    };
    let routes = [
        cancel.clone(),
        format!("/api/v1/flow-runs/{id}/retry"),
        "/api/v1/flow-runs/cancel".to_string(),
        "/api/flow-runs/cancel".to_string(),
        "/api/v1/deployments/train/nightly/runs".to_string(),
        "/api/v1/deployments".to_string(),
        "/api/v1/events".to_string(),
        "/api/v1/reporter-drops".to_string(),
        "/api/v1/workers/claim".to_string(),
        "/api/v1/workers/heartbeat".to_string(),
        format!("/api/v1/flow-runs/{id}/finish"),
        format!("/api/v1/flow-runs/{id}/release"),
    ];
    for uri in &routes {
        for (content_type, origin, status, code) in [
            (
                Some("text/plain"),
                Some("http://evil.example"),
                StatusCode::FORBIDDEN,
                "forbidden_origin",
            ),
            (
                Some("application/x-www-form-urlencoded"),
                Some("null"),
                StatusCode::FORBIDDEN,
                "forbidden_origin",
            ),
            (
                None,
                Some("http://127.0.0.1:4201"),
                StatusCode::FORBIDDEN,
                "forbidden_origin",
            ),
            (
                Some("multipart/form-data; boundary=x"),
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                None,
                None,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
        ] {
            let reply = server
                .request_with(post(uri, content_type, origin), Body::from("{}"))
                .await;
            assert_eq!(reply.status, status, "{uri} {content_type:?} {origin:?}");
            assert_eq!(reply.error_code(), code, "{uri}");
        }
    }
    let run_state = |body: &serde_json::Value| body["state"].as_str().map(str::to_string);
    let stored = server.get_ok(&format!("/api/v1/flow-runs/{id}")).await;
    assert_eq!(run_state(&stored).as_deref(), Some("Running"), "unchanged");

    // The dashboard's own page: same origin, no body needed.
    let reply = server
        .request_with(
            post(
                &format!("/api/v1/flow-runs/{id}/retry"),
                None,
                Some("http://127.0.0.1:4200"),
            ),
            Body::empty(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    // A JSON client, whatever its origin header says (a browser would have asked first).
    let reply = server
        .request_with(post(&cancel, Some("application/json"), None), Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_ne!(run_state(&reply.body).as_deref(), Some("Running"));
    server.finish().await;
}
