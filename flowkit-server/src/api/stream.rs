//! `GET /api/stream`: server-sent events of run changes, for the live dashboard.
//!
//! Events: `ready` once subscribed; `run` with a [`RunChange`](crate::stream::RunChange) as JSON data for every run an
//! ingested batch changed; `lagged` with `{"missed": N}` when this client fell behind and
//! should refetch what it shows. A keep-alive comment goes out every 15 seconds. The stream
//! ends when the server shuts down.

use crate::AppState;
use crate::error::ErrorBody;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use flowkit_wire::api::stream::Lagged;
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Streams run changes.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "flow-runs",
    responses(
        (status = 200, description = "An endless `text/event-stream` (server-sent events) that ends only when the server shuts down: `event: ready` (data `{}`) once subscribed, then `event: run` with a `RunChange` as JSON data for every run an ingested batch changed, and `event: lagged` with a `Lagged` (`{\"missed\": N}`) when this client fell behind and should refetch; a comment line every 15 s keeps the connection alive", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = BroadcastStream::new(state.changes().subscribe()).map(|item| {
        Ok(match item {
            Ok(change) => Event::default()
                .event("run")
                .json_data(&change)
                .unwrap_or_else(|_| lagged(1)),
            Err(BroadcastStreamRecvError::Lagged(missed)) => lagged(missed),
        })
    });
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let mut shutdown = state.shutdown_signal();
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    Sse::new(ready.chain(changes).take_until(stopped))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// A `lagged` event: this client missed `missed` changes and should refetch what it shows.
fn lagged(missed: u64) -> Event {
    let data = Lagged { missed };
    Event::default()
        .event("lagged")
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("lagged").data("{}"))
}
