//! Ingestion: what a batch of events reads back as, whatever the replays, order, batching and
//! timing of its events.

use crate::fixtures::*;
use crate::harness::Env;
use flowkit_server::store::{Backend, LogFilter, RunFilter};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::RunDetails;
use flowkit_server::wire::StateType;
use uuid::Uuid;

conformance!(
    realistic_flow_reads_back_exactly,
    replaying_changes_nothing,
    out_of_order_arrival_gives_the_same_runs,
    latest_state_is_greatest_timestamp_then_id,
    details_arriving_late_fill_the_run,
    reporter_drops_are_recorded,
    an_event_id_is_one_event_whatever_its_kind,
);

async fn realistic_flow_reads_back_exactly(env: &mut Env) {
    let store = &env.store;
    let s = scenario("etl", t0());
    let n = s.events.len();
    assert_eq!(ingest(store, s.events.clone()).await, (n, 0));
    check_scenario(store, &s).await;
    let listed = all_flow_runs(store, &RunFilter::default()).await;
    assert_eq!(
        listed,
        vec![s.subflow.clone(), s.flow.clone()],
        "flow runs newest first, subflows included"
    );
    assert_eq!(store.get_run(Uuid::now_v7()).await.expect("get"), None);
    assert_eq!(
        store.child_runs(Uuid::now_v7()).await.expect("children"),
        vec![]
    );
}

async fn replaying_changes_nothing(env: &mut Env) {
    let store = &env.store;
    let s = scenario("etl", t0());
    let n = s.events.len();
    assert_eq!(ingest(store, s.events.clone()).await, (n, 0));
    assert_eq!(
        ingest(store, s.events.clone()).await,
        (0, n),
        "replay of the whole batch"
    );
    // A batch that repeats an event of its own, and mixes new and old events.
    let run = Run::flow("again", None);
    let fresh = run.first(at(5_000), StateType::Pending, details("demo::again"));
    let mixed = vec![
        fresh.clone(),
        s.events[3].clone(),
        fresh.clone(),
        run.state(1, at(5_001), StateType::Running, None),
    ];
    assert_eq!(ingest(store, mixed).await, (2, 2));
    assert_eq!(ingest(store, vec![]).await, (0, 0));
    check_scenario(store, &s).await;
    let got = store
        .get_run(run.id)
        .await
        .expect("get")
        .expect("run exists");
    assert_eq!(
        (got.state, got.started),
        (StateType::Running, Some(at(5_001)))
    );
    assert_eq!(store.states(run.id).await.expect("states").len(), 2);
}

async fn out_of_order_arrival_gives_the_same_runs(env: &mut Env) {
    let store = &env.store;
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..4 {
        let s = scenario(&format!("shuffled-{round}"), at(round * 10_000));
        let mut events = s.events.clone();
        rng.shuffle(&mut events);
        // Random batch sizes, including batches of one event.
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let take = rng.usize(1..=rest.len().min(6));
            let (batch, tail) = rest.split_at(take);
            ingest(store, batch.to_vec()).await;
            rest = tail;
        }
        check_scenario(store, &s).await;
    }
}

async fn latest_state_is_greatest_timestamp_then_id(env: &mut Env) {
    let store = &env.store;
    // An older state arriving last does not win.
    let run = Run::flow("late-pending", None);
    let running = run.state(1, at(20), StateType::Running, None);
    let done = run.state(1, at(30), StateType::Completed, Some("ok"));
    let pending = run.first(at(10), StateType::Pending, details("demo::late"));
    ingest(store, vec![done]).await;
    ingest(store, vec![running]).await;
    ingest(store, vec![pending]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(
        (got.state, got.state_message.as_deref()),
        (StateType::Completed, Some("ok"))
    );
    assert_eq!(
        (got.created, got.started, got.ended),
        (at(10), Some(at(20)), Some(at(30)))
    );
    assert_eq!(got.task_key, "demo::late");

    // Equal timestamps: the greater event id wins, whatever the arrival order.
    for reverse in [false, true] {
        let run = Run::flow("tie", None);
        let mut low = run.state(1, at(50), StateType::Failed, Some("low id"));
        let mut high = run.state(1, at(50), StateType::Completed, Some("high id"));
        if low.id > high.id {
            std::mem::swap(&mut low.id, &mut high.id);
        }
        let (first, second) = if reverse { (high, low) } else { (low, high) };
        ingest(store, vec![first]).await;
        ingest(store, vec![second]).await;
        let got = store.get_run(run.id).await.expect("get").expect("exists");
        assert_eq!(
            got.state_message.as_deref(),
            Some("high id"),
            "reverse = {reverse}"
        );
        assert_eq!(got.state, StateType::Completed);
    }

    // A later state in the same batch as an earlier one, in either order.
    let run = Run::flow("same-batch", None);
    let a = run.state(1, at(70), StateType::Running, None);
    let b = run.state(1, at(80), StateType::Cancelled, Some("stop"));
    ingest(store, vec![b, a]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(
        (got.state, got.started, got.ended),
        (StateType::Cancelled, Some(at(70)), Some(at(80)))
    );
}

async fn details_arriving_late_fill_the_run(env: &mut Env) {
    let store = &env.store;
    let run = Run::flow("late-details", None);
    ingest(store, vec![run.state(1, at(20), StateType::Running, None)]).await;
    let before = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!((before.task_key.as_str(), before.tags.len()), ("", 0));
    let d = RunDetails {
        task_key: "demo::late".into(),
        tags: vec!["a".into(), "b".into()],
        deployment: Some("dep".into()),
        ..RunDetails::default()
    };
    ingest(store, vec![run.first(at(10), StateType::Pending, d)]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(got.task_key, "demo::late");
    assert_eq!(got.tags, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(got.deployment.as_deref(), Some("dep"));
    assert_eq!((got.state, got.created), (StateType::Running, at(10)));
    let by_tag = all_flow_runs(
        store,
        &RunFilter {
            tag: Some("b".into()),
            ..RunFilter::default()
        },
    )
    .await;
    assert_eq!(
        by_tag.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run.id]
    );
}

async fn reporter_drops_are_recorded(env: &mut Env) {
    let store = &env.store;
    store
        .record_reporter_drops("host-1:42", 10)
        .await
        .expect("drops");
    store
        .record_reporter_drops("host-1:42", u64::MAX)
        .await
        .expect("drops saturate");
    store
        .record_reporter_drops("'; DROP TABLE reporter_drops; --", 1)
        .await
        .expect("drops");
}

/// A state event's id sent again as a log line (and the reverse) is a duplicate: stored once,
/// as what came first, whether the two arrive in one batch or in two.
async fn an_event_id_is_one_event_whatever_its_kind(env: &mut Env) {
    let store = &env.store;
    let run = Run::flow("one-id", None);
    let pending = run.first(at(1_000), StateType::Pending, details("demo::one_id"));
    let mut log = run.log(1, at(1_001), LogLevel::Info, "hello", serde_json::json!({}));
    assert_eq!(ingest(store, vec![pending.clone()]).await, (1, 0));

    // The state's id as a log line: a duplicate, no log stored.
    let mut log_with_state_id = log.clone();
    log_with_state_id.id = pending.id;
    assert_eq!(ingest(store, vec![log_with_state_id]).await, (0, 1));
    let logs = all_logs(store, run.id, &LogFilter::default(), 100).await;
    assert!(logs.is_empty(), "{logs:?}");

    // A log line's id as a state: a duplicate, the run does not change.
    assert_eq!(ingest(store, vec![log.clone()]).await, (1, 0));
    let mut state_with_log_id = run.state(1, at(1_002), StateType::Running, None);
    state_with_log_id.id = log.id;
    assert_eq!(ingest(store, vec![state_with_log_id]).await, (0, 1));
    let got = store.get_run(run.id).await.expect("get").expect("run");
    assert_eq!(got.state, StateType::Pending);
    assert_eq!(store.states(run.id).await.expect("states").len(), 1);
    assert_eq!(
        all_logs(store, run.id, &LogFilter::default(), 100)
            .await
            .len(),
        1
    );

    // Both kinds with one id in one batch: the first is stored, the second is a duplicate.
    log.id = Uuid::now_v7();
    let mut running = run.state(1, at(1_003), StateType::Running, None);
    running.id = log.id;
    assert_eq!(ingest(store, vec![running, log]).await, (1, 1));
    assert_eq!(store.states(run.id).await.expect("states").len(), 2);
    assert_eq!(
        all_logs(store, run.id, &LogFilter::default(), 100)
            .await
            .len(),
        1
    );
}
