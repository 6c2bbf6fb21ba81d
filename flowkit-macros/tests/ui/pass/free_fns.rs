//! Free functions keep their signature: callers compile unchanged, visibility, docs and
//! attributes stay, and the plain `.await` is a run.

use flowkit::{flow, task};

mod steps {
    use super::task;

    /// Downloads the page (this doc comment stays on the function).
    #[task]
    pub async fn download(url: String) -> anyhow::Result<String> {
        Ok(format!("<html>{url}</html>"))
    }

    #[task]
    pub(crate) async fn count(text: String) -> usize {
        text.len()
    }

    #[task]
    pub async fn nothing() {}
}

#[task]
#[must_use]
async fn double(x: u32) -> u32 {
    x * 2
}

#[task]
#[allow(clippy::too_many_arguments)]
async fn many(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32 {
    [a, b, c, d, e, f, g, h].iter().map(|x| u32::from(*x)).sum()
}

#[flow]
async fn pipeline(url: String) -> anyhow::Result<usize> {
    let page = steps::download(url).await?;
    steps::nothing().await;
    Ok(steps::count(page).await + double(1).await as usize)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(pipeline("x".into()).await.unwrap(), 16);
    assert_eq!(many(1, 1, 1, 1, 1, 1, 1, 1).await, 8);
    // The fn is an ordinary async fn: it can be stored as one.
    let f: fn(u32) -> _ = double;
    assert_eq!(f(2).await, 4);
}
