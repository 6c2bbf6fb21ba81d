//! The accept loop: every client connection of the server, with the timeouts and the bound
//! that keep slow, stalled or idle clients from holding it.
//!
//! Each connection is served by hyper's HTTP/1.1 (the only protocol the server spoke before
//! too) in a task of its own, watched by a tracker that knows whether a request is in
//! flight:
//!
//! - **header timeout** (default 10 s): a connection that has not sent a complete request head
//!   (request line and headers) this long after it opened, or after the first byte of its next
//!   request, is closed. A slowloris client that trickles its headers gets no more than this;
//! - **idle timeout** (default 60 s): a keep-alive connection with no request in flight and no
//!   byte of a next one is closed after this long;
//! - **body timeout** (default 30 s): while a handler reads a request body, a body that makes no
//!   progress (not one byte) for this long has its connection closed, without an answer (the
//!   client is not listening either); what was buffered of it is freed with the request. It
//!   bounds each pause, not the whole upload, so a slow but live link still uploads a large
//!   batch;
//! - **connection cap** (default 1024): at the cap the server accepts nothing more; new
//!   connections wait in the kernel's listen backlog (and are refused by the kernel once that
//!   is full) until an open one closes. The connections already served are untouched.
//!
//! A request in flight is never cut by these timeouts: once its head has arrived the
//! connection is busy until its response has been handed over in full, however long that
//! takes. That is what live streams (`/api/stream`), `?wait=` on results, `Prefer: wait` on
//! triggers and workers' claim long-polls need; they are bounded by their own caps instead
//! ([`MAX_WAITING_CLAIMS`](crate::wake::MAX_WAITING_CLAIMS),
//! [`MAX_WAITING_RESULTS`](crate::wake::MAX_WAITING_RESULTS), the stream channel's
//! capacity) and count against the connection cap like any connection.
//!
//! At shutdown the server stops accepting; a connection with no request in flight is closed
//! at once (after at most [`DRAIN_LINGER`], the time hyper gets to flush what it still holds of
//! a last response), and a busy one finishes its response, then closes.
//!
//! Request bodies are never buffered here: they stream to the handlers, which bound them
//! (`--max-body`, axum's `DefaultBodyLimit`) and never reserve memory from an untrusted
//! `Content-Length`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// Default of `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--body-timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest `--max-connections` accepted.
pub const MAX_CONNECTIONS_BOUND: usize = 1_000_000;
/// At shutdown, how long a connection with no request in flight may stay open (for hyper to
/// flush the end of its last response) before it is closed anyway.
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);
/// After an accept that failed for lack of resources (file descriptors), how long the loop
/// waits before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The timeouts and the bound of client connections; see the [module](self) documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time to receive a complete request head, from the connection's start or the
    /// first byte of its next request.
    pub header_timeout: Duration,
    /// Longest time a connection stays open with no request in flight.
    pub idle_timeout: Duration,
    /// Longest pause in a request body while a handler reads it.
    pub body_timeout: Duration,
    /// Most connections open at once; more wait in the kernel's listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` turns true (or its sender goes away); then
/// stops accepting and returns once every connection has closed (see the module's
/// documentation for how they close). Dropping the future closes every connection at once.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    // Dropping the set aborts every connection task: what a shutdown past its grace does.
    let mut connections = JoinSet::new();
    let mut stopping = shutdown.clone();
    let cap = limits.max_connections.max(1);
    loop {
        if connections.len() >= cap {
            // At the cap: accept nothing until a connection closes.
            tokio::select! {
                _ = connections.join_next() => continue,
                () = stopped(&mut stopping) => break,
            }
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, router.clone(), limits, shutdown.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            // Reaps closed connections, so `len` counts the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stopping) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// An accept that failed: a connection reset before it was accepted is skipped; anything else
/// (out of file descriptors, above all) is logged and the loop waits a little, so open
/// connections can close, instead of spinning.
async fn accept_failed(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %err, "cannot accept a connection; retrying shortly");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Serves one connection until the client closes it, a timeout closes it, or the shutdown
/// does.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small answers (health, claims) go out at once rather than after Nagle's delay.
    let _ = stream.set_nodelay(true);
    let tracker = Arc::new(Tracker::new());
    let io = TokioIo::new(Watched {
        stream,
        tracker: tracker.clone(),
    });
    let service = {
        let tracker = tracker.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::start(tracker.clone());
            let router = router.clone();
            let tracker = tracker.clone();
            async move {
                let request = request.map(|body| {
                    Body::new(TimedBody {
                        body,
                        timeout: limits.body_timeout,
                        stall: None,
                        stalled: false,
                        tracker,
                    })
                });
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Finishing {
                        body,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut drain_started: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            why = tracker.expired(&limits, drain_started) => {
                tracing::debug!(reason = why, "closing a connection");
                return;
            }
            () = stopped(&mut shutdown), if drain_started.is_none() => {
                drain_started = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Where a connection stands, as far as its timeouts are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head since this instant (the connection's start, or the first
    /// byte of the next request).
    Head(Instant),
    /// No request in flight and no byte of a next one since this instant.
    Idle(Instant),
    /// A request is in flight: its head arrived, its response is not handed over in full.
    Busy,
    /// The request body in flight stalled past the body timeout.
    Stalled,
}

/// The phase of one connection, changed by its reads, its requests and its body, and watched
/// by [`Tracker::expired`].
#[derive(Debug)]
struct Tracker {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, next: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let new = next(*phase);
        if new != *phase {
            *phase = new;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: on an idle connection, a next request has begun.
    fn bytes_arrived(&self) {
        self.update(|phase| match phase {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Stalled => Phase::Stalled,
            _ => Phase::Busy,
        });
    }

    fn request_done(&self) {
        self.update(|phase| match phase {
            Phase::Busy => Phase::Idle(Instant::now()),
            other => other,
        });
    }

    fn body_stalled(&self) {
        self.update(|_| Phase::Stalled);
    }

    /// Resolves when the connection should be closed, with the reason: a head or a body too
    /// slow, an idle connection past the idle timeout, or (once `drain_started`) a connection
    /// with nothing in flight. Never while a request is in flight with its body flowing.
    async fn expired(
        &self,
        limits: &ConnectionLimits,
        drain_started: Option<Instant>,
    ) -> &'static str {
        loop {
            // Made before reading the phase: a change after the read leaves a permit.
            let changed = self.changed.notified();
            let (since, timeout, why) = match self.phase() {
                Phase::Busy => {
                    changed.await;
                    continue;
                }
                Phase::Stalled => return "the request body stalled past the body timeout",
                Phase::Head(since) => (
                    since,
                    limits.header_timeout,
                    "no complete request head within the header timeout",
                ),
                Phase::Idle(since) => (since, limits.idle_timeout, "idle past the idle timeout"),
            };
            let mut deadline = since + timeout;
            if let Some(drain) = drain_started {
                deadline = deadline.min(since.max(drain) + DRAIN_LINGER);
            }
            if Instant::now() >= deadline {
                return if drain_started.is_some() {
                    "nothing in flight at shutdown"
                } else {
                    why
                };
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A request in flight, from its head to the end of its response: the connection is busy
/// until it is dropped.
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn start(tracker: Arc<Tracker>) -> InFlight {
        tracker.request_started();
        InFlight(tracker)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A response body that keeps its request in flight until hyper drops it (sent in full, or
/// the connection closed).
struct Finishing {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that watches its pauses: one longer than `timeout` marks the connection
/// stalled (which closes it) and the body never yields again.
struct TimedBody {
    body: Incoming,
    timeout: Duration,
    /// Armed the first time the body has nothing to give; pushed back by every frame.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    tracker: Arc<Tracker>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.stalled {
            // The connection is being closed; the handler waits for nothing.
            return Poll::Pending;
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(stall) = &mut this.stall {
                    stall.as_mut().reset(Instant::now() + this.timeout);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.stalled = true;
                    this.tracker.body_stalled();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's socket, telling the tracker when bytes arrive.
struct Watched {
    stream: TcpStream,
    tracker: Arc<Tracker>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.tracker.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
