// A bad option of a flow is the only error: `nightly::deployment` and `nightly::submit`
// still exist.
use flowkit::flow;

#[flow(timeout = "30 parsecs")]
async fn nightly(day: u32) -> anyhow::Result<u32> {
    Ok(day)
}

fn main() {
    let _deployment: flowkit::Deployment = nightly::deployment("nightly");
    let _handle = nightly::submit(1);
}
