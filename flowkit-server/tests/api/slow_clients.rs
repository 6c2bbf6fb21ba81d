//! Slow, stalled and idle clients over a real socket: the header, idle and body timeouts, the
//! connection cap, long waits that the timeouts must not cut, and a shutdown that does not
//! wait for idle connections. The clients are raw `TcpStream`s, so they can misbehave.

use flowkit_server::Spawned;
use flowkit_server::config::Config;
use flowkit_server::connections::ConnectionLimits;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use uuid::Uuid;

/// Longest any step here waits before the test fails: far above every timeout configured.
const PATIENCE: Duration = Duration::from_secs(15);

/// A short timeout, for the timeouts under test.
const SHORT: Duration = Duration::from_millis(300);

struct Server {
    spawned: Spawned,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(connections: ConnectionLimits, shutdown_timeout: Duration) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut config = Config::new(url);
        config.bind = listener.local_addr().expect("addr");
        config.retention = None;
        config.shutdown_timeout = shutdown_timeout;
        config.connections = connections;
        // Every stalled body here must be admitted and then cut by the body timeout, not
        // refused at once by the ingest memory budget (tested in hardening.rs).
        config.settings.ingest_memory = usize::MAX;
        let spawned = flowkit_server::spawn(listener, config)
            .await
            .expect("spawn");
        Server { spawned, _dir: dir }
    }

    async fn connect(&self) -> TcpStream {
        timeout(PATIENCE, TcpStream::connect(self.spawned.addr()))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.spawned.url())
    }

    /// `GET /api/health` from a fresh connection: 200 within [`PATIENCE`].
    async fn health_answers(&self) {
        let client = fresh_client();
        let reply = timeout(PATIENCE, client.get(self.url("/api/health")).send())
            .await
            .expect("health answers in time")
            .expect("health");
        assert_eq!(reply.status(), 200);
    }

    async fn stop(self) {
        timeout(PATIENCE, self.spawned.stop())
            .await
            .expect("the server stops in time")
            .expect("stop");
    }
}

/// A client with no connection pool: every request on a connection of its own, so a
/// connection the server closed for idleness is never reused.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn limits(header: Duration, idle: Duration, body: Duration) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: header,
        idle_timeout: idle,
        body_timeout: body,
        ..ConnectionLimits::default()
    }
}

const HEALTH: &[u8] = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads one response (head and a `Content-Length` body) within [`PATIENCE`]: its status and
/// body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    timeout(PATIENCE, async {
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no status in {head:?}"));
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    return (status, body.to_string());
                }
            }
            let n = stream.read(&mut chunk).await.expect("read the response");
            assert!(n > 0, "closed before a full response: {data:?}");
            data.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a response in time")
}

/// Waits until the server closes `stream` (end of file or a reset); fails if it sends
/// anything first or keeps it open past [`PATIENCE`]. Returns how long that took.
async fn closed_without_answer(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    match timeout(PATIENCE, stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => start.elapsed(),
        Ok(Ok(n)) => panic!(
            "answered instead of closing: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
        Err(_) => panic!("still open after {PATIENCE:?}"),
    }
}

/// Nothing arrives on `stream` for `wait`.
async fn silent_for(stream: &mut TcpStream, wait: Duration) {
    let mut chunk = [0u8; 1024];
    if let Ok(read) = timeout(wait, stream.read(&mut chunk)).await {
        panic!("expected silence, got {read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_the_header_timeout() {
    let server = Server::start(limits(SHORT, PATIENCE, PATIENCE), PATIENCE).await;

    // Half a head, then one more byte every 50 ms: the trickle does not extend the deadline.
    // Measured from before the connection: the server's clock starts after it.
    let start = Instant::now();
    let mut slow = server.connect().await;
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: local")
        .await
        .expect("write");
    let mut chunk = [0u8; 1024];
    loop {
        tokio::select! {
            read = slow.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => panic!("answered: {:?}", String::from_utf8_lossy(&chunk[..n])),
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if slow.write_all(b"h").await.is_err() {
                    break;
                }
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the slowloris client is still served"
        );
    }
    assert!(start.elapsed() >= SHORT, "{:?}", start.elapsed());

    // A client that connects and says nothing goes the same way.
    let start = Instant::now();
    let mut mute = server.connect().await;
    closed_without_answer(&mut mute).await;
    assert!(start.elapsed() >= SHORT, "{:?}", start.elapsed());

    // A client that sends its head in pieces, but in time, is served.
    let mut split = server.connect().await;
    split
        .write_all(b"GET /api/health HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    split
        .write_all(b"Host: localhost\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut split).await.0, 200);

    server.health_answers().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let server = Server::start(limits(PATIENCE, idle, PATIENCE), PATIENCE).await;

    // Requests 100 ms apart for 1.5 s keep the connection: the idle clock restarts after each
    // response.
    let mut busy = server.connect().await;
    for _ in 0..15 {
        busy.write_all(HEALTH).await.expect("write");
        assert_eq!(read_response(&mut busy).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Then it falls silent after one last request, and is closed (measured from before that
    // request: the server's idle clock starts after its answer).
    let start = Instant::now();
    busy.write_all(HEALTH).await.expect("write");
    assert_eq!(read_response(&mut busy).await.0, 200);
    closed_without_answer(&mut busy).await;
    assert!(start.elapsed() >= idle, "{:?}", start.elapsed());

    server.health_answers().await;
    server.stop().await;
}

/// The head of a `POST /api/events` declaring `length` bytes of body.
fn events_head(length: usize) -> Vec<u8> {
    format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_closed_at_the_body_timeout() {
    let server = Server::start(limits(PATIENCE, PATIENCE, SHORT), PATIENCE).await;

    // 8 MiB declared, 16 KiB sent, then nothing: closed without an answer.
    let mut stalled = server.connect().await;
    stalled
        .write_all(&events_head(8 << 20))
        .await
        .expect("write");
    let mut sent = b"[".to_vec();
    sent.resize(16 << 10, b' ');
    stalled.write_all(&sent).await.expect("write");
    closed_without_answer(&mut stalled).await;

    server.health_answers().await;
    server.stop().await;

    // A body that arrives slowly but without a pause as long as the timeout is taken: the
    // timeout bounds each pause (1 s), not the whole body (here 1.5 s, in 100 ms steps).
    let server = Server::start(limits(PATIENCE, PATIENCE, Duration::from_secs(1)), PATIENCE).await;
    let body = format!("[{}]", " ".repeat(13));
    let mut slow = server.connect().await;
    slow.write_all(&events_head(body.len()))
        .await
        .expect("write");
    for byte in body.bytes() {
        slow.write_all(&[byte]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = read_response(&mut slow).await;
    assert!((200..300).contains(&status), "{status} {answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_many_slow_clients_hold_connections() {
    let n = flowkit::testing::scaled(50).max(2);
    let server = Server::start(
        ConnectionLimits {
            max_connections: 3 * n + 8,
            ..ConnectionLimits::default()
        },
        PATIENCE,
    )
    .await;

    // `n` clients each declare 8 MiB and stall after 64 KiB; `n` send half a head; `n` say
    // nothing at all. All below the cap, all within their (default) timeouts.
    let mut held = Vec::new();
    let mut chunk = b"[".to_vec();
    chunk.resize(64 << 10, b' ');
    for _ in 0..n {
        let mut stalled = server.connect().await;
        stalled
            .write_all(&events_head(8 << 20))
            .await
            .expect("write");
        stalled.write_all(&chunk).await.expect("write");
        held.push(stalled);
        let mut half = server.connect().await;
        half.write_all(b"GET /api/health HTTP/1.1\r\nHo")
            .await
            .expect("write");
        held.push(half);
        held.push(server.connect().await);
    }
    for _ in 0..3 {
        server.health_answers().await;
    }
    // They are still connected, unanswered: the answers above did not come from their
    // connections being closed.
    for stream in &mut held {
        silent_for(stream, Duration::from_millis(1)).await;
    }
    drop(held);
    server.health_answers().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_and_served_ones_are_not_hurt() {
    let server = Server::start(
        ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        },
        PATIENCE,
    )
    .await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    for stream in [&mut first, &mut second] {
        stream.write_all(HEALTH).await.expect("write");
        assert_eq!(read_response(stream).await.0, 200);
    }

    // A third client connects (the kernel's backlog takes it) but is not served...
    let mut third = server.connect().await;
    third.write_all(HEALTH).await.expect("write");
    silent_for(&mut third, Duration::from_millis(500)).await;

    // ...while the connections being served still are.
    for stream in [&mut first, &mut second] {
        stream.write_all(HEALTH).await.expect("write");
        assert_eq!(read_response(stream).await.0, 200);
    }

    // Once one goes away, the waiting client is served, and the other still is.
    drop(second);
    assert_eq!(read_response(&mut third).await.0, 200);
    first.write_all(HEALTH).await.expect("write");
    assert_eq!(read_response(&mut first).await.0, 200);

    drop((first, third));
    server.health_answers().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_idle_connections() {
    let shutdown_timeout = Duration::from_secs(30);
    let server = Server::start(ConnectionLimits::default(), shutdown_timeout).await;
    // A keep-alive client that made a request and keeps its connection open...
    let mut idle = server.connect().await;
    idle.write_all(HEALTH).await.expect("write");
    assert_eq!(read_response(&mut idle).await.0, 200);
    // ...one that connected and said nothing, and one halfway through a head.
    let mute = server.connect().await;
    let mut half = server.connect().await;
    half.write_all(b"GET /api/health HTTP/1.1\r\nHo")
        .await
        .expect("write");
    // Let the server take them all in.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    timeout(shutdown_timeout * 2, server.spawned.stop())
        .await
        .expect("stops")
        .expect("stop");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopping with only idle connections took {took:?} (shutdown timeout {shutdown_timeout:?})"
    );
    closed_without_answer(&mut idle).await;
    drop((mute, half));
}

/// Reads the live stream until `needle` shows up in `seen`.
async fn read_until(stream: &mut reqwest::Response, seen: &mut String, needle: &str) {
    timeout(PATIENCE, async {
        while !seen.contains(needle) {
            match stream.chunk().await.expect("read the stream") {
                Some(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                None => panic!("the stream ended; got {seen:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in time; got {seen:?}"));
}

/// A deployment, as the worker tests register it.
fn deployment() -> Value {
    json!({
        "flow": "train",
        "name": "nightly",
        "flow_key": "houses::train",
        "version": "v1",
        "parameter_schema": {
            "type": "object",
            "properties": {"epochs": {"type": "integer"}},
            "additionalProperties": false
        },
        "output_schema": {},
        "default_parameters": {"epochs": 5},
        "tags": ["ml"],
        "concurrency_limit": null,
        "retries": 0,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_waits_outlast_every_timeout() {
    // Every timeout at 300 ms; every wait below lasts 2 s or more.
    let server = Server::start(limits(SHORT, SHORT, SHORT), PATIENCE).await;
    let client = fresh_client();
    let wait = Duration::from_secs(2);

    // The live stream stays open past the idle timeout and still delivers.
    let mut stream = client
        .get(server.url("/api/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "event: ready").await;

    let reply = client
        .post(server.url("/api/v1/deployments"))
        .json(&deployment())
        .send()
        .await
        .expect("register");
    assert!(reply.status().is_success(), "{}", reply.status());

    // A worker's claim long-poll with nothing to claim waits its whole wait, then answers.
    let start = Instant::now();
    let reply = client
        .post(server.url("/api/v1/workers/claim"))
        .json(&json!({
            "worker": Uuid::now_v7(),
            "worker_name": "slow-poller",
            "deployments": [{"flow": "train", "name": "nightly", "version": "v1"}],
            "max_runs": 1,
            "wait_seconds": wait.as_secs(),
        }))
        .send()
        .await
        .expect("claim");
    assert_eq!(reply.status(), 200);
    let claimed: Value = reply.json().await.expect("claim body");
    assert_eq!(claimed["runs"], json!([]), "{claimed}");
    assert!(start.elapsed() >= wait - Duration::from_millis(100));

    // A trigger with `Prefer: wait` waits for a run no worker takes, then answers 202.
    let start = Instant::now();
    let reply = client
        .post(server.url("/api/v1/deployments/train/nightly/runs"))
        .header("Prefer", format!("wait={}", wait.as_secs()))
        .json(&json!({"parameters": {"epochs": 1}, "version": "v1"}))
        .send()
        .await
        .expect("trigger");
    assert_eq!(reply.status(), 202);
    let run: Value = reply.json().await.expect("run");
    assert!(start.elapsed() >= wait - Duration::from_millis(100));
    let id = run["id"].as_str().expect("run id").to_string();

    // A result read with `?wait=` likewise.
    let start = Instant::now();
    let reply = client
        .get(server.url(&format!(
            "/api/v1/flow-runs/{id}/result?wait={}",
            wait.as_secs()
        )))
        .send()
        .await
        .expect("result");
    assert_eq!(reply.status(), 202);
    assert!(start.elapsed() >= wait - Duration::from_millis(100));

    // All the while the stream stayed open: it announces the run (the trigger's change may
    // be there already) and goes on delivering.
    read_until(&mut stream, &mut seen, &id).await;
    drop(stream);
    server.stop().await;
}
