//! `flowkit alerts ls|create|update|delete|deliveries` against a real server: an admin key
//! creates, changes (pauses) and deletes rules, a read key lists them (URLs masked) and may not create; a rule the
//! server refuses is an error naming the field.

use crate::harness::{ADMIN, READER, Server, flowkit};
use flowkit::client::exit_code;

const SECRET_URL: &str = "https://hooks.example.com/services/T0/B0/SECRET-TOKEN-9876";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_created_listed_and_deleted_from_the_command_line() {
    let server = Server::start().await;
    let created = server
        .flowkit(
            Some(ADMIN),
            &[
                "--json",
                "alerts",
                "create",
                "etl failures",
                "--states",
                "failed,Crashed",
                "--deployment",
                "etl/nightly",
                "--webhook",
                SECRET_URL,
                "--quiet-period",
                "5m",
            ],
        )
        .await;
    let rule = created.ok().json();
    let id = rule["id"].as_str().expect("id").to_string();
    assert_eq!(rule["states"], serde_json::json!(["Failed", "Crashed"]));
    assert!(!created.stdout.contains("SECRET"), "{created:#?}");

    // The secret URL from the environment works too, and stays out of the arguments.
    let from_env = flowkit(
        server.dir(),
        &[
            ("FLOWKIT_API_URL", server.url.clone()),
            ("FLOWKIT_API_KEY", ADMIN.to_string()),
            ("FLOWKIT_ALERT_SLACK", SECRET_URL.to_string()),
        ],
        &["alerts", "create", "late runs", "--states", "Late,Expired"],
    )
    .await;
    from_env.ok();

    let listed = server.flowkit(Some(READER), &["alerts", "ls"]).await;
    listed.ok();
    assert!(listed.stdout.contains("etl failures"), "{listed:#?}");
    assert!(
        listed.stdout.contains("deployment=etl/nightly"),
        "{listed:#?}"
    );
    assert!(
        listed.stdout.contains("https://hooks.example.com/…9876"),
        "{listed:#?}"
    );
    assert!(!listed.stdout.contains("SECRET"), "{listed:#?}");

    // A read key may not create; a bad URL is refused at its field; a bad state is a usage
    // error before anything is sent.
    server
        .flowkit(
            Some(READER),
            &[
                "alerts",
                "create",
                "x",
                "--states",
                "Failed",
                "--webhook",
                SECRET_URL,
            ],
        )
        .await
        .expect_code(exit_code::UNREACHABLE);
    let refused = server
        .flowkit(
            Some(ADMIN),
            &[
                "alerts",
                "create",
                "x",
                "--states",
                "Failed",
                "--webhook",
                "ftp://h/x",
            ],
        )
        .await;
    assert_ne!(refused.code, exit_code::COMPLETED, "{refused:#?}");
    assert!(refused.stderr.contains("/webhook"), "{refused:#?}");
    server
        .flowkit(Some(ADMIN), &["alerts", "create", "x", "--states", "Sad"])
        .await
        .expect_code(exit_code::USAGE);

    let deliveries = server
        .flowkit(Some(READER), &["--json", "alerts", "deliveries", &id])
        .await;
    assert_eq!(deliveries.ok().json(), serde_json::json!([]));

    server
        .flowkit(Some(ADMIN), &["alerts", "delete", &id])
        .await
        .ok();
    let left = server
        .flowkit(Some(READER), &["--json", "alerts", "ls"])
        .await;
    let left = left.ok().json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["name"], "late runs");
    server
        .flowkit(Some(ADMIN), &["alerts", "delete", &id])
        .await
        .expect_code(exit_code::ERROR);
}

/// `flowkit alerts update`: only the flags given change; `--disable` pauses the rule and
/// `--enable` resumes it; `--clear` removes a field; the stored URL stays unless a new one is
/// given; the server's refusal names the field; a change without any flag is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_updated_paused_and_resumed_from_the_command_line() {
    let server = Server::start().await;
    let created = server
        .flowkit(
            Some(ADMIN),
            &[
                "--json",
                "alerts",
                "create",
                "etl failures",
                "--states",
                "Failed",
                "--flow",
                "etl",
                "--webhook",
                SECRET_URL,
            ],
        )
        .await;
    let id = created.ok().json()["id"].as_str().expect("id").to_string();

    let updated = server
        .flowkit(
            Some(ADMIN),
            &[
                "--json",
                "alerts",
                "update",
                &id,
                "--name",
                "etl trouble",
                "--states",
                "failed,crashed",
                "--disable",
            ],
        )
        .await;
    let rule = updated.ok().json();
    assert_eq!(rule["name"], "etl trouble");
    assert_eq!(rule["states"], serde_json::json!(["Failed", "Crashed"]));
    assert_eq!(rule["enabled"], false);
    assert_eq!(rule["flow"], "etl", "unchanged");
    assert_eq!(rule["webhook"], "https://hooks.example.com/…9876", "kept");

    let listed = server.flowkit(Some(READER), &["alerts", "ls"]).await;
    listed.ok();
    assert!(
        listed.stdout.contains("etl trouble (disabled)"),
        "{listed:#?}"
    );

    let resumed = server
        .flowkit(
            Some(ADMIN),
            &[
                "--json", "alerts", "update", &id, "--enable", "--clear", "flow",
            ],
        )
        .await;
    let rule = resumed.ok().json();
    assert_eq!(rule["enabled"], true);
    assert!(rule.get("flow").is_none(), "{rule}");
    let human = server
        .flowkit(Some(ADMIN), &["alerts", "update", &id, "--tag", "nightly"])
        .await;
    human.ok();
    assert!(
        human
            .stdout
            .contains(&format!("updated alert rule {id} (etl trouble, enabled)")),
        "{human:#?}"
    );

    // The server refuses removing the only target, naming the field.
    let refused = server
        .flowkit(
            Some(ADMIN),
            &["alerts", "update", &id, "--clear", "webhook"],
        )
        .await;
    assert_ne!(refused.code, exit_code::COMPLETED, "{refused:#?}");
    assert!(refused.stderr.contains("/webhook"), "{refused:#?}");
    // Usage errors, before anything is sent.
    for args in [
        vec!["alerts", "update", id.as_str()],
        vec!["alerts", "update", id.as_str(), "--clear", "name"],
        vec!["alerts", "update", "not-an-id", "--enable"],
        vec!["alerts", "update", id.as_str(), "--enable", "--disable"],
    ] {
        server
            .flowkit(Some(ADMIN), &args)
            .await
            .expect_code(exit_code::USAGE);
    }
    // A read key may not change a rule.
    server
        .flowkit(Some(READER), &["alerts", "update", &id, "--disable"])
        .await
        .expect_code(exit_code::UNREACHABLE);
}
