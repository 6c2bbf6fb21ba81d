//! `flowkit schedules …` and `flowkit backfill` as a subprocess against a real server: a
//! schedule created, listed with its next fire time, paused, resumed and deleted; a backfill
//! of a past range, and the same range again creating nothing.

use crate::flows;
use crate::harness::{ADMIN, READER, Server};
use chrono::{Duration, DurationRound, Utc};
use flowkit::client::exit_code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_deleted_and_backfilled() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;

    // None yet: said on stderr, exit 0.
    let empty = server
        .flowkit(Some(ADMIN), &["schedules", "list", "train/nightly"])
        .await;
    empty.ok();
    assert!(empty.stderr.contains("no schedule"), "{empty:#?}");

    let created = server
        .flowkit(
            Some(ADMIN),
            &[
                "--json",
                "schedules",
                "create",
                "train/nightly",
                "--cron",
                "0 3 * * *",
                "--timezone",
                "Europe/Paris",
                "-p",
                "dataset=s3://houses",
                "-p",
                "epochs=7",
                "--overlap",
                "allow",
            ],
        )
        .await;
    created.ok();
    let schedule = created.json();
    let id = schedule["id"].as_str().expect("id").to_string();
    assert_eq!(schedule["source"], "api");
    assert_eq!(schedule["spec"]["parameters"]["epochs"], 7, "{schedule}");
    assert_eq!(schedule["spec"]["overlap"], "allow");

    // Listed with its source, active flag, next fire time and timing.
    let list = server
        .flowkit(Some(READER), &["schedules", "list", "train/nightly"])
        .await;
    list.ok();
    assert!(list.stdout.starts_with("ID"), "{list:#?}");
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {list:#?}"));
    for part in ["api", "yes", "UTC", "cron \"0 3 * * *\"", "Europe/Paris"] {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }

    // Paused, then resumed.
    let paused = server
        .flowkit(Some(ADMIN), &["schedules", "pause", &id])
        .await;
    paused.ok();
    assert!(paused.stdout.contains("paused"), "{paused:#?}");
    let list = server
        .flowkit(
            Some(READER),
            &["--json", "schedules", "list", "train/nightly"],
        )
        .await;
    assert_eq!(list.ok().json()[0]["active"], false);
    let resumed = server
        .flowkit(Some(ADMIN), &["schedules", "resume", &id])
        .await;
    resumed.ok();
    assert!(resumed.stdout.contains("active"), "{resumed:#?}");

    // A backfill of the past ten days of this daily schedule: ten runs; again: none.
    let to = Utc::now().duration_trunc(Duration::days(1)).expect("day");
    let from = to - Duration::days(10);
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let args = [
        "--json",
        "backfill",
        "train/nightly",
        "--from",
        from.as_str(),
        "--to",
        to.as_str(),
        "--max-parallel",
        "2",
    ];
    let first = server.flowkit(Some(ADMIN), &args).await;
    let done = first.ok().json();
    assert_eq!(done["instants"], 10, "{done}");
    assert_eq!(done["created"], 10, "{done}");
    let again = server.flowkit(Some(ADMIN), &args).await;
    let done = again.ok().json();
    assert_eq!(done["created"], 0, "{done}");
    assert_eq!(done["existing"], 10, "{done}");
    let runs = server
        .flowkit(
            Some(READER),
            &[
                "--json",
                "runs",
                "ls",
                "--deployment",
                "train/nightly",
                "--limit",
                "50",
            ],
        )
        .await;
    let runs = runs.ok().json();
    assert_eq!(runs.as_array().map(Vec::len), Some(10), "{runs}");

    // Bad input: exit 64 for the command line, the server's 422 named.
    let bad = server
        .flowkit(
            Some(ADMIN),
            &[
                "backfill",
                "train/nightly",
                "--from",
                "yesterday",
                "--to",
                to.as_str(),
            ],
        )
        .await;
    bad.expect_code(exit_code::USAGE);
    let refused = server
        .flowkit(
            Some(ADMIN),
            &[
                "schedules",
                "create",
                "train/nightly",
                "--cron",
                "0 3 * *",
                "-p",
                "dataset=d",
            ],
        )
        .await;
    assert_ne!(refused.code, 0, "{refused:#?}");
    assert!(refused.stderr.contains("/cron"), "{refused:#?}");
    // The reader may not change schedules.
    let forbidden = server
        .flowkit(Some(READER), &["schedules", "pause", &id])
        .await;
    forbidden.expect_code(exit_code::UNREACHABLE);

    // Deleted: gone from the list.
    let deleted = server
        .flowkit(Some(ADMIN), &["schedules", "delete", &id])
        .await;
    deleted.ok();
    let list = server
        .flowkit(
            Some(READER),
            &["--json", "schedules", "list", "train/nightly"],
        )
        .await;
    assert_eq!(list.ok().json(), serde_json::json!([]));
    let gone = server
        .flowkit(Some(ADMIN), &["schedules", "delete", &id])
        .await;
    gone.expect_code(exit_code::ERROR);
}
