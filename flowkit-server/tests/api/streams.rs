//! The live stream under load: each change serialized once however many streams follow it,
//! streams bounded in total and per key, and a client may follow flow runs only or one run.

use crate::fixtures::{event, flow_run, log};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::Utc;
use flowkit_server::auth::ApiKeys;
use flowkit_server::config::Settings;
use flowkit_server::wire::{LogLevel, RunKind};
use futures::StreamExt;
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;
use uuid::Uuid;

/// A guard against a hung test, not a timed assertion.
const HANG: Duration = Duration::from_secs(60);

type ByteStream = Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// One open stream, read event by event.
struct Sse {
    body: ByteStream,
    buffer: String,
}

impl Sse {
    async fn open(url: &str, secret: Option<&str>) -> Result<Sse, reqwest::Response> {
        let mut request = reqwest::Client::new().get(url);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        let response = request.send().await.expect("stream request");
        if response.status() != StatusCode::OK {
            return Err(response);
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "content type"
        );
        let mut sse = Sse {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        };
        let (name, _) = sse.next().await;
        assert_eq!(name, "ready");
        Ok(sse)
    }

    /// The next event (comments skipped): its name and data.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue;
                }
                return (name, data);
            }
            let chunk = tokio::time::timeout(HANG, self.body.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `run` change.
    async fn next_change(&mut self) -> Value {
        let (name, data) = self.next().await;
        assert_eq!(name, "run", "{data}");
        serde_json::from_str(&data).expect("change JSON")
    }
}

/// However many streams are open, each change is serialized once, and every stream gets it.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_serialized_once_for_every_stream() {
    let server = TestServer::sqlite().await;
    let listening = server.listen().await;
    let url = format!("{}/api/v1/stream", listening.url);
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(Sse::open(&url, None).await.expect("stream"));
    }
    assert_eq!(server.state.live_streams().open, 20);
    let before = server.state.live_streams().changes_serialized;
    let run = flow_run("etl", 3, Utc::now());
    server.ingest(&run.events).await;
    for stream in &mut streams {
        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(stream.next_change().await["run_id"].clone());
        }
        assert_eq!(runs[0], run.flow.to_string());
    }
    let after = server.state.live_streams().changes_serialized;
    assert_eq!(
        after - before,
        4,
        "4 runs changed: 4 serializations for 20 streams"
    );
    drop(streams);
    server.finish().await;
}

/// `?flow_run_id=` carries one flow run and its tasks; `?kind=flow` flow runs only.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_can_follow_one_run_or_flow_runs_only() {
    let server = TestServer::sqlite().await;
    let listening = server.listen().await;
    let base = format!("{}/api/v1/stream", listening.url);
    let a = flow_run("wanted", 2, Utc::now());
    let b = flow_run("other", 2, Utc::now());
    let mut one = Sse::open(&format!("{base}?flow_run_id={}", a.flow), None)
        .await
        .expect("stream");
    let mut flows = Sse::open(&format!("{base}?kind=flow"), None)
        .await
        .expect("stream");
    server.ingest(&b.events).await;
    server.ingest(&a.events).await;
    // Last: a log of A, the sentinel: what either stream got before it is all it will get.
    let sentinel = event(
        a.flow,
        RunKind::Flow,
        "wanted",
        a.flow,
        None,
        Utc::now(),
        log(LogLevel::Info, "sentinel"),
    );
    server.ingest(&[sentinel]).await;
    let is_sentinel = |c: &Value| c["run_id"] == a.flow.to_string() && c["state"].is_null();

    let mut seen = Vec::new();
    loop {
        let change = one.next_change().await;
        if is_sentinel(&change) {
            break;
        }
        seen.push(change);
    }
    let mut ids: Vec<String> = seen
        .iter()
        .map(|c| c["run_id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    let mut wanted: Vec<String> = std::iter::once(a.flow)
        .chain(a.tasks.iter().copied())
        .map(|id: Uuid| id.to_string())
        .collect();
    wanted.sort();
    assert_eq!(ids, wanted, "A and its tasks, nothing of B: {seen:?}");

    let mut names = Vec::new();
    loop {
        let change = flows.next_change().await;
        assert_eq!(change["kind"], "flow", "{change}");
        if is_sentinel(&change) {
            break;
        }
        names.push(change["name"].as_str().expect("name").to_string());
    }
    assert_eq!(names, ["other", "wanted"]);

    let reply = server.get("/api/v1/stream?kind=flows").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_parameter");
    let reply = server.get("/api/v1/stream?flow_run_id=nope").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    server.finish().await;
}

/// `?flow_run_id=ID&logs=true` carries that flow run's log lines (its own and its tasks') as
/// they arrive, before the change that ends it; no other stream carries log lines.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_can_follow_one_run_s_log_lines() {
    let server = TestServer::sqlite().await;
    let listening = server.listen().await;
    let base = format!("{}/api/v1/stream", listening.url);
    let a = flow_run("wanted", 1, Utc::now());
    let b = flow_run("other", 1, Utc::now());
    let mut with_logs = Sse::open(&format!("{base}?flow_run_id={}&logs=true", a.flow), None)
        .await
        .expect("stream");
    let mut without = Sse::open(&format!("{base}?flow_run_id={}", a.flow), None)
        .await
        .expect("stream");
    let line = |run: Uuid, flow: Uuid, kind: RunKind, text: &str| {
        event(
            run,
            kind,
            "x",
            flow,
            None,
            Utc::now(),
            log(LogLevel::Warn, text),
        )
    };
    // One batch: a line of B, a line of A's task, a line of A itself, then A's own states.
    let mut batch = vec![
        line(b.flow, b.flow, RunKind::Flow, "not this one"),
        line(a.tasks[0], a.flow, RunKind::Task, "task says hi"),
        line(a.flow, a.flow, RunKind::Flow, "flow says hi"),
    ];
    batch.extend(a.events.iter().cloned());
    server.ingest(&batch).await;
    let mut lines = Vec::new();
    loop {
        let (name, data) = with_logs.next().await;
        if name == "run" {
            break;
        }
        assert_eq!(name, "log", "{data}");
        let entry: Value = serde_json::from_str(&data).expect("a LogEntry");
        assert_eq!(entry["flow_run_id"], a.flow.to_string(), "{entry}");
        // (The fixture's runs log too: A's lines come as well.)
        let message = entry["message"].as_str().expect("message");
        if message.contains("says hi") || message == "not this one" {
            assert_eq!(entry["level"], "WARN");
            lines.push(message.to_string());
        }
    }
    assert_eq!(
        lines,
        ["task says hi", "flow says hi"],
        "before the run's change"
    );
    // Without `logs`: changes only (A and its task).
    for _ in 0..2 {
        let (name, _) = without.next().await;
        assert_eq!(name, "run");
    }
    // Bad uses.
    let reply = server.get("/api/v1/stream?logs=true").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error_message().contains("flow_run_id"),
        "{}",
        reply.body
    );
    let reply = server
        .get(&format!("/api/v1/stream?flow_run_id={}&logs=yes", a.flow))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // A closed stream stops the lines being serialized: nothing follows A's logs any more.
    drop(with_logs);
    drop(without);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.state.live_streams().changes_serialized;
    server
        .ingest(&[line(a.flow, a.flow, RunKind::Flow, "nobody reads this")])
        .await;
    assert_eq!(server.state.live_streams().changes_serialized, before);
    server.finish().await;
}

/// Beyond `--max-streams-per-key` a key gets 429, beyond `--max-streams` anyone 503, both with
/// `Retry-After`; a closed stream frees its place.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_in_total_and_per_key() {
    const ONE: &str = "one-secret-0123456789";
    const TWO: &str = "two-secret-0123456789";
    let settings = Settings {
        api_keys: ApiKeys::new(vec![
            format!("one:{ONE}:read").parse().expect("key"),
            format!("two:{TWO}:read,report").parse().expect("key"),
        ])
        .expect("keys"),
        max_streams: 3,
        max_streams_per_key: 2,
        ..Settings::default()
    };
    let server = TestServer::sqlite_with(settings).await;
    let listening = server.listen().await;
    let url = format!("{}/api/v1/stream", listening.url);
    let first = Sse::open(&url, Some(ONE)).await.expect("1st of one");
    let _second = Sse::open(&url, Some(ONE)).await.expect("2nd of one");
    let refused = Sse::open(&url, Some(ONE))
        .await
        .err()
        .expect("3rd of one refused");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-streams-per-key")),
        "{body}"
    );

    let _third = Sse::open(&url, Some(TWO)).await.expect("1st of two");
    assert_eq!(server.state.live_streams().open, 3);
    let refused = Sse::open(&url, Some(TWO)).await.err().expect("server full");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-streams")),
        "{body}"
    );

    // Closing one frees its place: the server notices when it next writes to it.
    drop(first);
    let client = reqwest::Client::new();
    let mut reopened = None;
    for _ in 0..200 {
        let run = flow_run("poke", 0, Utc::now());
        let poke = client
            .post(format!("{}/api/v1/events", listening.url))
            .bearer_auth(TWO)
            .json(&run.events[..1])
            .send()
            .await
            .expect("poke");
        assert_eq!(poke.status(), StatusCode::ACCEPTED);
        if server.state.live_streams().open < 3 {
            reopened = Some(Sse::open(&url, Some(TWO)).await.expect("room again"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "the closed stream's place never came back"
    );
    server.finish().await;
}
