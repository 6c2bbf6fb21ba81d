//! Several writers and readers at once, and a store closed and opened again.

use crate::fixtures::*;
use crate::harness::Env;
use flowkit_server::store::{Backend, RunFilter};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::StateType;
use serde_json::json;
use std::collections::HashSet;
use uuid::Uuid;

conformance!(concurrent_ingestion, reopening_keeps_everything,);

async fn concurrent_ingestion(env: &mut Env) {
    let store = env.store.clone();
    let writers = 8;
    let batches = flowkit::testing::scaled(25);
    let mut tasks = tokio::task::JoinSet::new();
    let shared = scenario("shared", t0());
    let mut expected_runs = HashSet::new();
    expected_runs.insert(shared.flow.id);
    expected_runs.insert(shared.subflow.id);
    let mut plans = Vec::new();
    for w in 0..writers {
        let mut batches_of_writer = Vec::new();
        for b in 0..batches {
            let run = Run::flow(&format!("w{w}-b{b}"), None);
            expected_runs.insert(run.id);
            let task = Run::task("t", &run);
            let ms = (w * 1000 + b) as i64;
            let mut batch = vec![
                run.first(at(ms), StateType::Pending, details("demo::w")),
                run.state(1, at(ms + 1), StateType::Running, None),
                task.first(at(ms + 2), StateType::Pending, details("demo::t")),
                task.state(1, at(ms + 3), StateType::Completed, None),
                task.log(1, at(ms + 3), LogLevel::Info, "done", json!({})),
                run.state(1, at(ms + 4), StateType::Completed, None),
            ];
            // Every writer also sends the same shared events: each is accepted exactly once.
            batch.push(shared.events[b % shared.events.len()].clone());
            batches_of_writer.push(batch);
        }
        plans.push(batches_of_writer);
    }
    for batches_of_writer in plans {
        let store = store.clone();
        tasks.spawn(async move {
            let mut accepted = 0;
            for batch in batches_of_writer {
                accepted += store
                    .ingest(batch)
                    .await
                    .expect("concurrent ingest must not fail")
                    .accepted;
                // Readers run alongside the writers.
                store
                    .list_flow_runs(&RunFilter::default(), &page(20))
                    .await
                    .expect("concurrent read");
            }
            accepted
        });
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        accepted += done.expect("writer task");
    }
    let sent = batches.min(shared.events.len());
    ingest(&store, shared.events[sent..].to_vec()).await;
    assert_eq!(accepted, writers * batches * 6 + sent);
    let listed: HashSet<Uuid> = all_flow_runs(&store, &RunFilter::default())
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, expected_runs);
    check_scenario(&store, &shared).await;
}

async fn reopening_keeps_everything(env: &mut Env) {
    let s = scenario("durable", t0());
    ingest(&env.store, s.events.clone()).await;
    let before = all_flow_runs(&env.store, &RunFilter::default()).await;
    env.reopen().await;
    check_scenario(&env.store, &s).await;
    assert_eq!(
        all_flow_runs(&env.store, &RunFilter::default()).await,
        before
    );
    // Still idempotent after reopening, and still writable.
    assert_eq!(
        ingest(&env.store, s.events.clone()).await,
        (0, s.events.len())
    );
    let run = Run::flow("after-reopen", None);
    assert_eq!(
        ingest(
            &env.store,
            vec![run.first(at(1), StateType::Pending, details("demo::r"))]
        )
        .await,
        (1, 0)
    );
}
