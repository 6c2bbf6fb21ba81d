// `submit` spawns the run on the tokio runtime, so a task's future must be `Send`: holding an
// `Rc` across an `.await` is reported at the function's name.
use flowkit::task;
use std::rc::Rc;

#[task]
async fn hold(n: u32) -> u32 {
    let shared = Rc::new(n);
    tokio::task::yield_now().await;
    *shared
}

fn main() {}
