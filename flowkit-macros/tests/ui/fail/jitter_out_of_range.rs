// `jitter` is the fraction of the delay to randomize, between 0.0 and 1.0.
use flowkit::task;

#[task(retries = 2, jitter = 1.5)]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
