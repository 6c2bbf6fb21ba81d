//! API keys managed at runtime (scope `admin`): `POST /keys` creates one and answers its
//! secret once, `GET /keys` lists them (never a secret or a digest), `DELETE /keys/{key}`
//! revokes one. Keys given to the server by its `--api-key` flags are listed too
//! ([`KeySource::Startup`]) and cannot be revoked over the API.
//!
//! ```
//! use flowkit_wire::api::keys::CreateKey;
//!
//! let body: CreateKey = serde_json::from_str(
//!     r#"{"name": "team-a", "scopes": ["read", "trigger=train/nightly"]}"#,
//! ).unwrap();
//! assert_eq!(body.scopes.len(), 2);
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most keys stored and active at once (revoked ones do not count); one more is refused
/// with 409 `conflict`. It bounds `GET /keys` and the key set every replica keeps in memory.
pub const MAX_STORED_KEYS: usize = 1000;

/// The longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 64;

/// The most entries in [`CreateKey::scopes`].
pub const MAX_SCOPE_ENTRIES: usize = 64;

/// What every secret the server generates starts with, so a leaked one is easy to recognise
/// (and to search for in logs and repositories).
pub const SECRET_PREFIX: &str = "fk_";

/// The body of `POST /keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The key's name, unique among the active keys (startup ones included): letters, digits,
    /// `-`, `_`, `.`, `@`; 1 to [`MAX_KEY_NAME_CHARS`] characters. Runs it creates record
    /// `created_by` = `key:NAME`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._@-]+$")
    )]
    pub name: String,
    /// Its scopes, as the `--api-key` flag spells them: `read`, `report`, `trigger`,
    /// `worker`, `admin`, or a scope limited to one deployment, `trigger=FLOW/NAME` /
    /// `worker=FLOW/NAME`. 1 to [`MAX_SCOPE_ENTRIES`] entries.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_items = 1,
            max_items = 64,
            inline,
            value_type = Vec<ScopeEntry>
        )
    )]
    pub scopes: Vec<String>,
}

/// One entry of [`CreateKey::scopes`], for the OpenAPI document: a scope, or `trigger` /
/// `worker` limited to one deployment (`FLOW/NAME`, each part as deployment names allow).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^\s*(read|report|trigger|worker|admin|(trigger|worker)=[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)\s*$"
)]
pub struct ScopeEntry(pub String);

/// Where a key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// Created over the API (or `flowkit keys create`), stored hashed in the database, seen by
    /// every replica; revocable.
    Stored,
    /// Given by an `--api-key` flag (or `FLOWKIT_API_KEYS`) when this replica started; not
    /// revocable over the API.
    Startup,
}

/// A key as listed: never its secret or digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// The stored key's id; `None` for a startup key.
    pub id: Option<Uuid>,
    /// Its name.
    pub name: String,
    /// Its scopes, as given when it was created (see [`CreateKey::scopes`]).
    pub scopes: Vec<String>,
    /// Where it comes from.
    pub source: KeySource,
    /// When it was created; `None` for a startup key.
    pub created: Option<DateTime<Utc>>,
    /// Who created it (`key:NAME`, `local` on a server without keys); `None` for a startup
    /// key.
    pub created_by: Option<String>,
    /// When a stored key last let a request in, to within a minute (the server writes it at
    /// most once a minute per key); `None` if never, and for a startup key.
    #[serde(default)]
    pub last_used: Option<DateTime<Utc>>,
}

/// The answer of `POST /keys`: the key, and its secret, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The key.
    pub key: KeyInfo,
    /// The secret to send as `Authorization: Bearer SECRET`: [`SECRET_PREFIX`] and 43
    /// random characters. The server keeps only its digest: it cannot show it again.
    pub secret: String,
}

/// The answer of `GET /keys`: the startup keys, then the active stored keys oldest first (at
/// most [`MAX_STORED_KEYS`]). Revoked keys are not listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyInfo>,
}

/// The answer of `DELETE /keys/{key}`: the key revoked, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedKey {
    /// The key.
    pub key: KeyInfo,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
}
