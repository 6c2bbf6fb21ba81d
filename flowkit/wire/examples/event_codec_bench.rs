//! How fast events are written and read as JSON: what the reporter pays per event to send it,
//! and the server to parse it. Run with:
//!
//! ```sh
//! cargo run --release -p flowkit-wire --example event_codec_bench
//! ```
//!
//! Prints `key=value`: `serialize_ns_per_event`, `parse_ns_per_event` (realistic task and
//! flow events: states with details, log lines with fields), best of several rounds.

use chrono::{Duration, Utc};
use flowkit_wire::{Event, EventBody, LogLevel, RunDetails, RunKind, State, StateType};
use std::hint::black_box;
use std::time::Instant;
use uuid::Uuid;

fn events(n: usize) -> Vec<Event> {
    let start = Utc::now();
    let flow = Uuid::now_v7();
    (0..n)
        .map(|i| {
            let run = Uuid::now_v7();
            let body = match i % 4 {
                0 => EventBody::State {
                    state: State::new(StateType::Pending),
                    details: Some(Box::new(RunDetails {
                        task_key: "etl::download".into(),
                        tags: vec!["nightly".into()],
                        worker: Some("host:1234".into()),
                        ..RunDetails::default()
                    })),
                },
                1 => EventBody::State {
                    state: State::new(StateType::Running),
                    details: None,
                },
                2 => EventBody::Log {
                    level: LogLevel::Info,
                    message: format!("downloaded part {i} of the file"),
                    fields: serde_json::Map::from_iter([("bytes".to_string(), (i * 10).into())]),
                },
                _ => EventBody::State {
                    state: State::new(StateType::Completed),
                    details: None,
                },
            };
            Event {
                id: Uuid::now_v7(),
                run_id: run,
                parent_run_id: Some(flow),
                flow_run_id: Some(flow),
                run_kind: RunKind::Task,
                name: "download".into(),
                attempt: 1,
                timestamp: start + Duration::microseconds(i as i64 * 7 + 3),
                lease: None,
                body,
            }
        })
        .collect()
}

fn main() -> Result<(), serde_json::Error> {
    let events = events(100_000);
    let mut best_write = f64::MAX;
    let mut best_read = f64::MAX;
    let mut lines = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        lines.clear();
        for event in &events {
            let mut line = Vec::with_capacity(256);
            serde_json::to_writer(&mut line, event)?;
            lines.push(line);
        }
        best_write = best_write.min(started.elapsed().as_nanos() as f64 / events.len() as f64);
        let started = Instant::now();
        for line in &lines {
            black_box(serde_json::from_slice::<Event>(line)?);
        }
        best_read = best_read.min(started.elapsed().as_nanos() as f64 / events.len() as f64);
    }
    let bytes: usize = lines.iter().map(Vec::len).sum();
    println!("events={}", events.len());
    println!("bytes_per_event={}", bytes / events.len());
    println!("serialize_ns_per_event={best_write:.0}");
    println!("parse_ns_per_event={best_read:.0}");
    Ok(())
}
