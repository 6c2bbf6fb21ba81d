//! Ingestion: replays change nothing, a bad event costs only itself, strings are kept as sent.

use crate::fixtures::{flow_run, ids, urlencode};
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use flowkit_server::wire::{Event, EventBody, LaterState};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

on_every_backend!(
    replayed_batch_changes_nothing,
    one_bad_event_does_not_cost_the_good_ones,
    hostile_strings_are_stored_verbatim,
    an_element_the_parser_refuses_costs_only_itself,
    a_run_record_stores_the_rows_of_its_events,
);

async fn replayed_batch_changes_nothing(server: &TestServer) {
    let run = flow_run("replayed", 2, Utc::now() - Duration::minutes(1));
    server.ingest(&run.events).await;
    let before = (
        server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await,
        server
            .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
            .await,
        server
            .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
            .await,
    );
    let again = server.ingest(&run.events).await;
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": run.events.len(), "rejected": []})
    );
    let after = (
        server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await,
        server
            .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
            .await,
        server
            .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
            .await,
    );
    assert_eq!(before, after);
    let list = server.get_ok("/api/flow-runs").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
}

async fn one_bad_event_does_not_cost_the_good_ones(server: &TestServer) {
    let run = flow_run("partly_bad", 1, Utc::now() - Duration::minutes(1));
    let mut batch: Vec<Value> = run
        .events
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    let mut bad_kind = batch[0].clone();
    bad_kind["id"] = json!(Uuid::now_v7());
    bad_kind["run_kind"] = json!("workflow");
    let mut bad_type = batch[1].clone();
    bad_type["id"] = json!(Uuid::now_v7());
    bad_type["attempt"] = json!("first");
    let mut unknown = batch[1].clone();
    unknown["id"] = json!(Uuid::now_v7());
    unknown["priority"] = json!(9);
    batch.insert(1, bad_kind);
    batch.insert(3, bad_type);
    batch.push(unknown);
    let last = batch.len() - 1;

    let reply = server.post_json("/api/events", &batch).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let rejected = reply.body["rejected"].as_array().expect("rejected");
    let summary: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["error"]["message"].as_str().expect("message"),
            )
        })
        .collect();
    // The event with a field this server does not know is from a newer client: stored.
    assert_eq!(reply.body["accepted"], run.events.len() + 1);
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert_eq!(summary[0].0, 1);
    assert!(
        summary[0]
            .1
            .starts_with("field `run_kind`: unknown variant `workflow`"),
        "{}",
        summary[0].1
    );
    assert_eq!(summary[1].0, 3);
    assert!(
        summary[1].1.starts_with("field `attempt`"),
        "{}",
        summary[1].1
    );
    assert!(summary.iter().all(|(index, _)| *index != last as u64));
    assert!(
        rejected
            .iter()
            .all(|r| r["error"]["code"] == "invalid_event")
    );

    let detail = server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(detail["state"], "Completed");
    let tasks = server
        .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
        .await;
    assert_eq!(tasks["items"].as_array().map(Vec::len), Some(1));
}

async fn hostile_strings_are_stored_verbatim(server: &TestServer) {
    let nasty = [
        "'; DROP TABLE runs; --",
        "\"); DELETE FROM events; --",
        "<script>alert('x')</script>",
        "<img src=x onerror=alert(1)>",
        "Robert'); DROP TABLE students;-- 🦀 \\ % _ \u{202e}",
    ];
    let mut flows = Vec::new();
    for (i, name) in nasty.iter().enumerate() {
        let start = Utc::now() - Duration::minutes(10) + Duration::seconds(i as i64);
        let mut run = flow_run(name, 1, start);
        for event in &mut run.events {
            if let EventBody::Log { message, .. } = &mut event.body {
                *message = format!("{name} | {message}");
            }
        }
        server.ingest(&run.events).await;
        flows.push(run.flow);
    }
    // A NUL cannot be stored by PostgreSQL: in a log message it becomes U+FFFD, in a name the
    // event is rejected.
    let mut with_nul = flow_run("nul", 0, Utc::now() - Duration::minutes(20));
    for event in &mut with_nul.events {
        if let EventBody::Log { message, .. } = &mut event.body {
            *message = "before\0after".into();
        }
    }
    let mut bad_name = with_nul.events[0].clone();
    bad_name.id = Uuid::now_v7();
    bad_name.name = "a\0b".into();
    with_nul.events.push(bad_name);
    let answer = server.ingest(&with_nul.events).await;
    assert_eq!(
        answer["rejected"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let nul_logs = server
        .get_ok(&format!("/api/flow-runs/{}/logs", with_nul.flow))
        .await;
    assert_eq!(nul_logs["items"][0]["message"], "before\u{FFFD}after");

    for (name, flow) in nasty.iter().zip(&flows) {
        let detail = server.get_ok(&format!("/api/flow-runs/{flow}")).await;
        assert_eq!(detail["name"], *name);
        let logs = server
            .get_ok(&format!("/api/flow-runs/{flow}/logs?level=WARN"))
            .await;
        assert_eq!(logs["items"][0]["message"], format!("{name} | almost done"));
        let found = server
            .get_ok(&format!("/api/flow-runs?flow_name={}", urlencode(name)))
            .await;
        assert_eq!(
            ids(&found["items"]),
            vec![flow.to_string()],
            "flow_name={name}"
        );
    }
    // Search treats metacharacters literally.
    for (needle, expected) in [
        ("DROP TABLE", 2),
        ("%", 1),
        ("_", 1),
        ("'", 3),
        ("<script>", 1),
    ] {
        let found = server
            .get_ok(&format!("/api/flow-runs?search={}", urlencode(needle)))
            .await;
        assert_eq!(
            found["items"].as_array().map(Vec::len),
            Some(expected),
            "search={needle}"
        );
    }
    let all = server.get_ok("/api/flow-runs?limit=500").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(nasty.len() + 1));
    assert_eq!(server.get_ok("/api/health").await["status"], "ok");
}

/// Nested deeper than the parser's recursion limit, a lone surrogate, invalid UTF-8: each is
/// rejected by its index and the events around it are stored.
async fn an_element_the_parser_refuses_costs_only_itself(server: &TestServer) {
    let run = flow_run("parser_refuses", 1, Utc::now() - Duration::minutes(1));
    let good: Vec<Vec<u8>> = run
        .events
        .iter()
        .map(|e| serde_json::to_vec(e).expect("json"))
        .collect();
    let log = serde_json::to_string(&run.events[4]).expect("json");
    assert!(log.contains("\"kind\":\"log\""), "{log}");
    let mut deep_field = log.replacen(
        "\"fields\":{",
        &format!(
            "\"fields\":{{\"deep\":{}1{},",
            "[".repeat(300),
            "]".repeat(300)
        ),
        1,
    );
    deep_field = deep_field.replacen(
        &run.events[4].id.to_string(),
        &Uuid::now_v7().to_string(),
        1,
    );
    let surrogate = log
        .replacen(
            &run.events[4].id.to_string(),
            &Uuid::now_v7().to_string(),
            1,
        )
        .replacen("working", "working \\ud800 here", 1);
    let mut bad_utf8 = log
        .replacen(
            &run.events[4].id.to_string(),
            &Uuid::now_v7().to_string(),
            1,
        )
        .into_bytes();
    let at = bad_utf8
        .windows(7)
        .position(|w| w == b"working")
        .expect("message");
    bad_utf8[at] = 0xff;
    let bad: Vec<Vec<u8>> = vec![deep_field.into_bytes(), surrogate.into_bytes(), bad_utf8];
    // Good, bad, good, bad, … then the rest of the good ones.
    let mut elements = Vec::new();
    let mut good_iter = good.into_iter();
    for b in bad {
        elements.extend(good_iter.next());
        elements.push(b);
    }
    elements.extend(good_iter);
    let mut body = b"[".to_vec();
    body.extend(elements.join(&b","[..]));
    body.push(b']');

    let reply = server.post_raw("/api/events", body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let rejected: Vec<u64> = reply.body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(rejected, vec![1, 3, 5], "{}", reply.body);
    assert_eq!(reply.body["accepted"], run.events.len());
    assert!(
        reply.body["rejected"][0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested deeper")),
        "{}",
        reply.body
    );
    let detail = server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(detail["state"], "Completed");
}

/// The state events of each run folded into one run record, placed where its first state was;
/// logs left as they are.
fn as_run_records(events: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut record_of: HashMap<Uuid, usize> = HashMap::new();
    for e in events {
        let EventBody::State { state, details } = &e.body else {
            out.push(e.clone());
            continue;
        };
        if let Some(&i) = record_of.get(&e.run_id)
            && let EventBody::RunRecord { later, .. } = &mut out[i].body
        {
            later.push(LaterState {
                id: e.id,
                timestamp: e.timestamp,
                attempt: e.attempt,
                state: state.clone(),
            });
            continue;
        }
        record_of.insert(e.run_id, out.len());
        out.push(Event {
            body: EventBody::RunRecord {
                state: state.clone(),
                details: details.clone(),
                later: Vec::new(),
            },
            ..e.clone()
        });
    }
    out
}

/// A batch of run records stores what its events store: sending the events afterwards finds
/// every one of them already stored, and changes nothing.
async fn a_run_record_stores_the_rows_of_its_events(server: &TestServer) {
    let health = server.get_ok("/api/v1/health").await;
    assert!(
        health["event_kinds"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "run_record")),
        "{health}"
    );
    let run = flow_run("recorded", 3, Utc::now() - Duration::minutes(1));
    let records = as_run_records(&run.events);
    // The flow's record, three tasks' records, their three logs and the flow's log.
    assert_eq!(records.len(), 1 + 3 + 3 + 1);
    let reply = server.ingest(&records).await;
    assert_eq!(
        reply,
        json!({"accepted": run.events.len(), "duplicates": 0, "rejected": []})
    );
    let read = || async {
        (
            server.get_ok(&format!("/api/flow-runs/{}", run.flow)).await,
            server
                .get_ok(&format!("/api/flow-runs/{}/task-runs", run.flow))
                .await,
            server
                .get_ok(&format!("/api/flow-runs/{}/logs", run.flow))
                .await,
            server
                .get_ok(&format!("/api/flow-runs/{}/graph", run.flow))
                .await,
        )
    };
    let before = read().await;
    assert_eq!(before.0["state"], "Completed");
    let again = server.ingest(&run.events).await;
    assert_eq!(
        again,
        json!({"accepted": 0, "duplicates": run.events.len(), "rejected": []})
    );
    assert_eq!(read().await, before);
}
