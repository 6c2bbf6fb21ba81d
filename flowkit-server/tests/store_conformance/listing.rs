//! The flow-runs list: filters matched literally, keyset pagination, cursors.

use crate::fixtures::*;
use crate::harness::Env;
use chrono::{DateTime, Utc};
use flowkit_server::store::{Backend, LogFilter, PageRequest, RunFilter, StoreError};
use flowkit_server::wire::RunDetails;
use flowkit_server::wire::StateType;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

conformance!(
    filters_match_literally,
    keyset_pagination_is_stable_under_inserts,
    invalid_cursor_is_rejected,
);

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
