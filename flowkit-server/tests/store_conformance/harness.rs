//! One fresh database per test on each backend compiled in, and the macro that runs a test on
//! every one of them.

use flowkit_server::store::{Backend, Store};
use std::sync::Arc;
#[cfg(feature = "postgres")]
use {sqlx::Connection, uuid::Uuid};

/// One backend with a fresh database, and what is needed to reopen and clean it up.
pub(crate) struct Env {
    /// Shared so tests can hand it to spawned tasks.
    pub(crate) store: Arc<Store>,
    pub(crate) url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    #[cfg(feature = "sqlite")]
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    #[cfg(feature = "postgres")]
    Postgres { admin_url: String, database: String },
}

#[cfg(feature = "postgres")]
const PG_SKIP: &str = "skipping PostgreSQL conformance: set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)";

impl Env {
    #[cfg(feature = "sqlite")]
    pub(crate) async fn sqlite() -> Env {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("flowkit.db").display());
        let store = Arc::new(Store::connect(&url).await.expect("open SQLite store"));
        Env {
            store,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database for `test`, or `None` (with the reason printed) when none is
    /// configured.
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres(test: &str) -> Option<Env> {
        let Ok(admin_url) = std::env::var("FLOWKIT_TEST_PG_URL") else {
            if std::env::var("FLOWKIT_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "FLOWKIT_REQUIRE_SERVICES=1 forbids skipping PostgreSQL conformance: \
                     set FLOWKIT_TEST_PG_URL (see .ci/pg.sh)"
                );
            }
            eprintln!("{PG_SKIP}");
            return None;
        };
        // At most 63 characters (PostgreSQL's limit), the whole id kept: cut short, an id
        // made within the same minute was the same, and a database left by a failed run made
        // the next run's creation fail.
        let database = format!("flowkit_{test:.22}_{}", Uuid::now_v7().simple());
        let url = crate::pg_database::create_database(&admin_url, &database).await;
        let store = Arc::new(Store::connect(&url).await.expect("open PostgreSQL store"));
        Some(Env {
            store,
            url,
            cleanup: Cleanup::Postgres {
                admin_url,
                database,
            },
        })
    }

    /// Closes the store and opens it again from its URL.
    pub(crate) async fn reopen(&mut self) {
        self.store.close().await;
        self.store = Arc::new(Store::connect(&self.url).await.expect("reopen store"));
    }

    /// Runs `sql` on the database directly, behind the store's back (to damage it).
    pub(crate) async fn execute_raw(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match &self.cleanup {
            #[cfg(feature = "sqlite")]
            Cleanup::Sqlite(_) => {
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.url)
                    .await
                    .expect("connect to the SQLite file");
                sqlx::query(sql).execute(&mut conn).await.expect("raw SQL");
            }
            #[cfg(feature = "postgres")]
            Cleanup::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect to the test database");
                sqlx::query(sql).execute(&mut conn).await.expect("raw SQL");
            }
        }
    }

    pub(crate) async fn finish(self) {
        self.store.close().await;
        match self.cleanup {
            #[cfg(feature = "sqlite")]
            Cleanup::Sqlite(_) => {}
            #[cfg(feature = "postgres")]
            Cleanup::Postgres {
                admin_url,
                database,
            } => {
                crate::pg_database::drop_database(&admin_url, &database).await;
            }
        }
    }
}

/// Generates one `#[tokio::test]` per backend compiled in for each test function of the
/// suite it is called in: `<suite>::sqlite::<test>` and `<suite>::postgres::<test>`.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let mut env = $crate::harness::Env::sqlite().await;
                    super::$test(&mut env).await;
                    env.finish().await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(mut env) = $crate::harness::Env::postgres(stringify!($test)).await
                    else {
                        return;
                    };
                    super::$test(&mut env).await;
                    env.finish().await;
                }
            )*
        }
    };
}
