// `retry_if` takes the error by reference: `fn(&E) -> bool`, here `fn(&std::io::Error) -> bool`.
use flowkit::task;

fn transient(e: String) -> bool {
    e.is_empty()
}

#[task(retries = 2, retry_if = transient)]
async fn fetch(url: String) -> std::io::Result<String> {
    Ok(url)
}

fn main() {}
