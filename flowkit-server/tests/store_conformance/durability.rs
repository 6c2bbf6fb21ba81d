//! Durability of acknowledged batches (SQLite): a batch acknowledged by `ingest` is committed.

use crate::fixtures::*;
use flowkit_server::store::{Backend, Store};
use flowkit_server::wire::LogLevel;
use flowkit_server::wire::StateType;
use serde_json::json;
use uuid::Uuid;

/// Tells the child test which database to write to.
const CHILD_DB: &str = "FLOWKIT_STORE_SIGKILL_CHILD_DB";

/// A batch acknowledged by `ingest` survives SIGKILL of the process that wrote it, even while
/// other batches are being written (WAL with `synchronous = NORMAL`).
#[test]
fn sqlite_acknowledged_batches_survive_sigkill() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("killed.db");
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "durability::sqlite_sigkill_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &db)
        .output()
        .expect("run child");
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the child should die of SIGKILL; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked: Vec<Uuid> = String::from_utf8_lossy(&output.stdout)
        .lines()
        // libtest may print its "test … " prefix on the first line.
        .filter_map(|line| line.split_once("ACK ").map(|(_, id)| id))
        .map(|id| id.parse().expect("uuid"))
        .collect();
    assert!(
        acked.len() >= 30,
        "the child acknowledged only {} batches",
        acked.len()
    );
    eprintln!(
        "{} batches acknowledged before SIGKILL; checking each",
        acked.len()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("reopen after SIGKILL");
        for id in &acked {
            let run = store
                .get_run(*id)
                .await
                .expect("get")
                .expect("acknowledged run lost");
            assert_eq!(run.state, StateType::Completed);
        }
        store.close().await;
    });
}

/// The child of [`sqlite_acknowledged_batches_survive_sigkill`]: ingests until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of sqlite_acknowledged_batches_survive_sigkill"]
async fn sqlite_sigkill_child() {
    use std::io::Write;
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let url = format!("sqlite://{}", std::path::Path::new(&db).display());
    let store = Store::connect(&url).await.expect("open");
    for i in 0..100_000 {
        let run = Run::flow("doomed", None);
        let mut batch = vec![
            run.first(at(i), StateType::Pending, details("demo::doomed")),
            run.state(1, at(i + 1), StateType::Completed, None),
        ];
        for j in 0..50 {
            batch.push(run.log(1, at(i + 1), LogLevel::Info, "padding", json!({ "j": j })));
        }
        store.ingest(batch).await.expect("ingest");
        println!("ACK {}", run.id);
        std::io::stdout().flush().expect("flush");
        if i == 30 {
            // SIGKILL, not a signal the process could handle: no destructor, no flush runs. From
            // another thread, a moment later, so it lands while batches are being written.
            let pid = std::process::id().to_string();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(3));
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            });
        }
    }
    panic!("still alive after 100 000 batches");
}
