// Durations are humantime literals parsed at compile time: "thirty seconds" is not one.
use flowkit::task;

#[task(timeout = "thirty seconds")]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
