//! Deployed runs end to end: a real flowkit-server on loopback (a SQLite file, a short lease),
//! real workers (`flowkit::Worker`) in this process and in a child process (this test binary
//! run again), runs triggered over HTTP as another team would.
//!
//! One server serves every test of this binary (the runtime's settings are per process); each
//! test serves deployments of its own, so workers never take each other's runs. The server
//! uses a SQLite file; [`every_test_also_passes_on_postgresql`] runs every test again in a
//! child process whose server uses a fresh PostgreSQL database.

use flowkit::hooks::HookContext;
use flowkit::sink::{Sink, add_sink};
use flowkit::{Event, StateType, Worker, flow, task};
use serde_json::{Value, json};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The server's lease: short, so crashes are decided quickly and a blocked runtime outlives it.
const LEASE: Duration = Duration::from_secs(3);

/// Set in the child process of [`a_sigkilled_worker_s_run_crashes_and_is_rerun_elsewhere`].
const CHILD_ENV: &str = "FLOWKIT_TEST_DEPLOYED_CHILD";

/// Set in the child process of [`every_test_also_passes_on_postgresql`]: the database URL its
/// server uses instead of a SQLite file.
const DATABASE_ENV: &str = "FLOWKIT_TEST_DEPLOYED_DATABASE";

#[path = "support/flow_run_states.rs"]
mod flow_run_states;
#[path = "support/pg_database.rs"]
mod pg_database;

struct Shared {
    url: String,
    events: Arc<Mutex<Vec<Event>>>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Records every event of this process.
struct Recording(Arc<Mutex<Vec<Event>>>);

impl Sink for Recording {
    fn on_event(&mut self, event: &Event) {
        self.0.lock().expect("events").push(event.clone());
    }
}

/// The server (on a runtime of its own, so a test that blocks its runtime cannot stall it),
/// and this process's flowkit settings pointing at it.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = std::env::var(DATABASE_ENV)
            .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("flowkit.db").display()));
        // Started from a thread of its own: `shared` is called from inside the tests' runtimes.
        let (runtime, url) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            let mut config = flowkit_server::config::Config::new(db);
            config.settings.lease = LEASE;
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let server = runtime
                .block_on(flowkit_server::spawn(listener, config))
                .expect("start the server");
            let url = format!("http://{}", server.addr());
            runtime.spawn(async move {
                let _server = server;
                std::future::pending::<()>().await
            });
            (runtime, url)
        })
        .join()
        .expect("the server starts");

        let mut cfg = flowkit::config::Config::from_env();
        cfg.home = dir.path().join("home");
        cfg.summary = false;
        cfg.api_url = Some(url.clone());
        assert!(flowkit::config::init(cfg).is_ok(), "configured first");
        let events = Arc::new(Mutex::new(Vec::new()));
        add_sink(Recording(Arc::clone(&events)));
        Shared {
            url,
            events,
            _runtime: runtime,
            _dir: dir,
        }
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client")
}

/// Triggers `flow/name` with `parameters` (retrying while the worker has not registered it
/// yet); the new run's id.
async fn trigger(flow: &str, name: &str, parameters: Value) -> Uuid {
    let url = format!("{}/api/v1/deployments/{flow}/{name}/runs", shared().url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = client()
            .post(&url)
            .json(&json!({ "parameters": parameters }))
            .send()
            .await
            .expect("trigger");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("trigger answer");
        if status == 201 {
            return body["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("the run's id");
        }
        assert!(
            status == 404 && Instant::now() < deadline,
            "trigger {flow}/{name}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /flow-runs/{id}`.
async fn run(id: Uuid) -> Value {
    let url = format!("{}/api/v1/flow-runs/{id}", shared().url);
    let res = client().get(&url).send().await.expect("GET run");
    if res.status().as_u16() == 404 {
        return Value::Null;
    }
    res.json().await.expect("run")
}

/// Waits until the run's state is `want` (at most `within`); the run.
async fn wait_for_state(id: Uuid, want: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let run = run(id).await;
        if let Some(state) = run["state"].as_str()
            && want.contains(&state)
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} not {want:?} within {within:?}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The output of the flow run `id` (`GET /flow-runs/{id}/result`, waiting up to 30 s for it
/// to end): 200 asserted.
async fn result(id: Uuid) -> Value {
    let url = format!("{}/api/v1/flow-runs/{id}/result?wait=30", shared().url);
    let res = client().get(&url).send().await.expect("result");
    assert_eq!(res.status().as_u16(), 200, "result of {id}");
    res.json().await.expect("json")
}

/// `POST /flow-runs/{id}/cancel` with `body`: 200 asserted.
async fn cancel(id: Uuid, body: Value) {
    let res = client()
        .post(format!("{}/api/v1/flow-runs/{id}/cancel", shared().url))
        .json(&body)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status().as_u16(), 200, "{:?}", res.text().await);
}

/// Events this process recorded for the flow run `id` and its task runs.
fn recorded(id: Uuid) -> Vec<Event> {
    shared()
        .events
        .lock()
        .expect("events")
        .iter()
        .filter(|e| e.flow_run_id == Some(id) || e.run_id == id)
        .cloned()
        .collect()
}

/// Waits until this process recorded an event of `id`'s runs matching `pred`.
async fn wait_recorded(id: Uuid, what: &str, pred: impl Fn(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !recorded(id).iter().any(&pred) {
        assert!(Instant::now() < deadline, "run {id}: never saw {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's task runs of the flow run `id` (one page) satisfy `done`; them.
async fn wait_task_runs(id: Uuid, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("{}/api/v1/flow-runs/{id}/task-runs?limit=50", shared().url);
    loop {
        let page: Value = client()
            .get(&url)
            .send()
            .await
            .expect("task runs")
            .json()
            .await
            .expect("json");
        let items = page["items"].as_array().expect("a page of task runs");
        if done(items) {
            return items.clone();
        }
        assert!(Instant::now() < deadline, "task runs of {id}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker of `deployments` in this process, and what stops it.
fn start_worker(
    worker: Worker,
    deployments: Vec<flowkit::Deployment>,
) -> (
    flowkit::ShutdownHandle,
    tokio::task::JoinHandle<Result<(), flowkit::ServeError>>,
) {
    shared();
    let worker = worker
        .handle_signals(false)
        .claim_wait(Duration::from_secs(1));
    let stop = worker.shutdown_handle();
    (stop, tokio::spawn(worker.serve(deployments)))
}

async fn stop_worker(
    stop: flowkit::ShutdownHandle,
    serving: tokio::task::JoinHandle<Result<(), flowkit::ServeError>>,
) {
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), serving)
        .await
        .expect("the worker stops")
        .expect("not panicked")
        .expect("serve returns Ok after a shutdown");
}

#[task]
async fn square(x: u64) -> anyhow::Result<u64> {
    tracing::info!(x, "squaring");
    Ok(x * x)
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Sum {
    total: u64,
    terms: usize,
}

/// Sums the squares of `1..=n`.
#[flow]
async fn sum_of_squares(n: u64, offset: u64) -> anyhow::Result<Sum> {
    tracing::info!(n, "summing");
    let squares = square::map((1..=n).collect::<Vec<_>>()).await;
    let total = squares
        .into_iter()
        .collect::<anyhow::Result<Vec<u64>>>()?
        .iter()
        .sum::<u64>();
    Ok(Sum {
        total: total + offset,
        terms: n as usize,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_is_claimed_run_and_finished_with_its_result() {
    let (stop, serving) = start_worker(
        Worker::new(),
        vec![sum_of_squares::deployment("e2e").parameters(json!({"offset": 1000}))],
    );
    // `offset` comes from the deployment's defaults.
    let id = trigger("sum_of_squares", "e2e", json!({"n": 4})).await;
    assert_eq!(result(id).await, json!({"total": 1030, "terms": 4}));

    let run = wait_for_state(id, &["Completed"], Duration::from_secs(10)).await;
    assert_eq!(run["deployment"], "sum_of_squares/e2e");
    assert_eq!(run["attempt"], 1);

    // Every event of the run (the flow's, its task runs', the logs) carries the same lease.
    wait_recorded(id, "the flow's final state", |e| {
        e.run_id == id && e.state_type() == Some(StateType::Completed)
    })
    .await;
    let events = recorded(id);
    let tasks = events.iter().filter(|e| e.run_id != id).count();
    let logs = events
        .iter()
        .filter(|e| matches!(e.body, flowkit::EventBody::Log { .. }))
        .count();
    assert!(tasks >= 4 * 3 && logs >= 5, "{events:#?}");
    let token = events[0].lease.expect("a lease");
    for e in &events {
        assert_eq!(e.lease, Some(token), "{e:?}");
    }
    let first = events
        .iter()
        .find(|e| e.run_id == id && e.details().is_some())
        .expect("the flow's details");
    let details = first.details().expect("details");
    assert_eq!(details.deployment.as_deref(), Some("sum_of_squares/e2e"));
    assert!(details.worker.is_some());
    stop_worker(stop, serving).await;
}

static CANCEL_HOOKS: AtomicU32 = AtomicU32::new(0);

fn count_cancelled(ctx: &HookContext) {
    if ctx.state.kind == StateType::Cancelled {
        CANCEL_HOOKS.fetch_add(1, Ordering::SeqCst);
    }
}

#[task]
async fn wait_a_long_time() -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

#[flow(on_failure = count_cancelled)]
async fn cancellable() -> anyhow::Result<()> {
    wait_a_long_time().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_ends_cancelled_with_its_tasks_and_its_hook_runs() {
    let (stop, serving) = start_worker(Worker::new(), vec![cancellable::deployment("e2e")]);
    let id = trigger("cancellable", "e2e", json!({})).await;
    wait_recorded(id, "the task running", |e| {
        e.run_id != id && e.state_type() == Some(StateType::Running)
    })
    .await;
    let asked = Instant::now();
    cancel(id, json!({"reason": "no longer needed"})).await;
    // Delivered by the worker's next heartbeat (every third of the lease), and honoured at once.
    wait_recorded(id, "the flow cancelled", |e| {
        e.run_id == id && e.state_type() == Some(StateType::Cancelled)
    })
    .await;
    let heartbeat = LEASE / 3;
    assert!(
        asked.elapsed() <= heartbeat + Duration::from_secs(2),
        "cancelled {:?} after the request; heartbeats every {heartbeat:?}",
        asked.elapsed()
    );
    let run = wait_for_state(id, &["Cancelled"], Duration::from_secs(20)).await;
    assert_eq!(run["state"], "Cancelled", "{run}");

    let events = recorded(id);
    let last_of = |run_id: Uuid| {
        events
            .iter()
            .filter(|e| e.run_id == run_id)
            .filter_map(Event::state_type)
            .next_back()
    };
    let task = events
        .iter()
        .find(|e| e.run_id != id)
        .expect("a task run")
        .run_id;
    assert_eq!(last_of(task), Some(StateType::Cancelled));
    assert_eq!(last_of(id), Some(StateType::Cancelled));
    assert_eq!(
        CANCEL_HOOKS.load(Ordering::SeqCst),
        1,
        "on_failure ran once"
    );
    stop_worker(stop, serving).await;
}

/// Blocks its thread for four seconds, never reaching an `.await` where the cancel token could
/// stop it: the worker gives it the cancel grace, then aborts its task and ends the run.
#[flow]
async fn ignores_the_cancel() -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_secs(4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_does_not_stop_is_aborted_after_the_cancel_grace() {
    let grace = Duration::from_secs(1);
    let (stop, serving) = start_worker(
        Worker::new().cancel_grace(grace),
        vec![ignores_the_cancel::deployment("e2e")],
    );
    let id = trigger("ignores_the_cancel", "e2e", json!({})).await;
    wait_for_state(id, &["Running"], Duration::from_secs(30)).await;
    let asked = Instant::now();
    cancel(id, json!({"reason": "stop it"})).await;
    let run = wait_for_state(id, &["Cancelled"], Duration::from_secs(30)).await;
    let took = asked.elapsed();
    assert_eq!(run["state"], "Cancelled", "{run}");
    let message = run["state_message"].as_str().unwrap_or_default();
    assert!(message.contains("its task was aborted"), "{run}");
    assert!(took >= grace, "aborted only after the grace: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "ended by the abort, before the body returned: {took:?}"
    );
    stop_worker(stop, serving).await;
}

/// A subflow that waits a long time in a task of its own.
#[flow]
async fn cancellable_child() -> anyhow::Result<()> {
    wait_a_long_time().await
}

#[flow]
async fn cancellable_parent() -> anyhow::Result<()> {
    cancellable_child().await
}

/// Cancelling a deployed run cancels its child runs too: the subflow and its task end
/// `Cancelled`, on the server as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_s_subflow_ends_cancelled_too() {
    let (stop, serving) = start_worker(Worker::new(), vec![cancellable_parent::deployment("e2e")]);
    let id = trigger("cancellable_parent", "e2e", json!({})).await;
    let subflow_of = |events: &[Event]| {
        events
            .iter()
            .find(|e| e.parent_run_id == Some(id) && e.run_kind == flowkit::RunKind::Flow)
            .map(|e| e.run_id)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let subflow = loop {
        let all = shared().events.lock().expect("events").clone();
        if let Some(subflow) = subflow_of(&all)
            && all.iter().any(|e| {
                e.parent_run_id == Some(subflow) && e.state_type() == Some(StateType::Running)
            })
        {
            break subflow;
        }
        assert!(Instant::now() < deadline, "the subflow's task never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cancel(id, json!({})).await;
    let parent = wait_for_state(id, &["Cancelled"], Duration::from_secs(20)).await;
    assert_eq!(parent["state"], "Cancelled", "{parent}");
    let child = wait_for_state(subflow, &["Cancelled"], Duration::from_secs(20)).await;
    assert_eq!(child["parent_run_id"], id.to_string(), "{child}");
    let all = shared().events.lock().expect("events").clone();
    let task_states: Vec<StateType> = all
        .iter()
        .filter(|e| e.parent_run_id == Some(subflow))
        .filter_map(Event::state_type)
        .collect();
    assert_eq!(
        task_states.last(),
        Some(&StateType::Cancelled),
        "{task_states:?}"
    );
    stop_worker(stop, serving).await;
}

/// Blocks the thread it runs on (the only worker thread of its test's runtime) for two leases.
#[flow]
async fn blocks_its_thread() -> anyhow::Result<u32> {
    std::thread::sleep(LEASE * 2);
    Ok(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_flow_blocking_every_runtime_thread_is_not_taken_for_crashed() {
    let (stop, serving) = start_worker(Worker::new(), vec![blocks_its_thread::deployment("e2e")]);
    let id = trigger("blocks_its_thread", "e2e", json!({})).await;
    let run = wait_for_state(
        id,
        &["Completed", "Crashed", "Failed", "Cancelled"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run["state"], "Completed", "{run}");
    assert_eq!(run["attempt"], 1);
    let states = flow_run_states::server_states(&client(), &shared().url, id).await;
    assert!(
        !states.iter().any(|(s, _)| s == "Crashed"),
        "the heartbeat kept the lease: {states:?}"
    );
    stop_worker(stop, serving).await;
}

#[flow]
async fn finishes_in_the_grace() -> anyhow::Result<u32> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(1)
}

#[flow]
async fn outlives_the_grace() -> anyhow::Result<u32> {
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_or_cancels_every_run_and_leaves_none_running() {
    let (stop, serving) = start_worker(
        Worker::new()
            .grace(Duration::from_secs(4))
            .cancel_grace(Duration::from_secs(1)),
        vec![
            finishes_in_the_grace::deployment("e2e"),
            outlives_the_grace::deployment("e2e"),
        ],
    );
    let quick = trigger("finishes_in_the_grace", "e2e", json!({})).await;
    let slow = trigger("outlives_the_grace", "e2e", json!({})).await;
    wait_for_state(quick, &["Running"], Duration::from_secs(20)).await;
    wait_for_state(slow, &["Running"], Duration::from_secs(20)).await;
    let started = Instant::now();
    stop_worker(stop, serving).await;
    assert!(started.elapsed() < Duration::from_secs(30));

    let quick = run(quick).await;
    let slow = run(slow).await;
    assert_eq!(quick["state"], "Completed", "{quick}");
    assert_eq!(slow["state"], "Cancelled", "{slow}");
    assert!(
        slow["state_message"]
            .as_str()
            .is_some_and(|m| m.contains("shut down")),
        "{slow}"
    );
}

/// Sleeps in the child worker (which is killed); completes anywhere else.
#[flow(retries = 1)]
async fn survives_a_kill(n: u32) -> anyhow::Result<u32> {
    if std::env::var_os(CHILD_ENV).is_some() {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    Ok(n + 1)
}

/// Takes a second and a half: long enough to get SIGTERM while it runs, well within the
/// worker's grace.
#[flow]
async fn outlasts_a_sigterm(n: u32) -> anyhow::Result<u32> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(n * 2)
}

/// The child process: a worker of `survives_a_kill/e2e` until it is killed (`CHILD_ENV` =
/// `kill`), of `outlasts_a_sigterm/e2e` until SIGTERM (`term`), or of
/// `ticks_until_stopped/e2e` (`stop`, frozen and thawed) or `ticks_until_stopped/cancel`
/// (`stop-cancel`, frozen while its run is cancelled), with the default signal handling.
#[test]
#[ignore = "the child process of the tests that kill or stop a worker process"]
fn child_worker() {
    let deployment = match std::env::var(CHILD_ENV).as_deref() {
        Ok("kill") => survives_a_kill::deployment("e2e"),
        Ok("term") => outlasts_a_sigterm::deployment("e2e"),
        Ok("stop") => ticks_until_stopped::deployment("e2e"),
        Ok("stop-cancel") => ticks_until_stopped::deployment("cancel"),
        _ => return,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(
            Worker::new()
                .claim_wait(Duration::from_secs(1))
                .serve([deployment]),
        )
        .expect("serve");
}

/// A worker process (this test binary again) of the deployments `role` names (see
/// [`child_worker`]).
fn spawn_child(url: &str, home: &std::path::Path, role: &str) -> Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "child_worker", "--ignored", "--nocapture"])
        .env(CHILD_ENV, role)
        .env(TICKS_ENV, home.join("ticks"))
        .env("FLOWKIT_API_URL", url)
        .env("FLOWKIT_HOME", home)
        .env("FLOWKIT_SUMMARY", "0")
        .spawn()
        .expect("spawn the child worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_s_run_crashes_and_is_rerun_elsewhere() {
    let url = shared().url.clone();
    let home = tempfile::tempdir().expect("child home");
    let mut child = spawn_child(&url, home.path(), "kill");
    let id = trigger("survives_a_kill", "e2e", json!({"n": 41})).await;
    let running = wait_for_state(id, &["Running"], Duration::from_secs(60)).await;
    assert_eq!(running["attempt"], 1);
    let killed_at = chrono::Utc::now();
    child.kill().expect("SIGKILL the worker");
    child.wait().expect("reap it");

    let (stop, serving) = start_worker(Worker::new(), vec![survives_a_kill::deployment("e2e")]);
    let run = wait_for_state(
        id,
        &["Completed", "Failed", "Cancelled"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(run["state"], "Completed", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    let states = flow_run_states::server_states(&client(), &shared().url, id).await;
    assert!(
        states.iter().any(|(s, a)| s == "Crashed" && *a == 1),
        "attempt 1 crashed: {states:?}"
    );
    // Within the lease of the last heartbeat (before the kill), give or take the reaper's
    // round (a tenth of the lease) and a second of slack.
    let crashed_at = flow_run_states::entered_at(&client(), &shared().url, id, "Crashed", 1)
        .await
        .expect("when it crashed");
    let after = (crashed_at - killed_at).to_std().unwrap_or_default();
    assert!(
        after <= LEASE + Duration::from_secs(1),
        "crashed {after:?} after the kill; the lease is {LEASE:?}"
    );
    assert_eq!(result(id).await, json!(42));
    stop_worker(stop, serving).await;
}

static KEPT_CALLS: AtomicU32 = AtomicU32::new(0);
static CACHED_CALLS: AtomicU32 = AtomicU32::new(0);
static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Expensive work whose output is kept: a retry of its flow takes it back.
#[task(persist = true)]
async fn kept_step(x: u64) -> anyhow::Result<u64> {
    KEPT_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(x * 10)
}

/// Work cached by its inputs.
#[task(cache = inputs)]
async fn cached_step(x: u64) -> anyhow::Result<u64> {
    CACHED_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(x + 5)
}

/// Fails on its first call (a flaky download), succeeds after.
#[task]
async fn flaky_step(x: u64) -> anyhow::Result<u64> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        anyhow::bail!("the first call fails");
    }
    Ok(x + 1)
}

/// No retries of its own: it fails, and someone retries it over HTTP.
#[flow]
async fn retried_from_failure(x: u64) -> anyhow::Result<u64> {
    let kept = kept_step(x).await?;
    let cached = cached_step(kept).await?;
    flaky_step(cached).await
}

/// `POST /flow-runs/{id}/retry` of a failed deployed run: the same run as attempt 2, and the
/// tasks that finished in attempt 1 (kept or cached, in this worker's store) come back
/// `Cached` instead of running again; only the failed one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_reruns_only_what_did_not_finish() {
    let (stop, serving) =
        start_worker(Worker::new(), vec![retried_from_failure::deployment("e2e")]);
    let id = trigger("retried_from_failure", "e2e", json!({"x": 4})).await;
    let failed = wait_for_state(id, &["Completed", "Failed"], Duration::from_secs(30)).await;
    assert_eq!(failed["state"], "Failed", "{failed}");
    assert_eq!(failed["attempt"], 1, "{failed}");
    let calls =
        || [&KEPT_CALLS, &CACHED_CALLS, &FLAKY_CALLS].map(|calls| calls.load(Ordering::SeqCst));
    assert_eq!(calls(), [1, 1, 1]);
    // Someone sees the failure on the server and retries the run at once. The worker
    // delivered attempt 1's task runs before finishing the run: they are there already (sent
    // after the retry, they would carry a stale lease token and be refused).
    let tasks = wait_task_runs(id, |_| true).await;
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert!(tasks.iter().any(|t| t["state"] == "Failed"), "{tasks:?}");

    let res = client()
        .post(format!("{}/api/v1/flow-runs/{id}/retry", shared().url))
        .json(&json!({}))
        .send()
        .await
        .expect("retry");
    assert_eq!(res.status().as_u16(), 200, "{:?}", res.text().await);
    assert_eq!(result(id).await, json!(4 * 10 + 5 + 1));
    let done = wait_for_state(id, &["Completed"], Duration::from_secs(10)).await;
    assert_eq!(done["id"], id.to_string(), "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(calls(), [1, 1, 2], "only the failed task ran again");

    // Attempt 2's kept and cached tasks ended `Cached`, on the server too.
    wait_recorded(id, "attempt 2's end", |e| {
        e.run_id == id && e.state_type() == Some(StateType::Completed)
    })
    .await;
    let events = recorded(id);
    let cached_names: Vec<String> = events
        .iter()
        .filter(|e| e.run_id != id && e.state_type() == Some(StateType::Cached))
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(cached_names.len(), 2, "{events:#?}");
    for name in ["kept_step", "cached_step"] {
        assert!(
            cached_names.iter().any(|n| n == name),
            "{name}: {cached_names:?}"
        );
    }
    // The task runs reach the server through the reporter, after the flow's final state.
    let tasks = wait_task_runs(id, |items| {
        let cached = items.iter().filter(|t| t["state"] == "Cached").count();
        items.len() == 6 && cached == 2
    })
    .await;
    let kept = tasks.iter().filter(|t| t["name"] == "kept_step");
    assert!(kept.clone().any(|t| t["state"] == "Completed"), "{tasks:?}");
    assert!(kept.clone().any(|t| t["state"] == "Cached"), "{tasks:?}");
    stop_worker(stop, serving).await;
}

/// SIGTERM to a worker process: it stops claiming at once, lets the run in flight finish
/// within its grace, delivers what it reported and exits 0; a run triggered after the signal
/// waits for another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_lets_the_run_in_flight_finish_and_claims_no_more() {
    let url = shared().url.clone();
    let home = tempfile::tempdir().expect("child home");
    let mut child = spawn_child(&url, home.path(), "term");
    let id = trigger("outlasts_a_sigterm", "e2e", json!({"n": 21})).await;
    wait_for_state(id, &["Running"], Duration::from_secs(60)).await;
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.expect("run kill").success(), "SIGTERM to {pid}");
    // Sent after the signal: the stopping worker must not take it.
    let later = trigger("outlasts_a_sigterm", "e2e", json!({"n": 1})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the worker exits cleanly: {status}");
    let finished = wait_for_state(
        id,
        &["Completed", "Failed", "Cancelled"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished["state"], "Completed", "{finished}");
    assert_eq!(result(id).await, json!(42));
    let waiting = run(later).await;
    assert_eq!(waiting["state"], "Scheduled", "{waiting}");
    // Another worker takes it.
    let (stop, serving) = start_worker(Worker::new(), vec![outlasts_a_sigterm::deployment("e2e")]);
    let done = wait_for_state(later, &["Completed"], Duration::from_secs(30)).await;
    assert_eq!(done["attempt"], 1, "{done}");
    stop_worker(stop, serving).await;
}

/// Where a child worker (see [`spawn_child`]: `FLOWKIT_HOME/ticks`) writes a line per tick of
/// a [`ticks_until_stopped`] run's body.
const TICKS_ENV: &str = "FLOWKIT_TEST_TICKS";

/// Ticks forever in the child worker (writing to [`TICKS_ENV`]); completes anywhere else.
#[flow(retries = 1)]
async fn ticks_until_stopped(n: u32) -> anyhow::Result<u32> {
    if let Some(path) = std::env::var_os(TICKS_ENV) {
        loop {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            writeln!(file, "tick")?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(n + 1)
}

fn ticks(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// A child process killed when dropped, so that a failing test leaves none behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args([name, &pid]).status();
    assert!(sent.expect("run kill").success(), "{name} to {pid}");
}

/// A worker frozen (SIGSTOP) past its lease: the server decides its run (`Crashed`, then
/// attempt 2 on another worker). When it wakes (SIGCONT), its next heartbeat learns the lease
/// is lost and the body of attempt 1 stops; nothing it sends changes the run any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_stops_the_run() {
    let url = shared().url.clone();
    let home = tempfile::tempdir().expect("child home");
    let ticks_file = home.path().join("ticks");
    let child = KillOnDrop(spawn_child(&url, home.path(), "stop"));
    let id = trigger("ticks_until_stopped", "e2e", json!({"n": 6})).await;
    wait_for_state(id, &["Running"], Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ticks(&ticks_file) < 3 {
        assert!(Instant::now() < deadline, "the body ticks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child.0, "-STOP");
    // Past the lease the reaper crashes attempt 1; another worker runs attempt 2.
    let (stop, serving) = start_worker(Worker::new(), vec![ticks_until_stopped::deployment("e2e")]);
    let done = wait_for_state(id, &["Completed"], Duration::from_secs(60)).await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(result(id).await, json!(7));
    // The frozen worker wakes: within a heartbeat or two its body stops for good.
    signal(&child.0, "-CONT");
    tokio::time::sleep(LEASE).await;
    let settled = ticks(&ticks_file);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ticks(&ticks_file), settled, "attempt 1's body still runs");
    let after = run(id).await;
    assert_eq!(after["state"], "Completed", "{after}");
    assert_eq!(after["attempt"], 2, "{after}");
    let states = flow_run_states::server_states(&client(), &shared().url, id).await;
    assert!(
        states.iter().any(|(s, a)| s == "Crashed" && *a == 1),
        "attempt 1 crashed: {states:?}"
    );
    drop(child);
    stop_worker(stop, serving).await;
}

/// A worker that died (frozen here, so that it cannot hear the request) while its run was
/// being cancelled: at lease expiry the reaper ends the run `Cancelled`, never re-queued,
/// though the flow has retries left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_s_cancelling_run_ends_cancelled_at_lease_expiry() {
    let url = shared().url.clone();
    let home = tempfile::tempdir().expect("child home");
    let child = KillOnDrop(spawn_child(&url, home.path(), "stop-cancel"));
    let id = trigger("ticks_until_stopped", "cancel", json!({"n": 1})).await;
    wait_for_state(id, &["Running"], Duration::from_secs(60)).await;
    signal(&child.0, "-STOP");
    let asked = Instant::now();
    cancel(id, json!({"reason": "the worker is gone"})).await;
    assert_eq!(run(id).await["state"], "Cancelling");
    let ended = wait_for_state(id, &["Cancelled"], LEASE * 4).await;
    assert_eq!(ended["state"], "Cancelled", "{ended}");
    assert_eq!(ended["attempt"], 1, "not re-queued: {ended}");
    assert!(
        asked.elapsed() >= LEASE / 2,
        "decided by the reaper, not the worker"
    );
    drop(child);
    // Nothing claims it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = run(id).await;
    assert_eq!(later["state"], "Cancelled", "{later}");
    assert_eq!(later["attempt"], 1, "{later}");
}

/// A worker given one valid deployment and one with a bad schedule does not start, and
/// registers neither: nothing of it is half there on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_bad_deployment_registers_none() {
    shared();
    let served = Worker::new()
        .handle_signals(false)
        .serve([
            sum_of_squares::deployment("half"),
            gpu_job_a::deployment("half").cron("61 * * * *"),
        ])
        .await;
    match served {
        Err(flowkit::ServeError::InvalidDeployment(why)) => {
            let why = why.to_string();
            assert!(why.contains("61 * * * *") || why.contains("cron"), "{why}");
        }
        other => panic!("expected the bad schedule refused: {other:?}"),
    }
    for deployment in ["sum_of_squares/half", "gpu_job_a/half"] {
        let res = client()
            .get(format!("{}/api/v1/deployments/{deployment}", shared().url))
            .send()
            .await
            .expect("GET deployment");
        assert_eq!(res.status().as_u16(), 404, "{deployment} was registered");
    }
}

/// A worker whose second deployment the server refuses (409: another function owns its
/// name) does not start, and its first deployment, though valid, is not registered either:
/// every deployment is checked (`?dry_run=true`) before any is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refused_by_the_server_registers_none() {
    let owner = client()
        .post(format!("{}/api/v1/deployments", shared().url))
        .json(&serde_json::json!({
            "flow": "gpu_job_a",
            "name": "owned",
            "flow_key": "another_crate::gpu_job_a",
            "version": "1",
            "parameter_schema": {"type": "object"},
            "output_schema": {},
            "default_parameters": {}
        }))
        .send()
        .await
        .expect("POST deployment");
    assert_eq!(owner.status().as_u16(), 201);
    let served = Worker::new()
        .handle_signals(false)
        .serve([
            sum_of_squares::deployment("owned"),
            gpu_job_a::deployment("owned"),
        ])
        .await;
    match served {
        Err(flowkit::ServeError::Refused {
            deployment, status, ..
        }) => {
            assert_eq!(deployment, "gpu_job_a/owned");
            assert_eq!(status, 409);
        }
        other => panic!("expected the server's 409: {other:?}"),
    }
    let res = client()
        .get(format!(
            "{}/api/v1/deployments/sum_of_squares/owned",
            shared().url
        ))
        .send()
        .await
        .expect("GET deployment");
    assert_eq!(res.status().as_u16(), 404, "the valid one was registered");
}

/// Runs of [`gpu_job_a`] and [`gpu_job_b`] executing now, and the most seen at once.
static GPU_NOW: AtomicU32 = AtomicU32::new(0);
static GPU_MOST: AtomicU32 = AtomicU32::new(0);

async fn hold_the_gpu() -> anyhow::Result<u32> {
    let now = GPU_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    GPU_MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    GPU_NOW.fetch_sub(1, Ordering::SeqCst);
    Ok(now)
}

#[flow]
async fn gpu_job_a() -> anyhow::Result<u32> {
    hold_the_gpu().await
}

#[flow]
async fn gpu_job_b() -> anyhow::Result<u32> {
    hold_the_gpu().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_tag_limit_bounds_runs_across_workers_and_deployments() {
    // Two workers, each serving both deployments with room for 4 runs at once; every run
    // carries the tag `gpu-e2e`, limited to 1 on the server.
    let deployments = || {
        vec![
            gpu_job_a::deployment("e2e").tags(["gpu-e2e"]),
            gpu_job_b::deployment("e2e").tags(["gpu-e2e"]),
        ]
    };
    let (stop_1, serving_1) = start_worker(Worker::new().slots(4), deployments());
    let (stop_2, serving_2) = start_worker(Worker::new().slots(4), deployments());
    let limit = client()
        .put(format!(
            "{}/api/v1/concurrency-limits/gpu-e2e",
            shared().url
        ))
        .json(&json!({"limit": 1}))
        .send()
        .await
        .expect("set the limit");
    assert_eq!(limit.status().as_u16(), 200);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(trigger("gpu_job_a", "e2e", json!({})).await);
        ids.push(trigger("gpu_job_b", "e2e", json!({})).await);
    }
    for id in ids {
        assert_eq!(result(id).await, json!(1), "alone on the gpu");
    }
    assert_eq!(GPU_MOST.load(Ordering::SeqCst), 1);
    stop_worker(stop_1, serving_1).await;
    stop_worker(stop_2, serving_2).await;
}

/// Every test above again, with the server on PostgreSQL: this test binary run again, in a
/// child process whose server uses a fresh database of the cluster at `FLOWKIT_TEST_PG_URL`.
/// Skips with a printed reason when that is unset; fails instead when
/// `FLOWKIT_REQUIRE_SERVICES=1`.
#[test]
fn every_test_also_passes_on_postgresql() {
    if std::env::var_os(DATABASE_ENV).is_some() || std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let Ok(admin_url) = std::env::var("FLOWKIT_TEST_PG_URL") else {
        assert_ne!(
            std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref(),
            Ok("1"),
            "FLOWKIT_REQUIRE_SERVICES=1 forbids skipping the PostgreSQL pass of deployed_runs: \
             set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)"
        );
        eprintln!(
            "skipping the PostgreSQL pass of deployed_runs: set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = format!("flowkit_deployed_runs_{}", Uuid::now_v7().simple());
    let url = runtime.block_on(pg_database::create_database(&admin_url, &database));
    let status = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--skip", "every_test_also_passes_on_postgresql"])
        .env(DATABASE_ENV, &url)
        .status();
    runtime.block_on(pg_database::drop_database(&admin_url, &database));
    let status = status.expect("run the tests again");
    assert!(
        status.success(),
        "the tests of deployed_runs failed on PostgreSQL ({status}): see their output above"
    );
}
