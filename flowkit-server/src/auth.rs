//! API keys and scopes.
//!
//! A key is `NAME:SECRET:SCOPES`; clients send `Authorization: Bearer SECRET`. The server
//! keeps only a BLAKE3 digest of each secret and compares the digest of the presented token
//! with every stored digest in constant time ([`subtle`]), so neither the comparison's timing
//! nor a memory dump reveals a secret. Secrets are never logged: [`ApiKey`]'s `Debug` shows
//! the name and scopes only.
//!
//! The `trigger` and `worker` scopes can be limited to deployments: a scope list entry
//! `trigger=FLOW/NAME` or `worker=FLOW/NAME` (several allowed, no `:` inside since `:` separates
//! the key's parts) grants that scope for those deployments only, so a key is safe to hand to
//! another team. A limited trigger key creates, cancels and retries runs of its deployments
//! only ([`Caller::check_deployment`], 403 otherwise), and may read the runs it created (the
//! run, its result and its logs: [`require_read`]) even without `read`. A limited worker key
//! registers and claims its deployments only.
//!
//! Keys come from the `--api-key` flags (startup keys, in [`crate::config::Settings`]) and from
//! the database (stored keys, created and revoked at runtime: `crate::api::keys`, kept in memory
//! per replica by [`crate::key_ring`], which states how soon a change reaches every replica).
//! Both are checked the same way. With no key at all, neither startup nor stored, every request
//! is allowed: the server then only listens on loopback (see [`crate::config::check_bind`]);
//! keys are required as soon as one exists.
//!
//! Who created a run ([`Caller::created_by`]): `key:NAME` for an API key, `local` on a server
//! without keys; a request from the dashboard (whose page sends the
//! [`CLIENT_HEADER`]`: dashboard` header) records `dashboard` on a server without keys and
//! `dashboard:key:NAME` with a key, so a header never hides which key acted.

use crate::AppState;
use crate::config::ConfigError;
use crate::error::ApiError;
use crate::store::Backend;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use flowkit_wire::api::deployments::check_name;
use flowkit_wire::api::keys::MAX_KEY_NAME_CHARS;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The header the dashboard's page sends with its requests (`X-Flowkit-Client: dashboard`), so
/// that the runs it triggers record `created_by` = `dashboard` (or `dashboard:key:NAME`).
pub const CLIENT_HEADER: &str = "x-flowkit-client";

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

/// The deployments (`flow/name`) a limited scope covers; `None`: every deployment.
pub type DeploymentLimit = Option<Arc<[String]>>;

/// One API key: a name (for logs), the digest of its secret, its scopes, and the deployments
/// its `trigger` and `worker` scopes are limited to.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    name: String,
    digest: [u8; 32],
    scopes: Scopes,
    trigger_limit: DeploymentLimit,
    worker_limit: DeploymentLimit,
}

impl ApiKey {
    /// A key from its parts; fails on an empty name, a short secret or no scopes.
    pub fn new(name: &str, secret: &str, scopes: &[Scope]) -> Result<ApiKey, String> {
        let key = ApiKey::unscoped(name, secret)?;
        if scopes.is_empty() {
            return Err(format!("key {name:?} has no scopes"));
        }
        Ok(ApiKey {
            scopes: scopes
                .iter()
                .fold(Scopes::default(), |s, &scope| s.with(scope)),
            ..key
        })
    }

    /// A key from the three parts of `NAME:SECRET:SCOPES` (see [`ApiKey`]'s `FromStr`): the
    /// one parser of a key's name and scopes, for the `--api-key` flags and `POST /keys` alike.
    pub fn from_parts(name: &str, secret: &str, scopes: &str) -> Result<ApiKey, String> {
        ApiKey::unscoped(name, secret)?.scoped(scopes)
    }

    /// A key stored in the database: its name, the digest of its secret and its scopes as
    /// [`ApiKey::from_parts`] reads them.
    pub fn stored(name: &str, digest: [u8; 32], scopes: &str) -> Result<ApiKey, String> {
        check_key_name(name)?;
        ApiKey {
            name: name.to_string(),
            digest,
            scopes: Scopes::default(),
            trigger_limit: None,
            worker_limit: None,
        }
        .scoped(scopes)
    }

    /// A key without scopes yet (checked name and secret).
    fn unscoped(name: &str, secret: &str) -> Result<ApiKey, String> {
        check_key_name(name)?;
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret of key {name:?} is too short: use at least {MIN_SECRET_LEN} characters"
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("the secret of key {name:?} contains whitespace"));
        }
        Ok(ApiKey {
            name: name.to_string(),
            digest: digest(secret),
            scopes: Scopes::default(),
            trigger_limit: None,
            worker_limit: None,
        })
    }

    /// This key with the scopes of `list` (comma-separated, as in `--api-key`).
    fn scoped(self, list: &str) -> Result<ApiKey, String> {
        let mut scopes = Vec::new();
        let mut triggers = Vec::new();
        let mut workers = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match entry.split_once('=') {
                Some((scope, deployment)) => match Scope::from_str(scope)? {
                    Scope::Trigger => triggers.push(deployment),
                    Scope::Worker => workers.push(deployment),
                    other => {
                        return Err(format!(
                            "`{entry}`: only `trigger` and `worker` can be limited to a \
                             deployment, not `{}`",
                            other.as_str()
                        ));
                    }
                },
                None => scopes.push(Scope::from_str(entry)?),
            }
        }
        if scopes.is_empty() && triggers.is_empty() && workers.is_empty() {
            return Err(format!("key {:?} has no scopes", self.name));
        }
        // With only limited scopes, the key exists for its deployments alone.
        ApiKey {
            scopes: scopes
                .iter()
                .fold(Scopes::default(), |s, &scope| s.with(scope)),
            ..self
        }
        .limited(Scope::Trigger, &triggers)?
        .limited(Scope::Worker, &workers)
    }

    /// Limits the key's `scope` (`trigger` or `worker`) to the deployments `flow/name` of
    /// `deployments`, granting that scope for them only. Fails for another scope, a malformed
    /// deployment, or a key that also has the scope unlimited (or `admin`).
    pub fn limited(
        mut self,
        scope: Scope,
        deployments: &[impl AsRef<str>],
    ) -> Result<ApiKey, String> {
        if deployments.is_empty() {
            return Ok(self);
        }
        let name = &self.name;
        let which = scope.as_str();
        if !matches!(scope, Scope::Trigger | Scope::Worker) {
            return Err(format!(
                "key {name:?}: only `trigger` and `worker` can be limited to deployments, not `{which}`"
            ));
        }
        if self.scopes.allows(scope) {
            return Err(format!(
                "key {name:?} has `{}` as well as `{which}=FLOW/NAME`: it would allow every \
                 deployment; drop one",
                if self.scopes.0 & Scope::Admin.bit() != 0 {
                    "admin"
                } else {
                    which
                }
            ));
        }
        let mut list: Vec<String> = Vec::with_capacity(deployments.len());
        for deployment in deployments {
            let deployment = deployment.as_ref().trim();
            let (flow, dep) = deployment.split_once('/').ok_or_else(|| {
                format!(
                    "key {name:?}: `{which}={deployment}` is not FLOW/NAME, e.g. `{which}=train/nightly`"
                )
            })?;
            check_name("flow", flow)
                .and_then(|()| check_name("deployment", dep))
                .map_err(|why| format!("key {name:?}: `{which}={deployment}`: {why}"))?;
            if !list.iter().any(|known| known == deployment) {
                list.push(deployment.to_string());
            }
        }
        let limit = Some(Arc::from(list));
        match scope {
            Scope::Trigger => self.trigger_limit = limit,
            _ => self.worker_limit = limit,
        }
        Ok(self)
    }

    /// The deployments the key's `scope` is limited to; `None` when it is not limited (or the
    /// key lacks the scope).
    pub fn limit(&self, scope: Scope) -> Option<&[String]> {
        match scope {
            Scope::Trigger => self.trigger_limit.as_deref(),
            Scope::Worker => self.worker_limit.as_deref(),
            _ => None,
        }
    }

    /// Whether the key has `scope`, for every deployment or for some.
    fn grants(&self, scope: Scope) -> bool {
        self.scopes.allows(scope) || self.limit(scope).is_some()
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's scopes as `--api-key` spells them: `read`, …, `trigger=FLOW/NAME`.
    pub fn scope_list(&self) -> Vec<String> {
        let mut list: Vec<String> = Scope::ALL
            .into_iter()
            .filter(|s| self.scopes.0 & s.bit() != 0)
            .map(|s| s.as_str().to_string())
            .collect();
        for (scope, limit) in [
            ("trigger", &self.trigger_limit),
            ("worker", &self.worker_limit),
        ] {
            for deployment in limit.iter().flat_map(|l| l.iter()) {
                list.push(format!("{scope}={deployment}"));
            }
        }
        list
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
            .field("trigger_limit", &self.trigger_limit)
            .field("worker_limit", &self.worker_limit)
            .finish()
    }
}

/// `NAME:SECRET:SCOPES`; the secret may itself contain `:` (the name ends at the first `:`,
/// the scopes start after the last). SCOPES is comma-separated: `read`, `report`, `trigger`,
/// `worker`, `admin`, and `trigger=FLOW/NAME` / `worker=FLOW/NAME` for a scope limited to
/// deployments.
impl FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<ApiKey, String> {
        let s = s.trim();
        let malformed =
            || "expected NAME:SECRET:SCOPES, e.g. ci:s3cr3t-at-least-16-chars:report".to_string();
        let (name, rest) = s.split_once(':').ok_or_else(malformed)?;
        let (secret, list) = rest.rsplit_once(':').ok_or_else(malformed)?;
        ApiKey::from_parts(name, secret, list)
    }
}

/// Checks a key's name: 1 to [`MAX_KEY_NAME_CHARS`] letters, digits, `-`, `_`, `.`, `@`.
pub fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.chars().count() > MAX_KEY_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        let shown: String = name.chars().take(MAX_KEY_NAME_CHARS + 1).collect();
        return Err(format!(
            "invalid key name {shown:?}: use 1 to {MAX_KEY_NAME_CHARS} letters, digits, `-`, \
             `_`, `.`, `@`"
        ));
    }
    Ok(())
}

/// The BLAKE3 digest of a secret: what the server keeps and compares.
pub fn digest(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}
/// The configured keys.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Arc<[ApiKey]>,
}

/// Who made a request: the key's name, or `None` when the server runs without keys, and the
/// deployments its `trigger` and `worker` scopes are limited to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The name of the key used.
    pub key_name: Option<String>,
    /// The deployments (`flow/name`) the key may trigger, cancel and retry runs of; `None`:
    /// every one.
    pub trigger_limit: DeploymentLimit,
    /// The deployments the key may register and claim; `None`: every one.
    pub worker_limit: DeploymentLimit,
}

impl Caller {
    /// A caller with the key `name` and no limits.
    pub fn key(name: impl Into<String>) -> Caller {
        Caller {
            key_name: Some(name.into()),
            ..Caller::default()
        }
    }

    /// Checks that the caller's `scope` (`trigger` or `worker`; it was checked by the route's
    /// middleware) covers `deployment` (`flow/name`): 403 naming the deployments it does
    /// cover otherwise.
    pub fn check_deployment(&self, scope: Scope, deployment: &str) -> Result<(), ApiError> {
        let limit = match scope {
            Scope::Trigger => &self.trigger_limit,
            Scope::Worker => &self.worker_limit,
            _ => &None,
        };
        match limit {
            Some(allowed) if !allowed.iter().any(|d| d == deployment) => {
                Err(ApiError::forbidden(format!(
                    "API key {:?} has the `{}` scope only for {}, not for {deployment}",
                    self.key_name.as_deref().unwrap_or_default(),
                    scope.as_str(),
                    allowed.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks that the caller may cancel or retry the flow run `id`: with a `trigger` scope
    /// limited to deployments, the run must be of one of them (403 otherwise, also for a run
    /// that no deployment created). Unlimited callers pass without reading the run; an
    /// unknown run passes (the handler answers 404).
    pub async fn check_run_action(&self, state: &AppState, id: Uuid) -> Result<(), ApiError> {
        if self.trigger_limit.is_none() {
            return Ok(());
        }
        let Some(run) = state.store().get_run(id).await? else {
            return Ok(());
        };
        match &run.deployment {
            Some(deployment) => self.check_deployment(Scope::Trigger, deployment),
            None => Err(ApiError::forbidden(format!(
                "API key {:?} has the `trigger` scope only for some deployments, and run {id} \
                 was not created by a deployment",
                self.key_name.as_deref().unwrap_or_default()
            ))),
        }
    }

    /// What a run this caller creates records as `created_by`: `key:NAME` for an API key,
    /// `local` on a server without keys; with the dashboard's [`CLIENT_HEADER`],
    /// `dashboard:key:NAME` and `dashboard`.
    pub fn created_by(&self, headers: &HeaderMap) -> String {
        let from_dashboard = headers
            .get(CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("dashboard"));
        match (&self.key_name, from_dashboard) {
            (Some(name), false) => format!("key:{name}"),
            (Some(name), true) => format!("dashboard:key:{name}"),
            (None, false) => "local".to_string(),
            (None, true) => "dashboard".to_string(),
        }
    }

    /// Whether this caller created a run whose `created_by` is `created_by` (through the
    /// dashboard or not). Always false without a key.
    pub fn created(&self, created_by: Option<&str>) -> bool {
        let (Some(name), Some(created_by)) = (&self.key_name, created_by) else {
            return false;
        };
        let by_key = created_by.strip_prefix("dashboard:").unwrap_or(created_by);
        by_key.strip_prefix("key:") == Some(name.as_str())
    }
}

/// How a key is let through a route.
enum Admission {
    /// The key has the scope.
    Granted(Caller),
    /// The key lacks `read` but is a limited trigger key: it may read the runs it created.
    OwnRunsOnly(Caller, ApiError),
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

    /// Keys read from the database, which checked their names are unique when it stored them.
    pub(crate) fn from_trusted(keys: Vec<ApiKey>) -> ApiKeys {
        ApiKeys { keys: keys.into() }
    }

    /// No keys: the server is open (and loopback-only) unless keys are stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys.
    pub fn iter(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.iter()
    }

    /// Whether a key is named `name`.
    pub fn has_name(&self, name: &str) -> bool {
        self.keys.iter().any(|key| key.name == name)
    }

    /// The key whose secret has the digest `presented`. Looks at every key whatever matches,
    /// so the time taken does not depend on which one did; each comparison is constant-time
    /// over the digests.
    fn find(&self, presented: &[u8; 32]) -> Option<&ApiKey> {
        let mut found: Option<&ApiKey> = None;
        for key in self.keys.iter() {
            if bool::from(key.digest.ct_eq(presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// Checks the `Authorization` header value (if any) for `scope` against these keys only:
    /// 401 when it is missing or not a known key, 403 when the key lacks the scope. A key
    /// whose `trigger` or `worker` scope is limited to deployments passes for that scope; the
    /// handler then checks the deployment ([`Caller::check_deployment`]). The server's
    /// middleware also looks at the stored keys ([`crate::key_ring`]).
    pub fn authorize(&self, authorization: Option<&str>, scope: Scope) -> Result<Caller, ApiError> {
        if self.keys.is_empty() {
            return Ok(Caller::default());
        }
        let presented = digest(bearer(authorization)?);
        let key = self
            .find(&presented)
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        match key.admit(scope)? {
            Admission::Granted(caller) => Ok(caller),
            Admission::OwnRunsOnly(_, refusal) => Err(refusal),
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; 401 when there is none.
fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    authorization
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized("missing API key: send `Authorization: Bearer <secret>`")
        })
}

impl ApiKey {
    /// How this key is let through a route that needs `scope`.
    fn admit(&self, scope: Scope) -> Result<Admission, ApiError> {
        let caller = Caller {
            key_name: Some(self.name.clone()),
            trigger_limit: self.trigger_limit.clone(),
            worker_limit: self.worker_limit.clone(),
        };
        if self.grants(scope) {
            return Ok(Admission::Granted(caller));
        }
        let refusal = ApiError::forbidden(format!(
            "API key {:?} lacks the `{}` scope this route needs",
            self.name,
            scope.as_str()
        ));
        if scope == Scope::Read && self.trigger_limit.is_some() {
            return Ok(Admission::OwnRunsOnly(caller, refusal));
        }
        Err(refusal)
    }
}

/// How a request is let through a route that needs `scope`, by the startup keys (flags) and
/// the stored keys ([`crate::key_ring`]). Without any key the server is open. A token that is
/// neither a startup key nor a stored key this replica knows makes it re-read the stored keys
/// (at most every [`crate::key_ring::MISS_RELOAD_EVERY`]), so a key created on another replica
/// works at once.
async fn admit(
    state: &AppState,
    authorization: Option<&str>,
    scope: Scope,
) -> Result<Admission, ApiError> {
    let startup = &state.settings().api_keys;
    let ring = state.key_ring();
    if startup.is_empty() {
        // Whether a key is needed at all depends on the stored ones: 503 until they can be
        // read.
        if ring.keys(state.store()).await?.is_empty() {
            return Ok(Admission::Granted(Caller::default()));
        }
    }
    let presented = digest(bearer(authorization)?);
    // A startup key never waits for the stored ones (nor for the database).
    if let Some(key) = startup.find(&presented) {
        return key.admit(scope);
    }
    if let Some(key) = ring.keys(state.store()).await?.find(&presented) {
        ring.note_use(state, presented);
        return key.admit(scope);
    }
    if let Some(fresh) = ring.reload_on_miss(state.store()).await
        && let Some(key) = fresh.find(&presented)
    {
        ring.note_use(state, presented);
        return key.admit(scope);
    }
    Err(ApiError::unauthorized("unknown API key"))
}

/// Lets a request through to `next` when [`admit`] does, with its [`Caller`] in its
/// extensions; answers the refusal otherwise.
async fn require(state: &AppState, scope: Scope, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match admit(state, authorization, scope).await {
        Ok(Admission::Granted(caller)) => caller,
        Ok(Admission::OwnRunsOnly(caller, refusal)) => {
            let run = own_run_route(&request);
            match created_by_caller(state, &caller, run).await {
                Ok(true) => caller,
                Ok(false) => return axum::response::IntoResponse::into_response(refusal),
                Err(err) => return axum::response::IntoResponse::into_response(err),
            }
        }
        Err(err) => return axum::response::IntoResponse::into_response(err),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The routes a limited trigger key may read for the runs it created, relative to the API's
/// prefix.
const OWN_RUN_ROUTES: [&str; 3] = [
    "/flow-runs/{id}",
    "/flow-runs/{id}/result",
    "/flow-runs/{id}/logs",
];

/// The run `request` reads, if it is one of [`OWN_RUN_ROUTES`].
fn own_run_route(request: &Request) -> Option<Uuid> {
    let matched = request.extensions().get::<MatchedPath>()?;
    if !OWN_RUN_ROUTES
        .iter()
        .any(|route| matched.as_str().ends_with(route))
    {
        return None;
    }
    // `/…/flow-runs/{id}[/…]`: the segment after `flow-runs`.
    let mut segments = request.uri().path().rsplit('/');
    let id = if matched.as_str().ends_with("{id}") {
        segments.next()
    } else {
        segments.nth(1)
    };
    id.and_then(|id| Uuid::parse_str(id).ok())
}

/// Whether `caller` created the run `id`.
async fn created_by_caller(
    state: &AppState,
    caller: &Caller,
    id: Option<Uuid>,
) -> Result<bool, ApiError> {
    let Some(id) = id else {
        return Ok(false);
    };
    let run = state.store().get_run(id).await?;
    Ok(run.is_some_and(|run| caller.created(run.created_by.as_deref())))
}

/// Middleware of the routes that need the `read` scope. A key limited to triggering some
/// deployments, without `read`, may still read the runs it created (the run, its result, its
/// logs); for any other run it gets the same 403 as for another route.
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

/// Middleware of the routes that need the `admin` scope (managing keys and alert rules).
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    require(&state, Scope::Admin, request, next).await
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
    fn scopes_limited_to_deployments() {
        let key: ApiKey =
            "team-a:team-a-secret-0123456789:read,trigger=train/nightly,trigger=eval/adhoc"
                .parse()
                .expect("key");
        assert!(key.scopes().allows(Scope::Read));
        assert!(
            !key.scopes().allows(Scope::Trigger),
            "not for every deployment"
        );
        assert_eq!(
            key.limit(Scope::Trigger),
            Some(&["train/nightly".to_string(), "eval/adhoc".to_string()][..])
        );
        assert_eq!(key.limit(Scope::Worker), None);
        // Only limited scopes is a key too.
        let worker: ApiKey = "w:worker-secret-0123456789:worker=train/nightly"
            .parse()
            .expect("key");
        assert_eq!(
            worker.limit(Scope::Worker),
            Some(&["train/nightly".to_string()][..])
        );
        for (bad, says) in [
            (
                "a:0123456789abcdef:read=train/nightly",
                "only `trigger` and `worker`",
            ),
            (
                "a:0123456789abcdef:trigger,trigger=train/nightly",
                "drop one",
            ),
            ("a:0123456789abcdef:admin,worker=train/nightly", "admin"),
            ("a:0123456789abcdef:trigger=train", "FLOW/NAME"),
            (
                "a:0123456789abcdef:trigger=train/night ly",
                "deployment name",
            ),
            ("a:0123456789abcdef:trigger=a/b/c", "deployment name"),
            ("a:0123456789abcdef:deploy=a/b", "unknown scope"),
        ] {
            let err = bad.parse::<ApiKey>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }

        let keys = ApiKeys::new(vec![key, worker]).expect("keys");
        let caller = keys
            .authorize(Some("Bearer team-a-secret-0123456789"), Scope::Trigger)
            .expect("a limited scope passes the route's check");
        assert!(
            caller
                .check_deployment(Scope::Trigger, "train/nightly")
                .is_ok()
        );
        let refused = caller
            .check_deployment(Scope::Trigger, "train/adhoc")
            .expect_err("other deployment");
        assert_eq!(refused.status().as_u16(), 403);
        let w = keys
            .authorize(Some("Bearer worker-secret-0123456789"), Scope::Worker)
            .expect("worker");
        assert!(w.check_deployment(Scope::Worker, "train/nightly").is_ok());
        assert!(w.check_deployment(Scope::Worker, "eval/adhoc").is_err());
        // Without `read`, only the runs it created (checked by the middleware): a plain
        // `authorize` for read is a 403.
        let status = keys
            .authorize(Some("Bearer worker-secret-0123456789"), Scope::Read)
            .map(|_| 200)
            .unwrap_or_else(|e| e.status().as_u16());
        assert_eq!(status, 403);
    }

    #[test]
    fn created_by_names_the_key_and_the_dashboard() {
        let mut dashboard = HeaderMap::new();
        dashboard.insert(CLIENT_HEADER, "dashboard".parse().expect("header"));
        let plain = HeaderMap::new();
        let keyed = Caller::key("team-a");
        assert_eq!(keyed.created_by(&plain), "key:team-a");
        assert_eq!(keyed.created_by(&dashboard), "dashboard:key:team-a");
        assert_eq!(Caller::default().created_by(&plain), "local");
        assert_eq!(Caller::default().created_by(&dashboard), "dashboard");
        assert!(keyed.created(Some("key:team-a")));
        assert!(keyed.created(Some("dashboard:key:team-a")));
        assert!(!keyed.created(Some("key:team-ab")));
        assert!(!keyed.created(Some("dashboard")));
        assert!(!keyed.created(None));
        assert!(!Caller::default().created(Some("local")));
    }

    #[test]
    fn stored_keys_read_back_as_the_flag_reads_them() {
        let flag: ApiKey = "team-a:team-a-secret-0123456789:read,trigger=train/nightly"
            .parse()
            .expect("key");
        assert_eq!(flag.scope_list(), ["read", "trigger=train/nightly"]);
        let stored = ApiKey::stored(
            "team-a",
            digest("team-a-secret-0123456789"),
            &flag.scope_list().join(","),
        )
        .expect("stored");
        assert_eq!(stored, flag);
        assert!(ApiKey::stored("a b", [0; 32], "read").is_err());
        assert!(ApiKey::stored("a", [0; 32], "").is_err());
        assert!(ApiKey::stored(&"x".repeat(65), [0; 32], "read").is_err());
        assert!(ApiKey::stored(&"x".repeat(64), [0; 32], "read").is_ok());
    }

    #[test]
    fn no_keys_means_open() {
        let keys = ApiKeys::default();
        assert!(keys.authorize(None, Scope::Admin).is_ok());
    }
}
