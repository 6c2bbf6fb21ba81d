// The runtime needs to name the output type: `impl Trait` in return position is not supported.
use flowkit::task;

#[task]
async fn numbers(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
