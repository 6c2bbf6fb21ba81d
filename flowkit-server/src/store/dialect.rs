//! What differs between the SQL of the backends, and nothing else.
//!
//! The queries in [`super::queries`] are written once, with sqlx's [`QueryBuilder`] (which
//! writes `?` or `$n` placeholders as the backend wants), generic over a [`Dialect`]. A dialect
//! is the sqlx database type itself (`sqlx::Sqlite`, `sqlx::Postgres`), extended with the few
//! things the two databases spell differently:
//!
//! | | SQLite | PostgreSQL |
//! |---|---|---|
//! | instants | `INTEGER` µs since the epoch | `timestamptz` (µs: `extract(epoch …)`) |
//! | tags, upstream ids | JSON text | `text[]`, `uuid[]` (read as `to_json(…)::text`) |
//! | JSON values | `TEXT` | `json` (read as `…::text`) |
//! | tag containment | `EXISTS (… json_each …)` | `tags @> ARRAY[…]` (GIN index) |
//! | binding JSON, tags | text | `$n::json`, `$n::text[]` |
//! | greatest, least of two | `max`, `min` | `GREATEST`, `LEAST` |
//! | literal substring | `instr` | `strpos` |
//! | text | any | no NUL character |
//! | a write transaction | `BEGIN IMMEDIATE` (take the lock now) | `BEGIN` |
//!
//! The helper traits [`Bind`], [`Get`] and [`Run`] exist only to carry sqlx's bounds
//! ("this Rust type encodes for this database", "a connection of it executes queries"): Rust
//! implies a trait's supertraits wherever the trait is used, but not bounds on other types, so
//! naming them as supertraits of [`Dialect`] lets generic code say `D: Dialect` and nothing
//! more.

use super::StoreError;
#[cfg(feature = "sqlite")]
use super::rows::{from_micros, micros};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::database::HasStatementCache;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};
use uuid::Uuid;

/// A sqlx database the store's queries run on; see the module documentation.
pub(crate) trait Dialect:
    Database
    + Bind<Uuid>
    + Bind<String>
    + Bind<i64>
    + Bind<Option<String>>
    + Bind<Option<i64>>
    + Bind<Option<Uuid>>
    + Bind<Vec<u8>>
    + Get<Uuid>
    + Get<Vec<u8>>
    + Get<Option<Uuid>>
    + Get<String>
    + Get<Option<String>>
    + Get<i64>
    + Get<Option<i64>>
    + Run
{
    /// Starts the transaction of a write.
    const BEGIN_WRITE: &'static str;
    /// The function giving the greater of two values.
    const GREATEST: &'static str;
    /// The function giving the lesser of two values.
    const LEAST: &'static str;
    /// `POSITION(haystack, needle)`: the 1-based position of a literal substring, 0 if absent.
    const POSITION: &'static str;
    /// Appended to a `SELECT` of rows a write transaction then changes, so that other
    /// transactions pick other rows (PostgreSQL; SQLite has one writer and needs none).
    const SKIP_LOCKED: &'static str;
    /// Appended to a `SELECT` of rows to lock until the end of the transaction.
    const FOR_UPDATE: &'static str;
    /// A statement that wakes the waiting claims of every server replica at commit
    /// (PostgreSQL `NOTIFY`); `None` where one process owns the database (SQLite).
    const NOTIFY_RUNS: Option<&'static str>;
    /// A query of the database's clock, as a column `now` (PostgreSQL: the transaction's
    /// start); `None` where the database is a file this process writes alone (SQLite: the
    /// process's clock is the database's).
    const NOW_QUERY: Option<&'static str>;
    /// The start of a statement that takes a lock held until the end of the transaction,
    /// named by the integer bound after it (then `)`): PostgreSQL's
    /// `pg_advisory_xact_lock(`. `None` where one writer runs every write (SQLite).
    const XACT_LOCK: Option<&'static str>;

    /// Text as the backend can store it.
    fn text(text: &str) -> String;
    /// Binds an instant.
    fn push_instant(query: &mut QueryBuilder<Self>, at: DateTime<Utc>);
    /// Binds an instant or NULL, typed as an instant (a `VALUES` list needs its type even
    /// where every row is NULL).
    fn push_opt_instant(query: &mut QueryBuilder<Self>, at: Option<DateTime<Utc>>);
    /// Binds the current instant (a write's `last_seen`).
    fn push_now(query: &mut QueryBuilder<Self>) {
        Self::push_instant(query, Utc::now());
    }
    /// Reads an instant column.
    fn instant(row: &Self::Row, column: &str) -> Result<DateTime<Utc>, StoreError>;
    /// Reads a nullable instant column.
    fn opt_instant(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// SQL for the instant column `column` as integer microseconds since the epoch.
    fn micros_of(column: &str) -> String;
    /// SQL for the JSON-valued (or array) column `column` as JSON text, named `column`.
    fn json_text(column: &str) -> String;
    /// Binds JSON text for a JSON-valued column.
    fn push_json(query: &mut QueryBuilder<Self>, json: String);
    /// Binds a list of strings for a tags column (JSON text on SQLite, `text[]` on PostgreSQL).
    fn push_strings(query: &mut QueryBuilder<Self>, values: &[String]) -> Result<(), StoreError>;
    /// Appends ` AND` "the run's tags contain `tag`" to a query on `runs`.
    fn push_has_tag(query: &mut QueryBuilder<Self>, tag: &str);
    /// Appends ` AND` "the run's tags do not contain `tag`" to a query on `runs`.
    fn push_lacks_tag(query: &mut QueryBuilder<Self>, tag: &str);
    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// `query.bind(value)` and `query.bind_instant(at)`: [`QueryBuilder::push_bind`] for code
/// generic over the dialect.
pub(crate) trait PushBind<D: Dialect> {
    /// Appends a placeholder and binds `value` to it.
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        D: Bind<T>;
    /// Appends a placeholder and binds the instant `at` to it.
    fn bind_instant(&mut self, at: DateTime<Utc>) -> &mut Self;
    /// Appends a placeholder and binds the instant `at`, or NULL, to it.
    fn bind_opt_instant(&mut self, at: Option<DateTime<Utc>>) -> &mut Self;
}

impl<D: Dialect> PushBind<D> for QueryBuilder<D> {
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        D: Bind<T>,
    {
        D::push(self, value);
        self
    }

    fn bind_instant(&mut self, at: DateTime<Utc>) -> &mut Self {
        D::push_instant(self, at);
        self
    }

    fn bind_opt_instant(&mut self, at: Option<DateTime<Utc>>) -> &mut Self {
        D::push_opt_instant(self, at);
        self
    }
}

/// Binding a `T`: a database whose driver encodes it.
pub(crate) trait Bind<T>: Database {
    /// Appends a placeholder to `query` and binds `value` to it.
    fn push(query: &mut QueryBuilder<Self>, value: T);
}

impl<DB: Database, T> Bind<T> for DB
where
    T: for<'t> Encode<'t, DB> + Type<DB>,
{
    fn push(query: &mut QueryBuilder<Self>, value: T) {
        query.push_bind(value);
    }
}

/// Reading a `T`: a database whose driver decodes it.
pub(crate) trait Get<T>: Database {
    /// The column named `column` of `row`.
    fn get(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Get<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn get(row: &Self::Row, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(row, column)
    }
}

/// Starts the transaction of a write (`BEGIN_WRITE`), or a savepoint when the connection is
/// already in one: the SQLite writer runs several writes in one transaction (group commit),
/// each in a savepoint of its own so that a failing write is undone alone.
pub(crate) async fn begin_write<D: Dialect>(
    conn: &mut D::Connection,
) -> Result<sqlx::Transaction<'_, D>, sqlx::Error> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        conn.begin().await
    } else {
        conn.begin_with(sqlx::AssertSqlSafe(D::BEGIN_WRITE)).await
    }
}

/// Takes the transaction-scoped lock `name` ([`Dialect::XACT_LOCK`]; nothing on SQLite, whose
/// one writer serializes every write): two writes that count rows and then insert one under
/// a cap hold it, so that concurrent ones cannot both see room for the last row.
pub(crate) async fn xact_lock<D: Dialect>(
    tx: &mut D::Connection,
    name: i64,
) -> Result<(), sqlx::Error> {
    if let Some(sql) = D::XACT_LOCK {
        let mut q = QueryBuilder::new(sql);
        q.bind(name).push(")");
        D::fetch_optional(tx, &mut q).await?;
    }
    Ok(())
}

/// Running a query built by a [`QueryBuilder`] on one connection.
pub(crate) trait Run: Database {
    /// Every row of the result.
    fn fetch_all<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;
    /// Every row of the result of a statement whose text varies with its arguments (see
    /// [`Run::execute_once`]).
    fn fetch_all_once<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;
    /// The first row of the result, if any.
    fn fetch_optional<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>>;
    /// Runs a statement.
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>>;
    /// Runs a statement whose text varies with its arguments (lists of ids), so it is not
    /// worth keeping prepared in the connection's statement cache.
    fn execute_once<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>>;
}

impl<DB: Database + HasStatementCache> Run for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    fn fetch_all<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
        conn.fetch_all(query.build())
    }

    fn fetch_all_once<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
        conn.fetch_all(query.build().persistent(false))
    }

    fn fetch_optional<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>> {
        conn.fetch_optional(query.build())
    }

    fn execute<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>> {
        conn.execute(query.build())
    }

    fn execute_once<'c>(
        conn: &'c mut Self::Connection,
        query: &'c mut QueryBuilder<Self>,
    ) -> BoxFuture<'c, Result<Self::QueryResult, sqlx::Error>> {
        conn.execute(query.build().persistent(false))
    }
}

#[cfg(feature = "sqlite")]
impl Dialect for sqlx::Sqlite {
    // Take the write lock now (waiting up to busy_timeout for another process) rather than
    // fail when a read transaction turns into a write.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const GREATEST: &'static str = "max";
    const LEAST: &'static str = "min";
    const POSITION: &'static str = "instr";
    const SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const NOTIFY_RUNS: Option<&'static str> = None;
    const NOW_QUERY: Option<&'static str> = None;
    const XACT_LOCK: Option<&'static str> = None;

    fn text(text: &str) -> String {
        text.to_string()
    }

    fn push_instant(query: &mut QueryBuilder<Self>, at: DateTime<Utc>) {
        query.push_bind(micros(at));
    }

    fn push_opt_instant(query: &mut QueryBuilder<Self>, at: Option<DateTime<Utc>>) {
        query.push_bind(at.map(micros));
    }

    fn instant(row: &Self::Row, column: &str) -> Result<DateTime<Utc>, StoreError> {
        from_micros(sqlx::Row::try_get(row, column)?)
    }

    fn opt_instant(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::Row::try_get::<Option<i64>, _>(row, column)?
            .map(from_micros)
            .transpose()
    }

    fn micros_of(column: &str) -> String {
        column.to_string()
    }

    fn json_text(column: &str) -> String {
        column.to_string()
    }

    fn push_json(query: &mut QueryBuilder<Self>, json: String) {
        query.push_bind(json);
    }

    fn push_strings(query: &mut QueryBuilder<Self>, values: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(values)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))?;
        query.push_bind(json);
        Ok(())
    }

    fn push_has_tag(query: &mut QueryBuilder<Self>, tag: &str) {
        // Membership tested on the rows the list query walks anyway (see the migration).
        query
            .push(" AND EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ")
            .push_bind(tag.to_string())
            .push(")");
    }

    fn push_lacks_tag(query: &mut QueryBuilder<Self>, tag: &str) {
        query
            .push(" AND NOT EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ")
            .push_bind(tag.to_string())
            .push(")");
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl Dialect for sqlx::Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const GREATEST: &'static str = "GREATEST";
    const LEAST: &'static str = "LEAST";
    const POSITION: &'static str = "strpos";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const NOTIFY_RUNS: Option<&'static str> = Some("SELECT pg_notify('flowkit_runs', '')");
    const NOW_QUERY: Option<&'static str> = Some("SELECT now() AS now");
    const XACT_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(");

    /// PostgreSQL text cannot hold NUL characters; they are stored as U+FFFD.
    fn text(text: &str) -> String {
        if text.contains('\0') {
            text.replace('\0', "\u{fffd}")
        } else {
            text.to_string()
        }
    }

    fn push_instant(query: &mut QueryBuilder<Self>, at: DateTime<Utc>) {
        query.push_bind(at);
    }

    fn push_opt_instant(query: &mut QueryBuilder<Self>, at: Option<DateTime<Utc>>) {
        query.push_bind(at);
    }

    // The database's clock, like every other instant PostgreSQL decides.
    fn push_now(query: &mut QueryBuilder<Self>) {
        query.push("now()");
    }

    fn instant(row: &Self::Row, column: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(sqlx::Row::try_get(row, column)?)
    }

    fn opt_instant(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::Row::try_get(row, column)?)
    }

    fn micros_of(column: &str) -> String {
        // `extract` gives an exact numeric (PostgreSQL 14 and later): no rounding.
        format!("(extract(epoch FROM {column}) * 1000000)::int8")
    }

    fn json_text(column: &str) -> String {
        // Arrays become JSON arrays; a json value comes back as the text it was stored as.
        format!("to_json({column})::text AS {column}")
    }

    fn push_json(query: &mut QueryBuilder<Self>, json: String) {
        query.push_bind(json).push("::json");
    }

    fn push_strings(query: &mut QueryBuilder<Self>, values: &[String]) -> Result<(), StoreError> {
        let values: Vec<String> = values.iter().map(|v| Self::text(v)).collect();
        query.push_bind(values).push("::text[]");
        Ok(())
    }

    fn push_has_tag(query: &mut QueryBuilder<Self>, tag: &str) {
        // `@>` is what the GIN index runs_flow_tags answers.
        query
            .push(" AND tags @> ARRAY[")
            .push_bind(Self::text(tag))
            .push("]::text[]");
    }

    fn push_lacks_tag(query: &mut QueryBuilder<Self>, tag: &str) {
        query
            .push(" AND NOT (tags @> ARRAY[")
            .push_bind(Self::text(tag))
            .push("]::text[])");
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
