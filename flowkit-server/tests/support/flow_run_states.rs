//! What a server recorded of a flow run, read over HTTP as any client would.

use serde_json::Value;
use uuid::Uuid;

/// `GET /flow-runs/{id}/task-runs` of the server at `url`: the flow run with its states, and a
/// page of its task runs.
async fn task_runs(client: &reqwest::Client, url: &str, id: Uuid) -> Value {
    client
        .get(format!("{url}/api/v1/flow-runs/{id}/task-runs"))
        .send()
        .await
        .expect("task runs")
        .json()
        .await
        .expect("json")
}

/// The states the server at `url` recorded for the flow run `id`, in order: (state, attempt).
pub async fn server_states(client: &reqwest::Client, url: &str, id: Uuid) -> Vec<(String, u64)> {
    let body = task_runs(client, url, id).await;
    body["flow_run"]["states"]
        .as_array()
        .expect("states")
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or_default().to_string(),
                s["attempt"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// When the server at `url` recorded flow run `id` entering `state` in `attempt`, if it did.
#[allow(dead_code)] // Not every test binary that includes this file asks.
pub async fn entered_at(
    client: &reqwest::Client,
    url: &str,
    id: Uuid,
    state: &str,
    attempt: u64,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let body = task_runs(client, url, id).await;
    body["flow_run"]["states"]
        .as_array()?
        .iter()
        .find(|s| s["state"] == state && s["attempt"].as_u64() == Some(attempt))
        .and_then(|s| s["timestamp"].as_str())
        .and_then(|t| t.parse().ok())
}
