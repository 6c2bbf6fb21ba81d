// A bare number is ambiguous (seconds? milliseconds?): a duration needs a unit.
use flowkit::task;

#[task(retries = 2, retry_delay = "500")]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
