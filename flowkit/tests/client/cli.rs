//! The `flowkit` command as a subprocess against a real server: what it prints and how it
//! exits.

use crate::flows;
use crate::harness::{ADMIN, READER, Server, Worker, flowkit};
use flowkit::StateType;
use flowkit::client::{PageRequest, RunFilter, exit_code};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_exit_code_and_usage_errors_exit_64() {
    let dir = tempfile::tempdir().expect("dir");
    let help = flowkit(dir.path(), &[], &["--help"]).await;
    help.ok();
    // Each code of `exit_code` is in the help, with what it means.
    for (code, meaning) in [
        (exit_code::COMPLETED, "completed"),
        (exit_code::FAILED, "failed"),
        (exit_code::CRASHED, "crashed"),
        (exit_code::CANCELLED, "cancelled"),
        (exit_code::INVALID_PARAMETERS, "invalid parameters"),
        (exit_code::UNREACHABLE, "cannot reach the server"),
        (exit_code::TIMED_OUT, "timed out"),
        (exit_code::STILL_RUNNING, "still running"),
        (exit_code::ERROR, "any other error"),
        (exit_code::EXPIRED, "expired"),
        (exit_code::USAGE, "the command line is wrong"),
    ] {
        let line = format!("\n  {code:<3}{meaning}");
        assert!(
            help.stdout.contains(&line),
            "--help lacks {line:?}:\n{}",
            help.stdout
        );
    }
    for args in [&["bogus"][..], &["run"], &["runs", "ls", "--limit", "0"]] {
        let out = flowkit(dir.path(), &[], args).await;
        out.expect_code(exit_code::USAGE);
        assert!(!out.stderr.contains("panicked"), "{out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_listed_and_shown_with_their_parameters() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;
    server.register(&flows::adhoc()).await;

    let ls = server.flowkit(Some(ADMIN), &["deployments", "ls"]).await;
    ls.ok();
    assert!(ls.stdout.starts_with("DEPLOYMENT"), "{ls:#?}");
    assert!(ls.stdout.contains("train/nightly"), "{ls:#?}");
    assert!(ls.stdout.contains("featurize/adhoc"), "{ls:#?}");
    assert!(
        ls.stdout.contains("Retrain the house-price model."),
        "{ls:#?}"
    );

    // Pages are followed up to --limit.
    let json = server
        .flowkit(
            Some(ADMIN),
            &["deployments", "ls", "--json", "--limit", "1"],
        )
        .await;
    assert_eq!(json.ok().json().as_array().map(Vec::len), Some(1));

    let show = server
        .flowkit(Some(ADMIN), &["deployments", "show", "train/nightly"])
        .await;
    show.ok();
    for expected in [
        "train/nightly",
        "dataset",
        "epochs",
        "integer",
        "required",
        "3",
    ] {
        assert!(show.stdout.contains(expected), "{expected}: {show:#?}");
    }
    let show = server
        .flowkit(
            Some(ADMIN),
            &["deployments", "show", "train/nightly", "--json"],
        )
        .await;
    assert_eq!(show.ok().json()["latest"]["flow"], "train");

    let missing = server
        .flowkit(Some(ADMIN), &["deployments", "show", "train/weekly"])
        .await;
    missing.expect_code(exit_code::ERROR);
    assert!(missing.stderr.contains("not found"), "{missing:#?}");
    let bad = server
        .flowkit(Some(ADMIN), &["deployments", "show", "train"])
        .await;
    bad.expect_code(exit_code::USAGE);
    assert!(bad.stderr.contains("FLOW/NAME"), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_waiting_sends_values_typed_by_the_schema() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;
    server.register(&flows::adhoc()).await;
    let client = server.client(ADMIN);

    let out = server
        .flowkit(
            Some(ADMIN),
            &[
                "run",
                "train/nightly",
                "-p",
                "dataset=123",
                "-p",
                "epochs=7",
                "-p",
                "learning_rate=0.5",
                "--no-wait",
            ],
        )
        .await;
    out.ok();
    let id: Uuid = out.stdout.trim().parse().expect("a run id on stdout");
    let run = client.flow_run(id).await.expect("the run");
    assert_eq!(run.state, StateType::Scheduled);
    assert_eq!(
        run.parameters,
        Some(json!({"dataset": "123", "epochs": 7, "learning_rate": 0.5}))
    );
    assert_eq!(run.deployment.as_deref(), Some("train/nightly"));

    // Arrays, booleans and numbers from -p; the rest from the file, -p winning.
    let file = server.dir().join("params.json");
    std::fs::write(
        &file,
        r#"{"columns": ["from-file"], "scale": 2, "verbose": false}"#,
    )
    .expect("params file");
    let out = server
        .flowkit(
            Some(ADMIN),
            &[
                "run",
                "featurize/adhoc",
                "--params-file",
                file.to_str().expect("path"),
                "-p",
                r#"columns=["a","b"]"#,
                "-p",
                "verbose=true",
                "--no-wait",
                "--json",
            ],
        )
        .await;
    let run = out.ok().json();
    assert_eq!(
        run["parameters"],
        json!({"columns": ["a", "b"], "scale": 2, "verbose": true})
    );

    // The same idempotency key and parameters: the same run, said so.
    let args = [
        "run",
        "train/nightly",
        "-p",
        "dataset=s3://bucket/houses.csv",
        "--idempotency-key",
        "nightly-2026-11-30",
        "--no-wait",
    ];
    let first = server.flowkit(Some(ADMIN), &args).await;
    let again = server.flowkit(Some(ADMIN), &args).await;
    assert_eq!(first.ok().stdout, again.ok().stdout);
    assert!(again.stderr.contains("already created"), "{again:#?}");
    let id: Uuid = first.stdout.trim().parse().expect("id");
    let run = client.flow_run(id).await.expect("the run");
    assert_eq!(
        run.parameters,
        Some(json!({"dataset": "s3://bucket/houses.csv", "epochs": 3}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_by_state_and_deployment_and_shown() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;
    server.register(&flows::adhoc()).await;
    let trigger = |args: &'static [&'static str]| {
        let server = &server;
        async move {
            let mut all = vec!["run", "--no-wait"];
            all.extend(args);
            let out = server.flowkit(Some(ADMIN), &all).await;
            out.ok().stdout.trim().parse::<Uuid>().expect("id")
        }
    };
    let a = trigger(&["train/nightly", "-p", "dataset=a"]).await;
    let b = trigger(&["train/nightly", "-p", "dataset=b"]).await;
    let c = trigger(&[
        "featurize/adhoc",
        "-p",
        "columns=[]",
        "-p",
        "scale=1",
        "-p",
        "verbose=false",
    ])
    .await;

    let ls = server
        .flowkit(
            Some(ADMIN),
            &["runs", "ls", "--deployment", "train/nightly"],
        )
        .await;
    ls.ok();
    assert!(ls.stdout.starts_with("ID"), "{ls:#?}");
    assert!(
        ls.stdout.contains(&a.to_string()) && ls.stdout.contains(&b.to_string()),
        "{ls:#?}"
    );
    assert!(!ls.stdout.contains(&c.to_string()), "{ls:#?}");
    // Newest first.
    assert!(
        ls.stdout.find(&b.to_string()) < ls.stdout.find(&a.to_string()),
        "{ls:#?}"
    );

    let json = server
        .flowkit(
            Some(ADMIN),
            &[
                "runs",
                "ls",
                "--json",
                "--limit",
                "2",
                "--state",
                "scheduled",
            ],
        )
        .await;
    let ids: Vec<String> = json
        .ok()
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, [c.to_string(), b.to_string()]);
    let none = server
        .flowkit(
            Some(ADMIN),
            &["runs", "ls", "--json", "--state", "Completed,Failed"],
        )
        .await;
    assert_eq!(none.ok().json(), json!([]));
    let bad = server
        .flowkit(Some(ADMIN), &["runs", "ls", "--state", "Done"])
        .await;
    bad.expect_code(exit_code::USAGE);
    assert!(bad.stderr.contains("Completed"), "{bad:#?}");

    let show = server
        .flowkit(Some(ADMIN), &["runs", "show", &a.to_string()])
        .await;
    assert_eq!(show.ok().json()["id"], a.to_string());
    let unknown = server
        .flowkit(Some(ADMIN), &["runs", "show", &Uuid::now_v7().to_string()])
        .await;
    unknown.expect_code(exit_code::ERROR);
    let garbage = server
        .flowkit(Some(ADMIN), &["runs", "show", "yesterday"])
        .await;
    garbage.expect_code(exit_code::USAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_parameters_exit_4_each_at_its_pointer() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;

    let out = server
        .flowkit(
            Some(ADMIN),
            &["run", "train/nightly", "-p", "epochs=-1", "-p", "bogus=1"],
        )
        .await;
    out.expect_code(exit_code::INVALID_PARAMETERS);
    for pointer in ["/dataset", "/epochs", "/bogus"] {
        assert!(
            out.stderr.contains(&format!("\n  {pointer}: ")),
            "{pointer} not listed: {out:#?}"
        );
    }
    // Nothing was created.
    let runs = server.flowkit(Some(ADMIN), &["runs", "ls", "--json"]).await;
    assert_eq!(runs.ok().json(), json!([]));

    // A value of the wrong type is sent as text: the server names it.
    let out = server
        .flowkit(
            Some(ADMIN),
            &[
                "run",
                "train/nightly",
                "-p",
                "dataset=d",
                "-p",
                "epochs=many",
            ],
        )
        .await;
    out.expect_code(exit_code::INVALID_PARAMETERS);
    assert!(out.stderr.contains("/epochs: "), "{out:#?}");

    // What the command cannot read itself.
    let out = server
        .flowkit(Some(ADMIN), &["run", "train/nightly", "-p", "epochs"])
        .await;
    out.expect_code(exit_code::INVALID_PARAMETERS);
    assert!(out.stderr.contains("NAME=VALUE"), "{out:#?}");
    let file = server.dir().join("list.json");
    std::fs::write(&file, "[1, 2]").expect("file");
    let out = server
        .flowkit(
            Some(ADMIN),
            &[
                "run",
                "train/nightly",
                "--params-file",
                file.to_str().expect("path"),
            ],
        )
        .await;
    out.expect_code(exit_code::INVALID_PARAMETERS);
    assert!(out.stderr.contains("not an object"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_or_a_refused_key_exits_5() {
    let mut server = Server::start().await;
    server.register(&flows::nightly()).await;
    let run = ["run", "train/nightly", "-p", "dataset=d", "--no-wait"];

    let wrong = server.flowkit(Some("not-a-key-0123456789"), &run).await;
    wrong.expect_code(exit_code::UNREACHABLE);
    assert!(wrong.stderr.contains("FLOWKIT_API_KEY"), "{wrong:#?}");
    let none = server.flowkit(None, &["runs", "ls"]).await;
    none.expect_code(exit_code::UNREACHABLE);
    let reader = server.flowkit(Some(READER), &run).await;
    reader.expect_code(exit_code::UNREACHABLE);
    assert!(
        reader.stderr.contains("trigger"),
        "the scope is named: {reader:#?}"
    );
    // The flag wins over the variable.
    let flag = server
        .flowkit(
            Some("not-a-key-0123456789"),
            &["runs", "ls", "--api-key", ADMIN],
        )
        .await;
    flag.ok();

    let url = server.url.clone();
    server.stop().await;
    let down = server.flowkit(Some(ADMIN), &["runs", "ls"]).await;
    down.expect_code(exit_code::UNREACHABLE);
    assert!(
        down.stderr.contains("cannot reach the flowkit server"),
        "{down:#?}"
    );
    assert!(down.stderr.contains(&url), "{down:#?}");

    let unset = flowkit(server.dir(), &[], &["runs", "ls"]).await;
    unset.expect_code(exit_code::UNREACHABLE);
    assert!(unset.stderr.contains("FLOWKIT_API_URL"), "{unset:#?}");
    let not_a_url = flowkit(server.dir(), &[], &["runs", "ls", "--api-url", "ftp://x"]).await;
    not_a_url.expect_code(exit_code::UNREACHABLE);
    assert!(not_a_url.stderr.contains("http://"), "{not_a_url:#?}");
}

/// Triggers with `flowkit run` while the worker runs the real flow: the exit code follows the
/// run's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_the_result_and_exits_as_the_run_ended() {
    let server = Server::start().await;
    let spec = flows::nightly();
    server.register(&spec).await;
    let worker = Worker::new(&server, &[&spec]);

    let run = [
        "run",
        "train/nightly",
        "-p",
        "dataset=houses.csv",
        "-p",
        "learning_rate=0.5",
    ];
    let (out, _) = tokio::join!(server.flowkit(Some(ADMIN), &run), worker.run_train());
    let expected = flows::train("houses.csv".into(), 3, Some(0.5))
        .await
        .expect("the flow");
    assert_eq!(
        out.ok().json(),
        serde_json::to_value(&expected).expect("json")
    );

    let with_json = [&run[..], &["--json"]].concat();
    let (out, claimed) = tokio::join!(server.flowkit(Some(ADMIN), &with_json), worker.run_train());
    let shown = out.ok().json();
    assert_eq!(shown["id"], claimed.run_id.to_string());
    assert_eq!(shown["state"], "Completed");
    assert_eq!(
        shown["result"],
        serde_json::to_value(&expected).expect("json")
    );

    // The flow's error: exit 1, the error said.
    let fails = ["run", "train/nightly", "-p", "dataset="];
    let (out, _) = tokio::join!(server.flowkit(Some(ADMIN), &fails), worker.run_train());
    out.expect_code(exit_code::FAILED);
    assert!(out.stderr.contains("no dataset given"), "{out:#?}");
    assert!(
        out.stderr.contains("flowkit retry"),
        "says what to do: {out:#?}"
    );

    // Ends the worker decides.
    for (state, code) in [
        (StateType::Crashed, exit_code::CRASHED),
        (StateType::TimedOut, exit_code::TIMED_OUT),
        (StateType::Cancelled, exit_code::CANCELLED),
    ] {
        let finish = async {
            let run = worker.claim().await;
            worker
                .finish(&run, state, Some("as the worker says"), None)
                .await;
        };
        let (out, ()) = tokio::join!(
            server.flowkit(Some(ADMIN), &["run", "train/nightly", "-p", "dataset=d"]),
            finish
        );
        out.expect_code(code);
        assert!(out.stderr.contains("as the worker says"), "{out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_ends_first_exits_7_and_a_cancelled_wait_exits_3() {
    let server = Server::start().await;
    server.register(&flows::nightly()).await;
    let client = server.client(ADMIN);

    // No worker: the wait ends before the run.
    let out = server
        .flowkit(
            Some(ADMIN),
            &["run", "train/nightly", "-p", "dataset=d", "--timeout", "2s"],
        )
        .await;
    out.expect_code(exit_code::STILL_RUNNING);
    assert!(out.stderr.contains("still Scheduled"), "{out:#?}");

    // A run waited for, cancelled meanwhile: the wait ends at once, exit 3.
    let cancel = async {
        let id = loop {
            let runs = client
                .runs(&RunFilter::all(), &PageRequest::default())
                .await
                .expect("runs");
            let found = runs
                .items
                .iter()
                .find(|r| r.parameters.as_ref().is_some_and(|p| p["dataset"] == "e"));
            if let Some(run) = found {
                break run.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let out = server
            .flowkit(
                Some(ADMIN),
                &["cancel", &id.to_string(), "--reason", "not needed today"],
            )
            .await;
        assert!(out.ok().stdout.contains("Cancelled"), "{out:#?}");
        id
    };
    let (out, id) = tokio::join!(
        server.flowkit(
            Some(ADMIN),
            &[
                "run",
                "train/nightly",
                "-p",
                "dataset=e",
                "--timeout",
                "60s"
            ],
        ),
        cancel
    );
    out.expect_code(exit_code::CANCELLED);
    assert!(out.stderr.contains("not needed today"), "{out:#?}");

    // Cancelling it again: the server refuses (a final run), exit 8.
    let again = server
        .flowkit(Some(ADMIN), &["cancel", &id.to_string()])
        .await;
    again.expect_code(exit_code::ERROR);
    assert!(again.stderr.contains("conflict"), "{again:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_a_failed_run_again_and_logs_follow_it_to_its_end() {
    let server = Server::start().await;
    let spec = flows::nightly();
    server.register(&spec).await;
    let worker = Worker::new(&server, &[&spec]);
    let client = server.client(ADMIN);

    let fails = ["run", "train/nightly", "-p", "dataset=", "--json"];
    let (out, first) = tokio::join!(server.flowkit(Some(ADMIN), &fails), worker.run_train());
    out.expect_code(exit_code::FAILED);
    // With --json, the failed run is on stdout.
    assert_eq!(out.json()["state"], "Failed");
    let id = first.run_id.to_string();

    let retried = server.flowkit(Some(ADMIN), &["retry", &id]).await;
    let line = &retried.ok().stdout;
    assert!(line.contains("Scheduled (attempt 2)"), "{retried:#?}");

    let second = worker.claim().await;
    assert_eq!((second.run_id, second.attempt), (first.run_id, 2));
    worker.log(&second, "loading the data").await;
    let follow_args = ["logs", id.as_str(), "--follow", "--poll-interval", "100ms"];
    let follow = server.flowkit(Some(ADMIN), &follow_args);
    let finish = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        worker.log(&second, "fitting <the> model").await;
        worker
            .finish(&second, StateType::Completed, None, Some(json!(42)))
            .await;
    };
    let (followed, ()) = tokio::join!(follow, finish);
    let lines: Vec<&str> = followed.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{followed:#?}");
    assert!(
        lines[0].ends_with("INFO  train: loading the data"),
        "{followed:#?}"
    );
    assert!(
        lines[1].ends_with("INFO  train: fitting <the> model"),
        "{followed:#?}"
    );

    let logs = server.flowkit(Some(ADMIN), &["logs", &id, "--json"]).await;
    let messages: Vec<String> = logs
        .ok()
        .stdout
        .lines()
        .map(|l| {
            let entry: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            entry["message"].as_str().expect("message").to_string()
        })
        .collect();
    assert_eq!(messages, ["loading the data", "fitting <the> model"]);
    assert_eq!(
        client
            .result(first.run_id, Duration::ZERO)
            .await
            .expect("result"),
        json!(42)
    );

    // A completed run is not retried; a run that does not exist has no logs.
    let again = server.flowkit(Some(ADMIN), &["retry", &id]).await;
    again.expect_code(exit_code::ERROR);
    let none = server
        .flowkit(Some(ADMIN), &["logs", &Uuid::now_v7().to_string()])
        .await;
    none.expect_code(exit_code::ERROR);
    assert!(none.stderr.contains("not found"), "{none:#?}");
}
