//! Reporters telling the server how many events they had to drop.

use crate::harness::TestServer;
use axum::http::StatusCode;
use serde_json::json;

on_every_backend!(reporter_drops, reporter_drops_read_back);

async fn reporter_drops(server: &TestServer) {
    let ok = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": 12, "worker": "build-7:4242"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let missing = server
        .post_json("/api/reporter-drops", &json!({"dropped": 1}))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        missing.error_message().contains("worker"),
        "{}",
        missing.error_message()
    );
    let unknown = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": 1, "worker": "w:1", "extra": true}),
        )
        .await;
    // A field from a newer client is ignored, not refused.
    assert_eq!(unknown.status, StatusCode::ACCEPTED, "{}", unknown.body);
    let negative = server
        .post_json(
            "/api/reporter-drops",
            &json!({"dropped": -1, "worker": "w:1"}),
        )
        .await;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = server.post_raw("/api/reporter-drops", "{").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "invalid_json");
}

async fn reporter_drops_read_back(server: &TestServer) {
    let empty = server.get_ok("/api/v1/reporter-drops").await;
    assert_eq!(
        empty,
        json!({"total_dropped": 0, "workers": 0, "items": []})
    );
    for (worker, dropped) in [("a:1", 5u64), ("b:2", 7), ("a:1", 3)] {
        let ok = server
            .post_json(
                "/api/v1/reporter-drops",
                &json!({"dropped": dropped, "worker": worker}),
            )
            .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
    }
    let read = server.get_ok("/api/v1/reporter-drops").await;
    assert_eq!(read["total_dropped"], 15, "{read}");
    assert_eq!(read["workers"], 2, "{read}");
    let items = read["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    // The worker whose report came last first.
    assert_eq!(items[0]["worker"], "a:1", "{read}");
    assert_eq!(items[0]["dropped"], 8);
    assert!(items[0]["last_seen"].is_string());
    assert_eq!(items[1]["dropped"], 7);

    // Saturated counters do not overflow the total.
    for worker in ["big:1", "big:2"] {
        let ok = server
            .post_json(
                "/api/v1/reporter-drops",
                &json!({"dropped": i64::MAX, "worker": worker}),
            )
            .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
    }
    // Over the document's `int64`: refused, naming the field.
    let over = server
        .post_json(
            "/api/v1/reporter-drops",
            &json!({"dropped": u64::MAX, "worker": "big:3"}),
        )
        .await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(over.error_message().contains("dropped"), "{}", over.body);
    let read = server.get_ok("/api/v1/reporter-drops").await;
    assert!(
        read["total_dropped"].as_u64().expect("total") >= i64::MAX as u64,
        "{read}"
    );

    // Capped: only the most recent workers are listed, the totals count them all.
    let listed = flowkit_server::wire::api::ingest::MAX_REPORTER_DROPS_LISTED;
    for i in 0..listed + 5 {
        let ok = server
            .post_json(
                "/api/v1/reporter-drops",
                &json!({"dropped": 1, "worker": format!("many:{i}")}),
            )
            .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED);
    }
    let read = server.get_ok("/api/v1/reporter-drops").await;
    assert_eq!(read["items"].as_array().expect("items").len(), listed);
    assert_eq!(read["workers"], (listed + 5 + 4) as u64, "{read}");
}
