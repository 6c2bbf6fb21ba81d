// A syntax error in the body is the body's: rustc reports it where it is, not as a misuse
// of the attribute.
use flowkit::task;

#[task]
async fn fetch(url: String) -> String {
    let page = format!("{url}/index.html")
    page
}

fn main() {}
