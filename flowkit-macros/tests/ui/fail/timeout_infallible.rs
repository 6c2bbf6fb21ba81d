// A timed-out attempt returns `Err(TimedOut.into())`; a function that does not return a
// `Result` has no way to say so.
use flowkit::task;

#[task(timeout = "30s")]
async fn compute(n: u64) -> u64 {
    n * 2
}

fn main() {}
