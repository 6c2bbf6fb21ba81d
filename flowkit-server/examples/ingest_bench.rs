//! Run with: `cargo run --release -p flowkit-server --example ingest_bench -- --events 200000`
//!
//! Measures the server over real HTTP on loopback, in-process, against a temporary SQLite
//! file (and PostgreSQL when `FLOWKIT_BENCH_PG_URL` is set: a fresh database is created in
//! that cluster and dropped afterwards):
//!
//! - ingestion: realistic events (flows with tasks: Pending, Running, a log line, Completed)
//!   in batches of `--batch` events from `--clients` concurrent clients, sent twice: one JSON
//!   object per event, and as flowkit's reporter sends them (the states of a run that happen
//!   within a millisecond travel as one run record, see `EventBody::RunRecord`: every task run
//!   here, and a flow run's first two states), into a fresh database each time. The same
//!   events, the same rows stored; the second saves the server parsing;
//! - the first page of the runs list with `--page-runs` flow runs stored (inserted through the
//!   store directly, then `GET /api/flow-runs?limit=50` timed over HTTP, median of several).
//!
//! Prints `key=value` lines: `sqlite_events_per_s`, `p99_batch_ms` (SQLite, one object per
//! event), `sqlite_record_events_per_s` (events per second sent as run records),
//! `pg_events_per_s`, `pg_p99_batch_ms` and `pg_record_events_per_s` (when run),
//! `runs_page_ms`, `runs_page_filtered_ms`.

#[path = "support/pg_database.rs"]
mod pg_database;

use chrono::{Duration as TimeDelta, Utc};
use clap::Parser;
use flowkit_server::config::Config;
use flowkit_server::store::{Backend, Store};
use flowkit_server::wire::{Event, EventBody, LaterState, LogLevel, RunDetails, RunKind};
use flowkit_server::wire::{State, StateType};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Ingestion and list benchmark of flowkit-server.
#[derive(Debug, Parser)]
struct Args {
    /// Events to send.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per POST.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Task runs per flow run.
    #[arg(long, default_value_t = 5)]
    tasks: usize,
    /// Flow runs stored for the list-page measurement (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    page_runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("events={}", args.events);
    println!("batch_size={}", args.batch);
    println!("clients={}", args.clients);

    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let result = ingest(&sqlite_url, &args, Shape::Events).await?;
    println!("sqlite_events_per_s={:.0}", result.events_per_s);
    println!("p99_batch_ms={:.1}", result.p99_ms);
    println!("sqlite_p50_batch_ms={:.1}", result.p50_ms);
    let records_url = format!("sqlite://{}", dir.path().join("records.db").display());
    let result = ingest(&records_url, &args, Shape::Records).await?;
    println!("sqlite_record_events_per_s={:.0}", result.events_per_s);
    println!("sqlite_record_p99_batch_ms={:.1}", result.p99_ms);

    if let Ok(pg) = std::env::var("FLOWKIT_BENCH_PG_URL") {
        postgres(&pg, &args).await?;
    }

    if args.page_runs > 0 {
        let url = format!("sqlite://{}", dir.path().join("page.db").display());
        let (plain, filtered) = runs_page(&url, args.page_runs).await?;
        println!("page_runs={}", args.page_runs);
        println!("runs_page_ms={plain:.2}");
        println!("runs_page_filtered_ms={filtered:.2}");
    }
    Ok(())
}

/// Ingestion into a fresh database of the PostgreSQL cluster at `pg`, dropped afterwards.
async fn postgres(pg: &str, args: &Args) -> anyhow::Result<()> {
    for shape in [Shape::Events, Shape::Records] {
        let (url, drop) = pg_database::pg_database(pg, "flowkit_bench").await?;
        let outcome = ingest(&url, args, shape).await;
        let dropped = drop.await;
        let result = outcome?;
        dropped?;
        match shape {
            Shape::Events => {
                println!("pg_events_per_s={:.0}", result.events_per_s);
                println!("pg_p99_batch_ms={:.1}", result.p99_ms);
            }
            Shape::Records => println!("pg_record_events_per_s={:.0}", result.events_per_s),
        }
    }
    Ok(())
}

/// How the events travel.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// One JSON object per event.
    Events,
    /// As flowkit's reporter sends them: a run's states within a millisecond as one record.
    Records,
}

struct IngestResult {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A server over `url` on a free loopback port (retention off: the bench's runs are old).
async fn start_server(url: &str) -> anyhow::Result<flowkit_server::Spawned> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut config = Config::new(url);
    config.retention = None;
    flowkit_server::spawn(listener, config).await
}

async fn ingest(url: &str, args: &Args, shape: Shape) -> anyhow::Result<IngestResult> {
    let bodies = Arc::new(batches(args.events, args.batch, args.tasks, shape)?);
    let server = start_server(url).await?;
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.clients.max(1) {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        let endpoint = format!("{}/api/events", server.url());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((count, body)) = bodies.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let answer: serde_json::Value = response.json().await?;
                anyhow::ensure!(status == 202, "batch {i}: {status} {answer}");
                anyhow::ensure!(answer["accepted"] == *count, "batch {i}: {answer}");
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    server.stop().await?;
    latencies.sort();
    let total: usize = bodies.iter().map(|(n, _)| n).sum();
    Ok(IngestResult {
        events_per_s: total as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Realistic events, serialized into batch bodies of about `batch` events each before the
/// clock starts; each body with the count of events it stands for.
fn batches(
    events: usize,
    batch: usize,
    tasks: usize,
    shape: Shape,
) -> anyhow::Result<Vec<(usize, Vec<u8>)>> {
    let mut all = Vec::with_capacity(events);
    let start = Utc::now() - TimeDelta::hours(1);
    let mut n = 0;
    while all.len() < events {
        all.extend(flow_events(
            n,
            tasks,
            start + TimeDelta::milliseconds(n as i64),
        ));
        n += 1;
    }
    all.truncate(events);
    let elements = match shape {
        Shape::Events => all,
        Shape::Records => into_records(all),
    };
    let mut bodies = Vec::new();
    let mut chunk: Vec<&Event> = Vec::new();
    let mut count = 0;
    for element in &elements {
        chunk.push(element);
        count += element.event_count();
        if count >= batch.max(1) {
            bodies.push((count, serde_json::to_vec(&chunk)?));
            (chunk, count) = (Vec::new(), 0);
        }
    }
    if !chunk.is_empty() {
        bodies.push((count, serde_json::to_vec(&chunk)?));
    }
    Ok(bodies)
}

/// The events as flowkit's reporter sends them (the rule of its encoder, `plan` in
/// `flowkit/src/sink/report/encode.rs`, crate-private there, with a millisecond standing for
/// its batch window): the state events of one run within a millisecond of its first become one
/// run record (at the place of the first), the others (log lines, a flow run's last state) stay
/// as they are.
fn into_records(events: Vec<Event>) -> Vec<Event> {
    let window = TimeDelta::milliseconds(1);
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    // Each run's open record: its place in `out`.
    let mut open: HashMap<Uuid, usize> = HashMap::new();
    for event in events {
        let EventBody::State { state, details } = event.body else {
            out.push(event);
            continue;
        };
        if let Some(record) = open.get(&event.run_id).map(|&i| &mut out[i])
            && event.timestamp - record.timestamp <= window
            && let EventBody::RunRecord { later, .. } = &mut record.body
        {
            later.push(LaterState {
                id: event.id,
                timestamp: event.timestamp,
                attempt: event.attempt,
                state,
            });
            continue;
        }
        open.insert(event.run_id, out.len());
        out.push(Event {
            body: EventBody::RunRecord {
                state,
                details,
                later: Vec::new(),
            },
            ..event
        });
    }
    // A record of one state is sent as that state event.
    for event in &mut out {
        if let EventBody::RunRecord {
            state,
            details,
            later,
        } = &mut event.body
            && later.is_empty()
        {
            event.body = EventBody::State {
                state: state.clone(),
                details: details.take(),
            };
        }
    }
    out
}

/// One flow run: Pending (with details), Running, tasks (Pending, Running, a log line,
/// Completed; each consuming the previous one's result), a log line, Completed.
fn flow_events(n: usize, tasks: usize, start: chrono::DateTime<Utc>) -> Vec<Event> {
    let flow = Uuid::now_v7();
    let name = format!("etl_{}", n % 20);
    let mut at = start;
    let mut tick = || {
        at += TimeDelta::microseconds(250);
        at
    };
    let event = |run, kind, name: &str, parent, at, body| Event {
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
    };
    let state = |kind, details: Option<RunDetails>| EventBody::State {
        state: State::new(kind),
        details: details.map(Box::new),
    };
    let mut out = vec![
        event(
            flow,
            RunKind::Flow,
            &name,
            None,
            tick(),
            state(
                StateType::Pending,
                Some(RunDetails {
                    task_key: format!("bench::{name}").into(),
                    tags: vec!["bench".into(), format!("shard-{}", n % 4).into()],
                    parameters: Some(serde_json::json!({"date": "2026-11-28", "rows": n})),
                    worker: Some("bench-host:1".into()),
                    ..RunDetails::default()
                }),
            ),
        ),
        event(
            flow,
            RunKind::Flow,
            &name,
            None,
            tick(),
            state(StateType::Running, None),
        ),
    ];
    let mut previous: Option<Uuid> = None;
    for t in 0..tasks {
        let task = Uuid::now_v7();
        let task_name = format!("step_{t}");
        let details = RunDetails {
            task_key: format!("bench::{task_name}").into(),
            upstream: previous.into_iter().collect(),
            ..RunDetails::default()
        };
        let mut fields = serde_json::Map::new();
        fields.insert("rows".into(), (n * 10 + t).into());
        for body in [
            state(StateType::Pending, Some(details)),
            state(StateType::Running, None),
            EventBody::Log {
                level: LogLevel::Info,
                message: format!("processed batch {t} of flow {n}"),
                fields,
            },
            state(StateType::Completed, None),
        ] {
            out.push(event(
                task,
                RunKind::Task,
                &task_name,
                Some(flow),
                tick(),
                body,
            ));
        }
        previous = Some(task);
    }
    out.push(event(
        flow,
        RunKind::Flow,
        &name,
        None,
        tick(),
        EventBody::Log {
            level: LogLevel::Warn,
            message: "slow upstream".into(),
            fields: serde_json::Map::new(),
        },
    ));
    let last = if n.is_multiple_of(10) {
        StateType::Failed
    } else {
        StateType::Completed
    };
    out.push(event(
        flow,
        RunKind::Flow,
        &name,
        None,
        tick(),
        state(last, None),
    ));
    out
}

/// Stores `runs` flow runs through the store, then times the first page over HTTP: plain and
/// filtered by state. Medians of 21 requests, in milliseconds.
async fn runs_page(url: &str, runs: usize) -> anyhow::Result<(f64, f64)> {
    let store = Store::connect(url).await?;
    let start = Utc::now() - TimeDelta::days(2);
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..runs {
        let flow = Uuid::now_v7();
        let at = start + TimeDelta::milliseconds(n as i64);
        let name = format!("etl_{}", n % 20);
        for (i, kind) in [
            StateType::Running,
            if n.is_multiple_of(10) {
                StateType::Failed
            } else {
                StateType::Completed
            },
        ]
        .into_iter()
        .enumerate()
        {
            pending.push(Event {
                id: Uuid::now_v7(),
                run_id: flow,
                parent_run_id: None,
                flow_run_id: Some(flow),
                run_kind: RunKind::Flow,
                name: name.clone().into(),
                attempt: 1,
                timestamp: at + TimeDelta::microseconds(i as i64),
                lease: None,
                body: EventBody::State {
                    state: State::new(kind),
                    details: (i == 0).then(|| {
                        Box::new(RunDetails {
                            task_key: format!("bench::{name}").into(),
                            tags: vec!["bench".into()],
                            ..RunDetails::default()
                        })
                    }),
                },
            });
        }
        if pending.len() >= 10_000 {
            store.ingest(std::mem::take(&mut pending)).await?;
        }
    }
    if !pending.is_empty() {
        store.ingest(pending).await?;
    }
    store.close().await;

    let server = start_server(url).await?;
    let client = reqwest::Client::new();
    let mut medians = Vec::new();
    for query in ["limit=50", "limit=50&state=Failed"] {
        let endpoint = format!("{}/api/flow-runs?{query}", server.url());
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let response = client.get(&endpoint).send().await?;
            anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
            let page: serde_json::Value = response.json().await?;
            times.push(t.elapsed());
            anyhow::ensure!(
                page["items"].as_array().map(Vec::len) == Some(50),
                "{query}: short page"
            );
        }
        times.sort();
        medians.push(times[times.len() / 2].as_secs_f64() * 1000.0);
    }
    // The dashboard's chart: counts by state over a window holding every stored run.
    let since = (start - TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let endpoint = format!("{}/api/stats?since={since}&buckets=48", server.url());
    let mut times = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let response = client.get(&endpoint).send().await?;
        anyhow::ensure!(response.status() == 200, "stats: {}", response.status());
        let stats: serde_json::Value = response.json().await?;
        times.push(t.elapsed());
        let total: u64 = stats["totals"]
            .as_object()
            .map(|t| t.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0);
        anyhow::ensure!(total == runs as u64, "stats counted {total} of {runs} runs");
    }
    times.sort();
    println!(
        "stats_ms={:.2}",
        times[times.len() / 2].as_secs_f64() * 1000.0
    );
    server.stop().await?;
    Ok((medians[0], medians[1]))
}
