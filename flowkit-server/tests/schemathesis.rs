//! The OpenAPI document tells the whole truth: schemathesis (a client no one here wrote) runs
//! against the real server binary with an API key, with every check on (`--checks all`), on
//! every route but the endless live stream, in every phase (examples, coverage, fuzzing, and
//! stateful runs that follow the document's links). Any response the document does not
//! describe, any request the schema allows but the server refuses, or the other way round,
//! fails this test.
//!
//! The exceptions are in `tests/schemathesis/schemathesis.toml`, each with its reason (rules
//! between parameters that JSON Schema cannot state); `tests/schemathesis/hooks.py` sends the
//! long-polls' in-range waits as 0 s so the run stays bounded.
//!
//! Needs `schemathesis` on `PATH` (`pip install schemathesis==4.32.5`; `.ci/run` installs it).
//! Without it the test prints why it skips, and fails when `FLOWKIT_REQUIRE_SERVICES=1`.
//! Examples per operation: 10 (`FLOWKIT_SCHEMATHESIS_EXAMPLES` overrides); the seed is fixed
//! so that a failure reproduces (`FLOWKIT_SCHEMATHESIS_SEED` overrides). About a minute on
//! 2 cores.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The version `.ci/run` installs.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const SECRET: &str = "schemathesis-admin-secret-0123456789";

/// The server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The installed schemathesis's version line, or why there is none.
fn schemathesis_version() -> Result<String, String> {
    match Command::new("schemathesis").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().into()),
        Ok(out) => Err(format!(
            "`schemathesis --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("schemathesis is not installed ({e})")),
    }
}

/// Whether `GET /api/v1/health` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[test]
fn schemathesis_finds_nothing_the_document_does_not_say() {
    let version = match schemathesis_version() {
        Ok(version) => version,
        Err(why) => {
            assert!(
                std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "FLOWKIT_REQUIRE_SERVICES=1 but {why}: install it with \
                 `pip install schemathesis=={SCHEMATHESIS_VERSION}`"
            );
            eprintln!(
                "skipping the schemathesis run: {why} (`pip install schemathesis=={SCHEMATHESIS_VERSION}`)"
            );
            return;
        }
    };
    eprintln!("{version}");
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_flowkit-server"))
            .args([
                "--database-url",
                &format!("sqlite://{}", dir.path().join("flowkit.db").display()),
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--retention",
                "off",
                "--api-key",
                &format!("schemathesis:{SECRET}:admin"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flowkit-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let examples = env_number("FLOWKIT_SCHEMATHESIS_EXAMPLES", 10).to_string();
    let seed = env_number("FLOWKIT_SCHEMATHESIS_SEED", 8).to_string();
    let started = Instant::now();
    let out = Command::new("schemathesis")
        .arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .args([
            "--no-color",
            "run",
            &format!("http://127.0.0.1:{port}/api/v1/openapi.json"),
            "--checks",
            "all",
            "--header",
            &format!("Authorization: Bearer {SECRET}"),
            // Endless by design: it never answers in full.
            "--exclude-path",
            "/api/v1/stream",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--request-timeout",
            "20",
        ])
        .env("SCHEMATHESIS_HOOKS", here.join("hooks.py"))
        // Reports and the example database stay in the temporary directory.
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "schemathesis ran {:.0?} with {examples} examples per operation, seed {seed}",
        started.elapsed()
    );
    drop(server);
    assert!(
        out.status.success(),
        "schemathesis found what the OpenAPI document does not say:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It did test the API: every operation but the stream.
    let number_after = |label: &str| -> Option<(u64, Option<u64>)> {
        let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
        let rest = line.trim_start().strip_prefix(label)?.trim();
        let (a, b) = match rest.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        Some((
            a.trim().parse().ok()?,
            b.and_then(|b| b.trim().parse().ok()),
        ))
    };
    let selected = number_after("Selected:");
    let tested = number_after("Tested:");
    match (selected, tested) {
        (Some((selected, Some(total))), Some((tested, None))) => {
            assert_eq!(
                selected + 1,
                total,
                "only the stream is left out:\n{report}"
            );
            assert_eq!(
                tested, selected,
                "every selected operation is tested:\n{report}"
            );
            assert!(tested >= 28, "{report}");
        }
        _ => panic!("no operation counts in the report:\n{report}"),
    }
}
