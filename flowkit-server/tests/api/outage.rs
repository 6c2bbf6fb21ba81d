//! A PostgreSQL outage: a private cluster (initdb in a temporary directory, as `.ci/pg.sh`
//! does, so stopping it disturbs no other test) is stopped under a running server, which must
//! say so quickly — `/api/v1/ready` and a plain list answer 503 `unavailable` within seconds,
//! not after sqlx's default 30 s as a 500 — and recover when the cluster is back.

use crate::harness::{TestServer, pg_url};
use axum::http::{StatusCode, header};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of this test's own; stopped and deleted when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Runs a PostgreSQL binary as the `postgres` user when this process is root (PostgreSQL
/// refuses to run as root), else as ourselves.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let tool = bin.join(tool);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command.current_dir("/tmp");
        command
    } else {
        Command::new(tool)
    }
}

impl Cluster {
    fn start() -> Cluster {
        let bin = std::env::var_os("PGBIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("PostgreSQL binaries under /usr/lib/postgresql (or PGBIN)")
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop().expect("an initdb under /usr/lib/postgresql")
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let status = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Cluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        cluster.up();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.data.display()
        );
        let status = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Stops the cluster at once, as a crash or a lost host would.
    fn down(&self) {
        let status = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = pg_command(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_quickly_and_recovers() {
    // Gated like every PostgreSQL test: where CI provides PostgreSQL, its binaries are here.
    if pg_url().is_none() {
        return;
    }
    let cluster = tokio::task::block_in_place(Cluster::start);
    let server = TestServer::postgres_at(&cluster.url()).await;
    assert_eq!(server.get("/api/v1/ready").await.status, StatusCode::OK);
    let run = crate::fixtures::flow_run("before-outage", 1, chrono::Utc::now());
    server.ingest(&run.events).await;
    assert_eq!(server.get("/api/v1/flow-runs").await.status, StatusCode::OK);

    // pg_ctl blocks: off the runtime's worker.
    tokio::task::block_in_place(|| cluster.down());

    // Readiness: 503 within its 2 s timeout (plus scheduling), not a hang.
    let started = Instant::now();
    let ready = server.get("/api/v1/ready").await;
    let waited = started.elapsed();
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(ready.error_code(), "unavailable");
    assert!(ready.headers.contains_key(header::RETRY_AFTER));
    assert!(waited < Duration::from_secs(10), "ready took {waited:?}");
    // Health is liveness: still up.
    assert_eq!(server.get("/api/v1/health").await.status, StatusCode::OK);

    // A plain read and an ingest: 503 within the pool's acquire timeout (3 s), not 30 s.
    for (what, reply) in [
        ("list", {
            let started = Instant::now();
            (server.get("/api/v1/flow-runs").await, started.elapsed())
        }),
        ("ingest", {
            let started = Instant::now();
            let run = crate::fixtures::flow_run("during-outage", 1, chrono::Utc::now());
            (
                server.post_json("/api/v1/events", &run.events).await,
                started.elapsed(),
            )
        }),
    ] {
        let (reply, waited) = reply;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            reply.body
        );
        assert_eq!(reply.error_code(), "unavailable", "{what}");
        assert!(reply.headers.contains_key(header::RETRY_AFTER), "{what}");
        assert!(waited < Duration::from_secs(15), "{what} took {waited:?}");
    }

    // The cluster back: ready again, the data still there.
    tokio::task::block_in_place(|| cluster.up());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = server.get("/api/v1/ready").await;
        if ready.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {}", ready.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = server.get_ok("/api/v1/flow-runs").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    server.finish().await;
    drop(cluster);
}
