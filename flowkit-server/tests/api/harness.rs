//! A store on a fresh database with the router over it, the macro that runs a data test on
//! every backend compiled in, and the real server on a loopback port.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use flowkit_server::config::{Config, Settings};
use flowkit_server::store::{Backend, Store};
use flowkit_server::wire::Event;
use flowkit_server::{AppState, app};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;
#[cfg(feature = "postgres")]
use uuid::Uuid;

/// A store on a fresh database, and the router over it.
pub(crate) struct TestServer {
    pub(crate) store: Arc<Store>,
    /// What the router's handlers share (the reaper of a test runs over it).
    pub(crate) state: AppState,
    router: Router,
    pub(crate) url: String,
    /// Keeps the SQLite file alive.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the admin URL and the database to drop at the end.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pg_drop: Option<(String, String)>,
}

/// A response: status, content type and the body parsed as JSON (`Value::Null` if it is not).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: String,
    pub(crate) body: Value,
    pub(crate) headers: axum::http::HeaderMap,
}

impl Reply {
    pub(crate) fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }
    pub(crate) fn error_message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("<no error message>")
    }
}

impl TestServer {
    #[cfg(feature = "sqlite")]
    pub(crate) async fn sqlite() -> TestServer {
        TestServer::sqlite_with(Settings::default()).await
    }

    #[cfg(feature = "sqlite")]
    pub(crate) async fn sqlite_with(settings: Settings) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let store = Arc::new(Store::connect(&url).await.expect("open SQLite store"));
        TestServer::over(store, settings, url, Some(dir), None)
    }

    #[cfg(feature = "postgres")]
    /// A server on a database of its own in the PostgreSQL of `FLOWKIT_TEST_PG_URL`; `None`
    /// (after saying why) when it is not set, unless services are required.
    pub(crate) async fn postgres() -> Option<TestServer> {
        TestServer::postgres_with(Settings::default()).await
    }

    #[cfg(feature = "postgres")]
    /// [`TestServer::postgres`] with `settings`.
    pub(crate) async fn postgres_with(settings: Settings) -> Option<TestServer> {
        let admin_url = pg_url()?;
        let db = format!("flowkit_api_{}", Uuid::now_v7().simple());
        let admin = sqlx_connect(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&admin_url, &db);
        let store = Arc::new(Store::connect(&url).await.expect("open PostgreSQL store"));
        Some(TestServer::over(
            store,
            settings,
            url,
            None,
            Some((admin_url, db)),
        ))
    }

    #[cfg(feature = "postgres")]
    /// A server on the PostgreSQL database at `url`, which the caller owns (and drops).
    pub(crate) async fn postgres_at(url: &str) -> TestServer {
        let store = Arc::new(Store::connect(url).await.expect("open PostgreSQL store"));
        TestServer::over(store, Settings::default(), url.to_string(), None, None)
    }

    fn over(
        store: Arc<Store>,
        settings: Settings,
        url: String,
        dir: Option<tempfile::TempDir>,
        pg_drop: Option<(String, String)>,
    ) -> TestServer {
        let state = AppState::new(store.clone(), settings);
        let router = app(state.clone());
        TestServer {
            store,
            state,
            router,
            url,
            _dir: dir,
            pg_drop,
        }
    }

    /// The router over the same store with other settings (API keys): the returned server
    /// borrows the database, so finish `self`, not it.
    pub(crate) fn with_settings(&self, settings: Settings) -> TestServer {
        TestServer::over(self.store.clone(), settings, self.url.clone(), None, None)
    }

    /// Another replica over the same database: a store of its own on `self.url` (its own
    /// connections; on SQLite its own writer of the same file) and `settings`. Close it before
    /// finishing `self`.
    pub(crate) async fn replica(&self, settings: Settings) -> TestServer {
        let store = Arc::new(
            Store::connect(&self.url)
                .await
                .expect("open the replica's store"),
        );
        TestServer::over(store, settings, self.url.clone(), None, None)
    }

    /// The router over another store and state of the same database (a restarted server):
    /// finish `self`, not it.
    pub(crate) fn with_store(&self, store: Arc<Store>, state: AppState) -> TestServer {
        let router = app(state.clone());
        TestServer {
            store,
            state,
            router,
            url: self.url.clone(),
            _dir: None,
            pg_drop: None,
        }
    }

    /// Closes the store (and drops a PostgreSQL test database).
    pub(crate) async fn finish(self) {
        self.state.begin_shutdown();
        self.store.close().await;
        #[cfg(feature = "postgres")]
        if let Some((admin_url, db)) = self.pg_drop {
            let admin = sqlx_connect(&admin_url).await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<Body>,
        auth: Option<&str>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(secret) = auth {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        self.request_with(builder, body.unwrap_or_else(Body::empty))
            .await
    }

    /// Sends a request built by the caller (extra headers) with `body`. Every error answer
    /// must be in the JSON error shape.
    pub(crate) async fn request_with(
        &self,
        builder: axum::http::request::Builder,
        body: Body,
    ) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(builder.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(
                content_type.starts_with("application/json") && body["error"]["code"].is_string(),
                "error {status} is not in the JSON shape: {content_type} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Reply {
            status,
            content_type,
            body,
            headers,
        }
    }

    /// The router, for requests the JSON helpers do not fit.
    pub(crate) fn router(&self) -> Router {
        self.router.clone()
    }

    pub(crate) async fn get(&self, uri: &str) -> Reply {
        self.request(Method::GET, uri, None, None, None).await
    }

    pub(crate) async fn get_ok(&self, uri: &str) -> Value {
        let reply = self.get(uri).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {uri}: {}", reply.body);
        reply.body
    }

    pub(crate) async fn post_raw(&self, uri: &str, body: impl Into<Body>) -> Reply {
        self.request(
            Method::POST,
            uri,
            Some(body.into()),
            None,
            Some("application/json"),
        )
        .await
    }

    pub(crate) async fn post_json(&self, uri: &str, body: &impl serde::Serialize) -> Reply {
        self.post_raw(uri, serde_json::to_vec(body).expect("json"))
            .await
    }

    /// `POST /workers/claim` as the worker `worker` named `name`, serving `deployments`
    /// (`[{"flow", "name", "version"}]`), for at most `max_runs` runs, waiting up to `wait`
    /// seconds; expects 200. The answer (`runs`, `lease_seconds`).
    pub(crate) async fn claim(
        &self,
        worker: Uuid,
        name: &str,
        deployments: Value,
        max_runs: u32,
        wait: u32,
    ) -> Value {
        let reply = self
            .post_json(
                "/api/v1/workers/claim",
                &serde_json::json!({
                    "worker": worker,
                    "worker_name": name,
                    "deployments": deployments,
                    "max_runs": max_runs,
                    "wait_seconds": wait,
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body
    }

    /// Posts events and expects 202.
    pub(crate) async fn ingest(&self, events: &[Event]) -> Value {
        let reply = self.post_json("/api/events", &events).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        reply.body
    }
}

/// A test server's router on a free loopback port, for tests over real HTTP; stops when
/// dropped (the store stays with its [`TestServer`]).
pub(crate) struct Listening {
    pub(crate) url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub(crate) async fn listen(&self) -> Listening {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Listening { url, task }
    }
}

#[cfg(feature = "postgres")]
pub(crate) fn pg_url() -> Option<String> {
    match std::env::var("FLOWKIT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "FLOWKIT_REQUIRE_SERVICES=1 but FLOWKIT_TEST_PG_URL is not set: \
                 the PostgreSQL tests cannot run"
            );
            eprintln!("skipping the PostgreSQL variant: FLOWKIT_TEST_PG_URL is not set");
            None
        }
    }
}

#[cfg(feature = "postgres")]
async fn sqlx_connect(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to FLOWKIT_TEST_PG_URL")
}

#[cfg(feature = "postgres")]
/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_and_path = &base[scheme_end..];
    let host = host_and_path.split('/').next().unwrap_or(host_and_path);
    format!("{}{host}/{db}{query}", &base[..scheme_end])
}

/// Runs each listed test of the suite it is called in on SQLite (`<suite>::sqlite::name`) and
/// PostgreSQL (`<suite>::postgres::name`).
macro_rules! on_every_backend {
    (settings = $settings:expr; $($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::harness::TestServer::sqlite_with($settings).await;
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = $crate::harness::TestServer::postgres_with($settings).await else { return };
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $crate::harness::TestServer::sqlite().await;
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = $crate::harness::TestServer::postgres().await else { return };
                    super::$name(&server).await;
                    server.finish().await;
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The real server, over a real socket
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
/// The real server on a free loopback port, stopped by dropping or sending on `stop`.
pub(crate) struct Running {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

#[cfg(feature = "sqlite")]
pub(crate) async fn start(settings: Settings) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
    let store = Arc::new(Store::connect(&url).await.expect("store"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = Config::new(url.clone());
    config.bind = addr;
    config.retention = None;
    config.settings = settings;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        flowkit_server::run(listener, store, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        addr,
        stop: Some(stop),
        task,
        url,
        _dir: dir,
    }
}

#[cfg(feature = "sqlite")]
pub(crate) async fn stop(mut server: Running) {
    if let Some(stop) = server.stop.take() {
        let _ = stop.send(());
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), &mut server.task)
        .await
        .expect("the server stops within 10 s")
        .expect("join")
        .expect("run");
}
