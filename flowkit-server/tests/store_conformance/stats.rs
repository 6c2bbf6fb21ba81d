//! Counts of flow runs by latest state, bucketed over a window.

use crate::fixtures::*;
use crate::harness::Env;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::store::Backend;
use flowkit_server::wire::StateType;

conformance!(stats_buckets_by_latest_state,);

async fn stats_buckets_by_latest_state(env: &mut Env) {
    let store = &env.store;
    let since = t0();
    let secs = |s: i64| since + Duration::seconds(s);
    let mut events = Vec::new();
    let mut add = |created: DateTime<Utc>, last: StateType| {
        let run = Run::flow("counted", None);
        events.push(run.first(created, StateType::Pending, details("demo::c")));
        if last != StateType::Pending {
            events.push(run.state(1, created + Duration::seconds(1), last, None));
        }
        run
    };
    add(secs(30), StateType::Completed);
    add(secs(90), StateType::Failed);
    add(secs(95), StateType::Completed);
    add(secs(119), StateType::Completed);
    add(secs(599), StateType::Running);
    add(secs(-1), StateType::Completed); // before the window
    add(secs(600), StateType::Failed); // `until` is exclusive
    let parent = add(secs(40), StateType::Pending);
    let task = Run::task("not-a-flow", &parent);
    events.push(task.first(secs(41), StateType::Pending, details("demo::t")));
    ingest(store, events).await;

    let stats = store.stats(since, secs(600), 10).await.expect("stats");
    assert_eq!(
        (stats.since, stats.until, stats.bucket_seconds),
        (since, secs(600), 60)
    );
    assert_eq!(stats.buckets.len(), 10);
    for (i, bucket) in stats.buckets.iter().enumerate() {
        assert_eq!(bucket.start, secs(60 * i as i64));
    }
    assert_eq!(
        stats.buckets[0].counts,
        vec![(StateType::Pending, 1), (StateType::Completed, 1)]
    );
    assert_eq!(
        stats.buckets[1].counts,
        vec![(StateType::Completed, 2), (StateType::Failed, 1)]
    );
    assert!(stats.buckets[2..9].iter().all(|b| b.counts.is_empty()));
    assert_eq!(stats.buckets[9].counts, vec![(StateType::Running, 1)]);
    assert_eq!(
        stats.totals,
        vec![
            (StateType::Pending, 1),
            (StateType::Running, 1),
            (StateType::Completed, 3),
            (StateType::Failed, 1)
        ]
    );
    let empty = store
        .stats(secs(10_000), secs(10_060), 3)
        .await
        .expect("stats");
    assert_eq!(
        (
            empty.buckets.len(),
            empty.bucket_seconds,
            empty.totals.len()
        ),
        (3, 20, 0)
    );
}
