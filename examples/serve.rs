//! The house-price pipeline as a deployment: other teams run it over HTTP, this process runs
//! it.
//!
//! ```sh
//! cargo run -p flowkit-server                      # terminal 1: the server, http://127.0.0.1:4200
//! FLOWKIT_API_URL=http://127.0.0.1:4200 cargo run --example serve   # terminal 2: a worker
//! # terminal 3: run it, wait for it, print its result
//! curl -H 'Prefer: wait=60' --json '{"parameters": {}}' \
//!     http://127.0.0.1:4200/api/v1/deployments/house_prices/nightly/runs
//! flowkit run house_prices/nightly -p model_path=models/other.json   # the same with the CLI
//! ```
//!
//! The worker registers the deployment `house_prices/nightly` (its parameters' JSON Schema
//! comes from the flow's Rust types, its description from the flow's doc comment), then
//! claims triggered runs and runs them here, at most two at once, until Ctrl-C or SIGTERM,
//! when it stops claiming and lets the runs in flight finish. On a server with API keys, give
//! the worker a key with the `report,worker` scopes in `FLOWKIT_API_KEY`.

mod houses;

use houses::{house_prices, terminal_filter};
use serde_json::json;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _flowkit = flowkit::init();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(terminal_filter()),
        )
        .with(flowkit::sink::logs::layer())
        .init();

    flowkit::serve([house_prices::deployment("nightly")
        .parameters(json!({
            "csv": houses::example_csv(),
            "model_path": "models/house-price.json",
        }))
        .tags(["ml"])
        .limit(2)])
    .await
}
