// The attributes go on functions, not on types.
use flowkit::task;

#[task]
struct Fetch {
    url: String,
}

fn main() {}
