//! A throwaway database for the benchmarks: created in the PostgreSQL cluster an admin URL
//! points to, dropped by the future it comes with. Included by each benchmark example
//! (`#[path = "support/pg_database.rs"] mod pg_database;`).

use futures::future::BoxFuture;

/// A fresh database named `{prefix}_{uuid}` in the cluster at `admin_url`: its URL (the admin
/// URL's host, credentials and query with the new name) and a future that drops it.
#[cfg(feature = "postgres")]
pub async fn pg_database(
    admin_url: &str,
    prefix: &str,
) -> anyhow::Result<(String, BoxFuture<'static, anyhow::Result<()>>)> {
    use anyhow::Context as _;
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .context("connect to the PostgreSQL cluster given for the benchmark")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let url = with_database(admin_url, &name);
    let drop = Box::pin(async move {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    });
    Ok((url, drop))
}

/// Without PostgreSQL in this build: says how to get it.
#[cfg(not(feature = "postgres"))]
pub async fn pg_database(
    _admin_url: &str,
    _prefix: &str,
) -> anyhow::Result<(String, BoxFuture<'static, anyhow::Result<()>>)> {
    anyhow::bail!(
        "a PostgreSQL URL was given, but this build has no PostgreSQL: add `--features postgres`"
    )
}

/// `url` with its database replaced by `db` (its query, e.g. `?sslmode=disable`, kept).
#[cfg(feature = "postgres")]
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = base[scheme_end..].split('/').next().unwrap_or_default();
    format!("{}{host}/{db}{query}", &base[..scheme_end])
}
