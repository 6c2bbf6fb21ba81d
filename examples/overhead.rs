//! What a task run costs: flowkit's per-call overhead against a plain async call and a
//! `tokio::spawn`, a flow called per request, the throughput of `map`, an in-memory cache hit,
//! the wall time of a one-flow process and the peak memory of a flow of one million tasks.
//!
//! Run with:
//!
//! ```sh
//! cargo run --release --example overhead -- 100000
//! # the same with reporting on, to a server answering on this machine:
//! cargo run --release -p flowkit-server &
//! FLOWKIT_API_URL=http://127.0.0.1:4200 cargo run --release --example overhead -- 100000
//! ```
//!
//! Prints one `key=value` per line (the median of several repetitions):
//!
//! - `reporting`: `off`, or the server's URL (from `FLOWKIT_API_URL`) the figures include;
//! - `flow_call_us`: one call of a top-level flow with two trivial tasks, called 200 times in a
//!   loop (a service running a flow per request), and `flow_call_tasks_us`, what its two tasks
//!   cost inside a flow: the difference is the flow's own cost. A flow does not wait for the
//!   server, so reporting adds only the background work of sending;
//! - `reported_all`: with reporting on, whether `flowkit::flush()` then found everything
//!   delivered (the server was answering);
//! - `flowkit_task_ns` (per call inside a flow), `flow_start_end_ms` (what starting and ending
//!   that flow adds), `plain_call_ns`, `tokio_spawn_ns`, `flowkit_map_tasks_per_s`,
//!   `cache_hit_ns`;
//! - `one_flow_process_ms`: wall time of a child process that runs one such flow and exits
//!   (runtime start, the flow, and the flush at exit: with reporting on, delivery included);
//! - `peak_rss_mb` (of a child process running a 1 000 000-task flow);
//! - with reporting on, `events_dropped`: events the bus or the reporter dropped, in this
//!   process and the 1 000 000-task child (0 unless the spool's byte bound,
//!   `FLOWKIT_SPOOL_MAX_BYTES`, was reached), and `reporter_events_per_s`: events the reporter
//!   serializes per second of its own thread's time
//!   ([`ReportStats::encode_events_per_s`](flowkit::sink::report::ReportStats::encode_events_per_s)).
//!
//! The terminal summary is off here (it would print a table per flow call); a configured
//! `FLOWKIT_EVENT_LOG` is kept, and measured. The runs use a fresh `FLOWKIT_HOME` under the
//! temporary directory, removed at the end.

use flowkit::{flow, task};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const REPETITIONS: usize = 5;

#[task]
async fn trivial(x: u64) -> u64 {
    x.wrapping_mul(2654435761)
}

async fn plain(x: u64) -> u64 {
    x.wrapping_mul(2654435761)
}

#[task(cache = inputs)]
async fn cached(x: u64) -> u64 {
    x.wrapping_mul(2654435761)
}

/// Nanoseconds the last flow below spent on its task calls. The flow's own start and end
/// (which waits for the sinks, and for the server when reporting) are measured apart.
static LOOP_NS: AtomicU64 = AtomicU64::new(0);

fn record_loop(start: Instant) {
    LOOP_NS.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// A service's request: a top-level flow with two trivial tasks.
#[flow]
async fn request(x: u64) -> u64 {
    trivial(x).await.wrapping_add(trivial(x + 1).await)
}

/// Calls of `request` per sample of `flow_call_us`.
const REQUESTS: u64 = 200;

/// Microseconds per call of `request` in a loop, median of the repetitions.
async fn flow_call_us() -> f64 {
    let mut samples = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        for i in 0..REQUESTS {
            black_box(request(black_box(i)).await);
        }
        samples.push(start.elapsed().as_nanos() as f64 / 1e3 / REQUESTS as f64);
    }
    median(samples)
}

/// Microseconds the two tasks of `request` take inside a flow (of `REQUESTS` pairs).
#[flow]
async fn request_tasks() -> f64 {
    let start = Instant::now();
    for i in 0..REQUESTS {
        black_box(
            trivial(black_box(i))
                .await
                .wrapping_add(trivial(i + 1).await),
        );
    }
    start.elapsed().as_nanos() as f64 / 1e3 / REQUESTS as f64
}

/// Wall time of a child process running one `request` flow, median of the repetitions.
fn one_flow_process_ms(home: &std::path::Path) -> Result<f64, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut samples = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        let child = std::process::Command::new(&exe)
            .arg("--one-flow-child")
            .env("FLOWKIT_HOME", home)
            .output()?;
        if !child.status.success() {
            return Err(format!(
                "the one-flow child failed: {}",
                String::from_utf8_lossy(&child.stderr)
            )
            .into());
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(samples))
}

#[flow]
async fn sequential(n: u64) -> u64 {
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        acc = acc.wrapping_add(trivial(black_box(i)).await);
    }
    record_loop(start);
    acc
}

#[flow]
async fn fan_out(n: u64) -> usize {
    let start = Instant::now();
    let len = trivial::map(0..n).await.len();
    record_loop(start);
    len
}

#[flow]
async fn cache_hits(n: u64) -> u64 {
    // The first call fills the cache; every later call with the same input is a hit.
    let mut acc = cached(7).await;
    let start = Instant::now();
    for _ in 0..n {
        acc = acc.wrapping_add(cached(black_box(7)).await);
    }
    record_loop(start);
    acc
}

/// Per item of one of the flows above: (ns per task inside the flow, ms the flow's start
/// and end add), medians of the repetitions.
async fn in_flow<F, Fut>(n: u64, mut flow: F) -> (f64, f64)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future,
{
    let mut per_task = Vec::with_capacity(REPETITIONS);
    let mut start_end = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        black_box(flow(n).await);
        let total = start.elapsed().as_nanos() as f64;
        let in_loop = LOOP_NS.load(Ordering::Relaxed) as f64;
        per_task.push(in_loop / n as f64);
        start_end.push((total - in_loop) / 1e6);
    }
    (median(per_task), median(start_end))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Nanoseconds per item of `f(n)`, median of the repetitions.
async fn per_item_ns<F, Fut>(n: u64, mut f: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future,
{
    let mut samples = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        black_box(f(n).await);
        samples.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    median(samples)
}

/// Events this process dropped: the bus's, and its reporter's.
fn dropped_here() -> u64 {
    flowkit::sink::dropped_events()
        + flowkit::sink::report::process_stats().map_or(0, |s| s.dropped)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    let child = first.as_deref().is_some_and(|a| a.ends_with("-child"));

    let mut config = flowkit::config::Config::from_env();
    // A table per flow call on stderr would measure the terminal, not flowkit.
    config.summary = false;
    if !child {
        // A fresh store (the children get it through FLOWKIT_HOME): no cache or spool of an
        // earlier run changes the figures.
        config.home = std::env::temp_dir().join(format!("flowkit-overhead-{}", std::process::id()));
    }
    let home = config.home.clone();
    let reporting = config.api_url.clone();
    let _ = flowkit::config::init(config);
    // Flushes every sink (and, when reporting, waits for the server) when it drops.
    let flowkit_guard = flowkit::init();

    if first.as_deref() == Some("--one-flow-child") {
        black_box(request(1).await);
        return Ok(());
    }
    if first.as_deref() == Some("--rss-child") {
        // Child mode: one flow of N tasks, then report this process's peak memory.
        let n: u64 = args.next().unwrap_or_else(|| "1000000".into()).parse()?;
        black_box(sequential(n).await);
        println!("{:.1}", peak_rss_mb().ok_or("no /proc/self/status here")?);
        // Delivered or spooled first, so every drop is counted.
        flowkit::flush().await;
        println!("{}", dropped_here());
        return Ok(());
    }
    let n: u64 = match first {
        Some(s) => s
            .parse()
            .map_err(|e| format!("the argument is the number of calls, e.g. 100000 ({e})"))?,
        None => 100_000,
    };

    // Warm up: start the sink thread, fault in the allocator.
    black_box(sequential(1_000).await);
    for i in 0..REQUESTS {
        black_box(request(i).await);
    }
    flowkit::flush().await;

    // First, while nothing else keeps the reporter busy.
    let call_us = flow_call_us().await;
    let tasks_us = {
        let mut samples = Vec::with_capacity(REPETITIONS);
        for _ in 0..REPETITIONS {
            samples.push(request_tasks().await);
        }
        median(samples)
    };
    let reported_all = flowkit::flush().await;
    match &reporting {
        None => println!("reporting=off"),
        Some(url) => println!("reporting={url}"),
    }
    println!("flow_call_us={call_us:.1}");
    println!("flow_call_tasks_us={tasks_us:.1}");
    if reporting.is_some() {
        println!("reported_all={reported_all}");
    }
    println!("one_flow_process_ms={:.1}", one_flow_process_ms(&home)?);

    let (flowkit_ns, flow_end_ms) = in_flow(n, sequential).await;
    let plain_ns = per_item_ns(n, |n| async move {
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(plain(black_box(i)).await);
        }
        acc
    })
    .await;
    let spawn_ns = per_item_ns(n, |n| async move {
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(tokio::spawn(plain(black_box(i))).await.unwrap_or(0));
        }
        acc
    })
    .await;
    let (map_ns, _) = in_flow(n, fan_out).await;
    let (hit_ns, _) = in_flow(n, cache_hits).await;

    println!("flowkit_task_ns={flowkit_ns:.0}");
    println!("flow_start_end_ms={flow_end_ms:.1}");
    println!("plain_call_ns={plain_ns:.1}");
    println!("tokio_spawn_ns={spawn_ns:.0}");
    println!("flowkit_map_tasks_per_s={:.0}", 1e9 / map_ns);
    println!("cache_hit_ns={hit_ns:.0}");
    println!("flowkit_over_spawn_ratio={:.2}", flowkit_ns / spawn_ns);

    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args(["--rss-child", "1000000"])
        .env("FLOWKIT_HOME", &home)
        .output()?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    let mut lines = stdout.lines();
    let (rss, dropped) = (lines.next().unwrap_or(""), lines.next().unwrap_or("?"));
    let mut child_dropped = None;
    if child.status.success() && !rss.is_empty() {
        println!("peak_rss_mb={rss}");
        println!("events_dropped_1m={dropped}");
        child_dropped = dropped.parse::<u64>().ok();
    } else {
        eprintln!(
            "the 1 000 000-task child failed: {}",
            String::from_utf8_lossy(&child.stderr)
        );
    }
    if reporting.is_some() {
        flowkit::flush().await;
        match child_dropped {
            Some(child) => println!("events_dropped={}", dropped_here() + child),
            None => println!("events_dropped=?"),
        }
        let stats = flowkit::sink::report::process_stats();
        match stats.and_then(|s| s.encode_events_per_s()) {
            Some(rate) => println!("reporter_events_per_s={rate:.0}"),
            None => println!("reporter_events_per_s=?"),
        }
    }
    // Delivered (or spooled) before the store goes: a benchmark's spool is not worth keeping.
    drop(flowkit_guard);
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
