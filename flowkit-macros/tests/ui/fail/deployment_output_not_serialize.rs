// A deployed flow's output is sent back as JSON: `T` of a `Result<T, E>` that is not
// `Serialize` is refused at the `deployment()` call, with a note at `T`.
use flowkit::flow;

#[derive(schemars::JsonSchema)]
struct Metrics {
    loss: f64,
}

#[flow]
async fn train(epochs: u32) -> anyhow::Result<Metrics> {
    Ok(Metrics { loss: f64::from(epochs) })
}

fn main() {
    let _deployment = train::deployment("nightly");
}
