//! A failure notification really sent: a task with `on_failure = flowkit::notify::webhook(..)`
//! fails, and a small HTTP server on loopback started by the test receives the JSON.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use flowkit::task;
use std::sync::{Arc, Mutex, OnceLock};

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// The receiver's address, known once the server is up; the attribute reads it lazily.
static HOOK_URL: OnceLock<String> = OnceLock::new();

fn hook_url() -> String {
    HOOK_URL.get().cloned().unwrap_or_default()
}

fn notify_failure(ctx: &flowkit::hooks::HookContext) {
    // Forward to the ready-made webhook notification, whose URL is only known at run time.
    let hook = flowkit::notify::webhook(hook_url());
    let handle = tokio::runtime::Handle::current();
    handle.block_on(flowkit::hooks::Hook::call(&hook, ctx));
}

#[task(retries = 1, on_failure = notify_failure)]
async fn load_partition(day: String) -> anyhow::Result<u64> {
    anyhow::bail!("partition {day} is missing")
}

async fn start_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, body: axum::Json<serde_json::Value>| async move {
                    r.lock().expect("lock").push(body.0);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_notifies_a_webhook() {
    flowkit::testing::isolated_home();
    let (url, received) = start_receiver().await;
    HOOK_URL.set(url).expect("set once");

    let err = load_partition("2026-11-27".into())
        .await
        .expect_err("the task fails");
    assert!(err.to_string().contains("missing"));

    let bodies = received.lock().expect("lock").clone();
    assert_eq!(
        bodies.len(),
        1,
        "one notification for the one final failure: {bodies:?}"
    );
    let body = &bodies[0];
    assert_eq!(body["name"], "load_partition");
    assert_eq!(body["run_kind"], "task");
    assert_eq!(body["state"]["type"], "Failed");
    assert_eq!(body["attempt"], 2);
    assert!(
        body["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("partition 2026-11-27 is missing"),
        "{body}"
    );
}
