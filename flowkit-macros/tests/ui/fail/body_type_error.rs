// A type error in the body is reported on the user's line, as without the attribute.
use flowkit::task;

#[task]
async fn count(text: String) -> usize {
    if text.is_empty() {
        return "none";
    }
    text.len()
}

fn main() {}
