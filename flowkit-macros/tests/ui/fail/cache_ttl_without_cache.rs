// `cache_ttl` only bounds how long a cached output is reused: without `cache` it does nothing.
use flowkit::task;

#[task(cache_ttl = "1d")]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
