// `retry_if` looks at the error of a failed attempt; this function has no error type.
use flowkit::task;

fn transient(_: &std::io::Error) -> bool {
    true
}

#[task(retries = 2, retry_if = transient)]
async fn fetch(url: String) -> String {
    url
}

fn main() {}
