//! `/alert-rules`: the server-side alert rules (create, list, read, edit, pause, delete;
//! `admin` to change, `read` to look) and each rule's deliveries with their attempts. Target URLs are secrets:
//! they are stored in full and only ever shown masked. Matching and sending are
//! [`crate::alerts`]'s.

use crate::AppState;
use crate::error::{ApiError, ErrorBody, StoreFailures};
use crate::store::StoreError;
use crate::store::alerts::StoredRule;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, SubsecRound, Utc};
use flowkit_wire::api::alerts::{
    ALERT_STATES, AlertRule, AlertRulePatch, AlertRuleSpec, AlertRules, Delivery, EXAMPLE_RULE,
    MAX_RULES, RULE_FIELDS, mask_url,
};
use flowkit_wire::api::deployments::FieldError;
use flowkit_wire::api::error::ErrorCode;
use flowkit_wire::api::page::Page;
use serde_json::Value;
use uuid::Uuid;

use super::deployments::PageQuery;
use super::extract::{ApiJson, ApiQuery, page_request};

/// The `{id}` of a rule route: 400 `invalid_id` when it is not a UUID.
pub struct RuleId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RuleId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Uuid::parse_str(&raw).map(RuleId).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidId,
                format!("`{raw}` is not an alert rule id (a UUID, see GET /alert-rules): {e}"),
            )
        })
    }
}

fn field(pointer: &str, message: String) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        message: format!("{message}; a valid rule: {EXAMPLE_RULE}"),
    }
}

/// What the value of each field of a rule must be (`null` allowed where the field is
/// optional), and the error at its pointer when it is not.
fn check_types(body: &Value, found: &mut Vec<FieldError>) {
    let Some(fields) = body.as_object() else {
        found.push(field("", "a rule is a JSON object".to_string()));
        return;
    };
    for (name, value) in fields {
        let expected = match name.as_str() {
            "name" => value
                .is_string()
                .then_some(())
                .ok_or("a string (leave it out to keep it)"),
            "enabled" => value
                .is_boolean()
                .then_some(())
                .ok_or("true or false (leave it out to keep it)"),
            // Any other shape is named by `parse_spec`.
            "states" => (!value.is_null())
                .then_some(())
                .ok_or("an array of state names (leave it out to keep it)"),
            known if RULE_FIELDS.contains(&known) => (value.is_string() || value.is_null())
                .then_some(())
                .ok_or("a string (or null)"),
            _ => {
                found.push(field(
                    &format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                    format!("unknown field: a rule has {}", RULE_FIELDS.join(", ")),
                ));
                continue;
            }
        };
        if let Err(what) = expected {
            found.push(field(&format!("/{name}"), format!("must be {what}")));
        }
    }
}

/// The spec in `body`, or every error found at its JSON pointer: fields of the wrong type or
/// unknown, and state names this server does not know at `/states/N` (before the shape is
/// checked).
fn parse_spec(body: Value) -> Result<AlertRuleSpec, ApiError> {
    let mut found = Vec::new();
    check_types(&body, &mut found);
    match body.get("states") {
        Some(Value::Array(states)) => {
            for (i, state) in states.iter().enumerate() {
                let known = state.as_str().is_some_and(|name| {
                    ALERT_STATES.iter().any(|s| s.as_str() == name)
                        || flowkit_wire::state::StateType::ALL
                            .iter()
                            .any(|s| s.as_str() == name)
                });
                if !known {
                    found.push(field(
                        &format!("/states/{i}"),
                        format!(
                            "{state} is not a state: use Failed, Crashed, TimedOut, Late, \
                             Expired or Cancelled"
                        ),
                    ));
                }
            }
        }
        Some(other) if !other.is_null() => found.push(field(
            "/states",
            "must be an array of state names".to_string(),
        )),
        _ => {}
    }
    if !found.is_empty() {
        return Err(ApiError::invalid_fields(found));
    }
    let spec: AlertRuleSpec = serde_json::from_value(body)
        .map_err(|e| ApiError::invalid_body(format!("{e}; a valid rule: {EXAMPLE_RULE}")))?;
    let errors = spec.check();
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    Ok(spec)
}

/// Creates a rule. Its target URLs are kept in full and never shown back (the answer masks
/// them).
#[utoipa::path(
    post,
    path = "/api/v1/alert-rules",
    tag = "alerts",
    request_body(content = AlertRuleSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "The rule, its URLs masked", body = AlertRule),
        (status = 400, description = "Malformed JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope; `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 409, description = "`conflict`: the server already keeps the most rules it keeps (1000)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: unknown or non-alerting states, a URL that is not http(s), a bad duration, no target; every error in `details` at its JSON pointer, with a valid example", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<AlertRule>), ApiError> {
    let spec = parse_spec(body)?;
    let rule = StoredRule {
        id: Uuid::now_v7(),
        // As stored (microseconds): the answer is what a later GET shows.
        created: Utc::now().trunc_subsecs(6),
        spec,
        absence_notified: None,
    };
    let shown = rule.shown();
    if !state.store().create_alert_rule(rule).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            format!("the server keeps at most {MAX_RULES} alert rules: delete one first"),
        ));
    }
    Ok((StatusCode::CREATED, Json(shown)))
}

/// `patch` applied to the stored spec `stored`, as JSON (not checked yet): absent fields keep
/// their value, `null` removes an optional one, and a `webhook` or `slack` equal to the masked
/// URL the API shows keeps the stored URL.
fn apply_patch(stored: &AlertRuleSpec, patch: Value) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid_fields(vec![field(
            "",
            "a patch is a JSON object of the fields to change".to_string(),
        )]));
    };
    let mut merged = match serde_json::to_value(stored) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (name, value) in patch {
        let stored_url = match name.as_str() {
            "webhook" => stored.webhook.as_deref(),
            "slack" => stored.slack.as_deref(),
            _ => None,
        };
        let masked = stored_url.map(mask_url);
        if masked.is_some() && value.as_str() == masked.as_deref() {
            continue;
        }
        if value.is_null() && name != "name" && name != "states" && name != "enabled" {
            merged.remove(&name);
        } else {
            merged.insert(name, value);
        }
    }
    Ok(Value::Object(merged))
}

/// Changes a rule: any subset of its fields (see `AlertRulePatch`), checked as on creation.
/// `{"enabled": false}` pauses it, `{"enabled": true}` resumes it. Changes made at once merge:
/// each is applied to the rule as the other left it (the fields a change does not name keep
/// the values another change gave them); after [`PATCH_ATTEMPTS`] rounds lost to other
/// changes the answer is 409 `conflict` and nothing changed.
#[utoipa::path(
    patch,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    params(("id" = Uuid, Path, description = "The rule's id")),
    request_body(content = AlertRulePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The rule as changed, its URLs masked", body = AlertRule),
        (status = 400, description = "`invalid_id`: `id` is not a UUID; `invalid_json`: malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope; `forbidden_origin`: a web page of another site without a JSON content type", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 409, description = "`conflict`: the rule kept being changed by other requests while this change was applied (8 rounds); nothing changed, send it again", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type is not JSON", body = ErrorBody),
        (status = 422, description = "`invalid_body`: the rule as changed is not valid (as on creation: unknown or non-alerting states, a URL that is not http(s), a bad duration, no target left, neither a state nor `worker_absent_for`), or a field is unknown, of the wrong type, or `null` where it cannot be; every error in `details` at its JSON pointer, with a valid example", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    RuleId(id): RuleId,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<AlertRule>, ApiError> {
    let not_found = || ApiError::not_found(format!("no alert rule {id}"));
    for _ in 0..PATCH_ATTEMPTS {
        let mut stored = state.store().alert_rule(id).await?.ok_or_else(not_found)?;
        let changed = parse_spec(apply_patch(&stored.spec, body.clone())?)?;
        let expected = std::mem::replace(&mut stored.spec, changed);
        // Written only over the spec it was made from; otherwise made again from the new one.
        if state
            .store()
            .update_alert_rule(id, expected, stored.spec.clone())
            .await?
        {
            return Ok(Json(stored.shown()));
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::Conflict,
        format!(
            "alert rule {id} was changed by other requests {PATCH_ATTEMPTS} times while this \
             change was applied; nothing changed: send it again"
        ),
    ))
}

/// Rounds of read, change and compare-and-set a PATCH of a rule tries before answering 409.
pub const PATCH_ATTEMPTS: usize = 8;

/// Every rule, oldest first: at most 1000 (the most the server keeps), in one answer.
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules",
    tag = "alerts",
    responses(
        (status = 200, description = "Every rule (at most 1000), URLs masked", body = AlertRules),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<AlertRules>, ApiError> {
    let rules = state.store().alert_rules().await?;
    Ok(Json(AlertRules {
        items: rules.iter().map(StoredRule::shown).collect(),
    }))
}

/// One rule.
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    params(("id" = Uuid, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule, URLs masked", body = AlertRule),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    RuleId(id): RuleId,
) -> Result<Json<AlertRule>, ApiError> {
    let rule = state.store().alert_rule(id).await?;
    rule.map(|r| Json(r.shown()))
        .ok_or_else(|| ApiError::not_found(format!("no alert rule {id}")))
}

/// Deletes a rule with its deliveries (pending ones are not sent).
#[utoipa::path(
    delete,
    path = "/api/v1/alert-rules/{id}",
    tag = "alerts",
    params(("id" = Uuid, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_id`: `id` is not a UUID", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` scope", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    RuleId(id): RuleId,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_alert_rule(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no alert rule {id}")))
    }
}

/// A rule's deliveries, newest first, each with its attempts (time, status code or error).
#[utoipa::path(
    get,
    path = "/api/v1/alert-rules/{id}/deliveries",
    tag = "alerts",
    params(("id" = Uuid, Path, description = "The rule's id"), PageQuery),
    responses(
        (status = 200, description = "A page of deliveries (`limit` 1 to 500, default 50)", body = Page<Delivery>),
        (status = 400, description = "`invalid_id`, `invalid_parameter` (`limit`), `invalid_cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        StoreFailures,
    ),
    security(("api_key" = []))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    RuleId(id): RuleId,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let page = page_request(query.limit, query.cursor)?;
    let after = page.cursor.as_deref().map(decode_cursor).transpose()?;
    if state.store().alert_rule(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no alert rule {id}")));
    }
    let mut items = state
        .store()
        .alert_deliveries(id, after, page.limit)
        .await?;
    let next_cursor = if items.len() > page.limit as usize {
        items.truncate(page.limit as usize);
        items.last().map(|d| encode_cursor(d.created, d.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

fn encode_cursor(created: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", created.timestamp_micros(), id.simple())
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), StoreError> {
    let bad = || StoreError::InvalidCursor("not a cursor of this list".to_string());
    let (micros, id) = cursor.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let created = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((created, Uuid::parse_str(id).map_err(|_| bad())?))
}
