//! The flows the tests deploy, as a user writes them.

use flowkit::{DeploymentSpec, flow};
use serde::{Deserialize, Serialize};

/// What `train` gives back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metrics {
    /// The dataset trained on.
    pub dataset: String,
    /// Root mean square error.
    pub rmse: f64,
    /// Epochs run.
    pub epochs: u32,
}

/// Retrain the house-price model.
#[flow]
pub async fn train(
    dataset: String,
    epochs: u32,
    learning_rate: Option<f64>,
) -> anyhow::Result<Metrics> {
    if dataset.is_empty() {
        anyhow::bail!("no dataset given");
    }
    let rate = learning_rate.unwrap_or(0.1);
    Ok(Metrics {
        dataset,
        rmse: 1.0 / (1.0 + rate * f64::from(epochs)),
        epochs,
    })
}

/// Features of a dataset.
#[flow]
pub async fn featurize(columns: Vec<String>, scale: f64, verbose: bool) -> usize {
    let _ = (scale, verbose);
    columns.len()
}

/// `train/nightly` with a default for `epochs`.
pub fn nightly() -> DeploymentSpec {
    train::deployment("nightly")
        .parameters(serde_json::json!({"epochs": 3}))
        .spec()
        .expect("train/nightly")
}

/// `featurize/adhoc`.
pub fn adhoc() -> DeploymentSpec {
    featurize::deployment("adhoc")
        .spec()
        .expect("featurize/adhoc")
}
