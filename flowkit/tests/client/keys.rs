//! `flowkit keys create | ls | revoke` as a subprocess against a real server with startup
//! keys: the secret printed once, the rules and refusals of the server, a revoked key refused.

use crate::harness::{ADMIN, READER, Server};
use flowkit::client::exit_code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_listed_and_revoked_from_the_command_line() {
    let server = Server::start().await;
    let created = server
        .flowkit(
            Some(ADMIN),
            &[
                "keys",
                "create",
                "team-a",
                "--scope",
                "read",
                "--scope",
                "trigger=train/nightly",
            ],
        )
        .await;
    created.ok();
    // The secret alone on stdout, the warning on stderr.
    let secret = created.stdout.trim().to_string();
    assert!(
        secret.starts_with("fk_") && !secret.contains(' '),
        "{created:#?}"
    );
    assert!(
        created.stderr.contains("only time its secret is shown"),
        "{created:#?}"
    );

    // The new key reads runs at once.
    server.flowkit(Some(&secret), &["runs", "ls"]).await.ok();

    // Listed with the startup keys, never with a secret.
    let ls = server.flowkit(Some(ADMIN), &["keys", "list"]).await;
    ls.ok();
    assert!(ls.stdout.starts_with("NAME"), "{ls:#?}");
    for expected in [
        "team-a",
        "stored",
        "read,trigger=train/nightly",
        "key:ops",
        "ops",
        "startup",
    ] {
        assert!(ls.stdout.contains(expected), "{expected}: {ls:#?}");
    }
    assert!(
        !ls.stdout.contains(&secret) && !ls.stdout.contains(ADMIN),
        "{ls:#?}"
    );
    let json = server.flowkit(Some(ADMIN), &["keys", "ls", "--json"]).await;
    assert_eq!(
        json.json()["keys"].as_array().map(Vec::len),
        Some(4),
        "{json:#?}"
    );
    // When each stored key was last used: team-a ran `runs ls` above (written in the
    // background, so polled for a while).
    assert!(ls.stdout.contains("LAST USED"), "{ls:#?}");
    let mut used = serde_json::Value::Null;
    for _ in 0..100 {
        let listed = server.flowkit(Some(ADMIN), &["keys", "ls", "--json"]).await;
        let keys = listed.json()["keys"].clone();
        used = keys
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["name"] == "team-a"))
            .map(|k| k["last_used"].clone())
            .unwrap_or_default();
        if used.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(used.is_string(), "team-a's last use is not listed: {used}");

    // Refusals: not an admin, a name in use, a bad scope, a startup key, no scope at all.
    server
        .flowkit(Some(READER), &["keys", "ls"])
        .await
        .expect_code(exit_code::UNREACHABLE);
    let taken = server
        .flowkit(
            Some(ADMIN),
            &["keys", "create", "team-a", "--scope", "read"],
        )
        .await;
    taken.expect_code(exit_code::ERROR);
    assert!(taken.stderr.contains("team-a"), "{taken:#?}");
    let bad = server
        .flowkit(Some(ADMIN), &["keys", "create", "x", "--scope", "write"])
        .await;
    assert_ne!(bad.code, exit_code::COMPLETED);
    assert!(bad.stderr.contains("unknown scope"), "{bad:#?}");
    let flag = server
        .flowkit(Some(ADMIN), &["keys", "revoke", "ops"])
        .await;
    flag.expect_code(exit_code::ERROR);
    assert!(flag.stderr.contains("--api-key"), "{flag:#?}");
    server
        .flowkit(Some(ADMIN), &["keys", "create", "x"])
        .await
        .expect_code(exit_code::USAGE);

    // Revoked: refused at once by this server.
    let revoked = server
        .flowkit(Some(ADMIN), &["keys", "revoke", "team-a"])
        .await;
    revoked.ok();
    assert!(
        revoked.stdout.contains("revoked key \"team-a\""),
        "{revoked:#?}"
    );
    server
        .flowkit(Some(&secret), &["runs", "ls"])
        .await
        .expect_code(exit_code::UNREACHABLE);
    server
        .flowkit(Some(ADMIN), &["keys", "revoke", "team-a"])
        .await
        .expect_code(exit_code::ERROR);
}
