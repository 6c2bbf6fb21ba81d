//! `tracing` events inside runs become the runs' log events, end to end through the executor
//! and the event bus, while the user's own subscriber still gets everything.
//!
//! The runs are driven through `flowkit::__private::run`, the function `#[task]` and `#[flow]`
//! expand to, so this test does not depend on the macros.

use flowkit::__private::{CallSite, RunKind, Shape, TaskSpec, once, run};
use flowkit::sink::Sink;
use flowkit::{Event, EventBody, LogLevel};
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

static FLOW: LazyLock<TaskSpec> =
    LazyLock::new(|| TaskSpec::new(RunKind::Flow, "log_flow", "logs::log_flow", "0"));
static TASK: LazyLock<TaskSpec> =
    LazyLock::new(|| TaskSpec::new(RunKind::Task, "log_task", "logs::log_task", "0"));

async fn log_task(n: u64) -> u64 {
    let span = tracing::info_span!("log_task", n);
    run(
        &TASK,
        Shape::infallible(),
        CallSite::default(),
        span,
        once(n, |n| async move {
            tracing::info!(n, "task <i>{n}</i>");
            n * 2
        }),
    )
    .await
}

async fn log_flow() -> u64 {
    let span = tracing::info_span!("log_flow");
    run(
        &FLOW,
        Shape::infallible(),
        CallSite::default(),
        span,
        once((), |()| async {
            tracing::info!("flow starts");
            let doubled = log_task(21).await;
            tracing::debug!("below the capture level");
            doubled
        }),
    )
    .await
}

/// Keeps every event of the process.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn on_event(&mut self, event: &Event) {
        self.0.lock().expect("collector lock").push(event.clone());
    }
}

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

#[tokio::test]
async fn logs_inside_runs_are_captured_and_still_reach_the_user() {
    let collect = Collect::default();
    flowkit::sink::add_sink(collect.clone());
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let user = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(user);

    tracing::info!("before the flow");
    assert_eq!(log_flow().await, 42);
    assert!(flowkit::flush().await);

    let events = collect.0.lock().expect("collector lock").clone();
    let logs: Vec<(&str, RunKind, LogLevel, &str, serde_json::Value)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Log {
                level,
                message,
                fields,
            } => Some((
                &*e.name,
                e.run_kind,
                *level,
                message.as_str(),
                serde_json::Value::Object(fields.clone()),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        logs,
        [
            (
                "log_flow",
                RunKind::Flow,
                LogLevel::Info,
                "flow starts",
                serde_json::json!({})
            ),
            (
                "log_task",
                RunKind::Task,
                LogLevel::Info,
                "task <i>21</i>",
                serde_json::json!({"n": 21})
            ),
        ]
    );
    // A log event belongs to the run it was emitted in, nested under the flow.
    let task_log = events
        .iter()
        .find(|e| matches!(&e.body, EventBody::Log { message, .. } if message.starts_with("task")))
        .expect("the task's log");
    let flow_id = events
        .iter()
        .find(|e| e.name == "log_flow")
        .map(|e| e.run_id);
    assert_eq!(task_log.flow_run_id, flow_id);
    assert_eq!(task_log.parent_run_id, flow_id);

    let text = String::from_utf8(buffer.0.lock().expect("buffer lock").clone()).expect("utf-8");
    for line in [
        "before the flow",
        "flow starts",
        "task <i>21</i>",
        "below the capture level",
    ] {
        assert!(
            text.contains(line),
            "the user's subscriber still gets {line:?}:\n{text}"
        );
    }
    assert!(
        text.contains("log_flow:log_task{n=21}: "),
        "with the run spans:\n{text}"
    );
}
