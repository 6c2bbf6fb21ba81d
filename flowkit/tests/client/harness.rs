//! A real flowkit server on loopback (SQLite file in a temporary directory, API keys with
//! scopes), the deployments the tests register with it, and the `flowkit` command run as a
//! subprocess against it.

use flowkit::client::exit_code;
use flowkit::{Client, DeploymentSpec, Event, EventBody, LogLevel, RunKind, State, StateType};
use flowkit_server::auth::{ApiKey, ApiKeys};
use flowkit_server::config::Settings;
use flowkit_wire::api::workers::{ClaimRequest, ClaimResponse, ClaimedRun, FinishRequest, Served};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A key of scope `admin`: does everything.
pub const ADMIN: &str = "admin-secret-0123456789";
/// A key of scope `read` only: may not trigger.
pub const READER: &str = "read-secret-0123456789";
/// A key of scope `report,worker`: registers deployments, claims and finishes runs.
pub const WORKER: &str = "worker-secret-0123456789";

/// Most time one command may take before the test kills it and fails.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// A server of the tests.
pub struct Server {
    spawned: Option<flowkit_server::Spawned>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server on a fresh SQLite file, with the keys [`ADMIN`], [`READER`] and [`WORKER`].
    pub async fn start() -> Server {
        configure_runtime();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let mut config = flowkit_server::config::Config::new(db);
        let key = |s: String| s.parse::<ApiKey>().expect("key");
        config.settings = Settings {
            api_keys: ApiKeys::new(vec![
                key(format!("ops:{ADMIN}:admin")),
                key(format!("dashboard:{READER}:read")),
                key(format!("worker:{WORKER}:report,worker")),
            ])
            .expect("keys"),
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let spawned = flowkit_server::spawn(listener, config)
            .await
            .expect("start the server");
        let url = format!("http://{}", spawned.addr());
        Server {
            spawned: Some(spawned),
            url,
            dir,
        }
    }

    /// Stops the server: nothing listens at [`Server::url`] any more.
    pub async fn stop(&mut self) {
        if let Some(spawned) = self.spawned.take() {
            spawned.stop().await.expect("stop the server");
        }
    }

    /// A client with the key `key`.
    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.url).expect("client").api_key(key)
    }

    /// A scratch directory of this test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers `spec` with the [`WORKER`] key.
    pub async fn register(&self, spec: &DeploymentSpec) {
        let res = http()
            .post(format!("{}/api/v1/deployments", self.url))
            .bearer_auth(WORKER)
            .json(spec)
            .send()
            .await
            .expect("POST /deployments");
        assert!(
            res.status().is_success(),
            "register {}/{}: {} {}",
            spec.flow,
            spec.name,
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }

    /// `flowkit ARGS` with `FLOWKIT_API_URL` set to this server and `FLOWKIT_API_KEY` to
    /// `key` (none for `None`).
    pub async fn flowkit(&self, key: Option<&str>, args: &[&str]) -> Output {
        let mut env = vec![("FLOWKIT_API_URL", self.url.clone())];
        if let Some(key) = key {
            env.push(("FLOWKIT_API_KEY", key.to_string()));
        }
        flowkit(self.dir(), &env, args).await
    }
}

/// The flows the tests run themselves report nowhere and print no summary.
fn configure_runtime() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut config = flowkit::config::Config::from_env();
        config.home =
            std::env::temp_dir().join(format!("flowkit-client-tests-{}", std::process::id()));
        config.summary = false;
        config.api_url = None;
        config.event_log = None;
        let _ = flowkit::config::init(config);
    });
}

/// A plain HTTP client of the tests (TLS by ring, as flowkit's own).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// What a `flowkit` command did.
#[derive(Debug)]
pub struct Output {
    /// Its exit code.
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Output {
    /// Asserts the command exited with `code`, showing what it wrote otherwise.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, code, "exit code; the command wrote {self:#?}");
        self
    }

    /// Asserts it succeeded ([`exit_code::COMPLETED`]).
    #[track_caller]
    pub fn ok(&self) -> &Output {
        self.expect_code(exit_code::COMPLETED)
    }

    /// Its standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// `flowkit ARGS` with only the variables `env` of flowkit's set (the test's own
/// `FLOWKIT_*` are removed), in `dir`; killed after [`COMMAND_DEADLINE`].
pub async fn flowkit(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_blocking(&dir, &env, &args))
        .await
        .expect("the command's thread")
}

fn run_blocking(dir: &Path, env: &[(String, String)], args: &[String]) -> Output {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out_path: PathBuf = dir.join(format!("stdout-{n}"));
    let err_path: PathBuf = dir.join(format!("stderr-{n}"));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowkit"));
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (name, _) in std::env::vars() {
        if name.starts_with("FLOWKIT_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut child = command.spawn().expect("start flowkit");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for flowkit") {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            panic!("flowkit {args:?} still running after {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status
            .code()
            .unwrap_or_else(|| panic!("flowkit {args:?} ended by a signal: {status}")),
        stdout: std::fs::read_to_string(out_path).expect("stdout"),
        stderr: std::fs::read_to_string(err_path).expect("stderr"),
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A worker of the tests: it claims runs and finishes them through the server's worker
/// routes, as `flowkit::serve` does, with the [`WORKER`] key.
pub struct Worker {
    id: uuid::Uuid,
    served: Vec<Served>,
    url: String,
}

impl Worker {
    /// A worker serving the registered versions `specs`.
    pub fn new(server: &Server, specs: &[&DeploymentSpec]) -> Worker {
        Worker {
            id: uuid::Uuid::now_v7(),
            served: specs
                .iter()
                .map(|s| Served::new(&s.flow, &s.name, &s.version))
                .collect(),
            url: server.url.clone(),
        }
    }

    /// The next run to execute, waiting for one up to `seconds` at a time; fails the test
    /// after [`COMMAND_DEADLINE`].
    pub async fn claim(&self) -> ClaimedRun {
        let start = Instant::now();
        loop {
            let request = ClaimRequest {
                worker: self.id,
                worker_name: "tests:1".into(),
                deployments: self.served.clone(),
                max_runs: 1,
                wait_seconds: 5,
            };
            let res = http()
                .post(format!("{}/api/v1/workers/claim", self.url))
                .bearer_auth(WORKER)
                .json(&request)
                .send()
                .await
                .expect("POST /workers/claim");
            assert!(res.status().is_success(), "claim: {}", res.status());
            let mut claimed: ClaimResponse = res.json().await.expect("claim answer");
            if let Some(run) = claimed.runs.pop() {
                return run;
            }
            assert!(start.elapsed() < COMMAND_DEADLINE, "no run to claim");
        }
    }

    /// Sends a log line of `run` (`POST /events`, with its lease).
    pub async fn log(&self, run: &ClaimedRun, message: &str) {
        let event = Event {
            id: uuid::Uuid::now_v7(),
            run_id: run.run_id,
            parent_run_id: None,
            flow_run_id: Some(run.run_id),
            run_kind: RunKind::Flow,
            name: run.flow.clone().into(),
            attempt: run.attempt,
            timestamp: chrono::Utc::now(),
            lease: Some(run.token),
            body: EventBody::Log {
                level: LogLevel::Info,
                message: message.to_string(),
                fields: serde_json::Map::new(),
            },
        };
        let res = http()
            .post(format!("{}/api/v1/events", self.url))
            .bearer_auth(WORKER)
            .json(&[event])
            .send()
            .await
            .expect("POST /events");
        assert!(res.status().is_success(), "log: {}", res.status());
    }

    /// Finishes `run` in `state` (with `message`), with `result` for a `Completed` one.
    pub async fn finish(
        &self,
        run: &ClaimedRun,
        state: StateType,
        message: Option<&str>,
        result: Option<serde_json::Value>,
    ) {
        let event = Event {
            id: uuid::Uuid::now_v7(),
            run_id: run.run_id,
            parent_run_id: None,
            flow_run_id: Some(run.run_id),
            run_kind: RunKind::Flow,
            name: run.flow.clone().into(),
            attempt: run.attempt,
            timestamp: chrono::Utc::now(),
            lease: Some(run.token),
            body: EventBody::State {
                state: match message {
                    Some(m) => State::with_message(state, m),
                    None => State::new(state),
                },
                details: None,
            },
        };
        let request = FinishRequest {
            token: run.token,
            event,
            result,
        };
        let res = http()
            .post(format!(
                "{}/api/v1/flow-runs/{}/finish",
                self.url, run.run_id
            ))
            .bearer_auth(WORKER)
            .json(&request)
            .send()
            .await
            .expect("POST /finish");
        let status = res.status();
        assert!(
            status.is_success(),
            "finish: {status} {}",
            res.text().await.unwrap_or_default()
        );
    }

    /// Claims the next run of `train` and runs the real flow with its parameters, finishing
    /// it as the flow ended: `Completed` with its output, or `Failed` with its error.
    pub async fn run_train(&self) -> ClaimedRun {
        use flowkit::FlowSignature;
        let run = self.claim().await;
        let (dataset, epochs, rate) =
            crate::flows::train::args_from_json(run.parameters.clone()).expect("parameters");
        match crate::flows::train(dataset, epochs, rate).await {
            Ok(metrics) => {
                let output = serde_json::to_value(metrics).expect("output");
                self.finish(&run, StateType::Completed, None, Some(output))
                    .await;
            }
            Err(e) => {
                self.finish(&run, StateType::Failed, Some(&e.to_string()), None)
                    .await;
            }
        }
        run
    }
}
