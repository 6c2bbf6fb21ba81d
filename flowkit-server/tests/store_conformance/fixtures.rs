//! Building events (a run's identity stamps them; a scenario is a small complete flow with the
//! records it must read back as) and reading whole lists back through the store.

use chrono::{DateTime, Duration, Utc};
use flowkit_server::store::{
    Backend, LogFilter, LogRecord, PageRequest, RunFilter, RunRecord, StateRecord, Store,
};
use flowkit_server::wire::{Event, EventBody, LogLevel, RunDetails, RunKind};
use flowkit_server::wire::{State, StateType};
use flowkit_wire::api::graph::{StateCount, TaskGroup};
use serde_json::json;
use std::borrow::Cow;
use uuid::Uuid;

/// A fixed instant with whole microseconds (what both backends keep).
pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_764_331_200_123_456).expect("valid instant")
}

/// `t0` plus `ms` milliseconds.
pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(ms)
}

/// Identity of one run, to stamp its events.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) id: Uuid,
    pub(crate) kind: RunKind,
    pub(crate) name: String,
    pub(crate) parent: Option<Uuid>,
    pub(crate) flow: Option<Uuid>,
}

impl Run {
    pub(crate) fn flow(name: &str, parent: Option<Uuid>) -> Run {
        let id = Uuid::now_v7();
        Run {
            id,
            kind: RunKind::Flow,
            name: name.into(),
            parent,
            flow: Some(id),
        }
    }

    pub(crate) fn task(name: &str, parent: &Run) -> Run {
        Run {
            id: Uuid::now_v7(),
            kind: RunKind::Task,
            name: name.into(),
            parent: Some(parent.id),
            flow: parent.flow,
        }
    }

    pub(crate) fn standalone_task(name: &str) -> Run {
        Run {
            id: Uuid::now_v7(),
            kind: RunKind::Task,
            name: name.into(),
            parent: None,
            flow: None,
        }
    }

    pub(crate) fn event(&self, attempt: u32, timestamp: DateTime<Utc>, body: EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: self.id,
            parent_run_id: self.parent,
            flow_run_id: self.flow,
            run_kind: self.kind,
            name: Cow::Owned(self.name.clone()),
            attempt,
            timestamp,
            lease: None,
            body,
        }
    }

    pub(crate) fn state(
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

    pub(crate) fn first(
        &self,
        timestamp: DateTime<Utc>,
        kind: StateType,
        details: RunDetails,
    ) -> Event {
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

    pub(crate) fn log(
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
    pub(crate) fn record(&self, created: DateTime<Utc>) -> RunRecord {
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
            scheduled_for: None,
            // A run another run started names it.
            created_by: self.parent.map(|parent| format!("run:{parent}")),
            skipped_instants: None,
            result: None,
        }
    }
}

pub(crate) fn details(task_key: &'static str) -> RunDetails {
    RunDetails {
        task_key: Cow::Borrowed(task_key),
        ..RunDetails::default()
    }
}

/// A small complete flow: tasks, a retry, logs and a subflow with a failing task.
pub(crate) struct Scenario {
    pub(crate) events: Vec<Event>,
    pub(crate) flow: RunRecord,
    pub(crate) extract: RunRecord,
    pub(crate) transform: RunRecord,
    pub(crate) subflow: RunRecord,
    pub(crate) load: RunRecord,
    /// Logs of `flow` (its own and its tasks'), in (timestamp, id) order.
    pub(crate) flow_logs: Vec<Event>,
}

pub(crate) fn scenario(name: &str, base: DateTime<Utc>) -> Scenario {
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
pub(crate) fn expected_states(events: &[Event], runs: &[Uuid]) -> Vec<StateRecord> {
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

pub(crate) fn log_record(event: &Event) -> LogRecord {
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

pub(crate) fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

pub(crate) async fn ingest(store: &Store, events: Vec<Event>) -> (usize, usize) {
    let outcome = store.ingest(events).await.expect("ingest");
    (outcome.accepted, outcome.duplicates)
}

pub(crate) async fn all_flow_runs(store: &Store, filter: &RunFilter) -> Vec<RunRecord> {
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

/// Every child of a flow run, read page by page with `limit`.
pub(crate) async fn all_children(store: &Store, flow_run_id: Uuid, limit: u32) -> Vec<RunRecord> {
    let mut out = Vec::new();
    let mut request = page(limit);
    loop {
        let page = store
            .child_runs_page(flow_run_id, &request)
            .await
            .expect("children page");
        assert!(page.items.len() <= limit as usize);
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return out,
        }
    }
}

pub(crate) async fn all_logs(
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
pub(crate) async fn check_scenario(store: &Store, s: &Scenario) {
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
    // Page by page, the same children in the same order.
    for limit in [1, 2, 500] {
        assert_eq!(all_children(store, s.flow.id, limit).await, children);
    }
    assert_eq!(all_children(store, s.subflow.id, 1).await, sub_children);

    let states = store.states(s.flow.id).await.expect("states");
    let runs = [s.flow.id, s.extract.id, s.transform.id, s.subflow.id];
    assert_eq!(states, expected_states(&s.events, &runs));
    // The states of given runs: the same, read run by run.
    let refs: Vec<(Uuid, Option<Uuid>)> = std::iter::once(&s.flow)
        .chain(&children)
        .map(|r| (r.id, r.flow_run_id))
        .collect();
    assert_eq!(store.states_of(&refs).await.expect("states of"), states);
    assert_eq!(
        store
            .states_of(&[(s.load.id, s.load.flow_run_id)])
            .await
            .expect("states of"),
        expected_states(&s.events, &[s.load.id])
    );
    assert_eq!(store.states_of(&[]).await.expect("states of"), vec![]);

    // Summed up per task name: one run each, most runs first then by name.
    let group = |run: &RunRecord| TaskGroup {
        name: Some(run.name.clone()),
        count: 1,
        states: vec![StateCount {
            state: run.state,
            count: 1,
        }],
        earliest_start: run.started,
        latest_end: run.ended,
    };
    let mut by_name = vec![group(&s.extract), group(&s.transform), group(&s.subflow)];
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let groups = store.child_groups(s.flow.id, 100).await.expect("groups");
    assert_eq!(groups, by_name);
    // Beyond the bound, the last group sums up the other names.
    let groups = store.child_groups(s.flow.id, 2).await.expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0], by_name[0]);
    assert_eq!(groups[1].name, None);
    assert_eq!(groups[1].count, 2);
    let sub_states = store.states(s.subflow.id).await.expect("states");
    assert_eq!(
        sub_states,
        expected_states(&s.events, &[s.subflow.id, s.load.id])
    );

    let logs = all_logs(store, s.flow.id, &LogFilter::default(), 2).await;
    assert_eq!(logs, s.flow_logs.iter().map(log_record).collect::<Vec<_>>());
}
