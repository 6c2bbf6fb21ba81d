//! A time budget on the listings that may scan every run: a `search` (a substring of the name,
//! which no index serves) or a `tag` filter that matches few runs walks the whole table to fill
//! a page. Such a listing gets at most its budget of database time; past it the statement is
//! stopped (SQLite: a progress handler that interrupts it; PostgreSQL: `SET LOCAL
//! statement_timeout` in its transaction) and the caller gets [`StoreError::OverBudget`], so
//! one broad filter cannot hold a connection others wait for.

use super::dialect::Dialect;
use super::{Page, PageRequest, RunFilter, RunRecord, Store, StoreError};
use futures::future::BoxFuture;
use sqlx::QueryBuilder;
use std::time::Duration;

/// A database whose statements can be stopped after a time budget.
pub(crate) trait Budgeted: Dialect {
    /// Every row of `query`, or [`StoreError::OverBudget`] when it runs longer than `budget`.
    fn fetch_all_within<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
        budget: Duration,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, StoreError>>;
}

/// SQLite virtual-machine instructions between two looks at the clock: about a few
/// microseconds of work, so the budget is kept to well within a millisecond.
#[cfg(feature = "sqlite")]
const PROGRESS_OPS: i32 = 1000;

#[cfg(feature = "sqlite")]
impl Budgeted for sqlx::Sqlite {
    fn fetch_all_within<'c>(
        conn: &'c mut sqlx::SqliteConnection,
        query: &'c mut QueryBuilder<sqlx::Sqlite>,
        budget: Duration,
    ) -> BoxFuture<'c, Result<Vec<sqlx::sqlite::SqliteRow>, StoreError>> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        Box::pin(async move {
            let deadline = std::time::Instant::now() + budget;
            let over = Arc::new(AtomicBool::new(false));
            let flag = over.clone();
            conn.lock_handle()
                .await?
                .set_progress_handler(PROGRESS_OPS, move || {
                    let within = std::time::Instant::now() < deadline;
                    if !within {
                        flag.store(true, Ordering::Relaxed);
                    }
                    within
                });
            let rows = sqlx::Executor::fetch_all(&mut *conn, query.build()).await;
            // The connection goes back to the pool: without the handler.
            if let Ok(mut handle) = conn.lock_handle().await {
                handle.remove_progress_handler();
            }
            match rows {
                Err(_) if over.load(Ordering::Relaxed) => Err(StoreError::OverBudget(budget)),
                other => Ok(other?),
            }
        })
    }
}

#[cfg(feature = "postgres")]
impl Budgeted for sqlx::Postgres {
    fn fetch_all_within<'c>(
        conn: &'c mut sqlx::PgConnection,
        query: &'c mut QueryBuilder<sqlx::Postgres>,
        budget: Duration,
    ) -> BoxFuture<'c, Result<Vec<sqlx::postgres::PgRow>, StoreError>> {
        Box::pin(async move {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            // A whole number of milliseconds, at least 1 (0 would switch the timeout off).
            let millis = budget.as_millis().clamp(1, i32::MAX as u128);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL statement_timeout = {millis}"
            )))
            .execute(&mut *tx)
            .await?;
            let rows = match sqlx::Executor::fetch_all(&mut *tx, query.build()).await {
                Ok(rows) => rows,
                // 57014 query_canceled: the statement timeout fired.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014") => {
                    return Err(StoreError::OverBudget(budget));
                }
                Err(other) => return Err(other.into()),
            };
            tx.commit().await?;
            Ok(rows)
        })
    }
}

impl Store {
    /// [`super::Backend::list_flow_runs`] within `budget` of database time:
    /// [`StoreError::OverBudget`] past it.
    pub async fn list_flow_runs_within(
        &self,
        filter: &RunFilter,
        page: &PageRequest,
        budget: Duration,
    ) -> Result<Page<RunRecord>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            super::Db::Sqlite(b) => {
                super::queries::list_flow_runs_within(b.pool(), filter, page, budget).await
            }
            #[cfg(feature = "postgres")]
            super::Db::Postgres(b) => {
                super::queries::list_flow_runs_within(b.pool(), filter, page, budget).await
            }
        }
    }
}
