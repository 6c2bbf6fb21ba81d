//! The store conformance suite: the same tests against every backend.
//!
//! SQLite (a file in a temporary directory) always. PostgreSQL when `FLOWKIT_TEST_PG_URL` holds
//! an admin URL (`. .ci/pg.sh && pg_start` sets one up): each test creates its own database from
//! it and drops it afterwards, so tests run in parallel. Without it the PostgreSQL tests say why
//! they skip — unless `FLOWKIT_REQUIRE_SERVICES=1` (CI), where they fail instead.
//!
//! Two benchmarks are ignored by default (run them in release:
//! `cargo test --release -p flowkit-server --test store_conformance -- --ignored --nocapture`):
//! ingestion throughput and the first page of the flow-runs list with 100 000 runs stored.

use chrono::{DateTime, Duration, Utc};
use flowkit::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use flowkit::state::{State, StateType};
use flowkit_server::store::{
    Backend, LogFilter, LogRecord, PageRequest, RunFilter, RunRecord, StateRecord, Store,
    StoreError,
};
use serde_json::json;
use sqlx::Connection;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One backend with a fresh database, and what is needed to reopen and clean it up.
struct Env {
    /// Shared so tests can hand it to spawned tasks.
    store: Arc<Store>,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, database: String },
}

const PG_SKIP: &str = "skipping PostgreSQL conformance: set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)";

impl Env {
    async fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let store = Arc::new(Store::connect(&url).await.expect("open SQLite store"));
        Env {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database for `test`, or `None` (with the reason printed) when none is
    /// configured.
    async fn postgres(test: &str) -> Option<Env> {
        let Ok(admin_url) = std::env::var("FLOWKIT_TEST_PG_URL") else {
            if std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "FLOWKIT_REQUIRE_SERVICES=1 forbids skipping PostgreSQL conformance: \
                     set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)"
                );
            }
            eprintln!("{PG_SKIP}");
            return None;
        };
        let database = format!("flowkit_{}_{}", test, Uuid::now_v7().simple())
            .chars()
            .take(63)
            .collect::<String>();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to FLOWKIT_TEST_PG_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut admin)
        .await
        .expect("create test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &database);
        let store = Arc::new(Store::connect(&url).await.expect("open PostgreSQL store"));
        Some(Env {
            store,
            url,
            cleanup: Cleanup::Postgres {
                admin_url,
                database,
            },
        })
    }

    /// Closes the store and opens it again from its URL.
    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(Store::connect(&self.url).await.expect("reopen store"));
    }

    async fn finish(self) {
        self.store.close().await;
        if let Cleanup::Postgres {
            admin_url,
            database,
        } = self.cleanup
        {
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect for cleanup");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .expect("drop test database");
        }
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Generates one `#[tokio::test]` per backend for each test function.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let mut env = super::Env::sqlite().await;
                    super::$test(&mut env).await;
                    env.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(mut env) = super::Env::postgres(stringify!($test)).await else { return };
                    super::$test(&mut env).await;
                    env.finish().await;
                }
            )*
        }
    };
}

conformance!(
    realistic_flow_reads_back_exactly,
    replaying_changes_nothing,
    out_of_order_arrival_gives_the_same_runs,
    latest_state_is_greatest_timestamp_then_id,
    details_arriving_late_fill_the_run,
    filters_match_literally,
    keyset_pagination_is_stable_under_inserts,
    invalid_cursor_is_rejected,
    logs_page_and_filter_by_level,
    stats_buckets_by_latest_state,
    retention_deletes_old_runs_with_their_children,
    concurrent_ingestion,
    reopening_keeps_everything,
    reporter_drops_are_recorded,
);

// ---------------------------------------------------------------------------------------------
// Building events
// ---------------------------------------------------------------------------------------------

/// A fixed instant with whole microseconds (what both backends keep).
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_764_331_200_123_456).expect("valid instant")
}

/// `t0` plus `ms` milliseconds.
fn at(ms: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(ms)
}

/// Identity of one run, to stamp its events.
#[derive(Clone, Debug)]
struct Run {
    id: Uuid,
    kind: RunKind,
    name: String,
    parent: Option<Uuid>,
    flow: Option<Uuid>,
}

impl Run {
    fn flow(name: &str, parent: Option<Uuid>) -> Run {
        let id = Uuid::now_v7();
        Run {
            id,
            kind: RunKind::Flow,
            name: name.into(),
            parent,
            flow: Some(id),
        }
    }

    fn task(name: &str, parent: &Run) -> Run {
        Run {
            id: Uuid::now_v7(),
            kind: RunKind::Task,
            name: name.into(),
            parent: Some(parent.id),
            flow: parent.flow,
        }
    }

    fn standalone_task(name: &str) -> Run {
        Run {
            id: Uuid::now_v7(),
            kind: RunKind::Task,
            name: name.into(),
            parent: None,
            flow: None,
        }
    }

    fn event(&self, attempt: u32, timestamp: DateTime<Utc>, body: EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: self.id,
            parent_run_id: self.parent,
            flow_run_id: self.flow,
            run_kind: self.kind,
            name: Cow::Owned(self.name.clone()),
            attempt,
            timestamp,
            body,
        }
    }

    fn state(
        &self,
        attempt: u32,
        timestamp: DateTime<Utc>,
        kind: StateType,
        message: Option<&str>,
    ) -> Event {
        let state = State {
            kind,
            message: message.map(str::to_string),
        };
        self.event(
            attempt,
            timestamp,
            EventBody::State {
                state,
                details: None,
            },
        )
    }

    fn first(&self, timestamp: DateTime<Utc>, kind: StateType, details: RunDetails) -> Event {
        let state = State::new(kind);
        self.event(
            0,
            timestamp,
            EventBody::State {
                state,
                details: Some(Box::new(details)),
            },
        )
    }

    fn log(
        &self,
        attempt: u32,
        timestamp: DateTime<Utc>,
        level: LogLevel,
        message: &str,
        fields: serde_json::Value,
    ) -> Event {
        let fields = match fields {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        self.event(
            attempt,
            timestamp,
            EventBody::Log {
                level,
                message: message.into(),
                fields,
            },
        )
    }

    /// The record this run should read back as, before its details and states are filled in.
    fn record(&self, created: DateTime<Utc>) -> RunRecord {
        RunRecord {
            id: self.id,
            kind: self.kind,
            name: self.name.clone(),
            task_key: String::new(),
            parent_run_id: self.parent,
            flow_run_id: self.flow,
            state: StateType::Pending,
            state_message: None,
            state_timestamp: created,
            attempt: 0,
            created,
            started: None,
            ended: None,
            tags: vec![],
            parameters: None,
            upstream: vec![],
            cache_key: None,
            deployment: None,
            version: None,
            worker: None,
        }
    }
}

fn details(task_key: &'static str) -> RunDetails {
    RunDetails {
        task_key: Cow::Borrowed(task_key),
        ..RunDetails::default()
    }
}

/// A small complete flow: tasks, a retry, logs and a subflow with a failing task.
struct Scenario {
    events: Vec<Event>,
    flow: RunRecord,
    extract: RunRecord,
    transform: RunRecord,
    subflow: RunRecord,
    load: RunRecord,
    /// Logs of `flow` (its own and its tasks'), in (timestamp, id) order.
    flow_logs: Vec<Event>,
}

fn scenario(name: &str, base: DateTime<Utc>) -> Scenario {
    let ms = |n: i64| base + Duration::milliseconds(n);
    let flow = Run::flow(name, None);
    let extract = Run::task("extract", &flow);
    let transform = Run::task("transform", &flow);
    let subflow = Run::flow("publish", Some(flow.id));
    let load = Run::task("load", &subflow);

    let flow_details = RunDetails {
        task_key: "demo::etl".into(),
        version: Some("1.2.0".into()),
        tags: vec!["prod".into(), "db".into()],
        parameters: Some(
            json!({"day": "2026-11-28", "limit": 3, "ratio": 0.25, "nested": {"a": [1, null]}}),
        ),
        upstream: vec![],
        cache_key: None,
        deployment: Some("nightly".into()),
        worker: Some("host-1:4242".into()),
    };
    let extract_details = RunDetails {
        task_key: "demo::extract".into(),
        tags: vec!["io".into()],
        cache_key: Some("b3:abcdef".into()),
        ..RunDetails::default()
    };
    let transform_details = RunDetails {
        task_key: "demo::transform".into(),
        upstream: vec![extract.id],
        version: Some("7".into()),
        ..RunDetails::default()
    };
    let log_start = flow.log(
        1,
        ms(50),
        LogLevel::Info,
        "starting <b>etl</b>",
        json!({"rows": 42, "source": "s3"}),
    );
    let log_slow = transform.log(
        1,
        ms(550),
        LogLevel::Warn,
        "slow: 'quoted' \"text\" %_",
        json!({}),
    );
    let log_end = flow.log(
        1,
        ms(1150),
        LogLevel::Error,
        "publish failed",
        json!({"error": "boom"}),
    );
    let sub_log = load.log(1, ms(1060), LogLevel::Error, "load exploded", json!({}));

    let events = vec![
        flow.first(ms(0), StateType::Pending, flow_details.clone()),
        flow.state(1, ms(10), StateType::Running, None),
        log_start.clone(),
        extract.first(ms(100), StateType::Pending, extract_details.clone()),
        extract.state(1, ms(200), StateType::Running, None),
        extract.state(1, ms(300), StateType::Completed, None),
        transform.first(ms(400), StateType::Pending, transform_details.clone()),
        transform.state(1, ms(500), StateType::Running, None),
        log_slow.clone(),
        transform.state(
            1,
            ms(600),
            StateType::AwaitingRetry,
            Some("retry 1 of 2 in 100ms"),
        ),
        transform.state(2, ms(700), StateType::Running, None),
        transform.state(2, ms(800), StateType::Completed, None),
        subflow.first(ms(900), StateType::Pending, details("demo::publish")),
        subflow.state(1, ms(1000), StateType::Running, None),
        load.first(ms(1010), StateType::Pending, details("demo::load")),
        load.state(1, ms(1020), StateType::Running, None),
        sub_log,
        load.state(1, ms(1070), StateType::Failed, Some("boom")),
        subflow.state(1, ms(1100), StateType::Failed, Some("load failed")),
        log_end.clone(),
        flow.state(1, ms(1200), StateType::Completed, Some("done")),
    ];

    let mut f = flow.record(ms(0));
    f.task_key = "demo::etl".into();
    f.version = Some("1.2.0".into());
    f.tags = vec!["prod".into(), "db".into()];
    f.parameters = flow_details.parameters.clone();
    f.deployment = Some("nightly".into());
    f.worker = Some("host-1:4242".into());
    (f.state, f.state_message, f.state_timestamp, f.attempt) =
        (StateType::Completed, Some("done".into()), ms(1200), 1);
    (f.started, f.ended) = (Some(ms(10)), Some(ms(1200)));

    let mut e = extract.record(ms(100));
    e.task_key = "demo::extract".into();
    e.tags = vec!["io".into()];
    e.cache_key = Some("b3:abcdef".into());
    (e.state, e.state_timestamp, e.attempt, e.started, e.ended) = (
        StateType::Completed,
        ms(300),
        1,
        Some(ms(200)),
        Some(ms(300)),
    );

    let mut t = transform.record(ms(400));
    t.task_key = "demo::transform".into();
    t.upstream = vec![extract.id];
    t.version = Some("7".into());
    (t.state, t.state_timestamp, t.attempt, t.started, t.ended) = (
        StateType::Completed,
        ms(800),
        2,
        Some(ms(500)),
        Some(ms(800)),
    );

    let mut s = subflow.record(ms(900));
    s.task_key = "demo::publish".into();
    (
        s.state,
        s.state_message,
        s.state_timestamp,
        s.attempt,
        s.started,
        s.ended,
    ) = (
        StateType::Failed,
        Some("load failed".into()),
        ms(1100),
        1,
        Some(ms(1000)),
        Some(ms(1100)),
    );

    let mut l = load.record(ms(1010));
    l.task_key = "demo::load".into();
    (
        l.state,
        l.state_message,
        l.state_timestamp,
        l.attempt,
        l.started,
        l.ended,
    ) = (
        StateType::Failed,
        Some("boom".into()),
        ms(1070),
        1,
        Some(ms(1020)),
        Some(ms(1070)),
    );

    Scenario {
        events,
        flow: f,
        extract: e,
        transform: t,
        subflow: s,
        load: l,
        flow_logs: vec![log_start, log_slow, log_end],
    }
}

/// The state records `events` should give, in (timestamp, id) order, for the given runs.
fn expected_states(events: &[Event], runs: &[Uuid]) -> Vec<StateRecord> {
    let mut states: Vec<StateRecord> = events
        .iter()
        .filter(|e| runs.contains(&e.run_id))
        .filter_map(|e| {
            e.state().map(|s| StateRecord {
                event_id: e.id,
                run_id: e.run_id,
                state: s.kind,
                message: s.message.clone(),
                attempt: e.attempt,
                timestamp: e.timestamp,
            })
        })
        .collect();
    states.sort_by_key(|s| (s.timestamp, s.event_id));
    states
}

fn log_record(event: &Event) -> LogRecord {
    match &event.body {
        EventBody::Log {
            level,
            message,
            fields,
        } => LogRecord {
            event_id: event.id,
            run_id: event.run_id,
            flow_run_id: event.flow_run_id,
            run_name: event.name.to_string(),
            level: *level,
            message: message.clone(),
            fields: fields.clone(),
            attempt: event.attempt,
            timestamp: event.timestamp,
        },
        other => panic!("not a log event: {other:?}"),
    }
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

async fn ingest(store: &Store, events: Vec<Event>) -> (usize, usize) {
    let outcome = store.ingest(events).await.expect("ingest");
    (outcome.accepted, outcome.duplicates)
}

async fn all_flow_runs(store: &Store, filter: &RunFilter) -> Vec<RunRecord> {
    let mut out = Vec::new();
    let mut request = page(7);
    loop {
        let page = store
            .list_flow_runs(filter, &request)
            .await
            .expect("list flow runs");
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return out,
        }
    }
}

async fn all_logs(
    store: &Store,
    flow_run_id: Uuid,
    filter: &LogFilter,
    limit: u32,
) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut request = page(limit);
    loop {
        let page = store
            .logs(flow_run_id, filter, &request)
            .await
            .expect("logs");
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return out,
        }
    }
}

/// Every read of a scenario matches what it should be.
async fn check_scenario(store: &Store, s: &Scenario) {
    for expected in [&s.flow, &s.extract, &s.transform, &s.subflow, &s.load] {
        let got = store.get_run(expected.id).await.expect("get run");
        assert_eq!(got.as_ref(), Some(expected), "run {}", expected.name);
    }
    let children = store.child_runs(s.flow.id).await.expect("children");
    assert_eq!(
        children,
        vec![s.extract.clone(), s.transform.clone(), s.subflow.clone()]
    );
    let sub_children = store.child_runs(s.subflow.id).await.expect("children");
    assert_eq!(sub_children, vec![s.load.clone()]);

    let states = store.states(s.flow.id).await.expect("states");
    let runs = [s.flow.id, s.extract.id, s.transform.id, s.subflow.id];
    assert_eq!(states, expected_states(&s.events, &runs));
    let sub_states = store.states(s.subflow.id).await.expect("states");
    assert_eq!(
        sub_states,
        expected_states(&s.events, &[s.subflow.id, s.load.id])
    );

    let logs = all_logs(store, s.flow.id, &LogFilter::default(), 2).await;
    assert_eq!(logs, s.flow_logs.iter().map(log_record).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

async fn realistic_flow_reads_back_exactly(env: &mut Env) {
    let store = &env.store;
    let s = scenario("etl", t0());
    let n = s.events.len();
    assert_eq!(ingest(store, s.events.clone()).await, (n, 0));
    check_scenario(store, &s).await;
    let listed = all_flow_runs(store, &RunFilter::default()).await;
    assert_eq!(
        listed,
        vec![s.subflow.clone(), s.flow.clone()],
        "flow runs newest first, subflows included"
    );
    assert_eq!(store.get_run(Uuid::now_v7()).await.expect("get"), None);
    assert_eq!(
        store.child_runs(Uuid::now_v7()).await.expect("children"),
        vec![]
    );
}

async fn replaying_changes_nothing(env: &mut Env) {
    let store = &env.store;
    let s = scenario("etl", t0());
    let n = s.events.len();
    assert_eq!(ingest(store, s.events.clone()).await, (n, 0));
    assert_eq!(
        ingest(store, s.events.clone()).await,
        (0, n),
        "replay of the whole batch"
    );
    // A batch that repeats an event of its own, and mixes new and old events.
    let run = Run::flow("again", None);
    let fresh = run.first(at(5_000), StateType::Pending, details("demo::again"));
    let mixed = vec![
        fresh.clone(),
        s.events[3].clone(),
        fresh.clone(),
        run.state(1, at(5_001), StateType::Running, None),
    ];
    assert_eq!(ingest(store, mixed).await, (2, 2));
    assert_eq!(ingest(store, vec![]).await, (0, 0));
    check_scenario(store, &s).await;
    let got = store
        .get_run(run.id)
        .await
        .expect("get")
        .expect("run exists");
    assert_eq!(
        (got.state, got.started),
        (StateType::Running, Some(at(5_001)))
    );
    assert_eq!(store.states(run.id).await.expect("states").len(), 2);
}

async fn out_of_order_arrival_gives_the_same_runs(env: &mut Env) {
    let store = &env.store;
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..4 {
        let s = scenario(&format!("shuffled-{round}"), at(round * 10_000));
        let mut events = s.events.clone();
        rng.shuffle(&mut events);
        // Random batch sizes, including batches of one event.
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let take = rng.usize(1..=rest.len().min(6));
            let (batch, tail) = rest.split_at(take);
            ingest(store, batch.to_vec()).await;
            rest = tail;
        }
        check_scenario(store, &s).await;
    }
}

async fn latest_state_is_greatest_timestamp_then_id(env: &mut Env) {
    let store = &env.store;
    // An older state arriving last does not win.
    let run = Run::flow("late-pending", None);
    let running = run.state(1, at(20), StateType::Running, None);
    let done = run.state(1, at(30), StateType::Completed, Some("ok"));
    let pending = run.first(at(10), StateType::Pending, details("demo::late"));
    ingest(store, vec![done]).await;
    ingest(store, vec![running]).await;
    ingest(store, vec![pending]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(
        (got.state, got.state_message.as_deref()),
        (StateType::Completed, Some("ok"))
    );
    assert_eq!(
        (got.created, got.started, got.ended),
        (at(10), Some(at(20)), Some(at(30)))
    );
    assert_eq!(got.task_key, "demo::late");

    // Equal timestamps: the greater event id wins, whatever the arrival order.
    for reverse in [false, true] {
        let run = Run::flow("tie", None);
        let mut low = run.state(1, at(50), StateType::Failed, Some("low id"));
        let mut high = run.state(1, at(50), StateType::Completed, Some("high id"));
        if low.id > high.id {
            std::mem::swap(&mut low.id, &mut high.id);
        }
        let (first, second) = if reverse { (high, low) } else { (low, high) };
        ingest(store, vec![first]).await;
        ingest(store, vec![second]).await;
        let got = store.get_run(run.id).await.expect("get").expect("exists");
        assert_eq!(
            got.state_message.as_deref(),
            Some("high id"),
            "reverse = {reverse}"
        );
        assert_eq!(got.state, StateType::Completed);
    }

    // A later state in the same batch as an earlier one, in either order.
    let run = Run::flow("same-batch", None);
    let a = run.state(1, at(70), StateType::Running, None);
    let b = run.state(1, at(80), StateType::Cancelled, Some("stop"));
    ingest(store, vec![b, a]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(
        (got.state, got.started, got.ended),
        (StateType::Cancelled, Some(at(70)), Some(at(80)))
    );
}

async fn details_arriving_late_fill_the_run(env: &mut Env) {
    let store = &env.store;
    let run = Run::flow("late-details", None);
    ingest(store, vec![run.state(1, at(20), StateType::Running, None)]).await;
    let before = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!((before.task_key.as_str(), before.tags.len()), ("", 0));
    let d = RunDetails {
        task_key: "demo::late".into(),
        tags: vec!["a".into(), "b".into()],
        deployment: Some("dep".into()),
        ..RunDetails::default()
    };
    ingest(store, vec![run.first(at(10), StateType::Pending, d)]).await;
    let got = store.get_run(run.id).await.expect("get").expect("exists");
    assert_eq!(got.task_key, "demo::late");
    assert_eq!(got.tags, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(got.deployment.as_deref(), Some("dep"));
    assert_eq!((got.state, got.created), (StateType::Running, at(10)));
    let by_tag = all_flow_runs(
        store,
        &RunFilter {
            tag: Some("b".into()),
            ..RunFilter::default()
        },
    )
    .await;
    assert_eq!(
        by_tag.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![run.id]
    );
}

async fn filters_match_literally(env: &mut Env) {
    let store = &env.store;
    let names = [
        "alpha",
        "ALPHA-upper",
        "50% off_sale",
        "50 percent offXsale",
        "O'Brien \"quoted\"",
        "'; DROP TABLE runs; --",
        "back\\slash",
        "ünïcode ✓",
    ];
    let mut ids = HashMap::new();
    let mut events = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let run = Run::flow(name, None);
        let i = i as i64;
        let d = RunDetails {
            task_key: "demo::f".into(),
            tags: if i % 2 == 0 {
                vec!["even".into(), "100%_tag".into()]
            } else {
                vec!["odd".into()]
            },
            deployment: (i % 3 == 0).then(|| format!("dep-{}", i % 2)),
            ..RunDetails::default()
        };
        events.push(run.first(at(i * 1000), StateType::Pending, d));
        let last = if i % 2 == 0 {
            StateType::Completed
        } else {
            StateType::Failed
        };
        events.push(run.state(1, at(i * 1000 + 10), last, None));
        ids.insert(*name, run.id);
    }
    // Task runs never show in the flow-runs list, whatever their name.
    let parent = Run::flow("parent-of-task", None);
    let task = Run::task("alpha", &parent);
    events.push(task.first(
        at(50),
        StateType::Pending,
        RunDetails {
            tags: vec!["even".into()],
            ..details("demo::t")
        },
    ));
    ingest(store, events).await;

    let check = |filter: RunFilter, expected: Vec<&'static str>| {
        let ids = &ids;
        async move {
            let got: HashSet<Uuid> = all_flow_runs(store, &filter)
                .await
                .iter()
                .map(|r| r.id)
                .collect();
            let want: HashSet<Uuid> = expected.iter().map(|n| ids[n]).collect();
            assert_eq!(got, want, "{filter:?} should give {expected:?}");
        }
    };
    let f = RunFilter::default;
    check(
        RunFilter {
            search: Some("%".into()),
            ..f()
        },
        vec!["50% off_sale"],
    )
    .await;
    check(
        RunFilter {
            search: Some("_".into()),
            ..f()
        },
        vec!["50% off_sale"],
    )
    .await;
    check(
        RunFilter {
            search: Some("% off_".into()),
            ..f()
        },
        vec!["50% off_sale"],
    )
    .await;
    check(
        RunFilter {
            search: Some("'".into()),
            ..f()
        },
        vec!["O'Brien \"quoted\"", "'; DROP TABLE runs; --"],
    )
    .await;
    check(
        RunFilter {
            search: Some("\"quoted\"".into()),
            ..f()
        },
        vec!["O'Brien \"quoted\""],
    )
    .await;
    check(
        RunFilter {
            search: Some("drop table".into()),
            ..f()
        },
        vec!["'; DROP TABLE runs; --"],
    )
    .await;
    check(
        RunFilter {
            search: Some("\\".into()),
            ..f()
        },
        vec!["back\\slash"],
    )
    .await;
    check(
        RunFilter {
            search: Some("Alpha".into()),
            ..f()
        },
        vec!["alpha", "ALPHA-upper"],
    )
    .await;
    check(
        RunFilter {
            search: Some("✓".into()),
            ..f()
        },
        vec!["ünïcode ✓"],
    )
    .await;
    check(
        RunFilter {
            flow_name: Some("'; DROP TABLE runs; --".into()),
            ..f()
        },
        vec!["'; DROP TABLE runs; --"],
    )
    .await;
    check(
        RunFilter {
            flow_name: Some("alpha".into()),
            ..f()
        },
        vec!["alpha"],
    )
    .await;
    check(
        RunFilter {
            flow_name: Some("%".into()),
            ..f()
        },
        vec![],
    )
    .await;
    let even = vec!["alpha", "50% off_sale", "O'Brien \"quoted\"", "back\\slash"];
    let odd = vec![
        "ALPHA-upper",
        "50 percent offXsale",
        "'; DROP TABLE runs; --",
        "ünïcode ✓",
    ];
    check(
        RunFilter {
            tag: Some("100%_tag".into()),
            ..f()
        },
        even.clone(),
    )
    .await;
    check(
        RunFilter {
            tag: Some("100%".into()),
            ..f()
        },
        vec![],
    )
    .await;
    check(
        RunFilter {
            tag: Some("odd".into()),
            ..f()
        },
        odd.clone(),
    )
    .await;
    check(
        RunFilter {
            deployment: Some("dep-0".into()),
            ..f()
        },
        vec!["alpha", "back\\slash"],
    )
    .await;
    check(
        RunFilter {
            deployment: Some("dep-1".into()),
            ..f()
        },
        vec!["50 percent offXsale"],
    )
    .await;
    check(
        RunFilter {
            states: vec![StateType::Failed],
            ..f()
        },
        odd.clone(),
    )
    .await;
    check(
        RunFilter {
            states: vec![StateType::Completed],
            ..f()
        },
        even.clone(),
    )
    .await;
    check(
        RunFilter {
            states: vec![StateType::Failed, StateType::Completed],
            ..f()
        },
        names.to_vec(),
    )
    .await;
    check(
        RunFilter {
            states: vec![StateType::Running],
            ..f()
        },
        vec![],
    )
    .await;
    check(
        RunFilter {
            created_after: Some(at(2000)),
            created_before: Some(at(4000)),
            ..f()
        },
        vec!["50% off_sale", "50 percent offXsale"],
    )
    .await;
    check(
        RunFilter {
            created_after: Some(at(7000)),
            ..f()
        },
        vec!["ünïcode ✓"],
    )
    .await;
    check(
        RunFilter {
            states: vec![StateType::Completed],
            tag: Some("even".into()),
            search: Some("a".into()),
            created_before: Some(at(5000)),
            ..f()
        },
        vec!["alpha", "50% off_sale"],
    )
    .await;
    // Everything is still there: nothing was executed as SQL.
    let all = all_flow_runs(store, &f()).await;
    assert_eq!(all.len(), names.len());
    let evil = store
        .get_run(ids["'; DROP TABLE runs; --"])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(evil.name, "'; DROP TABLE runs; --");
}

async fn keyset_pagination_is_stable_under_inserts(env: &mut Env) {
    let store = &env.store;
    // 60 flow runs, in groups of three with the same creation instant (ties broken by id).
    let mut existing = Vec::new();
    let mut events = Vec::new();
    for i in 0..60 {
        let run = Run::flow(&format!("paged-{i}"), None);
        events.push(run.first(
            at(10_000 + (i / 3) * 100),
            StateType::Pending,
            details("demo::p"),
        ));
        existing.push(run.id);
    }
    ingest(store, events).await;

    let mut seen = Vec::new();
    let mut request = page(9);
    let mut round = 0;
    loop {
        let page = store
            .list_flow_runs(&RunFilter::default(), &request)
            .await
            .expect("list");
        assert!(page.items.len() <= 9);
        for pair in page.items.windows(2) {
            assert!(
                (pair[0].created, pair[0].id) > (pair[1].created, pair[1].id),
                "newest first"
            );
        }
        seen.extend(page.items.iter().map(|r| r.id));
        // Between pages: new runs, newer than everything, at the same instant as an existing
        // run, and older than everything.
        round += 1;
        let newer = Run::flow("newer", None);
        let tied = Run::flow("tied", None);
        let older = Run::flow("older", None);
        ingest(
            store,
            vec![
                newer.first(at(50_000 + round), StateType::Pending, details("demo::n")),
                tied.first(at(10_000 + 1000), StateType::Pending, details("demo::n")),
                older.first(at(round), StateType::Pending, details("demo::n")),
            ],
        )
        .await;
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => break,
        }
    }
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no run listed twice");
    for id in &existing {
        assert!(unique.contains(id), "pre-existing run {id} missing");
    }
    let pre: Vec<Uuid> = seen
        .iter()
        .copied()
        .filter(|id| existing.contains(id))
        .collect();
    // Same order as a single listing of the pre-existing runs.
    let mut expected: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for id in &existing {
        let run = store.get_run(*id).await.expect("get").expect("exists");
        expected.push((run.created, run.id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(pre, expected.iter().map(|(_, id)| *id).collect::<Vec<_>>());
}

async fn invalid_cursor_is_rejected(env: &mut Env) {
    let store = &env.store;
    for cursor in [
        "garbage",
        "",
        "'; DROP TABLE runs; --",
        &"0".repeat(47),
        &"zz".repeat(24),
    ] {
        let request = PageRequest {
            limit: 10,
            cursor: Some(cursor.to_string()),
        };
        match store.list_flow_runs(&RunFilter::default(), &request).await {
            Err(StoreError::InvalidCursor(_)) => {}
            other => panic!("cursor {cursor:?} gave {other:?}"),
        }
        match store
            .logs(Uuid::now_v7(), &LogFilter::default(), &request)
            .await
        {
            Err(StoreError::InvalidCursor(_)) => {}
            other => panic!("cursor {cursor:?} gave {other:?}"),
        }
    }
}

async fn logs_page_and_filter_by_level(env: &mut Env) {
    let store = &env.store;
    let flow = Run::flow("chatty", None);
    let task = Run::task("worker", &flow);
    let other = Run::flow("other", None);
    let levels = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];
    let mut events = vec![
        flow.first(at(0), StateType::Pending, details("demo::chatty")),
        task.first(at(1), StateType::Pending, details("demo::worker")),
    ];
    let mut logs = Vec::new();
    for i in 0..230i64 {
        let run = if i % 3 == 0 { &task } else { &flow };
        // Pairs share a timestamp: the event id orders them.
        let event = run.log(
            1,
            at(10 + i / 2),
            levels[(i % 5) as usize],
            &format!("line {i}"),
            json!({"i": i}),
        );
        logs.push(event.clone());
        events.push(event);
    }
    events.push(other.log(1, at(20), LogLevel::Error, "elsewhere", json!({})));
    // Logs in a batch separate from, and before, the states of their runs.
    let mut rng = fastrand::Rng::with_seed(11);
    rng.shuffle(&mut events);
    for chunk in events.chunks(50) {
        ingest(store, chunk.to_vec()).await;
    }
    logs.sort_by_key(|e| (e.timestamp, e.id));

    let all = all_logs(store, flow.id, &LogFilter::default(), 100).await;
    assert_eq!(all, logs.iter().map(log_record).collect::<Vec<_>>());

    let warn = all_logs(
        store,
        flow.id,
        &LogFilter {
            min_level: Some(LogLevel::Warn),
            run_id: None,
        },
        17,
    )
    .await;
    let expected: Vec<LogRecord> = logs
        .iter()
        .map(log_record)
        .filter(|l| l.level >= LogLevel::Warn)
        .collect();
    assert_eq!(warn, expected);

    let of_task = all_logs(
        store,
        flow.id,
        &LogFilter {
            min_level: Some(LogLevel::Info),
            run_id: Some(task.id),
        },
        10,
    )
    .await;
    let expected: Vec<LogRecord> = logs
        .iter()
        .map(log_record)
        .filter(|l| l.run_id == task.id && l.level >= LogLevel::Info)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(of_task, expected);

    let first = store
        .logs(flow.id, &LogFilter::default(), &page(230))
        .await
        .expect("logs");
    assert_eq!(
        (first.items.len(), first.next_cursor),
        (230, None),
        "an exact last page has no cursor"
    );
}

async fn stats_buckets_by_latest_state(env: &mut Env) {
    let store = &env.store;
    let since = t0();
    let secs = |s: i64| since + Duration::seconds(s);
    let mut events = Vec::new();
    let mut add = |created: DateTime<Utc>, last: StateType| {
        let run = Run::flow("counted", None);
        events.push(run.first(created, StateType::Pending, details("demo::c")));
        if last != StateType::Pending {
            events.push(run.state(1, created + Duration::seconds(1), last, None));
        }
        run
    };
    add(secs(30), StateType::Completed);
    add(secs(90), StateType::Failed);
    add(secs(95), StateType::Completed);
    add(secs(119), StateType::Completed);
    add(secs(599), StateType::Running);
    add(secs(-1), StateType::Completed); // before the window
    add(secs(600), StateType::Failed); // `until` is exclusive
    let parent = add(secs(40), StateType::Pending);
    let task = Run::task("not-a-flow", &parent);
    events.push(task.first(secs(41), StateType::Pending, details("demo::t")));
    ingest(store, events).await;

    let stats = store.stats(since, secs(600), 10).await.expect("stats");
    assert_eq!(
        (stats.since, stats.until, stats.bucket_seconds),
        (since, secs(600), 60)
    );
    assert_eq!(stats.buckets.len(), 10);
    for (i, bucket) in stats.buckets.iter().enumerate() {
        assert_eq!(bucket.start, secs(60 * i as i64));
    }
    assert_eq!(
        stats.buckets[0].counts,
        vec![(StateType::Pending, 1), (StateType::Completed, 1)]
    );
    assert_eq!(
        stats.buckets[1].counts,
        vec![(StateType::Completed, 2), (StateType::Failed, 1)]
    );
    assert!(stats.buckets[2..9].iter().all(|b| b.counts.is_empty()));
    assert_eq!(stats.buckets[9].counts, vec![(StateType::Running, 1)]);
    assert_eq!(
        stats.totals,
        vec![
            (StateType::Pending, 1),
            (StateType::Running, 1),
            (StateType::Completed, 3),
            (StateType::Failed, 1)
        ]
    );
    let empty = store
        .stats(secs(10_000), secs(10_060), 3)
        .await
        .expect("stats");
    assert_eq!(
        (
            empty.buckets.len(),
            empty.bucket_seconds,
            empty.totals.len()
        ),
        (3, 20, 0)
    );
}

async fn retention_deletes_old_runs_with_their_children(env: &mut Env) {
    let store = &env.store;
    let old = DateTime::from_timestamp(1_600_000_000, 0).expect("instant");
    let cutoff = DateTime::from_timestamp(1_700_000_000, 0).expect("instant");
    let mut old_runs = Vec::new();
    let mut events = Vec::new();
    // Old flows with tasks and logs; one with a task that started after the cutoff (a
    // long-running flow goes with its flow run).
    for i in 0..5 {
        let s = scenario(&format!("old-{i}"), old + Duration::hours(i));
        old_runs.extend([
            s.flow.id,
            s.extract.id,
            s.transform.id,
            s.subflow.id,
            s.load.id,
        ]);
        events.extend(s.events);
    }
    let long = Run::flow("long", None);
    let late_task = Run::task("late", &long);
    events.push(long.first(old, StateType::Pending, details("demo::long")));
    events.push(late_task.first(
        cutoff + Duration::days(1),
        StateType::Pending,
        details("demo::late"),
    ));
    events.push(late_task.log(
        1,
        cutoff + Duration::days(1),
        LogLevel::Info,
        "late log",
        json!({}),
    ));
    old_runs.extend([long.id, late_task.id]);
    // An old standalone task, and an orphan task whose flow run never arrived.
    let standalone = Run::standalone_task("alone");
    events.push(standalone.first(old, StateType::Completed, details("demo::alone")));
    let ghost = Run::flow("ghost", None);
    let orphan = Run::task("orphan", &ghost);
    events.push(orphan.first(old, StateType::Pending, details("demo::orphan")));
    old_runs.extend([standalone.id, orphan.id]);
    // Old log lines of a run whose states never arrived (a reporter dropped them).
    let unseen = Run::flow("unseen", None);
    let orphan_logs = 2u64;
    for n in 0..orphan_logs {
        events.push(unseen.log(
            1,
            old,
            LogLevel::Info,
            &format!("orphan log {n}"),
            json!({}),
        ));
    }
    // New runs that must stay.
    let fresh = scenario("fresh", cutoff + Duration::hours(1));
    events.extend(fresh.events.clone());
    ingest(store, events).await;

    let mut total = 0;
    let mut calls = 0;
    loop {
        let deleted = store.delete_before(cutoff, 3).await.expect("delete");
        calls += 1;
        assert!(calls < 100, "retention does not terminate");
        if deleted == 0 {
            break;
        }
        total += deleted;
    }
    assert_eq!(
        total,
        old_runs.len() as u64 + orphan_logs,
        "every old run and orphan log line"
    );
    let unseen_logs = store
        .logs(
            unseen.id,
            &LogFilter::default(),
            &PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .expect("logs");
    assert!(
        unseen_logs.items.is_empty(),
        "orphan log lines are deleted too"
    );
    for id in &old_runs {
        assert_eq!(
            store.get_run(*id).await.expect("get"),
            None,
            "old run {id} survived"
        );
        assert_eq!(store.states(*id).await.expect("states"), vec![]);
        assert_eq!(
            all_logs(store, *id, &LogFilter::default(), 50).await,
            vec![]
        );
    }
    check_scenario(store, &fresh).await;
    let left = all_flow_runs(store, &RunFilter::default()).await;
    assert_eq!(left.len(), 2);
    assert_eq!(store.delete_before(cutoff, 1000).await.expect("delete"), 0);
}

async fn concurrent_ingestion(env: &mut Env) {
    let store = env.store.clone();
    let writers = 8;
    let batches = 25;
    let mut tasks = tokio::task::JoinSet::new();
    let shared = scenario("shared", t0());
    let mut expected_runs = HashSet::new();
    expected_runs.insert(shared.flow.id);
    expected_runs.insert(shared.subflow.id);
    let mut plans = Vec::new();
    for w in 0..writers {
        let mut batches_of_writer = Vec::new();
        for b in 0..batches {
            let run = Run::flow(&format!("w{w}-b{b}"), None);
            expected_runs.insert(run.id);
            let task = Run::task("t", &run);
            let ms = (w * 1000 + b) as i64;
            let mut batch = vec![
                run.first(at(ms), StateType::Pending, details("demo::w")),
                run.state(1, at(ms + 1), StateType::Running, None),
                task.first(at(ms + 2), StateType::Pending, details("demo::t")),
                task.state(1, at(ms + 3), StateType::Completed, None),
                task.log(1, at(ms + 3), LogLevel::Info, "done", json!({})),
                run.state(1, at(ms + 4), StateType::Completed, None),
            ];
            // Every writer also sends the same shared events: each is accepted exactly once.
            batch.push(shared.events[b % shared.events.len()].clone());
            batches_of_writer.push(batch);
        }
        plans.push(batches_of_writer);
    }
    for batches_of_writer in plans {
        let store = store.clone();
        tasks.spawn(async move {
            let mut accepted = 0;
            for batch in batches_of_writer {
                accepted += store
                    .ingest(batch)
                    .await
                    .expect("concurrent ingest must not fail")
                    .accepted;
                // Readers run alongside the writers.
                store
                    .list_flow_runs(&RunFilter::default(), &page(20))
                    .await
                    .expect("concurrent read");
            }
            accepted
        });
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        accepted += done.expect("writer task");
    }
    let sent = batches.min(shared.events.len());
    ingest(&store, shared.events[sent..].to_vec()).await;
    assert_eq!(accepted, writers * batches * 6 + sent);
    let listed: HashSet<Uuid> = all_flow_runs(&store, &RunFilter::default())
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, expected_runs);
    check_scenario(&store, &shared).await;
}

async fn reopening_keeps_everything(env: &mut Env) {
    let s = scenario("durable", t0());
    ingest(&env.store, s.events.clone()).await;
    let before = all_flow_runs(&env.store, &RunFilter::default()).await;
    env.reopen().await;
    check_scenario(&env.store, &s).await;
    assert_eq!(
        all_flow_runs(&env.store, &RunFilter::default()).await,
        before
    );
    // Still idempotent after reopening, and still writable.
    assert_eq!(
        ingest(&env.store, s.events.clone()).await,
        (0, s.events.len())
    );
    let run = Run::flow("after-reopen", None);
    assert_eq!(
        ingest(
            &env.store,
            vec![run.first(at(1), StateType::Pending, details("demo::r"))]
        )
        .await,
        (1, 0)
    );
}

async fn reporter_drops_are_recorded(env: &mut Env) {
    let store = &env.store;
    store
        .record_reporter_drops("host-1:42", 10)
        .await
        .expect("drops");
    store
        .record_reporter_drops("host-1:42", u64::MAX)
        .await
        .expect("drops saturate");
    store
        .record_reporter_drops("'; DROP TABLE reporter_drops; --", 1)
        .await
        .expect("drops");
}

// ---------------------------------------------------------------------------------------------
// Benchmarks (ignored by default)
// ---------------------------------------------------------------------------------------------

/// Ingests `flows` flow runs (each: Pending with details, Running, Completed, plus one task run
/// with three states and a log line = 7 events) from 4 concurrent clients in batches of about
/// 1 000 events; prints events/s, then times the first page of the flow-runs list.
async fn bench(env: &mut Env, flows: usize) {
    let store = env.store.clone();
    let clients = 4;
    let per_batch = 1000 / 7;
    let mut batches: Vec<Vec<Event>> = Vec::new();
    let mut batch = Vec::new();
    for i in 0..flows {
        let flow = Run::flow(&format!("bench-{}", i % 50), None);
        let task = Run::task("step", &flow);
        let ms = i as i64 * 10;
        let tags = vec![Cow::Borrowed(if i % 1000 == 0 { "rare" } else { "common" })];
        batch.extend([
            flow.first(
                at(ms),
                StateType::Pending,
                RunDetails {
                    tags,
                    ..details("bench::flow")
                },
            ),
            flow.state(1, at(ms + 1), StateType::Running, None),
            task.first(at(ms + 2), StateType::Pending, details("bench::step")),
            task.state(1, at(ms + 3), StateType::Running, None),
            task.log(
                1,
                at(ms + 4),
                LogLevel::Info,
                "working on it",
                json!({"i": i}),
            ),
            task.state(1, at(ms + 5), StateType::Completed, None),
            flow.state(
                1,
                at(ms + 6),
                if i % 10 == 0 {
                    StateType::Failed
                } else {
                    StateType::Completed
                },
                None,
            ),
        ]);
        if (i + 1) % per_batch == 0 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    batches.push(batch);
    let events: usize = batches.iter().map(Vec::len).sum();
    let mut queues: Vec<Vec<Vec<Event>>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        queues[i % clients].push(b);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for queue in queues {
        let store = store.clone();
        tasks.spawn(async move {
            for b in queue {
                store.ingest(b).await.expect("ingest");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client");
    }
    let elapsed = started.elapsed();
    println!(
        "[{}] ingested {events} events ({flows} flow runs) in {:.2}s: {:.0} events/s",
        store.backend_name(),
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    let cases = [
        ("first page", RunFilter::default()),
        (
            "state=Failed",
            RunFilter {
                states: vec![StateType::Failed],
                ..RunFilter::default()
            },
        ),
        (
            "flow_name",
            RunFilter {
                flow_name: Some("bench-7".into()),
                ..RunFilter::default()
            },
        ),
        (
            "tag=common",
            RunFilter {
                tag: Some("common".into()),
                ..RunFilter::default()
            },
        ),
        (
            "tag=rare (1 in 1000)",
            RunFilter {
                tag: Some("rare".into()),
                ..RunFilter::default()
            },
        ),
        (
            "search=ench-4",
            RunFilter {
                search: Some("ench-4".into()),
                ..RunFilter::default()
            },
        ),
    ];
    for (label, filter) in cases {
        let mut times = Vec::new();
        let mut cursor = None;
        for _ in 0..7 {
            let t = Instant::now();
            let page = store
                .list_flow_runs(&filter, &page(50))
                .await
                .expect("list");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cursor = page.next_cursor;
        }
        let t = Instant::now();
        store
            .list_flow_runs(&filter, &PageRequest { limit: 50, cursor })
            .await
            .expect("second page");
        let second = t.elapsed().as_secs_f64() * 1000.0;
        times.sort_by(f64::total_cmp);
        println!(
            "[{}] {label}, 50 of {flows} flow runs: median {:.2} ms (min {:.2}, max {:.2}); next page {:.2} ms",
            store.backend_name(),
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            second
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_sqlite_100k_flow_runs() {
    let mut env = Env::sqlite().await;
    bench(&mut env, 100_000).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_postgres_100k_flow_runs() {
    let Some(mut env) = Env::postgres("bench").await else {
        return;
    };
    bench(&mut env, 100_000).await;
    env.finish().await;
}

/// A cheap version of the benchmark that always runs, so it keeps compiling and working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_sqlite() {
    let mut env = Env::sqlite().await;
    bench(&mut env, 500).await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Durability of acknowledged batches (SQLite)
// ---------------------------------------------------------------------------------------------

/// Tells the child test which database to write to.
const CHILD_DB: &str = "FLOWKIT_STORE_SIGKILL_CHILD_DB";

/// A batch acknowledged by `ingest` survives SIGKILL of the process that wrote it, even while
/// other batches are being written (WAL with `synchronous = NORMAL`).
#[test]
fn sqlite_acknowledged_batches_survive_sigkill() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("killed.db");
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "sqlite_sigkill_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &db)
        .output()
        .expect("run child");
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the child should die of SIGKILL; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked: Vec<Uuid> = String::from_utf8_lossy(&output.stdout)
        .lines()
        // libtest may print its "test … " prefix on the first line.
        .filter_map(|line| line.split_once("ACK ").map(|(_, id)| id))
        .map(|id| id.parse().expect("uuid"))
        .collect();
    assert!(
        acked.len() >= 30,
        "the child acknowledged only {} batches",
        acked.len()
    );
    eprintln!(
        "{} batches acknowledged before SIGKILL; checking each",
        acked.len()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("reopen after SIGKILL");
        for id in &acked {
            let run = store
                .get_run(*id)
                .await
                .expect("get")
                .expect("acknowledged run lost");
            assert_eq!(run.state, StateType::Completed);
        }
        store.close().await;
    });
}

/// The child of [`sqlite_acknowledged_batches_survive_sigkill`]: ingests until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of sqlite_acknowledged_batches_survive_sigkill"]
async fn sqlite_sigkill_child() {
    use std::io::Write;
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let url = format!("sqlite://{}", std::path::Path::new(&db).display());
    let store = Store::connect(&url).await.expect("open");
    for i in 0..100_000 {
        let run = Run::flow("doomed", None);
        let mut batch = vec![
            run.first(at(i), StateType::Pending, details("demo::doomed")),
            run.state(1, at(i + 1), StateType::Completed, None),
        ];
        for j in 0..50 {
            batch.push(run.log(1, at(i + 1), LogLevel::Info, "padding", json!({ "j": j })));
        }
        store.ingest(batch).await.expect("ingest");
        println!("ACK {}", run.id);
        std::io::stdout().flush().expect("flush");
        if i == 30 {
            // SIGKILL, not a signal the process could handle: no destructor, no flush runs. From
            // another thread, a moment later, so it lands while batches are being written.
            let pid = std::process::id().to_string();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(3));
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            });
        }
    }
    panic!("still alive after 100 000 batches");
}
