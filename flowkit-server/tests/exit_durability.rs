//! A process that exits right after its flow, without `flowkit::init()` or `flowkit::flush()`,
//! loses none of its runs: the exit flush delivers them to the server before the process ends,
//! or, with the server down, spools them, and the next process delivers them.
//!
//! Real processes (this binary, run again in child mode) against a real server in this one.
//! The binary has its own `main` (`harness = false`): a child is a plain program whose `main`
//! returns (or calls `std::process::exit`) right after its flow, as users write them.

use flowkit::testing::record;
use flowkit::{flow, task};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in a child: how it ends.
const CHILD_VAR: &str = "FLOWKIT_EXIT_TEST_CHILD";

#[task]
async fn step(i: u32) -> u32 {
    i + 1
}

#[flow]
async fn exiting(n: u32) -> u32 {
    step(n).await + step(n + 1).await
}

fn main() {
    match std::env::var(CHILD_VAR) {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

/// Runs one flow, prints its run id, and ends the way `mode` says — never flushing itself.
fn child(mode: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let id = match mode {
        // The flow runs on a runtime worker; `main` returns and drops the runtime.
        "spawned" => runtime.block_on(async {
            let (out, rec) = tokio::spawn(record(exiting(1))).await.expect("flow task");
            assert_eq!(out, 5);
            rec.run("exiting").id
        }),
        // `#[tokio::main]`: the flow runs on the main thread.
        _ => {
            let (out, rec) = runtime.block_on(record(exiting(1)));
            assert_eq!(out, 5);
            rec.run("exiting").id
        }
    };
    println!("{id}");
    if mode == "exit" {
        // Without dropping the runtime, from inside the program.
        std::process::exit(0);
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = flowkit_server::spawn(listener, flowkit_server::config::Config::new(db))
            .await
            .expect("start the server");
        let url = format!("http://{}", server.addr());
        let client = reqwest::Client::new();

        for mode in ["return", "exit", "spawned"] {
            let home = dir.path().join(format!("home-{mode}"));
            let started = Instant::now();
            let id = run_child(mode, &url, &home);
            println!(
                "exit_durability: a child that ends by {mode:?} ran for {:?}",
                started.elapsed()
            );
            assert_arrived(&client, &url, &id).await;
            assert_eq!(spooled(&home), 0, "{mode}: delivered, nothing spooled");
            println!("test exit_durability::{mode} ... ok");
        }

        // The server is down when the first child exits: its runs go to the spool, and the
        // next child (same FLOWKIT_HOME) delivers them along with its own.
        let home = dir.path().join("home-spool");
        let down = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
            format!("http://{}", probe.local_addr().expect("addr"))
        };
        let first = run_child("return", &down, &home);
        assert_eq!(
            spooled(&home),
            3 * 3,
            "every event of the first child is spooled"
        );
        let second = run_child("return", &url, &home);
        assert_arrived(&client, &url, &first).await;
        assert_arrived(&client, &url, &second).await;
        assert_eq!(spooled(&home), 0, "the second child delivered the spool");
        println!("test exit_durability::spooled_then_delivered_by_the_next_process ... ok");

        server.stop().await.expect("server stopped");
    });
}

/// Runs this binary in child mode; returns the flow run id it printed.
fn run_child(mode: &str, url: &str, home: &Path) -> String {
    let exe = std::env::current_exe().expect("this test binary");
    let out = Command::new(exe)
        .env(CHILD_VAR, mode)
        .env("FLOWKIT_API_URL", url)
        .env("FLOWKIT_HOME", home)
        .env("FLOWKIT_SUMMARY", "0")
        .env_remove("FLOWKIT_EVENT_LOG")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {mode} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("child {mode} printed no run id"))
        .trim()
        .to_string()
}

/// Events in the spool files under `home`.
fn spooled(home: &Path) -> usize {
    flowkit::sink::report::spooled_lines(&home.join("spool"))
        .map(|lines| lines.len())
        .unwrap_or_default()
}

/// The flow run `id` and its two task runs are on the server, `Completed`. The child has
/// exited: what is not there now never will be, so the wait only covers the server's commit.
async fn assert_arrived(client: &reqwest::Client, url: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = client
            .get(format!("{url}/api/flow-runs/{id}/task-runs"))
            .send()
            .await
            .expect("GET task runs");
        if res.status().is_success() {
            let body: serde_json::Value = res.json().await.expect("json");
            let tasks = body["items"].as_array().cloned().unwrap_or_default();
            if body["flow_run"]["state"] == "Completed"
                && tasks.len() == 2
                && tasks.iter().all(|t| t["state"] == "Completed")
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "flow run {id} did not arrive complete on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
