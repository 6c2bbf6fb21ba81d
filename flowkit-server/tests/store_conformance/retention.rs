//! Retention: runs received before the cutoff go with their whole group, later ones stay, and
//! an event's timestamp (the client's word) does not age its run.

use crate::fixtures::*;
use crate::harness::Env;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::store::{Backend, LogFilter, PageRequest, RunFilter};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::StateType;
use serde_json::json;

conformance!(
    retention_deletes_old_runs_with_their_children,
    a_backdated_event_does_not_age_its_run,
);

async fn retention_deletes_old_runs_with_their_children(env: &mut Env) {
    let store = &env.store;
    // Events' timestamps are old, but what counts is when the store received them: the old
    // runs are ingested before `cutoff` is taken, the fresh ones after.
    let old = DateTime::from_timestamp(1_600_000_000, 0).expect("instant");
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
    // Received after the cutoff (below): goes with its flow run all the same.
    let late = Utc::now() + Duration::days(1);
    let late_events = vec![
        late_task.first(late, StateType::Pending, details("demo::late")),
        late_task.log(1, late, LogLevel::Info, "late log", json!({})),
    ];
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
    ingest(store, events).await;
    let cutoff = Utc::now();
    // New runs that must stay, received after the cutoff (though dated long before it).
    let fresh = scenario("fresh", old + Duration::hours(12));
    ingest(store, fresh.events.clone()).await;
    ingest(store, late_events).await;

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

/// One state event dated 2000 for a current flow run, and one for a task of it, are stored in
/// their histories, but a sweep of what was received more than 30 days ago keeps the flow run
/// with its tasks and logs (the earliest timestamp used to decide, so it deleted them).
async fn a_backdated_event_does_not_age_its_run(env: &mut Env) {
    let store = &env.store;
    let now = Utc::now();
    let s = scenario("current", now - Duration::minutes(5));
    ingest(store, s.events.clone()).await;
    let y2k = DateTime::from_timestamp(946_771_200, 0).expect("2000-01-02");
    // The runs' identities, to stamp events for them as a client (or a forger) would.
    let identity = |r: &flowkit_server::store::RunRecord| Run {
        id: r.id,
        kind: r.kind,
        name: r.name.clone(),
        parent: r.parent_run_id,
        flow: r.flow_run_id,
    };
    let forged = vec![
        identity(&s.flow).state(1, y2k, StateType::Running, None),
        identity(&s.extract).state(1, y2k, StateType::Running, None),
    ];
    let outcome = store.ingest(forged).await.expect("ingest");
    assert_eq!(outcome.accepted, 2);
    let backdated = store
        .get_run(s.flow.id)
        .await
        .expect("get")
        .expect("flow run");
    assert_eq!(backdated.created, y2k, "the history holds the event");
    assert_eq!(
        store
            .delete_before(now - Duration::days(30), 100)
            .await
            .expect("sweep"),
        0
    );
    for run in [&s.flow, &s.extract, &s.transform, &s.subflow, &s.load] {
        assert!(
            store.get_run(run.id).await.expect("get").is_some(),
            "run {} was deleted",
            run.name
        );
    }
    assert_eq!(
        store.child_runs(s.flow.id).await.expect("children").len(),
        3
    );
    assert_eq!(
        all_logs(store, s.flow.id, &LogFilter::default(), 50)
            .await
            .len(),
        s.flow_logs.len()
    );
}
