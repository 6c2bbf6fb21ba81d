//! `FLOWKIT_API_URL`: every event POSTed to the flowkit server, in batches, from a background
//! thread; spooled to disk while the server cannot take them.
//!
//! # How events travel
//!
//! [`ReportSink::on_event`] runs on the sink thread and only pushes a copy of the event onto a
//! vector (or, while the sender is far behind, encodes it into the compact backlog described
//! below). A dedicated sender thread (a current-thread tokio runtime and one HTTP
//! client) takes the events as soon as [`ReportConfig::batch_size`] are waiting, or every
//! [`ReportConfig::batch_interval`] otherwise, serializes them and POSTs them as a JSON array
//! of [`Event`] to `{api_url}/api/v1/events`, with `Authorization: Bearer <FLOWKIT_API_KEY>` when
//! a key is set. Under load a POST carries up to [`ReportConfig::max_batch_size`] elements.
//!
//! To a server whose `GET /api/v1/health` lists the `run_record` event kind, the state events of
//! a run taken in together (a task that went `Pending → Running → Completed` within the batch
//! window) travel as one run record ([`flowkit_wire::event`]): about half the bytes to
//! serialize, send, spool and parse, and the same rows on the server. An older server gets
//! single events. Flow parameters and log fields nested deeper than
//! [`MAX_VALUE_DEPTH`](flowkit_wire::api::ingest::MAX_VALUE_DEPTH) levels are cut at that depth
//! (the server would reject the event), counted in [`ReportStats::capped`] and said once.
//!
//! | server answer | what the reporter does |
//! |---|---|
//! | `2xx` `{"accepted","duplicates","rejected":[…]}` | done; rejected events are counted and the first reason is logged |
//! | `413` | splits the batch in halves and sends them again (a single event is dropped and counted) |
//! | `400`, `422` | logs the server's message once, drops the batch (it can never succeed) and counts it |
//! | `401`, `403` | logs once that `FLOWKIT_API_KEY` is missing or lacks the `report` scope; keeps the events and retries with backoff |
//! | `5xx`, other, no connection | keeps the events and retries with exponential backoff |
//!
//! # When events come faster than the sender serializes them
//!
//! A task run emits its events faster (around a million a second in a tight loop) than the
//! sender thread serializes them (around half a million a second): a long loop of trivial
//! tasks leaves a backlog with the sink thread. Nothing waits for it, and nothing is dropped
//! below the bound given next: past [`COMPACT_AFTER`] events waiting, the sink thread encodes further ones into a compact
//! binary form (about 20–30 bytes per event instead of the 200–400 of a whole event, no heap
//! allocation per event, written into chunks of 256 KiB), until the sender has caught up. The
//! sender takes that backlog in a memory's worth at a time, oldest first, decodes it (exactly:
//! the events it gets back are the ones handed over) and serializes, sends or spools it as any
//! other. A backlog of a million events takes about 25 MB.
//!
//! The compact backlog is bounded by [`ReportConfig::backlog_bytes`] (256 MiB by default,
//! some ten million events; [`ReportConfig::backlog_events`] can bound it by events too);
//! past the bound newer events are dropped, counted, logged and reported to the server like
//! the spool's drops below. [`ReportStats::compacted`] counts the events that went through
//! the compact form.
//!
//! # When the server is down
//!
//! Events wait in memory up to [`ReportConfig::memory_events`]; past that the oldest are
//! written to the spool, `<FLOWKIT_HOME>/spool/`: one LZ4-compressed JSON-lines file per chunk
//! (events take about a quarter of their JSON size there; [`spooled_lines`] reads them back),
//! written to a temporary name, synced and renamed, so a crash never leaves half a file to
//! replay.
//! Batches are always sent oldest first, spooled or not. The same happens when events come
//! faster than the server takes them: nothing is dropped while the disk has room. The spool is
//! bounded by [`ReportConfig::spool_max_bytes`] (1 GiB by default, `FLOWKIT_SPOOL_MAX_BYTES`;
//! [`ReportConfig::spool_max_events`] can bound it by events too); past the bound
//! events are dropped and counted, the count is logged, and once the server answers again
//! it is POSTed to `{api_url}/api/v1/reporter-drops` as `{"dropped": N, "worker": "host:pid"}`
//! (events the bus dropped because its queue was full are included: the server never sees
//! those either).
//!
//! Only one process at a time sends spooled files: the one holding an exclusive lock on
//! `spool/.lock` (taken at start, retried every few seconds). Every process may add files.
//! The lock dies with its process, so the next reporter to start in the same
//! `FLOWKIT_HOME` (or a running one, on its next try) delivers what an earlier process left.
//! Spooled files are sent to whatever server the lock holder reports to: processes sharing a
//! `FLOWKIT_HOME` should share a server.
//!
//! # At the end of a flow, and of the process
//!
//! A top-level flow never waits for the reporter: when its final state reaches the sink, the
//! sender is woken to POST what it holds at once (rather than at the end of the batch
//! interval), in the background — unless it started a request less than a batch interval ago:
//! a service ending flows back to back sends full batches and a partial one per interval, not
//! a request per flow. One request is in flight at a time.
//!
//! Waiting for delivery is [`Sink::deliver`], which [`crate::flush`], the guard of
//! [`crate::init`] and the exit flush call (see [`crate::init`]): the reporter answers once everything it received is delivered, or at [`ReportConfig::flush_timeout`]
//! (`FLOWKIT_REPORT_FLUSH_TIMEOUT`, 3 s) — at once if the server cannot be reached (connection
//! refused, `401`/`403`) — after moving what is still undelivered to the spool, with one line
//! on stderr saying how many events are spooled, where, and for which server.
//! [`ReportSink::flush_report`] does the same on the calling thread.
//!
//! Dropping a `ReportSink` does the same and stops its thread. The process-wide sink is never
//! dropped (the sink thread is not joined when `main` returns): the guard, [`crate::flush`] or
//! the exit flush is what makes its events durable.
//!
//! While nothing is waiting to be sent, the sender thread sleeps until the sink wakes it (or,
//! every few seconds, to look at the spool): an idle process does not poll.

mod compact;
mod encode;
mod sender;
mod spool;

pub use spool::spooled_lines;

use crate::event::{Event, EventBody, RunKind};
use crate::sink::{Delivery, Sink};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events a POST carries when the reporter is not busy: a batch is sent as soon as this many
/// are waiting.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Most events one POST carries under load.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 5_000;
/// How long a partial batch waits before it is sent anyway.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Events kept in memory, serialized, before the oldest are spooled to disk.
pub const DEFAULT_MEMORY_EVENTS: usize = 50_000;
/// Most events waiting to be serialized (handed over by the sink thread faster than the sender
/// thread serializes and spools them): no bound of its own, [`DEFAULT_BACKLOG_BYTES`] is the
/// one that counts.
pub const DEFAULT_BACKLOG_EVENTS: usize = usize::MAX;
/// Most bytes of the compact backlog (events waiting to be serialized, encoded in about 20–30
/// bytes each: some ten million events) before newer events are dropped and counted: 256 MiB.
pub const DEFAULT_BACKLOG_BYTES: usize = 256 * 1024 * 1024;
/// Events waiting to be serialized that the sink thread keeps whole (about 200–400 bytes
/// each); past this many, further ones are encoded into the compact backlog until the sender
/// thread has caught up.
pub const COMPACT_AFTER: usize = 16_384;
/// Most events the spool holds: no bound of its own, the byte bound is the one that counts.
pub const DEFAULT_SPOOL_MAX_EVENTS: u64 = u64::MAX;
/// Most bytes the spool holds: 1 GiB (`FLOWKIT_SPOOL_MAX_BYTES`).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// How long a flush waits for delivery before it spools what is left.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// An API key: sent as a bearer token, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, to put in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> ApiKey {
        ApiKey(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> ApiKey {
        ApiKey(key.to_string())
    }
}

/// Where the reporter's notices (server unreachable, spool full, …) go: stderr unless
/// [`ReportConfig::on_notice`] says otherwise.
#[derive(Clone, Default)]
struct Notices(Option<Arc<NoticeFn>>);

type NoticeFn = dyn Fn(&str) + Send + Sync;

impl Notices {
    fn say(&self, message: &str) {
        match &self.0 {
            Some(f) => f(message),
            None => eprintln!("{message}"),
        }
    }
}

impl fmt::Debug for Notices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notices(custom)"
        } else {
            "Notices(stderr)"
        })
    }
}

/// Settings of one [`ReportSink`]. [`crate::config::Config`] builds one from
/// `FLOWKIT_API_URL`, `FLOWKIT_API_KEY`, `FLOWKIT_REPORT_FLUSH_TIMEOUT`,
/// `FLOWKIT_SPOOL_MAX_BYTES` and `FLOWKIT_HOME`.
///
/// ```
/// use flowkit::sink::report::ReportConfig;
/// use std::time::Duration;
/// let config = ReportConfig::new("http://127.0.0.1:4200", ".flowkit/spool")
///     .api_key("secret")
///     .flush_timeout(Duration::from_secs(1));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReportConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:4200`.
    pub api_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// Directory of the spool files.
    pub spool_dir: PathBuf,
    /// A batch is sent as soon as this many events are waiting.
    pub batch_size: usize,
    /// Most events in one POST (batches grow up to this under load).
    pub max_batch_size: usize,
    /// A partial batch is sent after this long.
    pub batch_interval: Duration,
    /// Events kept in memory, serialized, before the oldest are spooled.
    pub memory_events: usize,
    /// Most events waiting to be serialized (the sender thread is behind: events come faster
    /// than it serializes and spools them); past it newer events are dropped and counted. No
    /// bound by default: [`ReportConfig::backlog_bytes`] is the one that counts.
    pub backlog_events: usize,
    /// Most bytes of the compact backlog: past [`COMPACT_AFTER`] whole events, events waiting to
    /// be serialized are encoded (about 20–30 bytes each, a few hundred for events carrying
    /// long messages, parameters or log fields); once the encoded ones take this many bytes,
    /// newer events are dropped and counted (256 MiB by default). Never reached while the
    /// sender keeps up.
    pub backlog_bytes: usize,
    /// Most events in the spool; past it events are dropped and counted (no bound by default:
    /// [`ReportConfig::spool_max_bytes`] is the one that counts).
    pub spool_max_events: u64,
    /// Most bytes in the spool; past it events are dropped and counted (1 GiB by default,
    /// `FLOWKIT_SPOOL_MAX_BYTES`).
    pub spool_max_bytes: u64,
    /// How long a flush ([`Sink::deliver`], [`ReportSink::flush_report`]) waits for delivery
    /// before spooling what is left.
    pub flush_timeout: Duration,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// Delay before the first retry after a failure; doubles on every further failure.
    pub retry_delay: Duration,
    /// Longest delay between two retries; a server's `Retry-After` (on a 503 when its ingest
    /// budget is full) lengthens a delay up to this, never beyond.
    pub max_retry_delay: Duration,
    /// `hostname:pid`, sent with the drop count.
    pub worker: String,
    notices: Notices,
}

impl ReportConfig {
    /// Reporting to `api_url`, spooling under `spool_dir`, with the defaults of this module.
    pub fn new(api_url: impl Into<String>, spool_dir: impl Into<PathBuf>) -> ReportConfig {
        ReportConfig {
            api_url: api_url.into(),
            api_key: None,
            spool_dir: spool_dir.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            batch_interval: DEFAULT_BATCH_INTERVAL,
            memory_events: DEFAULT_MEMORY_EVENTS,
            backlog_events: DEFAULT_BACKLOG_EVENTS,
            backlog_bytes: DEFAULT_BACKLOG_BYTES,
            spool_max_events: DEFAULT_SPOOL_MAX_EVENTS,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            request_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(30),
            // Not `config::get()`: building a reporter must not fix the process settings.
            worker: format!("{}:{}", crate::config::hostname(), std::process::id()),
            notices: Notices::default(),
        }
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> ReportConfig {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the batch size (the events that trigger a send) and the most events per POST.
    pub fn batch_size(mut self, batch_size: usize, max_batch_size: usize) -> ReportConfig {
        self.batch_size = batch_size.max(1);
        self.max_batch_size = max_batch_size.max(self.batch_size);
        self
    }

    /// Sets how long a partial batch waits.
    pub fn batch_interval(mut self, interval: Duration) -> ReportConfig {
        self.batch_interval = interval;
        self
    }

    /// Sets how many events wait in memory before the oldest are spooled.
    pub fn memory_events(mut self, events: usize) -> ReportConfig {
        self.memory_events = events.max(1);
        self
    }

    /// Sets how many events may wait to be serialized before newer ones are dropped.
    pub fn backlog_events(mut self, events: usize) -> ReportConfig {
        self.backlog_events = events.max(1);
        self
    }

    /// Sets how many bytes the compact backlog (events waiting to be serialized, encoded) may
    /// take before newer events are dropped (`FLOWKIT_REPORT_BACKLOG_BYTES`; 256 MiB by
    /// default).
    ///
    /// ```
    /// use flowkit::sink::report::ReportConfig;
    /// let config = ReportConfig::new("http://127.0.0.1:4200", ".flowkit/spool")
    ///     .backlog_bytes(64 << 20);
    /// assert_eq!(config.backlog_bytes, 64 << 20);
    /// ```
    pub fn backlog_bytes(mut self, bytes: usize) -> ReportConfig {
        self.backlog_bytes = bytes.max(1);
        self
    }

    /// Sets both bounds of the spool: events and bytes.
    pub fn spool_max(mut self, events: u64, bytes: u64) -> ReportConfig {
        self.spool_max_events = events;
        self.spool_max_bytes = bytes;
        self
    }

    /// Sets the byte bound of the spool (`FLOWKIT_SPOOL_MAX_BYTES`; 1 GiB by default): events
    /// are dropped, counted and reported only once the spool holds this much.
    ///
    /// ```
    /// use flowkit::sink::report::ReportConfig;
    /// let config = ReportConfig::new("http://127.0.0.1:4200", ".flowkit/spool")
    ///     .spool_max_bytes(4 << 30);
    /// assert_eq!(config.spool_max_bytes, 4 << 30);
    /// ```
    pub fn spool_max_bytes(mut self, bytes: u64) -> ReportConfig {
        self.spool_max_bytes = bytes;
        self
    }

    /// Sets how long a flush waits for delivery.
    pub fn flush_timeout(mut self, timeout: Duration) -> ReportConfig {
        self.flush_timeout = timeout;
        self
    }

    /// Sets the first and the longest delay between retries.
    pub fn retry_delays(mut self, first: Duration, max: Duration) -> ReportConfig {
        self.retry_delay = first;
        self.max_retry_delay = max.max(first);
        self
    }

    /// Sets how long one HTTP request may take.
    pub fn request_timeout(mut self, timeout: Duration) -> ReportConfig {
        self.request_timeout = timeout;
        self
    }

    /// Sets the `hostname:pid` sent with the drop count.
    pub fn worker(mut self, worker: impl Into<String>) -> ReportConfig {
        self.worker = worker.into();
        self
    }

    /// Sends the reporter's notices (one line each, starting with `flowkit:`) to `f` instead
    /// of stderr. They never contain the API key.
    pub fn on_notice(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> ReportConfig {
        self.notices = Notices(Some(Arc::new(f)));
        self
    }

    fn events_url(&self) -> String {
        flowkit_wire::links::api(&self.api_url, "/events")
    }

    fn drops_url(&self) -> String {
        flowkit_wire::links::api(&self.api_url, "/reporter-drops")
    }
}

/// What a reporter has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportStats {
    /// POST requests of events made (answered or not).
    pub posts: u64,
    /// Events the server accepted (duplicates included).
    pub delivered: u64,
    /// Events the server refused for good (in a `400`/`422` batch, listed as rejected, or
    /// alone and still too big).
    pub rejected: u64,
    /// Events dropped by this reporter: the spool was full (or could not be written), or the
    /// events waiting to be serialized reached [`ReportConfig::backlog_bytes`] (or
    /// [`ReportConfig::backlog_events`]).
    pub dropped: u64,
    /// Events in the spool directory, as far as this process knows.
    pub spooled: u64,
    /// Events held in memory by the sender thread.
    pub in_memory: u64,
    /// Values (flow parameters, log fields) nested deeper than
    /// [`MAX_VALUE_DEPTH`](flowkit_wire::api::ingest::MAX_VALUE_DEPTH) levels, cut at that
    /// depth and marked with [`DEPTH_MARK`](flowkit_wire::api::ingest::DEPTH_MARK) (the
    /// server would have rejected the event).
    pub capped: u64,
    /// Events the sender thread serialized (and folded into run records).
    pub encoded: u64,
    /// Time the sender thread spent serializing them (decoding the compact backlog included),
    /// in nanoseconds.
    pub encode_nanos: u64,
    /// Events the sink thread handed over in the compact form (more than [`COMPACT_AFTER`]
    /// waited to be serialized: the sender thread was behind), as far as the sender thread has
    /// looked.
    pub compacted: u64,
}

impl ReportStats {
    /// Events the sender thread serializes per second of its own time: how fast the reporter
    /// can take events in, whatever the server's speed. `None` before it serialized any.
    pub fn encode_events_per_s(&self) -> Option<f64> {
        (self.encoded > 0 && self.encode_nanos > 0)
            .then(|| self.encoded as f64 * 1e9 / self.encode_nanos as f64)
    }
}

/// What the process's own reporter (the one `FLOWKIT_API_URL` starts) has done so far; `None`
/// when reporting is off.
///
/// ```
/// // Without FLOWKIT_API_URL, nothing is reported:
/// # if std::env::var_os("FLOWKIT_API_URL").is_none() {
/// assert!(flowkit::sink::report::process_stats().is_none());
/// # }
/// ```
pub fn process_stats() -> Option<ReportStats> {
    PROCESS_REPORTER.get().map(|shared| shared.stats.snapshot())
}

/// Events the process's own reporter has received but not yet serialized (0 when reporting
/// is off): what a process exiting now would lose.
pub(crate) fn process_backlog() -> usize {
    PROCESS_REPORTER.get().map_or(0, |shared| {
        let pending = shared.lock();
        pending.events.len() + pending.compact.events()
    })
}

/// The shared state of the process's own reporter, once started.
static PROCESS_REPORTER: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();

#[derive(Debug, Default)]
struct Stats {
    posts: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    spooled: AtomicU64,
    in_memory: AtomicU64,
    capped: AtomicU64,
    encoded: AtomicU64,
    encode_nanos: AtomicU64,
    compacted: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> ReportStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReportStats {
            posts: get(&self.posts),
            delivered: get(&self.delivered),
            rejected: get(&self.rejected),
            dropped: get(&self.dropped),
            spooled: get(&self.spooled),
            in_memory: get(&self.in_memory),
            capped: get(&self.capped),
            encoded: get(&self.encoded),
            encode_nanos: get(&self.encode_nanos),
            compacted: get(&self.compacted),
        }
    }
}

/// How a flush ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushOutcome {
    /// Everything this reporter held (and the spool, if this process sends it) was delivered.
    pub complete: bool,
    /// Events left in the spool directory.
    pub spooled: u64,
    /// The spool directory.
    pub spool_dir: PathBuf,
}

/// Who waits for a flush: answered once, when it completes or its time is up.
type FlushReply = Box<dyn FnOnce(FlushOutcome) + Send>;

/// What the sink thread hands to the sender thread.
#[derive(Default)]
struct Pending {
    /// Whole events, oldest first, up to [`COMPACT_AFTER`].
    events: Vec<Event>,
    /// Events after those, encoded (see `compact`): only while the sender is behind.
    compact: compact::Backlog,
    /// Events refused because too many were already waiting.
    refused: u64,
    /// Events the bus dropped because its queue was full.
    bus_dropped: u64,
    /// Flushes asked for since the sender last looked.
    flush: Vec<FlushReply>,
    /// A top-level flow ended: send what is waiting now rather than at the batch interval.
    send_now: bool,
    shutdown: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    stats: Stats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sink that reports events to the flowkit server. See the [module](self) documentation.
pub struct ReportSink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    batch_size: usize,
    max_pending: usize,
    max_compact_bytes: usize,
    flush_timeout: Duration,
    spool_dir: PathBuf,
}

impl fmt::Debug for ReportSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportSink")
            .field("spool_dir", &self.spool_dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ReportSink {
    /// Starts the sender thread. On start it takes over spool files a previous process left
    /// (if no other live process has), and sends them once the server answers.
    ///
    /// Fails if the URL is not an absolute `http(s)` URL, the API key cannot be a header, or
    /// the thread cannot be started. The HTTP client is built on that thread, so starting costs
    /// the caller no TLS set-up; if it cannot be built, a notice says so and events are spooled.
    pub fn start(config: ReportConfig) -> io::Result<ReportSink> {
        let url = reqwest::Url::parse(&config.events_url())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the API URL must start with http:// or https://",
            ));
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            stats: Stats::default(),
        });
        let sender = sender::Sender::new(config.clone(), shared.clone())?;
        let thread = std::thread::Builder::new()
            .name("flowkit-report".into())
            .spawn(move || sender.run())?;
        Ok(ReportSink {
            shared,
            thread: Some(thread),
            batch_size: config.batch_size.max(1),
            max_pending: config.backlog_events.max(1),
            max_compact_bytes: config.backlog_bytes.max(1),
            flush_timeout: config.flush_timeout,
            spool_dir: config.spool_dir,
        })
    }

    /// What the reporter has done so far.
    pub fn stats(&self) -> ReportStats {
        self.shared.stats.snapshot()
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Waits up to the flush timeout for everything received so far to be delivered, then
    /// spools what is left. Returns within the flush timeout plus the time to write the spool:
    /// it gives up one second after the timeout unless the spool is still being written, and
    /// waits on while it is (at most a minute more).
    pub fn flush_report(&mut self) -> FlushOutcome {
        let (tx, rx) = mpsc::channel();
        self.request_flush(Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }));
        // The sender answers at its deadline, after writing the spool: a second's margin, and
        // more while the spool is still being written.
        match answer_of(&rx, self.flush_timeout) {
            Some(outcome) => outcome,
            None => FlushOutcome {
                complete: false,
                spooled: self.shared.stats.spooled.load(Ordering::Relaxed),
                spool_dir: self.spool_dir.clone(),
            },
        }
    }

    /// Makes this the process's own reporter, read by [`process_stats`].
    pub(crate) fn register_as_process_reporter(&self) {
        let _ = PROCESS_REPORTER.set(Arc::clone(&self.shared));
    }

    fn request_flush(&self, reply: FlushReply) {
        self.shared.lock().flush.push(reply);
        self.shared.wake.notify_one();
    }
}

/// The sender's answer to a flush of `flush_timeout`: waited for one second past that
/// timeout (the sender answers at it, once what is left is spooled), and past that while the
/// spool is still being written (at most a minute, see [`crate::bus::wait_while_progressing`]).
/// `None` if the sender did not answer (or is gone).
fn answer_of(rx: &mpsc::Receiver<FlushOutcome>, flush_timeout: Duration) -> Option<FlushOutcome> {
    let deadline = Instant::now() + flush_timeout + Duration::from_secs(1);
    crate::bus::wait_while_progressing(deadline, |timeout| match rx.recv_timeout(timeout) {
        Ok(outcome) => Some(Some(outcome)),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => Some(None),
    })
    .flatten()
}

/// Whether `event` ends a top-level flow run.
fn ends_top_level_flow(event: &Event) -> bool {
    event.parent_run_id.is_none()
        && event.run_kind == RunKind::Flow
        && matches!(&event.body, EventBody::State { state, .. } if state.kind.is_final())
}

impl Sink for ReportSink {
    fn on_event(&mut self, event: &Event) {
        let mut pending = self.shared.lock();
        let len = pending.events.len() + pending.compact.events();
        if len >= self.max_pending || pending.compact.bytes() >= self.max_compact_bytes {
            // The sender thread is far behind (a disk slower than the events): never wait.
            pending.refused += 1;
            return;
        }
        if pending.compact.is_empty() && pending.events.len() < COMPACT_AFTER {
            pending.events.push(event.clone());
        } else {
            // The sender is behind: keep the backlog small (and in order, after the whole
            // events) until it has caught up.
            pending.compact.push(event);
        }
        // The sender sleeps while nothing waits: wake it for the first event (it then sends
        // at the batch interval), a full batch, or the end of a top-level flow (sent at once,
        // so the server shows the run done within milliseconds and little is left for exit).
        let len = len + 1;
        let flow_ended = ends_top_level_flow(event);
        pending.send_now |= flow_ended;
        drop(pending);
        if len == 1 || len == self.batch_size || flow_ended {
            self.shared.wake.notify_one();
        }
    }

    fn on_dropped(&mut self, count: u64) {
        self.shared.lock().bus_dropped += count;
    }

    /// Asks the sender to send what it holds now; never waits (the reporter has nothing
    /// local to make durable: [`Sink::deliver`] is the flush that waits).
    fn flush(&mut self) {
        self.shared.lock().send_now = true;
        self.shared.wake.notify_one();
    }

    fn waits_at_flow_end(&self) -> bool {
        false
    }

    /// Answers once everything received so far is delivered, or, at the flush timeout (at
    /// once if the server cannot be reached), once what is left is in the spool.
    fn deliver(&mut self, delivery: Delivery) {
        self.request_flush(Box::new(move |outcome| delivery.finish(outcome.complete)));
    }
}

impl Drop for ReportSink {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = self.shared.lock();
            pending.flush.push(Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }));
            pending.shutdown = true;
        }
        self.shared.wake.notify_one();
        // Join only a thread that answered: one stuck on a dead disk is left behind.
        if answer_of(&rx, self.flush_timeout).is_some() {
            let _ = thread.join();
        }
    }
}
