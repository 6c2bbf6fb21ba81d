//! Over a real socket: the live stream, slow stream clients, graceful shutdown, and an
//! oversized body.

use crate::fixtures::flow_run;
#[cfg(feature = "sqlite")]
use crate::harness::{start, stop};
use chrono::Utc;
use flowkit_server::config::Settings;
use flowkit_server::store::{Backend, Store};
use flowkit_server::wire::{Event, StateType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "sqlite")]
/// Reads the SSE response until `needle` shows up (or fails after 10 s).
async fn read_until(response: &mut reqwest::Response, buffer: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !buffer.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 10 s; got {buffer:?}"))
            .expect("read stream");
        match chunk {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => panic!("stream ended before {needle:?}; got {buffer:?}"),
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_sends_run_changes() {
    let server = start(Settings::default()).await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect to the stream");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|ct| ct.starts_with("text/event-stream"))
    );
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;

    let run = flow_run("live", 1, Utc::now());
    let reply = client
        .post(format!("http://{}/api/events", server.addr))
        .json(&run.events)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 202);
    read_until(&mut stream, &mut buffer, &run.tasks[0].to_string()).await;
    read_until(&mut stream, &mut buffer, &run.flow.to_string()).await;
    let flow_change = buffer
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|change| change["run_id"] == run.flow.to_string())
        .expect("a change of the flow run");
    assert_eq!(
        flow_change,
        json!({"run_id": run.flow, "flow_run_id": run.flow, "kind": "flow", "name": "live", "state": "Completed"})
    );
    assert!(buffer.contains("event: run"));

    // A replay changes nothing, and is not announced.
    client
        .post(format!("http://{}/api/events", server.addr))
        .json(&run.events)
        .send()
        .await
        .expect("post");
    if let Ok(chunk) =
        tokio::time::timeout(std::time::Duration::from_millis(300), stream.chunk()).await
    {
        panic!("a replay was announced: {chunk:?}");
    }

    stop(server).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_clients_are_told_to_refetch() {
    let server = start(Settings {
        stream_capacity: 2,
        ..Settings::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect");
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;
    let events: Vec<Event> = (0..200)
        .flat_map(|i| flow_run(&format!("burst_{i}"), 0, Utc::now()).events)
        .collect();
    let reply = client
        .post(format!("http://{}/api/events", server.addr))
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 202);
    read_until(&mut stream, &mut buffer, "event: lagged").await;
    assert!(buffer.contains("\"missed\":"), "{buffer}");
    stop(server).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = start(Settings::default()).await;
    let client = reqwest::Client::new();
    // An open live stream must not hold the shutdown up.
    let mut stream = client
        .get(format!("http://{}/api/stream", server.addr))
        .send()
        .await
        .expect("connect");
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, "event: ready").await;

    // A request in flight: headers and half of the body sent.
    let run = flow_run("in_flight", 3, Utc::now());
    let body = serde_json::to_vec(&run.events).expect("json");
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("write head");
    let half = body.len() / 2;
    socket.write_all(&body[..half]).await.expect("write half");
    socket.flush().await.expect("flush");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !server.task.is_finished(),
        "the server stopped with a request in flight"
    );

    socket
        .write_all(&body[half..])
        .await
        .expect("write the rest");
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut response),
    )
    .await
    .expect("response within 10 s")
    .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");

    tokio::time::timeout(std::time::Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops once the request is answered")
        .expect("join")
        .expect("run");
    // The live stream ended with the server.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream did not end");
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "still accepting connections"
    );

    // The acknowledged batch is in the database.
    let store = Store::connect(&server.url).await.expect("reopen");
    let flow = store
        .get_run(run.flow)
        .await
        .expect("get")
        .expect("the flow run was stored");
    assert_eq!(flow.state, StateType::Completed);
    assert_eq!(store.child_runs(run.flow).await.expect("children").len(), 3);
    store.close().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_over_a_real_socket_gets_a_json_413() {
    let server = start(Settings {
        max_body: 1024 * 1024,
        ..Settings::default()
    })
    .await;
    let client = reqwest::Client::new();
    let body = format!("[\"{}\"]", "x".repeat(3 * 1024 * 1024));
    for content_length in [true, false] {
        let request = client
            .post(format!("http://{}/api/events", server.addr))
            .header("content-type", "application/json");
        let request = if content_length {
            request.body(body.clone())
        } else {
            // Chunked: the limit is only found while reading.
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                .as_bytes()
                .chunks(64 * 1024)
                .map(|c| Ok(c.to_vec()))
                .collect();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        };
        let response = request.send().await.expect("an answer, not a reset");
        assert_eq!(response.status(), 413);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "payload_too_large");
    }
    stop(server).await;
}
