//! What the macros know about a task or flow: its static spec (options of the attribute), the
//! typed shape of its output, and what one call adds (per-call options, inputs, upstream runs).

use crate::event::RunKind;
use crate::hooks::{Hook, Hooks};
use crate::policy::retry::RetryPolicy;
use crate::policy::timeout::TimedOut;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How a task's results are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// No caching (the default).
    Off,
    /// `cache = inputs`: key from the task identity, its source hash and its serialized inputs.
    Inputs,
    /// `cache = path::to_key_fn`: key from the task identity, its source hash and what the
    /// user's function returns for the inputs.
    KeyFn,
}

/// The static spec of one `#[task]` or `#[flow]`: everything the attribute said.
///
/// Built once per function (the macro keeps it in a `static`), read on every call.
#[derive(Debug)]
pub struct TaskSpec {
    pub(crate) kind: RunKind,
    pub(crate) name: &'static str,
    pub(crate) task_key: &'static str,
    pub(crate) source_hash: &'static str,
    pub(crate) version: Option<&'static str>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cache: CacheMode,
    pub(crate) cache_ttl: Option<Duration>,
    pub(crate) refresh_cache: bool,
    pub(crate) persist: bool,
    pub(crate) tags: &'static [&'static str],
    pub(crate) hooks: Hooks,
}

impl TaskSpec {
    /// A spec with every option at its default.
    ///
    /// `task_key` is the function's full path (`module_path!()` + name) and identifies the
    /// task in caches; `source_hash` is the macro's hash of the function's tokens.
    pub fn new(
        kind: RunKind,
        name: &'static str,
        task_key: &'static str,
        source_hash: &'static str,
    ) -> TaskSpec {
        TaskSpec {
            kind,
            name,
            task_key,
            source_hash,
            version: None,
            retry: RetryPolicy::default(),
            timeout: None,
            cache: CacheMode::Off,
            cache_ttl: None,
            refresh_cache: false,
            persist: false,
            tags: &[],
            hooks: Hooks::default(),
        }
    }

    /// `version = "..."`.
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = Some(version);
        self
    }
    /// `retries = N`.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry.retries = retries;
        self
    }
    /// `retry_delay = "..."`.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry.delay = delay;
        self
    }
    /// `backoff = F`.
    pub fn backoff(mut self, factor: f64) -> Self {
        self.retry.backoff = factor;
        self
    }
    /// `jitter = F`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.retry.jitter = fraction;
        self
    }
    /// `timeout = "..."`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// `cache = inputs` or `cache = key_fn`.
    pub fn cache(mut self, mode: CacheMode) -> Self {
        self.cache = mode;
        self
    }
    /// `cache_ttl = "..."`.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }
    /// `refresh_cache = true`.
    pub fn refresh_cache(mut self, refresh: bool) -> Self {
        self.refresh_cache = refresh;
        self
    }
    /// `persist = true`.
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }
    /// `tags = [...]`.
    pub fn tags(mut self, tags: &'static [&'static str]) -> Self {
        self.tags = tags;
        self
    }
    /// One `on_completion` hook (call once per hook).
    pub fn on_completion(mut self, hook: impl Hook) -> Self {
        self.hooks.on_completion.push(Arc::new(hook));
        self
    }
    /// One `on_failure` hook (call once per hook).
    pub fn on_failure(mut self, hook: impl Hook) -> Self {
        self.hooks.on_failure.push(Arc::new(hook));
        self
    }
    /// One `on_retry` hook (call once per hook).
    pub fn on_retry(mut self, hook: impl Hook) -> Self {
        self.hooks.on_retry.push(Arc::new(hook));
        self
    }

    /// Display name of the runs.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The function's full path.
    pub fn task_key(&self) -> &'static str {
        self.task_key
    }
    /// Hash of the function's tokens, computed at compile time.
    pub fn source_hash(&self) -> &'static str {
        self.source_hash
    }
    /// Flow or task.
    pub fn kind(&self) -> RunKind {
        self.kind
    }
    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
    /// The timeout of one attempt.
    pub fn timeout_limit(&self) -> Option<Duration> {
        self.timeout
    }
    /// The tags.
    pub fn tag_list(&self) -> &'static [&'static str] {
        self.tags
    }
}

/// The bytes of an encoded output, or why it could not be encoded.
pub type Encoded = Result<Vec<u8>, String>;

/// Encodes and decodes a task's successful output for the cache and the local store.
pub struct Codec<T> {
    /// `None` when the output is not to be kept (an `Err`); `Some(Err)` when serializing failed.
    pub encode: fn(&T) -> Option<Encoded>,
    /// Rebuilds the output from what `encode` wrote.
    pub decode: fn(&[u8]) -> Result<T, String>,
}

impl<T> Clone for Codec<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Codec<T> {}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> {
    /// The codec of an infallible task's output: the whole value, as JSON.
    pub fn plain() -> Self {
        Codec {
            encode: |v| Some(serde_json::to_vec(v).map_err(|e| e.to_string())),
            decode: |b| serde_json::from_slice(b).map_err(|e| e.to_string()),
        }
    }
}

impl<O: serde::Serialize + serde::de::DeserializeOwned, E> Codec<Result<O, E>> {
    /// The codec of a fallible task's output: only `Ok` values are kept.
    pub fn result() -> Self {
        Codec {
            encode: |v| {
                v.as_ref()
                    .ok()
                    .map(|o| serde_json::to_vec(o).map_err(|e| e.to_string()))
            },
            decode: |b| serde_json::from_slice(b).map(Ok).map_err(|e| e.to_string()),
        }
    }
}

/// The typed side of a task: how to tell success from failure in its output, and what else
/// the options need of the output type. Built by the macro, per call (it is a few function
/// pointers), so generic functions work.
pub struct Shape<T> {
    /// `None` for a successful output; the error's description for a failed one.
    pub failure: fn(&T) -> Option<String>,
    /// `retry_if`: whether a failed output may be retried. `None`: every failure is retried.
    pub retry_if: Option<fn(&T) -> bool>,
    /// Builds the output of a timed-out attempt (`Err(TimedOut.into())`).
    pub timed_out: Option<fn(TimedOut) -> T>,
    /// How to keep the output (for `cache` and `persist`).
    pub codec: Option<Codec<T>>,
    /// The output as `&dyn Any`, for a deployed flow's result (set for flows that can be
    /// deployed: their output is `'static`).
    pub any: Option<fn(&T) -> &dyn std::any::Any>,
}

impl<T> Clone for Shape<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shape<T> {}

impl<T> Shape<T> {
    /// The shape of an infallible function: only a panic fails it.
    pub fn infallible() -> Self {
        Shape {
            failure: |_| None,
            retry_if: None,
            timed_out: None,
            codec: None,
            any: None,
        }
    }

    /// Adds `retry_if`.
    pub fn with_retry_if(mut self, retry_if: fn(&T) -> bool) -> Self {
        self.retry_if = Some(retry_if);
        self
    }

    /// Lets a deployed run serialize the output (flows that can be deployed).
    pub fn with_any(mut self) -> Self
    where
        T: 'static,
    {
        self.any = Some(crate::run::deployed::erase::<T>);
        self
    }

    /// Adds the codec for `cache` and `persist`.
    pub fn with_codec(mut self, codec: Codec<T>) -> Self {
        self.codec = Some(codec);
        self
    }
}

impl<O, E> Shape<Result<O, E>> {
    /// The shape of a fallible function: `Err` is a failed attempt; `failure` returns the
    /// description of an `Err` (the macro describes it with `Display`, else `Debug`).
    pub fn fallible(failure: fn(&Result<O, E>) -> Option<String>) -> Self {
        Shape {
            failure,
            retry_if: None,
            timed_out: None,
            codec: None,
            any: None,
        }
    }
}

impl<O, E: From<TimedOut>> Shape<Result<O, E>> {
    /// Adds `timeout`: a timed-out attempt yields `Err(E::from(TimedOut))`.
    pub fn with_timeout(mut self) -> Self {
        self.timed_out = Some(|t| Err(E::from(t)));
        self
    }
}

/// Per-call overrides, given with `my_task::with_options(..)`.
///
/// ```
/// use flowkit::{task, CallOptions};
/// use std::time::Duration;
///
/// #[task(retries = 1)]
/// async fn load(table: String) -> anyhow::Result<usize> {
///     Ok(table.len())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
/// let rows = load::with_options(CallOptions::new().retries(5).tag("nightly"))
///     .call("users".to_string())
///     .await?;
/// assert_eq!(rows, 5);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// Overrides `retries` (only for tasks declared with `retries`, whose arguments are cloned
    /// for each attempt).
    pub retries: Option<u32>,
    /// Overrides `timeout` (only for fallible tasks whose error has `From<TimedOut>`).
    pub timeout: Option<Duration>,
    /// Tags added to the attribute's tags (they count against limits too).
    pub tags: Vec<String>,
    /// Overrides `refresh_cache`.
    pub refresh_cache: Option<bool>,
    /// Runs that must finish before this one starts; they are recorded as upstream.
    pub wait_for: Vec<WaitFor>,
}

impl CallOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Overrides the number of retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }
    /// Overrides the timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Adds a tag to this run.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Skips the cache lookup (the fresh result is still written).
    pub fn refresh_cache(mut self, refresh: bool) -> Self {
        self.refresh_cache = Some(refresh);
        self
    }
    /// Waits for `handle`'s run to finish before starting, and records it as upstream.
    pub fn wait_for<T>(mut self, handle: &crate::TaskHandle<T>) -> Self {
        self.wait_for.push(handle.wait_for());
        self
    }
}

/// A run to wait for: its id and its completion signal.
#[derive(Clone, Debug)]
pub struct WaitFor {
    pub(crate) run_id: Uuid,
    pub(crate) done: Arc<crate::run::handle::Done>,
}

/// What one call adds to the static spec. Built by the generated code.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CallSite {
    /// Use this id for the run (set by `submit`, so the handle knows it before the run starts).
    pub run_id: Option<Uuid>,
    /// Per-call overrides.
    pub options: Option<Box<CallOptions>>,
    /// Runs this one consumes (`TaskHandle` arguments).
    pub upstream: Vec<Uuid>,
    /// The flow's arguments as JSON (flows only).
    pub parameters: Option<serde_json::Value>,
    /// BLAKE3 of the serialized inputs (or of the key function's value), for `cache`/`persist`.
    pub inputs: Option<Result<[u8; 32], String>>,
    /// The claim a worker runs this flow run under (set by the worker only).
    pub(crate) deployed: Option<std::sync::Arc<crate::run::deployed::Deployed>>,
}
