// The attributes go on functions, not on types.
use flowkit_macros::task;

#[task]
struct Fetch {
    url: String,
}

fn main() {}
