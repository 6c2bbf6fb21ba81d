//! `my_task::map(items)`: one run per item, a bounded number at a time, results in input order.

use futures::FutureExt;
use futures::future::BoxFuture;
use std::future::{Future, IntoFuture};
use std::io::IsTerminal;

/// How many runs of one `map` execute at once unless `.concurrency(n)` says otherwise.
pub const DEFAULT_MAP_CONCURRENCY: usize = 256;

/// Above this many items a `map` shows a progress bar (when stderr is a terminal and the
/// summary is on): about a screenful.
const PROGRESS_THRESHOLD: usize = 50;

/// The runs of one `map`, not started yet. Await it to run them all, at most `concurrency` at
/// a time (a slow item does not hold back the ones after it); the output has one result per
/// item, in input order.
///
/// The runs belong to the awaiting future: when it is dropped (its flow attempt timed out, its
/// caller was cancelled) the runs still going are aborted, recorded `Cancelled`, and give
/// their limit slots back, so a retry of the flow does not race its own leftovers. When a run
/// panics, the panic is resumed in the awaiting task and the other runs are aborted likewise.
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
            // Filled as runs finish, in any order; read out in input order at the end.
            let mut results: Vec<Option<T>> = Vec::with_capacity(self.len.unwrap_or(0));
            let mut runs = self.runs;
            // A `JoinSet` aborts its tasks when dropped: that is what ties the runs to this
            // future. Its length counts runs not yet joined, and a run is joined as soon as it
            // finishes, so a slow early item never holds a later one's place.
            let mut running = tokio::task::JoinSet::new();
            loop {
                while running.len() < self.concurrency {
                    let Some(run) = runs.next() else { break };
                    let index = results.len();
                    results.push(None);
                    running.spawn(crate::run::handle::in_current_context(async move {
                        (index, run.await)
                    }));
                }
                let Some(joined) = running.join_next().await else {
                    break;
                };
                match joined {
                    Ok((index, value)) => {
                        if let Some(slot) = results.get_mut(index) {
                            *slot = Some(value);
                        }
                    }
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
            // Every run was joined once with its own index, so every slot is filled.
            results.into_iter().flatten().collect()
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
