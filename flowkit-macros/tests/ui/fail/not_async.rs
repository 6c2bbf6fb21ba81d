// A task is awaited by its callers, so it must be an `async fn`; the error points at `fn`.
use flowkit::task;

#[task]
fn fetch(url: String) -> String {
    url
}

fn main() {}
