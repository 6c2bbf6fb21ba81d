//! Run with: `cargo run --release -p flowkit-server --example schedule_bench`
//!
//! The scheduler under 10 000 schedules that are all due at the same instant every minute
//! (`* * * * *` in 32 time zones, 32 per deployment), on the real clock: the server's tick
//! loop (the same `scheduler::tick` every replica runs each second) creates their runs, and no
//! worker claims them (`overlap: allow`, so each minute creates 10 000 runs). On a temporary
//! SQLite file, then on PostgreSQL when `--pg-url` (or `FLOWKIT_BENCH_PG_URL`, or
//! `FLOWKIT_TEST_PG_URL`) names a cluster (in a fresh database, dropped afterwards); otherwise
//! it prints that PostgreSQL was skipped.
//!
//! Prints `key=value` lines, per backend (`sqlite_…`, `pg_…`):
//! - `tick_ms_per_s`: milliseconds spent in ticks per second of wall time (1000 = the tick
//!   never rests);
//! - `tick_max_ms`: the longest tick (the one that creates a minute's runs);
//! - `delay_p50_ms`, `delay_p99_ms`, `delay_max_ms`: from each instant being due to its run's
//!   creation (the run's `created`, by the server's clock: the instant its transaction wrote
//!   it), over every run of `--minutes`;
//! - `runs`: runs created (should be schedules × minutes).
//!
//! `RUST_LOG=flowkit_server::scheduler=debug` shows when each batch of a tick is written.

#[path = "support/pg_database.rs"]
mod pg_database;

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use clap::Parser;
use flowkit_server::AppState;
use flowkit_server::config::Settings;
use flowkit_server::scheduler::{Scheduler, rest_after, tick};
use flowkit_server::store::schedules::{ScheduleRow, code_schedule_id};
use flowkit_server::store::{Backend, PageRequest, RunFilter, Store};
use flowkit_wire::api::deployments::DeploymentSpec;
use flowkit_wire::api::schedules::{Overlap, ScheduleSpec};
use flowkit_wire::schedule::Schedule;
use pg_database::pg_database;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time zones of the schedules (32: one per schedule of a deployment, as each needs its own
/// timing).
const ZONES: [&str; 32] = [
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Moscow",
    "Europe/Helsinki",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Santiago",
    "America/Sao_Paulo",
    "America/Mexico_City",
    "America/Toronto",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Asia/Dubai",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Asia/Jakarta",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Honolulu",
    "Africa/Cairo",
    "Africa/Johannesburg",
];

/// The scheduler's cost and delay with many schedules due at once.
#[derive(Debug, Parser)]
struct Args {
    /// Schedules, all every minute.
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// Minutes measured (after the schedules are stored).
    #[arg(long, default_value_t = 2)]
    minutes: u32,
    /// A PostgreSQL cluster to measure too (a fresh database is created in it).
    #[arg(long)]
    pg_url: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            println!("schedules={}", args.schedules);
            println!("minutes={}", args.minutes);
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            bench("sqlite", &url, &args).await?;
            let pg = args
                .pg_url
                .clone()
                .or_else(|| std::env::var("FLOWKIT_BENCH_PG_URL").ok())
                .or_else(|| std::env::var("FLOWKIT_TEST_PG_URL").ok());
            match pg {
                Some(admin) => {
                    let (url, drop) = pg_database(&admin, "flowkit_schedule_bench").await?;
                    let outcome = bench("pg", &url, &args).await;
                    drop.await?;
                    outcome?;
                }
                None => {
                    println!("pg_skipped=no PostgreSQL: give --pg-url or set FLOWKIT_BENCH_PG_URL")
                }
            }
            Ok(())
        })
}

async fn bench(prefix: &str, url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Arc::new(Store::connect(url).await?);
    let state = AppState::new(store.clone(), Settings::default());
    let stored = Instant::now();
    let deployments = args.schedules.div_ceil(ZONES.len());
    let mut left = args.schedules;
    for d in 0..deployments {
        let name = format!("d{d}");
        let spec: DeploymentSpec = serde_json::from_value(json!({
            "flow": "bench",
            "name": name,
            "flow_key": "bench::noop",
            "version": "v1",
            "parameter_schema": {"type": "object"},
            "output_schema": {},
        }))?;
        store.register_deployment(&spec, &format!("fp{d}")).await?;
        let now = Utc::now();
        let rows = ZONES
            .iter()
            .take(left.min(ZONES.len()))
            .map(|zone| {
                let mut schedule = ScheduleSpec::cron("* * * * *");
                schedule.timezone = zone.to_string();
                schedule.overlap = Overlap::Allow;
                let compiled = Schedule::compile(&schedule).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(ScheduleRow {
                    id: code_schedule_id("bench", &name, &schedule),
                    next_at: compiled.next_after(now),
                    spec: schedule,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        left -= rows.len();
        store.replace_code_schedules("bench", &name, rows).await?;
    }
    eprintln!(
        "{prefix}: {} schedules stored in {:.1?}",
        args.schedules,
        stored.elapsed()
    );

    // Start just after a minute turns, so the first minute counts whole.
    let minute = ChronoDuration::minutes(1);
    let first = Utc::now().duration_trunc(minute)? + minute;
    let until = first + minute * i32::try_from(args.minutes)?;
    wait_until(first - ChronoDuration::seconds(1)).await;
    let wall = Instant::now();
    let mut busy = Duration::ZERO;
    let mut longest = Duration::ZERO;
    let mut scheduler = Scheduler::default();
    // The loop of `scheduler::spawn`: a tick (planning the next instant's runs ahead), then a
    // rest until just after the next second.
    while Utc::now() < until + ChronoDuration::seconds(2) {
        let t0 = Instant::now();
        scheduler.tick(&state, Utc::now()).await?;
        busy += t0.elapsed();
        longest = longest.max(t0.elapsed());
        tokio::time::sleep(rest_after(Utc::now())).await;
    }
    // Drain what the last minute left, outside the measured window.
    let wall = wall.elapsed();
    loop {
        let outcome = tick(&state, until).await?;
        if outcome.created == 0 {
            break;
        }
    }
    println!(
        "{prefix}_tick_ms_per_s={:.1}",
        busy.as_secs_f64() * 1000.0 / wall.as_secs_f64()
    );
    println!("{prefix}_tick_max_ms={:.1}", longest.as_secs_f64() * 1000.0);

    // Every run's delay: created - scheduled_for, for the instants measured.
    let mut delays = Vec::new();
    let mut page = PageRequest {
        limit: 500,
        cursor: None,
    };
    loop {
        let got = store.list_flow_runs(&RunFilter::default(), &page).await?;
        for run in &got.items {
            if let Some(due) = run.scheduled_for
                && due >= first
                && due < until
            {
                delays.push(delay_ms(due, run.created));
            }
        }
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    println!("{prefix}_runs={}", delays.len());
    delays.sort_by(f64::total_cmp);
    for (name, q) in [("p50", 0.50), ("p99", 0.99)] {
        println!("{prefix}_delay_{name}_ms={:.1}", percentile(&delays, q));
    }
    println!(
        "{prefix}_delay_max_ms={:.1}",
        delays.last().copied().unwrap_or(0.0)
    );
    state.begin_shutdown();
    store.close().await;
    Ok(())
}

fn delay_ms(due: DateTime<Utc>, created: DateTime<Utc>) -> f64 {
    (created - due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn wait_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}
