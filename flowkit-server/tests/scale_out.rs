//! Scale-out on PostgreSQL: 2 real `flowkit-server` processes and 4 worker processes (this
//! binary run again) on one database, N triggered runs of a deployment with a limit, while one
//! worker is SIGKILLed mid-run and one server is SIGKILLed and restarted on its port.
//!
//! Every body execution is recorded outside flowkit (lines appended to a file with
//! `O_APPEND`): each run's body completes exactly once, the runs the killed worker was running
//! crashed and ran again elsewhere, the limit holds across processes (the high-water mark of
//! overlapping bodies), and no run is lost or left unfinished.
//!
//! 1 000 runs (`flowkit::testing::scaled(1000)`).
//!
//! Skips with a printed reason when `FLOWKIT_TEST_PG_URL` is unset; fails instead when
//! `FLOWKIT_REQUIRE_SERVICES=1`. The binary has its own `main` (`harness = false`).

use flowkit::{Worker, flow};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

#[path = "support/flow_run_states.rs"]
mod flow_run_states;
#[path = "support/pg_database.rs"]
mod pg_database;
use pg_database::{create_database, drop_database};

/// Set in a worker child: the file its bodies append to.
const WORKER_ENV: &str = "FLOWKIT_SCALE_OUT_WORKER";
/// The deployment's limit: most runs at once across every worker.
const LIMIT: u32 = 8;
/// How long one body sleeps.
const BODY: Duration = Duration::from_millis(50);
/// Longer than a server's restart: the workers of the killed server cannot heartbeat until it is
/// back, and a lease that ends meanwhile would (rightly) have their runs reaped and run again —
/// a second execution of a body that may already have completed. With 3 s this happened under
/// load (key 82 completed twice).
const LEASE: &str = "10s";
const DEPLOYMENT: &str = "scale_out_body/scale";
const PG_SKIP: &str = "skipping scale_out: set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)";

fn main() {
    match std::env::var_os(WORKER_ENV) {
        Some(_) => worker(),
        None => parent(),
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// Appends `line` to the record file in one `write` (O_APPEND: lines of processes never mix).
fn record(line: String) {
    let path = std::env::var_os(WORKER_ENV).expect("the record file");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open the record file");
    file.write_all(line.as_bytes()).expect("append a record");
}

/// Records its start and its end around a short sleep.
#[flow(retries = 2)]
async fn scale_out_body(key: u64) -> anyhow::Result<u64> {
    let pid = std::process::id();
    record(format!("start {key} {pid} {}\n", now_nanos()));
    tokio::time::sleep(BODY).await;
    record(format!("end {key} {pid} {}\n", now_nanos()));
    Ok(key)
}

/// A worker child: serves the deployment until it is killed.
fn worker() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(
            Worker::new()
                .claim_wait(Duration::from_secs(1))
                .serve([scale_out_body::deployment("scale").limit(LIMIT)]),
        )
        .expect("serve");
}

/// Child processes, killed (SIGKILL) and reaped when dropped, panics included.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn spawn_server(db: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowkit-server"))
        .args(["--database-url", db, "--lease", LEASE, "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        // Not the slow-statement warnings of every deadlock PostgreSQL resolves.
        .env("RUST_LOG", "warn,sqlx::query=error")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn flowkit-server")
}

fn spawn_worker(url: &str, home: &Path, file: &Path) -> Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .env(WORKER_ENV, file)
        .env("FLOWKIT_API_URL", url)
        .env("FLOWKIT_HOME", home)
        .env("FLOWKIT_SUMMARY", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn a worker")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Waits (at most 60 s) until the server at `url` answers its health check.
async fn wait_healthy(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(res) = client().get(format!("{url}/api/v1/health")).send().await
            && res.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server at {url} is not healthy within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Triggers the run of `key` on `urls[first]`, falling back to the other server while one is
/// down (an idempotency key makes a retry of a trigger that did land return the same run);
/// the run's id. At most 60 s.
async fn trigger(urls: &[String; 2], first: usize, key: u64, idem: &str) -> Uuid {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = first;
    loop {
        let url = &urls[attempt % 2];
        attempt += 1;
        let res = client()
            .post(format!("{url}/api/v1/deployments/{DEPLOYMENT}/runs"))
            .header("Idempotency-Key", format!("{idem}-{key}"))
            .json(&json!({ "parameters": { "key": key } }))
            .send()
            .await;
        let outcome = match res {
            Ok(res) => {
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                if status == 200 || status == 201 {
                    return body["id"]
                        .as_str()
                        .and_then(|id| id.parse().ok())
                        .expect("the run's id");
                }
                // 404: no worker registered the deployment yet.
                assert!(status == 404, "trigger {key} on {url}: {status} {body}");
                format!("{status} {body}")
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "trigger {key}: no server took it within 60 s: {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every run of the deployment, from `url`, paginated: id → (state, attempt).
async fn server_runs(url: &str) -> HashMap<Uuid, (String, u64)> {
    let mut runs = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut list = format!(
            "{url}/api/v1/flow-runs?deployment={}&limit=500",
            encode(DEPLOYMENT)
        );
        if let Some(c) = &cursor {
            list.push_str(&format!("&cursor={}", encode(c)));
        }
        let page: Value = client()
            .get(list)
            .send()
            .await
            .expect("list runs")
            .json()
            .await
            .expect("a page");
        for run in page["items"].as_array().expect("items") {
            let id = run["id"].as_str().and_then(|i| i.parse().ok()).expect("id");
            let state = run["state"].as_str().expect("state").to_string();
            runs.insert(id, (state, run["attempt"].as_u64().expect("attempt")));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return runs,
        }
    }
    panic!("more than 10 000 pages of runs");
}

/// One line of the record file.
struct Record {
    start: bool,
    key: u64,
    pid: u32,
    nanos: u128,
}

fn read_records(file: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "a torn record line: {line:?}");
            Record {
                start: parts[0] == "start",
                key: parts[1].parse().expect("key"),
                pid: parts[2].parse().expect("pid"),
                nanos: parts[3].parse().expect("nanos"),
            }
        })
        .collect()
}

fn parent() {
    let Ok(admin_url) = std::env::var("FLOWKIT_TEST_PG_URL") else {
        if std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "FLOWKIT_REQUIRE_SERVICES=1 forbids skipping scale_out: \
                 set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)"
            );
        }
        eprintln!("{PG_SKIP}");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let database = format!("flowkit_scale_out_{}", Uuid::now_v7().simple());
    let db = runtime.block_on(create_database(&admin_url, &database));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(scale_out(&db));
    }));
    runtime.block_on(drop_database(&admin_url, &database));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    println!("scale_out: ok");
}

async fn scale_out(db: &str) {
    // 1 000 runs (`FLOWKIT_TEST_SCALE` scales it, as every large test).
    let n = flowkit::testing::scaled(1000);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bodies.log");
    std::fs::write(&file, "").expect("create the record file");
    let ports = [free_port(), free_port()];
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));

    // The first server migrates the database alone, then the second starts.
    let mut servers = Children::default();
    servers.0.push(spawn_server(db, ports[0]));
    wait_healthy(&urls[0]).await;
    servers.0.push(spawn_server(db, ports[1]));
    wait_healthy(&urls[1]).await;

    let mut workers = Children::default();
    for i in 0..4 {
        let home = dir.path().join(format!("home{i}"));
        workers.0.push(spawn_worker(&urls[i % 2], &home, &file));
    }
    let pids: Vec<u32> = workers.0.iter().map(Child::id).collect();

    let started = Instant::now();
    let idem = Uuid::now_v7().simple().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let mut triggering = Vec::new();
    for t in 0..8 {
        let (urls, next, idem) = (urls.clone(), Arc::clone(&next), idem.clone());
        triggering.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let key = next.fetch_add(1, Ordering::SeqCst);
                if key >= n {
                    return ids;
                }
                ids.push((key as u64, trigger(&urls, t % 2, key as u64, &idem).await));
            }
        }));
    }

    // SIGKILL worker 0 while it runs a body.
    let victim = pids[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let records = read_records(&file);
        let ended = records.iter().filter(|r| !r.start).count();
        let mut open = HashSet::new();
        for r in records.iter().filter(|r| r.pid == victim) {
            if r.start {
                open.insert(r.key);
            } else {
                open.remove(&r.key);
            }
        }
        if ended >= n / 5 && !open.is_empty() {
            workers.0[0].kill().expect("SIGKILL worker 0");
            let at = now_nanos();
            workers.0[0].wait().expect("reap worker 0");
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "worker 0 ran no body while {n} runs were triggered ({ended} ended) within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };

    // SIGKILL server 1 and restart it on its port; its workers reconnect, triggers go to
    // server 0 meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_records(&file).iter().filter(|r| !r.start).count() < n / 3 {
        assert!(
            Instant::now() < deadline,
            "a third of the runs not ended within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    servers.0[1].kill().expect("SIGKILL server 1");
    servers.0[1].wait().expect("reap server 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    servers.0[1] = spawn_server(db, ports[1]);
    wait_healthy(&urls[1]).await;
    let restarted_at = now_nanos();

    let mut ids: HashMap<u64, Uuid> = HashMap::new();
    for t in triggering {
        let mine = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("every run triggered within 120 s")
            .expect("a trigger task panicked");
        ids.extend(mine);
    }
    assert_eq!(ids.len(), n, "one run per trigger");
    assert_eq!(
        ids.values().collect::<HashSet<_>>().len(),
        n,
        "distinct runs"
    );

    // Every run final.
    let deadline = Instant::now() + Duration::from_secs(90);
    let runs = loop {
        let runs = server_runs(&urls[(ids.len() / 7) % 2]).await;
        let done = runs.values().filter(|(s, _)| s == "Completed").count();
        let unfinished = runs
            .values()
            .filter(|(s, _)| !matches!(s.as_str(), "Completed" | "Failed" | "Cancelled"))
            .count();
        if unfinished == 0 && runs.len() >= n {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "runs not final within 90 s: {} on the server, {done} completed, {unfinished} \
             unfinished",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(runs.len(), n, "the server holds exactly the triggered runs");
    for (key, id) in &ids {
        let (state, _) = runs.get(id).unwrap_or_else(|| panic!("run {id} lost"));
        assert_eq!(state, "Completed", "run {id} (key {key})");
    }

    // Each body completed exactly once; interrupted bodies are the killed worker's only.
    let records = read_records(&file);
    let mut ends: HashMap<u64, usize> = HashMap::new();
    let mut open: HashMap<(u64, u32), u128> = HashMap::new();
    let mut intervals = Vec::new();
    for r in &records {
        if r.start {
            open.insert((r.key, r.pid), r.nanos);
        } else {
            *ends.entry(r.key).or_default() += 1;
            let start = open
                .remove(&(r.key, r.pid))
                .unwrap_or_else(|| panic!("key {} ended in {} unstarted", r.key, r.pid));
            intervals.push((start, r.nanos));
        }
    }
    for key in 0..n as u64 {
        assert_eq!(
            ends.get(&key).copied().unwrap_or(0),
            1,
            "the body of key {key} completed exactly once"
        );
    }
    let mut crashed = Vec::new();
    for ((key, pid), start) in &open {
        assert_eq!(
            *pid, victim,
            "key {key}'s body was interrupted in a live worker"
        );
        intervals.push((*start, killed_at));
        crashed.push(*key);
    }
    assert!(
        !crashed.is_empty(),
        "worker 0 was killed while running a body"
    );
    for key in &crashed {
        let id = ids[key];
        let states = flow_run_states::server_states(&client(), &urls[0], id).await;
        assert!(
            states.iter().any(|(s, a)| s == "Crashed" && *a == 1),
            "run {id} of the killed worker crashed: {states:?}"
        );
        assert!(
            runs[&id].1 >= 2,
            "run {id} completed in a later attempt: {states:?}"
        );
    }

    // The workers of the restarted server reconnected and ran bodies again.
    for (i, worker) in workers.0.iter_mut().enumerate().skip(1) {
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "worker {i} is still serving"
        );
    }
    let after_restart = records
        .iter()
        .filter(|r| r.start && r.nanos > restarted_at && (r.pid == pids[1] || r.pid == pids[3]))
        .count();
    assert!(
        after_restart > 0,
        "the workers of the restarted server ran no body after its restart"
    );

    // The limit held across processes.
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for (start, end) in &intervals {
        edges.push((*start, 1));
        edges.push((*end, -1));
    }
    // Ends before starts at the same instant.
    edges.sort();
    let (mut running, mut high) = (0i32, 0i32);
    for (_, d) in edges {
        running += d;
        high = high.max(running);
    }
    println!(
        "scale_out: runs={n} elapsed_ms={} high_water={high} limit={LIMIT} crashed_and_rerun={} \
         bodies_after_server_restart={after_restart}",
        elapsed.as_millis(),
        crashed.len()
    );
    assert!(
        high <= LIMIT as i32,
        "{high} bodies ran at once, limit {LIMIT}"
    );
    drop(workers);
    drop(servers);
}
