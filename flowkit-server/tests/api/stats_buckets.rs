//! `GET /api/stats` without a window: buckets aligned to their width, the closed ones counted
//! once and reused for 15 × the TTL while the current one is counted for every answer. Run
//! with a TTL of 200 ms (so closed buckets are reused for 3 s).

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use chrono::{DateTime, Duration, Timelike, Utc};
use flowkit_server::config::Settings;
use serde_json::Value;

const TTL: std::time::Duration = std::time::Duration::from_millis(200);

fn settings() -> Settings {
    Settings {
        stats_ttl: TTL,
        ..Settings::default()
    }
}

on_every_backend!(
    settings = super::settings();
    closed_buckets_are_counted_once_and_the_current_one_every_time,
);

/// Now, less the few milliseconds the fixture's events take (they must not lie in the future).
fn a_moment_ago() -> DateTime<Utc> {
    Utc::now() - Duration::milliseconds(50)
}

fn total(stats: &Value) -> u64 {
    stats["totals"]
        .as_object()
        .map(|t| t.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

async fn closed_buckets_are_counted_once_and_the_current_one_every_time(server: &TestServer) {
    let cache = server.state.stats_cache();
    let three_hours_ago = Utc::now() - Duration::hours(3);
    server
        .ingest(&flow_run("old", 0, three_hours_ago).events)
        .await;
    server
        .ingest(&flow_run("new", 0, a_moment_ago()).events)
        .await;

    let counted = cache.closed_counted();
    let first = server.get_ok("/api/v1/stats").await;
    assert_eq!(total(&first), 2, "{first}");
    assert_eq!(
        cache.closed_counted() - counted,
        23,
        "every closed bucket once"
    );
    // Aligned to whole hours, the last one holding now.
    let buckets = first["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 24);
    assert_eq!(first["bucket_seconds"], 3600);
    for bucket in buckets {
        let start: DateTime<Utc> = bucket["start"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("start");
        assert_eq!(
            (start.minute(), start.second(), start.nanosecond()),
            (0, 0, 0)
        );
    }
    assert_eq!(first["since"], buckets[0]["start"]);
    let last: DateTime<Utc> = buckets[23]["start"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("start");
    let until: DateTime<Utc> = first["until"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("until");
    assert!(
        last <= until && until - last < Duration::hours(1),
        "{first}"
    );

    // Two more runs: one in an earlier (closed) bucket, one now.
    server
        .ingest(&flow_run("late", 0, three_hours_ago).events)
        .await;
    server
        .ingest(&flow_run("newer", 0, a_moment_ago()).events)
        .await;
    tokio::time::sleep(TTL + std::time::Duration::from_millis(50)).await;
    let second = server.get_ok("/api/v1/stats").await;
    // The current bucket is counted again; the closed ones are reused (one more at most,
    // when an hour ended in between).
    assert_eq!(total(&second), 3, "{second}");
    assert!(
        cache.closed_counted() - counted <= 24,
        "{}",
        cache.closed_counted()
    );

    // Past 15 × the TTL, the closed buckets are counted again: the late run shows.
    tokio::time::sleep(TTL * 15).await;
    let third = server.get_ok("/api/v1/stats").await;
    assert_eq!(total(&third), 4, "{third}");
    assert!(
        cache.closed_counted() - counted >= 46,
        "{}",
        cache.closed_counted()
    );
}
