//! The sinks through the public API: what a user adding their own summary or event log sees.

use chrono::{TimeDelta, Utc};
use flowkit::sink::Sink;
use flowkit::sink::jsonl::JsonlSink;
use flowkit::sink::summary::Summary;
use flowkit::{Event, EventBody, RunKind, State, StateType};
use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A flow `nightly` calling `extract` (completed) and `load` (failed).
fn flow_events() -> Vec<Event> {
    let start = Utc::now();
    let flow = Uuid::now_v7();
    let mut events = Vec::new();
    let mut push = |run_id, parent, kind, name: &'static str, ms, state| {
        events.push(Event {
            id: Uuid::now_v7(),
            run_id,
            parent_run_id: parent,
            flow_run_id: Some(flow),
            run_kind: kind,
            name: Cow::Borrowed(name),
            attempt: 1,
            timestamp: start + TimeDelta::milliseconds(ms),
            lease: None,
            body: EventBody::State {
                state,
                details: None,
            },
        });
    };
    let (extract, load) = (Uuid::now_v7(), Uuid::now_v7());
    push(
        flow,
        None,
        RunKind::Flow,
        "nightly",
        0,
        State::new(StateType::Pending),
    );
    push(
        flow,
        None,
        RunKind::Flow,
        "nightly",
        1,
        State::new(StateType::Running),
    );
    for (id, name) in [(extract, "extract"), (load, "load")] {
        push(
            id,
            Some(flow),
            RunKind::Task,
            name,
            2,
            State::new(StateType::Pending),
        );
        push(
            id,
            Some(flow),
            RunKind::Task,
            name,
            3,
            State::new(StateType::Running),
        );
    }
    let done = State::new(StateType::Completed);
    push(extract, Some(flow), RunKind::Task, "extract", 203, done);
    let failed = State::with_message(StateType::Failed, "connection refused");
    push(load, Some(flow), RunKind::Task, "load", 1_503, failed);
    let flow_failed = State::with_message(StateType::Failed, "load failed");
    push(flow, None, RunKind::Flow, "nightly", 1_601, flow_failed);
    events
}

#[test]
fn summary_prints_one_table_per_top_level_flow() {
    let buffer = Buffer::default();
    let mut summary = Summary::new(Box::new(buffer.clone()));
    for event in &flow_events() {
        summary.on_event(event);
    }
    let text = String::from_utf8(buffer.0.lock().expect("buffer lock").clone()).expect("utf-8");
    print!("{text}");
    assert!(text.contains("flow run \"nightly\""), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        text.contains("nightly: Failed in 1.60s: load failed"),
        "{text}"
    );
}

#[test]
fn event_log_round_trips_through_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("logs/events.jsonl");
    let events = flow_events();
    let mut sink = JsonlSink::open(&path).expect("open the event log");
    for event in &events {
        sink.on_event(event);
    }
    sink.flush();
    let file = std::fs::File::open(&path).expect("open for reading");
    let back: Vec<Event> = std::io::BufReader::new(file)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("an event per line"))
        .collect();
    assert_eq!(back, events);
}
