//! A damaged database: a plain 500 for the client, the cause in the log.

use crate::fixtures::flow_run;
use crate::harness::TestServer;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use std::sync::Arc;

/// A row the server cannot have written (edited by hand, damaged) is a plain 500 for the
/// client, and the store's description of what is wrong goes to the log.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_corrupt_row_is_a_logged_500() {
    use sqlx::Connection as _;
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps the fields of every ERROR event, as `name=value` text.
    #[derive(Clone, Default)]
    struct Errors(Arc<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() != tracing::Level::ERROR {
                return;
            }
            let mut text = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    let _ = write!(text, "{}={value:?} ", field.name());
                },
            );
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
        }
    }
    let errors = Errors::default();
    // This test's thread only: the current-thread runtime runs the handler here.
    let _logging =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    let server = TestServer::sqlite().await;
    let run = flow_run("damaged", 1, Utc::now() - Duration::minutes(1));
    server.ingest(&run.events).await;
    let mut db = sqlx::SqliteConnection::connect(&server.url)
        .await
        .expect("open the file");
    sqlx::query("UPDATE runs SET attempt = -1")
        .execute(&mut db)
        .await
        .expect("damage the runs");
    db.close().await.expect("close");

    let reply = server.get(&format!("/api/flow-runs/{}", run.flow)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error_code(), "internal");
    assert_eq!(reply.error_message(), "internal error", "nothing leaks");
    let logged = errors.0.lock().expect("errors").clone();
    assert!(
        logged
            .iter()
            .any(|e| e.contains("corrupt row: attempt -1 is out of range")),
        "the cause must be logged as an error: {logged:?}"
    );
    server.finish().await;
}
