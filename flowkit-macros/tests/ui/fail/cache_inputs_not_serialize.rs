// `cache = inputs` hashes the arguments, so they must be `Serialize`: the error points at
// the argument's type.
use flowkit::task;

#[derive(Clone)]
struct Image(Vec<u8>);

#[task(cache = inputs)]
async fn thumbnail(image: Image, size: u32) -> anyhow::Result<Vec<u8>> {
    Ok(image.0.into_iter().take(size as usize).collect())
}

fn main() {}
