//! With a server configured, a top-level flow returns without waiting for the server, however
//! slow it is; `flowkit::flush()` and the guard of `flowkit::init()` are what wait for
//! delivery.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowkit::{flow, task};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the server takes to answer each POST.
const SERVER_DELAY: Duration = Duration::from_millis(400);

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<String>>>);

impl Received {
    fn distinct(&self) -> usize {
        let ids = self.0.lock().expect("lock");
        ids.iter().collect::<HashSet<_>>().len()
    }
}

async fn ingest(
    State(received): State<Received>,
    Json(events): Json<Vec<serde_json::Value>>,
) -> (StatusCode, Json<serde_json::Value>) {
    tokio::time::sleep(SERVER_DELAY).await;
    let mut ids = received.0.lock().expect("lock");
    for event in &events {
        ids.push(event["id"].as_str().unwrap_or_default().to_string());
    }
    let body = serde_json::json!({"accepted": events.len(), "duplicates": 0, "rejected": []});
    (StatusCode::ACCEPTED, Json(body))
}

/// A server that takes [`SERVER_DELAY`] to answer every batch of events.
async fn slow_server() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/api/v1/events", axum::routing::post(ingest))
        .route(
            "/api/v1/reporter-drops",
            axum::routing::post(|| async { StatusCode::OK }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

#[flow]
async fn request(x: u64) -> u64 {
    double(x).await + double(x + 1).await
}

/// Events per call of `request`: three states for the flow and for each task.
const EVENTS_PER_CALL: usize = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_do_not_wait_for_a_slow_server_and_flush_and_the_guard_do() {
    let home = tempfile::tempdir().expect("temp dir");
    let (url, received) = slow_server().await;
    let mut config = flowkit::config::Config::from_env();
    config.home = home.path().to_path_buf();
    config.summary = false;
    config.event_log = None;
    config.api_url = Some(url);
    assert!(flowkit::config::init(config).is_ok(), "configured first");

    // Starts the sink thread and the reporter before anything is timed.
    let guard = flowkit::init();

    let start = Instant::now();
    assert_eq!(request(1).await, 6);
    let took = start.elapsed();
    assert!(
        took < SERVER_DELAY / 2,
        "a flow waited {took:?} for a server that answers in {SERVER_DELAY:?}"
    );

    // Flows ending together do not queue behind each other's delivery.
    let start = Instant::now();
    for i in 0..20 {
        assert_eq!(request(i).await, 4 * i + 2);
    }
    let took = start.elapsed();
    assert!(took < SERVER_DELAY, "20 flows took {took:?}");

    // `flush` waits until the server has every event.
    assert!(flowkit::flush().await, "everything delivered");
    assert_eq!(received.distinct(), 21 * EVENTS_PER_CALL);

    // So does the guard, when it drops.
    assert_eq!(request(100).await, 402);
    let start = Instant::now();
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("drop the guard");
    assert!(
        start.elapsed() >= SERVER_DELAY / 2,
        "the guard waited for delivery"
    );
    assert_eq!(received.distinct(), 22 * EVENTS_PER_CALL);
}
