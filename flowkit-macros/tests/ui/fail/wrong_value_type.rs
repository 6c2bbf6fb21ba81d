// `retries` takes a number, not a string: the message shows the right form.
use flowkit::task;

#[task(retries = "3")]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
