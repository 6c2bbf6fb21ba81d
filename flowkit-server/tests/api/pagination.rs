//! Keyset pagination of the flow runs, stable while runs arrive.

use crate::fixtures::{flow_run, ids, urlencode};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};

on_every_backend!(keyset_pagination,);

async fn keyset_pagination(server: &TestServer) {
    let start = Utc::now() - Duration::hours(2);
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    for i in 0..120 {
        let run = flow_run(&format!("paged_{i}"), 0, start + Duration::seconds(i));
        expected.push(run.flow.to_string());
        batch.extend(run.events);
    }
    server.ingest(&batch).await;
    expected.reverse(); // Newest first.

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/flow-runs?limit=50&cursor={}", urlencode(c)),
            None => "/api/flow-runs?limit=50".to_string(),
        };
        let page = server.get_ok(&uri).await;
        pages += 1;
        seen.extend(ids(&page["items"]));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);

    // A run arriving between two pages does not shift the next page.
    let first = server.get_ok("/api/flow-runs?limit=10").await;
    server
        .ingest(&flow_run("newest", 0, Utc::now()).events)
        .await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = server
        .get_ok(&format!(
            "/api/flow-runs?limit=10&cursor={}",
            urlencode(cursor)
        ))
        .await;
    assert_eq!(ids(&second["items"]), expected[10..20].to_vec());

    let bad = server.get("/api/flow-runs?cursor=not-a-cursor").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_cursor");
}
