// A bad option does not hide the rest: the struct beside the task is still generated, so
// its call sites are still checked, and the wrong argument given to `fetch::submit` is
// reported as well (without the struct, rustc said nothing about it and rust-analyzer lost
// the call).
use flowkit::task;

#[task(retries = "3")]
async fn fetch(url: String) -> String {
    url
}

fn main() {
    let _handle = fetch::submit(42);
}
