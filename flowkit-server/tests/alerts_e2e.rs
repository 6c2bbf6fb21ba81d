//! Server-side alerts end to end, with real parts: a real `flowkit-server` process (SQLite
//! file, `--public-url`, first retry after 1 s), a deployed flow failing in a real worker, and
//! a webhook receiver on loopback that is down at first. The failure is alerted once the
//! receiver is back, after the server was SIGKILLed and started again in between: exactly one
//! message, naming the flow, deployment, state and error, with a link that opens the run's
//! page; every attempt recorded. The flow's own in-process `on_failure` webhook, sent by the
//! worker, carries the same body (one formatting code, `flowkit_wire::alerts`), less the
//! fields only the server knows.

use axum::extract::State;
use axum::http::StatusCode;
use flowkit::{Worker, flow};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const PUBLIC_URL: &str = "https://flowkit.example.com";

/// The webhook receiver: 503 while `down`, else 200; records what it accepted.
#[derive(Default)]
struct Receiver {
    down: AtomicBool,
    refused: Mutex<u32>,
    accepted: Mutex<Vec<Value>>,
    /// What the flow's in-process hook sent (always accepted).
    in_process: Mutex<Vec<Value>>,
}

async fn receive_in_process(
    State(rec): State<Arc<Receiver>>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    rec.in_process.lock().expect("lock").push(body);
    StatusCode::OK
}

/// Where the flow's in-process hook posts, known once the receiver is up.
static IN_PROCESS_HOOK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn notify_in_process(ctx: &flowkit::hooks::HookContext) {
    let hook = flowkit::notify::webhook(IN_PROCESS_HOOK.get().cloned().unwrap_or_default());
    let handle = tokio::runtime::Handle::current();
    handle.block_on(flowkit::hooks::Hook::call(&hook, ctx));
}

async fn receive(
    State(rec): State<Arc<Receiver>>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    if rec.down.load(Ordering::SeqCst) {
        *rec.refused.lock().expect("lock") += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    rec.accepted.lock().expect("lock").push(body);
    StatusCode::OK
}

/// The server process, SIGKILLed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(db: &str, port: u16) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_flowkit-server"))
            .args([
                "--database-url",
                db,
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                PUBLIC_URL,
                "--alert-retry-after",
                "1s",
                "--lease",
                "3s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flowkit-server"),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn wait_until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(res) = client().get(format!("{url}/api/v1/health")).send().await
            && res.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// Polls `what` every 100 ms until it is true, for at most `within`.
async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails, saying why.
#[flow(on_failure = notify_in_process)]
async fn fails_for_alerts() -> anyhow::Result<()> {
    anyhow::bail!("the dataset is empty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployed_run_is_alerted_once_across_a_receiver_outage_and_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let rec = Arc::new(Receiver::default());
    rec.down.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let hook = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().expect("addr")
    );
    let _ = IN_PROCESS_HOOK.set(format!(
        "http://{}/in-process",
        listener.local_addr().expect("addr")
    ));
    let app = axum::Router::new()
        .route("/hook/{token}", axum::routing::post(receive))
        .route("/in-process", axum::routing::post(receive_in_process))
        .with_state(Arc::clone(&rec));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let server = start_server(&db, port);
    wait_until_up(&url).await;
    let rule: Value = client()
        .post(format!("{url}/api/v1/alert-rules"))
        .json(&json!({
            "name": "failures",
            "deployment": "fails_for_alerts/e2e",
            "states": ["Failed"],
            "webhook": hook,
        }))
        .send()
        .await
        .expect("create the rule")
        .json()
        .await
        .expect("the rule");
    let rule_id = rule["id"].as_str().expect("the rule's id").to_string();

    // A real worker of a deployment that fails.
    let mut cfg = flowkit::config::Config::from_env();
    cfg.home = dir.path().join("home");
    cfg.summary = false;
    cfg.api_url = Some(url.clone());
    assert!(flowkit::config::init(cfg).is_ok(), "configured first");
    let worker = Worker::new()
        .handle_signals(false)
        .claim_wait(Duration::from_secs(1));
    let stop = worker.shutdown_handle();
    let serving = tokio::spawn(worker.serve([fails_for_alerts::deployment("e2e")]));
    let trigger = format!("{url}/api/v1/deployments/fails_for_alerts/e2e/runs");
    // 404 until the worker has registered the deployment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let id: Uuid = loop {
        let res = client()
            .post(&trigger)
            .json(&json!({"parameters": {}}))
            .send()
            .await
            .expect("trigger");
        if res.status().as_u16() == 201 {
            let body: Value = res.json().await.expect("the run");
            break body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("the run's id");
        }
        assert!(Instant::now() < deadline, "the deployment is registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run_url = format!("{url}/api/v1/flow-runs/{id}");
    let run_url = run_url.as_str();
    wait_for("the run failed", Duration::from_secs(30), || async move {
        get(run_url).await["state"] == "Failed"
    })
    .await;
    stop.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), serving).await;

    // The receiver is down: the delivery is tried, refused, and kept for later.
    let deliveries = format!("{url}/api/v1/alert-rules/{rule_id}/deliveries");
    let deliveries_url = deliveries.as_str();
    wait_for(
        "two refused attempts",
        Duration::from_secs(30),
        || async move {
            let page = get(deliveries_url).await;
            page["items"][0]["attempts"]
                .as_array()
                .is_some_and(|a| a.len() >= 2)
        },
    )
    .await;

    // The server is killed and started again; then the receiver comes back.
    drop(server);
    let server = start_server(&db, port);
    wait_until_up(&url).await;
    rec.down.store(false, Ordering::SeqCst);
    // (A server killed in the middle of a send keeps the delivery claimed for 60 s.)
    let receiver = &rec;
    wait_for(
        "the alert delivered",
        Duration::from_secs(90),
        || async move { !receiver.accepted.lock().expect("lock").is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = rec.accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 1, "exactly one message: {accepted:?}");
    assert!(*rec.refused.lock().expect("lock") >= 2);
    let alert = &accepted[0];
    assert_eq!(alert["run_id"], id.to_string(), "{alert}");
    assert_eq!(alert["name"], "fails_for_alerts");
    assert_eq!(alert["deployment"], "fails_for_alerts/e2e");
    assert_eq!(alert["state"]["type"], "Failed");
    assert!(
        alert["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the dataset is empty")),
        "{alert}"
    );
    assert_eq!(alert["rule"], "failures");
    let link = alert["url"].as_str().expect("a link");
    assert_eq!(link, format!("{PUBLIC_URL}/runs/{id}"));

    // The worker's in-process hook sent the same body: every field it has is the server's,
    // but the link's base (the worker knows the API's URL, the server its public one) and the
    // elapsed time (measured by the process, not known to the server).
    let in_process = rec.in_process.lock().expect("lock").clone();
    assert_eq!(in_process.len(), 1, "{in_process:?}");
    let local = in_process[0].as_object().expect("an object");
    for (field, value) in local {
        match field.as_str() {
            "url" => assert_eq!(value, &json!(format!("{url}/runs/{id}")), "{local:?}"),
            "elapsed_ms" => assert!(value.is_u64(), "{local:?}"),
            _ => assert_eq!(
                &alert[field], value,
                "{field}: in-process {local:?}, server {alert}"
            ),
        }
    }
    // The server adds what only it knows, and nothing else.
    let added: Vec<&str> = alert
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .filter(|k| !local.contains_key(*k))
        .collect();
    assert_eq!(added, ["at", "deployment", "rule"], "{alert}");

    // Every attempt is recorded: the refused ones with their 503, then the 200.
    let page = get(&deliveries).await;
    let delivery = &page["items"][0];
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    let codes: Vec<u64> = delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["status_code"].as_u64())
        .collect();
    assert_eq!(codes.last(), Some(&200), "{delivery}");
    assert!(
        codes.iter().filter(|c| **c == 503).count() >= 2,
        "{delivery}"
    );

    // The link, followed on the server behind the public URL, opens the run's page.
    let page = client()
        .get(link.replacen(PUBLIC_URL, &url, 1))
        .send()
        .await
        .expect("follow the link");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("the page");
    assert!(
        html.contains("<html") || html.contains("<!doctype html"),
        "{html}"
    );
    drop(server);
}
