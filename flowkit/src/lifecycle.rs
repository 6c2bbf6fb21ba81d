//! When events are made durable: [`init`], its [`FlushGuard`], [`flush`], and the exit flush
//! (documented on [`init`], where users look).

use crate::config;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Top-level runs that have ended in this process.
static ROOT_ENDS: AtomicU64 = AtomicU64::new(0);
/// The value of `ROOT_ENDS` before the last flush every sink answered.
static FLUSHED_THROUGH: AtomicU64 = AtomicU64::new(0);

/// Starts flowkit's background threads now (the sink thread and, with `FLOWKIT_API_URL`, the
/// reporter, which takes over what earlier processes left in the spool) and returns a guard
/// that flushes every sink when it drops.
///
/// Keep the guard alive for the whole of `main`:
///
/// ```no_run
/// use flowkit::{flow, task};
///
/// #[task]
/// async fn extract() -> anyhow::Result<u32> {
///     Ok(42)
/// }
///
/// #[flow]
/// async fn nightly() -> anyhow::Result<u32> {
///     extract().await
/// }
///
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     let _flowkit = flowkit::init();
///     nightly().await?;
///     Ok(())
/// } // `_flowkit` drops here: the run is on the server (or in the spool) before the process ends.
/// ```
///
/// Calling it more than once is fine: each guard flushes when it drops.
///
/// # When events are durable
///
/// A top-level flow returns as soon as its events are in the local sinks (the terminal summary,
/// the event log): it never waits for the server, so a service that runs a flow per request
/// does not pay the server's latency on every call. The reporter sends events in the
/// background, within milliseconds of a top-level flow's end. What it has not sent when the
/// process ends is taken care of by:
///
/// 1. **the guard**: when it drops, it flushes every sink and waits (at most
///    `FLOWKIT_FLUSH_TIMEOUT`, 5 s) until the reporter has delivered everything, or has written
///    what the server did not take in time to the spool;
/// 2. **[`flush`]**: the same, awaited wherever you want it (before a deliberate
///    `std::process::exit`, in a shutdown handler, every N requests);
/// 3. **the exit flush**, for a program that does neither: a thread that ran a top-level run
///    registers a thread-local destructor, which does the same flush when that thread ends.
///    The main thread's destructors run when `main` returns, when it calls
///    `std::process::exit`, and after a panic in `main`; a tokio worker's when its runtime is
///    dropped. It is best-effort: a process killed by a signal or aborted, or one that exits
///    from another thread than those that ran its flows, skips it, and then only what was
///    already delivered or spooled survives.
///
/// Whatever a flush cannot deliver (the server is down, slow, or refuses the API key) goes to
/// the spool, `<FLOWKIT_HOME>/spool/` (bounded), and the next process that reports from the
/// same `FLOWKIT_HOME` delivers it. A flush that finds everything delivered already is quick.
pub fn init() -> FlushGuard {
    crate::bus::start();
    FlushGuard { _private: () }
}

/// Flushes every sink when dropped, waiting at most the flush timeout
/// (`FLOWKIT_FLUSH_TIMEOUT`, [`crate::config::Config::flush_timeout`]). Made by [`init`].
///
/// The drop blocks the thread it runs on for that long at most (it is meant for the end of
/// `main`); use [`flush`] to wait without blocking.
#[must_use = "the guard flushes when it drops: bind it with `let _flowkit = flowkit::init();`"]
#[derive(Debug)]
pub struct FlushGuard {
    _private: (),
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        flush_now();
    }
}

/// Waits until every event emitted so far is in every sink and the reporter has delivered it
/// to the server (or, when the server does not take it in time, written it to the spool), at
/// most the flush timeout (`FLOWKIT_FLUSH_TIMEOUT`, 5 s). Returns whether everything was
/// delivered.
///
/// Top-level flows do not wait for the server; call this where your program needs the runs to
/// be on the server, e.g. before a deliberate `std::process::exit`:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// if !flowkit::flush().await {
///     eprintln!("some events are in the spool; the next run delivers them");
/// }
/// # }
/// ```
///
/// The wait is in real time, also under tokio's paused test clock.
pub async fn flush() -> bool {
    flush_within(config::get().flush_timeout).await
}

/// [`flush`] with an explicit bound.
pub(crate) async fn flush_within(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    match tokio::runtime::Handle::try_current() {
        // The sink thread and the reporter run apart from the caller's runtime: wait for them
        // on a blocking thread.
        Ok(handle) => handle
            .spawn_blocking(move || flush_until(deadline))
            .await
            .unwrap_or(false),
        Err(_) => flush_until(deadline),
    }
}

/// The blocking flush of [`flush`], the guard and the exit flush. Returns whether everything
/// was delivered.
fn flush_until(deadline: Instant) -> bool {
    let through = ROOT_ENDS.load(Ordering::SeqCst);
    let flushed = crate::bus::flush_blocking(deadline);
    if flushed.answered {
        // What was not delivered is in the spool: the exit flush has nothing more to do.
        FLUSHED_THROUGH.fetch_max(through, Ordering::SeqCst);
    }
    flushed.delivered
}

fn flush_now() {
    flush_until(Instant::now() + config::get().flush_timeout);
}

/// Called when a top-level run (a flow, or a task outside any flow) has ended on this thread:
/// arms this thread's exit flush.
pub(crate) fn root_run_ended() {
    ROOT_ENDS.fetch_add(1, Ordering::SeqCst);
    // `try_with`: a run ending while this thread is being torn down has nothing to arm.
    let _ = EXIT_FLUSH.try_with(|_| {});
}

/// Flushes at thread exit if a top-level run ended since the last complete flush.
struct ExitFlush;

impl Drop for ExitFlush {
    fn drop(&mut self) {
        // Runs from a thread-local destructor: `flush_now` uses only locks, condition variables
        // and the bus's channel, never another thread-local.
        if ROOT_ENDS.load(Ordering::SeqCst) > FLUSHED_THROUGH.load(Ordering::SeqCst) {
            flush_now();
        }
    }
}

thread_local! {
    static EXIT_FLUSH: ExitFlush = const { ExitFlush };
}
