// `fallible` and `infallible` override the guess from the return type; both at once contradict.
use flowkit::task;

#[task(fallible, infallible)]
async fn fetch(url: String) -> anyhow::Result<String> {
    Ok(url)
}

fn main() {}
