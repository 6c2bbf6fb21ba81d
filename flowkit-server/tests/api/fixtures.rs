//! Building events (a flow run with its tasks, as the runtime reports it) and reading ids and
//! query values for the routes.

use chrono::{DateTime, Duration, Utc};
use flowkit_server::wire::{Event, EventBody, LogLevel, RunDetails, RunKind, State, StateType};
use serde_json::{Value, json};
use uuid::Uuid;

/// A flow run with its tasks, as the runtime reports it.
pub(crate) struct FlowRun {
    pub(crate) flow: Uuid,
    pub(crate) tasks: Vec<Uuid>,
    pub(crate) events: Vec<Event>,
}

pub(crate) fn event(
    run: Uuid,
    kind: RunKind,
    name: &str,
    flow: Uuid,
    parent: Option<Uuid>,
    at: DateTime<Utc>,
    body: EventBody,
) -> Event {
    Event {
        id: Uuid::now_v7(),
        run_id: run,
        parent_run_id: parent,
        flow_run_id: Some(flow),
        run_kind: kind,
        name: name.to_string().into(),
        attempt: 1,
        timestamp: at,
        lease: None,
        body,
    }
}

pub(crate) fn state(kind: StateType, details: Option<RunDetails>) -> EventBody {
    EventBody::State {
        state: State::new(kind),
        details: details.map(Box::new),
    }
}

pub(crate) fn log(level: LogLevel, message: &str) -> EventBody {
    let mut fields = serde_json::Map::new();
    fields.insert("attempt_note".into(), json!("<i>ok</i>"));
    EventBody::Log {
        level,
        message: message.to_string(),
        fields,
    }
}

/// `name`: Pending → Running → (task i: Pending → Running → log → Completed, each depending on
/// the one before) → WARN log → Completed, one millisecond apart from `start`.
pub(crate) fn flow_run(name: &str, tasks: usize, start: DateTime<Utc>) -> FlowRun {
    let flow = Uuid::now_v7();
    let mut at = start;
    let mut tick = || {
        at += Duration::milliseconds(1);
        at
    };
    let mut events = vec![
        event(
            flow,
            RunKind::Flow,
            name,
            flow,
            None,
            tick(),
            state(
                StateType::Pending,
                Some(RunDetails {
                    task_key: format!("demo::{name}").into(),
                    tags: vec!["nightly".into()],
                    parameters: Some(json!({"rows": 3})),
                    worker: Some("test-host:1".into()),
                    ..RunDetails::default()
                }),
            ),
        ),
        event(
            flow,
            RunKind::Flow,
            name,
            flow,
            None,
            tick(),
            state(StateType::Running, None),
        ),
    ];
    let mut ids: Vec<Uuid> = Vec::new();
    for i in 0..tasks {
        let task = Uuid::now_v7();
        let task_name = format!("step_{i}");
        let details = RunDetails {
            task_key: format!("demo::{task_name}").into(),
            upstream: ids.last().copied().into_iter().collect(),
            ..RunDetails::default()
        };
        for body in [
            state(StateType::Pending, Some(details)),
            state(StateType::Running, None),
            log(LogLevel::Info, &format!("step {i} working")),
            state(StateType::Completed, None),
        ] {
            events.push(event(
                task,
                RunKind::Task,
                &task_name,
                flow,
                Some(flow),
                tick(),
                body,
            ));
        }
        ids.push(task);
    }
    events.push(event(
        flow,
        RunKind::Flow,
        name,
        flow,
        None,
        tick(),
        log(LogLevel::Warn, "almost done"),
    ));
    events.push(event(
        flow,
        RunKind::Flow,
        name,
        flow,
        None,
        tick(),
        state(StateType::Completed, None),
    ));
    FlowRun {
        flow,
        tasks: ids,
        events,
    }
}

pub(crate) fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("array")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect()
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
