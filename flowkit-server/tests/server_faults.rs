//! The server goes away in the middle of a flow and comes back later: every event still
//! arrives exactly once, in the right runs (the reporter keeps them in memory, then in the
//! spool, and delivers them when the server answers again).

use flowkit::testing::record;
use flowkit::{flow, task};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

async fn start_server(db: &str, addr: SocketAddr) -> flowkit_server::Spawned {
    // The port was just released by the previous server: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    };
    flowkit_server::spawn(listener, flowkit_server::config::Config::new(db))
        .await
        .expect("start the server")
}

async fn stop_server(server: flowkit_server::Spawned) {
    server.stop().await.expect("server stopped cleanly");
}

#[task]
async fn step(phase: u32, i: u32) -> anyhow::Result<u32> {
    tracing::info!(phase, i, "step {phase}.{i}");
    Ok(phase * 100 + i)
}

static PAUSE: Notify = Notify::const_new();
static PAUSED: Notify = Notify::const_new();

#[flow]
async fn interrupted() -> anyhow::Result<u32> {
    let mut sum = 0;
    for i in 0..20 {
        sum += step(1, i).await?;
    }
    // The test stops the server here.
    PAUSED.notify_one();
    PAUSE.notified().await;
    for i in 0..20 {
        sum += step(2, i).await?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_mid_flow_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("addr")
    };
    let server = start_server(&db, addr).await;

    let mut cfg = flowkit::config::Config::from_env();
    cfg.home = dir.path().join("home");
    cfg.summary = false;
    cfg.api_url = Some(format!("http://{addr}"));
    cfg.report_flush_timeout = Duration::from_millis(500);
    assert!(flowkit::config::init(cfg).is_ok());

    let flow = tokio::spawn(record(interrupted()));
    PAUSED.notified().await;
    // Give the reporter a moment to deliver phase 1, then take the server away.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_server(server).await;
    PAUSE.notify_one();
    let (out, rec) = flow.await.expect("flow task");
    assert_eq!(
        out.expect("the flow itself never fails because of reporting"),
        (0..20).map(|i| 100 + i + 200 + i).sum::<u32>()
    );

    // Later, the server is back on the same address and database.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_server(&db, addr).await;

    let flow_id = rec.run("interrupted").id;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/flow-runs/{flow_id}/task-runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let body: serde_json::Value = loop {
        if let Ok(res) = client.get(&url).send().await
            && res.status().is_success()
        {
            let body: serde_json::Value = res.json().await.expect("json");
            let done = body["flow_run"]["state"] == "Completed"
                && body["items"]
                    .as_array()
                    .is_some_and(|i| i.len() == 40 && i.iter().all(|r| r["state"] == "Completed"));
            if done {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the spooled events never arrived"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Exactly once, in the right runs: each run's state history is exactly what was emitted.
    let truth: BTreeMap<String, Vec<String>> = rec
        .runs()
        .into_iter()
        .map(|r| {
            (
                r.id.to_string(),
                r.states.iter().map(|(_, s)| s.kind.to_string()).collect(),
            )
        })
        .collect();
    let mut runs = vec![body["flow_run"].clone()];
    runs.extend(body["items"].as_array().cloned().unwrap_or_default());
    assert_eq!(runs.len(), truth.len());
    for run in runs {
        let id = run["id"].as_str().expect("id");
        let states: Vec<String> = run["states"]
            .as_array()
            .expect("states")
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(Some(&states), truth.get(id), "run {id}");
        assert_eq!(
            run["flow_run_id"].as_str(),
            Some(flow_id.to_string().as_str())
        );
    }
    let logs: serde_json::Value = client
        .get(format!(
            "http://{addr}/api/flow-runs/{flow_id}/logs?limit=500"
        ))
        .send()
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    assert_eq!(
        logs["items"].as_array().map(Vec::len),
        Some(40),
        "one log line per step, once each"
    );

    stop_server(server).await;
}
