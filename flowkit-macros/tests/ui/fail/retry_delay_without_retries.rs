// `retry_delay` alone does nothing: there are no retries to delay.
use flowkit::task;

#[task(retry_delay = "1s")]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
