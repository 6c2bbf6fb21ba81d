// `persist` keys the stored output by the inputs, so the arguments must be `Serialize`.
use flowkit::task;

struct Handle;

#[task(persist = true)]
async fn report(handle: Handle) -> String {
    let _ = handle;
    String::new()
}

fn main() {}
