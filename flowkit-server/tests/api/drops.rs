//! Reporters telling the server how many events they had to drop.

use crate::harness::TestServer;
use axum::http::StatusCode;
use serde_json::json;

on_every_backend!(reporter_drops,);

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
