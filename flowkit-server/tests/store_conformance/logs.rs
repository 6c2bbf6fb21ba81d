//! A flow run's logs: pages in time order, filters by level and by run.

use crate::fixtures::*;
use crate::harness::Env;
use flowkit_server::store::{Backend, LogFilter, LogRecord};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::StateType;
use serde_json::json;

conformance!(logs_page_and_filter_by_level,);

async fn logs_page_and_filter_by_level(env: &mut Env) {
    let store = &env.store;
    let flow = Run::flow("chatty", None);
    let task = Run::task("worker", &flow);
    let other = Run::flow("other", None);
    let levels = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];
    let mut events = vec![
        flow.first(at(0), StateType::Pending, details("demo::chatty")),
        task.first(at(1), StateType::Pending, details("demo::worker")),
    ];
    let mut logs = Vec::new();
    for i in 0..230i64 {
        let run = if i % 3 == 0 { &task } else { &flow };
        // Pairs share a timestamp: the event id orders them.
        let event = run.log(
            1,
            at(10 + i / 2),
            levels[(i % 5) as usize],
            &format!("line {i}"),
            json!({"i": i}),
        );
        logs.push(event.clone());
        events.push(event);
    }
    events.push(other.log(1, at(20), LogLevel::Error, "elsewhere", json!({})));
    // Logs in a batch separate from, and before, the states of their runs.
    let mut rng = fastrand::Rng::with_seed(11);
    rng.shuffle(&mut events);
    for chunk in events.chunks(50) {
        ingest(store, chunk.to_vec()).await;
    }
    logs.sort_by_key(|e| (e.timestamp, e.id));

    let all = all_logs(store, flow.id, &LogFilter::default(), 100).await;
    assert_eq!(all, logs.iter().map(log_record).collect::<Vec<_>>());

    let warn = all_logs(
        store,
        flow.id,
        &LogFilter {
            min_level: Some(LogLevel::Warn),
            run_id: None,
        },
        17,
    )
    .await;
    let expected: Vec<LogRecord> = logs
        .iter()
        .map(log_record)
        .filter(|l| l.level >= LogLevel::Warn)
        .collect();
    assert_eq!(warn, expected);

    let of_task = all_logs(
        store,
        flow.id,
        &LogFilter {
            min_level: Some(LogLevel::Info),
            run_id: Some(task.id),
        },
        10,
    )
    .await;
    let expected: Vec<LogRecord> = logs
        .iter()
        .map(log_record)
        .filter(|l| l.run_id == task.id && l.level >= LogLevel::Info)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(of_task, expected);

    let first = store
        .logs(flow.id, &LogFilter::default(), &page(230))
        .await
        .expect("logs");
    assert_eq!(
        (first.items.len(), first.next_cursor),
        (230, None),
        "an exact last page has no cursor"
    );
}
