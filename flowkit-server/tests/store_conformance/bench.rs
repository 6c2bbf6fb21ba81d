//! Benchmarks, ignored by default (run them in release:
//! `cargo test --release -p flowkit-server --test store_conformance -- --ignored --nocapture`):
//! ingestion throughput and the first page of the flow-runs list with 100 000 runs stored.

use crate::fixtures::*;
use crate::harness::Env;
use flowkit_server::store::{Backend, PageRequest, RunFilter};
use flowkit_server::wire::StateType;
use flowkit_server::wire::{Event, LogLevel, RunDetails};
use serde_json::json;
use std::borrow::Cow;
use std::time::Instant;

/// Ingests `flows` flow runs (each: Pending with details, Running, Completed, plus one task run
/// with three states and a log line = 7 events) from 4 concurrent clients in batches of about
/// 1 000 events; prints events/s, then times the first page of the flow-runs list.
async fn bench(env: &mut Env, flows: usize) {
    let store = env.store.clone();
    let clients = 4;
    let per_batch = 1000 / 7;
    let mut batches: Vec<Vec<Event>> = Vec::new();
    let mut batch = Vec::new();
    for i in 0..flows {
        let flow = Run::flow(&format!("bench-{}", i % 50), None);
        let task = Run::task("step", &flow);
        let ms = i as i64 * 10;
        let tags = vec![Cow::Borrowed(if i % 1000 == 0 { "rare" } else { "common" })];
        batch.extend([
            flow.first(
                at(ms),
                StateType::Pending,
                RunDetails {
                    tags,
                    ..details("bench::flow")
                },
            ),
            flow.state(1, at(ms + 1), StateType::Running, None),
            task.first(at(ms + 2), StateType::Pending, details("bench::step")),
            task.state(1, at(ms + 3), StateType::Running, None),
            task.log(
                1,
                at(ms + 4),
                LogLevel::Info,
                "working on it",
                json!({"i": i}),
            ),
            task.state(1, at(ms + 5), StateType::Completed, None),
            flow.state(
                1,
                at(ms + 6),
                if i % 10 == 0 {
                    StateType::Failed
                } else {
                    StateType::Completed
                },
                None,
            ),
        ]);
        if (i + 1) % per_batch == 0 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    batches.push(batch);
    let events: usize = batches.iter().map(Vec::len).sum();
    let mut queues: Vec<Vec<Vec<Event>>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        queues[i % clients].push(b);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in queues {
        let store = store.clone();
        tasks.spawn(async move {
            for b in queue {
                store.ingest(b).await.expect("ingest");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client");
    }
    let elapsed = started.elapsed();
    println!(
        "[{}] ingested {events} events ({flows} flow runs) in {:.2}s: {:.0} events/s",
        store.backend_name(),
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    let cases = [
        ("first page", RunFilter::default()),
        (
            "state=Failed",
            RunFilter {
                states: vec![StateType::Failed],
                ..RunFilter::default()
            },
        ),
        (
            "flow_name",
            RunFilter {
                flow_name: Some("bench-7".into()),
                ..RunFilter::default()
            },
        ),
        (
            "tag=common",
            RunFilter {
                tag: Some("common".into()),
                ..RunFilter::default()
            },
        ),
        (
            "tag=rare (1 in 1000)",
            RunFilter {
                tag: Some("rare".into()),
                ..RunFilter::default()
            },
        ),
        (
            "search=ench-4",
            RunFilter {
                search: Some("ench-4".into()),
                ..RunFilter::default()
            },
        ),
    ];
    for (label, filter) in cases {
        let mut times = Vec::new();
        let mut cursor = None;
        for _ in 0..7 {
            let t = Instant::now();
            let page = store
                .list_flow_runs(&filter, &page(50))
                .await
                .expect("list");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cursor = page.next_cursor;
        }
        let t = Instant::now();
        store
            .list_flow_runs(&filter, &PageRequest { limit: 50, cursor })
            .await
            .expect("second page");
        let second = t.elapsed().as_secs_f64() * 1000.0;
        times.sort_by(f64::total_cmp);
        println!(
            "[{}] {label}, 50 of {flows} flow runs: median {:.2} ms (min {:.2}, max {:.2}); next page {:.2} ms",
            store.backend_name(),
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            second
        );
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_sqlite_100k_flow_runs() {
    let mut env = Env::sqlite().await;
    bench(&mut env, 100_000).await;
    env.finish().await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_postgres_100k_flow_runs() {
    let Some(mut env) = Env::postgres("bench").await else {
        return;
    };
    bench(&mut env, 100_000).await;
    env.finish().await;
}

/// A cheap version of the benchmark that always runs, so it keeps compiling and working.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_sqlite() {
    let mut env = Env::sqlite().await;
    bench(&mut env, 500).await;
    env.finish().await;
}
