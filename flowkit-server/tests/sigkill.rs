//! The real server binary killed with SIGKILL while clients are sending batches: after a
//! restart on the same database, every batch it acknowledged (202) is there.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start(db: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowkit-server"))
        .args([
            "--database-url",
            db,
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--retention",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flowkit-server")
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = client
            .get(format!("http://127.0.0.1:{port}/api/health"))
            .send()
            .await;
        if health.is_ok_and(|res| res.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One batch: `n` new flow runs, one Pending event each.
fn batch(n: usize) -> (Vec<String>, serde_json::Value) {
    let mut ids = Vec::with_capacity(n);
    let events: Vec<serde_json::Value> = (0..n)
        .map(|_| {
            let run = flowkit::new_id().to_string();
            ids.push(run.clone());
            serde_json::json!({
                "id": flowkit::new_id(),
                "run_id": run,
                "parent_run_id": null,
                "flow_run_id": run,
                "run_kind": "flow",
                "name": "killed_mid_ingest",
                "attempt": 0,
                "timestamp": chrono::Utc::now(),
                "kind": "state",
                "state": {"type": "Pending"},
                "details": {"task_key": "tests::killed_mid_ingest"}
            })
        })
        .collect();
    (ids, serde_json::Value::Array(events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let port = free_port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut server = start(&db, port);
    wait_healthy(&client, port).await;

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for _ in 0..3 {
        let (client, acknowledged) = (client.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            // Bounded: at most 400 batches per client, and it stops at the first failure
            // (the server is gone).
            for _ in 0..400 {
                let (ids, body) = batch(50);
                match client
                    .post(format!("http://127.0.0.1:{port}/api/events"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(res) if res.status() == reqwest::StatusCode::ACCEPTED => {
                        acknowledged.lock().expect("lock").extend(ids);
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let ingestion get going, then kill -9 while batches are in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().expect("lock").len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().expect("SIGKILL the server");
    let _ = server.wait();
    for s in senders {
        let _ = s.await;
    }
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(
        acked.len() >= 2_000,
        "ingestion was under way when the server died ({})",
        acked.len()
    );

    let mut server = start(&db, port);
    wait_healthy(&client, port).await;
    let mut missing = Vec::new();
    for id in &acked {
        let res = client
            .get(format!("http://127.0.0.1:{port}/api/flow-runs/{id}"))
            .send()
            .await
            .expect("GET run");
        if res.status() != reqwest::StatusCode::OK {
            missing.push(id.clone());
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged runs lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
}
