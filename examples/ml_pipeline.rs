//! A small machine-learning pipeline: ingest a CSV, clean it, featurize, train a linear model
//! for a grid of learning rates in parallel, evaluate, and "deploy" the best model by writing
//! it to a file.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example ml_pipeline                 # first run: every step executes
//! cargo run --example ml_pipeline                 # second run: expensive steps are Cached
//! FLOWKIT_EVENT_LOG=events.jsonl cargo run --example ml_pipeline   # also log every event
//! FLOWKIT_API_URL=http://127.0.0.1:4200 cargo run --example ml_pipeline  # report to a server
//! ```
//!
//! The data is `examples/data/houses.csv` (300 houses, a few dirty rows); pass another CSV
//! with the same columns as the first argument. The model goes to `models/house-price.json`.

mod houses;

use houses::{house_prices, terminal_filter};
use std::path::PathBuf;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // When `main` ends, the guard waits (a few seconds at most) until the server has every run,
    // or the spool under `.flowkit/` has what it could not take.
    let _flowkit = flowkit::init();
    // Your subscriber as usual, plus flowkit's layer: logs inside a run become that run's logs
    // (on the dashboard, in the event log) and your layers keep working inside runs.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(terminal_filter()),
        )
        .with(flowkit::sink::logs::layer())
        .init();

    let csv = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(houses::example_csv);
    let (path, metrics) = house_prices(csv, PathBuf::from("models/house-price.json")).await?;
    println!(
        "deployed {} (test RMSE {:.1}k, R² {:.3})",
        path.display(),
        metrics.rmse,
        metrics.r2
    );
    Ok(())
}
