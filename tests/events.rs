//! The event log: with `FLOWKIT_EVENT_LOG` set, every event is one JSON line with the wire
//! fields, and a top-level flow's events are in the file before the flow's call returns.
//! Logs emitted with `tracing` inside a run are that run's log events.

use flowkit::{flow, task};
use std::process::Command;

#[task(retries = 1)]
async fn step(i: u32) -> anyhow::Result<u32> {
    tracing::info!(item = i, "processing <b>item</b> {i}");
    if i == 2 {
        static FAILED_ONCE: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        if !FAILED_ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("transient");
        }
    }
    Ok(i * 10)
}

#[flow]
async fn logged(n: u32) -> anyhow::Result<u32> {
    let mut sum = 0;
    for i in 0..n {
        sum += step(i).await?;
    }
    Ok(sum)
}

/// Child mode: runs the flow and, right after it returns, counts the lines in the event log.
#[tokio::test]
async fn child_mode() {
    let Some(path) = std::env::var_os("FLOWKIT_EVENT_LOG") else {
        return;
    };
    if std::env::var_os("FLOWKIT_TEST_CHILD").is_none() {
        return;
    }
    let sum = logged(3).await.expect("flow succeeds");
    let lines = std::fs::read_to_string(path)
        .expect("event log exists")
        .lines()
        .count();
    println!("CHILD sum={sum} lines={lines}");
}

#[test]
fn every_event_is_a_json_line_before_the_flow_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["child_mode", "--exact", "--nocapture", "--test-threads=1"])
        .env("FLOWKIT_TEST_CHILD", "1")
        .env("FLOWKIT_EVENT_LOG", &log)
        .env("FLOWKIT_HOME", dir.path().join("home"))
        .env("FLOWKIT_SUMMARY", "0")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child_line = stdout
        .lines()
        .find_map(|l| l.find("CHILD ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no child output: {stdout}"));

    let text = std::fs::read_to_string(&log).expect("read event log");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    // Flow: Pending, Running, Completed. Steps 0 and 1: 3 states + 1 log each. Step 2: fails
    // once: Pending, Running, AwaitingRetry, Running, Completed + 2 logs.
    let states = events.iter().filter(|e| e["kind"] == "state").count();
    let logs = events.iter().filter(|e| e["kind"] == "log").count();
    assert_eq!(states, 3 + 3 + 3 + 5, "{text}");
    assert_eq!(logs, 4, "{text}");
    assert_eq!(
        child_line,
        format!("CHILD sum=30 lines={}", events.len()),
        "all events were in the file when the flow returned"
    );

    for e in &events {
        for field in [
            "id",
            "run_id",
            "parent_run_id",
            "run_kind",
            "name",
            "attempt",
            "timestamp",
        ] {
            assert!(e.get(field).is_some(), "missing {field} in {e}");
        }
        let ts = e["timestamp"].as_str().expect("timestamp is a string");
        assert!(chrono_like_rfc3339(ts), "timestamp {ts} is RFC 3339");
    }
    let flow_id = events
        .iter()
        .find(|e| e["run_kind"] == "flow")
        .map(|e| e["run_id"].clone())
        .expect("a flow event");
    for e in events.iter().filter(|e| e["run_kind"] == "task") {
        assert_eq!(e["parent_run_id"], flow_id);
        assert_eq!(e["flow_run_id"], flow_id);
    }
    let retry = events
        .iter()
        .find(|e| e["state"]["type"] == "AwaitingRetry")
        .expect("the retry is logged");
    assert_eq!(retry["attempt"], 1);
    assert!(
        retry["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("transient")
    );
    let log = events
        .iter()
        .find(|e| e["kind"] == "log")
        .expect("a log event");
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["message"], "processing <b>item</b> 0", "kept verbatim");
    assert_eq!(log["fields"]["item"], 0);
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
}

fn chrono_like_rfc3339(ts: &str) -> bool {
    ts.len() >= 20
        && ts.as_bytes()[4] == b'-'
        && ts.as_bytes()[10] == b'T'
        && (ts.ends_with('Z') || ts.contains('+'))
}
