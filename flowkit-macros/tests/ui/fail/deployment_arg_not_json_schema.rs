// `deployment()` describes the flow's parameters with JSON Schema: an argument whose type is
// not `JsonSchema` is refused at the call, with a note at the argument.
use flowkit::flow;

#[derive(serde::Deserialize)]
struct Config {
    epochs: u32,
}

#[flow]
async fn train(dataset: String, config: Config) -> u32 {
    let _ = dataset;
    config.epochs
}

fn main() {
    let _deployment = train::deployment("nightly");
}
