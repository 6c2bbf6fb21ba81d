//! API keys created at runtime, in the `api_keys` table (migration 0008): the name, the BLAKE3
//! digest of the secret (never the secret), the scopes as the `--api-key` flag spells them,
//! who created the key and when, when it was last used (written at most once a minute:
//! [`LAST_USED_EVERY`]), and when it was revoked. Every replica reads the active keys
//! into memory (`crate::auth::KeyRing`); these are the queries behind it and behind
//! `/api/v1/keys`.

use super::dialect::{Dialect, PushBind, begin_write, xact_lock};
use super::queries::{BulkWrite, Columns, Maintenance, Written};
use super::{Db, Store, StoreError, unexpected};
use chrono::{DateTime, Utc};
use flowkit_wire::api::keys::MAX_STORED_KEYS;
use sqlx::{Pool, QueryBuilder};
use uuid::Uuid;

/// How often a key's `last_used` is written at most: a key used all the time costs one write
/// a minute, not one per request (so `last_used` may be up to a minute old).
pub const LAST_USED_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// The name of the lock creating a key holds while it counts the active keys (PostgreSQL:
/// concurrent creates on several connections or replicas wait for each other, so
/// [`MAX_STORED_KEYS`] holds).
const KEYS_LOCK: i64 = 0x666b_6170_696b_6579; // "fkapikey"

/// A stored key as read back: everything but a secret, which is never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique among the active keys.
    pub name: String,
    /// BLAKE3 of its secret.
    pub digest: [u8; 32],
    /// Its scopes, comma-separated as in `--api-key` (`read,trigger=train/nightly`).
    pub scopes: String,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// When it was last used, to [`LAST_USED_EVERY`]; `None` if never.
    pub last_used: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What creating a key did.
#[derive(Debug)]
pub enum KeyCreated {
    /// Stored.
    Created,
    /// An active key already has this name.
    NameTaken,
    /// [`MAX_STORED_KEYS`] keys are active already.
    Full,
}

/// The active keys, oldest first: at most [`MAX_STORED_KEYS`].
pub(crate) async fn active_keys<D: Dialect>(pool: &Pool<D>) -> Result<Vec<StoredKey>, StoreError> {
    let mut q = QueryBuilder::new(
        "SELECT id, name, digest, scopes, created, created_by, last_used FROM api_keys \
         WHERE revoked_at IS NULL ORDER BY created, id LIMIT ",
    );
    q.bind(MAX_STORED_KEYS as i64);
    let rows = D::fetch_all(&mut *pool.acquire().await?, &mut q).await?;
    rows.iter().map(stored_key::<D>).collect()
}

fn stored_key<D: Dialect>(row: &D::Row) -> Result<StoredKey, StoreError> {
    let c = Columns::<D>(row);
    let digest: Vec<u8> = c.get("digest")?;
    Ok(StoredKey {
        id: c.get("id")?,
        name: c.get("name")?,
        digest: digest
            .try_into()
            .map_err(|_| super::rows::corrupt("api_keys.digest is not 32 bytes".to_string()))?,
        scopes: c.get("scopes")?,
        created: c.instant("created")?,
        created_by: c.get("created_by")?,
        last_used: c.opt_instant("last_used")?,
    })
}

/// Stores `key` unless an active key has its name or [`MAX_STORED_KEYS`] are active.
pub(crate) async fn create<D: BulkWrite>(
    conn: &mut D::Connection,
    key: &StoredKey,
) -> Result<KeyCreated, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    // Without it, two creates on PostgreSQL could both count MAX_STORED_KEYS - 1 and insert.
    xact_lock::<D>(&mut tx, KEYS_LOCK).await?;
    let mut q = QueryBuilder::new("SELECT count(*) AS n, coalesce(sum(CASE WHEN name = ");
    q.bind(D::text(&key.name))
        .push(" THEN 1 ELSE 0 END), 0) AS taken FROM api_keys WHERE revoked_at IS NULL");
    let row = D::fetch_optional(&mut *tx, &mut q).await?;
    let (active, taken) = match &row {
        Some(row) => {
            let c = Columns::<D>(row);
            (c.get::<i64>("n")?, c.get::<i64>("taken")?)
        }
        None => (0, 0),
    };
    if taken > 0 {
        return Ok(KeyCreated::NameTaken);
    }
    if active >= MAX_STORED_KEYS as i64 {
        return Ok(KeyCreated::Full);
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO api_keys (id, name, digest, scopes, created, created_by) VALUES (",
    );
    q.bind(key.id)
        .push(", ")
        .bind(D::text(&key.name))
        .push(", ")
        .bind(key.digest.to_vec())
        .push(", ")
        .bind(D::text(&key.scopes))
        .push(", ")
        .bind_instant(key.created)
        .push(", ")
        .bind(D::text(&key.created_by))
        .push(")");
    match D::execute(&mut tx, &mut q).await {
        Ok(_) => {}
        // Another replica stored the name between the check and the insert (PostgreSQL).
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            return Ok(KeyCreated::NameTaken);
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(KeyCreated::Created)
}

/// Revokes the active key named `key`, or whose id is `key`, at `at`; the key revoked.
pub(crate) async fn revoke<D: BulkWrite>(
    conn: &mut D::Connection,
    key: &str,
    at: DateTime<Utc>,
) -> Result<Option<StoredKey>, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new(
        "SELECT id, name, digest, scopes, created, created_by, last_used FROM api_keys \
         WHERE revoked_at IS NULL AND (name = ",
    );
    q.bind(D::text(key));
    if let Ok(id) = Uuid::parse_str(key) {
        q.push(" OR id = ").bind(id);
    }
    q.push(") ORDER BY created LIMIT 1");
    q.push(D::FOR_UPDATE);
    let Some(row) = D::fetch_optional(&mut *tx, &mut q).await? else {
        return Ok(None);
    };
    let found = stored_key::<D>(&row)?;
    let mut q = QueryBuilder::new("UPDATE api_keys SET revoked_at = ");
    q.bind_instant(at)
        .push(" WHERE revoked_at IS NULL AND id = ")
        .bind(found.id);
    D::execute(&mut tx, &mut q).await?;
    tx.commit().await?;
    Ok(Some(found))
}

/// Sets `last_used` of the active key whose digest is `digest` to `at`, unless it was set less
/// than [`LAST_USED_EVERY`] before `at` (then nothing is written: several replicas noting
/// the same key write it once a minute together). Returns the rows changed (0 or 1).
pub(crate) async fn touch<D: BulkWrite>(
    conn: &mut D::Connection,
    digest: &[u8; 32],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("UPDATE api_keys SET last_used = ");
    q.bind_instant(at)
        .push(" WHERE digest = ")
        .bind(digest.to_vec())
        .push(" AND revoked_at IS NULL AND (last_used IS NULL OR last_used <= ")
        .bind_instant(at - LAST_USED_EVERY)
        .push(")");
    let changed = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(changed)
}

impl Store {
    /// The active stored keys, oldest first (at most [`MAX_STORED_KEYS`]).
    pub async fn active_api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => active_keys(b.pool()).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => active_keys(b.pool()).await,
        }
    }

    /// Stores a new key (see [`KeyCreated`]).
    pub async fn create_api_key(&self, key: StoredKey) -> Result<KeyCreated, StoreError> {
        match self.write(Maintenance::CreateKey(Box::new(key))).await? {
            Written::KeyCreated(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes the active key named `key` (or whose id it is) as of `at`; the key, or `None`
    /// when no active key has that name or id.
    pub async fn revoke_api_key(
        &self,
        key: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError> {
        let task = Maintenance::RevokeKey {
            key: key.to_string(),
            at,
        };
        match self.write(task).await? {
            Written::KeyRevoked(revoked) => Ok(revoked),
            other => Err(unexpected(other)),
        }
    }

    /// Notes that the stored key whose secret has the digest `digest` was used at `at`:
    /// written unless its `last_used` is less than [`LAST_USED_EVERY`] older. Whether it was
    /// written.
    pub async fn touch_api_key(
        &self,
        digest: [u8; 32],
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match self.write(Maintenance::TouchKey { digest, at }).await? {
            Written::Count(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    async fn write(&self, task: Maintenance) -> Result<Written, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(b) => b.maintain(task).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(b) => b.maintain(task).await,
        }
    }
}
