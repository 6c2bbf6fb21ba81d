//! Run with: `cargo run --release -p flowkit-server --example trigger_bench`
//!
//! Deployed runs end to end, over real HTTP on loopback: a server in this process (a temporary
//! SQLite file; PostgreSQL too when `FLOWKIT_BENCH_PG_URL` is set, in a fresh database created
//! in that cluster and dropped afterwards) and `flowkit::Worker`s in this process running a
//! no-op flow, reporting their events to the server like any worker. Each backend runs in a
//! child process of its own (the runtime's reporter is configured once per process).
//!
//! Prints `key=value` lines, per backend (`sqlite_…`, `pg_…`):
//! - `trigger_to_start_p50_ms`, `trigger_to_start_p99_ms`: from sending a trigger to the flow's
//!   body starting on an idle, warm worker, one run at a time;
//! - `runs_per_s`: `--runs` no-op runs triggered (16 callers at once), claimed and completed
//!   by `--workers` workers: from the first trigger until the server holds every run final;
//! - `trigger_p99_ms`, `trigger_p50_ms`: latency of each trigger while `--rate` triggers per
//!   second are sent for `--seconds` (and the workers run them).

#[path = "support/pg_database.rs"]
mod pg_database;

use clap::Parser;
use flowkit::flow;
use flowkit_server::config::Config;
use pg_database::pg_database;
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Trigger-to-start latency and end-to-end throughput of deployed runs.
#[derive(Debug, Parser)]
struct Args {
    /// Runs for the throughput measurement.
    #[arg(long, default_value_t = 2000)]
    runs: u64,
    /// Workers for the throughput measurement.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Slots of each worker.
    #[arg(long, default_value_t = 16)]
    slots: usize,
    /// Sequential triggers for the trigger-to-start latency.
    #[arg(long, default_value_t = 200)]
    samples: u64,
    /// Triggers per second for the trigger latency under load.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of triggers at `--rate`.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Internal: run one backend in this process (`sqlite` or a PostgreSQL URL).
    #[arg(long, hide = true)]
    backend: Option<String>,
}

/// When each run's body started, by its `i`.
static STARTS: LazyLock<Mutex<HashMap<u64, Instant>>> = LazyLock::new(Default::default);
static STARTED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Does nothing but say that it started.
#[flow]
async fn noop(i: u64) -> u64 {
    if let Ok(mut starts) = STARTS.lock() {
        starts.insert(i, Instant::now());
    }
    STARTED.notify_waiters();
    i
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match &args.backend {
        Some(backend) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(bench(backend.clone(), args)),
        None => {
            println!("runs={}", args.runs);
            println!("workers={}", args.workers);
            run_child("sqlite", "sqlite")?;
            if let Ok(pg) = std::env::var("FLOWKIT_BENCH_PG_URL") {
                run_child("pg", &pg)?;
            }
            Ok(())
        }
    }
}

/// Runs this benchmark for one backend in a child process and prints its figures with
/// `prefix_`.
fn run_child(prefix: &str, backend: &str) -> anyhow::Result<()> {
    let mut forwarded: Vec<String> = std::env::args().skip(1).collect();
    forwarded.push(format!("--backend={backend}"));
    let out = Command::new(std::env::current_exe()?)
        .args(&forwarded)
        .env("FLOWKIT_SUMMARY", "0")
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{prefix}_{line}");
    }
    if !out.status.success() {
        anyhow::bail!(
            "the {prefix} run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn bench(backend: String, args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (database_url, pg_drop) = if backend == "sqlite" {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        (url, None)
    } else {
        let (url, drop) = pg_database(&backend, "flowkit_trigger_bench").await?;
        (url, Some(drop))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, Config::new(database_url)).await?;
    let url = server.url();
    let mut runtime = flowkit::config::Config::from_env();
    runtime.api_url = Some(url.clone());
    runtime.home = dir.path().join("flowkit");
    runtime.summary = false;
    if flowkit::config::init(runtime).is_err() {
        anyhow::bail!("flowkit was configured before the benchmark configured it");
    }
    let http = reqwest::Client::new();
    let trigger_url = format!("{url}/api/v1/deployments/noop/bench/runs");

    // One idle, warm worker.
    let mut stops = Vec::new();
    let mut workers = tokio::task::JoinSet::new();
    let mut start_worker = |workers: &mut tokio::task::JoinSet<_>| {
        let worker = flowkit::Worker::new()
            .slots(args.slots)
            .api_url(url.clone())
            .handle_signals(false);
        stops.push(worker.shutdown_handle());
        workers.spawn(worker.serve([noop::deployment("bench")]));
    };
    start_worker(&mut workers);
    wait_for_worker(&http, &url).await?;
    let mut next = 0u64;
    for _ in 0..5 {
        trigger_and_wait_start(&http, &trigger_url, next).await?;
        next += 1;
    }
    let mut latencies = Vec::new();
    for _ in 0..args.samples {
        latencies.push(trigger_and_wait_start(&http, &trigger_url, next).await?);
        next += 1;
        // Idle again: the previous run has finished before the next trigger.
        wait_all_final(&http, &url, Duration::from_secs(10)).await?;
    }
    println!(
        "trigger_to_start_p50_ms={:.2}",
        percentile(&mut latencies, 0.50)
    );
    println!(
        "trigger_to_start_p99_ms={:.2}",
        percentile(&mut latencies, 0.99)
    );

    // Throughput with every worker.
    for _ in 1..args.workers {
        start_worker(&mut workers);
    }
    let first = next;
    let started = Instant::now();
    let callers = 16u64;
    let mut posting = tokio::task::JoinSet::new();
    for c in 0..callers {
        let (http, trigger_url) = (http.clone(), trigger_url.clone());
        let runs = args.runs;
        posting.spawn(async move {
            let mut i = c;
            while i < runs {
                trigger(&http, &trigger_url, first + i).await?;
                i += callers;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = posting.join_next().await {
        done??;
    }
    next += args.runs;
    wait_all_final(&http, &url, Duration::from_secs(300)).await?;
    let elapsed = started.elapsed();
    println!("runs_per_s={:.0}", args.runs as f64 / elapsed.as_secs_f64());

    // Trigger latency at a fixed rate, with the workers running what is triggered.
    let total = args.rate * args.seconds;
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut paced = tokio::task::JoinSet::new();
    let begin = tokio::time::Instant::now();
    for k in 0..total {
        tokio::time::sleep_until(begin + period * k as u32).await;
        let (http, trigger_url, latencies) = (http.clone(), trigger_url.clone(), latencies.clone());
        let i = next + k;
        paced.spawn(async move {
            let sent = Instant::now();
            trigger(&http, &trigger_url, i).await?;
            if let Ok(mut l) = latencies.lock() {
                l.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = paced.join_next().await {
        done??;
    }
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    println!("trigger_rate_per_s={}", args.rate);
    println!("trigger_p50_ms={:.2}", percentile(&mut latencies, 0.50));
    println!("trigger_p99_ms={:.2}", percentile(&mut latencies, 0.99));
    wait_all_final(&http, &url, Duration::from_secs(300)).await?;

    for stop in &stops {
        stop.shutdown();
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    server.stop().await?;
    if let Some(drop) = pg_drop {
        drop.await?;
    }
    Ok(())
}

/// Triggers run `i`.
async fn trigger(http: &reqwest::Client, trigger_url: &str, i: u64) -> anyhow::Result<()> {
    let response = http
        .post(trigger_url)
        .json(&json!({"parameters": {"i": i}}))
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::CREATED {
        anyhow::bail!(
            "trigger {i}: {} {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(())
}

/// Triggers run `i` and waits until its body starts: the milliseconds in between.
async fn trigger_and_wait_start(
    http: &reqwest::Client,
    trigger_url: &str,
    i: u64,
) -> anyhow::Result<f64> {
    let sent = Instant::now();
    trigger(http, trigger_url, i).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = STARTED.notified();
        if let Some(at) = STARTS.lock().ok().and_then(|s| s.get(&i).copied()) {
            return Ok(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            anyhow::bail!("run {i} did not start within 30 s");
        }
    }
}

/// Waits until the deployment has a live worker.
async fn wait_for_worker(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let detail: serde_json::Value = match http
            .get(format!("{url}/api/v1/deployments/noop/bench"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await?,
            _ => serde_json::Value::Null,
        };
        if detail["live_workers"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no worker registered within 30 s")
}

/// Waits until no run of the deployment is waiting or running, and none failed.
async fn wait_all_final(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let open = format!(
        "{url}/api/v1/flow-runs?deployment=noop/bench&limit=1&state=Scheduled,Pending,Running,AwaitingRetry"
    );
    loop {
        let page: serde_json::Value = http.get(&open).send().await?.json().await?;
        if page["items"].as_array().is_some_and(|i| i.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("runs still open after {within:?}: {page}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let failed = format!(
        "{url}/api/v1/flow-runs?deployment=noop/bench&limit=1&state=Failed,Crashed,Cancelled,TimedOut"
    );
    let page: serde_json::Value = http.get(&failed).send().await?.json().await?;
    if page["items"].as_array().is_some_and(|i| !i.is_empty()) {
        anyhow::bail!("a run did not complete: {page}");
    }
    Ok(())
}

/// The `q` quantile of `values` (sorted in place).
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index.min(values.len() - 1)]
}
