//! Functions that borrow (references, lifetimes, `impl Trait` arguments) are runs when
//! called; they get `with_options(..).call(..)` but no `submit`/`map`.

use flowkit::{CallOptions, task};
use std::fmt::Display;

#[task]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

#[task(retries = 2)]
async fn join(parts: &[String], sep: &str) -> String {
    parts.join(sep)
}

#[task]
async fn render(value: impl Display) -> String {
    format!("<{value}>")
}

#[task]
async fn first(items: &mut Vec<u8>) -> Option<u8> {
    items.pop()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let owned = String::from("hi");
    assert_eq!(shout(&owned).await, "HI");
    assert_eq!(join(&["a".into(), "b".into()], "-").await, "a-b");
    assert_eq!(render(3).await, "<3>");
    let mut items = vec![1, 2];
    assert_eq!(first(&mut items).await, Some(2));
    assert_eq!(shout::with_options(CallOptions::new()).call("x").await, "X");
}
