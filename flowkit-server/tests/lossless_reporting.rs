//! Reporting loses no run: a flow of many tasks at full speed, reported to a real server, is
//! on the server whole once its process has exited and a second process (same `FLOWKIT_HOME`)
//! has delivered what the first spooled — and no reporter ever reported a drop. Also with the
//! server stopped for the middle of the flow and started again, and with a sink so slow that
//! the process ends with a large backlog still queued for the sinks: its exit flush waits,
//! past its timeout, while the backlog moves, instead of leaving it behind.
//!
//! Real processes (this binary, run again in child mode) against a real server in this one,
//! on a SQLite file. `flowkit::testing::scaled` sizes the flows: 300 000 tasks at full speed
//! and around the outage (the test profile is optimized, see the workspace's Cargo.toml),
//! 20 000 behind the slow sink (its backlog is bounded by the sink, not the flow).

use flowkit::{flow, task};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child: what it runs (`flow` or `nothing`).
const CHILD_VAR: &str = "FLOWKIT_LOSSLESS_TEST_CHILD";
/// Set in a child: the directory of the files it and the parent signal each other with.
const SIGNAL_DIR_VAR: &str = "FLOWKIT_LOSSLESS_TEST_SIGNALS";
/// Set in a child: pause at half the flow until the parent says go on.
const PAUSE_VAR: &str = "FLOWKIT_LOSSLESS_TEST_PAUSE";
/// Set in a child: add a sink that takes 100 µs per event for its first 60 000 events.
const SLOW_SINK_VAR: &str = "FLOWKIT_LOSSLESS_TEST_SLOW_SINK";
/// Set in a child: how many tasks its flow runs.
const TASKS_VAR: &str = "FLOWKIT_LOSSLESS_TEST_TASKS";

/// A sink that holds the sink thread 100 µs per event (busy, as a sink doing real work) for
/// its first 60 000 events: a backlog of seconds at exit, whatever the test's scale, well
/// within the minute a flush waits on for a moving backlog.
struct Slow(u32);

impl flowkit::sink::Sink for Slow {
    fn on_event(&mut self, _: &flowkit::Event) {
        if self.0 >= 60_000 {
            return;
        }
        self.0 += 1;
        let until = Instant::now() + Duration::from_micros(100);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

#[task]
async fn step(i: u64) -> u64 {
    i.wrapping_mul(2654435761)
}

/// `n` tasks, 64 at a time; with `pause`, waits at half for the parent's signal.
#[flow]
async fn many(n: u64, pause: bool) -> u64 {
    let half = n / 2;
    let first: u64 = step::map(0..half)
        .concurrency(64)
        .await
        .into_iter()
        .fold(0, u64::wrapping_add);
    if pause {
        let dir = PathBuf::from(std::env::var(SIGNAL_DIR_VAR).expect("signal dir"));
        std::fs::write(dir.join("half"), b"").expect("signal half");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("go-on").exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let second: u64 = step::map(half..n)
        .concurrency(64)
        .await
        .into_iter()
        .fold(0, u64::wrapping_add);
    first.wrapping_add(second)
}

/// Tasks of the flows at full speed and around the outage.
fn full_tasks() -> u64 {
    flowkit::testing::scaled(300_000) as u64
}

/// Tasks of the flow behind the slow sink.
fn slow_sink_tasks() -> u64 {
    flowkit::testing::scaled(20_000) as u64
}

fn main() {
    match std::env::var(CHILD_VAR) {
        Ok(what) => child(&what),
        Err(_) => parent(),
    }
}

/// Runs the flow (or nothing, to deliver the spool), prints its run id, and returns: the exit
/// flush delivers or spools what is left.
fn child(what: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if what == "flow" {
        if std::env::var_os(SLOW_SINK_VAR).is_some() {
            flowkit::sink::add_sink(Slow(0));
        }
        let pause = std::env::var_os(PAUSE_VAR).is_some();
        let tasks: u64 = std::env::var(TASKS_VAR)
            .expect("the parent sets the task count")
            .parse()
            .expect("a task count");
        let id = runtime.block_on(async {
            let (_, rec) = flowkit::testing::record(many(tasks, pause)).await;
            rec.run("many").id
        });
        println!("{id}");
    } else {
        // A later process of the same FLOWKIT_HOME: its reporter takes the spool over and its
        // flush waits until the spool is delivered.
        let _flowkit = flowkit::init();
        let complete = runtime.block_on(async { flowkit::flush().await });
        println!("delivered={complete}");
    }
}

fn parent() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let mut server = start(&db, "127.0.0.1:0".parse().expect("addr")).await;
        let addr = server.addr();
        let url = format!("http://{addr}");
        let client = reqwest::Client::new();

        // 1. At full speed with the server up.
        let home = dir.path().join("home-up");
        let started = Instant::now();
        let flow = run_flow(&url, &home, None);
        let spooled_at_exit = spooled(&home);
        deliver_spool(&url, &home);
        assert_whole(&client, &url, &flow, full_tasks()).await;
        println!(
            "lossless_reporting: {} tasks reported in {:?} ({spooled_at_exit} spool lines left at exit, delivered by the next process)",
            full_tasks(),
            started.elapsed()
        );
        println!("test lossless_reporting::at_full_speed ... ok");

        // 2. The server stops at half the flow and comes back while it runs.
        let home = dir.path().join("home-outage");
        let signals = dir.path().join("signals");
        std::fs::create_dir_all(&signals).expect("signal dir");
        let started = Instant::now();
        let child = spawn_flow(&url, &home, Some(&signals));
        wait_for_file(&signals.join("half"));
        server.stop().await.expect("server stopped");
        std::fs::write(signals.join("go-on"), b"").expect("signal go on");
        // The second half runs while the server is down; then it comes back, same database.
        tokio::time::sleep(Duration::from_millis(700)).await;
        server = start(&db, addr).await;
        let flow = finish_flow(child);
        deliver_spool(&url, &home);
        assert_whole(&client, &url, &flow, full_tasks()).await;
        println!(
            "lossless_reporting: {} tasks with an outage in the middle, in {:?}",
            full_tasks(),
            started.elapsed()
        );
        println!("test lossless_reporting::with_the_server_stopped_in_the_middle ... ok");

        // 3. A slow sink: the flow ends with a backlog the sink thread takes seconds to hand
        // on, and the exit flush's timeout is far shorter than that.
        let home = dir.path().join("home-slow-sink");
        let started = Instant::now();
        let mut command = command(&url, &home, "flow");
        command
            .env(TASKS_VAR, slow_sink_tasks().to_string())
            .env("FLOWKIT_REPORT_FLUSH_TIMEOUT", "100ms")
            .env("FLOWKIT_FLUSH_TIMEOUT", "200ms")
            .env(SLOW_SINK_VAR, "1");
        let (flow, stderr) = finish_flow_saying(command.spawn().expect("run the child"));
        assert!(
            stderr.contains("past its timeout"),
            "the exit flush found no backlog to wait for (the test tests nothing): {stderr}"
        );
        deliver_spool(&url, &home);
        assert_whole(&client, &url, &flow, slow_sink_tasks()).await;
        println!(
            "lossless_reporting: {} tasks behind a slow sink, in {:?}",
            slow_sink_tasks(),
            started.elapsed()
        );
        println!("test lossless_reporting::a_backlog_at_exit_is_spooled_not_lost ... ok");

        let drops: serde_json::Value = client
            .get(format!("{url}/api/v1/reporter-drops"))
            .send()
            .await
            .expect("GET reporter-drops")
            .json()
            .await
            .expect("json");
        assert_eq!(drops["total_dropped"], 0, "no reporter dropped: {drops}");
        server.stop().await.expect("server stopped");
    });
}

async fn start(db: &str, addr: SocketAddr) -> flowkit_server::Spawned {
    // The port of a stopped server is free again at once (SO_REUSEADDR): retry briefly anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) if Instant::now() < deadline => {
                eprintln!("binding {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    flowkit_server::spawn(
        listener,
        flowkit_server::config::Config::new(db.to_string()),
    )
    .await
    .expect("start the server")
}

fn command(url: &str, home: &Path, what: &str) -> Command {
    let exe = std::env::current_exe().expect("this test binary");
    let mut command = Command::new(exe);
    command
        .env(CHILD_VAR, what)
        .env("FLOWKIT_API_URL", url)
        .env("FLOWKIT_HOME", home)
        .env("FLOWKIT_SUMMARY", "0")
        .env_remove("FLOWKIT_EVENT_LOG")
        .env_remove(PAUSE_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spawn_flow(url: &str, home: &Path, signals: Option<&Path>) -> Child {
    let mut command = command(url, home, "flow");
    command.env(TASKS_VAR, full_tasks().to_string());
    // The flow's process does not wait for the server at exit: what is left goes to the spool,
    // for the next process.
    command.env("FLOWKIT_REPORT_FLUSH_TIMEOUT", "100ms");
    if let Some(dir) = signals {
        command.env(PAUSE_VAR, "1").env(SIGNAL_DIR_VAR, dir);
    }
    command.spawn().expect("run the child")
}

/// Waits for the flow's process; returns its flow run id. It must not have dropped anything.
fn finish_flow(child: Child) -> String {
    finish_flow_saying(child).0
}

/// [`finish_flow`], with what the child wrote on stderr.
fn finish_flow_saying(child: Child) -> (String, String) {
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        !stderr.contains("dropped"),
        "the child dropped events: {stderr}"
    );
    let id = stdout
        .lines()
        .last()
        .expect("the child printed its run id")
        .trim()
        .to_string();
    (id, stderr.into_owned())
}

fn run_flow(url: &str, home: &Path, signals: Option<&Path>) -> String {
    finish_flow(spawn_flow(url, home, signals))
}

/// A second process of the same home: delivers what the first spooled. Its exit flush may take
/// minutes (hundreds of thousands of spooled runs, a debug build, a loaded CI machine): its
/// timeouts only bound a hung delivery.
fn deliver_spool(url: &str, home: &Path) {
    let out = command(url, home, "nothing")
        .env("FLOWKIT_FLUSH_TIMEOUT", "600s")
        .env("FLOWKIT_REPORT_FLUSH_TIMEOUT", "580s")
        .output()
        .expect("run the second child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("delivered=true"),
        "the second process delivered the spool: {stdout}\n{stderr}"
    );
    assert_eq!(spooled(home), 0, "the spool is empty: {stderr}");
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines in the spool files under `home`.
fn spooled(home: &Path) -> usize {
    flowkit::sink::report::spooled_lines(&home.join("spool"))
        .map(|lines| lines.len())
        .unwrap_or_default()
}

/// The flow run and every one of its task runs are on the server, `Completed`. Both processes
/// have exited: what is not there now never will be, so the wait only covers the commit.
async fn assert_whole(client: &reqwest::Client, url: &str, flow: &str, tasks: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, completed, total) = count_tasks(client, url, flow).await;
        if state == "Completed" && completed == tasks && total == tasks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "flow run {flow} is {state} with {completed} of {tasks} task runs Completed ({total} in all)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The flow run's state, its completed task runs and all its task runs.
async fn count_tasks(client: &reqwest::Client, url: &str, flow: &str) -> (String, u64, u64) {
    let get = |uri: String| async move {
        let response = client.get(uri).send().await.expect("GET");
        if !response.status().is_success() {
            return None;
        }
        Some(response.json::<serde_json::Value>().await.expect("json"))
    };
    let Some(run) = get(format!("{url}/api/flow-runs/{flow}")).await else {
        return ("absent".into(), 0, 0);
    };
    let state = run["state"].as_str().unwrap_or("?").to_string();
    let (mut completed, mut total) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("{url}/api/flow-runs/{flow}/task-runs?limit=500");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let Some(page) = get(uri).await else {
            return (state, completed, total);
        };
        for item in page["items"].as_array().into_iter().flatten() {
            total += 1;
            if item["state"] == "Completed" {
                completed += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (state, completed, total),
        }
    }
}
