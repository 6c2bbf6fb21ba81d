//! The server under load and outage (issue 8, section 2): the ingest memory budget, the
//! readiness probe, stats at the edge of time, security headers on every response.

use crate::fixtures::{event, log};
use crate::harness::TestServer;
use axum::http::{StatusCode, header};
use chrono::{Duration, Utc};
use flowkit_server::config::Settings;
use flowkit_server::store::Backend;
use flowkit_server::wire::{Event, LogLevel, RunKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use uuid::Uuid;

/// A batch of `lines` log lines of `bytes` each, about `lines * bytes` long as JSON.
fn big_batch(lines: usize, bytes: usize) -> Vec<Event> {
    let flow = Uuid::now_v7();
    let at = Utc::now() - Duration::minutes(1);
    (0..lines)
        .map(|i| {
            event(
                flow,
                RunKind::Flow,
                "big",
                flow,
                None,
                at + Duration::milliseconds(i as i64),
                log(LogLevel::Info, &"x".repeat(bytes)),
            )
        })
        .collect()
}

/// Many concurrent large batches against a small budget: while the budget is full a batch is
/// refused with 503 `unavailable` and `Retry-After` before its body is read; retried, every
/// batch is stored once; the bytes in flight never exceed the budget.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_memory_is_bounded_and_refusals_are_retryable() {
    let budget = 2 << 20;
    let server = TestServer::sqlite_with(Settings {
        max_body: 1 << 20,
        ingest_memory: budget,
        ..Settings::default()
    })
    .await;
    let listening = server.listen().await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/events", listening.url);
    let post = |body: Vec<u8>| {
        client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
    };

    // Deterministic: with the budget held, a batch is refused, and admitted once it is free.
    let held = server
        .state
        .ingest_budget()
        .try_reserve(budget - 100 * 1024)
        .expect("the budget is free");
    let body = serde_json::to_vec(&big_batch(10, 20_000)).expect("json");
    let refused = post(body.clone()).await.expect("post");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = refused
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // Refused before its body was read: the connection is not reused (a client that sent the
    // next batch on it would get a connection error, not an answer).
    assert_eq!(
        refused
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let error: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "unavailable", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--ingest-memory")),
        "{error}"
    );
    drop(held);
    let admitted = post(body).await.expect("post");
    assert_eq!(admitted.status(), StatusCode::ACCEPTED);

    // Under load: 24 batches of ~900 KB at once against room for two.
    let refusals = Arc::new(AtomicUsize::new(0));
    let batches = flowkit::testing::scaled(24).max(4);
    let mut tasks = Vec::new();
    for _ in 0..batches {
        let events = big_batch(20, 45_000);
        let body = serde_json::to_vec(&events).expect("json");
        assert!(
            body.len() < 1 << 20 && body.len() > 800_000,
            "{}",
            body.len()
        );
        let (client, url, refusals) = (client.clone(), url.clone(), refusals.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let answer = client
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                match answer.status() {
                    StatusCode::ACCEPTED => {
                        let outcome: serde_json::Value = answer.json().await.expect("json");
                        return (outcome["accepted"].as_u64(), outcome["duplicates"].as_u64());
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(answer.headers().contains_key(header::RETRY_AFTER));
                        refusals.fetch_add(1, Ordering::Relaxed);
                        // Sooner than Retry-After says, to keep the test short.
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected {other}: {:?}", answer.text().await),
                }
            }
        }));
    }
    for task in tasks {
        // Every batch stored, once, when it was finally admitted.
        assert_eq!(task.await.expect("task"), (Some(20), Some(0)));
    }
    let budget_state = server.state.ingest_budget();
    assert!(
        budget_state.peak() <= budget,
        "peak {} over the budget {budget}",
        budget_state.peak()
    );
    assert_eq!(budget_state.in_flight(), 0, "every reservation given back");
    eprintln!(
        "ingest budget: {} refusals for {batches} batches, peak {} of {budget} bytes",
        refusals.load(Ordering::Relaxed),
        budget_state.peak()
    );
    drop(listening);
    server.finish().await;
}

/// `/api/v1/ready` touches the database; `/api/v1/health` does not.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn ready_says_whether_the_database_answers() {
    let server = TestServer::sqlite().await;
    let ready = server.get("/api/v1/ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["database"], "sqlite");
    // The database gone (its pool closed): not ready, the API answers 503, health stays up.
    server.store.close().await;
    let ready = server.get("/api/v1/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(ready.error_code(), "unavailable");
    assert!(ready.headers.contains_key(header::RETRY_AFTER));
    let list = server.get("/api/v1/flow-runs").await;
    assert_eq!(
        list.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        list.body
    );
    assert_eq!(list.error_code(), "unavailable");
    assert_eq!(server.get("/api/v1/health").await.status, StatusCode::OK);
    server.finish().await;
}

/// Stats windows at the end of time: no `+10000-…` instants, no bucket outside the window, a
/// clear 400 for an end RFC 3339 cannot write.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn stats_at_the_edge_of_time() {
    let server = TestServer::sqlite().await;
    let cases = [
        ("9999-12-31T23:59:50Z", "9999-12-31T23:59:59.999999Z", 1000),
        ("9999-12-30T23:59:59Z", "9999-12-31T23:59:59Z", 24),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:03Z", 1000),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", 10),
    ];
    for (since, until, buckets) in cases {
        let uri = format!("/api/v1/stats?since={since}&until={until}&buckets={buckets}");
        let stats = server.get_ok(&uri).await;
        let since_t = chrono::DateTime::parse_from_rfc3339(since).expect("since");
        let until_t = chrono::DateTime::parse_from_rfc3339(until).expect("until");
        let starts = stats["buckets"].as_array().expect("buckets");
        assert!(
            !starts.is_empty() && starts.len() <= buckets,
            "{uri}: {stats}"
        );
        for bucket in starts {
            let start = bucket["start"].as_str().expect("start");
            let parsed = chrono::DateTime::parse_from_rfc3339(start)
                .unwrap_or_else(|e| panic!("{uri}: bucket start {start:?} is not RFC 3339: {e}"));
            assert!(parsed >= since_t && parsed < until_t, "{uri}: {start}");
        }
        for end in ["since", "until"] {
            let text = stats[end].as_str().expect(end);
            assert!(
                chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                "{uri}: {end} {text}"
            );
        }
    }
    for (uri, parameter) in [
        (
            "/api/v1/stats?until=9999-12-31T23:00:00-05:00".to_string(),
            "until",
        ),
        (
            "/api/v1/stats?since=0000-01-01T00:00:00%2B01:00&until=0000-01-02T00:00:00Z"
                .to_string(),
            "since",
        ),
    ] {
        let refused = server.get(&uri).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            refused.body
        );
        assert_eq!(refused.error_code(), "invalid_parameter");
        assert!(
            refused.error_message().contains(parameter) && refused.error_message().contains("9999"),
            "{uri}: {}",
            refused.error_message()
        );
    }
    server.finish().await;
}

/// Every response, API, dashboard or error, forbids framing and content sniffing.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn security_headers_on_every_response() {
    let server = TestServer::sqlite().await;
    let replies = [
        ("/", server.get("/").await),
        ("/assets/app.js", server.get("/assets/app.js").await),
        ("/api/v1/health", server.get("/api/v1/health").await),
        ("/api/v1/flow-runs", server.get("/api/v1/flow-runs").await),
        (
            "/api/v1/openapi.json",
            server.get("/api/v1/openapi.json").await,
        ),
        ("/api/nothing", server.get("/api/nothing").await),
        (
            "POST /api/v1/events",
            server.post_raw("/api/v1/events", "{").await,
        ),
    ];
    for (what, reply) in replies {
        let h = &reply.headers;
        assert_eq!(
            h.get(header::X_FRAME_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{what}"
        );
        assert_eq!(
            h.get(header::X_CONTENT_TYPE_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{what}"
        );
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
        assert_eq!(
            h.get_all(header::CONTENT_SECURITY_POLICY).iter().count(),
            1,
            "{what}: one policy"
        );
    }
    server.finish().await;
}
