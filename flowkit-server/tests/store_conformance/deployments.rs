//! Deployments: versions kept in registration order, ownership of a flow/name, and triggered
//! runs with idempotency keys that hold under concurrency and expire.

use crate::harness::Env;
use chrono::{DateTime, Duration, Utc};
use flowkit_server::store::{
    Backend, IdempotencyClaim, NewRun, PageRequest, Registration, Triggered,
};
use flowkit_server::wire::api::deployments::DeploymentSpec;
use flowkit_server::wire::event::{Event, EventBody, RunDetails, RunKind};
use flowkit_server::wire::state::{State, StateType};
use serde_json::json;
use uuid::Uuid;

conformance!(
    versions_are_kept_in_registration_order,
    concurrent_registrations_agree_on_the_newest,
    one_key_makes_one_run_under_concurrency,
    concurrent_keyless_triggers_each_make_their_run,
    expired_keys_are_forgotten_and_swept,
);

pub(crate) fn spec(flow: &str, version: &str) -> DeploymentSpec {
    serde_json::from_value(json!({
        "flow": flow,
        "name": "nightly",
        "flow_key": format!("demo::{flow}"),
        "version": version,
        "parameter_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "output_schema": {},
        "default_parameters": {"n": 1},
        "tags": ["a", "b"],
        "concurrency_limit": 3
    }))
    .expect("spec")
}

fn page(limit: u32, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

async fn versions_are_kept_in_registration_order(env: &mut Env) {
    let store = &env.store;
    for version in ["v1", "v2", "v3"] {
        match store
            .register_deployment(&spec("train", version), version)
            .await
            .expect("register")
        {
            Registration::Created(v) => {
                assert_eq!(v.version, version);
                assert_eq!(v.tags, ["a", "b"]);
                assert_eq!(v.concurrency_limit, Some(3));
                assert_eq!(v.default_parameters["n"], 1);
            }
            other => panic!("{version}: {other:?}"),
        }
    }
    // The same fingerprint is a repeat, another one a conflict; neither changes anything.
    assert!(matches!(
        store.register_deployment(&spec("train", "v2"), "v2").await,
        Ok(Registration::Unchanged(v)) if v.version == "v2"
    ));
    assert!(matches!(
        store.register_deployment(&spec("train", "v2"), "other").await,
        Ok(Registration::VersionConflict(v)) if v.version == "v2"
    ));
    let mut intruder = spec("train", "v9");
    intruder.flow_key = "elsewhere::train".into();
    assert_eq!(
        store
            .register_deployment(&intruder, "v9")
            .await
            .expect("register"),
        Registration::OwnedByAnother {
            flow_key: "demo::train".into()
        }
    );

    let (latest, count) = store
        .deployment("train", "nightly")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((latest.version.as_str(), count), ("v3", 3));
    assert!(
        store
            .deployment("train", "weekly")
            .await
            .expect("read")
            .is_none()
    );
    let v1 = store
        .deployment_version("train", "nightly", Some("v1"))
        .await
        .expect("read")
        .expect("v1");
    assert!(v1.registered < latest.registered);
    assert!(
        store
            .deployment_version("train", "nightly", Some("v9"))
            .await
            .expect("read")
            .is_none()
    );

    let first = store
        .deployment_versions("train", "nightly", &page(2, None))
        .await
        .expect("page");
    let rest = store
        .deployment_versions("train", "nightly", &page(2, first.next_cursor.clone()))
        .await
        .expect("page");
    let order: Vec<String> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|v| v.version.clone())
        .collect();
    assert_eq!(order, ["v3", "v2", "v1"]);
    assert!(rest.next_cursor.is_none());

    store
        .register_deployment(&spec("etl", "1"), "1")
        .await
        .expect("register");
    let list = store.list_deployments(&page(50, None)).await.expect("list");
    let listed: Vec<(&str, u64)> = list
        .items
        .iter()
        .map(|d| (d.flow.as_str(), d.versions))
        .collect();
    assert_eq!(listed, [("etl", 1), ("train", 3)]);
}

async fn concurrent_registrations_agree_on_the_newest(env: &mut Env) {
    let store = &env.store;
    let outcomes = futures::future::join_all((0..16).map(|i| {
        let store = store.clone();
        async move {
            let version = format!("v{i:02}");
            // Each version twice at once: one creates it, the other finds it unchanged.
            let spec = spec("train", &version);
            let (a, b) = futures::join!(
                store.register_deployment(&spec, &version),
                store.register_deployment(&spec, &version),
            );
            (a.expect("register"), b.expect("register"))
        }
    }))
    .await;
    for (a, b) in &outcomes {
        let created = [a, b]
            .iter()
            .filter(|r| matches!(r, Registration::Created(_)))
            .count();
        assert_eq!(created, 1, "{a:?} {b:?}");
    }
    let all = store
        .deployment_versions("train", "nightly", &page(100, None))
        .await
        .expect("versions");
    assert_eq!(all.items.len(), 16);
    // Newest first, strictly: `registered` orders them as the registrations committed.
    for pair in all.items.windows(2) {
        assert!(pair[0].registered > pair[1].registered, "{pair:?}");
    }
    let (latest, count) = store
        .deployment("train", "nightly")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(count, 16);
    assert_eq!(latest.version, all.items[0].version);
    let summary = store.list_deployments(&page(10, None)).await.expect("list");
    assert_eq!(summary.items[0].latest_version, latest.version);
}

pub(crate) fn new_run(key: Option<(&str, &str, DateTime<Utc>)>) -> NewRun {
    let run_id = Uuid::now_v7();
    NewRun {
        event: Event {
            id: Uuid::now_v7(),
            run_id,
            parent_run_id: None,
            flow_run_id: Some(run_id),
            run_kind: RunKind::Flow,
            name: "train".into(),
            attempt: 1,
            timestamp: Utc::now(),
            lease: None,
            body: EventBody::State {
                state: State::with_message(StateType::Scheduled, "waiting"),
                details: Some(Box::new(RunDetails {
                    task_key: "demo::train".into(),
                    version: Some("v1".into()),
                    tags: vec!["a".into()],
                    parameters: Some(json!({"n": 1})),
                    upstream: vec![],
                    cache_key: None,
                    deployment: Some("train/nightly".into()),
                    worker: None,
                })),
            },
        },
        deployment: "train/nightly".into(),
        scheduled_for: None,
        idempotency: key.map(|(key, fingerprint, expires)| IdempotencyClaim {
            key: key.into(),
            fingerprint: fingerprint.into(),
            expires,
        }),
        version_pinned: false,
        max_attempts: 1,
        created_by: Some("local".into()),
        schedule_slot: None,
    }
}

/// Triggers without a key arriving together (SQLite writes them as one batch) each make their
/// own run, with the columns only a trigger sets.
async fn concurrent_keyless_triggers_each_make_their_run(env: &mut Env) {
    let store = &env.store;
    // Stored to the microsecond.
    let later =
        DateTime::from_timestamp_micros((Utc::now() + Duration::hours(2)).timestamp_micros())
            .expect("an instant");
    let runs: Vec<NewRun> = (0..64)
        .map(|i| {
            let mut run = NewRun {
                scheduled_for: (i % 2 == 0).then_some(later),
                created_by: Some(format!("key:caller-{i}")),
                ..new_run(None)
            };
            if i % 3 == 0 {
                // What the answer of a trigger is built from, unusual values included: a
                // timestamp finer than the database keeps, nested parameters.
                run.event.timestamp += Duration::nanoseconds(789);
                if let EventBody::State { state, details } = &mut run.event.body {
                    state.message = Some(format!("waiting for a worker (é {i})"));
                    if let Some(details) = details {
                        details.tags = vec!["z".into(), "a".into(), format!("t{i}").into()];
                        details.parameters = Some(json!({
                            "n": i, "x": 0.1, "big": 12345678901234_i64, "s": "ü\n\"",
                            "nested": {"b": [1, 2.5, null, true], "a": {}}
                        }));
                    }
                }
            }
            run
        })
        .collect();
    let outcomes = futures::future::join_all(runs.iter().map(|run| {
        let store = store.clone();
        let run = run.clone();
        async move { store.trigger(run).await.expect("trigger") }
    }))
    .await;
    for (run, outcome) in runs.iter().zip(&outcomes) {
        assert_eq!(*outcome, Triggered::Created(run.event.run_id));
        let stored = store
            .get_run(run.event.run_id)
            .await
            .expect("read")
            .expect("the run exists");
        assert_eq!(stored.state, StateType::Scheduled);
        assert_eq!(stored.created_by, run.created_by);
        assert_eq!(stored.scheduled_for, run.scheduled_for);
        assert_eq!(stored.deployment.as_deref(), Some("train/nightly"));
        // The trigger route answers with the record made from what it wrote.
        assert_eq!(stored, run.record().expect("record"));
    }
}

async fn one_key_makes_one_run_under_concurrency(env: &mut Env) {
    let store = &env.store;
    let expires = Utc::now() + Duration::hours(1);
    let outcomes = futures::future::join_all((0..32).map(|_| {
        let store = store.clone();
        async move {
            store
                .trigger(new_run(Some(("k", "fp", expires))))
                .await
                .expect("trigger")
        }
    }))
    .await;
    let created: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| match o {
            Triggered::Created(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Triggered::Created(id) | Triggered::Replayed(id) if *id == created[0]),
            "{outcome:?}"
        );
    }
    assert_eq!(
        store
            .trigger(new_run(Some(("k", "another body", expires))))
            .await
            .expect("trigger"),
        Triggered::KeyReused(created[0])
    );
    let known = store
        .idempotency_key("train/nightly", "k")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        (known.fingerprint.as_str(), known.run_id),
        ("fp", created[0])
    );
    // Scoped to the deployment.
    let mut elsewhere = new_run(Some(("k", "fp", expires)));
    elsewhere.deployment = "train/adhoc".into();
    assert!(matches!(
        store.trigger(elsewhere).await,
        Ok(Triggered::Created(_))
    ));

    // The run is a flow run like any other, with its scheduled instant.
    let mut scheduled = new_run(None);
    let at = DateTime::from_timestamp_micros(1_900_000_000_123_456).expect("instant");
    scheduled.scheduled_for = Some(at);
    let Triggered::Created(id) = store.trigger(scheduled.clone()).await.expect("trigger") else {
        panic!("no key, always created");
    };
    let run = store.get_run(id).await.expect("read").expect("stored");
    assert_eq!(run.state, StateType::Scheduled);
    assert_eq!(run.scheduled_for, Some(at));
    assert_eq!(run.deployment.as_deref(), Some("train/nightly"));
    assert_eq!(run.parameters, Some(json!({"n": 1})));
    assert_eq!(store.states(id).await.expect("states").len(), 1);
    assert_eq!(run, scheduled.record().expect("record"));
    // A run created with a key: its record is what is read back too.
    let keyed = new_run(Some(("another", "fp", expires)));
    assert_eq!(
        store.trigger(keyed.clone()).await.expect("trigger"),
        Triggered::Created(keyed.event.run_id)
    );
    let stored = store.get_run(keyed.event.run_id).await.expect("read");
    assert_eq!(stored, Some(keyed.record().expect("record")));
}

async fn expired_keys_are_forgotten_and_swept(env: &mut Env) {
    let store = &env.store;
    let past = Utc::now() - Duration::seconds(1);
    let Triggered::Created(first) = store
        .trigger(new_run(Some(("old", "fp", past))))
        .await
        .expect("trigger")
    else {
        panic!("a new key creates a run");
    };
    assert!(
        store
            .idempotency_key("train/nightly", "old")
            .await
            .expect("read")
            .is_none()
    );
    // An expired key does not hold: the same key makes a new run.
    let Triggered::Created(second) = store
        .trigger(new_run(Some(("old", "fp", past))))
        .await
        .expect("trigger")
    else {
        panic!("an expired key creates a run");
    };
    assert_ne!(first, second);
    store
        .trigger(new_run(Some((
            "fresh",
            "fp",
            Utc::now() + Duration::hours(1),
        ))))
        .await
        .expect("trigger");
    // Retention reclaims the expired key (no run is old enough to go) and keeps the fresh one.
    let ancient = DateTime::from_timestamp(1_000_000_000, 0).expect("instant");
    assert_eq!(store.delete_before(ancient, 100).await.expect("sweep"), 1);
    assert_eq!(store.delete_before(ancient, 100).await.expect("sweep"), 0);
    assert!(
        store
            .idempotency_key("train/nightly", "fresh")
            .await
            .expect("read")
            .is_some()
    );
    assert!(store.get_run(first).await.expect("read").is_some());
}
