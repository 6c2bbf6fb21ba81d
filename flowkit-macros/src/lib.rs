//! The `#[task]` and `#[flow]` attributes of [flowkit](https://docs.rs/flowkit).
//!
//! Use them through `flowkit` (`use flowkit::{flow, task};`): the generated code calls the
//! runtime through `::flowkit::__private`. The crate reads the attribute (`parse`: options
//! → validated config) and then writes the code (`expand`: reads only the config).

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Makes an `async fn` a task: every call is a run with states, retries, caching, timeouts
/// and hooks, recorded by flowkit.
///
/// The function keeps its name, visibility, generics, arguments and return type, so callers
/// compile unchanged: `fetch(url).await` is a run. Beside a free function the attribute adds
/// a struct of the same name (type namespace only) with the other entry points:
/// `fetch::submit(url)` (spawned, returns a `flowkit::TaskHandle`), `fetch::map(items)`
/// (fan-out, results in input order) and `fetch::with_options(opts).call(url)`.
///
/// ```
/// use flowkit::task;
///
/// #[task(retries = 3, retry_delay = "500ms", backoff = 2.0, timeout = "30s")]
/// async fn fetch(url: String) -> anyhow::Result<String> {
///     Ok(format!("contents of {url}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
/// let page = fetch("https://example.com".into()).await?; // a run
/// let handle = fetch::submit("https://example.org".into()); // a run in the background
/// let pages = fetch::map(["a".to_string(), "b".to_string()]).await; // one run per item
/// assert_eq!(handle.await?, "contents of https://example.org");
/// # let _ = (page, pages); Ok(()) }
/// ```
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `name = "..."` | display name of the runs (default: the function's name) |
/// | `version = "..."` | version recorded with each run |
/// | `retries = N` | extra attempts after a failure; needs `Clone` arguments |
/// | `retry_delay = "500ms"` | wait before the first retry (humantime: `"30s"`, `"1h 30m"`) |
/// | `backoff = 2.0` | factor applied to the delay after each retry |
/// | `jitter = 0.1` | fraction (0..=1) of the delay that is randomized |
/// | `retry_if = path` | `fn(&E) -> bool`: whether an `Err(e)` may be retried |
/// | `timeout = "30s"` | limit of one attempt; needs an error type with `From<flowkit::TimedOut>` |
/// | `cache = inputs` | reuse the output of an earlier run with equal (`Serialize`) inputs |
/// | `cache = path` | same, keyed by `path(&arg1, &arg2, ..)` (its value must be `Serialize`) |
/// | `cache_ttl = "1d"` | how long a cached output stays valid |
/// | `refresh_cache = true` | always run and overwrite the cached output |
/// | `tags = ["db"]` | tags recorded with each run |
/// | `on_completion = hook`, `on_failure = ..`, `on_retry = ..` | a `flowkit::hooks::Hook` (a fn path, `flowkit::notify::slack(url)`, ..) or a list `[a, b]` |
/// | `persist = true` | keep the output in the local store; needs `Serialize` inputs and a `Serialize + DeserializeOwned` output |
/// | `fallible` / `infallible` | override fallibility: by default a return type whose last path segment is `Result` is fallible, and an `Err` fails the run; otherwise only a panic does |
///
/// Methods (`&self`, `self`, ...) and associated functions that mention `Self` are rewritten
/// in place and get no struct: call them as before. Functions taking references, lifetimes
/// or `impl Trait` arguments get no `submit`/`map` (they cannot be spawned).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

/// Makes an `async fn` a flow: like [`macro@task`], and the tasks it calls become its
/// children. Its arguments are recorded as the run's parameters, and the struct beside it
/// has `deployment(name)`, which describes a deployment of the flow (`flowkit::Deployment`),
/// and implements `flowkit::FlowSignature` (its argument and output types).
///
/// `deployment(name)` needs every argument to be `serde::de::DeserializeOwned +
/// schemars::JsonSchema` and the output (`T` of `Result<T, E>`) `serde::Serialize +
/// schemars::JsonSchema`; a flow that is never deployed needs none of it. The flow's doc
/// comment is the deployment's description. Generic flows and flows taking borrowed or
/// `impl Trait` arguments have neither `deployment` nor `FlowSignature`.
///
/// Takes the same options as [`macro@task`].
///
/// ```
/// use flowkit::{flow, task};
///
/// #[task(cache = inputs)]
/// async fn word_count(text: String) -> anyhow::Result<usize> {
///     Ok(text.split_whitespace().count())
/// }
///
/// #[flow(retries = 1, timeout = "2h")]
/// async fn report(texts: Vec<String>) -> anyhow::Result<usize> {
///     let counts = word_count::map(texts).await;
///     counts.into_iter().sum()
/// }
///
/// let nightly = report::deployment("nightly");
/// # let _ = nightly;
/// ```
#[proc_macro_attribute]
pub fn flow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::flow(attr.into(), item.into()).into()
}
