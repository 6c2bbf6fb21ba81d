//! Hooks: the user's functions that run after a run reaches a state.
//!
//! A hook is any `Fn(&HookContext)` (a plain function works) or a type implementing [`Hook`]
//! directly, such as the notifications of [`crate::notify`]. Hooks run after the state change
//! has been recorded, are bounded in time ([`HOOK_TIMEOUT`]) and can never fail or hang the
//! run: a panicking or slow hook is logged and the run goes on.
//!
//! ```
//! use flowkit::{task, HookContext};
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
pub struct Hooks {
    /// Run after a run ends `Completed` or `Cached`.
    pub on_completion: Vec<Arc<dyn Hook>>,
    /// Run after a run ends `Failed`, `Crashed` or `TimedOut`.
    pub on_failure: Vec<Arc<dyn Hook>>,
    /// Run when an attempt failed and a retry is scheduled.
    pub on_retry: Vec<Arc<dyn Hook>>,
}

impl Hooks {
    /// Whether no hook is set (the common case, checked on the hot path).
    pub fn is_empty(&self) -> bool {
        self.on_completion.is_empty() && self.on_failure.is_empty() && self.on_retry.is_empty()
    }
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

/// Runs `hooks` one after the other, each on a thread of its own (so a hook that blocks
/// cannot stall the runtime, nor keep it from shutting down), waiting at most
/// [`HOOK_TIMEOUT`] of real time for each; panics and timeouts are logged, never propagated.
pub(crate) async fn run_hooks(hooks: &[Arc<dyn Hook>], ctx: &HookContext, which: &'static str) {
    for hook in hooks {
        let hook = Arc::clone(hook);
        let owned = ctx.clone();
        let handle = tokio::runtime::Handle::current();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A detached thread: if the hook never returns, only that thread is lost — a tokio
        // blocking task would make the runtime wait for it at shutdown.
        let spawned = std::thread::Builder::new()
            .name("flowkit-hook".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // A plain-function hook runs inside `call`: give it the runtime too.
                    let _entered = handle.enter();
                    handle.block_on(hook.call(&owned))
                }));
                let _ = done_tx.send(outcome);
            });
        if let Err(err) = spawned {
            tracing::warn!(target: "flowkit", run = %ctx.run.name, "{which} hook not run: no thread ({err})");
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
