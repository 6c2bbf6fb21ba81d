// `timeout` turns a timed-out attempt into `Err(E::from(flowkit::TimedOut))`: the error type
// needs that `From`.
use flowkit::task;

#[derive(Debug)]
enum FetchError {
    NotFound,
}

#[task(timeout = "30s")]
async fn fetch(url: String) -> Result<String, FetchError> {
    if url.is_empty() {
        return Err(FetchError::NotFound);
    }
    Ok(url)
}

fn main() {}
