//! Flows: tasks called inside become children, arguments are recorded as parameters
//! (non-`Serialize` ones as a placeholder), and `deployment(name)` builds a deployment. A flow
//! that is never deployed (`training`) needs neither `JsonSchema` nor `Deserialize`.

use flowkit::{flow, task};

#[derive(Clone, Default, serde::Serialize)]
struct TrainConfig {
    epochs: u32,
}

#[derive(Clone)]
struct Opaque;

#[task(retries = 2, retry_delay = "1ms")]
async fn train(epochs: u32) -> anyhow::Result<f64> {
    Ok(1.0 / f64::from(epochs.max(1)))
}

#[flow(retries = 1, timeout = "2h", version = "3")]
async fn training(cfg: TrainConfig, _opaque: Opaque) -> anyhow::Result<f64> {
    let losses = train::map([cfg.epochs, cfg.epochs * 2]).await;
    Ok(losses.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().sum())
}

#[flow]
async fn nightly() {}

fn main() {
    let _deployment: flowkit::Deployment = nightly::deployment("on-demand");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let loss = rt.block_on(training(TrainConfig { epochs: 2 }, Opaque)).unwrap();
    assert!((loss - 0.75).abs() < 1e-9);
    rt.block_on(nightly());
}
