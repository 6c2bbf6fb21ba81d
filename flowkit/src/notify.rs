//! Ready-made notification hooks: a JSON [`webhook`] and a [`slack`] incoming webhook.
//!
//! Both are [`Hook`]s, so they go wherever a hook goes:
//!
//! ```no_run
//! use flowkit::task;
//!
//! #[task(retries = 2, on_failure = flowkit::notify::slack("https://hooks.slack.com/services/T000/B000/XXXX"))]
//! async fn load(day: String) -> anyhow::Result<u64> {
//!     Ok(day.len() as u64)
//! }
//! ```
//!
//! A notification can never fail or hang the run: a non-2xx answer or a transport error is
//! retried with exponential backoff, and when every attempt has failed a warning is logged
//! (target `flowkit`) and the run goes on. All attempts together stay within
//! [`MAX_TOTAL_TIME`], well inside [`HOOK_TIMEOUT`](crate::hooks::HOOK_TIMEOUT).
//!
//! Webhook URLs are secrets (a Slack URL is a credential): logs and `Debug` output show only
//! their scheme, host and port, never their path or query; header values are never shown.
//!
//! When events are reported to a server (`FLOWKIT_API_URL`, also read when the notification is
//! sent), messages link to the run's page on its dashboard,
//! `<FLOWKIT_API_URL>/runs/<flow run id, or the run id outside a flow>`
//! ([`flowkit_wire::links::run_page`]).

use crate::hooks::{Hook, HookContext, RunInfo};
use crate::http::{self, Attempt, Backoff};
use flowkit_wire::alerts::{Alert, AlertState};
use futures::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

/// Per-request timeout unless [`Webhook::timeout`] / [`Slack::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries after the first attempt unless [`Webhook::retries`] / [`Slack::retries`] says
/// otherwise.
pub const DEFAULT_RETRIES: u32 = 3;

/// Upper bound on the time one notification takes, all attempts and backoff included; what does
/// not fit is not attempted.
pub const MAX_TOTAL_TIME: Duration = Duration::from_secs(12);

/// Wait before the first retry; it doubles for every further retry, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The name of the environment variable holding the server's URL.
const API_URL_VAR: &str = "FLOWKIT_API_URL";

/// A hook that POSTs a JSON description of the run to `url`.
///
/// The body (`Content-Type: application/json`):
///
/// ```json
/// {"run_id":"0192…","run_kind":"task","name":"download","task_key":"etl::download",
///  "parent_run_id":"0192…","flow_run_id":"0192…","flow_name":"training",
///  "state":{"type":"Failed","message":"connection refused"},"attempt":3,"elapsed_ms":1520,
///  "url":"http://127.0.0.1:4200/runs/0192…"}
/// ```
///
/// `url` is `null` unless `FLOWKIT_API_URL` is set; `message`, `parent_run_id`, `flow_run_id`
/// and `flow_name` are `null` when there is none.
///
/// ```no_run
/// use flowkit::task;
/// use std::time::Duration;
///
/// #[task(on_completion = flowkit::notify::webhook("https://ops.example.com/hooks/flowkit")
///     .header("Authorization", "Bearer s3cr3t")
///     .timeout(Duration::from_secs(2))
///     .retries(5))]
/// async fn publish(report: String) -> anyhow::Result<()> {
///     Ok(())
/// }
/// ```
pub fn webhook(url: impl Into<String>) -> Webhook {
    Webhook {
        target: Target::new(url.into()),
        headers: Vec::new(),
        bad_header: None,
        send: SendOptions::default(),
    }
}

/// A hook that posts a message to a Slack incoming webhook (`https://hooks.slack.com/services/…`).
///
/// The message names the flow, the task, the state and its message (the error of a failed
/// run), the attempt and the elapsed time, and links to the run when `FLOWKIT_API_URL` is set.
/// It is sent as `{"text": …, "blocks": […]}`: `text` is the whole message, for notifications
/// and clients that do not show blocks.
///
/// ```no_run
/// use flowkit::task;
///
/// #[task(on_failure = flowkit::notify::slack("https://hooks.slack.com/services/T000/B000/XXXX"))]
/// async fn download(url: String) -> anyhow::Result<Vec<u8>> {
///     Ok(url.into_bytes())
/// }
/// ```
pub fn slack(url: impl Into<String>) -> Slack {
    Slack {
        target: Target::new(url.into()),
        send: SendOptions::default(),
    }
}

/// A generic JSON webhook notification; made by [`webhook`].
#[derive(Clone)]
pub struct Webhook {
    target: Target,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// A header given to [`Webhook::header`] that is not valid HTTP: nothing is sent, since the
    /// receiver would reject the request anyway (it is usually the authentication).
    bad_header: Option<String>,
    send: SendOptions,
}

impl Webhook {
    /// Gives up on one request after `timeout` (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Webhook {
        self.send.timeout = timeout;
        self
    }

    /// Retries a failed request up to `retries` times (default [`DEFAULT_RETRIES`]), waiting
    /// 250 ms, 500 ms, 1 s, … (at most 4 s) in between, within [`MAX_TOTAL_TIME`] overall.
    ///
    /// Transport errors, timeouts, `408`, `425`, `429` and `5xx` answers are retried; other
    /// answers (a `404` for a deleted webhook, a `400` for a rejected body) would not change.
    pub fn retries(mut self, retries: u32) -> Webhook {
        self.send.retries = retries;
        self
    }

    /// Adds a header to every request, e.g. `.header("Authorization", "Bearer …")`.
    ///
    /// Values are treated as secrets: they are never logged. An invalid name or value is
    /// reported when the hook is built and again when it runs, and nothing is sent.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Webhook {
        let name = name.as_ref();
        let parsed = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        );
        match parsed {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                self.headers.push((name, value));
            }
            (name_ok, _) => {
                let why = if name_ok.is_err() {
                    format!("{name:?} is not a valid header name")
                } else {
                    format!("the value of header {name:?} is not a valid header value")
                };
                tracing::warn!(target: "flowkit", "webhook notification: {why}; it will not be sent");
                self.bad_header.get_or_insert(why);
            }
        }
        self
    }

    async fn notify(&self, ctx: &HookContext) {
        if let Some(why) = &self.bad_header {
            tracing::warn!(
                target: "flowkit",
                run = %ctx.run.name,
                destination = %self.target.redacted,
                "webhook notification not sent: {why}"
            );
            return;
        }
        let body = match serde_json::to_vec(&webhook_body(ctx, api_url().as_deref())) {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!(target: "flowkit", run = %ctx.run.name, "webhook notification not sent: {err}");
                return;
            }
        };
        deliver(
            "webhook",
            &self.target,
            &self.headers,
            body,
            &self.send,
            &ctx.run,
        )
        .await;
    }

    #[cfg(test)]
    fn total_time(mut self, budget: Duration) -> Webhook {
        self.send.budget = budget;
        self
    }
}

impl Hook for Webhook {
    fn call<'a>(&'a self, ctx: &'a HookContext) -> BoxFuture<'a, ()> {
        Box::pin(self.notify(ctx))
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.target.redacted)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("timeout", &self.send.timeout)
            .field("retries", &self.send.retries)
            .finish()
    }
}

/// A Slack incoming-webhook notification; made by [`slack`].
#[derive(Clone)]
pub struct Slack {
    target: Target,
    send: SendOptions,
}

impl Slack {
    /// Gives up on one request after `timeout` (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Slack {
        self.send.timeout = timeout;
        self
    }

    /// Retries a failed request up to `retries` times (default [`DEFAULT_RETRIES`]); see
    /// [`Webhook::retries`].
    pub fn retries(mut self, retries: u32) -> Slack {
        self.send.retries = retries;
        self
    }

    async fn notify(&self, ctx: &HookContext) {
        let message = slack_message(ctx, api_url().as_deref());
        let body = match serde_json::to_vec(&message) {
            Ok(body) => body,
            Err(err) => {
                tracing::warn!(target: "flowkit", run = %ctx.run.name, "Slack notification not sent: {err}");
                return;
            }
        };
        deliver("Slack", &self.target, &[], body, &self.send, &ctx.run).await;
    }
}

impl Hook for Slack {
    fn call<'a>(&'a self, ctx: &'a HookContext) -> BoxFuture<'a, ()> {
        Box::pin(self.notify(ctx))
    }
}

impl fmt::Debug for Slack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slack")
            .field("url", &self.target.redacted)
            .field("timeout", &self.send.timeout)
            .field("retries", &self.send.retries)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery.

/// Where a notification goes, parsed once; `redacted` is all of it that may be shown.
#[derive(Clone)]
struct Target {
    url: Result<Url, String>,
    redacted: String,
}

impl Target {
    fn new(url: String) -> Target {
        // Parse errors never quote the input, so they are safe to log.
        let url = Url::parse(url.trim())
            .map_err(|e| format!("the URL is invalid ({e})"))
            .and_then(|url| match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!("the URL's scheme is {other:?}, not http or https")),
            });
        let redacted = match &url {
            Ok(url) => redact(url),
            Err(_) => "<invalid URL>".to_string(),
        };
        Target { url, redacted }
    }
}

/// `scheme://host[:port]`: the only part of a webhook URL that is not a secret.
fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[derive(Clone, Copy, Debug)]
struct SendOptions {
    timeout: Duration,
    retries: u32,
    budget: Duration,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        SendOptions {
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            budget: MAX_TOTAL_TIME,
        }
    }
}

/// 250 ms doubling, at most [`MAX_BACKOFF`], without jitter (a notification is one request, not
/// a crowd to spread out).
fn backoff() -> Backoff {
    Backoff::doubling(FIRST_BACKOFF, MAX_BACKOFF, 0.0)
}

/// Whether an answer with this status may be different next time.
fn worth_retrying(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
        )
}

/// One client for every notification of the process (connection pools, TLS configuration).
/// Each request carries its own timeout; the client's is only the outer bound.
fn client() -> Result<&'static reqwest::Client, &'static str> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| http::client(MAX_TOTAL_TIME, true))
        .as_ref()
        .map_err(String::as_str)
}

/// One POST, cut off after `timeout` by the client's own timer.
async fn attempt(
    client: &reqwest::Client,
    url: &Url,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
    timeout: Duration,
) -> Attempt {
    let mut request = client
        .post(url.clone())
        .timeout(timeout)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.clone(), value.clone());
    }
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Attempt::Done);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Slack explains itself in the body ("invalid_payload", "no_service", ...).
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.trim().chars().take(200).collect();
        let why = if snippet.is_empty() {
            format!("answered {status}")
        } else {
            format!("answered {status}: {snippet}")
        };
        Ok::<_, reqwest::Error>(if worth_retrying(status) {
            Attempt::Retry(why, retry_after)
        } else {
            Attempt::GiveUp(why)
        })
    };
    match exchange.await {
        Ok(outcome) => outcome,
        Err(err) if err.is_timeout() => {
            Attempt::Retry(format!("no answer within {timeout:?}"), None)
        }
        Err(err) => Attempt::Retry(http::describe(&err), None),
    }
}

/// Sends `body` with retries; logs, never fails.
async fn deliver(
    what: &str,
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
    body: Vec<u8>,
    send: &SendOptions,
    run: &RunInfo,
) {
    let destination = target.redacted.as_str();
    let url = match &target.url {
        Ok(url) => url,
        Err(why) => {
            tracing::warn!(target: "flowkit", run = %run.name, "{what} notification not sent: {why}");
            return;
        }
    };
    let client = match client() {
        Ok(client) => client,
        Err(why) => {
            tracing::warn!(target: "flowkit", run = %run.name, destination, "{what} notification not sent: {why}");
            return;
        }
    };
    let outcome = http::with_retries(
        send.retries,
        backoff(),
        send.budget,
        |left| attempt(client, url, headers, &body, send.timeout.min(left)),
        |why, wait, attempts| {
            tracing::debug!(target: "flowkit", run = %run.name, destination, attempts, "{what} notification failed ({why}); retrying in {wait:?}");
        },
    )
    .await;
    let attempts = outcome.attempts;
    match outcome.failure {
        None => {
            tracing::debug!(target: "flowkit", run = %run.name, destination, attempts, "{what} notification delivered");
        }
        Some(last_error) => tracing::warn!(
            target: "flowkit",
            run = %run.name,
            run_id = %run.id,
            destination,
            attempts,
            "{what} notification not delivered: {last_error}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// The server the run links point to: the one this process reports to
/// ([`crate::config::Config::api_url`]), else `FLOWKIT_API_URL` read now (a process may set it
/// after flowkit read its configuration).
fn api_url() -> Option<String> {
    crate::config::get()
        .api_url
        .clone()
        .or_else(|| std::env::var(API_URL_VAR).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The run's page on the server's dashboard: the flow run's when there is one.
fn run_url(run: &RunInfo, api: Option<&str>) -> Option<String> {
    let id = run.flow_run_id.unwrap_or(run.id);
    api.map(|api| flowkit_wire::links::run_page(api, id))
}

/// The run and its state as the shared [`Alert`], which writes both messages (the server's
/// alert rules send the same ones).
fn alert_of(ctx: &HookContext, api: Option<&str>) -> Alert {
    let run = &ctx.run;
    let mut alert = Alert::run(run.id, run.kind, run.name.as_ref());
    alert.task_key = run.task_key.to_string();
    alert.parent_run_id = run.parent_run_id;
    alert.flow_run_id = run.flow_run_id;
    alert.flow_name = run.flow_name.as_deref().map(str::to_string);
    alert.state = Some(AlertState {
        kind: ctx.state.kind,
        message: ctx.state.message.clone(),
    });
    alert.attempt = run.attempt;
    alert.elapsed_ms = u64::try_from(ctx.elapsed.as_millis()).unwrap_or(u64::MAX);
    alert.url = run_url(run, api);
    alert
}

fn webhook_body(ctx: &HookContext, api: Option<&str>) -> serde_json::Value {
    alert_of(ctx, api).webhook_json()
}

fn slack_message(ctx: &HookContext, api: Option<&str>) -> serde_json::Value {
    alert_of(ctx, api).slack_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RunKind;
    use crate::state::{State, StateType};
    use axum::body::Bytes;
    use axum::extract::State as Extract;
    use axum::http::HeaderMap;
    use flowkit_wire::alerts::MAX_MESSAGE_CHARS;
    use std::borrow::Cow;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use uuid::Uuid;

    fn ctx(kind: RunKind, state: State) -> HookContext {
        let flow_run_id = Uuid::now_v7();
        HookContext {
            run: RunInfo {
                id: if kind == RunKind::Flow {
                    flow_run_id
                } else {
                    Uuid::now_v7()
                },
                kind,
                name: Cow::Borrowed("download"),
                task_key: "etl::download",
                attempt: 3,
                parent_run_id: Some(flow_run_id),
                flow_run_id: Some(flow_run_id),
                flow_name: Some(Cow::Borrowed("training")),
            },
            state,
            elapsed: Duration::from_millis(1520),
        }
    }

    fn failed() -> HookContext {
        ctx(
            RunKind::Task,
            State {
                kind: StateType::Failed,
                message: Some("connection refused <by peer>".to_string()),
            },
        )
    }

    #[derive(Default)]
    struct Recorder {
        requests: Mutex<Vec<(HeaderMap, Bytes)>>,
        answers: Mutex<VecDeque<u16>>,
    }

    impl Recorder {
        fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
            self.requests.lock().unwrap().clone()
        }
        fn json(&self, i: usize) -> serde_json::Value {
            serde_json::from_slice(&self.requests()[i].1).unwrap()
        }
    }

    async fn record(
        Extract(rec): Extract<Arc<Recorder>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        rec.requests.lock().unwrap().push((headers, body));
        let code = rec.answers.lock().unwrap().pop_front().unwrap_or(200);
        StatusCode::from_u16(code).unwrap()
    }

    /// A server on 127.0.0.1 answering with `answers` in turn (then 200); returns a URL with a
    /// secret path and query.
    async fn server(answers: &[u16]) -> (String, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        rec.answers.lock().unwrap().extend(answers);
        let app = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&rec));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            format!("http://{addr}/services/T0/B0/s3cr3t-path?token=s3cr3t-query"),
            rec,
        )
    }

    /// Captures what `flowkit` logs while `f` runs (on this thread: a current-thread runtime).
    async fn logs_of(f: impl std::future::Future<Output = ()>) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f.await;
        drop(guard);
        String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
    }

    #[test]
    fn backoff_doubles_up_to_a_bound() {
        let backoff = |n| backoff().after(n);
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        let worst: Duration = (1..=DEFAULT_RETRIES).map(backoff).sum::<Duration>()
            + DEFAULT_TIMEOUT * (DEFAULT_RETRIES + 1);
        // Even the default worst case is cut off by the overall bound, which fits the hook's.
        assert!(worst > MAX_TOTAL_TIME);
        assert!(MAX_TOTAL_TIME + Duration::from_secs(2) < crate::hooks::HOOK_TIMEOUT);
    }

    #[test]
    fn urls_are_redacted_to_scheme_and_host() {
        let t = Target::new("https://hooks.slack.com/services/T0/B0/XYZ?x=1".into());
        assert_eq!(t.redacted, "https://hooks.slack.com");
        let t = Target::new("http://user:pw@127.0.0.1:8080/a/b?c".into());
        assert_eq!(t.redacted, "http://127.0.0.1:8080");
        assert!(
            Target::new("hooks.slack.com/services/x".into())
                .url
                .is_err()
        );
        assert!(Target::new("ftp://example.com/x".into()).url.is_err());

        let hook = webhook("https://example.com/secret?key=k").header("Authorization", "Bearer k");
        let shown = format!(
            "{hook:?} {:?}",
            slack("https://hooks.slack.com/services/SECRET")
        );
        assert!(
            !shown.contains("secret") && !shown.contains("SECRET") && !shown.contains("Bearer")
        );
    }

    #[test]
    fn webhook_body_describes_the_run() {
        let ctx = failed();
        let body = webhook_body(&ctx, Some("http://srv:4200"));
        let flow = ctx.run.flow_run_id.unwrap();
        assert_eq!(body["run_id"], ctx.run.id.to_string());
        assert_eq!(body["run_kind"], "task");
        assert_eq!(body["name"], "download");
        assert_eq!(body["task_key"], "etl::download");
        assert_eq!(body["flow_run_id"], flow.to_string());
        assert_eq!(body["flow_name"], "training");
        assert_eq!(body["state"]["type"], "Failed");
        assert_eq!(body["state"]["message"], "connection refused <by peer>");
        assert_eq!(body["attempt"], 3);
        assert_eq!(body["elapsed_ms"], 1520);
        // The dashboard's page of the flow run, as the server routes it.
        assert_eq!(
            body["url"],
            flowkit_wire::links::run_page("http://srv:4200", flow)
        );

        let body = webhook_body(&ctx, None);
        assert!(body["url"].is_null());
    }

    #[test]
    fn slack_message_names_flow_task_state_and_error() {
        let ctx = failed();
        let msg = slack_message(&ctx, Some("http://srv:4200"));
        let text = msg["text"].as_str().unwrap();
        assert!(
            text.contains(":x: Task `download` in flow `training`: *Failed*"),
            "{text}"
        );
        assert!(
            text.contains(">connection refused &lt;by peer&gt;"),
            "{text}"
        );
        assert!(text.contains("`etl::download`"), "{text}");
        assert!(text.contains("attempt 3 · 1s 520ms"), "{text}");
        let page = flowkit_wire::links::run_page("http://srv:4200", ctx.run.flow_run_id.unwrap());
        let link = format!("<{page}|view run>");
        assert!(text.contains(&link), "{text}");
        assert_eq!(msg["blocks"][0]["type"], "section");
        assert!(
            msg["blocks"][1]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .contains(&link)
        );

        let done = ctx_flow_completed();
        let text = slack_message(&done, None)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.starts_with(":white_check_mark: Flow `download`: *Completed*"),
            "{text}"
        );
        assert!(!text.contains("view run") && !text.contains('>'), "{text}");
    }

    fn ctx_flow_completed() -> HookContext {
        ctx(RunKind::Flow, State::new(StateType::Completed))
    }

    #[test]
    fn long_error_messages_are_cut() {
        let ctx = ctx(
            RunKind::Task,
            State {
                kind: StateType::Failed,
                message: Some("é".repeat(10_000)),
            },
        );
        let main = slack_message(&ctx, None)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(main.chars().count() < MAX_MESSAGE_CHARS + 200);
        assert!(main.ends_with('…'));
    }

    #[tokio::test]
    async fn webhook_posts_the_run_as_json_with_headers() {
        let (url, rec) = server(&[]).await;
        let ctx = failed();
        webhook(&url)
            .header("Authorization", "Bearer t0ken")
            .header("X-Team", "data")
            .call(&ctx)
            .await;
        let requests = rec.requests();
        assert_eq!(requests.len(), 1);
        let (headers, _) = &requests[0];
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["authorization"], "Bearer t0ken");
        assert_eq!(headers["x-team"], "data");
        let body = rec.json(0);
        assert_eq!(body["run_id"], ctx.run.id.to_string());
        assert_eq!(body["name"], "download");
        assert_eq!(body["task_key"], "etl::download");
        assert_eq!(body["flow_name"], "training");
        assert_eq!(body["state"]["type"], "Failed");
        assert_eq!(body["state"]["message"], "connection refused <by peer>");
        assert_eq!(body["attempt"], 3);
        assert_eq!(body["elapsed_ms"], 1520);
    }

    #[tokio::test]
    async fn slack_posts_a_message_naming_flow_task_state_and_error() {
        let (url, rec) = server(&[]).await;
        slack(&url).call(&failed()).await;
        assert_eq!(rec.requests().len(), 1);
        assert_eq!(rec.requests()[0].0["content-type"], "application/json");
        let text = rec.json(0)["text"].as_str().unwrap().to_string();
        for part in ["download", "training", "Failed", "connection refused"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let (url, rec) = server(&[500, 500]).await;
        let logs = logs_of(slack(&url).retries(3).call(&failed())).await;
        assert_eq!(rec.requests().len(), 3);
        assert!(!logs.contains("WARN"), "{logs}");
    }

    #[tokio::test]
    async fn retries_stop_at_the_configured_count_and_warn_without_secrets() {
        let (url, rec) = server(&[503, 503, 503, 503, 503]).await;
        let logs = logs_of(
            webhook(&url)
                .retries(2)
                .header("Authorization", "Bearer t0ken")
                .call(&failed()),
        )
        .await;
        assert_eq!(rec.requests().len(), 3);
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("503"), "{logs}");
        assert!(logs.contains("http://127.0.0.1:"), "{logs}");
        assert!(
            !logs.contains("s3cr3t") && !logs.contains("t0ken"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (url, rec) = server(&[404]).await;
        webhook(&url).retries(3).call(&failed()).await;
        assert_eq!(rec.requests().len(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_url_finishes_within_the_bound() {
        // Nothing listens on a port we just bound and released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/services/s3cr3t");
        let start = std::time::Instant::now();
        let logs = logs_of(async {
            slack(&url).call(&failed()).await;
            webhook(&url).retries(1).call(&failed()).await;
        })
        .await;
        assert!(
            start.elapsed() < crate::hooks::HOOK_TIMEOUT,
            "{:?}",
            start.elapsed()
        );
        assert!(logs.contains("cannot connect"), "{logs}");
        assert!(!logs.contains("s3cr3t"), "{logs}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_cut_off_by_the_timeouts() {
        // Accepts connections (the kernel's backlog) but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());

        let start = std::time::Instant::now();
        let logs = logs_of(
            webhook(&url)
                .timeout(Duration::from_millis(200))
                .retries(1)
                .call(&failed()),
        )
        .await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(logs.contains("no answer within"), "{logs}");

        let start = std::time::Instant::now();
        webhook(&url)
            .timeout(Duration::from_secs(60))
            .retries(100)
            .total_time(Duration::from_millis(600))
            .call(&failed())
            .await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn invalid_configuration_sends_nothing_and_does_not_panic() {
        let (url, rec) = server(&[]).await;
        webhook(&url)
            .header("Bad Header", "x")
            .call(&failed())
            .await;
        webhook(&url)
            .header("X-Ok", "line\nbreak")
            .call(&failed())
            .await;
        slack("not a url").call(&failed()).await;
        assert_eq!(rec.requests().len(), 0);
    }

    #[test]
    fn notifications_are_hooks_and_their_futures_are_send() {
        fn is_hook<H: Hook>(_: &H) {}
        fn is_send<T: Send>(_: &T) {}
        let ctx = failed();
        let w = webhook("http://127.0.0.1:9/");
        let s = slack("http://127.0.0.1:9/");
        is_hook(&w);
        is_hook(&s);
        is_send(&w.notify(&ctx));
        is_send(&s.notify(&ctx));
    }
}
