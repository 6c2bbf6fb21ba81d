//! API keys and scopes.
//!
//! A key is `NAME:SECRET:SCOPES`; clients send `Authorization: Bearer SECRET`. The server
//! keeps only a BLAKE3 digest of each secret and compares the digest of the presented token
//! with every stored digest in constant time ([`subtle`]), so neither the comparison's timing
//! nor a memory dump reveals a secret. Secrets are never logged: [`ApiKey`]'s `Debug` shows
//! the name and scopes only.
//!
//! With no keys configured every request is allowed: the server then only listens on loopback
//! (see [`crate::config::check_bind`]).

use crate::AppState;
use crate::config::ConfigError;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shortest secret accepted: shorter ones are guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The GET routes: runs, logs, graph, stats, the live stream.
    Read,
    /// Sending events and reporter drops (what `FLOWKIT_API_URL` reporters need).
    Report,
    /// Creating runs of deployments.
    Trigger,
    /// Registering deployments (what `flowkit::serve` workers need, with `report`).
    Worker,
    /// Everything.
    Admin,
}

impl Scope {
    const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Report,
        Scope::Trigger,
        Scope::Worker,
        Scope::Admin,
    ];

    /// The name in `--api-key` and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Report => "report",
            Scope::Trigger => "trigger",
            Scope::Worker => "worker",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Report => 2,
            Scope::Trigger => 4,
            Scope::Admin => 8,
            Scope::Worker => 16,
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown scope {s:?}: expected read, report, trigger, worker or admin")
            })
    }
}

/// A set of scopes; `admin` implies every other.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Whether these scopes allow `scope`.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Adds a scope.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(Scope::as_str)
            .collect();
        write!(f, "{}", names.join(","))
    }
}

/// One API key: a name (for logs), the digest of its secret, and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    name: String,
    digest: [u8; 32],
    scopes: Scopes,
}

impl ApiKey {
    /// A key from its parts; fails on an empty name, a short secret or no scopes.
    pub fn new(name: &str, secret: &str, scopes: &[Scope]) -> Result<ApiKey, String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(format!(
                "invalid key name {name:?}: use letters, digits, `-`, `_`, `.`, `@`"
            ));
        }
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret of key {name:?} is too short: use at least {MIN_SECRET_LEN} characters"
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("the secret of key {name:?} contains whitespace"));
        }
        if scopes.is_empty() {
            return Err(format!("key {name:?} has no scopes"));
        }
        Ok(ApiKey {
            name: name.to_string(),
            digest: digest(secret),
            scopes: scopes
                .iter()
                .fold(Scopes::default(), |s, &scope| s.with(scope)),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's scopes.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `NAME:SECRET:SCOPES`; the secret may itself contain `:` (the name ends at the first `:`,
/// the scopes start after the last).
impl FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<ApiKey, String> {
        let s = s.trim();
        let malformed =
            || "expected NAME:SECRET:SCOPES, e.g. ci:s3cr3t-at-least-16-chars:report".to_string();
        let (name, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (secret, scopes) = rest.rsplit_once(':').ok_or_else(malformed)?;
        let scopes = scopes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        ApiKey::new(name, secret, &scopes)
    }
}

fn digest(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// The configured keys.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Arc<[ApiKey]>,
}

/// Who made a request: the key's name, or `None` when the server runs without keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The name of the key used.
    pub key_name: Option<String>,
}

impl ApiKeys {
    /// The key set; fails when two keys share a name or a secret.
    pub fn new(keys: Vec<ApiKey>) -> Result<ApiKeys, ConfigError> {
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[..i] {
                if a.name == b.name {
                    return Err(ConfigError::DuplicateKeyName(a.name.clone()));
                }
                if a.digest == b.digest {
                    return Err(ConfigError::DuplicateKeySecret(
                        b.name.clone(),
                        a.name.clone(),
                    ));
                }
            }
        }
        Ok(ApiKeys { keys: keys.into() })
    }

    /// No keys: the server is open (and loopback-only).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks the `Authorization` header value (if any) for `scope`: 401 when it is missing or
    /// not a known key, 403 when the key lacks the scope.
    pub fn authorize(&self, authorization: Option<&str>, scope: Scope) -> Result<Caller, ApiError> {
        if self.keys.is_empty() {
            return Ok(Caller { key_name: None });
        }
        let token = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("missing API key: send `Authorization: Bearer <secret>`")
            })?;
        let presented = digest(token);
        // Look at every key whatever matches, so the time taken does not depend on which one
        // did; each comparison is constant-time over the digests.
        let mut found: Option<&ApiKey> = None;
        for key in self.keys.iter() {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        let key = found.ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        if !key.scopes.allows(scope) {
            return Err(ApiError::forbidden(format!(
                "API key {:?} lacks the `{}` scope this route needs",
                key.name,
                scope.as_str()
            )));
        }
        Ok(Caller {
            key_name: Some(key.name.clone()),
        })
    }
}

async fn require(state: &AppState, scope: Scope, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.settings().api_keys.authorize(authorization, scope) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => axum::response::IntoResponse::into_response(err),
    }
}

/// Middleware of the routes that need the `read` scope.
pub async fn require_read(State(state): State<AppState>, request: Request, next: Next) -> Response {
    require(&state, Scope::Read, request, next).await
}

/// Middleware of the routes that need the `report` scope.
pub async fn require_report(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Scope::Report, request, next).await
}

/// Middleware of the routes that need the `trigger` scope.
pub async fn require_trigger(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Scope::Trigger, request, next).await
}

/// Middleware of the routes that need the `worker` scope.
pub async fn require_worker(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Scope::Worker, request, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(vec![
            "reader:reader-secret-0123456789:read".parse().expect("key"),
            "ci:ci:secret:with:colons-0123:report".parse().expect("key"),
            "root:root-secret-0123456789:admin".parse().expect("key"),
        ])
        .expect("keys")
    }

    #[test]
    fn parses_keys() {
        let key: ApiKey = "ops:0123456789abcdef:read,report".parse().expect("key");
        assert_eq!(key.name(), "ops");
        assert!(key.scopes().allows(Scope::Read));
        assert!(key.scopes().allows(Scope::Report));
        assert!(!key.scopes().allows(Scope::Trigger));
        let worker: ApiKey = "w:0123456789abcdef:report,worker".parse().expect("key");
        assert!(worker.scopes().allows(Scope::Worker));
        assert!(!worker.scopes().allows(Scope::Trigger));
        assert!("ops:short:read".parse::<ApiKey>().is_err());
        assert!("ops:0123456789abcdef:write".parse::<ApiKey>().is_err());
        assert!("ops:0123456789abcdef:".parse::<ApiKey>().is_err());
        assert!("just-a-secret".parse::<ApiKey>().is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key: ApiKey = "ops:very-secret-value-123:read".parse().expect("key");
        let shown = format!(
            "{key:?} {:?}",
            ApiKeys::new(vec![key.clone()]).expect("keys")
        );
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("ops"), "{shown}");
    }

    #[test]
    fn authorizes_by_scope() {
        let keys = keys();
        let status = |auth: Option<&str>, scope| match keys.authorize(auth, scope) {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        assert_eq!(status(None, Scope::Read), 401);
        assert_eq!(status(Some("Bearer nope-nope-nope-nope"), Scope::Read), 401);
        assert_eq!(status(Some("Basic cmVhZGVyOng="), Scope::Read), 401);
        assert_eq!(
            status(Some("Bearer reader-secret-0123456789"), Scope::Read),
            200
        );
        assert_eq!(
            status(Some("Bearer reader-secret-0123456789"), Scope::Report),
            403
        );
        assert_eq!(
            status(Some("bearer ci:secret:with:colons-0123"), Scope::Report),
            200
        );
        assert_eq!(
            status(Some("Bearer ci:secret:with:colons-0123"), Scope::Read),
            403
        );
        assert_eq!(
            status(Some("Bearer root-secret-0123456789"), Scope::Trigger),
            200
        );
        assert_eq!(
            status(Some("Bearer root-secret-0123456789"), Scope::Worker),
            200
        );
        assert_eq!(
            status(Some("Bearer reader-secret-0123456789"), Scope::Worker),
            403
        );
    }

    #[test]
    fn no_keys_means_open() {
        let keys = ApiKeys::default();
        assert!(keys.authorize(None, Scope::Admin).is_ok());
    }
}
