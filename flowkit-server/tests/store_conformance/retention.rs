//! Retention: old runs go with their whole group, new ones stay.

use crate::fixtures::*;
use crate::harness::Env;
use chrono::{DateTime, Duration};
use flowkit_server::store::{Backend, LogFilter, PageRequest, RunFilter};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::StateType;
use serde_json::json;

conformance!(retention_deletes_old_runs_with_their_children,);

async fn retention_deletes_old_runs_with_their_children(env: &mut Env) {
    let store = &env.store;
    let old = DateTime::from_timestamp(1_600_000_000, 0).expect("instant");
    let cutoff = DateTime::from_timestamp(1_700_000_000, 0).expect("instant");
    let mut old_runs = Vec::new();
    let mut events = Vec::new();
    // Old flows with tasks and logs; one with a task that started after the cutoff (a
    // long-running flow goes with its flow run).
    for i in 0..5 {
        let s = scenario(&format!("old-{i}"), old + Duration::hours(i));
        old_runs.extend([
            s.flow.id,
            s.extract.id,
            s.transform.id,
            s.subflow.id,
            s.load.id,
        ]);
        events.extend(s.events);
    }
    let long = Run::flow("long", None);
    let late_task = Run::task("late", &long);
    events.push(long.first(old, StateType::Pending, details("demo::long")));
    events.push(late_task.first(
        cutoff + Duration::days(1),
        StateType::Pending,
        details("demo::late"),
    ));
    events.push(late_task.log(
        1,
        cutoff + Duration::days(1),
        LogLevel::Info,
        "late log",
        json!({}),
    ));
    old_runs.extend([long.id, late_task.id]);
    // An old standalone task, and an orphan task whose flow run never arrived.
    let standalone = Run::standalone_task("alone");
    events.push(standalone.first(old, StateType::Completed, details("demo::alone")));
    let ghost = Run::flow("ghost", None);
    let orphan = Run::task("orphan", &ghost);
    events.push(orphan.first(old, StateType::Pending, details("demo::orphan")));
    old_runs.extend([standalone.id, orphan.id]);
    // Old log lines of a run whose states never arrived (a reporter dropped them).
    let unseen = Run::flow("unseen", None);
    let orphan_logs = 2u64;
    for n in 0..orphan_logs {
        events.push(unseen.log(
            1,
            old,
            LogLevel::Info,
            &format!("orphan log {n}"),
            json!({}),
        ));
    }
    // New runs that must stay.
    let fresh = scenario("fresh", cutoff + Duration::hours(1));
    events.extend(fresh.events.clone());
    ingest(store, events).await;

    let mut total = 0;
    let mut calls = 0;
    loop {
        let deleted = store.delete_before(cutoff, 3).await.expect("delete");
        calls += 1;
        assert!(calls < 100, "retention does not terminate");
        if deleted == 0 {
            break;
        }
        total += deleted;
    }
    assert_eq!(
        total,
        old_runs.len() as u64 + orphan_logs,
        "every old run and orphan log line"
    );
    let unseen_logs = store
        .logs(
            unseen.id,
            &LogFilter::default(),
            &PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .expect("logs");
    assert!(
        unseen_logs.items.is_empty(),
        "orphan log lines are deleted too"
    );
    for id in &old_runs {
        assert_eq!(
            store.get_run(*id).await.expect("get"),
            None,
            "old run {id} survived"
        );
        assert_eq!(store.states(*id).await.expect("states"), vec![]);
        assert_eq!(
            all_logs(store, *id, &LogFilter::default(), 50).await,
            vec![]
        );
    }
    check_scenario(store, &fresh).await;
    let left = all_flow_runs(store, &RunFilter::default()).await;
    assert_eq!(left.len(), 2);
    assert_eq!(store.delete_before(cutoff, 1000).await.expect("delete"), 0);
}
