// A cached output is stored and read back, so it must be `Serialize + DeserializeOwned`: the
// error points at the return type.
use flowkit::task;

struct Model {
    weights: Vec<f32>,
}

#[task(cache = inputs)]
async fn train(epochs: u32) -> anyhow::Result<Model> {
    Ok(Model { weights: vec![epochs as f32] })
}

fn main() {}
