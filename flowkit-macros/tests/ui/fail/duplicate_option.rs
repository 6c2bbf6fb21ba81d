// An option given twice is a mistake, not an override: the second one is flagged.
use flowkit::task;

#[task(retries = 3, timeout = "1s", retries = 5)]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
