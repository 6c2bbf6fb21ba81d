//! Hooks: the user's functions that run after a run reaches a state.
//!
//! A hook is any `Fn(&HookContext)` (a plain function works) or a type implementing [`Hook`]
//! directly, such as the notifications of [`crate::notify`]. Hooks run after the state change
//! has been recorded, are bounded in time ([`HOOK_TIMEOUT`]) and can never fail or hang the
//! run: a panicking or slow hook is logged and the run goes on.
//!
//! # Where hooks run
//!
//! On a small pool of threads of their own (named `flowkit-hook`), never on the runtime's
//! threads: two threads are started on the first hook call and kept. Hooks are synchronous, so
//! a hook that never returns cannot be stopped — it keeps its thread for good, and its run goes
//! on after [`HOOK_TIMEOUT`]. So that stuck hooks do not hold up every later hook and
//! notification, a call that finds every thread busy starts an extra thread, up to eight extra
//! (an extra thread without work for 10 s ends). With all ten stuck, calls wait in a queue of
//! at most 1024 until a thread frees up (their runs go on after [`HOOK_TIMEOUT`]); past that
//! bound a call is skipped with a warning. The notifications of [`crate::notify`] put a
//! timeout on every request they make, so they cannot be the hook that gets stuck. The pool's
//! threads are detached: they never keep the process from exiting.
//!
//! ```
//! use flowkit::hooks::HookContext;
//! use flowkit::task;
//!
//! fn page_someone(ctx: &HookContext) {
//!     eprintln!("{} ended {}", ctx.run.name, ctx.state);
//! }
//!
//! #[task(retries = 2, on_failure = page_someone)]
//! async fn fetch(url: String) -> anyhow::Result<String> {
//!     Ok(url)
//! }
//! ```

use crate::event::RunKind;
use crate::state::State;
use futures::future::BoxFuture;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long one hook may run before the run stops waiting for it.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// What a hook is told about the run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HookContext {
    /// The run.
    pub run: RunInfo,
    /// The state the run just entered (final for `on_completion` and `on_failure`,
    /// `AwaitingRetry` for `on_retry`).
    pub state: State,
    /// Time from the first attempt's start to this state.
    pub elapsed: Duration,
}

/// Identity of a run, as hooks and notifications see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunInfo {
    /// The run's id.
    pub id: Uuid,
    /// Flow run or task run.
    pub kind: RunKind,
    /// Display name.
    pub name: Cow<'static, str>,
    /// The function's path.
    pub task_key: &'static str,
    /// The attempt the state belongs to (1-based).
    pub attempt: u32,
    /// The calling run.
    pub parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run (the run itself for a flow).
    pub flow_run_id: Option<Uuid>,
    /// Name of the nearest enclosing flow (the run itself for a flow).
    pub flow_name: Option<Cow<'static, str>>,
}

/// Something to do after a run changes state.
///
/// Implemented for every `Fn(&HookContext) + Send + Sync + 'static`; implement it directly for
/// hooks that need to await (as the notifications do).
pub trait Hook: Send + Sync + 'static {
    /// Runs the hook. It is raced against [`HOOK_TIMEOUT`] and its panics are caught.
    fn call<'a>(&'a self, ctx: &'a HookContext) -> BoxFuture<'a, ()>;
}

impl<F> Hook for F
where
    F: Fn(&HookContext) + Send + Sync + 'static,
{
    fn call<'a>(&'a self, ctx: &'a HookContext) -> BoxFuture<'a, ()> {
        self(ctx);
        Box::pin(std::future::ready(()))
    }
}

/// The hooks of one task or flow, by the state that triggers them.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    /// Run after a run ends `Completed` or `Cached`.
    pub on_completion: Vec<Arc<dyn Hook>>,
    /// Run after a run ends `Failed`, `Crashed` or `TimedOut`.
    pub on_failure: Vec<Arc<dyn Hook>>,
    /// Run when an attempt failed and a retry is scheduled.
    pub on_retry: Vec<Arc<dyn Hook>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_completion", &self.on_completion.len())
            .field("on_failure", &self.on_failure.len())
            .field("on_retry", &self.on_retry.len())
            .finish()
    }
}

/// Runs `hooks` one after the other on the hook pool, waiting at most [`HOOK_TIMEOUT`] of real
/// time for each; panics and timeouts are logged, never propagated.
pub(crate) async fn run_hooks(hooks: &[Arc<dyn Hook>], ctx: &HookContext, which: &'static str) {
    for hook in hooks {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let job = Job {
            hook: Arc::clone(hook),
            ctx: ctx.clone(),
            runtime: tokio::runtime::Handle::current(),
            done: done_tx,
        };
        if let Err(why) = pool::submit(job) {
            tracing::warn!(target: "flowkit", run = %ctx.run.name, "{which} hook not run: {why}");
            continue;
        }
        // Waiting on a blocking thread with a real-time bound keeps tokio's paused clock (in
        // tests) from skipping past the hook.
        let waited = tokio::task::spawn_blocking(move || done_rx.recv_timeout(HOOK_TIMEOUT)).await;
        match waited {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(panic))) => tracing::warn!(
                target: "flowkit",
                run = %ctx.run.name,
                "{which} hook panicked: {}",
                crate::run::panic_message(&*panic)
            ),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                target: "flowkit",
                run = %ctx.run.name,
                "{which} hook did not finish within {:?}; the run goes on without it",
                HOOK_TIMEOUT
            ),
        }
    }
}

type Panic = Box<dyn std::any::Any + Send + 'static>;

/// One hook call, handed to the pool.
struct Job {
    hook: Arc<dyn Hook>,
    ctx: HookContext,
    /// The runtime of the run: a hook that awaits (a notification) runs its I/O there.
    runtime: tokio::runtime::Handle,
    done: std::sync::mpsc::Sender<Result<(), Panic>>,
}

impl Job {
    /// Runs the hook; returns how it ended and who to tell.
    fn run(
        self,
    ) -> (
        Result<(), Panic>,
        std::sync::mpsc::Sender<Result<(), Panic>>,
    ) {
        let Job {
            hook,
            ctx,
            runtime,
            done,
        } = self;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // A plain-function hook runs inside `call`: give it the runtime too.
            let _entered = runtime.enter();
            runtime.block_on(hook.call(&ctx));
        }));
        (outcome, done)
    }
}

/// The threads hooks run on (see the module documentation, "Where hooks run").
mod pool {
    use super::Job;
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    /// Threads kept for hooks.
    pub(super) const POOL_THREADS: usize = 2;
    /// Most threads started on top of those when every thread is busy.
    pub(super) const MAX_EXTRA_THREADS: usize = 8;
    /// An extra thread without work for this long ends.
    pub(super) const EXTRA_IDLE: Duration = Duration::from_secs(10);
    /// Most calls waiting for a thread when every thread is busy.
    pub(super) const MAX_QUEUED: usize = 1024;

    struct State {
        jobs: VecDeque<Job>,
        /// Threads running a hook.
        busy: usize,
        threads: usize,
    }

    struct Pool {
        state: Mutex<State>,
        work: Condvar,
    }

    static POOL: Pool = Pool {
        state: Mutex::new(State {
            jobs: VecDeque::new(),
            busy: 0,
            threads: 0,
        }),
        work: Condvar::new(),
    };

    fn lock() -> MutexGuard<'static, State> {
        POOL.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `job` to a free thread, a new one, or the queue; says why not when it cannot.
    pub(super) fn submit(job: Job) -> Result<(), String> {
        let mut state = lock();
        // Threads not running a hook (waiting, or about to) take the queued jobs first.
        let free = state.threads - state.busy > state.jobs.len();
        if !free && state.threads < POOL_THREADS + MAX_EXTRA_THREADS {
            let kept = state.threads < POOL_THREADS;
            let spawned = std::thread::Builder::new()
                .name("flowkit-hook".into())
                .spawn(move || work(kept));
            match spawned {
                Ok(_) => state.threads += 1,
                // Another thread may still free up.
                Err(e) if state.threads == 0 => return Err(format!("no thread ({e})")),
                Err(_) => {}
            }
        }
        if !free && state.jobs.len() >= MAX_QUEUED {
            return Err(format!(
                "all {} hook threads are busy (stuck hooks?) and {MAX_QUEUED} calls already wait",
                state.threads
            ));
        }
        state.jobs.push_back(job);
        drop(state);
        POOL.work.notify_one();
        Ok(())
    }

    /// A pool thread: runs jobs; an extra one ends after [`EXTRA_IDLE`] without any.
    fn work(kept: bool) {
        loop {
            let job = {
                let mut state = lock();
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        state.busy += 1;
                        break job;
                    }
                    let timed_out = if kept {
                        state = POOL
                            .work
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                        false
                    } else {
                        let (s, wait) = POOL
                            .work
                            .wait_timeout(state, EXTRA_IDLE)
                            .unwrap_or_else(PoisonError::into_inner);
                        state = s;
                        wait.timed_out()
                    };
                    if timed_out && state.jobs.is_empty() {
                        state.threads -= 1;
                        return;
                    }
                }
            };
            let (outcome, done) = job.run();
            // Free again before the run hears back, so its next hook finds this thread free.
            lock().busy -= 1;
            // The run may have stopped waiting (timeout): nobody to tell then.
            let _ = done.send(outcome);
        }
    }

    /// Threads the pool has now (for tests).
    #[cfg(test)]
    pub(super) fn threads() -> usize {
        lock().threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex, PoisonError};

    /// Hooks that block until released, as a hook stuck on a dead socket would.
    static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
    static ENTERED: AtomicUsize = AtomicUsize::new(0);
    static FINISHED: AtomicUsize = AtomicUsize::new(0);

    fn stuck(_: &HookContext) {
        ENTERED.fetch_add(1, Ordering::SeqCst);
        let mut open = GATE.0.lock().unwrap_or_else(PoisonError::into_inner);
        while !*open {
            open = GATE.1.wait(open).unwrap_or_else(PoisonError::into_inner);
        }
        FINISHED.fetch_add(1, Ordering::SeqCst);
    }

    fn context() -> HookContext {
        HookContext {
            run: RunInfo {
                id: Uuid::now_v7(),
                kind: RunKind::Task,
                name: Cow::Borrowed("t"),
                task_key: "t",
                attempt: 1,
                parent_run_id: None,
                flow_run_id: None,
                flow_name: None,
            },
            state: State::new(crate::state::StateType::Completed),
            elapsed: Duration::ZERO,
        }
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // The pool is process-wide: one test drives it through every stage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stuck_hooks_do_not_stop_later_hooks_and_the_pool_stays_bounded() {
        let stuck_hook: Arc<dyn Hook> = Arc::new(stuck);
        let calls = |n: usize| {
            for _ in 0..n {
                let hooks = vec![Arc::clone(&stuck_hook)];
                // Their runs wait in the background (up to HOOK_TIMEOUT) for these hooks.
                tokio::spawn(async move { run_hooks(&hooks, &context(), "on_completion").await });
            }
        };
        // Calls one after the other reuse the pool's threads: no thread per call.
        static QUICK: AtomicUsize = AtomicUsize::new(0);
        let quick: Arc<dyn Hook> = Arc::new(|_: &HookContext| {
            QUICK.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..20 {
            run_hooks(&[Arc::clone(&quick)], &context(), "on_completion").await;
        }
        assert_eq!(QUICK.load(Ordering::SeqCst), 20);
        assert!(pool::threads() <= pool::POOL_THREADS, "{}", pool::threads());

        calls(pool::POOL_THREADS);
        wait_for("every kept thread runs a stuck hook", || {
            ENTERED.load(Ordering::SeqCst) == pool::POOL_THREADS
        })
        .await;

        // Every kept thread is stuck: a later notification still goes out, at once, from an
        // extra thread.
        let received = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State(n): axum::extract::State<Arc<AtomicUsize>>| async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                },
            )
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let later: Arc<dyn Hook> = Arc::new(crate::notify::webhook(url));
        let start = std::time::Instant::now();
        run_hooks(&[later], &context(), "on_completion").await;
        assert_eq!(
            received.load(Ordering::SeqCst),
            1,
            "the notification went out"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );

        // Many more stuck hooks: the threads stop at the bound, the rest wait in the queue.
        calls(3 * pool::MAX_EXTRA_THREADS);
        let most = pool::POOL_THREADS + pool::MAX_EXTRA_THREADS;
        wait_for("the pool fills up", || {
            ENTERED.load(Ordering::SeqCst) == most
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool::threads(), most);
        assert_eq!(ENTERED.load(Ordering::SeqCst), most, "the others wait");

        // Once the hooks return, the queued calls run too.
        *GATE.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        GATE.1.notify_all();
        let all = pool::POOL_THREADS + 3 * pool::MAX_EXTRA_THREADS;
        wait_for("every queued hook runs", || {
            FINISHED.load(Ordering::SeqCst) == all
        })
        .await;
    }
}
