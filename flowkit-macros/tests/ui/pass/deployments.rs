//! `deployment()` of flows whose arguments are `DeserializeOwned + JsonSchema` and whose output
//! is `Serialize + JsonSchema`: optional arguments, vectors, derived structs and enums, a
//! `Result` alias, no arguments; deployments of different flows in one array.

use flowkit::{FlowSignature, flow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct Grid {
    depths: Vec<u8>,
    rate: Option<f64>,
}

#[derive(Deserialize, JsonSchema)]
enum Mode {
    Fast,
    Exact { tolerance: f64 },
}

#[derive(Serialize, JsonSchema)]
struct Metrics {
    loss: f64,
}

type Outcome<T> = Result<T, std::io::Error>;

/// Retrain the house-price model.
#[flow(retries = 1)]
async fn train(dataset: String, epochs: u32, learning_rate: f64) -> anyhow::Result<Metrics> {
    let _ = (dataset, epochs);
    Ok(Metrics { loss: learning_rate })
}

#[flow]
async fn evaluate(grid: Grid, mode: Mode, limit: Option<u64>, ids: Vec<i64>) -> Vec<f64> {
    let _ = (mode, limit, ids);
    grid.depths.into_iter().map(f64::from).collect()
}

#[flow(fallible)]
async fn aliased(n: u8) -> Outcome<u8> {
    Ok(n)
}

#[flow(version = "2.0")]
async fn nothing() {}

fn main() {
    let deployments: [flowkit::Deployment; 4] = [
        train::deployment("nightly")
            .parameters(serde_json::json!({"epochs": 50}))
            .limit(2),
        evaluate::deployment("adhoc").tags(["eval"]),
        aliased::deployment("a").cron("0 3 * * *"),
        nothing::deployment("b"),
    ];
    for d in &deployments {
        d.spec().expect("valid");
    }
    assert_eq!(deployments[3].version, "2.0");
    assert_eq!(<aliased as FlowSignature>::PARAMETERS, ["n"]);
    let _output: <aliased as FlowSignature>::Output = 1u8;
    let _args: <evaluate as FlowSignature>::Args = (
        Grid { depths: vec![], rate: None },
        Mode::Fast,
        None,
        vec![],
    );
}
