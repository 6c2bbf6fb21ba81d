//! Runtime and server together: a pipeline run with reporting on shows up complete and
//! correct through the server's API — every run, state, attempt and log line, compared with
//! what the runtime itself recorded.

use flowkit::testing::record;
use flowkit::{StateType, flow, task};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[task(cache = inputs)]
async fn ingest(n: u32) -> anyhow::Result<Vec<u32>> {
    tracing::info!(rows = n, "ingesting <rows> & 'quotes'");
    Ok((1..=n).collect())
}

#[task]
async fn featurize(x: u32) -> anyhow::Result<u32> {
    Ok(x * x)
}

static TRAIN_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[task(retries = 2, retry_delay = "50ms")]
async fn train(features: Vec<u32>) -> anyhow::Result<u32> {
    if TRAIN_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
        tracing::warn!("GPU busy, giving up this attempt");
        anyhow::bail!("GPU busy");
    }
    tracing::info!(count = features.len(), "trained");
    Ok(features.iter().sum())
}

#[flow]
async fn evaluate_model(model: u32) -> anyhow::Result<bool> {
    tracing::info!(model, "evaluating");
    Ok(model > 0)
}

#[flow]
async fn reported_pipeline(n: u32) -> anyhow::Result<u32> {
    let rows = ingest(n).await?;
    let features: Vec<u32> = featurize::map(rows)
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let model = train(features).await?;
    evaluate_model(model).await?;
    Ok(model)
}

/// What the runtime recorded of one run: its name, `(state, attempt)` in order, its log lines.
type ExpectedRun = (String, Vec<(StateType, u32)>, Vec<String>);

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let res = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_pipeline_is_complete_and_correct_through_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = flowkit_server::spawn(listener, flowkit_server::config::Config::new(db))
        .await
        .expect("start the server");
    let addr = server.addr();

    let mut cfg = flowkit::config::Config::from_env();
    cfg.home = dir.path().join("home");
    cfg.summary = false;
    cfg.api_url = Some(format!("http://{addr}"));
    assert!(
        flowkit::config::init(cfg).is_ok(),
        "configured before the first run"
    );

    let (out, rec) = record(reported_pipeline(12)).await;
    assert_eq!(
        out.expect("pipeline succeeds"),
        (1..=12u32).map(|x| x * x).sum::<u32>()
    );

    // Ground truth: what the runtime emitted, per run.
    let mut truth: BTreeMap<String, ExpectedRun> = BTreeMap::new();
    for run in rec.runs() {
        truth.insert(
            run.id.to_string(),
            (
                run.name.clone(),
                run.states.iter().map(|(a, s)| (s.kind, *a)).collect(),
                run.logs.iter().map(|(_, m)| m.clone()).collect(),
            ),
        );
    }
    let flow_id = rec.run("reported_pipeline").id.to_string();

    let client = reqwest::Client::new();
    let base = format!("http://{addr}/api");
    // The flow's events were flushed to the reporter before it returned; the server may take a
    // moment to commit them.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = client
            .get(format!("{base}/flow-runs/{flow_id}"))
            .send()
            .await
            .expect("GET run");
        if run.status().is_success() {
            let run: serde_json::Value = run.json().await.expect("json");
            if run["state"] == "Completed" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the flow run never showed up Completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let list = get_json(&client, &format!("{base}/flow-runs")).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"reported_pipeline") && names.contains(&"evaluate_model"),
        "{names:?}"
    );

    let tasks = get_json(&client, &format!("{base}/flow-runs/{flow_id}/task-runs")).await;
    let mut seen = BTreeMap::new();
    let mut all = vec![tasks["flow_run"].clone()];
    all.extend(tasks["items"].as_array().expect("items").iter().cloned());
    // The subflow's own task-runs list holds nothing here (it runs no tasks), but its states
    // come with it as a child of the flow.
    for run in &all {
        let id = run["id"].as_str().expect("id").to_string();
        let states: Vec<(StateType, u32)> = run["states"]
            .as_array()
            .expect("states")
            .iter()
            .map(|s| {
                (
                    serde_json::from_value(s["state"].clone()).expect("state type"),
                    s["attempt"].as_u64().expect("attempt") as u32,
                )
            })
            .collect();
        seen.insert(
            id,
            (run["name"].as_str().unwrap_or_default().to_string(), states),
        );
    }
    assert_eq!(
        seen.len(),
        truth.len(),
        "every run is there: server {seen:?}"
    );
    for (id, (name, states, _)) in &truth {
        let (server_name, server_states) = seen
            .get(id)
            .unwrap_or_else(|| panic!("run {name} ({id}) missing"));
        assert_eq!(server_name, name);
        assert_eq!(server_states, states, "states and attempts of {name}");
    }
    let train = all
        .iter()
        .find(|r| r["name"] == "train")
        .expect("train run");
    assert_eq!(train["attempt"], 2, "the retried task's last attempt");
    assert_eq!(train["state"], "Completed");

    let logs = get_json(
        &client,
        &format!("{base}/flow-runs/{flow_id}/logs?limit=500"),
    )
    .await;
    let mut server_logs: Vec<String> = logs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut truth_logs: Vec<String> = truth
        .values()
        .filter(|(name, _, _)| name != "evaluate_model")
        .flat_map(|(_, _, logs)| logs.clone())
        .collect();
    server_logs.sort();
    truth_logs.sort();
    assert!(
        truth_logs
            .iter()
            .any(|l| l == "ingesting <rows> & 'quotes'"),
        "{truth_logs:?}"
    );
    assert_eq!(
        server_logs, truth_logs,
        "every log line of the flow run, verbatim"
    );

    server.stop().await.expect("server stopped cleanly");
}
