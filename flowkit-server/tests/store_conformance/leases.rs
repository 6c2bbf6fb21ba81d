//! Leases on every backend: replicas claiming at once never lease a run twice nor exceed a
//! deployment's limit, reapers of several replicas decide each expired lease once, and a run's
//! result goes with it at retention.

use crate::deployments::{new_run, spec};
use crate::harness::Env;
use chrono::{Duration, Utc};
use flowkit_server::store::{Backend, ClaimOrder, Finished, LeaseCall, Store, WorkerSeen};
use flowkit_server::wire::api::workers::Served;
use flowkit_server::wire::state::StateType;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

conformance!(
    replicas_claiming_at_once_never_share_a_run_or_exceed_a_limit,
    a_result_goes_with_its_run,
    concurrent_finishes_each_end_their_lease,
    a_trigger_on_one_replica_wakes_the_claims_of_another,
    reapers_of_two_replicas_decide_each_expired_lease_once,
);

fn order(version: &str, max_runs: u32) -> ClaimOrder {
    ClaimOrder {
        worker: WorkerSeen {
            id: Uuid::now_v7(),
            name: "w:1".into(),
            served: vec![Served::new("train", "nightly", version)],
        },
        max_runs,
        lease: std::time::Duration::from_secs(60),
    }
}

async fn replicas_claiming_at_once_never_share_a_run_or_exceed_a_limit(env: &mut Env) {
    let mut limited = spec("train", "v1");
    limited.concurrency_limit = Some(3);
    env.store
        .register_deployment(&limited, "fp")
        .await
        .expect("register");
    for _ in 0..20 {
        env.store.trigger(new_run(None)).await.expect("trigger");
    }
    // A second server process on the same database.
    let other = Arc::new(Store::connect(&env.url).await.expect("second replica"));
    let claims = (0..8).map(|i| {
        let store = if i % 2 == 0 {
            env.store.clone()
        } else {
            other.clone()
        };
        tokio::spawn(async move { store.claim(order("v1", 2)).await.expect("claim") })
    });
    let mut claimed = Vec::new();
    for claim in claims {
        claimed.extend(claim.await.expect("join"));
    }
    let ids: HashSet<Uuid> = claimed.iter().map(|r| r.run_id).collect();
    assert_eq!(ids.len(), claimed.len(), "a run leased twice");
    assert_eq!(claimed.len(), 3, "the limit holds across replicas");
    other.close().await;
}

async fn a_result_goes_with_its_run(env: &mut Env) {
    let store = &env.store;
    store
        .register_deployment(&spec("train", "v1"), "fp")
        .await
        .expect("register");
    store.trigger(new_run(None)).await.expect("trigger");
    let claimed = store.claim(order("v1", 1)).await.expect("claim");
    let run = &claimed[0];
    let finished = Finished {
        run_id: run.run_id,
        token: run.token,
        event_id: Uuid::now_v7(),
        state: StateType::Completed,
        message: None,
        attempt: 1,
        timestamp: Utc::now(),
        result: Some("{\"rmse\":0.5}".into()),
    };
    assert_eq!(
        store.finish(finished).await.expect("finish"),
        LeaseCall::Done
    );
    assert_eq!(
        store.run_result(run.run_id).await.expect("read").as_deref(),
        Some(&b"{\"rmse\":0.5}"[..])
    );
    // Retention of everything created before tomorrow: the run and its result go.
    let deleted = store
        .delete_before(Utc::now() + Duration::days(1), 100)
        .await
        .expect("sweep");
    assert!(deleted >= 1);
    assert!(store.get_run(run.run_id).await.expect("read").is_none());
    assert!(store.run_result(run.run_id).await.expect("read").is_none());
}

/// Finishes arriving together (SQLite writes them as one batch): each is answered as it would
/// be alone — done, stale, unknown — and each accepted one ends its run's lease with its state
/// and result.
async fn concurrent_finishes_each_end_their_lease(env: &mut Env) {
    let store = &env.store;
    let mut unlimited = spec("train", "v1");
    unlimited.concurrency_limit = None;
    store
        .register_deployment(&unlimited, "fp")
        .await
        .expect("register");
    for _ in 0..40 {
        store.trigger(new_run(None)).await.expect("trigger");
    }
    let claimed = store.claim(order("v1", 40)).await.expect("claim");
    assert_eq!(claimed.len(), 40);
    let finish = |run: &flowkit_server::wire::api::workers::ClaimedRun, i: usize| Finished {
        run_id: run.run_id,
        // Every fifth carries a token that is not the lease's.
        token: if i % 5 == 4 { run.token + 7 } else { run.token },
        event_id: Uuid::now_v7(),
        state: if i.is_multiple_of(2) {
            StateType::Completed
        } else {
            StateType::Failed
        },
        message: (i % 2 == 1).then(|| format!("failure {i}")),
        attempt: 1,
        timestamp: Utc::now(),
        result: i.is_multiple_of(2).then(|| format!("{{\"i\":{i}}}")),
    };
    let mut finishes: Vec<Finished> = claimed
        .iter()
        .enumerate()
        .map(|(i, r)| finish(r, i))
        .collect();
    // And a run that does not exist.
    finishes.push(Finished {
        run_id: Uuid::now_v7(),
        ..finishes[0].clone()
    });
    let calls = futures::future::join_all(finishes.iter().map(|f| {
        let store = store.clone();
        let f = f.clone();
        async move { store.finish(f).await.expect("finish") }
    }))
    .await;
    assert_eq!(calls.last(), Some(&LeaseCall::NotFound));
    for (i, (run, call)) in claimed.iter().zip(&calls).enumerate() {
        let stored = store
            .get_run(run.run_id)
            .await
            .expect("read")
            .expect("the run");
        if i % 5 == 4 {
            assert!(
                matches!(call, LeaseCall::Stale { held: true, .. }),
                "{i}: {call:?}"
            );
            assert_eq!(stored.state, StateType::Pending, "{i}");
            continue;
        }
        assert_eq!(*call, LeaseCall::Done, "{i}");
        let result = store.run_result(run.run_id).await.expect("result");
        if i % 2 == 0 {
            assert_eq!(stored.state, StateType::Completed, "{i}");
            assert_eq!(result, Some(format!("{{\"i\":{i}}}").into_bytes()), "{i}");
        } else {
            assert_eq!(stored.state, StateType::Failed, "{i}");
            assert_eq!(stored.state_message, Some(format!("failure {i}")), "{i}");
            assert_eq!(result, None, "{i}");
        }
        assert!(stored.ended.is_some(), "{i}");
        // The same finish again is done already.
        assert_eq!(
            store.finish(finishes[i].clone()).await.expect("again"),
            LeaseCall::Done,
            "{i}"
        );
    }
}

/// PostgreSQL: a run made claimable by one replica wakes the waiting claims of every other
/// replica at once (`NOTIFY flowkit_runs` in the trigger's transaction, `LISTEN` on each
/// replica), instead of after their poll. SQLite has one writing process and no listener.
async fn a_trigger_on_one_replica_wakes_the_claims_of_another(env: &mut Env) {
    env.store
        .register_deployment(&spec("train", "v1"), "fp")
        .await
        .expect("register");
    let other = Arc::new(Store::connect(&env.url).await.expect("second replica"));
    let wake = Arc::new(tokio::sync::Notify::new());
    let listener = other.listen_runs(wake.clone());
    if env.store.backend_name() == "sqlite" {
        assert!(listener.is_none(), "SQLite has no cross-process listener");
        return;
    }
    // The listener connects in the background; a trigger before its LISTEN is not heard, so
    // trigger until one is (each wait bounded), within 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut triggers = 0;
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        env.store.trigger(new_run(None)).await.expect("trigger");
        triggers += 1;
        let heard = tokio::time::timeout(std::time::Duration::from_millis(250), notified).await;
        if heard.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no NOTIFY of {triggers} triggers on one replica reached the other one's listener"
        );
    }
    other.close().await;
    if let Some(listener) = listener {
        // The listener ends when its store's pool closes.
        tokio::time::timeout(std::time::Duration::from_secs(10), listener)
            .await
            .expect("the listener stops with its store")
            .expect("join");
    }
}

/// Reapers run on every replica, with no leader: four at once on two replicas decide each
/// expired lease once (one `Crashed`, one re-queue as attempt 2, never attempt 3).
async fn reapers_of_two_replicas_decide_each_expired_lease_once(env: &mut Env) {
    let mut unlimited = spec("train", "v1");
    unlimited.concurrency_limit = None;
    env.store
        .register_deployment(&unlimited, "fp")
        .await
        .expect("register");
    for _ in 0..10 {
        let mut run = new_run(None);
        run.max_attempts = 3;
        env.store.trigger(run).await.expect("trigger");
    }
    let mut short = order("v1", 10);
    short.lease = std::time::Duration::from_secs(1);
    let claimed = env.store.claim(short).await.expect("claim");
    assert_eq!(claimed.len(), 10);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let other = Arc::new(Store::connect(&env.url).await.expect("second replica"));
    let reapers = (0..4).map(|i| {
        let store = if i % 2 == 0 {
            env.store.clone()
        } else {
            other.clone()
        };
        tokio::spawn(async move { store.reap().await.expect("reap") })
    });
    let mut decided = Vec::new();
    for reaper in reapers {
        decided.extend(reaper.await.expect("join").runs);
    }
    let unique: HashSet<Uuid> = decided.iter().copied().collect();
    assert_eq!(
        unique.len(),
        decided.len(),
        "a lease decided twice: {decided:?}"
    );
    assert_eq!(unique.len(), 10);
    // Each is waiting as attempt 2, exactly once.
    let again = env.store.claim(order("v1", 20)).await.expect("claim again");
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|r| r.attempt == 2), "{again:?}");
    other.close().await;
}
