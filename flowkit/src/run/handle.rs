//! `TaskHandle`: a run started in the background with `submit`, and `flowkit::spawn`.

use crate::context;
use crate::run::spec::{CallOptions, CallSite, WaitFor};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Spawns `fut` on tokio, carrying the current run context (and log capture) into it, so
/// runs started inside it are children of the current run.
///
/// A bare `tokio::spawn` does not carry the context: runs started there are standalone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let answer = flowkit::spawn(async { 6 * 7 }).await.expect("not cancelled");
/// assert_eq!(answer, 42);
/// # }
/// ```
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current_context(fut))
}

/// `fut`, carrying what [`spawn`] carries into a new tokio task: the run context, the current
/// span and dispatcher (so the spawned runs' spans nest under the caller's and their logs
/// are captured).
pub(crate) fn in_current_context<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use futures::future::Either;
    use tracing::Instrument;
    use tracing::instrument::WithSubscriber;
    let fut = fut.in_current_span().with_current_subscriber();
    match context::current() {
        Some(frame) => Either::Left(context::scope(frame, fut)),
        None => Either::Right(fut),
    }
}

/// Set once a submitted run has finished (however it finished).
#[derive(Debug, Default)]
pub(crate) struct Done {
    flag: AtomicBool,
    notify: Notify,
}

impl Done {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

struct SetOnDrop(Arc<Done>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// A run started in the background by `my_task::submit(..)`.
///
/// Awaiting it gives exactly what a plain call gives (a panic of the task is resumed in the
/// awaiting task). Passing it to another task records this run as that task's upstream.
/// Dropping it lets the run go on, unless [`TaskHandle::cancel_on_drop`] was called.
#[must_use = "a TaskHandle does nothing unless awaited (the run goes on in the background)"]
#[derive(Debug)]
pub struct TaskHandle<T> {
    run_id: Uuid,
    join: JoinHandle<T>,
    done: Arc<Done>,
    cancel_on_drop: bool,
}

impl<T> TaskHandle<T> {
    /// The id of the run.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// Cancels the run when this handle is dropped before the run finished.
    pub fn cancel_on_drop(mut self) -> Self {
        self.cancel_on_drop = true;
        self
    }

    /// Cancels the run now. Awaiting the handle afterwards panics.
    pub fn abort(&self) {
        self.join.abort();
    }

    /// Whether the run has finished.
    pub fn is_finished(&self) -> bool {
        self.done.flag.load(Ordering::Acquire)
    }

    pub(crate) fn wait_for(&self) -> WaitFor {
        WaitFor {
            run_id: self.run_id,
            done: Arc::clone(&self.done),
        }
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.join).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(err)) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(err) => panic!("flowkit: run {} was cancelled: {err}", self.run_id),
            },
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.join.is_finished() {
            self.join.abort();
        }
    }
}

/// Starts a run in the background: `make` receives the call site carrying the run's id.
pub fn submit<T, Fut>(make: impl FnOnce(CallSite) -> Fut) -> TaskHandle<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    submit_site(CallSite::default(), make)
}

/// Starts a run in the background with per-call options.
pub fn submit_with<T, Fut>(
    options: CallOptions,
    make: impl FnOnce(CallSite) -> Fut,
) -> TaskHandle<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    submit_site(
        CallSite {
            options: Some(Box::new(options)),
            ..CallSite::default()
        },
        make,
    )
}

fn submit_site<T, Fut>(mut site: CallSite, make: impl FnOnce(CallSite) -> Fut) -> TaskHandle<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let run_id = crate::ids::new_id();
    site.run_id = Some(run_id);
    let done = Arc::new(Done::default());
    let guard = SetOnDrop(Arc::clone(&done));
    let fut = make(site);
    let join = spawn(async move {
        let _guard = guard;
        fut.await
    });
    TaskHandle {
        run_id,
        join,
        done,
        cancel_on_drop: false,
    }
}

/// Calls a run with per-call options.
pub fn call_with<T, Fut>(options: CallOptions, make: impl FnOnce(CallSite) -> Fut) -> Fut
where
    Fut: Future<Output = T>,
{
    make(CallSite {
        options: Some(Box::new(options)),
        ..CallSite::default()
    })
}
