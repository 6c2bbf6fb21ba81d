//! Flows, subflows, standalone tasks, submit/upstream, wait_for, map, and flow retries that
//! rerun only what did not finish.

use flowkit::testing::record;
use flowkit::{CallOptions, RunKind, StateType, TaskHandle, flow, task};
use std::sync::atomic::{AtomicU32, Ordering};

#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

#[flow]
async fn inner(x: u64) -> u64 {
    double(x).await + 1
}

#[flow]
async fn outer(x: u64) -> u64 {
    let a = double(x).await;
    inner(a).await
}

#[tokio::test]
async fn subflows_and_tasks_know_their_parents() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(outer(5)).await;
    assert_eq!(out, 21);
    let outer_run = rec.run("outer");
    let inner_run = rec.run("inner");
    let doubles = rec.runs_named("double");
    assert_eq!(doubles.len(), 2);
    assert_eq!(outer_run.kind, RunKind::Flow);
    assert_eq!(outer_run.parent_run_id, None);
    assert_eq!(outer_run.flow_run_id, Some(outer_run.id));
    assert_eq!(inner_run.kind, RunKind::Flow);
    assert_eq!(
        inner_run.parent_run_id,
        Some(outer_run.id),
        "a subflow is a child run"
    );
    assert_eq!(inner_run.flow_run_id, Some(inner_run.id));
    assert_eq!(doubles[0].parent_run_id, Some(outer_run.id));
    assert_eq!(doubles[0].flow_run_id, Some(outer_run.id));
    assert_eq!(doubles[1].parent_run_id, Some(inner_run.id));
    assert_eq!(doubles[1].flow_run_id, Some(inner_run.id));
    for run in rec.runs() {
        assert_eq!(
            run.final_state().map(|s| s.kind),
            Some(StateType::Completed),
            "{}",
            run.name
        );
    }
    let params = outer_run
        .details
        .and_then(|d| d.parameters)
        .expect("flow parameters");
    assert_eq!(params["x"], 5);
}

#[tokio::test]
async fn a_task_outside_any_flow_is_a_standalone_run() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(double(21)).await;
    assert_eq!(out, 42);
    let run = rec.run("double");
    assert_eq!(run.parent_run_id, None);
    assert_eq!(run.flow_run_id, None);
    assert_eq!(
        run.state_types(),
        [StateType::Pending, StateType::Running, StateType::Completed]
    );
}

#[task]
async fn total(parts: TaskHandle<u64>, extra: u64) -> u64 {
    parts.await + extra
}

#[flow]
async fn with_handles() -> u64 {
    let first = double::submit(10);
    let first_id = first.run_id();
    let summed = total::submit(first, 1);
    let result = summed.await;
    let gate = double::submit(1);
    let after = double::with_options(CallOptions::new().wait_for(&gate))
        .call(2)
        .await;
    assert!(gate.is_finished(), "wait_for waited for the gate run");
    assert_eq!(gate.await, 2);
    let _ = first_id;
    result + after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_runs_record_their_upstream_runs() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(with_handles()).await;
    assert_eq!(out, 25);
    let flow = rec.run("with_handles");
    let doubles = rec.runs_named("double");
    assert_eq!(doubles.len(), 3);
    let total_run = rec.run("total");
    assert_eq!(
        total_run.parent_run_id,
        Some(flow.id),
        "submit carries the context"
    );
    let upstream = total_run.details.map(|d| d.upstream).unwrap_or_default();
    assert_eq!(
        upstream,
        vec![doubles[0].id],
        "a TaskHandle argument is upstream"
    );
    let gated = doubles
        .iter()
        .find(|d| d.details.as_ref().is_some_and(|d| !d.upstream.is_empty()))
        .expect("the wait_for run records its upstream");
    assert_eq!(gated.details.as_ref().map(|d| d.upstream.len()), Some(1));
}

#[flow]
async fn squares(n: u64) -> Vec<u64> {
    double::map(0..n).concurrency(7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_returns_results_in_input_order() {
    flowkit::testing::isolated_home();
    let n = flowkit::testing::scaled(300);
    let (out, rec) = record(squares(n as u64)).await;
    assert_eq!(out, (0..n as u64).map(|x| x * 2).collect::<Vec<_>>());
    let flow = rec.run("squares");
    let runs = rec.runs_named("double");
    assert_eq!(runs.len(), n);
    assert!(runs.iter().all(|r| r.parent_run_id == Some(flow.id)));
}

static PREPARE_CALLS: AtomicU32 = AtomicU32::new(0);
static FLAKY_STEP_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(persist = true)]
async fn prepare(input: String) -> anyhow::Result<String> {
    PREPARE_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(input.to_uppercase())
}

#[task]
async fn flaky_step(text: String) -> anyhow::Result<usize> {
    if FLAKY_STEP_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        anyhow::bail!("transient failure");
    }
    Ok(text.len())
}

#[flow(retries = 1)]
async fn resumable(input: String) -> anyhow::Result<usize> {
    let prepared = prepare(input).await?;
    flaky_step(prepared).await
}

#[tokio::test]
async fn a_flow_retry_reruns_only_what_did_not_finish() {
    flowkit::testing::isolated_home();
    let (out, rec) = record(resumable("hello".into())).await;
    assert_eq!(out.expect("the second flow attempt succeeds"), 5);
    assert_eq!(PREPARE_CALLS.load(Ordering::SeqCst), 1, "prepare ran once");
    assert_eq!(FLAKY_STEP_CALLS.load(Ordering::SeqCst), 2);
    let prepares = rec.runs_named("prepare");
    assert_eq!(prepares.len(), 2);
    assert_eq!(
        prepares[0].final_state().map(|s| s.kind),
        Some(StateType::Completed)
    );
    let reused = prepares[1].final_state().expect("final state");
    assert_eq!(reused.kind, StateType::Cached);
    let message = reused.message.clone().unwrap_or_default();
    assert!(message.contains("attempt 1"), "{message}");
    let flow = rec.run("resumable");
    assert_eq!(flow.attempts(), 2);
    assert_eq!(
        flow.final_state().map(|s| s.kind),
        Some(StateType::Completed)
    );
}
