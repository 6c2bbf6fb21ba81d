//! One run, start to end, with a state event at each step: `Pending`; wait for the upstream
//! runs of `wait_for`; a kept result (`persist`) or a cache hit ends it `Cached`; otherwise
//! each attempt takes its concurrency-limit slots, goes `Running` under its timeout and gives
//! the slots back; a failed attempt that may be retried goes `AwaitingRetry`, runs the
//! `on_retry` hooks and waits out the retry delay (holding no slot) before the next attempt.

use crate::config;
use crate::context::{self, FlowScope, Frame, RunRef};
use crate::event::{RunDetails, RunKind};
use crate::hooks::{HookContext, RunInfo, run_hooks};
use crate::policy::cache::{self, CacheKey};
use crate::policy::limits::limits;
use crate::policy::timeout::TimedOut;
use crate::run::body::Body;
use crate::run::deployed::Deployed;
use crate::run::emit::Emitter;
use crate::run::spec::{CacheMode, CallOptions, CallSite, Shape, TaskSpec};
use crate::state::{State, StateType};
use futures::FutureExt;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;

type Panic = Box<dyn std::any::Any + Send + 'static>;

/// Runs a task or flow: the function every generated wrapper calls.
///
/// Returns what the function returned on its last attempt (or the cached result); a panic of
/// the last attempt is resumed after it has been recorded.
pub async fn run<T, B>(
    spec: &'static TaskSpec,
    shape: Shape<T>,
    site: CallSite,
    span: tracing::Span,
    body: B,
) -> T
where
    B: Body<Output = T>,
{
    let parent = context::current();
    let parent_run = parent.as_ref().and_then(|f| f.run.as_ref());
    let is_root = parent_run.is_none();
    let started = Instant::now();
    let exec = Execution::new(spec, shape, site, parent.as_deref());
    let deployed = exec.deployed.clone();
    let mut unfinished = Unfinished {
        emitter: exec.emitter.clone(),
        attempt: AtomicU32::new(0),
        armed: true,
    };
    let execution = async {
        if is_root {
            crate::sink::logs::capture(exec.execute(span, body, &unfinished.attempt)).await
        } else {
            exec.execute(span, body, &unfinished.attempt).await
        }
    };
    let outcome = match &deployed {
        None => execution.await,
        Some(deployed) => match until_cancelled(deployed, execution).await {
            Some(outcome) => outcome,
            None => {
                // The flow's future is dropped: its task runs in flight recorded `Cancelled`.
                let attempt = unfinished.attempt.load(Ordering::Relaxed);
                cancelled(spec, &unfinished.emitter, deployed, attempt, started).await;
                Err(Box::new(RunCancelled) as Panic)
            }
        },
    };
    // Every path out of `execute` recorded a final state.
    unfinished.armed = false;
    if is_root {
        crate::lifecycle::root_run_ended();
    }
    // Local sinks (the summary, the event log) are complete when a top-level flow returns;
    // the server is not waited for (see `crate::lifecycle`).
    if is_root && spec.kind == RunKind::Flow {
        let timeout = config::get().flush_timeout;
        if !crate::bus::flush_local(timeout).await {
            tracing::warn!(
                target: "flowkit",
                "flowkit: events of flow {} did not reach every local sink within {:?}",
                spec.name,
                timeout
            );
        }
    }
    match outcome {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Records `Cancelled` for a run whose future is dropped before it finished (its caller
/// timed out or was cancelled, the handle was aborted, the process is shutting down), so no
/// run stays `Running` forever. Hooks do not run then: they would need to be awaited.
struct Unfinished {
    emitter: Emitter,
    /// The attempt executing, updated by `execute`.
    attempt: AtomicU32,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.armed {
            let message = match &self.emitter.deployed {
                // A deployed run aborted by its worker after a cancel request or a lost lease.
                Some(deployed) if deployed.cancel.is_cancelled() => deployed.cancel_message(),
                _ => "dropped before it finished: its caller timed out or was cancelled, or the run was aborted".to_string(),
            };
            self.emitter.state(
                self.attempt.load(Ordering::Relaxed),
                State::with_message(StateType::Cancelled, message),
                None,
            );
        }
    }
}

/// The panic payload a cancelled deployed flow run unwinds with: the worker that started it
/// catches it (nothing else awaits a deployed run).
#[derive(Debug)]
pub(crate) struct RunCancelled;

/// Runs `execution` until it ends (`Some`) or `deployed` is cancelled before the run recorded
/// its final state (`None`: the execution is dropped). A cancellation that comes after the
/// final state (while `on_completion` hooks run, say) lets the execution finish.
async fn until_cancelled<F: std::future::Future>(
    deployed: &Deployed,
    execution: F,
) -> Option<F::Output> {
    tokio::pin!(execution);
    let mut ignore_cancel = false;
    loop {
        tokio::select! {
            biased;
            outcome = &mut execution => return Some(outcome),
            () = deployed.cancel.cancelled(), if !ignore_cancel => {
                if deployed.has_ended() {
                    ignore_cancel = true;
                } else {
                    return None;
                }
            }
        }
    }
}

/// Records `Cancelled` for a deployed flow run stopped by its worker, and runs its
/// `on_failure` hooks (a flow has no hook of its own for cancellation).
async fn cancelled(
    spec: &'static TaskSpec,
    emitter: &Emitter,
    deployed: &Deployed,
    attempt: u32,
    started: Instant,
) {
    let state = State::with_message(StateType::Cancelled, deployed.cancel_message());
    emitter.state(attempt, state.clone(), None);
    if !spec.hooks.on_failure.is_empty() {
        let ctx = HookContext {
            run: RunInfo {
                id: emitter.run_id,
                kind: spec.kind,
                name: emitter.name.clone(),
                task_key: spec.task_key,
                attempt,
                parent_run_id: emitter.parent_run_id,
                flow_run_id: emitter.flow_run_id,
                flow_name: Some(emitter.name.clone()),
            },
            state,
            elapsed: started.elapsed(),
        };
        run_hooks(&spec.hooks.on_failure, &ctx, "on_failure").await;
    }
}

/// Everything one run needs, resolved once before the first attempt.
struct Execution<T> {
    spec: &'static TaskSpec,
    shape: Shape<T>,
    emitter: Emitter,
    /// The flow run this run belongs to (its own scope for a flow run).
    flow: Option<Arc<FlowScope>>,
    options: Option<Box<CallOptions>>,
    details: Option<Box<RunDetails>>,
    /// Key of the inputs, when the run uses the cache, persists or may reuse a kept result.
    input_key: Option<CacheKey>,
    /// The parent frame's recorder, passed on to this run's frames.
    recorder: Option<Arc<crate::context::Recorder>>,
    /// Limited tags the enclosing runs hold.
    held_tags: Option<Arc<[String]>>,
    /// The claim a worker runs this flow run under.
    deployed: Option<Arc<Deployed>>,
}

enum AttemptEnd<T> {
    Returned(T),
    Panicked(Panic),
    TimedOut(Duration),
}

impl<T> Execution<T> {
    fn new(
        spec: &'static TaskSpec,
        shape: Shape<T>,
        mut site: CallSite,
        parent: Option<&Frame>,
    ) -> Execution<T> {
        let deployed = match spec.kind {
            RunKind::Flow => site.deployed.take(),
            RunKind::Task => None,
        };
        let run_id = deployed
            .as_ref()
            .map(|d| d.run_id)
            .or(site.run_id)
            .unwrap_or_else(crate::ids::new_id);
        // A deployed run's token, else the enclosing deployed flow's (for its task runs and
        // subflows).
        let lease = deployed
            .as_ref()
            .map(|d| d.lease)
            .or_else(|| parent.and_then(|f| f.flow.as_ref()).and_then(|f| f.lease));
        let parent_run_id = parent.and_then(|f| f.run.as_ref()).map(|r| r.id);
        let recorder = parent.and_then(|f| f.recorder.clone());
        let held_tags = parent.and_then(|f| f.held_tags.clone());
        let name = Cow::Borrowed(spec.name);
        let flow = match spec.kind {
            RunKind::Flow => Some(Arc::new(FlowScope {
                run_id,
                name: name.clone(),
                attempt: 1.into(),
                kept: Default::default(),
                lease,
            })),
            RunKind::Task => parent.and_then(|f| f.flow.clone()),
        };
        let wants_key = spec.cache != CacheMode::Off || spec.persist;
        let input_key = match (&site.inputs, wants_key && shape.codec.is_some()) {
            (Some(Ok(inputs)), true) => {
                Some(cache::cache_key(spec.task_key, spec.source_hash, inputs))
            }
            (Some(Err(why)), true) => {
                tracing::warn!(
                    target: "flowkit",
                    "{}: inputs could not be serialized for the cache key ({why}); running without the cache",
                    spec.name
                );
                None
            }
            _ => None,
        };
        let mut upstream = site.upstream;
        let mut tags: Vec<Cow<'static, str>> =
            spec.tags.iter().map(|t| Cow::Borrowed(*t)).collect();
        if let Some(options) = &site.options {
            upstream.extend(options.wait_for.iter().map(|w| w.run_id));
            tags.extend(options.tags.iter().cloned().map(Cow::Owned));
        }
        if let Some(deployed) = &deployed {
            for tag in &deployed.tags {
                if !tags.iter().any(|t| t == tag) {
                    tags.push(Cow::Owned(tag.clone()));
                }
            }
        }
        let cfg = config::get();
        let details = RunDetails {
            task_key: Cow::Borrowed(spec.task_key),
            version: spec.version.map(Cow::Borrowed),
            tags,
            parameters: site.parameters,
            upstream,
            cache_key: input_key
                .filter(|_| spec.cache != CacheMode::Off)
                .map(|k| k.hex()),
            deployment: deployed.as_ref().map(|d| d.deployment.clone()),
            worker: match &deployed {
                Some(d) => Some(Cow::Owned(d.worker.clone())),
                None => (spec.kind == RunKind::Flow).then(|| Cow::Owned(cfg.worker.clone())),
            },
        };
        Execution {
            spec,
            shape,
            emitter: Emitter {
                run_id,
                parent_run_id,
                flow_run_id: flow.as_ref().map(|f| f.run_id),
                kind: spec.kind,
                name,
                recorder: recorder.clone(),
                lease,
                deployed: deployed.clone(),
            },
            flow,
            options: site.options,
            details: Some(Box::new(details)),
            input_key,
            recorder,
            held_tags,
            deployed,
        }
    }

    async fn execute<B>(
        mut self,
        span: tracing::Span,
        mut body: B,
        current_attempt: &AtomicU32,
    ) -> Result<T, Panic>
    where
        B: Body<Output = T>,
    {
        let started = Instant::now();
        // A deployed run starts at its claim's attempt (after a crash or a retry, n+1).
        let first_attempt = self.deployed.as_ref().map_or(1, |d| d.first_attempt);
        self.emitter.state(
            first_attempt - 1,
            State::new(StateType::Pending),
            self.details.take(),
        );

        if let Some(options) = &self.options {
            for upstream in &options.wait_for {
                upstream.done.wait().await;
            }
        }
        if let Some(value) = self.reuse_kept_result() {
            return Ok(self.finish_cached(value.0, value.1, started).await);
        }
        if let Some((value, message)) = self.reuse_earlier_attempt().await {
            return Ok(self.finish_cached(value, message, started).await);
        }
        if let Some((value, message)) = self.cache_lookup().await {
            return Ok(self.finish_cached(value, message, started).await);
        }

        let retry = self.spec.retry;
        let retries = self
            .options
            .as_ref()
            .and_then(|o| o.retries)
            .unwrap_or(retry.retries);
        // A deployed run may have attempts up to its claim's `max_attempts`.
        let retries = match &self.deployed {
            Some(d) => d.max_attempts - 1,
            None => retries,
        };
        let retries = if B::REPEATABLE {
            retries
        } else {
            first_attempt - 1
        };
        let timeout = self.timeout();
        let extra_tags: &[String] = self.options.as_ref().map_or(&[], |o| &o.tags);

        let mut attempt = first_attempt - 1;
        loop {
            attempt += 1;
            current_attempt.store(attempt, Ordering::Relaxed);
            if let Some(deployed) = &self.deployed {
                deployed.set_attempt(attempt);
            }
            if let Some(flow) = self
                .flow
                .as_ref()
                .filter(|_| self.spec.kind == RunKind::Flow)
            {
                flow.attempt.store(attempt, Ordering::Relaxed);
            }
            let Some(fut) = body.attempt() else {
                // Only reachable if a body stops yielding attempts; treat it as a crash.
                let message = "the task body could not be run again".to_string();
                self.emitter.state(
                    attempt,
                    State::with_message(StateType::Crashed, message.clone()),
                    None,
                );
                return Err(Box::new(message));
            };
            let slots = limits()
                .acquire(
                    self.spec.tags,
                    extra_tags,
                    self.held_tags.as_deref().unwrap_or(&[]),
                )
                .await;
            let held_tags = match &slots {
                Some(slots) if !slots.tags.is_empty() => Some(
                    self.held_tags
                        .iter()
                        .flat_map(|held| held.iter().cloned())
                        .chain(slots.tags.iter().cloned())
                        .collect::<Arc<[String]>>(),
                ),
                _ => self.held_tags.clone(),
            };
            self.emitter
                .state(attempt, State::new(StateType::Running), None);
            let frame = Arc::new(Frame {
                run: Some(RunRef {
                    id: self.emitter.run_id,
                    kind: self.spec.kind,
                    name: self.emitter.name.clone(),
                    parent_run_id: self.emitter.parent_run_id,
                    flow_run_id: self.emitter.flow_run_id,
                    attempt,
                }),
                flow: self.flow.clone(),
                recorder: self.recorder.clone(),
                held_tags,
            });
            let guarded = context::scope(frame, AssertUnwindSafe(fut).catch_unwind())
                .instrument(span.clone());
            let end = match timeout {
                Some(limit) => match tokio::time::timeout(limit, guarded).await {
                    Ok(Ok(value)) => AttemptEnd::Returned(value),
                    Ok(Err(panic)) => AttemptEnd::Panicked(panic),
                    Err(_) => AttemptEnd::TimedOut(limit),
                },
                None => match guarded.await {
                    Ok(value) => AttemptEnd::Returned(value),
                    Err(panic) => AttemptEnd::Panicked(panic),
                },
            };
            drop(slots);
            let may_retry = attempt <= retries;

            // Each arm either returns the run's result or falls through to a retry.
            let failure = match end {
                AttemptEnd::Returned(value) => match (self.shape.failure)(&value) {
                    None => return Ok(self.finish_completed(value, attempt, started).await),
                    Some(message) => {
                        let retryable = self.shape.retry_if.is_none_or(|f| f(&value));
                        if may_retry && retryable {
                            message
                        } else {
                            let state = State::with_message(StateType::Failed, message);
                            self.finish_failed(state, attempt, started).await;
                            return Ok(value);
                        }
                    }
                },
                AttemptEnd::Panicked(panic) => {
                    let message = format!("panicked: {}", crate::run::panic_message(&*panic));
                    if may_retry {
                        message
                    } else {
                        let state = State::with_message(StateType::Crashed, message);
                        self.finish_failed(state, attempt, started).await;
                        return Err(panic);
                    }
                }
                AttemptEnd::TimedOut(limit) => {
                    let timed_out = TimedOut { after: limit };
                    let Some(make) = self.shape.timed_out else {
                        // `timeout()` only returns a limit when the shape can express one.
                        return Err(Box::new(timed_out.to_string()));
                    };
                    let value = make(timed_out);
                    let retryable = self.shape.retry_if.is_none_or(|f| f(&value));
                    if may_retry && retryable {
                        timed_out.to_string()
                    } else {
                        let state = State::with_message(StateType::TimedOut, timed_out.to_string());
                        self.finish_failed(state, attempt, started).await;
                        return Ok(value);
                    }
                }
            };
            let delay = retry.delay_before_retry(attempt, fastrand::f64());
            let message = format!(
                "attempt {attempt} failed: {failure}; retry {attempt} of {retries} in {}",
                humantime::format_duration(round_to_millis(delay))
            );
            let state = State::with_message(StateType::AwaitingRetry, message);
            self.emitter.state(attempt, state.clone(), None);
            if !self.spec.hooks.on_retry.is_empty() {
                let ctx = self.hook_context(state, attempt, started);
                run_hooks(&self.spec.hooks.on_retry, &ctx, "on_retry").await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// The timeout of each attempt: the per-call override or the attribute's, and only when
    /// the output can carry a `TimedOut` error.
    fn timeout(&self) -> Option<Duration> {
        let wanted = self
            .options
            .as_ref()
            .and_then(|o| o.timeout)
            .or(self.spec.timeout)?;
        if self.shape.timed_out.is_none() {
            tracing::warn!(
                target: "flowkit",
                "{}: a timeout needs a fallible task whose error implements From<flowkit::TimedOut>; ignoring it",
                self.spec.name
            );
            return None;
        }
        Some(wanted)
    }

    /// A result this task produced for the same inputs in an earlier attempt of the enclosing
    /// flow run.
    fn reuse_kept_result(&self) -> Option<(T, String)> {
        if self.spec.kind != RunKind::Task || self.refresh_cache() {
            return None;
        }
        let flow = self.flow.as_ref()?;
        let key = self.input_key?;
        let codec = self.shape.codec?;
        let current = flow.attempt.load(Ordering::Relaxed);
        let (bytes, attempt) = {
            let kept = flow.kept.lock().ok()?;
            let (bytes, attempt) = kept.get(&key.0)?;
            (Arc::clone(bytes), *attempt)
        };
        if attempt >= current {
            return None;
        }
        let value = (codec.decode)(&bytes).ok()?;
        Some((
            value,
            format!(
                "result of attempt {attempt} of flow run {} ({})",
                flow.name, flow.run_id
            ),
        ))
    }

    /// Where a `persist` task of a deployed flow run keeps its result for the run's later
    /// attempts, which may run in another process of the same `FLOWKIT_HOME` (a retry from
    /// failure, a re-run after a crash): the flow run's id and the task's inputs.
    fn kept_key(&self) -> Option<CacheKey> {
        if self.spec.kind != RunKind::Task || !self.spec.persist {
            return None;
        }
        let flow = self.flow.as_ref().filter(|f| f.lease.is_some())?;
        let inputs = self.input_key?;
        let mut h = blake3::Hasher::new_derive_key("flowkit 2026 deployed run kept result v1");
        h.update(flow.run_id.as_bytes());
        h.update(&inputs.0);
        Some(CacheKey(*h.finalize().as_bytes()))
    }

    /// A result this `persist` task kept in an earlier attempt of its deployed flow run, from
    /// the local store (see [`kept_key`](Self::kept_key)).
    async fn reuse_earlier_attempt(&self) -> Option<(T, String)> {
        let flow = self.flow.as_ref()?;
        if flow.attempt.load(Ordering::Relaxed) < 2 || self.refresh_cache() {
            return None;
        }
        let key = self.kept_key()?;
        let codec = self.shape.codec?;
        let bytes = cache::store().load(key, None).await?;
        let value = (codec.decode)(&bytes).ok()?;
        Some((
            value,
            format!(
                "result kept by an earlier attempt of flow run {} ({})",
                flow.name, flow.run_id
            ),
        ))
    }

    /// `refresh_cache`, per call or from the attribute: run the body, never reuse a result.
    fn refresh_cache(&self) -> bool {
        self.options
            .as_ref()
            .and_then(|o| o.refresh_cache)
            .unwrap_or(self.spec.refresh_cache)
    }

    async fn cache_lookup(&self) -> Option<(T, String)> {
        if self.spec.cache == CacheMode::Off {
            return None;
        }
        if self.refresh_cache() {
            return None;
        }
        let key = self.input_key?;
        let codec = self.shape.codec?;
        let bytes = cache::store().load(key, self.spec.cache_ttl).await?;
        match (codec.decode)(&bytes) {
            Ok(value) => Some((value, format!("cache hit {}", &key.hex()[..16]))),
            Err(why) => {
                tracing::warn!(
                    target: "flowkit",
                    "{}: cached result {} no longer decodes ({why}); running the task",
                    self.spec.name,
                    key.hex()
                );
                None
            }
        }
    }

    async fn finish_cached(&self, value: T, message: String, started: Instant) -> T {
        let state = State::with_message(StateType::Cached, message);
        self.emitter.state(0, state.clone(), None);
        if !self.spec.hooks.on_completion.is_empty() {
            let ctx = self.hook_context(state, 0, started);
            run_hooks(&self.spec.hooks.on_completion, &ctx, "on_completion").await;
        }
        value
    }

    async fn finish_completed(&self, value: T, attempt: u32, started: Instant) -> T {
        // A deployed run completes only with a result the server can store.
        if let (Some(deployed), Some(any)) = (&self.deployed, self.shape.any)
            && let Err(why) = deployed.keep_output(any(&value))
        {
            let state = State::with_message(StateType::Failed, why);
            self.finish_failed(state, attempt, started).await;
            return value;
        }
        if let Some((key, bytes)) = self.keep(&value) {
            self.write_through(key, bytes).await;
        }
        let state = State::new(StateType::Completed);
        self.emitter.state(attempt, state.clone(), None);
        if !self.spec.hooks.on_completion.is_empty() {
            let ctx = self.hook_context(state, attempt, started);
            run_hooks(&self.spec.hooks.on_completion, &ctx, "on_completion").await;
        }
        value
    }

    async fn finish_failed(&self, state: State, attempt: u32, started: Instant) {
        self.emitter.state(attempt, state.clone(), None);
        if !self.spec.hooks.on_failure.is_empty() {
            let ctx = self.hook_context(state, attempt, started);
            run_hooks(&self.spec.hooks.on_failure, &ctx, "on_failure").await;
        }
    }

    /// Encodes a successful output and keeps it among the results of the flow run; returns
    /// the encoding for [`write_through`](Self::write_through). Synchronous, so that no
    /// reference to the output is held across an await (the run's future stays `Send` for
    /// outputs that are not `Sync`).
    fn keep(&self, value: &T) -> Option<(CacheKey, Arc<[u8]>)> {
        let (Some(codec), Some(key)) = (self.shape.codec, self.input_key) else {
            return None;
        };
        let bytes: Arc<[u8]> = match (codec.encode)(value)? {
            Ok(bytes) => bytes.into(),
            Err(why) => {
                tracing::warn!(
                    target: "flowkit",
                    "{}: result could not be serialized ({why}); it is not cached",
                    self.spec.name
                );
                return None;
            }
        };
        if let Some(flow) = self
            .flow
            .as_ref()
            .filter(|_| self.spec.kind == RunKind::Task)
        {
            let attempt = flow.attempt.load(Ordering::Relaxed);
            if let Ok(mut kept) = flow.kept.lock() {
                kept.entry(key.0).or_insert((Arc::clone(&bytes), attempt));
            }
        }
        Some((key, bytes))
    }

    /// Writes an encoded output where the options want it: the cache, the local store of kept
    /// results. Done when it returns, so the next process finds it.
    async fn write_through(&self, key: CacheKey, bytes: Arc<[u8]>) {
        let store = cache::store();
        if self.spec.cache != CacheMode::Off {
            store
                .save(key, self.spec.task_key, Arc::clone(&bytes))
                .await;
        }
        if let Some(kept) = self.kept_key() {
            store
                .save(kept, self.spec.task_key, Arc::clone(&bytes))
                .await;
        }
        if self.spec.persist {
            store
                .save_result(self.emitter.run_id, self.spec.task_key, bytes)
                .await;
        }
    }

    fn hook_context(&self, state: State, attempt: u32, started: Instant) -> HookContext {
        HookContext {
            run: RunInfo {
                id: self.emitter.run_id,
                kind: self.spec.kind,
                name: self.emitter.name.clone(),
                task_key: self.spec.task_key,
                attempt,
                parent_run_id: self.emitter.parent_run_id,
                flow_run_id: self.emitter.flow_run_id,
                flow_name: self.flow.as_ref().map(|f| f.name.clone()),
            },
            state,
            elapsed: started.elapsed(),
        }
    }
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64)
}
