//! `my_task::map(items)`: one run per item, a bounded number at a time, results in input order.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use std::future::{Future, IntoFuture};
use std::io::IsTerminal;

/// How many runs of one `map` execute at once unless `.concurrency(n)` says otherwise.
pub const DEFAULT_MAP_CONCURRENCY: usize = 256;

/// Above this many items a `map` shows a progress bar (when stderr is a terminal and the
/// summary is on): about a screenful.
const PROGRESS_THRESHOLD: usize = 50;

/// The runs of one `map`, not started yet. Await it to run them all; the output has one
/// result per item, in input order.
///
/// ```
/// use flowkit::task;
///
/// #[task]
/// async fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let squares = square::map(1..=4).concurrency(2).await;
/// assert_eq!(squares, vec![1, 4, 9, 16]);
/// # }
/// ```
#[must_use = "a Map does nothing unless awaited"]
pub struct Map<T> {
    runs: Box<dyn Iterator<Item = BoxFuture<'static, T>> + Send>,
    len: Option<usize>,
    concurrency: usize,
}

impl<T> std::fmt::Debug for Map<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("len", &self.len)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl<T> Map<T> {
    /// At most `n` runs at once (at least one).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
}

/// Builds a [`Map`]: `make` turns one item into the future of its run.
pub fn map<I, T, Fut, F>(items: I, mut make: F) -> Map<T>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    F: FnMut(I::Item) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let items = items.into_iter();
    let len = match items.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    };
    Map {
        runs: Box::new(items.map(move |item| make(item).boxed())),
        len,
        concurrency: DEFAULT_MAP_CONCURRENCY,
    }
}

impl<T: Send + 'static> IntoFuture for Map<T> {
    type Output = Vec<T>;
    type IntoFuture = BoxFuture<'static, Vec<T>>;

    fn into_future(self) -> Self::IntoFuture {
        async move {
            let progress = progress_bar(self.len);
            let mut results = Vec::with_capacity(self.len.unwrap_or(0));
            let mut runs = self.runs;
            let mut in_flight = futures::stream::FuturesOrdered::new();
            loop {
                while in_flight.len() < self.concurrency {
                    match runs.next() {
                        Some(run) => in_flight.push_back(crate::run::handle::spawn(run)),
                        None => break,
                    }
                }
                let Some(joined) = in_flight.next().await else {
                    break;
                };
                match joined {
                    Ok(value) => results.push(value),
                    Err(err) => match err.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        Err(err) => panic!("flowkit: a run of map was cancelled: {err}"),
                    },
                }
                if let Some(bar) = &progress {
                    bar.inc(1);
                }
            }
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            results
        }
        .boxed()
    }
}

fn progress_bar(len: Option<usize>) -> Option<indicatif::ProgressBar> {
    let len = len?;
    if len <= PROGRESS_THRESHOLD
        || !crate::config::get().summary
        || !std::io::stderr().is_terminal()
    {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs {elapsed_precise} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}
