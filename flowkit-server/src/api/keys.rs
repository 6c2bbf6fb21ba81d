//! `POST /keys`, `GET /keys`, `DELETE /keys/{key}` (scope `admin`): API keys created, listed
//! and revoked at runtime. A key is stored as the BLAKE3 digest of its secret, which the
//! server generates and answers once; every replica picks a new key or a revocation up within
//! the bound of [`crate::key_ring`] (a revoked key stops working everywhere within 5 s).
//!
//! The name and scopes follow the rules of the `--api-key` flag exactly (the same parser:
//! [`ApiKey::from_parts`]). Keys given by flags are listed (`source: startup`) and cannot be
//! revoked here: they go when the replica restarts without them.
//!
//! A server without any key allows every request (on loopback only): the first key it creates
//! must have the `admin` scope, since keys are required from then on.

use crate::AppState;
use crate::auth::{ApiKey, Caller, Scope, check_key_name, digest};
use crate::error::{ApiError, ErrorBody, FieldError, StoreFailures};
use crate::store::api_keys::{KeyCreated, StoredKey};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use chrono::Utc;
use flowkit_wire::api::error::ErrorCode;
use flowkit_wire::api::keys::{
    CreateKey, CreatedKey, KeyInfo, KeyList, KeySource, MAX_SCOPE_ENTRIES, MAX_STORED_KEYS,
    RevokedKey, SECRET_PREFIX,
};
use uuid::Uuid;

use super::extract::ApiJson;

/// Random characters of a generated secret (base62: about 256 bits).
const SECRET_CHARS: usize = 43;

/// Creates a key and answers its secret, this once.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, and its secret (shown this once: only its digest is stored). Every replica accepts it within 250 ms of its creation (this one at once)", body = CreatedKey),
        (status = 400, description = "`invalid_json`: the body is not JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope; `forbidden_origin`: a web page of another site", body = ErrorBody),
        (status = 409, description = "`conflict`: an active key (stored, or given by a startup flag) has this name, or 1000 stored keys are active", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over the server's limit", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_body`: a bad name or scope, each in `details` at its JSON pointer (`/name`, `/scopes/0`); the rules are those of `--api-key`", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let secret = generate_secret()?;
    let (key, scopes) = check(&body, &secret)?;
    if caller.key_name.is_none() && !key.scopes().allows(Scope::Admin) {
        return Err(ApiError::invalid_fields(vec![FieldError {
            pointer: "/scopes".to_string(),
            message: "this server has no API key yet, and keys are required as soon as one \
                      exists: its first key must have the `admin` scope, or no one could manage \
                      keys afterwards"
                .to_string(),
        }]));
    }
    if state.settings().api_keys.has_name(&body.name) {
        return Err(conflict(format!(
            "a key given by a startup flag (--api-key) is named {:?}: choose another name",
            body.name
        )));
    }
    let row = StoredKey {
        id: Uuid::now_v7(),
        name: body.name.clone(),
        digest: digest(&secret),
        scopes: scopes.join(","),
        created: Utc::now(),
        created_by: caller.created_by(&headers),
        last_used: None,
    };
    match state.store().create_api_key(row.clone()).await? {
        KeyCreated::Created => {}
        KeyCreated::NameTaken => {
            return Err(conflict(format!(
                "an active key is named {:?}: revoke it first, or choose another name",
                body.name
            )));
        }
        KeyCreated::Full => {
            return Err(conflict(format!(
                "{MAX_STORED_KEYS} stored keys are active, the most there can be: revoke some first"
            )));
        }
    }
    state.key_ring().reload_now(state.store()).await?;
    tracing::info!(key = %row.name, by = %row.created_by, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: info(&row),
            secret,
        }),
    ))
}

/// Lists the keys: the startup keys of this replica, then the active stored keys, oldest first
/// (at most 1000), each with when it was last used (to within a minute). Never a secret or a
/// digest.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    responses(
        (status = 200, description = "The keys; a stored key's `last_used` is when it last let a request in, to within a minute", body = KeyList),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<KeyList>, ApiError> {
    let mut keys: Vec<KeyInfo> = state
        .settings()
        .api_keys
        .iter()
        .map(|key| KeyInfo {
            id: None,
            name: key.name().to_string(),
            scopes: key.scope_list(),
            source: KeySource::Startup,
            created: None,
            created_by: None,
            last_used: None,
        })
        .collect();
    let stored = state.store().active_api_keys().await?;
    keys.extend(stored.iter().map(info));
    Ok(Json(KeyList { keys }))
}

/// Revokes a stored key: every replica refuses it within 5 s (this one at once).
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{key}",
    tag = "keys",
    params(("key" = String, Path, description = "The key's name, or its id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Ignored: send `{}`. The JSON content type is what the server requires (415 without it, so that no web page of another site can revoke a key); the body itself may be empty"),
    responses(
        (status = 200, description = "The key revoked", body = RevokedKey),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope; `forbidden_origin`: a web page of another site", body = ErrorBody),
        (status = 404, description = "No active stored key has this name or id", body = ErrorBody),
        (status = 409, description = "`conflict`: the key was given by a startup flag (--api-key), which the API cannot revoke: restart the replicas without it", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: no `Content-Type: application/json` (send `{}`); a web page of another site could send that", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Json<RevokedKey>, ApiError> {
    let revoked_at = Utc::now();
    let revoked = state.store().revoke_api_key(&key, revoked_at).await?;
    let Some(row) = revoked else {
        if state.settings().api_keys.has_name(&key) {
            return Err(conflict(format!(
                "key {key:?} was given by a startup flag (--api-key): the API cannot revoke it; \
                 restart the server without that flag"
            )));
        }
        return Err(ApiError::not_found(format!(
            "no active stored key is named {key:?} or has that id"
        )));
    };
    state.key_ring().reload_now(state.store()).await?;
    tracing::info!(
        key = %row.name,
        by = caller.key_name.as_deref().unwrap_or("local"),
        "API key revoked"
    );
    Ok(Json(RevokedKey {
        key: info(&row),
        revoked_at,
    }))
}

/// Checks the body with the parser of `--api-key`: the key it describes, and its scope
/// entries trimmed; 422 at each field at fault.
fn check(body: &CreateKey, secret: &str) -> Result<(ApiKey, Vec<String>), ApiError> {
    let mut errors = Vec::new();
    if let Err(why) = check_key_name(&body.name) {
        errors.push(FieldError {
            pointer: "/name".to_string(),
            message: why,
        });
    }
    if body.scopes.is_empty() || body.scopes.len() > MAX_SCOPE_ENTRIES {
        errors.push(FieldError {
            pointer: "/scopes".to_string(),
            message: format!("give 1 to {MAX_SCOPE_ENTRIES} scopes"),
        });
    }
    let mut scopes = Vec::with_capacity(body.scopes.len());
    for (i, entry) in body.scopes.iter().enumerate().take(MAX_SCOPE_ENTRIES) {
        let entry = entry.trim();
        // Each entry is one scope: `,` would make it several, `:` would break the flag's
        // syntax; the parser below checks the rest.
        let problem = if entry.is_empty() || entry.contains([',', ':']) {
            Some(format!(
                "{entry:?} is not a scope: read, report, trigger, worker, admin, \
                 trigger=FLOW/NAME or worker=FLOW/NAME"
            ))
        } else {
            ApiKey::from_parts("check", secret, entry).err()
        };
        match problem {
            Some(message) => errors.push(FieldError {
                pointer: format!("/scopes/{i}"),
                message: message.replace("key \"check\": ", ""),
            }),
            None => scopes.push(entry.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    // Entries fine alone can still clash (`trigger` with `trigger=FLOW/NAME`).
    let key = ApiKey::from_parts(&body.name, secret, &scopes.join(",")).map_err(|why| {
        ApiError::invalid_fields(vec![FieldError {
            pointer: "/scopes".to_string(),
            message: why,
        }])
    })?;
    Ok((key, scopes))
}

/// A fresh secret: [`SECRET_PREFIX`] and [`SECRET_CHARS`] base62 characters from the
/// operating system's random source.
fn generate_secret() -> Result<String, ApiError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + SECRET_CHARS);
    secret.push_str(SECRET_PREFIX);
    let mut bytes = [0u8; 64];
    while secret.len() < SECRET_PREFIX.len() + SECRET_CHARS {
        getrandom::fill(&mut bytes)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("the random source failed: {e}")))?;
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        for b in bytes {
            if b < 248 && secret.len() < SECRET_PREFIX.len() + SECRET_CHARS {
                secret.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(secret)
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
}

fn info(row: &StoredKey) -> KeyInfo {
    KeyInfo {
        id: Some(row.id),
        name: row.name.clone(),
        scopes: row.scopes.split(',').map(str::to_string).collect(),
        source: KeySource::Stored,
        created: Some(row.created),
        created_by: Some(row.created_by.clone()),
        last_used: row.last_used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_base62() {
        let a = generate_secret().expect("secret");
        let b = generate_secret().expect("secret");
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_PREFIX.len() + SECRET_CHARS);
        assert!(a.starts_with(SECRET_PREFIX));
        assert!(
            a[SECRET_PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn the_body_is_checked_with_the_flag_rules() {
        let secret = "fk_0123456789abcdef0123456789";
        let body = |name: &str, scopes: &[&str]| CreateKey {
            name: name.to_string(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        let (key, scopes) =
            check(&body("team-a", &["read", " trigger=train/nightly"]), secret).expect("valid");
        assert_eq!(scopes, ["read", "trigger=train/nightly"]);
        assert_eq!(
            key.limit(Scope::Trigger),
            Some(&["train/nightly".to_string()][..])
        );
        for (bad, pointer) in [
            (body("", &["read"]), "/name"),
            (body("a b", &["read"]), "/name"),
            (body(&"x".repeat(65), &["read"]), "/name"),
            (body("a", &[]), "/scopes"),
            (body("a", &["write"]), "/scopes/0"),
            (body("a", &["read", "read=x/y"]), "/scopes/1"),
            (body("a", &["read,admin"]), "/scopes/0"),
            (body("a", &["trigger=train"]), "/scopes/0"),
            (body("a", &["trigger", "trigger=a/b"]), "/scopes"),
        ] {
            let err = check(&bad, secret).expect_err(&format!("{bad:?}"));
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(err.details()[0].pointer, pointer, "{bad:?}: {err}");
        }
    }
}
