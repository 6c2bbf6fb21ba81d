// `retry` is not an option (it is `retries`): the error suggests it and lists every option.
use flowkit::task;

#[task(retry = 3)]
async fn fetch(url: String) -> String {
    url
}

fn main() {}
