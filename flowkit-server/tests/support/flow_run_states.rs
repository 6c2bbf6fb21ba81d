//! What a server recorded of a flow run, read over HTTP as any client would.

use serde_json::Value;
use uuid::Uuid;

/// The states the server at `url` recorded for the flow run `id`, in order: (state, attempt).
pub async fn server_states(client: &reqwest::Client, url: &str, id: Uuid) -> Vec<(String, u64)> {
    let body: Value = client
        .get(format!("{url}/api/v1/flow-runs/{id}/task-runs"))
        .send()
        .await
        .expect("task runs")
        .json()
        .await
        .expect("json");
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
