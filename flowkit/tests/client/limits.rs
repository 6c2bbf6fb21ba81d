//! Tag concurrency limits against a real server: `Client::set_concurrency_limit`,
//! `concurrency_limits`, `concurrency_limit`, `delete_concurrency_limit` (tags holding `/`,
//! `:`, `%` and spaces sent as one path segment), their refusals as `RunError`s, the slots a
//! claimed run takes, and `flowkit limits list|set|delete` as a subprocess.

use crate::flows;
use crate::harness::{ADMIN, READER, Server, Worker, http};
use flowkit::client::exit_code;
use flowkit::{FlowSignature, RunError, StateType};
use flowkit_wire::api::concurrency_limits::{ConcurrencyLimit, ConcurrencyLimits, MAX_LIMIT};
use flowkit_wire::api::deployments::TriggerRequest;
use flowkit_wire::api::error::{ErrorBody, ErrorCode};
use serde_json::json;

/// A tag with a `/`, a `:` and a space: each must stay inside the one path segment.
const ODD_TAG: &str = "team/a:gpu pool";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_listed_read_and_deleted() {
    let server = Server::start().await;
    let admin = server.client(ADMIN);
    let reader = server.client(READER);
    assert_eq!(
        reader.concurrency_limits().await.expect("list").items,
        Vec::new()
    );

    let before = chrono::Utc::now();
    let gpu = admin
        .set_concurrency_limit("gpu", 2)
        .await
        .expect("set gpu");
    assert_eq!((gpu.tag.as_str(), gpu.limit, gpu.leased), ("gpu", 2, 0));
    assert!(
        gpu.updated >= before - chrono::Duration::seconds(5),
        "{gpu:?}"
    );
    let odd = admin
        .set_concurrency_limit(ODD_TAG, 1)
        .await
        .expect("set the odd tag");
    assert_eq!((odd.tag.as_str(), odd.limit, odd.leased), (ODD_TAG, 1, 0));
    let percent = admin
        .set_concurrency_limit("50%25", 7)
        .await
        .expect("set a tag with a %");
    assert_eq!(percent.tag, "50%25", "not decoded twice");

    // Listed by tag, to a read key.
    let listed = reader.concurrency_limits().await.expect("list");
    let tags: Vec<&str> = listed.items.iter().map(|l| l.tag.as_str()).collect();
    assert_eq!(tags, ["50%25", "gpu", ODD_TAG]);
    assert_eq!(listed.items[2], odd);

    // Read one by one, the odd tag also by hand: the server decodes the segment the client
    // encoded.
    assert_eq!(reader.concurrency_limit(ODD_TAG).await.expect("get"), odd);
    assert_eq!(reader.concurrency_limit("gpu").await.expect("get"), gpu);
    let res = http()
        .get(format!(
            "{}/api/v1/concurrency-limits/team%2Fa%3Agpu%20pool",
            server.url
        ))
        .bearer_auth(READER)
        .send()
        .await
        .expect("GET by hand");
    assert_eq!(res.status(), 200);
    let by_hand: ConcurrencyLimit = res.json().await.expect("a limit");
    assert_eq!(by_hand, odd);

    // Replaced, not added.
    let raised = admin.set_concurrency_limit("gpu", 5).await.expect("raise");
    assert_eq!(raised.limit, 5);
    assert!(raised.updated >= gpu.updated, "{raised:?} after {gpu:?}");
    assert_eq!(
        reader.concurrency_limits().await.expect("list").items.len(),
        3
    );

    // A read key may not set or delete.
    let refused = reader.set_concurrency_limit("gpu", 1).await;
    assert!(
        matches!(refused, Err(RunError::Forbidden(_))),
        "{refused:?}"
    );
    let refused = reader.delete_concurrency_limit("gpu").await;
    assert!(
        matches!(refused, Err(RunError::Forbidden(_))),
        "{refused:?}"
    );

    admin
        .delete_concurrency_limit(ODD_TAG)
        .await
        .expect("delete the odd tag");
    let left = reader.concurrency_limits().await.expect("list");
    let tags: Vec<&str> = left.items.iter().map(|l| l.tag.as_str()).collect();
    assert_eq!(tags, ["50%25", "gpu"]);
    assert!(matches!(
        reader.concurrency_limit(ODD_TAG).await,
        Err(RunError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_is_not_found() {
    let server = Server::start().await;
    let admin = server.client(ADMIN);
    admin.set_concurrency_limit("gpu", 1).await.expect("set");
    for tag in ["cpu", "gpu/x", "gpu:x"] {
        match admin.concurrency_limit(tag).await {
            Err(RunError::NotFound(detail)) => assert_eq!(detail.code, ErrorCode::NotFound),
            other => panic!("GET {tag:?}: expected NotFound, got {other:?}"),
        }
        match admin.delete_concurrency_limit(tag).await {
            Err(RunError::NotFound(detail)) => assert_eq!(detail.code, ErrorCode::NotFound),
            other => panic!("DELETE {tag:?}: expected NotFound, got {other:?}"),
        }
    }
    // Deleted once: the second time there is none.
    admin.delete_concurrency_limit("gpu").await.expect("delete");
    let again = admin.delete_concurrency_limit("gpu").await;
    assert!(matches!(again, Err(RunError::NotFound(_))), "{again:?}");
    assert_eq!(
        admin.concurrency_limits().await.expect("list"),
        ConcurrencyLimits { items: Vec::new() }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_out_of_range_or_a_blank_tag_is_refused() {
    let server = Server::start().await;
    // Sent raw: a limit of 0, one too many (422 `invalid_body`), a blank tag (400
    // `invalid_parameter`, as any bad path parameter).
    for (path, body, status, code) in [
        ("gpu", json!({"limit": 0}), 422, ErrorCode::InvalidBody),
        (
            "gpu",
            json!({"limit": MAX_LIMIT + 1}),
            422,
            ErrorCode::InvalidBody,
        ),
        ("%20", json!({"limit": 1}), 400, ErrorCode::InvalidParameter),
    ] {
        let res = http()
            .put(format!("{}/api/v1/concurrency-limits/{path}", server.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("PUT");
        let got = res.status();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(got, status, "PUT {path} {body}: {text}");
        let error: ErrorBody = serde_json::from_str(&text).expect("an error body");
        assert_eq!(error.error.code, code, "{text}");
    }

    // Through the client: the server's refusal, as `RunError::Api`.
    let admin = server.client(ADMIN);
    for limit in [0, MAX_LIMIT + 1] {
        match admin.set_concurrency_limit("gpu", limit).await {
            Err(RunError::Api(detail)) => assert_eq!(detail.code, ErrorCode::InvalidBody),
            other => panic!("limit {limit}: expected invalid_body, got {other:?}"),
        }
    }
    // A tag no limit can have, or no URL can hold, is refused as the server refuses a blank
    // one, before anything is sent.
    for tag in ["", " ", ".", ".."] {
        match admin.set_concurrency_limit(tag, 1).await {
            Err(RunError::Api(detail)) => assert_eq!(detail.code, ErrorCode::InvalidParameter),
            other => panic!("tag {tag:?}: expected invalid_parameter, got {other:?}"),
        }
    }
    assert_eq!(
        admin.concurrency_limits().await.expect("list").items,
        Vec::new()
    );
    // The largest limit is fine.
    let max = admin
        .set_concurrency_limit("gpu", MAX_LIMIT)
        .await
        .expect("MAX_LIMIT");
    assert_eq!(max.limit, MAX_LIMIT);
}

/// A claimed run carrying the tag holds one of its slots until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_run_carrying_the_tag_is_leased() {
    let server = Server::start().await;
    let spec = flows::nightly();
    server.register(&spec).await;
    let admin = server.client(ADMIN);
    admin
        .set_concurrency_limit(ODD_TAG, 1)
        .await
        .expect("set the limit");
    let parameters =
        flows::train::parameters_json(("houses.csv".to_string(), 5, None)).expect("parameters");
    let request = TriggerRequest {
        parameters,
        tags: vec![ODD_TAG.to_string()],
        ..TriggerRequest::default()
    };
    admin
        .trigger("train", "nightly", &request)
        .await
        .expect("trigger");
    let worker = Worker::new(&server, &[&spec]);
    let run = worker.claim().await;
    let held = admin.concurrency_limit(ODD_TAG).await.expect("get");
    assert_eq!((held.limit, held.leased), (1, 1), "{held:?}");

    let listed = server.flowkit(Some(READER), &["limits", "list"]).await;
    listed.ok();
    let line = listed
        .stdout
        .lines()
        .find(|l| l.contains(ODD_TAG))
        .unwrap_or_else(|| panic!("no line of the tag: {listed:#?}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells.get(2..4),
        Some(&["1", "1"][..]),
        "limit then leased: {listed:#?}"
    );

    worker
        .finish(&run, StateType::Completed, None, Some(json!({})))
        .await;
    let freed = admin.concurrency_limit(ODD_TAG).await.expect("get");
    assert_eq!(freed.leased, 0, "{freed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_listed_and_deleted_from_the_command_line() {
    let server = Server::start().await;
    let empty = server.flowkit(Some(READER), &["limits", "list"]).await;
    empty.ok();
    assert_eq!(empty.stdout, "", "{empty:#?}");
    assert!(empty.stderr.contains("no concurrency limits"), "{empty:#?}");

    let set = server
        .flowkit(Some(ADMIN), &["limits", "set", "gpu", "2"])
        .await;
    set.ok();
    assert_eq!(
        set.stdout.trim(),
        "tag gpu: at most 2 runs at once (0 leased now)",
        "{set:#?}"
    );
    let odd = server
        .flowkit(Some(ADMIN), &["--json", "limits", "set", ODD_TAG, "1"])
        .await;
    let odd = odd.ok().json();
    assert_eq!(odd["tag"], ODD_TAG);
    assert_eq!(odd["limit"], 1);
    assert_eq!(odd["leased"], 0);
    assert!(odd["updated"].is_string(), "{odd}");

    let listed = server.flowkit(Some(READER), &["limits", "ls"]).await;
    listed.ok();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{listed:#?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["TAG", "LIMIT", "LEASED", "UPDATED"], "{listed:#?}");
    let gpu: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(gpu.get(..3), Some(&["gpu", "2", "0"][..]), "{listed:#?}");
    // A tag with a space is quoted, so where it ends is clear.
    assert!(
        lines[2].starts_with("\"team/a:gpu pool\"  1"),
        "{listed:#?}"
    );
    let json = server
        .flowkit(Some(READER), &["limits", "list", "--json"])
        .await;
    let json = json.ok().json();
    let items = json["items"].as_array().expect("items");
    let tags: Vec<&str> = items.iter().filter_map(|i| i["tag"].as_str()).collect();
    assert_eq!(tags, ["gpu", ODD_TAG], "{json}");
    assert_eq!(items[0]["limit"], 2);

    // Bad input: a usage error before anything is sent.
    for n in ["0", "-1", "many", "1000001"] {
        let bad = server
            .flowkit(Some(ADMIN), &["limits", "set", "gpu", n])
            .await;
        bad.expect_code(exit_code::USAGE);
        assert!(bad.stderr.contains("invalid value"), "{n}: {bad:#?}");
    }
    let blank = server
        .flowkit(Some(ADMIN), &["limits", "set", " ", "2"])
        .await;
    blank.expect_code(exit_code::USAGE);
    assert!(blank.stderr.contains("not blank"), "{blank:#?}");
    server
        .flowkit(Some(ADMIN), &["limits", "delete", ".."])
        .await
        .expect_code(exit_code::USAGE);
    server
        .flowkit(Some(ADMIN), &["limits", "set", "gpu"])
        .await
        .expect_code(exit_code::USAGE);
    // A read key may not set one.
    server
        .flowkit(Some(READER), &["limits", "set", "gpu", "3"])
        .await
        .expect_code(exit_code::UNREACHABLE);

    let deleted = server
        .flowkit(Some(ADMIN), &["limits", "delete", ODD_TAG])
        .await;
    deleted.ok();
    assert!(
        deleted
            .stdout
            .contains("deleted the limit of tag \"team/a:gpu pool\""),
        "{deleted:#?}"
    );
    let again = server
        .flowkit(Some(ADMIN), &["limits", "delete", ODD_TAG])
        .await;
    again.expect_code(exit_code::ERROR);
    assert!(again.stderr.contains("not found"), "{again:#?}");
    let deleted = server
        .flowkit(Some(ADMIN), &["--json", "limits", "delete", "gpu"])
        .await;
    assert_eq!(deleted.ok().json(), json!({"deleted": "gpu"}));
    let json = server
        .flowkit(Some(READER), &["--json", "limits", "list"])
        .await;
    assert_eq!(json.ok().json(), json!({"items": []}));
}
