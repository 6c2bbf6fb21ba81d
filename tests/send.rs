//! The futures flowkit gives back are `Send`, so they can be spawned on a multi-threaded
//! runtime (like tokio's `tests/async_send_sync.rs`).

use flowkit::{flow, task};

fn assert_send<T: Send>(_: &T) {}
fn assert_send_sync<T: Send + Sync>(_: &T) {}

#[task(retries = 1, timeout = "1s", cache = inputs)]
async fn step(x: u32) -> anyhow::Result<u32> {
    Ok(x)
}

#[flow]
async fn pipeline(x: u32) -> anyhow::Result<u32> {
    step(x).await
}

#[test]
fn public_futures_are_send() {
    assert_send(&step(1));
    assert_send(&pipeline(1));
    assert_send(&step::map(vec![1, 2]));
    assert_send(&std::future::IntoFuture::into_future(step::map(vec![1, 2])));
    assert_send(&step::with_options(flowkit::CallOptions::new()).call(3));
    assert_send(&flowkit::limits());
    assert_send_sync(&flowkit::CallOptions::new());
    assert_send_sync(&flowkit::notify::webhook("http://127.0.0.1:9/"));
}

#[tokio::test]
async fn handles_are_send() {
    let handle = step::submit(2);
    assert_send(&handle);
    assert_eq!(handle.await.expect("ok"), 2);
}
