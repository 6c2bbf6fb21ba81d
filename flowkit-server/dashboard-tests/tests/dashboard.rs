//! The dashboard in a real headless Chromium: load the page, see a run reported by a real
//! pipeline appear live (no reload), open it, see its tasks, its logs (HTML shown as text)
//! and a retried task; then follow the link of a real failure notification to its run.
//!
//! One server, one browser and one flowkit configuration for the whole suite (a process
//! reports to one server): the scenarios run in order inside one test.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Locally, without it, the test prints why
//! it skips; with `FLOWKIT_REQUIRE_SERVICES=1` (set by CI) a skip is a failure.

mod common;

use chromiumoxide::{Browser, Page};
use common::{chromium, eval, launch, screenshot, skip, wait_for};
use flowkit::{flow, task};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

// ---- the pipeline the test reports ------------------------------------------------------

#[task]
async fn extract(rows: u32) -> anyhow::Result<Vec<u32>> {
    tracing::info!(
        rows,
        "read <b>{rows}</b> rows & <script>alert('x')</script>"
    );
    Ok((0..rows).collect())
}

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

#[task(retries = 1, retry_delay = "300ms")]
async fn flaky_transform(rows: Vec<u32>) -> anyhow::Result<u32> {
    if !FAILED_ONCE.swap(true, Ordering::SeqCst) {
        anyhow::bail!("warehouse connection reset");
    }
    Ok(rows.iter().sum())
}

#[task]
async fn load(total: u32) -> anyhow::Result<u32> {
    tracing::warn!(total, "loaded");
    Ok(total)
}

#[flow]
async fn dashboard_demo(rows: u32) -> anyhow::Result<u32> {
    let data = extract(rows).await?;
    let total = flaky_transform(data).await?;
    load(total).await
}

// ---- the pipeline whose failure is notified -----------------------------------------------

/// Where the webhook receiver listens, known once it is up; the attribute reads it when the
/// task first runs.
static HOOK_URL: OnceLock<String> = OnceLock::new();

fn hook_url() -> String {
    HOOK_URL.get().cloned().unwrap_or_default()
}

#[task(on_failure = flowkit::notify::webhook(hook_url()))]
async fn publish_report(day: String) -> anyhow::Result<()> {
    anyhow::bail!("the warehouse refused the report of {day}")
}

#[flow]
async fn nightly_report(day: String) -> anyhow::Result<()> {
    publish_report(day).await
}

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver on loopback: every JSON body POSTed to `/hook` is kept.
async fn start_receiver() -> anyhow::Result<(String, Received)> {
    use axum::routing::post;
    let received: Received = Arc::default();
    let keep = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::Json<serde_json::Value>| async move {
            keep.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(body.0);
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() -> anyhow::Result<()> {
    let Some(chromium) = chromium() else {
        skip("no Chromium found (apt-get install chromium, or set FLOWKIT_CHROMIUM)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;

    // The real server, on a free loopback port, with a fresh SQLite file.
    let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = flowkit_server::spawn(listener, flowkit_server::config::Config::new(db)).await?;
    let addr = server.addr();

    // This process reports to it.
    let mut flowkit_config = flowkit::config::Config::from_env();
    flowkit_config.home = dir.path().join("home");
    flowkit_config.summary = false;
    flowkit_config.api_url = Some(format!("http://{addr}"));
    flowkit::config::init(flowkit_config)
        .map_err(|_| anyhow::anyhow!("flowkit was configured before the test"))?;

    let (url, received) = start_receiver().await?;
    HOOK_URL
        .set(url)
        .map_err(|_| anyhow::anyhow!("the hook URL was set before the test"))?;

    let (browser, browser_events) = launch(&chromium, &dir.path().join("profile")).await?;
    let base = format!("http://{addr}");
    let page = browser.new_page(format!("{base}/")).await?;
    reporter_drops_are_shown_above_the_runs(&page, &base).await?;
    a_reported_run_shows_up_live_with_its_tasks_logs_and_retries(&page).await?;
    a_failure_notification_links_to_its_run(&browser, &base, &received).await?;
    a_flow_larger_than_its_bounds_degrades_and_stays_live(&browser, &base).await?;

    drop(page);
    let mut browser = browser;
    let _ = browser.close().await;
    let _ = browser.wait().await;
    browser_events.abort();
    server.stop().await?;
    Ok(())
}

/// Events a reporter had to drop are said above the runs list (hidden while there are none).
async fn reporter_drops_are_shown_above_the_runs(page: &Page, base: &str) -> anyhow::Result<()> {
    wait_for(
        page,
        "document.querySelector('#list-view') && !document.querySelector('#list-view').hidden",
        Duration::from_secs(15),
        "the runs list",
    )
    .await?;
    let hidden: bool = eval(page, "document.querySelector('#drops').hidden").await?;
    assert!(hidden, "no drops, no note");
    let posted = reqwest::Client::new()
        .post(format!("{base}/api/v1/reporter-drops"))
        .json(&serde_json::json!({"dropped": 12, "worker": "<b>build-7</b>:4242"}))
        .send()
        .await?;
    assert_eq!(posted.status(), reqwest::StatusCode::ACCEPTED);
    // The note is read when the list is shown.
    eval::<String>(page, "location.hash = '#/deployments'").await?;
    eval::<String>(page, "location.hash = '#/'").await?;
    wait_for(
        page,
        "!document.querySelector('#drops').hidden && document.querySelector('#drops').textContent.includes('dropped 12 events')",
        Duration::from_secs(10),
        "the note of dropped events",
    )
    .await?;
    // The worker's name is text, never markup.
    let bold: u32 = eval(page, "document.querySelectorAll('#drops b').length").await?;
    assert_eq!(bold, 0);
    Ok(())
}

async fn a_reported_run_shows_up_live_with_its_tasks_logs_and_retries(
    page: &Page,
) -> anyhow::Result<()> {
    wait_for(
        page,
        "document.querySelector('#live.on') !== null",
        Duration::from_secs(15),
        "the live stream",
    )
    .await?;
    wait_for(
        page,
        "document.querySelector('#runs-body .empty') !== null",
        Duration::from_secs(10),
        "the empty runs list",
    )
    .await?;

    // Run a real pipeline; the page must show it without being reloaded.
    let total = dashboard_demo(4).await?;
    assert_eq!(total, 6);
    wait_for(
        page,
        "[...document.querySelectorAll('#runs-body tr[data-id]')].some(r => r.textContent.includes('dashboard_demo') && r.textContent.includes('Completed'))",
        Duration::from_secs(15),
        "the reported run to appear live as Completed",
    )
    .await?;
    // The state counts and the chart follow (refreshed shortly after a change).
    wait_for(
        page,
        "(document.querySelector('#state-counts [data-state=Completed] b') || {}).textContent === '1'",
        Duration::from_secs(10),
        "the Completed count of flow runs",
    )
    .await?;
    let bars: u32 = eval(page, "document.querySelectorAll('#chart rect.bar').length").await?;
    assert!(bars >= 1, "the chart draws the run");
    let reloaded: bool = eval(
        page,
        "performance.getEntriesByType('navigation').length === 1",
    )
    .await?;
    assert!(reloaded, "the page was not reloaded");

    // Open it.
    page.find_element("#runs-body tr[data-id] a")
        .await?
        .click()
        .await?;
    wait_for(
        page,
        "document.querySelectorAll('#tasks-body tr').length === 3",
        Duration::from_secs(10),
        "the three task runs",
    )
    .await?;
    let tasks: Vec<(String, String, String)> = eval(
        page,
        "[...document.querySelectorAll('#tasks-body tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent, r.cells[2].textContent])",
    )
    .await?;
    let names: Vec<&str> = tasks.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["extract", "flaky_transform", "load"]);
    assert!(tasks.iter().all(|t| t.1 == "Completed"), "{tasks:?}");
    assert_eq!(
        tasks[1].2, "2",
        "the retried task shows two attempts: {tasks:?}"
    );

    // The retry is visible on the timeline: a waiting segment between two attempts.
    let waits: u32 = eval(
        page,
        "document.querySelectorAll('#gantt rect.seg.wait').length",
    )
    .await?;
    assert_eq!(waits, 1, "one retry wait on the timeline");
    let graph_nodes: u32 = eval(page, "document.querySelectorAll('#graph g.node').length").await?;
    assert_eq!(graph_nodes, 3);

    // Logs: HTML in a log line is shown as text, never interpreted.
    wait_for(
        page,
        "document.querySelector('#logs').textContent.includes(\"read <b>4</b> rows & <script>alert('x')</script>\")",
        Duration::from_secs(10),
        "the log line, verbatim",
    )
    .await?;
    let injected: u32 = eval(
        page,
        "document.querySelectorAll('#logs b, #logs script').length",
    )
    .await?;
    assert_eq!(injected, 0, "log text must not become elements");
    let warn_lines: u32 = eval(page, "document.querySelectorAll('#logs .l-WARN').length").await?;
    assert_eq!(warn_lines, 1);
    let lines: u32 = eval(page, "document.querySelectorAll('#logs .log').length").await?;
    assert_eq!(lines, 2, "each log line shown once");

    // A picture for humans reviewing a failure.
    screenshot(page, "flowkit-dashboard-run.png").await;

    Ok(())
}

/// A task fails with `on_failure = flowkit::notify::webhook(..)`; the `url` of the JSON the
/// receiver gets, opened in the browser, shows that run.
async fn a_failure_notification_links_to_its_run(
    browser: &Browser,
    base: &str,
    received: &Received,
) -> anyhow::Result<()> {
    let failed = nightly_report("2026-11-28".into()).await;
    assert!(failed.is_err(), "the report cannot be published");

    // The notification is sent by a hook: give it the time it may take.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let first = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .cloned();
        if let Some(body) = first {
            break body;
        }
        anyhow::ensure!(Instant::now() < deadline, "no notification arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["name"], "publish_report", "{body}");
    let flow_run = body["flow_run_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no flow_run_id in {body}"))?
        .to_string();
    let url = body["url"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no url in {body}"))?
        .to_string();
    let expected = flowkit_wire::links::run_page(base, flow_run.parse()?);
    assert_eq!(url, expected, "the link is the server's run page");

    // Reported asynchronously: wait until the server has the failed run.
    let list = browser.new_page(format!("{base}/")).await?;
    wait_for(
        &list,
        "[...document.querySelectorAll('#runs-body tr[data-id]')].some(r => r.textContent.includes('nightly_report') && r.textContent.includes('Failed'))",
        Duration::from_secs(15),
        "the failed run to be reported",
    )
    .await?;

    let page = browser.new_page(url.as_str()).await?;
    wait_for(
        &page,
        "!document.querySelector('#run-view').hidden && document.querySelector('#list-view').hidden",
        Duration::from_secs(10),
        "the run view",
    )
    .await?;
    let shows_run = format!(
        "document.querySelector('#run-meta code') !== null && document.querySelector('#run-meta code').textContent === '{flow_run}'"
    );
    wait_for(
        &page,
        &shows_run,
        Duration::from_secs(10),
        "the notified run",
    )
    .await?;
    let title: String = eval(&page, "document.querySelector('#run-title').textContent").await?;
    assert!(
        title.contains("nightly_report") && title.contains("Failed"),
        "{title}"
    );
    wait_for(
        &page,
        "[...document.querySelectorAll('#tasks-body tr')].some(r => r.cells[0].textContent === 'publish_report' && r.cells[1].textContent === 'Failed')",
        Duration::from_secs(10),
        "the failed task",
    )
    .await?;
    // The page's own links lead back to the list from the nested path.
    page.find_element("#run-view a[href='/#/']")
        .await?
        .click()
        .await?;
    wait_for(
        &page,
        "location.pathname === '/' && !document.querySelector('#list-view').hidden",
        Duration::from_secs(10),
        "the runs list",
    )
    .await?;
    Ok(())
}

// ---- a flow with more task runs than the run page draws ------------------------------------

/// A state event of a run of the flow `flow`, as the reporter sends it.
fn state_event(
    run: uuid::Uuid,
    kind: flowkit_wire::event::RunKind,
    name: &str,
    flow: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
    state: flowkit_wire::state::StateType,
) -> flowkit_wire::event::Event {
    use flowkit_wire::event::{Event, EventBody, RunDetails};
    let details = (state == flowkit_wire::state::StateType::Pending).then(|| {
        Box::new(RunDetails {
            task_key: format!("big::{name}").into(),
            ..RunDetails::default()
        })
    });
    Event {
        id: uuid::Uuid::now_v7(),
        run_id: run,
        parent_run_id: (run != flow).then_some(flow),
        flow_run_id: Some(flow),
        run_kind: kind,
        name: name.to_string().into(),
        attempt: 1,
        timestamp: at,
        lease: None,
        body: EventBody::State {
            state: flowkit_wire::state::State::new(state),
            details,
        },
    }
}

async fn post_events(base: &str, events: &[flowkit_wire::event::Event]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for chunk in events.chunks(2_000) {
        let res = client
            .post(format!("{base}/api/v1/events"))
            .json(chunk)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "ingest answered {}",
            res.status()
        );
    }
    Ok(())
}

/// 650 task runs (more than the 500 the run page draws, and than one page of task runs): the
/// timeline and the table show the first 500 and say how many more there are, the graph is
/// summed up per task name; a change to one task run re-fetches only the page that holds it.
async fn a_flow_larger_than_its_bounds_degrades_and_stays_live(
    browser: &Browser,
    base: &str,
) -> anyhow::Result<()> {
    use flowkit_wire::event::RunKind;
    use flowkit_wire::state::StateType;
    const TASKS: usize = 650;
    let flow = uuid::Uuid::now_v7();
    let start = chrono::Utc::now() - chrono::Duration::minutes(5);
    let ms = |n: i64| start + chrono::Duration::milliseconds(n);
    let mut events = vec![
        state_event(
            flow,
            RunKind::Flow,
            "big_flow",
            flow,
            ms(0),
            StateType::Pending,
        ),
        state_event(
            flow,
            RunKind::Flow,
            "big_flow",
            flow,
            ms(1),
            StateType::Running,
        ),
    ];
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let task = uuid::Uuid::now_v7();
        let name = ["fetch", "parse", "store"][i % 3];
        let at = 10 + 3 * i as i64;
        for (k, state) in [StateType::Pending, StateType::Running, StateType::Completed]
            .into_iter()
            .enumerate()
        {
            events.push(state_event(
                task,
                RunKind::Task,
                name,
                flow,
                ms(at + k as i64),
                state,
            ));
        }
        tasks.push(task);
    }
    post_events(base, &events).await?;

    let page = browser
        .new_page(flowkit_wire::links::run_page(base, flow).as_str())
        .await?;
    wait_for(
        &page,
        "document.querySelectorAll('#tasks-body tr').length === 500 && !document.querySelector('#tasks-more').hidden",
        Duration::from_secs(20),
        "the first 500 task runs",
    )
    .await?;
    let more: String = eval(&page, "document.querySelector('#tasks-more').textContent").await?;
    assert_eq!(more, "150 more task runs (showing the first 500)");
    let rows: u32 = eval(
        &page,
        "document.querySelectorAll('#gantt .gantt-label').length",
    )
    .await?;
    assert_eq!(rows, 500, "the timeline draws at most 500 rows");
    // The graph is too large to draw: per task name instead.
    let graph_hidden: bool = eval(
        &page,
        "getComputedStyle(document.querySelector('#graph')).display === 'none' && !document.querySelector('#graph-groups').hidden",
    )
    .await?;
    assert!(graph_hidden, "the graph degrades to its groups");
    let groups: Vec<(String, String)> = eval(
        &page,
        "[...document.querySelectorAll('#graph-groups tbody tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent])",
    )
    .await?;
    let expected: Vec<(String, String)> = [("fetch", "217"), ("parse", "217"), ("store", "216")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(groups, expected);
    let note: String = eval(
        &page,
        "document.querySelector('#graph-groups .note').textContent",
    )
    .await?;
    assert!(note.starts_with("650 task runs"), "{note}");

    // Still live: task 450 (on the last page loaded) fails; only its page is fetched again.
    // Wait for the stream to settle first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _: bool = eval(&page, "(performance.clearResourceTimings(), true)").await?;
    post_events(
        base,
        &[state_event(
            tasks[450],
            RunKind::Task,
            "fetch",
            flow,
            ms(10_000),
            StateType::Failed,
        )],
    )
    .await?;
    let row = format!(
        "(document.querySelector('#tasks-body tr[data-id=\"{}\"]') || {{}}).textContent || ''",
        tasks[450]
    );
    wait_for(
        &page,
        &format!("({row}).includes('Failed')"),
        Duration::from_secs(15),
        "the failed task run, live",
    )
    .await?;
    wait_for(
        &page,
        "[...document.querySelectorAll('#graph-groups tbody tr')].some(r => r.textContent.includes('Failed'))",
        Duration::from_secs(10),
        "the failure in the groups",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetched: Vec<String> = eval(
        &page,
        "performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/task-runs'))",
    )
    .await?;
    assert_eq!(fetched.len(), 1, "one page fetched again: {fetched:?}");
    assert!(fetched[0].contains("cursor="), "{fetched:?}");
    let shown: u32 = eval(&page, "document.querySelectorAll('#tasks-body tr').length").await?;
    assert_eq!(shown, 500);

    // A new task run beyond the bound only moves the count.
    let late = uuid::Uuid::now_v7();
    post_events(
        base,
        &[state_event(
            late,
            RunKind::Task,
            "fetch",
            flow,
            ms(20_000),
            StateType::Pending,
        )],
    )
    .await?;
    wait_for(
        &page,
        "document.querySelector('#tasks-more').textContent === '151 more task runs (showing the first 500)'",
        Duration::from_secs(15),
        "the count of task runs, live",
    )
    .await?;
    Ok(())
}
