//! The README's deployment walk-through, as written: a server, `examples/serve.rs` as the
//! worker (the example binary `cargo test` builds), and the README's `curl` request
//! (`Prefer: wait=60` with `{"parameters": {"model_path": "models/adhoc.json"}}`) answered
//! `201` with the run `Completed` and its result inline; then SIGTERM stops the worker cleanly.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The example binary next to this test's (`target/<profile>/examples/serve`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join("serve");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples of this package",
        path.display()
    );
    path
}

/// The worker process, killed when dropped (a failing test leaves none behind).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_s_deployment_walk_through_works_as_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = flowkit_server::spawn(listener, flowkit_server::config::Config::new(database))
        .await
        .expect("start the server");
    let url = format!("http://{}", server.addr());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("working directory");
    let worker = Worker(
        Command::new(example_binary())
            .current_dir(&work)
            .env("FLOWKIT_API_URL", &url)
            .env("FLOWKIT_HOME", dir.path().join("home"))
            .env("FLOWKIT_SUMMARY", "0")
            .spawn()
            .expect("start examples/serve"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let trigger = format!("{url}/api/v1/deployments/house_prices/nightly/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, run) = loop {
        let res = client
            .post(&trigger)
            .header("Prefer", "wait=60")
            .json(&json!({"parameters": {"model_path": "models/adhoc.json"}}))
            .send()
            .await
            .expect("trigger");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("a JSON answer");
        // 404 until the worker has registered the deployment.
        if status != 404 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["state"], "Completed", "{run}");
    assert_eq!(run["deployment"], "house_prices/nightly");
    let result = &run["result"];
    assert_eq!(result[0], "models/adhoc.json", "the model's path: {result}");
    assert!(result[1].is_object(), "the metrics: {result}");
    assert!(
        work.join("models/adhoc.json").exists(),
        "the model was written where the worker runs"
    );
    // SIGTERM: the worker stops claiming and exits cleanly.
    let mut worker = worker;
    let pid = worker.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.expect("run kill").success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = worker.0.try_wait().expect("the worker's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
}
