//! `GET /api/stream`: server-sent events of run changes, for the live dashboard.
//!
//! Events: `ready` once subscribed; `run` with a [`RunChange`](crate::stream::RunChange) as JSON data for every run an
//! ingested batch changed; `lagged` with `{"missed": N}` when this client fell behind and
//! should refetch what it shows. A keep-alive comment goes out every 15 seconds. The stream
//! ends when the server shuts down.
//!
//! `?kind=flow` (or `task`) keeps the changes of flow runs (task runs) only;
//! `?flow_run_id=ID` the changes of one flow run: the run itself and its task runs; with
//! `&logs=true` their log lines too, as they arrive (`event: log`, a `LogEntry`). Every
//! change is serialized once for all streams ([`crate::stream`]); a stream only picks the
//! shared bytes of those it keeps.
//!
//! Streams are bounded ([`crate::stream_slots`]): beyond `--max-streams` on the server, 503
//! `unavailable` with `Retry-After`; beyond `--max-streams-per-key` for one key, 429
//! `too_many_requests` with `Retry-After`.

use crate::AppState;
use crate::api::extract::{ApiQuery, non_empty, parse_uuid};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::stream::{PublishedChange, RunChange};
use crate::stream_slots::StreamRefusal;
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowkit_wire::api::stream::Lagged;
use flowkit_wire::event::RunKind;
use futures::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa::IntoParams;
use uuid::Uuid;

/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `Retry-After` of a stream refused because a bound is reached.
pub const STREAMS_RETRY_AFTER_SECS: u64 = 5;

/// Which changes a stream carries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `flow`: changes of flow runs only; `task`: of task runs only. Default: both.
    #[param(value_type = Option<RunKind>)]
    pub kind: Option<String>,
    /// Only the changes of this flow run: the run itself and its task runs.
    #[param(value_type = Option<Uuid>)]
    pub flow_run_id: Option<String>,
    /// `true` (with `flow_run_id`): the log lines of that flow run and its task runs too, as
    /// they arrive (`event: log`, a `LogEntry`). Default `false`.
    #[param(value_type = Option<bool>)]
    pub logs: Option<String>,
}

/// The changes a stream keeps.
#[derive(Clone, Copy, Debug, Default)]
struct Filter {
    kind: Option<RunKind>,
    flow_run_id: Option<Uuid>,
    logs: bool,
}

impl Filter {
    fn parse(query: StreamQuery) -> Result<Filter, ApiError> {
        let kind = match non_empty(query.kind).as_deref().map(str::trim) {
            None => None,
            Some("flow") => Some(RunKind::Flow),
            Some("task") => Some(RunKind::Task),
            Some(other) => {
                return Err(ApiError::invalid_parameter(
                    "kind",
                    format!("expected `flow` or `task`, got {other:?}"),
                ));
            }
        };
        let flow_run_id = parse_uuid("flow_run_id", query.flow_run_id)?;
        let logs = match non_empty(query.logs).as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") if flow_run_id.is_some() => true,
            Some("true") => {
                return Err(ApiError::invalid_parameter(
                    "logs",
                    "follows the logs of one flow run: give its `flow_run_id` too",
                ));
            }
            Some(other) => {
                return Err(ApiError::invalid_parameter(
                    "logs",
                    format!("expected `true` or `false`, got {other:?}"),
                ));
            }
        };
        Ok(Filter {
            kind,
            flow_run_id,
            logs,
        })
    }

    fn keeps(&self, change: &RunChange) -> bool {
        self.kind.is_none_or(|kind| change.kind == kind)
            && self
                .flow_run_id
                .is_none_or(|id| change.run_id == id || change.flow_run_id == Some(id))
    }
}

/// Streams run changes.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "flow-runs",
    params(StreamQuery),
    responses(
        (status = 200, description = "An endless `text/event-stream` (server-sent events) that ends only when the server shuts down: `event: ready` (data `{}`) once subscribed, then `event: run` with a `RunChange` as JSON data for every run an ingested batch changed (with `flow_run_id` and `logs=true`, also `event: log` with a `LogEntry` for every log line of that flow run and its task runs, sent before the change of the same batch), and `event: lagged` with a `Lagged` (`{\"missed\": N}`) when this client fell behind and should refetch; a comment line every 15 s keeps the connection alive", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_parameter`: `kind` is not `flow` or `task`, `flow_run_id` is not a UUID, or `logs` is not `true`/`false` or is `true` without `flow_run_id`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 429, description = "`too_many_requests`: this key has `--max-streams-per-key` streams open (each dashboard tab holds one)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "`unavailable`: the server has `--max-streams` streams open", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("api_key" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(query)?;
    let key = caller.key_name.as_deref().unwrap_or("(no key)");
    let slot = state
        .stream_slots()
        .acquire(key)
        .map_err(|refusal| match refusal {
            StreamRefusal::ServerFull { max_total } => ApiError::unavailable(
                format!(
                    "this server has {max_total} live streams open, its bound \
                     (--max-streams): retry later, or on another replica"
                ),
                STREAMS_RETRY_AFTER_SECS,
            ),
            StreamRefusal::KeyFull { max_per_key } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!(
                    "{} has {max_per_key} live streams open, the bound per key \
                     (--max-streams-per-key): close some (each dashboard tab holds one)",
                    match &caller.key_name {
                        Some(name) => format!("API key {name:?}"),
                        None => "this server without keys".to_string(),
                    }
                ),
            )
            .with_retry_after(STREAMS_RETRY_AFTER_SECS),
        })?;
    // Subscribed before the logs are asked for: no line published in between is missed.
    let subscription = state.changes().subscribe();
    let watch = filter
        .flow_run_id
        .filter(|_| filter.logs)
        .map(|id| state.changes().watch_logs(id));
    let changes = BroadcastStream::new(subscription).filter_map(move |item| {
        std::future::ready(match item {
            Ok(published) => kept(&filter, &published),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(lagged(missed)),
        })
    });
    let ready = futures::stream::once(std::future::ready(Bytes::from_static(
        b"event: ready\ndata: {}\n\n",
    )));
    let keep_alive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + KEEP_ALIVE,
        KEEP_ALIVE,
    ))
    .map(|_| Bytes::from_static(b":\n\n"));
    let mut shutdown = state.shutdown_signal();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let body = futures::stream::select(ready.chain(changes), keep_alive)
        .take_until(stopped)
        // The slot is freed when the stream is dropped: the client went away or the server
        // stops.
        .map(move |frame| {
            let _open = (&slot, &watch);
            Ok::<_, Infallible>(frame)
        });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The shared frame of a change this stream keeps.
fn kept(filter: &Filter, published: &PublishedChange) -> Option<Bytes> {
    ((!published.log || filter.logs) && filter.keeps(&published.change))
        .then(|| published.frame.clone())
}

/// A `lagged` event: this client missed `missed` changes and should refetch what it shows.
fn lagged(missed: u64) -> Bytes {
    let data = serde_json::to_string(&Lagged { missed }).unwrap_or_else(|_| "{}".to_string());
    Bytes::from(format!("event: lagged\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let flow = Uuid::now_v7();
        let change = |run_id, kind| RunChange {
            run_id,
            flow_run_id: Some(flow),
            kind,
            name: "x".into(),
            state: None,
        };
        let all = Filter::default();
        let flows = Filter::parse(StreamQuery {
            kind: Some("flow".into()),
            flow_run_id: None,
            logs: None,
        })
        .expect("filter");
        let one = Filter::parse(StreamQuery {
            kind: None,
            flow_run_id: Some(flow.to_string()),
            logs: None,
        })
        .expect("filter");
        let task = change(Uuid::now_v7(), RunKind::Task);
        let other = RunChange {
            flow_run_id: Some(Uuid::now_v7()),
            ..change(Uuid::now_v7(), RunKind::Task)
        };
        assert!(all.keeps(&task) && all.keeps(&other));
        assert!(flows.keeps(&change(flow, RunKind::Flow)) && !flows.keeps(&task));
        assert!(one.keeps(&task) && one.keeps(&change(flow, RunKind::Flow)));
        assert!(!one.keeps(&other));
        assert!(
            Filter::parse(StreamQuery {
                kind: Some("flows".into()),
                flow_run_id: None,
                logs: None,
            })
            .is_err()
        );
    }
}
