//! Settings read from the environment, each checked in a child process of this test binary
//! (the environment is the process's own, so the parent never changes its own).

use std::process::Command;

/// Set in the child: the value `FLOWKIT_REPORT_BACKLOG_BYTES` must give.
const EXPECT: &str = "FLOWKIT_TEST_EXPECT_BACKLOG_BYTES";

#[test]
fn the_backlog_bound_comes_from_the_environment() {
    if let Ok(expected) = std::env::var(EXPECT) {
        let config = flowkit::config::Config::from_env();
        assert_eq!(config.report_backlog_bytes.to_string(), expected);
        return;
    }
    let default = flowkit::sink::report::DEFAULT_BACKLOG_BYTES;
    let exe = std::env::current_exe().expect("this test binary");
    for (value, expected, warned) in [
        (None, default, false),
        (Some("64MiB"), 64 << 20, false),
        (Some("1000"), 1000, false),
        (Some("lots"), default, true),
        (Some("0"), default, true),
    ] {
        let mut child = Command::new(&exe);
        child
            .args([
                "--exact",
                "the_backlog_bound_comes_from_the_environment",
                "--nocapture",
            ])
            .env(EXPECT, expected.to_string())
            .env_remove("FLOWKIT_REPORT_BACKLOG_BYTES");
        if let Some(value) = value {
            child.env("FLOWKIT_REPORT_BACKLOG_BYTES", value);
        }
        let output = child.output().expect("run the child");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{value:?}: {}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(
            stderr.contains("FLOWKIT_REPORT_BACKLOG_BYTES="),
            warned,
            "{value:?}: {stderr}"
        );
    }
}
