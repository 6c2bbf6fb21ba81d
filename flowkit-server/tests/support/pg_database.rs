//! A database of its own for a test, in the PostgreSQL cluster of `FLOWKIT_TEST_PG_URL`.

/// A fresh database on the PostgreSQL server of `admin_url`; its URL.
pub async fn create_database(admin_url: &str, database: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to FLOWKIT_TEST_PG_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{database}\""
    )))
    .execute(&mut admin)
    .await
    .expect("create the test database");
    let _ = admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{database}{query}")
}

/// Drops the database `database` (its connections are closed first); errors are ignored.
pub async fn drop_database(admin_url: &str, database: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}
