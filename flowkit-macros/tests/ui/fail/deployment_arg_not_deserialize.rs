// A deployed flow's arguments are read from JSON: an argument whose type is not
// `Deserialize` is refused at the `deployment()` call, with a note at the argument.
use flowkit::flow;

#[derive(schemars::JsonSchema)]
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
