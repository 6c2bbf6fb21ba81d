//! The reporter against a real HTTP server on loopback: an axum imitation of the flowkit
//! server's `POST /api/v1/events` and `POST /api/v1/reporter-drops`, which can be told to fail, to
//! stall, or to go away.
//!
//! The tests drive [`ReportSink`] through the `Sink` API directly, each with its own server
//! and spool directory: the process-wide bus and config are set once per process.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use flowkit::sink::Sink;
use flowkit::sink::report::{ReportConfig, ReportSink};
use flowkit::{Event, EventBody, RunKind, State as RunState, StateType};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How the imitation server answers `POST /api/v1/events`.
#[derive(Clone, Debug)]
enum Mode {
    /// 202 with counts.
    Accept,
    /// This status, with an error body.
    Status(u16),
    /// Waits this long before answering.
    Stall(Duration),
}

#[derive(Debug)]
struct Recorded {
    mode: Mode,
    /// Answer 503 to this many more POSTs, then go back to `mode`.
    fail_next: usize,
    /// The `Retry-After` (seconds) of those 503s.
    retry_after: Option<u64>,
    /// When each POST of events arrived.
    arrivals: Vec<Instant>,
    /// 413 for a POST of more events than this.
    max_events: usize,
    /// Ids received, in order of arrival (duplicates included).
    ids: Vec<Uuid>,
    /// Events per accepted POST.
    posts: Vec<usize>,
    /// `Authorization` header of every POST.
    auth: Vec<Option<String>>,
    /// Bodies of `POST /api/v1/reporter-drops`.
    drops: Vec<Value>,
}

type Shared = Arc<Mutex<Recorded>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Recorded> {
    shared.lock().expect("server state lock")
}

async fn post_events(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let retry_after = lock(&s).retry_after;
    let (status, body) = answer_events(State(s), headers, body).await;
    let mut headers = HeaderMap::new();
    if let Some(seconds) = retry_after
        && status == StatusCode::SERVICE_UNAVAILABLE
    {
        headers.insert("retry-after", seconds.into());
    }
    (status, headers, body)
}

async fn answer_events(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mode = {
        let mut r = lock(&s);
        r.auth.push(auth);
        r.arrivals.push(Instant::now());
        if r.fail_next > 0 {
            r.fail_next -= 1;
            Mode::Status(503)
        } else {
            r.mode.clone()
        }
    };
    match mode {
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a status code");
            return (
                status,
                Json(
                    json!({"error": {"code": "test", "message": format!("told to answer {code}")}}),
                ),
            );
        }
        Mode::Stall(d) => tokio::time::sleep(d).await,
        Mode::Accept => {}
    }
    // The body must be what the server ingests: a JSON array of `Event`.
    let batch: Vec<Event> = match serde_json::from_str(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {"code": "invalid_body", "message": e.to_string()}})),
            );
        }
    };
    let mut r = lock(&s);
    if batch.len() > r.max_events {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": {"code": "too_large", "message": "too many events"}})),
        );
    }
    if batch.iter().any(|e| e.name == "poison") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": "invalid_event", "message": "an event is poisoned"}})),
        );
    }
    let seen: HashSet<Uuid> = r.ids.iter().copied().collect();
    let duplicates = batch.iter().filter(|e| seen.contains(&e.id)).count();
    r.ids.extend(batch.iter().map(|e| e.id));
    r.posts.push(batch.len());
    (
        StatusCode::ACCEPTED,
        Json(
            json!({"accepted": batch.len() - duplicates, "duplicates": duplicates, "rejected": []}),
        ),
    )
}

async fn post_drops(State(s): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    lock(&s).drops.push(body);
    StatusCode::ACCEPTED
}

/// The imitation server, on its own runtime so a blocking `flush` in the test cannot stall it.
struct Server {
    addr: SocketAddr,
    state: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    fn start() -> Server {
        Server::start_at("127.0.0.1:0".parse().expect("an address"), new_state())
    }

    fn start_at(addr: SocketAddr, state: Shared) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind the test server");
        let addr = listener.local_addr().expect("its address");
        let app = axum::Router::new()
            .route("/api/v1/events", post(post_events))
            .route("/api/v1/reporter-drops", post(post_drops))
            .with_state(state.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    /// Goes away: listener and open connections closed.
    fn stop(mut self) -> (SocketAddr, Shared) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        (self.addr, self.state.clone())
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut lock(&self.state));
    }

    fn ids(&self) -> Vec<Uuid> {
        lock(&self.state).ids.clone()
    }

    fn posts(&self) -> Vec<usize> {
        lock(&self.state).posts.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn new_state() -> Shared {
    Arc::new(Mutex::new(Recorded {
        mode: Mode::Accept,
        fail_next: 0,
        retry_after: None,
        arrivals: Vec::new(),
        max_events: usize::MAX,
        ids: Vec::new(),
        posts: Vec::new(),
        auth: Vec::new(),
        drops: Vec::new(),
    }))
}

/// A loopback address nobody listens on (until a test starts a server there).
fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("its address")
}

fn events(n: usize) -> Vec<Event> {
    let run_id = Uuid::now_v7();
    (0..n)
        .map(|i| Event {
            id: Uuid::now_v7(),
            run_id,
            parent_run_id: None,
            flow_run_id: Some(run_id),
            run_kind: RunKind::Task,
            name: Cow::Borrowed("step"),
            attempt: 1,
            timestamp: Utc::now(),
            lease: None,
            body: EventBody::State {
                state: if i % 2 == 0 {
                    RunState::new(StateType::Running)
                } else {
                    RunState::with_message(StateType::Failed, "line one\nline \"two\"")
                },
                details: None,
            },
        })
        .collect()
}

fn ids(events: &[Event]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

/// A config for tests: quick retries, a long batch interval (only size and flush send), and
/// notices collected in the returned vector.
fn config(url: &str, spool: &Path) -> (ReportConfig, Arc<Mutex<Vec<String>>>) {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    let config = ReportConfig::new(url, spool)
        .batch_size(100, 100)
        .batch_interval(Duration::from_secs(60))
        .retry_delays(Duration::from_millis(20), Duration::from_millis(200))
        .flush_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(5))
        .worker("test-host:1")
        .on_notice(move |m| sink.lock().expect("notices lock").push(m.to_string()));
    (config, notices)
}

fn said(notices: &Arc<Mutex<Vec<String>>>) -> String {
    notices.lock().expect("notices lock").join("\n")
}

/// Spool files and the events they hold.
fn spool_contents(dir: &Path) -> (usize, Vec<Event>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, Vec::new());
    };
    let files = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl.lz4"))
        .count();
    let events = flowkit::sink::report::spooled_lines(dir)
        .expect("read the spool")
        .iter()
        .map(|line| serde_json::from_str(line).expect("a spooled line is an Event"))
        .collect();
    (files, events)
}

/// `got == want`, reported briefly: lengths, duplicates and the first difference.
#[track_caller]
fn assert_same_ids(got: &[Uuid], want: &[Uuid]) {
    if got != want {
        let unique: HashSet<&Uuid> = got.iter().collect();
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "received {} ids ({} distinct), expected {}; first difference at {first:?}; posts in order: {:?}",
            got.len(),
            unique.len(),
            want.len(),
            first.map(|i| (want.iter().position(|w| *w == got[i]), i))
        );
    }
}

fn feed(sink: &mut ReportSink, events: &[Event]) {
    for e in events {
        sink.on_event(e);
    }
}

/// Feeds `events` a batch (100) at a time, each once the sender thread has taken the previous
/// ones in: what a steady flow looks like, where nothing is dropped for want of memory.
fn feed_paced(sink: &mut ReportSink, events: &[Event]) {
    let s = sink.stats();
    let mut fed = s.in_memory + s.spooled + s.delivered + s.dropped;
    for chunk in events.chunks(100) {
        feed(sink, chunk);
        fed += chunk.len() as u64;
        let start = Instant::now();
        loop {
            let s = sink.stats();
            if s.in_memory + s.spooled + s.delivered + s.dropped >= fed
                || start.elapsed() > Duration::from_secs(5)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn batches_carry_every_event_exactly_once_with_the_bearer_token() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config.batch_size(500, 500).api_key("s3cret")).expect("start");
    let sent = events(2_137);
    feed(&mut sink, &sent);
    let outcome = sink.flush_report();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_ids(&server.ids(), &ids(&sent));
    let posts = server.posts();
    assert!(posts.len() <= 2_137usize.div_ceil(500), "{posts:?}");
    let auth = lock(&server.state).auth.clone();
    assert!(
        auth.iter().all(|a| a.as_deref() == Some("Bearer s3cret")),
        "{auth:?}"
    );
    let stats = sink.stats();
    assert_eq!(
        (stats.delivered, stats.dropped, stats.rejected),
        (2_137, 0, 0)
    );
    assert!(!format!("{sink:?}").contains("s3cret"));
}

#[test]
fn no_key_no_authorization_header() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config).expect("start");
    feed(&mut sink, &events(3));
    assert!(sink.flush_report().complete);
    assert_eq!(lock(&server.state).auth, vec![None]);
}

#[test]
fn a_partial_batch_is_sent_after_the_interval() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(
        config
            .batch_size(500, 500)
            .batch_interval(Duration::from_millis(50)),
    )
    .expect("start");
    let sent = events(10);
    feed(&mut sink, &sent);
    let start = Instant::now();
    while server.ids().len() < 10 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.ids(), ids(&sent), "sent without a flush");
    assert_eq!(server.posts(), vec![10]);
}

#[test]
fn server_errors_are_retried() {
    let server = Server::start();
    server.set(|r| r.fail_next = 3);
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config).expect("start");
    let sent = events(250);
    feed(&mut sink, &sent);
    let outcome = sink.flush_report();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_ids(&server.ids(), &ids(&sent));
    assert!(said(&notices).contains("503"), "{}", said(&notices));
}

/// A 503 with `Retry-After` (the server's ingest budget is full) is retried no sooner than
/// it says, within the reporter's longest backoff; nothing is lost.
#[test]
fn retry_after_is_honoured() {
    let server = Server::start();
    server.set(|r| {
        r.fail_next = 1;
        r.retry_after = Some(1);
    });
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _notices) = config(&server.url(), spool.path());
    // The longest backoff above a second, so the server's 1 s is honoured whole.
    let config = config.retry_delays(Duration::from_millis(20), Duration::from_secs(5));
    let mut sink = ReportSink::start(config).expect("start");
    let sent = events(50);
    feed(&mut sink, &sent);
    let outcome = sink.flush_report();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_ids(&server.ids(), &ids(&sent));
    let arrivals = lock(&server.state).arrivals.clone();
    assert!(arrivals.len() >= 2, "{arrivals:?}");
    let waited = arrivals[1] - arrivals[0];
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, before the server's Retry-After of 1 s"
    );
}

#[test]
fn events_spooled_while_the_server_is_down_are_delivered_oldest_first() {
    let addr = unused_addr();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&format!("http://{addr}"), spool.path());
    let mut sink = ReportSink::start(config.memory_events(300)).expect("start");
    let sent = events(1_000);
    feed_paced(&mut sink, &sent);
    assert!(
        spool_contents(spool.path()).0 >= 2,
        "past 300 events in memory, the oldest are spooled before any flush"
    );
    let outcome = sink.flush_report();
    assert!(!outcome.complete);
    assert_eq!(outcome.spooled, 1_000);
    let (files, spooled) = spool_contents(spool.path());
    assert!(files >= 2, "one file per chunk: {files}");
    let mut spooled_ids = ids(&spooled);
    spooled_ids.sort();
    let mut expected = ids(&sent);
    expected.sort();
    assert_eq!(spooled_ids, expected, "every event is in the spool once");
    assert!(
        said(&notices).contains("1000 events are spooled under"),
        "{}",
        said(&notices)
    );

    let server = Server::start_at(addr, new_state());
    let more = events(50);
    feed(&mut sink, &more);
    let outcome = sink.flush_report();
    assert!(outcome.complete, "{outcome:?}");
    assert_eq!(outcome.spooled, 0);
    let all: Vec<Uuid> = ids(&sent).into_iter().chain(ids(&more)).collect();
    assert_same_ids(&server.ids(), &all);
    assert_eq!(
        spool_contents(spool.path()).0,
        0,
        "delivered files are deleted"
    );
}

#[test]
fn the_server_going_away_and_coming_back_loses_nothing() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config.memory_events(200)).expect("start");
    let before = events(300);
    feed_paced(&mut sink, &before);
    assert!(sink.flush_report().complete);
    let (addr, state) = server.stop();

    let during = events(700);
    feed_paced(&mut sink, &during);
    let outcome = sink.flush_report();
    assert_eq!(
        (outcome.complete, outcome.spooled),
        (false, 700),
        "{:?} {:?} {}",
        sink.stats(),
        lock(&state).ids.len(),
        said(&notices)
    );
    assert!(
        said(&notices).contains("cannot deliver events"),
        "{}",
        said(&notices)
    );

    let server = Server::start_at(addr, state);
    assert!(sink.flush_report().complete);
    let all: Vec<Uuid> = ids(&before).into_iter().chain(ids(&during)).collect();
    assert_same_ids(&server.ids(), &all);
    assert!(said(&notices).contains("answers again"));
}

#[test]
fn a_second_reporter_delivers_what_the_first_left() {
    let addr = unused_addr();
    let spool = tempfile::tempdir().expect("temp dir");
    let sent = events(420);
    {
        let (config, notices) = config(&format!("http://{addr}"), spool.path());
        let mut first = ReportSink::start(config).expect("start");
        feed(&mut first, &sent);
        drop(first);
        assert!(
            said(&notices).contains("420 events are spooled under"),
            "{}",
            said(&notices)
        );
    }
    assert_eq!(spool_contents(spool.path()).1.len(), 420);

    let server = Server::start_at(addr, new_state());
    let (config, _) = config(&server.url(), spool.path());
    let mut second = ReportSink::start(config).expect("start");
    let outcome = second.flush_report();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_ids(&server.ids(), &ids(&sent));
    assert_eq!(spool_contents(spool.path()).0, 0);
}

#[test]
fn only_one_live_reporter_sends_the_spool() {
    let spool = tempfile::tempdir().expect("temp dir");
    let addr = unused_addr();
    let sent = events(200);
    {
        let (config, _) = config(&format!("http://{addr}"), spool.path());
        let mut first = ReportSink::start(config).expect("start");
        feed(&mut first, &sent);
    }
    let server = Server::start_at(addr, new_state());
    let (config_a, _) = config(&server.url(), spool.path());
    let (config_b, _) = config(&server.url(), spool.path());
    let mut a = ReportSink::start(config_a).expect("start");
    let mut b = ReportSink::start(config_b).expect("start");
    let (oa, ob) = (a.flush_report(), b.flush_report());
    // One of them holds the lock and sends; the files are sent once.
    let start = Instant::now();
    while server.ids().len() < 200 && start.elapsed() < Duration::from_secs(5) {
        let _ = (a.flush_report(), b.flush_report());
    }
    assert!(oa.complete || ob.complete);
    assert_same_ids(&server.ids(), &ids(&sent));
}

#[test]
fn past_the_spool_bound_events_are_dropped_counted_and_reported() {
    let addr = unused_addr();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&format!("http://{addr}"), spool.path());
    let mut sink =
        ReportSink::start(config.memory_events(100).spool_max(300, 1 << 30)).expect("start");
    let sent = events(1_000);
    feed_paced(&mut sink, &sent);
    let outcome = sink.flush_report();
    assert!(!outcome.complete);
    let stats = sink.stats();
    let (_, spooled) = spool_contents(spool.path());
    assert!(spooled.len() <= 300, "{}", spooled.len());
    assert_eq!(stats.spooled as usize, spooled.len());
    assert_eq!(stats.dropped as usize + spooled.len(), 1_000, "{stats:?}");
    assert!(stats.dropped >= 700);
    let text = said(&notices);
    assert!(text.contains("is full"), "{text}");
    assert!(
        text.contains(&format!("{} events were dropped", stats.dropped)),
        "{text}"
    );

    let server = Server::start_at(addr, new_state());
    assert!(sink.flush_report().complete);
    assert_eq!(server.ids().len(), spooled.len());
    let drops = lock(&server.state).drops.clone();
    assert_eq!(
        drops,
        vec![json!({"dropped": stats.dropped, "worker": "test-host:1"})]
    );
}

#[test]
fn a_batch_too_large_is_split_until_it_fits() {
    let server = Server::start();
    server.set(|r| r.max_events = 100);
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config.batch_size(500, 500)).expect("start");
    let sent = events(500);
    feed(&mut sink, &sent);
    assert!(sink.flush_report().complete);
    assert_same_ids(&server.ids(), &ids(&sent));
    assert!(server.posts().iter().all(|&n| n <= 100));
    assert_eq!(sink.stats().rejected, 0);
}

#[test]
fn a_malformed_batch_is_dropped_and_counted_and_the_others_delivered() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config).expect("start");
    let mut sent = events(300);
    sent[150].name = Cow::Borrowed("poison");
    feed(&mut sink, &sent);
    assert!(sink.flush_report().complete);
    let expected: Vec<Uuid> = ids(&sent[..100])
        .into_iter()
        .chain(ids(&sent[200..]))
        .collect();
    assert_same_ids(&server.ids(), &expected);
    let stats = sink.stats();
    assert_eq!((stats.delivered, stats.rejected), (200, 100));
    let text = said(&notices);
    assert!(text.contains("an event is poisoned"), "{text}");
    assert_eq!(text.matches("refused a batch").count(), 1, "{text}");
}

#[test]
fn unauthorized_keeps_the_events_and_says_why_without_the_key() {
    let server = Server::start();
    server.set(|r| r.mode = Mode::Status(401));
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&server.url(), spool.path());
    // A flush timeout far longer than the bound below: giving up "at once" is then told
    // apart from waiting it out, however loaded the machine.
    let config = config
        .api_key("wrong-key")
        .flush_timeout(Duration::from_secs(60));
    let mut sink = ReportSink::start(config).expect("start");
    let sent = events(120);
    feed(&mut sink, &sent);
    let started = Instant::now();
    let outcome = sink.flush_report();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gives up at once, not at the flush timeout: {:?}",
        started.elapsed()
    );
    assert_eq!((outcome.complete, outcome.spooled), (false, 120));
    let text = said(&notices);
    assert!(
        text.contains("FLOWKIT_API_KEY missing or lacks the report scope"),
        "{text}"
    );
    assert!(!text.contains("wrong-key"), "{text}");

    server.set(|r| r.mode = Mode::Accept);
    assert!(sink.flush_report().complete);
    assert_same_ids(&server.ids(), &ids(&sent));
}

#[test]
fn flush_with_the_server_down_returns_within_its_bound() {
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&format!("http://{}", unused_addr()), spool.path());
    let mut sink = ReportSink::start(config.flush_timeout(Duration::from_secs(2))).expect("start");
    feed(&mut sink, &events(5_000));
    let started = Instant::now();
    let outcome = sink.flush_report();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((outcome.complete, outcome.spooled), (false, 5_000));
    assert!(said(&notices).contains("5000 events are spooled under"));
}

#[test]
fn flush_with_a_stalled_server_returns_within_its_bound() {
    let server = Server::start();
    server.set(|r| r.mode = Mode::Stall(Duration::from_secs(30)));
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink =
        ReportSink::start(config.flush_timeout(Duration::from_millis(500))).expect("start");
    feed(&mut sink, &events(250));
    let started = Instant::now();
    let outcome = sink.flush_report();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "waits for the server: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!((outcome.complete, outcome.spooled), (false, 250));
}

#[test]
fn on_event_never_blocks_and_the_bounds_hold() {
    let server = Server::start();
    server.set(|r| r.mode = Mode::Stall(Duration::from_secs(30)));
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(
        config
            .batch_size(500, 5_000)
            .memory_events(10_000)
            .backlog_events(10_000)
            .spool_max(50_000, 1 << 30)
            .flush_timeout(Duration::from_millis(300)),
    )
    .expect("start");
    let sent = events(200_000);
    let started = Instant::now();
    feed(&mut sink, &sent);
    let took = started.elapsed();
    eprintln!("200 000 events handed over in {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let stats = sink.stats();
    assert!(stats.in_memory <= 10_000, "{stats:?}");
    assert!(stats.spooled <= 50_000, "{stats:?}");
    let _ = sink.flush_report();
    // On a loaded machine a debug build may answer the flush before it has spooled all it
    // took in: it goes on spooling, and then everything is accounted for.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.stats().in_memory > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = sink.stats();
    let (_, spooled) = spool_contents(spool.path());
    assert!(spooled.len() <= 50_000, "{}", spooled.len());
    assert_eq!(stats.spooled as usize, spooled.len());
    assert_eq!(
        stats.dropped as usize + spooled.len(),
        200_000,
        "every event is spooled or counted: {stats:?}"
    );
}

/// Events of every form: task and flow runs with details (tags, upstream runs, parameters),
/// errors spanning lines, logs with fields, unicode everywhere.
fn varied_events(n: usize) -> Vec<Event> {
    let flow = Uuid::now_v7();
    let mut now = Utc::now();
    let mut events = Vec::with_capacity(n);
    let mut run = flow;
    for i in 0..n {
        now += chrono::Duration::nanoseconds(731);
        if i % 4 == 0 {
            run = Uuid::now_v7();
        }
        let body = match i % 7 {
            0 => EventBody::State {
                state: RunState::new(StateType::Pending),
                details: Some(Box::new(flowkit::RunDetails {
                    task_key: "demo::étape".into(),
                    tags: vec!["db".into(), Cow::Owned(format!("shard-{}", i % 13))],
                    upstream: vec![flow],
                    parameters: (i % 14 == 0)
                        .then(|| json!({"n": i, "x": 0.1 + i as f64, "s": "日本語 🦀"})),
                    cache_key: (i % 3 == 0).then(|| format!("key-{i}")),
                    ..flowkit::RunDetails::default()
                })),
            },
            1 | 4 => EventBody::State {
                state: RunState::new(StateType::Running),
                details: None,
            },
            2 => EventBody::Log {
                level: flowkit::LogLevel::Warn,
                message: format!("retrying «{i}»\nafter a pause"),
                fields: [
                    ("attempt".to_string(), json!(i % 5)),
                    ("delay_s".to_string(), json!(-1.5e-3)),
                    ("nested".to_string(), json!({"a": [1, null, true, "ü"]})),
                ]
                .into_iter()
                .collect(),
            },
            3 => EventBody::State {
                state: RunState::with_message(
                    StateType::Failed,
                    format!("error: file «{i}.csv» not found\ncaused by: ENOENT ❌"),
                ),
                details: None,
            },
            _ => EventBody::State {
                state: RunState::new(StateType::Completed),
                details: None,
            },
        };
        events.push(Event {
            id: Uuid::now_v7(),
            run_id: run,
            parent_run_id: (run != flow).then_some(flow),
            flow_run_id: Some(flow),
            run_kind: if run == flow {
                RunKind::Flow
            } else {
                RunKind::Task
            },
            name: if i % 11 == 0 {
                Cow::Owned(format!("step-{}", i % 5))
            } else {
                Cow::Borrowed("step")
            },
            attempt: (i % 3) as u32,
            timestamp: now,
            lease: (i % 9 == 0).then_some(i as u64),
            body,
        });
    }
    events
}

/// A reporter with no server to reach (a memory queue of 5 000 events, `flush_timeout`),
/// handed 200 000 varied events at once; its spool directory; the events.
fn backlog_without_a_server(
    flush_timeout: Duration,
) -> (ReportSink, tempfile::TempDir, Vec<Event>) {
    let addr = unused_addr();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&format!("http://{addr}"), spool.path());
    let mut sink =
        ReportSink::start(config.memory_events(5_000).flush_timeout(flush_timeout)).expect("start");
    let sent = varied_events(200_000);
    feed(&mut sink, &sent);
    (sink, spool, sent)
}

/// Events handed over far faster than the sender thread serializes them wait in the compact
/// backlog: none is dropped, and every one reaches the spool as it was, in order.
#[test]
fn a_backlog_handed_over_at_once_is_kept_compact_and_loses_nothing() {
    let (mut sink, spool, sent) = backlog_without_a_server(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = sink.flush_report();
    // Past its timeout the flush waits on while the backlog is still being spooled: it
    // returns with everything in the spool, however long that took.
    eprintln!("flush_report took {:?}", started.elapsed());
    assert!(!outcome.complete);
    assert_eq!(outcome.spooled, sent.len() as u64, "{outcome:?}");
    let stats = sink.stats();
    assert!(
        stats.compacted > 0,
        "the sender kept up with a tight loop: this tests nothing ({stats:?})"
    );
    assert_eq!(stats.dropped, 0, "{stats:?}");
    let (_, spooled) = spool_contents(spool.path());
    assert_same_ids(&ids(&spooled), &ids(&sent));
    for (got, want) in spooled.iter().zip(&sent) {
        let (got, want) = (
            serde_json::to_value(got).expect("JSON"),
            serde_json::to_value(want).expect("JSON"),
        );
        assert_eq!(got, want);
    }
}

/// Dropping a reporter with a large backlog and no server returns once all of it is in the
/// spool, past the flush timeout if spooling takes longer: nothing is cut off by the drop.
#[test]
fn dropping_a_reporter_waits_while_its_backlog_is_spooled() {
    let (sink, spool, sent) = backlog_without_a_server(Duration::from_millis(100));
    let started = Instant::now();
    drop(sink);
    eprintln!("the drop took {:?}", started.elapsed());
    let (_, spooled) = spool_contents(spool.path());
    assert_same_ids(&ids(&spooled), &ids(&sent));
}

/// Past the byte bound of the compact backlog, newer events are dropped and counted: every
/// event handed over is spooled or counted.
#[test]
fn past_the_backlog_byte_bound_events_are_dropped_and_counted() {
    let addr = unused_addr();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, _) = config(&format!("http://{addr}"), spool.path());
    let mut sink = ReportSink::start(
        config
            .memory_events(1_000)
            .backlog_bytes(300 << 10)
            .flush_timeout(Duration::from_millis(300)),
    )
    .expect("start");
    let sent = events(300_000);
    feed(&mut sink, &sent);
    let _ = sink.flush_report();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = sink.stats();
        if s.spooled + s.dropped >= sent.len() as u64 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = sink.stats();
    let (_, spooled) = spool_contents(spool.path());
    assert_eq!(stats.spooled as usize, spooled.len());
    assert_eq!(
        stats.dropped as usize + spooled.len(),
        sent.len(),
        "every event is spooled or counted: {stats:?}"
    );
    assert!(
        stats.dropped > 0 && stats.compacted > 0,
        "300 000 events handed over at once fit in 300 KiB: {stats:?}"
    );
}

/// A flow parameter or log field nested deeper than the server's parser allows would make the
/// server reject the event: the reporter cuts it at 64 levels, with a marker, counts it and
/// says so once; the event (and its batch) is delivered.
#[test]
fn values_nested_too_deep_are_cut_and_the_event_delivered() {
    let server = Server::start();
    let spool = tempfile::tempdir().expect("temp dir");
    let (config, notices) = config(&server.url(), spool.path());
    let mut sink = ReportSink::start(config).expect("start");
    let mut deep = json!("bottom");
    for _ in 0..300 {
        deep = json!({ "down": deep });
    }
    let mut sent = events(10);
    sent[3].body = EventBody::State {
        state: RunState::new(StateType::Pending),
        details: Some(Box::new(flowkit::RunDetails {
            task_key: "demo::deep".into(),
            parameters: Some(json!({ "config": deep.clone() })),
            ..flowkit::RunDetails::default()
        })),
    };
    let mut fields = serde_json::Map::new();
    fields.insert("tree".into(), deep);
    sent[6].body = EventBody::Log {
        level: flowkit::LogLevel::Info,
        message: "deep".into(),
        fields,
    };
    feed(&mut sink, &sent);
    assert!(sink.flush_report().complete);
    // The imitation server parses the batch as the real one does (recursion limit 128).
    assert_same_ids(&server.ids(), &ids(&sent));
    let stats = sink.stats();
    assert_eq!((stats.capped, stats.rejected), (2, 0), "{stats:?}");
    let text = said(&notices);
    assert_eq!(text.matches("was cut at that depth").count(), 1, "{text}");
}
