// A bad option is the only error: the struct beside the task is still there, so calls of
// `fetch::submit`, `fetch::map` and `fetch::with_options` do not fail a second time.
use flowkit::task;

#[task(retries = "3")]
async fn fetch(url: String) -> String {
    url
}

async fn caller() {
    let _one = fetch::submit("a".into()).await;
    let _all = fetch::map(["b".to_string(), "c".to_string()]).await;
    let _opt = fetch::with_options(Default::default()).call("d".into()).await;
}

fn main() {
    let _ = caller();
}
